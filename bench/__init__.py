"""flowcloud's benchmarks, each against a baseline measured in the same run on the same private stack.

Run with ``python -m bench`` (``make bench``); ``python -m bench --help`` lists
them. One module per benchmark (``throughput``, ``latency``, ``capacity``,
``batching``, ``coalescing``, ``summarization``, ``imports``), all on the private
Redis, simulator and workers of ``stack``. Nothing in flowcloud or its tests
imports this package.
"""
