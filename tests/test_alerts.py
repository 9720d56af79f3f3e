"""Beat's checks, alerts and degraded mode against the real private Redis, real workers and a real webhook.

The error-rate test runs the check task on a real worker while the simulator
fails 10% of calls; the backlog test runs a real `flowcloud beat`. Alerts go
to a small HTTP server started here, which records every body it is sent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.conftest import CANARY_KEY, ROOT, config_yaml, free_port, run_cli
from flowcloud.workers.core.config import DEFAULTS, validate
from flowcloud.workers.core.errors import ConfigError, InvalidJob

CHECK_ALERTS_TASK = "flowcloud.check_alerts"  # as flowcloud.workers.core.celery_app names it; imported late, see test_beat


class Receiver:
    """A webhook receiver: a real HTTP server on a free port that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [text for text in self.texts() if re.search(pattern, text)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {pattern!r} among {self.texts()}"
            time.sleep(0.1)


@pytest.fixture
def receiver():
    webhook = Receiver()
    yield webhook
    webhook.server.shutdown()


@pytest.fixture
def faults(simulator):
    def set_faults(rates: dict, seed: int | None = None) -> None:
        body = {"fault_rates": rates, **({"seed": seed} if seed is not None else {})}
        requests.post(f"{simulator.root}/_sim/config", json=body).raise_for_status()

    yield set_faults
    set_faults({})


def alerts_config(tmp_path: Path, redis_server, simulator, alerts: str) -> dict[str, str]:
    path = tmp_path / "alerts.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url) + f"var_dir: {tmp_path / 'var'}\n" + alerts)
    return {"FLOWCLOUD_CONFIG": str(path)}


def checks_run(worker) -> int:
    return len(re.findall(rf"Task {re.escape(CHECK_ALERTS_TASK)}\[[^\]]+\] succeeded", worker.log()))


def run_check(worker, times: int = 1) -> None:
    """Send the check as Beat does and wait until the worker has run it ``times`` more times."""
    from flowcloud.workers.core.celery_app import app

    done = checks_run(worker) + times
    for _ in range(times):
        app.send_task(CHECK_ALERTS_TASK)
    deadline = time.monotonic() + 60
    while checks_run(worker) < done:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)


def assert_nothing_secret(bodies: list[dict], tag: str) -> None:
    dumped = json.dumps(bodies)
    assert CANARY_KEY not in dumped and tag not in dumped and "secret-path" not in dumped


# -- alert state: real Redis, no worker -------------------------------------------------------------

def test_an_alert_fires_once_repeats_after_the_interval_and_resolves(redis_server):
    from flowcloud.workers.alerts.state import AlertBook, Condition
    from flowcloud.workers.core.redis_conn import connect

    book = AlertBook(connect(redis_server.url), repeat_seconds=600)
    firing, clear = Condition("backlog", True, "12 waiting"), Condition("backlog", False, "0 waiting")

    sent = [book.update([firing], now) for now in (1000, 1010, 1599)]
    assert [[(n.state, n.repeat) for n in notices] for notices in sent] == [[("firing", False)], [], []]
    assert [(n.state, n.repeat) for n in book.update([firing], 1600)] == [("firing", True)]
    assert [n.state for n in book.update([clear], 1700)] == ["resolved"]
    assert book.update([clear], 1800) == [] and book.firing() == []
    assert [a["state"] for a in book.alerts()] == ["resolved"]


def test_a_failing_webhook_is_logged_without_its_url_and_the_other_sinks_still_get_the_alert(caplog):
    from flowcloud.workers.alerts.sinks import Notice, deliver
    from flowcloud.workers.core.config_sections import AlertSink

    dead = AlertSink(kind="webhook", url=f"http://127.0.0.1:{free_port()}/hooks/token-xyz", timeout=1, allow_private=True)
    notice = Notice("error_rate", "firing", "12.0% of 100 jobs failed")
    with caplog.at_level("INFO"):
        failed = deliver([dead, AlertSink(kind="log")], [notice])

    assert failed == 1
    assert "webhook sink at http://127.0.0.1" in caplog.text and "token-xyz" not in caplog.text
    assert "[FIRING] flowcloud error_rate: 12.0% of 100 jobs failed" in caplog.text


