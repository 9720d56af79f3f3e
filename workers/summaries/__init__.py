"""Summaries: one long text summarized as a tree of completion jobs (``tree``), and runs
over many documents into an output folder (``runs``).

The engine side only: the Celery tasks that drive them (``flowcloud.tasks.summarize``,
``flowcloud.tasks.runs``) parse their messages and call in here.
"""
