"""Tests for the provider simulator, run as a real subprocess over HTTP."""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import requests

from flowcloud.simulator import (
    FaultSpecError,
    answer_for,
    count_tokens,
    embedding_for,
    parse_fault_rates,
    parse_fault_spec,
    start_in_thread,
)

ROOT = Path(__file__).resolve().parents[1]
ERROR_STATUSES = [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503]


def start_simulator(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python -m flowcloud.simulator --port 0 ARGS``; return it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowcloud.simulator", "--port", "0", *args],
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("simulator listening on http://"):
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r} {proc.stderr.read()!r}")
    return proc, line.split()[-1].removesuffix("/v1")


def stop_simulator(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def server():
    proc, url = start_simulator("--seed", "1")
    yield url
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def sim(server):
    """The shared simulator, reset to defaults before each test."""
    requests.post(f"{server}/_sim/config", json={"latency": 0, "jitter": 0, "fault_rates": {}, "seed": 1})
    requests.post(f"{server}/_sim/reset")
    return server


def chat(url: str, content: str, headers: dict | None = None, timeout: object = 10,
         **extra) -> requests.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


# --- content -----------------------------------------------------------------

def test_answer_for_is_deterministic_and_prompt_specific():
    prompt = "What   is\nthe capital of France?"
    assert answer_for(prompt) == answer_for(prompt)
    assert answer_for(prompt).startswith("Simulated answer to: What is the capital of France? [")
    assert answer_for(prompt) != answer_for(prompt + " ")
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    assert answer_for(long_a) != answer_for(long_b)
    assert count_tokens("") == 1 and count_tokens("abcde") == 2


def test_chat_completion_shape_and_usage(sim):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    body = {"model": "my-model", "messages": messages}
    r = requests.post(f"{sim}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "my-model" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice == {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": answer_for("Hello there")}}
    prompt_tokens = count_tokens("Be brief.") + count_tokens("Hello there")
    completion_tokens = count_tokens(answer_for("Hello there"))
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def cached_tokens(response: requests.Response) -> int:
    return response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_a_long_prompt_prefix_seen_before_is_cached_in_128_token_steps(sim):
    instructions = unique("Answer from this manual only.") + " x" * 2600  # 1300 tokens of shared prefix
    first = chat(sim, instructions + " Question: how do I reset it?")
    assert first.status_code == 200 and cached_tokens(first) == 0
    again = chat(sim, instructions + " Question: where is the fuse?")
    shared_tokens = len(instructions) // 4
    cached = cached_tokens(again)
    assert cached >= 1024 and (cached - 1024) % 128 == 0
    assert shared_tokens - 128 < cached <= shared_tokens  # the whole shared prefix, to the step below it
    assert cached < again.json()["usage"]["prompt_tokens"]


def test_short_prompts_other_models_and_a_reset_get_no_cached_tokens(sim):
    short = unique("a short question") * 20  # well under 1024 tokens
    chat(sim, short)
    assert cached_tokens(chat(sim, short)) == 0
    long = unique("a long prompt") + " y" * 2500
    chat(sim, long)
    assert cached_tokens(chat(sim, long, model="gpt-4o")) == 0  # the cache is per model
    requests.post(f"{sim}/_sim/reset")
    assert cached_tokens(chat(sim, long)) == 0
    assert cached_tokens(chat(sim, long)) > 0


def test_chat_max_tokens_truncates_with_length(sim):
    choice = chat(sim, "a fairly long question", max_tokens=3).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == answer_for("a fairly long question")[:12]