def test_a_webhook_that_redirects_is_not_followed(receiver):
    from flowcloud.workers.alerts.sinks import Notice, deliver
    from flowcloud.workers.core.config_sections import AlertSink

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        sink = AlertSink(kind="webhook", url=f"http://127.0.0.1:{elsewhere.server_port}/hook",
                         allow_private=True)
        assert deliver([sink], [Notice("backlog", "firing", "12 waiting")]) == 1
    finally:
        elsewhere.shutdown()
    assert receiver.bodies == []


@pytest.mark.parametrize("alerts, field, problem", [
    ({"sinks": [{"kind": "webhook", "url": "file:///etc/passwd"}]}, "alerts.sinks.0", "not an http(s) URL"),
    ({"sinks": [{"kind": "webhook"}]}, "alerts.sinks.0", "not an http(s) URL"),
    ({"sinks": [{"kind": "log", "url": "http://x"}]}, "alerts.sinks.0", "takes no url"),
    ({"degraded": {"triggers": ["backlog"]}}, "alerts.degraded", "give a cheaper model"),
    ({"degraded": {"model": "no-such-model"}}, "alerts.degraded.model", "served by no provider"),
    ({"error_rate": {"threshold": 1.5}}, "alerts.error_rate.threshold", "less than or equal to 1"),
])
def test_bad_alert_settings_name_their_field(alerts, field, problem):
    with pytest.raises(ConfigError) as raised:
        validate({**DEFAULTS, "alerts": alerts})
    assert str(raised.value).startswith(field) and problem in str(raised.value)


def test_degraded_mode_sends_costly_jobs_to_the_cheaper_model_and_refuses_low_priority_ones():
    from flowcloud.workers.core.jobspec import apply_degraded, build_spec

    config = validate(DEFAULTS)
    mode = {"reason": "backlog", "since": 0, "model": "gpt-4o-mini", "refuse_priority_below": 3}

    assert apply_degraded(build_spec("hi", model="gpt-4o"), mode, config).model == "gpt-4o-mini"
    assert apply_degraded(build_spec("hi", model="gpt-4o"), None, config).model == "gpt-4o"
    # Already cheaper than the degraded model: left as it is.
    cheap = {**mode, "model": "gpt-4o"}
    assert apply_degraded(build_spec("hi", model="gpt-4o-mini"), cheap, config).model == "gpt-4o-mini"
    with pytest.raises(InvalidJob, match=r"degraded mode \(backlog\).*priority below 3 \(this one has 2\)"):
        apply_degraded(build_spec("hi", priority=2), mode, config)
    with pytest.raises(InvalidJob, match="priority"):
        build_spec("hi", priority=12)


def test_budget_alerts_at_each_alert_at_threshold_and_degrades_when_spent(redis_server):
    from flowcloud.workers.alerts.checks import run_checks
    from flowcloud.workers.budget import Ledger
    from flowcloud.workers.core.redis_conn import connect

    config = validate({**DEFAULTS, "redis_url": redis_server.url, "budgets": [
        {"name": "day", "period": "daily", "limit_usd": 0.001, "alert_at": [0.5, 1.0]}], "alerts": {
        "backlog": {"threshold": None}, "degraded": {"model": "gpt-4o-mini", "triggers": ["budget"]}}})
    client = connect(redis_server.url)
    ledger = Ledger(client, config)

    def spend(usd: float) -> None:
        ledger.reserve(uuid.uuid4().hex, None, "gpt-4o-mini", 10, 10).settle(usd)

    spend(0.0006)
    assert [(n.alert, n.state) for n in run_checks(client, config, time.time())] == [("budget:day@50%", "firing")]
    spend(0.0004)
    notices = run_checks(client, config, time.time())
    assert [(n.alert, n.state) for n in notices] == [("budget:day@100%", "firing"), ("degraded", "firing")]
    assert "budget day (daily, global) at 100% of $0.001" in notices[0].summary
    assert json.loads(client.get("flowcloud:degraded"))["reason"] == "budget:day@100%"
    assert run_checks(client, config, time.time()) == []  # still over: nothing new to say


# -- end to end: real workers, the simulator, a webhook receiver ----------------------------------

