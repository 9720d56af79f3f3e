"""The ``summarize`` task: a long text summarized as a tree of completion jobs (``flowcloud.workers.summaries.tree``).

The first message plans the summary; each later one advances it. Between two
looks the task holds no worker slot: the engine's ``Look`` becomes a countdown.
"""

from __future__ import annotations

from flowcloud.workers.core.celery_app import SUMMARIZE_TASK, app
from flowcloud.workers.core.errors import InvalidJob
from flowcloud.workers.core.jobspec import SummaryOptions, parse
from flowcloud.workers.summaries import tree


@app.task(name=SUMMARIZE_TASK, bind=True, ignore_result=True, max_retries=None,
          throws=(InvalidJob,))  # expected failures: logged in one line, no traceback
def summarize_task(self, request: dict, stage: dict | None = None) -> None:
    job_id, worker = self.request.id, self.request.hostname
    if stage is None:
        look = tree.plan(job_id, worker, request)
    else:
        look = tree.advance(job_id, worker, parse(SummaryOptions, request), tree.Stage.model_validate(stage))
    if look is not None:
        raise self.retry(**look.next_message())
