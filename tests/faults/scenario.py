"""What the fault scenarios share besides fixtures: a user's program as a process, and the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from flowcloud.workers.core.money import to_nano
from flowcloud.workers.core.records import KEY_PREFIX, SPEND_KEY
from tests.conftest import ROOT

DRIVER = Path(__file__).with_name("drive_jobs.py")


class Driver:
    """tests/faults/drive_jobs.py in its own process: a user's program submitting and waiting."""

    def __init__(self, env: dict[str, str], count: int, prompt: str, timeout: float) -> None:
        self.process = subprocess.Popen([sys.executable, str(DRIVER), str(count), prompt, str(timeout)],
                                        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.job_ids = json.loads(self.process.stdout.readline() or "{}").get("submitted")
        assert self.job_ids, self.process.stderr.read()

    def records(self, timeout: float) -> list[dict]:
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"the client died:\n{err[-3000:]}"
        return json.loads(out)["records"]


@dataclass
class Figures:
    """What a fault scenario ends with: one line each in the run's summary (``pytest_terminal_summary``)."""

    scenario: str
    submitted: int
    completed: int
    failed: int
    lost: int
    duplicate_calls: int
    billed_twice_usd: float

    def show(self) -> None:
        SHOWN.append(f"{self.scenario}: {self.submitted} submitted, {self.completed} completed, "
                     f"{self.failed} failed, {self.lost} lost, {self.duplicate_calls} duplicate provider calls, "
                     f"${self.billed_twice_usd:.6f} billed twice")


SHOWN: list[str] = []


def figures(scenario: str, records: list[dict], answered_calls: int, redis) -> Figures:
    """The figures of ``records``, given how many calls the simulator answered (200) and the Redis
    the jobs used. A duplicate call is an answer beyond one per job: the provider bills it, the job
    does not (the first finishing write wins). Billed twice is the spend counter beyond the sum of
    the records' costs: a job billed once adds its cost exactly once."""
    completed = sum(r["status"] == "succeeded" for r in records)
    failed = sum(r["status"] == "failed" for r in records)
    spent = int(redis.client().get(SPEND_KEY) or 0)
    billed = sum(to_nano(r["cost_usd"] or 0.0) for r in records)
    return Figures(scenario, len(records), completed, failed, len(records) - completed - failed,
                   answered_calls - len(records), (spent - billed) / 1e9)


def rewritten(records: list[dict], redis) -> list[str]:
    """The jobs whose stored record no longer says it finished when the client saw it finish."""
    pipe = redis.client().pipeline(transaction=False)
    for record in records:
        pipe.hget(KEY_PREFIX + record["job_id"], "finished_at")
    return [record["job_id"] for record, stored in zip(records, pipe.execute())
            if stored is None or float(stored) != record["finished_at"]]
