"""The public surface: what the light client pulls in, and what the CLI offers."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

HEAVY = ["requests", "flowcloud.workers.providers", "flowcloud.tasks", "flowcloud.workers.runtime",
         "flowcloud.workers.pipeline", "lfx", "langflow", "aiohttp", "gevent", "prometheus_client", "matplotlib"]
CLIENT = ["cancel", "embed", "result", "status", "submit", "submit_flow", "submit_many", "summarize", "wait_all"]


def test_client_import_stays_light():
    code = ("import sys, flowcloud, flowcloud.client; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules])); "
            "print(json.dumps([sorted(flowcloud.client.__all__), sorted(flowcloud.__all__)]))")
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT)
    loaded, names = done.stdout.splitlines()
    assert json.loads(loaded) == []
    client_names, package_names = json.loads(names)
    assert client_names == CLIENT
    assert package_names == sorted(CLIENT + ["FlowcloudError", "InvalidJob", "JobNotFound", "JobTimeout"])


@pytest.mark.parametrize("command", [[], ["up"], ["worker"], ["flower"], ["submit"], ["status"], ["result"],
                                     ["cancel"], ["simulate"], ["config", "check"], ["flow", "run"],
                                     ["langflow"], ["summarize"], ["beat"], ["costs"],
                                     ["budgets"], ["alerts"], ["models"], ["ab", "report"], ["ab", "restore"]])
def test_every_command_has_help(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr
