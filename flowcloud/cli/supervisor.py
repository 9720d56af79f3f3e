"""Child processes of ``flowcloud up``: started in order, watched, stopped in reverse.

Each child runs in its own session so a terminal's Ctrl-C reaches only the
supervisor, which then stops every child itself: politely (SIGTERM, which is a
warm shutdown for Celery), then for good after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flowcloud.workers.core.errors import ChildFailed

STOP_GRACE_SECONDS = 15.0
# How much of a failed child's log its error shows.
LOG_TAIL_LINES = 15


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], ready: Callable[[], bool], timeout: float = 60.0,
              env: dict[str, str] | None = None) -> Child:
        """Start ``argv``, logging to ``<log_dir>/<name>.log``, and wait until ``ready()`` holds.
        ``env`` adds to the environment every child gets."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                       start_new_session=True)
        child = Child(name, process, log_path)
        self.children.append(child)
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise child_failed(child, "exited while starting")
            if time.monotonic() > deadline:
                raise child_failed(child, f"was not ready after {timeout:g} s")
            time.sleep(0.2)
        return child

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()


def child_failed(child: Child, what: str) -> ChildFailed:
    """The error for ``child``, which ``what`` ("exited while starting"), with the last lines of its log."""
    tail = child.log_path.read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:]
    return ChildFailed(child.name, what, child.log_path, tail)
