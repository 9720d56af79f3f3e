"""The baseline Celery app: raw tasks with none of flowcloud's work, the floor flowcloud is measured against.

It takes flowcloud's own broker and result settings (``celery_settings``), so the
only difference from a flowcloud worker is the work done per task. Two tasks:
``noop`` does nothing at all; ``http_call`` makes the chat completion request a
hand-written task would make (one pooled ``requests`` session per process, no
retries, no records) and returns when it finished. Their results go to
Celery's own result backend, where the bench reads them.
"""

from __future__ import annotations

import functools
import time

import requests
from celery import Celery
from requests.adapters import HTTPAdapter

from flowcloud.workers.core.celery_app import celery_settings
from flowcloud.workers.core.config import get_config

NOOP_TASK = "bench.noop"
HTTP_CALL_TASK = "bench.http_call"
BASELINE_QUEUE = "bench-baseline"
# Enough pooled connections for any concurrency the bench runs a worker with.
POOL_SIZE = 4096
TIMEOUT = (5.0, 120.0)

app = Celery("bench")
app.conf.update({**celery_settings(get_config()), "task_default_queue": BASELINE_QUEUE})


@app.task(name=NOOP_TASK)
def noop() -> None:
    """Nothing: what Celery and Redis cost per task on their own."""
    return None


@functools.cache
def _session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE, max_retries=0))
    return session


@app.task(name=HTTP_CALL_TASK)
def http_call(url: str, body: dict) -> dict:
    """POST ``body`` to ``url`` and return the answer's text and when the task finished (epoch seconds)."""
    response = _session().post(url, json=body, timeout=TIMEOUT)
    response.raise_for_status()
    text = response.json()["choices"][0]["message"]["content"]
    return {"text": text, "finished_at": time.time()}
