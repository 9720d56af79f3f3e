"""The simulator's Batch API (/v1/files, /v1/batches) over real HTTP, against a simulator subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from flowcloud.simulator import answer_for

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-batch-test-" + "k" * 20
AUTH = {"Authorization": f"Bearer {KEY}"}
DELAY = 0.6
TERMINAL = {"completed", "failed", "expired", "cancelled"}
ORDER = ["validating", "in_progress", "finalizing", "completed"]


@pytest.fixture(scope="module")
def sim():
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowcloud.simulator", "--port", "0", "--api-key", KEY, "--batch-delay", str(DELAY)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ},
    )
    line = proc.stdout.readline()
    assert "listening on" in line, line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def default_timing(sim):
    yield
    requests.post(f"{sim.removesuffix('/v1')}/_sim/config", json={"batch_delay": DELAY, "batch_window": 86400},
                  timeout=10)


def set_timing(sim: str, **timing: float) -> None:
    r = requests.post(f"{sim.removesuffix('/v1')}/_sim/config", json=timing, timeout=10)
    assert r.status_code == 200, r.text


def chat_line(custom_id: str, prompt: str, model: str = "gpt-4o-mini", **extra) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}, **extra}


def upload(sim: str, lines: list, headers: dict = AUTH, purpose: str = "batch") -> requests.Response:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return requests.post(f"{sim}/files", headers=headers, data={"purpose": purpose},
                         files={"file": ("requests.jsonl", text.encode("utf-8"))}, timeout=10)


def create(sim: str, file_id: str, headers: dict = AUTH, **overrides) -> requests.Response:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **overrides}
    return requests.post(f"{sim}/batches", headers=headers, json=body, timeout=10)


def start_batch(sim: str, lines: list) -> dict:
    r = upload(sim, lines)
    assert r.status_code == 200, r.text
    r = create(sim, r.json()["id"])
    assert r.status_code == 200, r.text
    return r.json()


def wait_finished(sim: str, batch_id: str, timeout: float = 30) -> tuple[dict, list[str]]:
    """Poll until the batch is terminal; returns it and the statuses seen, in order, without repeats."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = requests.get(f"{sim}/batches/{batch_id}", headers=AUTH, timeout=10).json()
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        if batch["status"] in TERMINAL:
            return batch, seen
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {seen[-1]}")


