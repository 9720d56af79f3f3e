"""The Prometheus endpoint of live workers: counts that match the jobs run, across pool
processes, with bounded labels and no secret; and the hooks that feed it never fail a job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flowcloud import client
from flowcloud.workers.core import records
from flowcloud.workers.core.records import JobRecord, JobStatus, JobStore
from flowcloud.workers.core.ssrf import Guard
from tests.conftest import KEY_ENV, free_port
from flowcloud.workers import metrics
from flowcloud.workers.core.queues import redis_lengths
from flowcloud.workers.metrics_endpoint import DIR_PREFIX
from flowcloud.workers.providers import http

Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> str:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def scrape_when_idle(port: int, timeout: float = 30.0) -> tuple[str, Samples]:
    """A scrape taken once no task is in flight: a record is written just before its task ends."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(port)
        samples = parse(text)
        if total(samples, "flowcloud_jobs_in_flight") == 0 or time.monotonic() > deadline:
            return text, samples
        time.sleep(0.2)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port``, from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def metrics_dir(worker) -> Path:
    return Path(tempfile.gettempdir()) / f"{DIR_PREFIX}{worker.process.pid}"


def run_jobs(prompts: list[str], flow: str) -> list[dict]:
    ids = [client.submit(prompt, flow=flow) for prompt in prompts]
    return client.wait_all(ids, timeout=90)


def check_job_series(samples: Samples, finished: list[dict]) -> None:
    """Token, cost, latency and outcome series add up to exactly what the records say."""
    succeeded = [r for r in finished if r["status"] == "succeeded"]
    called = [r for r in succeeded if not r["cached"]]  # a coalesced job's tokens were its twin's
    assert total(samples, "flowcloud_jobs_finished_total", status="succeeded") == len(succeeded)
    assert total(samples, "flowcloud_job_latency_seconds_count") == len(finished)
    assert total(samples, "flowcloud_job_queue_wait_seconds_count", queue="flowcloud") == len(finished)
    assert total(samples, "flowcloud_input_tokens_total", provider="sim", model="gpt-4o-mini") == \
        sum(r["usage"]["prompt_tokens"] for r in called)
    assert total(samples, "flowcloud_output_tokens_total", provider="sim", model="gpt-4o-mini") == \
        sum(r["usage"]["completion_tokens"] for r in called)
    for flow in {r["flow"] for r in finished}:
        spent = sum(r["cost_usd"] for r in finished if r["flow"] == flow)
        assert total(samples, "flowcloud_cost_usd_total", provider="sim", model="gpt-4o-mini", flow=flow) == \
            pytest.approx(spent, rel=1e-9)


def provider_key() -> str:
    # Read where the workers read it: importing tests.conftest makes a second module with its own key.
    return os.environ[KEY_ENV]


def check_nothing_private(text: str, tag: str, finished: list[dict]) -> None:
    assert provider_key() not in text
    assert tag not in text  # every prompt carries the tag
    assert not any(r["job_id"] in text for r in finished)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE flowcloud_")}
    catalog = {spec.name for spec in metrics.CATALOG} | {spec.name + "_total" for spec in metrics.CATALOG}
    assert names and names <= catalog, names - catalog


def test_prefork_endpoint_counts_jobs_from_both_pool_processes(start_worker, tag):
    port = free_port()
    worker = start_worker(pool="prefork", concurrency=2, env={"FLOWCLOUD_METRICS_PORT": str(port)})
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only

    plain = [f"metrics {tag} plain {i} [[sim:slow;delay=0.3]]" for i in range(6)]
    flaky = [f"metrics {tag} flaky {i} [[sim:429;times=1]]" for i in range(2)]
    finished = run_jobs(plain[:3] + flaky[:1], flow="alpha") + run_jobs(plain[3:] + flaky[1:], flow="beta")
    assert [r["status"] for r in finished] == ["succeeded"] * 8

    text, samples = scrape_when_idle(port)
    assert total(samples, "flowcloud_provider_requests_total", provider="sim", status="ok") == 8
    assert total(samples, "flowcloud_provider_requests_total", provider="sim", status="rate_limited") == 2
    assert total(samples, "flowcloud_provider_request_duration_seconds_count", model="gpt-4o-mini") == 10
    assert total(samples, "flowcloud_retries_total", reason="rate_limited") == 2
    assert total(samples, "flowcloud_jobs_finished_total", status="succeeded", flow="alpha") == 4
    check_job_series(samples, finished)
    assert total(samples, "flowcloud_jobs_in_flight") == 0
    assert ("flowcloud_queue_length", frozenset({("queue", "flowcloud")})) in samples
    check_nothing_private(text, tag, finished)

    # The counts above are whole only if the files of both pool processes were merged.
    writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir(worker).glob("counter_*.db")}
    assert len(writers - {str(worker.process.pid)}) == 2, writers


