"""Scheduled runs in ``mode: auto``: the Batch API when the provider offers one and the schedule leaves
its window, jobs otherwise.

The rule is checked as a table over cron lines and deadlines with a fixed
clock. The runs themselves go through real workers, the private Redis and the
simulator's Batch API: the test sends the message Beat sends when a cron
fires, and the poll Beat sends every ``batch_api_poll_seconds``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from flowcloud.workers.core.config import Config, load_config
from flowcloud.workers.core.config_sections import Schedule
from flowcloud.workers.core.errors import ConfigError
from flowcloud.workers.summaries.runs.mode import decide, duration, time_allowed
from flowcloud.workers.summaries.runs.outputs import read_metadata
from tests.conftest import KEY_ENV, config_yaml

SUMMARIZE_RUN_TASK = "flowcloud.summarize_run"
POLL_BATCHES_TASK = "flowcloud.poll_batches"
WINDOW = timedelta(hours=24)  # OpenAI's, which the simulator's adapter reports
YEARLY = "0 0 1 1 *"
NOW = datetime(2026, 12, 2, 2, 0, 5, tzinfo=timezone.utc)  # a Wednesday, just after a 02:00 firing


# -- the rule


@pytest.mark.parametrize("cron, deadline, mode, because", [
    ("0 2 * * *", None, "batch_api", "shortest interval between the schedule's firings (24 h)"),
    ("0 3 * * 0", None, "batch_api", "(7 days)"),
    ("0 2 * * 1-5", None, "batch_api", "(24 h)"),  # weekdays: the shortest interval decides, not Friday's
    (YEARLY, None, "batch_api", "(365 days)"),
    ("0 2,14 * * *", None, "tasks", "an interval of 12 h between the schedule's firings"),
    ("*/30 * * * *", None, "tasks", "an interval of 30 min"),
    ("0 2 * * *", 6, "tasks", "deadline_hours (6 h)"),
    ("0 * * * *", 30, "batch_api", "deadline_hours (30 h)"),  # a deadline the user set wins over the interval
])
def test_the_window_fits_rule(cron, deadline, mode, because):
    schedule = Schedule(name="s", cron=cron, source="in/*.txt", output="out", deadline_hours=deadline)

    allowed, allowed_by = time_allowed(schedule, "schedules.0", WINDOW, NOW)
    choice = decide("sim", WINDOW, allowed, allowed_by)

    assert choice.mode == mode and because in choice.reason, choice.reason
    assert choice.reason.startswith("auto: ") and "'sim'" in choice.reason and "24 h window" in choice.reason


def test_durations_read_as_a_person_would_say_them():
    assert [duration(timedelta(minutes=m)) for m in (30, 90, 24 * 60, 7 * 24 * 60)] == [
        "30 min", "1.5 h", "24 h", "7 days"]


# -- configuration


def schedules_config(tmp_path: Path, redis_url: str, sim_url: str, schedules: list[dict],
                     poll_seconds: float = 0.5) -> Path:
    """The test run's configuration, with a provider that serves chat only and ``schedules``."""
    data = yaml.safe_load(config_yaml(redis_url, sim_url))
    data["providers"].append({"name": "chat-only", "kind": "openai", "base_url": sim_url, "allow_private": True, "api_key_env": KEY_ENV,
                              "endpoints": ["chat"], "timeout": {"connect": 2, "read": 1.5},
                              "models": [{"name": "chat-only-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6}]})
    data.update(var_dir=str(tmp_path / "var"), batch_api_poll_seconds=poll_seconds, schedules=schedules)
    path = tmp_path / "flowcloud.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(path: Path) -> Config:
    return load_config({"FLOWCLOUD_CONFIG": str(path)})


def test_auto_is_the_default_and_bad_settings_name_their_field(tmp_path, redis_server, simulator):
    from flowcloud.beat.schedule import POLL_ENTRY, beat_schedule

    plain = {"name": "nightly", "cron": "0 2 * * *", "source": "in/*.txt", "output": "out"}
    config = load(schedules_config(tmp_path, redis_server.url, simulator.url, [plain]))
    assert config.schedules[0].mode == "auto" and config.schedules[0].deadline_hours is None
    assert POLL_ENTRY in beat_schedule(config)  # an auto schedule may go through the Batch API

    for change, field, reason in [
        ({"mode": "cheap"}, "schedules.0.mode", "'auto', 'tasks' or 'batch_api'"),
        ({"deadline_hours": 0}, "schedules.0.deadline_hours", "greater than 0"),
        ({"mode": "tasks", "deadline_hours": 6}, "schedules.0.deadline_hours", "only mode: auto uses it"),
    ]:
        path = schedules_config(tmp_path, redis_server.url, simulator.url, [{**plain, **change}])
        with pytest.raises(ConfigError) as raised:
            load(path)
        assert raised.value.field == field and reason in str(raised.value), str(raised.value)


# -- scheduled runs on a real worker


def run_schedule(name: str, out: Path, worker, timeout: float = 90.0) -> dict:
    """Send what Beat sends when the schedule fires, and its polls, until the run's report is complete."""
    from flowcloud.workers.core.celery_app import app

    app.send_task(SUMMARIZE_RUN_TASK, args=[name])
    deadline = time.monotonic() + timeout
    while True:
        report_path = out / "run-report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            if report["status"] == "completed":
                return report
        assert time.monotonic() < deadline, worker.log()[-3000:]
        app.send_task(POLL_BATCHES_TASK)
        time.sleep(0.5)


def batches_created(simulator) -> int:
    return simulator.stats()["by_endpoint"].get("/v1/batches", {}).get("200", 0)


def write_inbox(inbox: Path, tag: str) -> dict[str, str]:
    inbox.mkdir()
    texts = {"note.txt": f"note-{tag}. The quarterly figures were steady.",
             # about 40 KB: one request under the cheapest plan, as a direct call would be
             "report.txt": f"report-{tag}. " + "The queue drained before the provider slowed down. " * 800}
    for name, text in texts.items():
        (inbox / name).write_text(text)
    return texts


def test_an_auto_schedule_goes_through_the_batch_api_when_it_fits(tmp_path, redis_server, simulator,
                                                                   start_worker, tag):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_inbox(inbox, tag)
    name = f"yearly-{tag}"
    path = schedules_config(tmp_path, redis_server.url, simulator.url,
                            [{"name": name, "cron": YEARLY, "source": f"{inbox}/*.txt", "output": str(out)}])
    worker = start_worker(env={"FLOWCLOUD_CONFIG": str(path)})
    batches_before = batches_created(simulator)

    report = run_schedule(name, out, worker)

    assert (report["mode"], report["done"], report["failed"]) == ("batch_api", 2, 0)
    assert "offers a Batch API and its 24 h window fits" in report["mode_reason"]
    assert "(365 days)" in report["mode_reason"]
    assert batches_created(simulator) - batches_before == 1  # both documents, one request each, in one round
    assert report["saving_usd"] > 0
    assert {r["name"]: r["chunks"] for r in report["results"]} == {"note.txt": 1, "report.txt": 1}
    assert read_metadata(out / "report.txt.summary.md")["mode"] == "batch_api"
    assert "goes through the Batch API: auto: provider 'sim'" in worker.log()
    assert not simulator.requests_log(f"report-{tag}")  # no normal call carried it


@pytest.mark.parametrize("schedule, because", [
    ({"cron": YEARLY, "model": "chat-only-mini"}, "auto: provider 'chat-only' offers no Batch API"),
    ({"cron": "0 * * * *"}, "is longer than an interval of 1 h between the schedule's firings"),
    ({"cron": YEARLY, "deadline_hours": 2}, "is longer than the schedule's deadline_hours (2 h)"),
], ids=["no-batch-api", "hourly", "deadline"])
def test_an_auto_schedule_runs_as_jobs_otherwise(tmp_path, redis_server, simulator, start_worker, tag,
                                                 schedule, because):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_inbox(inbox, tag)
    name = f"auto-{tag}"
    path = schedules_config(tmp_path, redis_server.url, simulator.url,
                            [{"name": name, "source": f"{inbox}/*.txt", "output": str(out), **schedule}])
    worker = start_worker(env={"FLOWCLOUD_CONFIG": str(path)})
    batches_before = batches_created(simulator)

    report = run_schedule(name, out, worker)

    assert (report["mode"], report["done"], report["failed"]) == ("tasks", 2, 0)
    assert because in report["mode_reason"], report["mode_reason"]
    assert batches_created(simulator) == batches_before
    assert len(simulator.requests_log(f"report-{tag}")) == 1  # the 40 KB report in one normal call
    assert f"goes as jobs: {report['mode_reason']}" in worker.log()