def file_lines(sim: str, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    r = requests.get(f"{sim}/files/{file_id}/content", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_a_batch_moves_through_its_statuses_and_answers_every_request(sim):
    prompts = {f"req-{i}": f"summarize part {i} of the report" for i in range(3)}
    created = start_batch(sim, [chat_line(cid, prompt) for cid, prompt in prompts.items()])
    assert created["object"] == "batch" and created["status"] == "validating"
    assert created["endpoint"] == "/v1/chat/completions" and created["completion_window"] == "24h"
    assert created["output_file_id"] is None and created["request_counts"]["total"] == 0

    batch, seen = wait_finished(sim, created["id"])

    assert seen[0] == "validating" and seen[-1] == "completed"
    assert [s for s in ORDER if s in seen] == seen, seen
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert batch["error_file_id"] is None and batch["completed_at"] >= batch["created_at"]
    lines = file_lines(sim, batch["output_file_id"])
    assert sorted(line["custom_id"] for line in lines) == sorted(prompts)
    for line in lines:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == answer_for(prompts[line["custom_id"]])
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    output = requests.get(f"{sim}/files/{batch['output_file_id']}", headers=AUTH, timeout=10).json()
    assert output["object"] == "file" and output["purpose"] == "batch_output"


def test_the_delay_counts_from_creation(sim):
    set_timing(sim, batch_delay=0)
    assert start_batch(sim, [chat_line("now", "no waiting")])["status"] == "completed"
    set_timing(sim, batch_delay=60)
    slow = start_batch(sim, [chat_line("later", "a long wait")])
    again = requests.get(f"{sim}/batches/{slow['id']}", headers=AUTH, timeout=10).json()
    assert slow["status"] == again["status"] == "validating" and again["output_file_id"] is None


def test_failing_requests_become_error_lines_and_the_rest_succeed(sim):
    batch, _ = wait_finished(sim, start_batch(sim, [
        chat_line("fine", "a normal request"),
        chat_line("rejected", "please [[sim:400]] reject this"),
        chat_line("limited", "and [[sim:429]] limit this"),
        chat_line("unreadable", "hello") | {"body": {"model": "gpt-4o-mini", "messages": []}},
    ])["id"])

    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert [line["custom_id"] for line in file_lines(sim, batch["output_file_id"])] == ["fine"]
    errors = {line["custom_id"]: line for line in file_lines(sim, batch["error_file_id"])}
    assert {cid: line["response"]["status_code"] for cid, line in errors.items()} == {
        "rejected": 400, "limited": 429, "unreadable": 400}
    assert all(line["error"] is None for line in errors.values())
    assert errors["limited"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    assert "messages" in errors["unreadable"]["response"]["body"]["error"]["message"]


def test_a_times_limited_fault_lets_the_same_request_through_in_a_later_batch(sim):
    line = chat_line("flaky", "only once [[sim:500;times=1]] " + str(time.time()))
    first, _ = wait_finished(sim, start_batch(sim, [line])["id"])
    second, _ = wait_finished(sim, start_batch(sim, [line])["id"])
    assert file_lines(sim, first["error_file_id"])[0]["response"]["status_code"] == 500
    assert file_lines(sim, second["output_file_id"])[0]["response"]["status_code"] == 200


@pytest.mark.parametrize("lines, code, line_number", [
    ([chat_line("a", "x"), chat_line("a", "y")], "duplicate_custom_id", 2),
    ([chat_line("a", "x"), "{not json"], "invalid_json_line", 2),
    ([chat_line("a", "x", url="/v1/images")], "invalid_url", 1),
    ([{**chat_line("a", "x"), "method": "GET"}], "invalid_method", 1),
    ([chat_line("a", "x"), chat_line("b", "y", model="gpt-4o")], "model_mismatch", 2),
    ([{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}], "missing_required_parameter", 1),
    ([chat_line("", "x")], "invalid_custom_id", 1),
    ([], "empty_file", None),
])
def test_an_invalid_input_file_fails_the_batch_naming_the_line(sim, lines, code, line_number):
    set_timing(sim, batch_delay=0)
    batch = start_batch(sim, lines)
    assert batch["status"] == "failed" and batch["failed_at"] is not None
    assert batch["output_file_id"] is None and batch["error_file_id"] is None
    assert (batch["errors"]["data"][0]["code"], batch["errors"]["data"][0]["line"]) == (code, line_number)


def test_a_line_for_another_endpoint_fails_the_batch(sim):
    set_timing(sim, batch_delay=0)
    r = upload(sim, [chat_line("a", "x", url="/v1/completions") | {"body": {"model": "m", "prompt": "x"}}])
    batch = create(sim, r.json()["id"]).json()
    assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "url_mismatch"


def test_every_batch_endpoint_needs_the_key(sim):
    file_id = upload(sim, [chat_line("a", "x")]).json()["id"]
    batch_id = create(sim, file_id).json()["id"]
    calls = [("post", "/batches", {"json": {}}), ("get", f"/batches/{batch_id}", {}),
             ("post", f"/batches/{batch_id}/cancel", {}), ("get", f"/files/{file_id}", {}),
             ("get", f"/files/{file_id}/content", {}), ("delete", f"/files/{file_id}", {}),
             ("get", "/batches", {})]
    for headers in ({}, {"Authorization": "Bearer sk-wrong-" + "x" * 20}):
        for method, path, extra in calls:
            r = requests.request(method, sim + path, headers=headers, timeout=10, **extra)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (method, path)
        assert upload(sim, [chat_line("a", "x")], headers=headers).status_code == 401
    assert requests.get(f"{sim}/files/{file_id}", headers=AUTH, timeout=10).status_code == 200


def test_bad_uploads_and_bad_batch_requests_are_refused_with_a_reason(sim):
    assert upload(sim, [chat_line("a", "x")], purpose="fine-tune").status_code == 400
    no_file = requests.post(f"{sim}/files", headers=AUTH, files={"purpose": (None, "batch")}, timeout=10)
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]["message"]
    as_json = requests.post(f"{sim}/files", headers=AUTH, json={"purpose": "batch"}, timeout=10)
    assert as_json.status_code == 400 and "multipart" in as_json.json()["error"]["message"]
    file_id = upload(sim, [chat_line("a", "x")]).json()["id"]
    assert create(sim, "file-missing").status_code == 404
    for bad, field in [({"completion_window": "1h"}, "completion_window"), ({"endpoint": "/v1/images"}, "endpoint"),
                       ({"metadata": {"n": 1}}, "metadata"), ({"input_file_id": 7}, "input_file_id")]:
        r = create(sim, file_id, **bad)
        assert r.status_code == 400 and field in r.json()["error"]["message"], bad
    assert requests.get(f"{sim}/batches/batch_missing", headers=AUTH, timeout=10).status_code == 404


def test_cancel_stops_a_running_batch_and_refuses_a_finished_one(sim):
    set_timing(sim, batch_delay=60)
    batch = start_batch(sim, [chat_line("a", "x"), chat_line("b", "y")])
    cancelling = requests.post(f"{sim}/batches/{batch['id']}/cancel", headers=AUTH, timeout=10).json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    cancelled, _ = wait_finished(sim, batch["id"])
    assert cancelled["status"] == "cancelled" and cancelled["output_file_id"] is None
    codes = {line["custom_id"]: line["error"]["code"] for line in file_lines(sim, cancelled["error_file_id"])}
    assert codes == {"a": "batch_cancelled", "b": "batch_cancelled"}
    again = requests.post(f"{sim}/batches/{batch['id']}/cancel", headers=AUTH, timeout=10)
    assert again.status_code == 400 and "cancelled" in again.json()["error"]["message"]


def test_a_batch_slower_than_its_window_expires_with_the_rest_unanswered(sim):
    set_timing(sim, batch_delay=0.6, batch_window=0.3)
    batch, _ = wait_finished(sim, start_batch(sim, [chat_line(f"r{i}", f"part {i}") for i in range(4)])["id"])
    assert batch["status"] == "expired" and batch["expired_at"] is not None
    assert [line["custom_id"] for line in file_lines(sim, batch["output_file_id"])] == ["r0", "r1"]
    errors = file_lines(sim, batch["error_file_id"])
    assert [(line["custom_id"], line["response"], line["error"]["code"]) for line in errors] == [
        ("r2", None, "batch_expired"), ("r3", None, "batch_expired")]


def test_a_fault_header_fails_the_call_itself(sim):
    file_id = upload(sim, [chat_line("a", "x")]).json()["id"]
    headers = {**AUTH, "x-sim-fault": "503;times=1;retry-after=2"}
    failed = create(sim, file_id, headers=headers)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "2"
    assert create(sim, file_id, headers=headers).status_code == 200
    refused = create(sim, file_id, headers={**AUTH, "x-sim-fault": "reset"})
    assert refused.status_code == 400 and "error statuses" in refused.json()["error"]["message"]


def test_files_can_be_listed_by_batch_and_deleted(sim):
    batch = start_batch(sim, [chat_line("a", "x")])
    listed = requests.get(f"{sim}/batches", headers=AUTH, params={"limit": 1}, timeout=10).json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == batch["id"]
    deleted = requests.delete(f"{sim}/files/{batch['input_file_id']}", headers=AUTH, timeout=10).json()
    assert deleted == {"id": batch["input_file_id"], "object": "file", "deleted": True}
    assert requests.get(f"{sim}/files/{batch['input_file_id']}", headers=AUTH, timeout=10).status_code == 404


def test_batch_timing_options_are_validated():
    for option in ("--batch-delay", "--batch-window"):
        result = subprocess.run([sys.executable, "-m", "flowcloud.simulator", option, "-1"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and option in result.stderr


def test_batch_timing_is_shown_and_checked_at_runtime(sim):
    root = sim.removesuffix("/v1")
    assert requests.get(f"{root}/_sim/config", timeout=10).json()["batch_delay"] == DELAY
    r = requests.post(f"{root}/_sim/config", json={"batch_delay": -1}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "batch_delay"
