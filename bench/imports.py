"""What a Langflow node pays to import flowcloud's client, against what it pays for lfx anyway.

Each figure is the CPU time of one import in a fresh interpreter (wall time on a
shared machine also counts waiting for a CPU), best of three, after a first
run that compiles the bytecode. The baseline is the Component base class every
Langflow node imports, measured the same way in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.results import Figure, Outcome, Target

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
CLIENT = "import flowcloud.client"
BASELINE = "from lfx.custom.custom_component.component import Component"
TARGET_SECONDS = 0.5


@dataclass
class ImportCost:
    client: float
    baseline: float | None  # None when lfx is not installed

    @property
    def ratio(self) -> float | None:
        return self.client / self.baseline if self.baseline else None


def cpu_seconds(statement: str) -> float:
    code = f"import time; t = time.process_time(); {statement}; print(time.process_time() - t)"
    runs = []
    for _ in range(RUNS + 1):  # the first run compiles .pyc files: not counted
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        runs.append(float(done.stdout))
    return min(runs[1:])


def measure() -> ImportCost:
    try:
        baseline = cpu_seconds(BASELINE)
    except subprocess.CalledProcessError:
        baseline = None
    return ImportCost(client=cpu_seconds(CLIENT), baseline=baseline)


def describe(cost: ImportCost) -> str:
    verdict = "within" if cost.client <= TARGET_SECONDS else "OVER"
    line = f"import flowcloud.client: {cost.client:.3f} s CPU ({verdict} the {TARGET_SECONDS} s target)"
    if cost.baseline:
        line += f"; lfx Component: {cost.baseline:.3f} s; client / lfx: {cost.ratio:.3f}"
    return line


def run(stack: object, options: object) -> Outcome:
    """The import cost as a benchmark outcome; needs no stack."""
    cost = measure()
    return Outcome(
        "imports", f"CPU time of one import in a fresh interpreter, best of {RUNS}",
        subject=CLIENT, baseline="lfx's Component base class",
        figures=[Figure("import time", "s", cost.client, cost.baseline, Target("value", "<=", TARGET_SECONDS))],
        notes=[] if cost.baseline else ["lfx is not installed: no baseline"],
    )


if __name__ == "__main__":
    print(json.dumps(measure().__dict__))
