"""Summarization runs: many documents summarized into one output folder, resumable.

A run finds its documents (``documents``), skips those whose content already
has a summary in the output folder, submits summarize jobs for the rest with a
bounded number in flight (``engine``), writes each summary as it finishes and a
run report at the end (``outputs``, ``report``). The ``flowcloud summarize``
command drives a run in its own process; a Beat schedule drives the same code on
a worker (``scheduled``), hop by hop, with the run's state in Redis between hops
(``store``), holding no worker slot while documents are in flight. ``batch``
sends a run through the provider's Batch API instead; for a schedule in ``mode:
auto``, ``mode`` decides which way each run goes. The tasks that carry the hops
are ``flowcloud.tasks.runs``.
"""
