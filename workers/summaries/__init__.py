"""Summaries: one long text summarized as a tree of completion jobs (``tree``).

The engine side only: the Celery task that drives it (``flowcloud.tasks.summarize``)
parses its messages and calls in here.
"""
