"""The tally the record store keeps as jobs finish, and `flowcloud costs`, which reads it."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date

import click
import pytest

from flowcloud import client
from flowcloud.workers.core import tally
from flowcloud.workers.core.money import NANO
from flowcloud.workers.core.records import JobStatus, JobStore
from tests.conftest import run_cli
from flowcloud.cli.costs import first_day
from flowcloud.workers.core.errors import ProviderError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(redis_server):
    from flowcloud.workers.core.redis_conn import connect

    return JobStore(connect(redis_server.url), ttl=600)


def today_costs(store) -> dict[str, int]:
    return {field: int(value) for field, value in store.client.hgetall(tally.costs_key(tally.utc_day())).items()}


def recent_outcomes(store, minutes: int = 5) -> dict[tuple[str, str], int]:
    now = tally.minute_of()
    return tally.read_outcomes(store.client, range(now - minutes, now + 1))


def test_finishing_write_books_cost_and_outcome_once(store):
    store.write("j1", {"status": JobStatus.QUEUED, "flow": "intake", "model": "gpt-4o-mini"})
    store.write("j1", {"status": JobStatus.RUNNING, "provider": "sim"})
    # The finishing write names neither flow nor model: the script reads them from the record.
    assert store.succeed("j1", cost_usd=0.000123, text="ok")
    assert not store.succeed("j1", cost_usd=0.000123)  # a redelivered duplicate books nothing
    assert today_costs(store) == {"intake|sim|gpt-4o-mini": 123_000}
    assert recent_outcomes(store) == {("sim", "succeeded"): 1}
    assert store.client.ttl(tally.costs_key(tally.utc_day())) > 399 * 24 * 3600
    assert 0 < store.client.ttl(tally.outcomes_key(tally.minute_of())) <= tally.OUTCOMES_TTL


def test_unbilled_and_free_jobs_count_as_outcomes_only(store):
    store.write("parent", {"status": JobStatus.RUNNING, "flow": "digest", "provider": "sim"})
    store.write("parent", {"status": JobStatus.SUCCEEDED, "cost_usd": 0.5}, bill=False)  # its children billed
    store.write("free", {"status": JobStatus.QUEUED})
    store.fail("free", ProviderError("boom", provider="sim", status=500))
    store.write("gone", {"status": JobStatus.QUEUED, "flow": "digest"})
    store.write("gone", {"status": JobStatus.CANCELLED})
    assert today_costs(store) == {}
    assert store.spent_usd() == 0
    assert recent_outcomes(store) == {("sim", "succeeded"): 1, ("-", "failed"): 1, ("-", "cancelled"): 1}


def test_cost_field_round_trips_a_flow_name_holding_the_separator():
    entry = tally.parse_cost_field("2026-11-01", tally.cost_field("a|b", "sim", None), 7)
    assert (entry.flow, entry.provider, entry.model, entry.nano_usd) == ("a|b", "sim", "-", 7)


@pytest.mark.parametrize(("since", "first"), [("1d", date(2026, 11, 25)), ("7d", date(2026, 11, 19)),
                                               ("30d", date(2026, 10, 27)), ("2026-11-01", date(2026, 11, 1))])
def test_period(since, first):
    assert first_day(since, date(2026, 11, 25)) == first


@pytest.mark.parametrize(("since", "reason"), [("7", "7d or 30d"), ("0d", "between 1d"), ("2026-12-01", "future"),
                                                ("2024-01-01", "keeps 400 days"), ("yesterday", "2026-11-01")])
def test_bad_period_is_refused_with_the_reason(since, reason):
    with pytest.raises(click.BadParameter, match=reason):
        first_day(since, date(2026, 11, 25))


def test_no_spend_says_so_and_writes_nothing(tmp_path):
    result = run_cli("costs", "--since", "30d", env={"FLOWCLOUD_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "No spend recorded" in result.stdout
    assert not (tmp_path / "costs").exists()
    bad = run_cli("costs", "--since", "soon")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_costs_by_flow_match_the_records_of_three_flows(worker, store, tag, tmp_path):
    flows = {"intake": 3, "triage": 2, "reports": 4}
    jobs = [(flow, client.submit(f"{tag} {flow} question {n} " + "words " * (5 + 7 * n), flow=flow,
                                 model="gpt-4o" if n % 2 else "gpt-4o-mini", cache=False))
            for flow, count in flows.items() for n in range(count)]
    failed = client.submit(f"{tag} always broken [[sim:400]]", flow="triage", cache=False)
    records = [(flow, client.result(job, timeout=60)) for flow, job in jobs]
    assert all(record["status"] == "succeeded" for _, record in records)
    assert client.result(failed, timeout=60)["status"] == "failed"

    expected: dict[str, float] = defaultdict(float)
    for flow, record in records:
        assert record["cost_usd"] > 0
        expected[flow] += record["cost_usd"]
    csv_path, png_path = tmp_path / "split.csv", tmp_path / "split.png"
    shown = run_cli("costs", "--by", "flow", "--csv", str(csv_path), "--png", str(png_path), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert {row["flow"]: row["cost_usd"] for row in report["rows"]} == pytest.approx(expected, abs=1e-9)
    assert [row["flow"] for row in report["rows"]] == sorted(expected, key=expected.get, reverse=True)

    lines = csv_path.read_text().splitlines()
    assert lines[0] == "flow,cost_usd,share_percent" and len(lines) == 2 + len(flows)
    assert lines[-1].startswith(f"total,{sum(expected.values()):.6f}")
    png = png_path.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000

    table = run_cli("costs", "--by", "model", "--csv", str(tmp_path / "m.csv"), "--png", str(tmp_path / "m.png"),
                    env={"COLUMNS": "120"})
    assert table.returncode == 0, table.stderr
    assert "gpt-4o-mini" in table.stdout and f"{sum(expected.values()):.6f}" in table.stdout

    assert recent_outcomes(store) == {("sim", "succeeded"): len(jobs), ("sim", "failed"): 1}


def test_default_files_go_under_var_dir(store, tmp_path):
    store.write("j", {"status": JobStatus.QUEUED, "flow": "intake", "provider": "sim", "model": "m"})
    store.succeed("j", cost_usd=0.25)
    result = run_cli("costs", "--by", "day", env={"FLOWCLOUD_VAR_DIR": str(tmp_path), "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "costs" / "costs-by-day.csv").read_text().splitlines()[1] == f"{tally.utc_day()},0.250000,100.0"
    assert (tmp_path / "costs" / "costs.png").read_bytes().startswith(PNG_SIGNATURE)
    assert int(store.client.get("flowcloud:spend:nanousd")) == 0.25 * NANO
