"""The public Python API: submit jobs and read their results, from Langflow, the CLI or any code.

Light to import: Celery's messaging and the record store only; no provider
adapters, no task modules, no Langflow (``tests/test_surface.py`` checks it).
Submitting sends a message by task name, so the caller never loads worker code.

    import flowcloud
    job_id = flowcloud.submit("Summarise this...", model="gpt-4o-mini", flow="nightly")
    record = flowcloud.result(job_id, timeout=120)

The functions live in ``flowcloud.workers.core.jobs``, where the engine's own
sub-jobs (a summary's chunks, a run's documents) are submitted from too.
"""

from flowcloud.workers.core.jobs import cancel, embed, result, status, submit, submit_flow, submit_many, summarize, wait_all

__all__ = ["submit", "submit_many", "submit_flow", "status", "result", "wait_all", "cancel", "summarize", "embed"]
