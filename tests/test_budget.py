"""Budgets: atomic reserve and settle in Redis, refusal and degrading, and 200 concurrent jobs.

The ledger tests run its Lua scripts on the session's private Redis; the rest send
real jobs through real workers to the simulator, with budgets in the workers' configuration.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml

from flowcloud import client
from flowcloud.workers.core.money import NANO
from tests.conftest import config_yaml, run_cli
from flowcloud.workers.budget import JOB_PREFIX, Ledger, window
from flowcloud.workers.core.config import validate
from flowcloud.workers.core.errors import BudgetExceeded, ConfigError
from flowcloud.workers.core.redis_conn import connect

GPT4O_IN, GPT4O_OUT = 2.50e-6, 10.00e-6  # USD per token, as the test configuration prices gpt-4o
# 2,000 characters: ~500 tokens of prompt, so a gpt-4o job costs ~$0.0015 and reserves ~$0.0023.
FILLER = "the queue never sleeps and the budget never overshoots. " * 36


def budget_config(redis_server, simulator, budgets: list[dict]):
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    return validate({**data, "budgets": budgets})


def write_config(tmp_path, redis_server, simulator, budgets: list[dict]) -> dict[str, str]:
    """A worker configuration with ``budgets``; returns the env that points a process at it."""
    path = tmp_path / "flowcloud-budgets.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url) + yaml.safe_dump({"budgets": budgets}))
    return {"FLOWCLOUD_CONFIG": str(path)}


@pytest.fixture
def redis_client(redis_server):
    return connect(redis_server.url)


# -- the ledger, on Redis


def test_a_job_reserves_on_every_budget_covering_it_or_on_none(redis_server, simulator, redis_client):
    config = budget_config(redis_server, simulator, [
        {"name": "all", "period": "daily", "limit_usd": 1.0},
        {"name": "flow-a", "period": "monthly", "scope": "flow", "match": "a", "limit_usd": 0.002},
        {"name": "sim", "period": "daily", "scope": "provider", "match": "sim", "limit_usd": 1.0},
    ])
    ledger = Ledger(redis_client, config)
    ledger.reserve("j1", "a", "gpt-4o", 100, 100)  # $0.00125
    with pytest.raises(BudgetExceeded) as refused:
        ledger.reserve("j2", "a", "gpt-4o", 100, 100)
    assert refused.value.budget == "flow-a"
    assert "'flow-a'" in str(refused.value) and "limit $0.002" in str(refused.value)
    assert "needs up to $0.00125" in str(refused.value)
    # All or nothing: the refused job holds nothing on the budgets that had room.
    usage = {u.name: u for u in ledger.usage()}
    assert [usage[n].reserved_usd for n in ("all", "flow-a", "sim")] == [0.00125] * 3
    ledger.reserve("j3", "b", "gpt-4o", 100, 100)  # another flow: not covered by flow-a
    usage = {u.name: u for u in ledger.usage()}
    assert (usage["all"].reserved_usd, usage["flow-a"].reserved_usd) == (0.0025, 0.00125)


def test_a_redelivered_job_reserves_once_and_settles_once(redis_server, simulator, redis_client):
    config = budget_config(redis_server, simulator, [{"name": "all", "period": "daily", "limit_usd": 1.0}])
    ledger = Ledger(redis_client, config)
    first = ledger.reserve("job", None, "gpt-4o", 400, 100)
    again = ledger.reserve("job", None, "gpt-4o", 400, 100)  # redelivered, or its retry
    assert again.model == first.model == "gpt-4o"
    [usage] = ledger.usage()
    assert usage.reserved_usd == pytest.approx(400 * GPT4O_IN + 100 * GPT4O_OUT)
    first.settle(0.0012)
    again.settle(0.0012)
    again.release()
    [usage] = ledger.usage()
    assert (usage.used_usd, usage.reserved_usd, usage.ratio) == (0.0012, 0.0, 0.0012)
    assert redis_client.hget(JOB_PREFIX + "job", "state") == "settled"


def test_a_failed_call_gives_its_reservation_back(redis_server, simulator, redis_client):
    config = budget_config(redis_server, simulator, [{"name": "all", "period": "daily", "limit_usd": 0.001}])
    ledger = Ledger(redis_client, config)
    ledger.reserve("fails", None, "gpt-4o", 100, 50).release()
    [usage] = ledger.usage()
    assert (usage.used_usd, usage.reserved_usd) == (0.0, 0.0)
    ledger.reserve("next", None, "gpt-4o", 100, 50)  # the whole limit is free again


def test_degrade_runs_on_the_cheaper_model_only_when_it_fits(redis_server, simulator, redis_client):
    config = budget_config(redis_server, simulator, [
        {"name": "all", "period": "daily", "limit_usd": 0.0003, "on_exceed": "degrade",
         "degrade_model": "gpt-4o-mini"}])
    ledger = Ledger(redis_client, config)
    assert ledger.reserve("small", None, "gpt-4o", 40, 10).model == "gpt-4o"  # $0.0002 fits as asked
    assert ledger.reserve("big", None, "gpt-4o", 100, 50).model == "gpt-4o-mini"
    with pytest.raises(BudgetExceeded):
        ledger.reserve("huge", None, "gpt-4o", 1_000_000, 50)  # too big even for the cheaper one
    with pytest.raises(BudgetExceeded):
        ledger.reserve("embedding-like", None, "gpt-4o", 100, 50, may_degrade=False)


def test_a_job_no_budget_covers_costs_no_redis_command(redis_server, simulator, redis_client):
    config = budget_config(redis_server, simulator, [
        {"name": "flow-a", "period": "daily", "scope": "flow", "match": "a", "limit_usd": 1.0}])
    ledger = Ledger(redis_client, config)

    def commands() -> int:
        stats = redis_client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    before = commands()
    hold = ledger.reserve("other-flow", "b", "gpt-4o", 100, 50)
    hold.settle(0.001)
    hold.release()
    assert not hold.active
    assert commands() == before


def test_windows_are_utc_days_and_months():
    late = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert window("daily", late)[0] == "2026-12-31"
    assert window("monthly", late) == ("2026-12", datetime(2027, 1, 3, tzinfo=timezone.utc))


@pytest.mark.parametrize("budget, field", [
    ({"name": "x", "period": "daily", "scope": "flow", "limit_usd": 1}, "match"),
    ({"name": "x", "period": "daily", "limit_usd": 1, "on_exceed": "degrade"}, "degrade_model"),
    ({"name": "x", "period": "daily", "limit_usd": 1, "on_exceed": "degrade",
      "degrade_model": "text-embedding-3-small"}, "budgets.0.degrade_model"),
    ({"name": "x", "period": "daily", "limit_usd": 1, "scope": "provider", "match": "nope"}, "budgets.0.match"),
    ({"name": "x", "period": "weekly", "limit_usd": 1}, "budgets.0.period"),
    ({"name": "x", "period": "daily", "limit_usd": 0}, "budgets.0.limit_usd"),
])
def test_bad_budgets_are_refused_naming_the_field(redis_server, simulator, budget, field):
    with pytest.raises(ConfigError) as error:
        budget_config(redis_server, simulator, [budget])
    assert field in str(error.value)


# -- real workers


def big_prompts(tag: str, count: int) -> list[str]:
    return [f"{tag} job {i}: {FILLER}" for i in range(count)]


def test_200_concurrent_jobs_never_overshoot_a_daily_budget(
        tmp_path, redis_server, simulator, redis_client, start_worker, tag):
    budgets = [{"name": "day-all", "period": "daily", "limit_usd": 0.05}]
    start_worker(concurrency=50, env=write_config(tmp_path, redis_server, simulator, budgets))
    ids = client.submit_many(big_prompts(tag, 200), model="gpt-4o", max_tokens=100, cache=False)
    records = client.wait_all(ids, timeout=120)
    assert all(r["status"] in ("succeeded", "failed") for r in records), [r["status"] for r in records]
    done = [r for r in records if r["status"] == "succeeded"]
    refused = [r for r in records if r["status"] == "failed"]
    one_reservation = (len(FILLER) / 4 + 20) * GPT4O_IN + 100 * GPT4O_OUT
    spent = sum(r["cost_usd"] for r in done)
    assert 0 < len(done) < 100 and spent <= 0.05 + one_reservation
    assert all(r["error"]["kind"] == "budget_exceeded" and r["error"]["budget"] == "day-all" for r in refused)
    assert "budget 'day-all' would be exceeded: limit $0.05" in refused[0]["error"]["message"]
    [usage] = Ledger(redis_client, budget_config(redis_server, simulator, budgets)).usage()
    assert usage.reserved_usd == 0.0
    assert round(usage.used_usd * NANO) == sum(round(r["cost_usd"] * NANO) for r in done)
    assert len(simulator.requests_log(tag)) == len(done)  # a refused job never called the provider


def test_a_flow_budget_refuses_only_its_flow(tmp_path, redis_server, simulator, start_worker, tag):
    budgets = [{"name": "flow-a", "period": "monthly", "scope": "flow", "match": "a", "limit_usd": 0.005}]
    start_worker(env=write_config(tmp_path, redis_server, simulator, budgets))
    a = client.submit_many(big_prompts(tag + "a", 10), model="gpt-4o", flow="a", max_tokens=100, cache=False)
    b = client.submit_many(big_prompts(tag + "b", 10), model="gpt-4o", flow="b", max_tokens=100, cache=False)
    flow_a, flow_b = client.wait_all(a, timeout=60), client.wait_all(b, timeout=60)
    assert [r["status"] for r in flow_b] == ["succeeded"] * 10
    refused = [r for r in flow_a if r["status"] == "failed"]
    assert 0 < len(refused) < 10 and {r["error"]["budget"] for r in refused} == {"flow-a"}


def test_degrade_switches_to_the_cheaper_model(tmp_path, redis_server, simulator, start_worker, tag):
    budgets = [{"name": "tight", "period": "daily", "limit_usd": 0.001, "on_exceed": "degrade",
                "degrade_model": "gpt-4o-mini"}]
    start_worker(env=write_config(tmp_path, redis_server, simulator, budgets))
    record = client.result(client.submit(big_prompts(tag, 1)[0], model="gpt-4o", max_tokens=100), timeout=30)
    assert (record["status"], record["model"]) == ("succeeded", "gpt-4o-mini")
    usage = record["usage"]
    mini_price = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
    assert record["cost_usd"] == pytest.approx(mini_price)
    assert len(simulator.requests_log(tag)) == 1


def test_failed_and_retried_calls_settle_only_what_was_spent(
        tmp_path, redis_server, simulator, redis_client, start_worker, tag):
    budgets = [{"name": "all", "period": "daily", "limit_usd": 1.0}]
    start_worker(env=write_config(tmp_path, redis_server, simulator, budgets))
    failed = client.submit(f"{tag} [[sim:400]] refused", model="gpt-4o", max_tokens=20)
    retried = client.submit(f"{tag} [[sim:500;times=1]] once", model="gpt-4o", max_tokens=20)
    failed, retried = client.wait_all([failed, retried], timeout=30)
    assert (failed["status"], retried["status"], retried["attempts"]) == ("failed", "succeeded", 2)
    [usage] = Ledger(redis_client, budget_config(redis_server, simulator, budgets)).usage()
    assert usage.reserved_usd == 0.0 and usage.used_usd == pytest.approx(retried["cost_usd"])


def test_batched_jobs_reserve_each_and_settle_their_share(
        tmp_path, redis_server, simulator, redis_client, start_worker, tag):
    budgets = [{"name": "all", "period": "daily", "limit_usd": 1.0}]
    start_worker(env=write_config(tmp_path, redis_server, simulator, budgets))
    ids = client.submit_many([f"{tag} short {i}" for i in range(12)], model="gpt-3.5-turbo-instruct",
                             max_tokens=30)
    records = client.wait_all(ids, timeout=30)
    assert {r["status"] for r in records} == {"succeeded"}
    assert max(r["batch_size"] for r in records) > 1
    [usage] = Ledger(redis_client, budget_config(redis_server, simulator, budgets)).usage()
    assert usage.reserved_usd == 0.0
    assert round(usage.used_usd * NANO) == sum(round(r["cost_usd"] * NANO) for r in records)


def test_budgets_command_prints_each_budget(tmp_path, redis_server, simulator, redis_client):
    budgets = [{"name": "day-all", "period": "daily", "limit_usd": 0.05},
               {"name": "flow-a", "period": "monthly", "scope": "flow", "match": "a", "limit_usd": 2}]
    env = write_config(tmp_path, redis_server, simulator, budgets)
    Ledger(redis_client, budget_config(redis_server, simulator, budgets)).reserve(
        "j", "a", "gpt-4o", 1000, 1000).settle(0.04)
    table = run_cli("budgets", env=env)
    assert table.returncode == 0, table.stderr
    assert "day-all" in table.stdout and "0.040000" in table.stdout and "0.80" in table.stdout
    assert "flow=a" in table.stdout
    rows = json.loads(run_cli("budgets", "--json", env=env).stdout)
    assert [(r["name"], r["ratio"]) for r in rows] == [("day-all", 0.8), ("flow-a", 0.02)]
