"""flowcloud: run Langflow's cloud AI calls on a Celery worker fleet.

The public API is the light client (``flowcloud.client``), re-exported here:

    from flowcloud import JobTimeout, result, submit
    record = result(submit("Say hello"), timeout=60)

Parts, bottom to top (``[importlinter]`` in ``setup.cfg`` holds the direction):
``flowcloud.workers.core`` the foundation, ``flowcloud.workers`` the engine,
``flowcloud.tasks`` the Celery task bodies, and on top the client, the CLI
(``flowcloud.cli``), Beat's schedule (``flowcloud.beat``) and the Langflow
components (``flowcloud.flows``).
"""

from flowcloud.client import cancel, embed, result, status, submit, submit_flow, submit_many, summarize, wait_all
from flowcloud.workers.core.errors import FlowcloudError, InvalidJob, JobNotFound, JobTimeout

__all__ = ["submit", "submit_many", "submit_flow", "status", "result", "wait_all", "cancel", "summarize", "embed",
           # what the client's functions raise
           "FlowcloudError", "InvalidJob", "JobNotFound", "JobTimeout"]
