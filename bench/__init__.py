"""Throughput benchmark: flowcloud jobs against raw Celery no-op tasks on the same private stack.

Run with ``python -m bench`` (``make bench``). Nothing in flowcloud or its tests imports this package.
"""