def test_legacy_completion_with_a_list_of_prompts(sim):
    prompts = ["first prompt", "second", "third one here"]
    r = requests.post(f"{sim}/v1/completions", json={"model": "m", "prompt": prompts}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    expected = [(i, answer_for(p)) for i, p in enumerate(prompts)]
    assert [(c["index"], c["text"]) for c in body["choices"]] == expected
    assert body["usage"]["prompt_tokens"] == sum(count_tokens(p) for p in prompts)
    assert body["usage"]["completion_tokens"] == sum(count_tokens(answer_for(p)) for p in prompts)


def test_legacy_completion_with_one_prompt(sim):
    body = requests.post(f"{sim}/v1/completions", json={"model": "m", "prompt": "solo"}, timeout=10).json()
    assert [c["text"] for c in body["choices"]] == [answer_for("solo")]


def test_embeddings_are_deterministic_unit_vectors(sim):
    r = requests.post(f"{sim}/v1/embeddings", json={"model": "e", "input": ["a", "b", "a"]}, timeout=10)
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2] and all(d["object"] == "embedding" for d in data)
    assert data[0]["embedding"] == data[2]["embedding"] == embedding_for("a")
    assert data[0]["embedding"] != data[1]["embedding"]
    assert math.isclose(sum(v * v for v in data[1]["embedding"]), 1.0)
    assert r.json()["usage"]["prompt_tokens"] == 3
    one = requests.post(f"{sim}/v1/embeddings", json={"input": "a", "dimensions": 64}, timeout=10).json()
    assert len(one["data"]) == 1 and len(one["data"][0]["embedding"]) == 64


def test_models_and_bad_bodies(sim):
    assert "gpt-4o-mini" in [m["id"] for m in requests.get(f"{sim}/v1/models", timeout=10).json()["data"]]
    r = requests.post(f"{sim}/v1/chat/completions", json={"model": "m"}, timeout=10)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = requests.post(f"{sim}/v1/completions", data=b"{not json", timeout=10)
    assert r.status_code == 400


# --- faults -------------------------------------------------------------------

