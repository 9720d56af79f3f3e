"""The flowcloud nodes inside a real Langflow 1.13 server: listed in the sidebar, and a flow run over its API.

The server runs from its own venv (`make langflow-server` builds `.venv-langflow`), is started
once for this module, and reaches the test Redis through the session's FLOWCLOUD_CONFIG.
A real worker answers; Langflow only queues the call and waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from flowcloud import client
from flowcloud.workers.core.records import KEY_PREFIX
from tests.conftest import ROOT, free_port
from flowcloud.simulator import answer_for

COMPONENTS = {"Cloud Completion (queued)", "Job Result", "Batch Submit", "Run Flow in Background", "Cloud Summarize",
              "Clean Text", "Route by Length", "Local Summary", "Summary Report", "Embed Text"}
START_TIMEOUT = 180.0  # ~90 s on 2 cores, most of it loading Langflow's bundled components


def langflow_binary() -> str | None:
    """FLOWCLOUD_LANGFLOW_BIN (set by `make test`), the repo's .venv-langflow, or langflow beside this Python."""
    candidates = [os.environ.get("FLOWCLOUD_LANGFLOW_BIN"), str(ROOT / ".venv-langflow" / "bin" / "langflow"),
                  shutil.which("langflow", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    return str(Path(found).absolute()) if found else None  # the server starts in another directory


@dataclass
class LangflowServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    token: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=240, **kwargs)


def server_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,  # FLOWCLOUD_CONFIG: the components reach the test Redis
        "LANGFLOW_COMPONENTS_PATH": str(ROOT / "flows" / "components"),
        "LANGFLOW_AUTO_LOGIN": "true",
        "LANGFLOW_CONFIG_DIR": str(tmp / "config"),
        "LANGFLOW_DATABASE_URL": f"sqlite:///{tmp / 'langflow.db'}",
        # No calls out to telemetry or LiteLLM's price list: tests talk to this machine only.
        "LANGFLOW_DO_NOT_TRACK": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def wait_for_health(server: LangflowServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert server.process.poll() is None, f"langflow exited:\n{server.log()}"
        try:
            if requests.get(f"{server.url}/health", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy loading
            pass
        assert time.monotonic() < deadline, f"langflow not healthy after {START_TIMEOUT:g} s:\n{server.log()}"
        time.sleep(1)


@pytest.fixture(scope="module")
def langflow_server(flowcloud_env, tmp_path_factory):
    binary = langflow_binary()
    if binary is None:
        reason = "langflow is not installed: `make langflow-server` builds .venv-langflow"
        if os.environ.get("CI"):
            pytest.fail(reason)  # `make test` installs it in CI, so a skip there would hide a broken install
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("langflow")
    port = free_port()
    log_path = tmp / "langflow.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "run", "--host", "127.0.0.1", "--port", str(port), "--backend-only", "--no-open-browser"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=server_env(tmp), start_new_session=True,
        )
    server = LangflowServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_for_health(server)
        server.token = requests.get(f"{server.url}/api/v1/auto_login", timeout=30).json()["access_token"]
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it forks its own workers); SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_sidebar_lists_the_flowcloud_nodes(langflow_server):
    categories = langflow_server.api("GET", "/all").json()
    assert "flowcloud" in categories, sorted(categories)
    assert {node["display_name"] for node in categories["flowcloud"].values()} == COMPONENTS


def test_queued_completion_flow_runs_through_the_api_on_a_worker(langflow_server, worker, redis_server):
    flow = json.loads((ROOT / "flows" / "queued_completion.json").read_text(encoding="utf-8"))
    created = langflow_server.api("POST", "/flows/", json={key: flow[key] for key in ("name", "description", "data")})
    assert created.status_code == 201, created.text
    api_key = langflow_server.api("POST", "/api_key/", json={"name": "flowcloud-test"}).json()["api_key"]

    ran = langflow_server.api("POST", f"/run/{created.json()['id']}", headers={"x-api-key": api_key},
                              json={"input_value": "hello", "input_type": "chat", "output_type": "chat"})
    assert ran.status_code == 200, ran.text
    [output] = ran.json()["outputs"][0]["outputs"]
    assert output["results"]["message"]["text"] == answer_for("hello")

    [key] = redis_server.client().keys(KEY_PREFIX + "*")
    record = client.status(key.decode().removeprefix(KEY_PREFIX))
    assert record["worker"] == worker.hostname  # answered in the worker process, not in Langflow's
    assert (record["status"], record["text"]) == ("succeeded", answer_for("hello"))
