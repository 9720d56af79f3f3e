"""Beat: the schedule built from `schedules:`, bad cron lines, and a scheduled run end to end.

The end-to-end test runs a real `flowcloud beat` and a real worker. Its schedule
fires once a year; Beat sends it at start only because Beat's schedule in Redis
says it last ran more than a year ago (an overdue entry is due at once), so the
test waits for a run, not for a minute to turn.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab

from flowcloud.workers.summaries.runs.outputs import read_metadata
from tests.conftest import ROOT, config_yaml, run_cli
from flowcloud.workers.core.config import Config, load_config
from flowcloud.workers.core.errors import ConfigError

YEARLY = "0 0 1 1 *"
# Task names as flowcloud.workers.core.celery_app spells them. That module (and flowcloud.beat.schedule, which imports it)
# is imported inside the tests: importing it builds the Celery app from the configuration, which
# must wait until the session's fixtures point the configuration at the private Redis.
SUMMARIZE_RUN_TASK = "flowcloud.summarize_run"
POLL_BATCHES_TASK = "flowcloud.poll_batches"
CHECK_ALERTS_TASK = "flowcloud.check_alerts"
CHECK_MODELS_TASK = "flowcloud.check_models"


def write_config(path: Path, redis_url: str, sim_url: str, schedules: str, var_dir: Path,
                 poll_seconds: float = 30) -> Path:
    path.write_text(config_yaml(redis_url, sim_url) + f"var_dir: {var_dir}\nbatch_api_poll_seconds: {poll_seconds}\n"
                    + "schedules:\n" + schedules)
    return path


def schedule_line(name: str, cron: str, source: str, output: Path, mode: str = "tasks") -> str:
    return f"  - {{name: {name}, cron: '{cron}', source: '{source}', output: '{output}', mode: {mode}}}\n"


def load(path: Path) -> Config:
    return load_config({"FLOWCLOUD_CONFIG": str(path)})


def test_schedule_entries_come_from_the_configuration(tmp_path, redis_server, simulator):
    from flowcloud.beat.schedule import POLL_ENTRY, beat_schedule

    lines = (schedule_line("nightly", "30 2 * * 1-5", "in/*.txt", tmp_path / "out")
             + schedule_line("cheap", "0 4 * * *", "in/*.md", tmp_path / "out2", mode="batch_api"))
    config = load(write_config(tmp_path / "f.yaml", redis_server.url, simulator.url, lines, tmp_path / "var"))

    entries = beat_schedule(config)

    nightly = entries["summarize:nightly"]
    assert nightly["task"] == SUMMARIZE_RUN_TASK and nightly["args"] == ["nightly"]
    assert nightly["schedule"] == crontab(minute="30", hour="2", day_of_week="1-5")
    assert entries[POLL_ENTRY]["task"] == POLL_BATCHES_TASK
    assert entries[POLL_ENTRY]["schedule"] == timedelta(seconds=30)
    only_tasks = load(write_config(tmp_path / "g.yaml", redis_server.url, simulator.url, lines.split("\n")[0] + "\n",
                                   tmp_path / "var"))
    assert set(beat_schedule(only_tasks)) == {"summarize:nightly"}  # no poll without a batch_api schedule


def test_the_model_check_is_sent_hourly_with_the_alert_checks_unless_turned_off(tmp_path, redis_server, simulator):
    from flowcloud.beat.schedule import CHECK_ENTRY, MODELS_ENTRY, beat_schedule

    def entries(alerts: str) -> dict:
        path = tmp_path / "a.yaml"
        path.write_text(config_yaml(redis_server.url, simulator.url) + f"var_dir: {tmp_path / 'var'}\n" + alerts)
        return beat_schedule(load(path))

    hourly = entries("alerts: {}\n")
    assert hourly[CHECK_ENTRY]["task"] == CHECK_ALERTS_TASK
    assert hourly[MODELS_ENTRY]["task"] == CHECK_MODELS_TASK
    assert hourly[MODELS_ENTRY]["schedule"] == timedelta(hours=1)
    assert entries("alerts: {models_check_seconds: 600}\n")[MODELS_ENTRY]["schedule"] == timedelta(minutes=10)
    assert set(entries("alerts: {models_check_seconds: null}\n")) == {CHECK_ENTRY}
    assert entries("") == {}


@pytest.mark.parametrize("cron, problem", [
    ("61 * * * *", "minute '61'"),
    ("0 25 * * *", "hour '25'"),
    ("0 2 31 2 *", "never occurs"),
    ("0 2 * * funday", "day of week 'funday'"),
])
def test_a_bad_cron_line_names_its_field(tmp_path, redis_server, simulator, cron, problem):
    from flowcloud.beat.schedule import beat_schedule

    lines = (schedule_line("fine", "0 2 * * *", "in/*.txt", tmp_path / "out")
             + schedule_line("broken", cron, "in/*.txt", tmp_path / "out"))
    path = write_config(tmp_path / "f.yaml", redis_server.url, simulator.url, lines, tmp_path / "var")

    with pytest.raises(ConfigError) as raised:
        beat_schedule(load(path))
    assert raised.value.field == "schedules.1.cron" and problem in str(raised.value)

    done = run_cli("beat", env={"FLOWCLOUD_CONFIG": str(path)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "configuration error: schedules.1.cron" in done.stderr and problem in done.stderr


@pytest.mark.parametrize("mode", ["tasks", "batch_api"])
def test_beat_scheduled_run_writes_outputs_and_report(tmp_path, redis_server, simulator, start_worker, tag, mode):
    from flowcloud.beat.schedule import POLL_ENTRY

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    texts = {f"note{i}.txt": f"note-{tag}-{i}. " + "The quarterly figures were steady. " * (40 + 400 * i)
             for i in range(3)}  # the last one takes several chunks, as its run plans them for speed
    for name, text in texts.items():
        (inbox / name).write_text(text)
    name = f"nightly-{tag}"
    path = write_config(tmp_path / "flowcloud.yaml", redis_server.url, simulator.url,
                        schedule_line(name, YEARLY, f"{inbox}/*.txt", out, mode), tmp_path / "var", poll_seconds=1)
    env = {"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"}
    worker = start_worker(env=env)
    mark_overdue(load(path), f"summarize:{name}")

    beat_log = tmp_path / "beat.log"
    with open(beat_log, "wb") as log:
        beat = subprocess.Popen([sys.executable, "-m", "flowcloud.cli", "beat"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    try:
        report = wait_for_report(out / "run-report.json", beat, beat_log)
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(20)

    assert f"Sending due task summarize:{name}" in beat_log.read_text()
    assert (report["name"], report["flow"], report["mode"]) == (name, name, mode)
    assert (report["documents"], report["done"], report["failed"]) == (3, 3, 0)
    assert report["tokens_in"] > 0 and report["cost_usd"] > 0
    for doc_name, text in texts.items():
        metadata = read_metadata(out / f"{doc_name}.summary.md")
        assert metadata["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert metadata["run_id"] == report["run_id"]
    if mode == "tasks":
        assert max(r["chunks"] for r in report["results"]) > 1
        # The run advanced in several short hops instead of holding a worker slot to the end.
        hops = re.findall(rf"Task {re.escape(SUMMARIZE_RUN_TASK)}\[[^\]]+\] succeeded", worker.log())
        assert len(hops) >= 2, worker.log()[-3000:]
    else:
        assert report["saving_usd"] > 0 and f"Sending due task {POLL_ENTRY}" in beat_log.read_text()


def test_a_firing_while_the_last_run_goes_on_starts_nothing(tmp_path, redis_server, simulator, start_worker, tag):
    from flowcloud.workers.core.celery_app import app

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"note{i}.txt").write_text(f"twice-{tag}-{i}. The figures were steady.")
    name = f"twice-{tag}"
    path = write_config(tmp_path / "flowcloud.yaml", redis_server.url, simulator.url,
                        schedule_line(name, YEARLY, f"{inbox}/*.txt", out), tmp_path / "var")
    worker = start_worker(env={"FLOWCLOUD_CONFIG": str(path)})

    for _ in range(2):  # what Beat sends when the cron fires; twice, as if the run outlasted its interval
        app.send_task(SUMMARIZE_RUN_TASK, args=[name])
    deadline = time.monotonic() + 60
    while not (out / "run-report.json").exists() or report_status(out) != "completed":
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)

    report = json.loads((out / "run-report.json").read_text())
    assert report["done"] == 3
    assert "is still going; this firing starts nothing" in worker.log()
    assert {read_metadata(out / f"note{i}.txt.summary.md")["run_id"] for i in range(3)} == {report["run_id"]}
    assert sum(len(simulator.requests_log(f"twice-{tag}-{i}")) for i in range(3)) == 3


def report_status(out: Path) -> str:
    return json.loads((out / "run-report.json").read_text())["status"]


def mark_overdue(config: Config, entry_name: str) -> None:
    """Store ``entry_name`` in Beat's schedule in Redis as if it last ran over a year ago.

    Beat keeps an entry's last run time from Redis when it merges the configured
    schedule in, and sends an entry that is overdue at once.
    """
    from redbeat import RedBeatSchedulerEntry

    from flowcloud.beat.schedule import beat_schedule
    from flowcloud.workers.core.celery_app import beat_settings, create_app

    app = create_app(config, beat_schedule=beat_schedule(config), **beat_settings(config))
    definition = beat_schedule(config)[entry_name]
    entry = RedBeatSchedulerEntry(entry_name, definition["task"], definition["schedule"], definition.get("args"),
                                  options=definition.get("options"), app=app)
    last_run = entry.default_now() - timedelta(days=400)
    entry.save().reschedule(last_run_at=last_run)


def wait_for_report(path: Path, beat: subprocess.Popen, beat_log: Path, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert beat.poll() is None, beat_log.read_text()
        if path.exists():
            report = json.loads(path.read_text())
            if report["status"] == "completed":
                return report
        assert time.monotonic() < deadline, f"no finished report; beat log:\n{beat_log.read_text()[-3000:]}"
        time.sleep(0.2)