def test_error_rate_alert_is_posted_once_then_resolved(tmp_path, redis_server, simulator, start_worker,
                                                        receiver, faults, tag):
    from flowcloud import client

    env = alerts_config(tmp_path, redis_server, simulator, f"""
alerts:
  repeat_minutes: 60
  error_rate: {{threshold: 0.05, window_minutes: 5, min_jobs: 20}}
  sinks: [{{kind: log}}, {{kind: webhook, url: '{receiver.url}', allow_private: true, headers: {{X-Token: {CANARY_KEY}}}}}]
""")
    # One attempt per job, so a failed call is a failed job and the error rate is the fault rate.
    worker = start_worker(env={**env, "FLOWCLOUD_RETRY__MAX_ATTEMPTS": "1"})
    faults({"500": 0.1}, seed=5)
    first = client.wait_all([client.submit(f"{tag} question {i}", cache=False) for i in range(100)], timeout=120)
    failed = sum(record["status"] == "failed" for record in first)
    assert failed > 5, f"the simulator failed only {failed} of 100 jobs; the test needs more than 5%"

    run_check(worker)
    alert = receiver.wait_for(r"^\[FIRING\] flowcloud error_rate")
    assert f"{failed / 100:.1%} of 100 jobs failed" in alert
    run_check(worker, times=3)  # inside the repeat interval: nothing more is posted
    assert receiver.texts() == [alert]

    faults({})
    good = 20 * failed  # enough successes to bring the rate under 5%
    client.wait_all([client.submit(f"{tag} again {i}", cache=False) for i in range(good)], timeout=300)
    run_check(worker)
    resolved = receiver.wait_for(r"^\[RESOLVED\] flowcloud error_rate")
    assert f"of {100 + good} jobs failed" in resolved
    assert len(receiver.bodies) == 2
    assert receiver.bodies[0]["attachments"][0]["color"] == "danger"
    assert_nothing_secret(receiver.bodies, tag)
    assert CANARY_KEY not in worker.log() and "secret-path" not in worker.log()


def test_backlog_switches_degraded_mode_on_and_off(tmp_path, redis_server, simulator, start_worker, receiver, tag):
    from flowcloud import client
    from flowcloud.workers.core import degraded
    from flowcloud.workers.core.config import get_config

    env = alerts_config(tmp_path, redis_server, simulator, f"""
alerts:
  check_seconds: 1
  backlog: {{threshold: 5, queues: [flowcloud]}}
  degraded: {{model: gpt-4o-mini, refuse_priority_below: 3, triggers: [backlog]}}
  sinks: [{{kind: webhook, url: '{receiver.url}', allow_private: true}}]
""")
    start_worker(queues="flowcloud.checks", env=env)  # runs the checks, takes no jobs: the backlog stays
    queued = [client.submit(f"{tag} backlog {i}", cache=False) for i in range(10)]
    beat = start_beat(tmp_path, env)
    try:
        receiver.wait_for(r"^\[FIRING\] flowcloud backlog: 10 messages waiting")
        receiver.wait_for(r"^\[FIRING\] flowcloud degraded: degraded mode on \(backlog\)")
        wait_until(lambda: degraded.current(get_config()) is not None)

        cheaper = client.submit(f"{tag} costly", model="gpt-4o", cache=False)
        assert client.status(cheaper)["model"] == "gpt-4o-mini"
        with pytest.raises(InvalidJob, match="degraded mode .*priority below 3"):
            client.submit(f"{tag} unimportant", priority=1)
        refused = run_cli("submit", f"{tag} unimportant too", "--priority", "1", env=env)
        assert refused.returncode == 1 and "priority below 3" in refused.stderr, refused.stderr
        shown = run_cli("alerts", "--json", env=env)
        assert shown.returncode == 5, shown.stderr
        assert {a["alert"] for a in json.loads(shown.stdout)["alerts"]} == {"backlog", "degraded"}

        start_worker(env=env)  # drains the backlog
        client.wait_all(queued + [cheaper], timeout=60)
        receiver.wait_for(r"^\[RESOLVED\] flowcloud backlog")
        receiver.wait_for(r"^\[RESOLVED\] flowcloud degraded: degraded mode off")
        wait_until(lambda: degraded.current(get_config()) is None)
        assert client.result(client.submit(f"{tag} later", model="gpt-4o", priority=1, cache=False),
                             timeout=60)["model"] == "gpt-4o"
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(20)
    assert [t.split(":")[0] for t in receiver.texts()].count("[FIRING] flowcloud backlog") == 1
    assert run_cli("alerts", env=env).returncode == 0
    assert_nothing_secret(receiver.bodies, tag)


def start_beat(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(tmp_path / f"beat-{uuid.uuid4().hex[:6]}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "flowcloud.cli", "beat"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)