def test_header_fault_applies_times_then_succeeds(sim):
    headers = {"x-sim-fault": "429;times=2;retry-after=2"}
    prompt = unique("header fault")
    first, second, third = (chat(sim, prompt, headers) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["Retry-After"] == "2"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.json()["choices"][0]["message"]["content"] == answer_for(prompt)
    # A different body has its own count.
    assert chat(sim, unique("other"), headers).status_code == 429


def test_prompt_directive_fault_keeps_prompt_for_the_answer(sim):
    prompt = unique("Tell me [[sim:503;times=1]] things")
    assert chat(sim, prompt).status_code == 503
    ok = chat(sim, prompt)
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == answer_for(prompt)


def test_directive_in_one_prompt_of_a_list_faults_the_whole_call(sim):
    prompts = ["plain", unique("[[sim:500;times=1]]")]
    assert requests.post(f"{sim}/v1/completions", json={"prompt": prompts}, timeout=10).status_code == 500
    again = requests.post(f"{sim}/v1/completions", json={"prompt": prompts}, timeout=10)
    assert again.status_code == 200 and len(again.json()["choices"]) == 2


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_status_faults_return_openai_error_bodies(sim, status):
    r = chat(sim, "status", {"x-sim-fault": str(status)})
    assert r.status_code == status
    assert set(r.json()["error"]) >= {"message", "type", "code"}


def test_retry_after_ms_and_http_date_headers(sim):
    r = chat(sim, "ms", {"x-sim-fault": "429;retry-after-ms=1500"})
    assert r.headers["retry-after-ms"] == "1500"
    r = chat(sim, "date", {"x-sim-fault": "503;retry-after-date=30"})
    when = email.utils.parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
    assert 20 < when - time.time() < 40


def test_reset_fault_resets_the_connection(sim):
    with pytest.raises(requests.ConnectionError):
        chat(sim, "reset me", {"x-sim-fault": "reset"})
    log = requests.get(f"{sim}/_sim/requests", params={"contains": "reset me"}, timeout=10).json()
    assert [(e["status"], e["fault"]) for e in log] == [(None, "reset")]


def test_malformed_and_empty_faults(sim):
    r = chat(sim, "bad body", {"x-sim-fault": "malformed"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()
    r = chat(sim, "no choices", {"x-sim-fault": "empty"})
    assert r.status_code == 200 and "choices" not in r.json()


def wait_until_idle(url: str) -> None:
    """Wait for requests the client gave up on, so later counts are not disturbed."""
    for _ in range(100):
        if requests.get(f"{url}/_sim/stats", timeout=10).json()["in_flight"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("simulator still busy")


def test_slow_fault_exceeds_a_short_read_timeout(sim):
    with pytest.raises(requests.ReadTimeout):
        chat(sim, "slow", {"x-sim-fault": "slow;delay=1.5"}, timeout=(5, 0.3))
    wait_until_idle(sim)
    r = chat(sim, "a bit slow", {"x-sim-fault": "slow;delay=0.2"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == answer_for("a bit slow")


def test_bad_fault_specs_are_rejected(sim):
    for spec in ["teapot", "418", "429;times=0", "slow;delay=abc", "429;bogus=1"]:
        r = chat(sim, "x", {"x-sim-fault": spec})
        assert r.status_code == 400, spec
    with pytest.raises(FaultSpecError):
        parse_fault_rates("429=0.7,500=0.7")
    assert str(parse_fault_spec("429; Retry-After=2 ;times=3")) == "429;retry-after=2;times=3"


def test_rate_faults_are_reproducible_with_a_seed(sim):
    def statuses() -> list[int]:
        config = {"fault_rates": {"429": 0.3, "500": 0.2}, "seed": 42}
        assert requests.post(f"{sim}/_sim/config", json=config, timeout=10).status_code == 200
        return [chat(sim, f"rate {i}").status_code for i in range(40)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 429, 500}
    limited = [r for r in (chat(sim, "again") for _ in range(30)) if r.status_code == 429]
    assert limited and all(x.headers["Retry-After"] == "1" for x in limited)


# --- control routes -----------------------------------------------------------

def test_stats_and_request_log(sim):
    marker = unique("logged")
    chat(sim, marker)
    chat(sim, marker + " again")
    chat(sim, marker, {"x-sim-fault": "429;retry-after=1"})
    stats = requests.get(f"{sim}/_sim/stats", timeout=10).json()
    assert stats["total"] == 3 and stats["in_flight"] == 0 and stats["max_in_flight"] >= 1
    assert stats["by_endpoint"]["/v1/chat/completions"] == {"200": 2, "429": 1}
    log = requests.get(f"{sim}/_sim/requests", params={"contains": marker}, timeout=10).json()
    assert [(e["status"], e["fault"]) for e in log] == [(200, None), (200, None), (429, "429;retry-after=1")]
    assert all(e["path"] == "/v1/chat/completions" and e["prompt"].startswith(marker) for e in log)
    assert log[0]["t"] <= log[1]["t"] <= log[2]["t"]
    assert len(requests.get(f"{sim}/_sim/requests", params={"limit": 1}, timeout=10).json()) == 1
    requests.post(f"{sim}/_sim/reset", timeout=10)
    assert requests.get(f"{sim}/_sim/stats", timeout=10).json()["total"] == 0
    assert requests.get(f"{sim}/_sim/requests", timeout=10).json() == []


def test_reset_also_restarts_times_counters(sim):
    headers = {"x-sim-fault": "500;times=1"}
    assert [chat(sim, "count me", headers).status_code for _ in range(2)] == [500, 200]
    requests.post(f"{sim}/_sim/reset", timeout=10)
    assert chat(sim, "count me", headers).status_code == 500


def test_config_changes_behaviour_at_runtime(sim):
    r = requests.post(f"{sim}/_sim/config", json={"latency": 0.2, "jitter": 0.05, "fault_rates": {"502": 1}})
    assert r.status_code == 200
    config = requests.get(f"{sim}/_sim/config", timeout=10).json()
    assert config["latency"] == 0.2 and config["jitter"] == 0.05 and config["fault_rates"] == {"502": 1.0}
    assert chat(sim, "always failing").status_code == 502
    requests.post(f"{sim}/_sim/config", json={"fault_rates": {}, "latency": 0}, timeout=10)
    assert chat(sim, "fine again").status_code == 200
    for bad, option in [({"latency": -1}, "latency"), ({"fault_rates": {"500": 2}}, "fault_rates"),
                        ({"colour": "red"}, "colour")]:
        r = requests.post(f"{sim}/_sim/config", json=bad, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == option


def test_two_thousand_concurrent_slow_requests_are_all_answered(sim):
    requests.post(f"{sim}/_sim/config", json={"latency": 2.0, "jitter": 0.2}, timeout=10)

    async def run() -> Counter:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async def one(i: int) -> int:
                body = {"model": "m", "messages": [{"role": "user", "content": f"concurrent {i}"}]}
                async with session.post(f"{sim}/v1/chat/completions", json=body) as r:
                    payload = await r.json()
                    assert payload["choices"][0]["message"]["content"] == answer_for(f"concurrent {i}")
                    return r.status

            return Counter(await asyncio.gather(*(one(i) for i in range(2000))))

    assert asyncio.run(run()) == Counter({200: 2000})
    log = requests.get(f"{sim}/_sim/requests", params={"contains": "concurrent ", "limit": 20000}, timeout=10)
    assert Counter(entry["status"] for entry in log.json()) == Counter({200: 2000})
    stats = requests.get(f"{sim}/_sim/stats", timeout=10).json()
    # With 2 s per answer, answering one at a time could never finish; most were open together.
    assert stats["max_in_flight"] >= 500


# --- processes: auth, options, in-process use ---------------------------------

def test_api_key_is_required_and_never_echoed():
    key, wrong = "sk-sim-secret-5f3a9c", "sk-wrong-guess-7d21e8"
    proc, url = start_simulator("--access-log", env={"FLOWCLOUD_SIM_API_KEY": key})
    try:
        denied = [chat(url, "no key"), chat(url, "wrong", {"Authorization": f"Bearer {wrong}"}),
                  chat(url, "wrong azure", {"api-key": wrong})]
        for r in denied:
            assert r.status_code == 401
            assert r.json() == {"error": {"message": "Incorrect API key provided.",
                                          "type": "invalid_request_error", "code": "invalid_api_key"}}
            assert "wrong-guess" not in r.text and "wrong-guess" not in str(r.headers)
        assert chat(url, "bearer", {"Authorization": f"Bearer {key}"}).status_code == 200
        assert chat(url, "azure", {"api-key": key}).status_code == 200
        routes = ("requests", "config")
        control = "".join(requests.get(f"{url}/_sim/{route}", timeout=10).text for route in routes)
        assert "secret" not in control and "wrong-guess" not in control
    finally:
        code, out, err = stop_simulator(proc)
    assert code == 0
    assert "/v1/chat/completions" in err  # the access log was on
    assert "secret" not in out + err and "wrong-guess" not in out + err


def test_command_line_rates_and_seed():
    proc, url = start_simulator("--fault-rate", "500=1", "--seed", "3")
    try:
        assert [chat(url, "x").status_code for _ in range(3)] == [500, 500, 500]
        assert requests.get(f"{url}/_sim/config", timeout=10).json()["seed"] == 3
    finally:
        assert stop_simulator(proc)[0] == 0


@pytest.mark.parametrize("args, option", [
    (["--fault-rate", "429=abc"], "--fault-rate"),
    (["--fault-rate", "429=1.5"], "--fault-rate"),
    (["--fault-rate", "teapot=0.1"], "--fault-rate"),
    (["--latency", "-1"], "--latency"),
    (["--jitter", "soon"], "--jitter"),
    (["--port", "70000"], "--port"),
])
def test_bad_command_line_options_fail_with_one_line(args, option):
    result = subprocess.run([sys.executable, "-m", "flowcloud.simulator", "--port", "0", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0]


def test_in_thread_simulator_for_in_process_use():
    with start_in_thread(latency=0.0, fault_rates="503=1") as running:
        assert running.port > 0 and running.url.endswith("/v1")
        r = chat(running.url.removesuffix("/v1"), "hi")
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
