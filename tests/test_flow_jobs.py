"""Whole flows as background jobs on a flow worker (prefork, its own queue), run by real lfx."""

import json

import pytest

from flowcloud import client
from tests.conftest import ROOT, run_cli

pytest.importorskip("lfx", reason="the langflow extra is not installed")
HELLO_FLOW = ROOT / "tests" / "data" / "hello_flow.json"  # `lfx create hello`: Text Input -> Chat Output


@pytest.fixture
def flow_worker(start_worker):
    return start_worker(pool="prefork", concurrency=2, queues="flowcloud.flows")


def test_flow_run_returns_the_output_from_a_flow_worker(flow_worker):
    done = run_cli("flow", "run", str(HELLO_FLOW), "hi", "--wait", "--json", "--timeout", "120", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded" and record["text"] == "Hello, World!"
    assert record["worker"] == flow_worker.hostname
    assert record["outputs"][0]["component"] == "Chat Output"


def test_twenty_flows_at_once_all_complete(flow_worker):
    flow = json.loads(HELLO_FLOW.read_text())
    jobs = [client.submit_flow(flow, f"input {i}", flow_name="fleet") for i in range(20)]
    records = client.wait_all(jobs, timeout=240)
    assert [r["status"] for r in records] == ["succeeded"] * 20
    assert {r["flow"] for r in records} == {"fleet"}


def test_a_broken_flow_fails_alone_with_a_message(flow_worker):
    broken = json.loads(HELLO_FLOW.read_text())
    broken["data"]["edges"] = []  # Chat Output left without input
    broken["data"]["nodes"][0]["data"]["node"]["template"]["code"]["value"] = "this is not python"
    bad, good = client.submit_flow(broken, "x"), client.submit_flow(HELLO_FLOW, "y")
    assert client.result(good, timeout=120)["status"] == "succeeded"
    failed = client.result(bad, timeout=120)
    assert failed["status"] == "failed" and failed["error"]["kind"] == "flow_failed"
    assert failed["error"]["message"]


def test_not_a_flow_is_refused_at_submit():
    from flowcloud.workers.core.errors import InvalidJob

    with pytest.raises(InvalidJob, match="not a Langflow flow"):
        client.submit_flow({"nodes": []})