def test_threads_endpoint_counts_failures_coalescing_and_cache_hits(start_worker, tag):
    stale = Path(tempfile.gettempdir()) / f"{DIR_PREFIX}{finished_pid()}"
    stale.mkdir(exist_ok=True)
    port = free_port()
    worker = start_worker(pool="threads", concurrency=8, env={"FLOWCLOUD_METRICS_PORT": str(port)})
    assert not stale.exists()  # a dead worker's directory is cleaned when the next one starts
    assert metrics_dir(worker).is_dir()

    finished = run_jobs([f"metrics {tag} a", f"metrics {tag} b", f"metrics {tag} c [[sim:429;times=1]]",
                         f"metrics {tag} broken [[sim:400]]"], flow="gamma")
    assert [r["status"] for r in finished] == ["succeeded"] * 3 + ["failed"]
    twins = client.wait_all(client.submit_many([f"metrics {tag} twin"] * 3, flow="gamma"), timeout=60)
    assert sorted(r["cached"] for r in twins) == [False, True, True]
    hit = client.result(client.submit(f"metrics {tag} twin", flow="gamma"), timeout=10)
    assert hit["cached"] is True and hit["worker"] is None  # answered at submit: no task

    text, samples = scrape_when_idle(port)
    assert total(samples, "flowcloud_provider_requests_total", status="ok") == 4
    assert total(samples, "flowcloud_provider_requests_total", status="rate_limited") == 1
    assert total(samples, "flowcloud_provider_requests_total", status="bad_request") == 1
    assert total(samples, "flowcloud_retries_total", reason="rate_limited") == 1
    assert total(samples, "flowcloud_jobs_finished_total", status="failed", flow="gamma") == 1
    assert total(samples, "flowcloud_coalesced_jobs_total", flow="gamma") == 2
    assert total(samples, "flowcloud_cache_hits_total", flow="gamma") == 1
    check_job_series(samples, finished + twins)
    check_nothing_private(text, tag, finished + twins)

    worker.stop()
    assert not metrics_dir(worker).exists()  # removed at exit


def test_a_taken_port_leaves_the_worker_running_jobs(start_worker, tag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker(env={"FLOWCLOUD_METRICS_PORT": str(port)})
        record = client.result(client.submit(f"metrics {tag} port taken"), timeout=30)
    assert record["status"] == "succeeded"
    assert "metrics endpoint not started" in worker.log()
    assert not metrics_dir(worker).exists()


def test_a_failing_record_observer_never_fails_the_write(redis_server, monkeypatch, caplog):
    from flowcloud.workers.core.redis_conn import connect

    def broken(*_):
        raise RuntimeError("observer bug")

    monkeypatch.setattr(records, "write_observer", broken)
    store = JobStore(connect(redis_server.url), ttl=60)
    store.create(JobRecord(job_id="m1", status=JobStatus.QUEUED, submitted_at=time.time()))
    assert store.succeed("m1", text="done") is True
    assert store.get("m1").status is JobStatus.SUCCEEDED
    assert "record write observer failed" in caplog.text


def test_the_record_observer_sees_submit_time_and_billing(redis_server, monkeypatch):
    from flowcloud.workers.core.redis_conn import connect

    seen = []
    monkeypatch.setattr(records, "write_observer", lambda *args: seen.append(args))
    store = JobStore(connect(redis_server.url), ttl=60)
    store.create(JobRecord(job_id="m2", status=JobStatus.QUEUED, submitted_at=1234.5, flow="f"))
    store.write("m2", {"status": JobStatus.SUCCEEDED, "cost_usd": 0.5}, bill=False)
    assert store.succeed("m2", text="late duplicate") is False
    assert seen[-1][1]["flow"] == "f"  # the record's flow, though the write did not carry it
    assert [(job, fields["submitted_at"], billed) for job, fields, billed in seen] == [("m2", 1234.5, True),
                                                                                     ("m2", 1234.5, False)]


def test_a_failing_request_observer_never_fails_the_call(simulator, monkeypatch, caplog, tag):
    def broken(*_):
        raise RuntimeError("observer bug")

    monkeypatch.setattr(http, "request_observer", broken)
    pool = http.make_pool(2, simulator.url, Guard("sim", allow_private=True))
    body = http.post_json(pool, f"{simulator.url}/chat/completions",
                          {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": tag}]},
                          provider="sim", headers={"Authorization": f"Bearer {provider_key()}"}, timeout=(2, 5))
    assert body["choices"]
    assert "request observer failed" in caplog.text


def test_queue_length_counts_every_priority_list(redis_server):
    from flowcloud.workers.core.redis_conn import connect

    redis = connect(redis_server.url)
    redis.rpush("jobs-a", "m1", "m2")
    redis.rpush("jobs-a\x06\x169", "m3")
    assert redis_lengths(redis, ["jobs-a", "jobs-b"]) == {"jobs-a": 3, "jobs-b": 0}


def test_flow_labels_are_capped():
    labels = metrics.FlowLabels(limit=2)
    assert [labels(f) for f in ("a", "b", "c", "a", None, "x" * 200)] == \
        ["a", "b", "other", "a", "none", "other"]


def finished_pid() -> int:
    """The pid of a process that has exited: a worker that died without cleaning up."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_jobs_of_a_bundle_batch_count_in_flight_while_their_call_is_out(start_worker, tag):
    port = free_port()
    start_worker(env={"FLOWCLOUD_METRICS_PORT": str(port)})
    prompts = [f"{tag} slow together {i} [[sim:slow;delay=1]]" for i in range(16)]
    ids = client.submit_many(prompts, model="gpt-3.5-turbo-instruct")  # one full batch: one call
    deadline = time.monotonic() + 20
    while total(parse(scrape(port)), "flowcloud_jobs_in_flight", queue="flowcloud") < 16:
        assert time.monotonic() < deadline, "the batch's jobs never showed in flight"
        time.sleep(0.1)
    assert [r["status"] for r in client.wait_all(ids, timeout=60)] == ["succeeded"] * 16
    _, samples = scrape_when_idle(port)
    assert total(samples, "flowcloud_jobs_in_flight") == 0
