"""The public surface: what the light client pulls in, and what the CLI offers."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

HEAVY = ["requests", "workers.providers", "tasks.complete", "workers.runtime", "lfx", "langflow", "aiohttp",
         "gevent", "prometheus_client", "matplotlib"]


def test_client_import_stays_light():
    code = ("import sys, tasks.client as c; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules])); print(sorted(c.__all__))")
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT)
    loaded, names = done.stdout.splitlines()
    assert json.loads(loaded) == []
    assert names == str(["cancel", "embed", "result", "status", "submit", "submit_flow", "submit_many",
                         "summarize", "wait_all"])


@pytest.mark.parametrize("command", [[], ["up"], ["worker"], ["flower"], ["submit"], ["status"], ["result"],
                                     ["cancel"], ["simulate"], ["config", "check"], ["flow", "run"],
                                     ["langflow"], ["summarize"], ["beat"], ["costs"],
                                     ["budgets"], ["alerts"]])
def test_every_command_has_help(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr
