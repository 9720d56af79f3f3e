"""Model groups: routing by cost, latency, load and weight, fallbacks, context windows and circuit
breakers shared in Redis, with simulator instances as distinct providers over real HTTP.

Most tests run the real pipeline in this process on a runtime of their own, and play the broker's
part for a retry by running the next attempt at once; the last runs real worker processes.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
import yaml

from flowcloud import client
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.core.config_routing import DeploymentConfig
from flowcloud.workers.core.config_sections import ModelConfig
from flowcloud.workers.core.errors import ConfigError
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.pipeline import CHAT, Ending, Job
from flowcloud.workers.routing.health import Fleet, Health
from flowcloud.workers.routing.strategies import Candidate, choose, draw
from flowcloud.workers.runtime import Runtime
from tests.conftest import CANARY_KEY, KEY_ENV, ROOT, Simulator, free_port, start_simulator
from tests.test_metrics import parse, scrape, total

CHEAP, DEAR = "cheap", "dear"


@pytest.fixture(scope="module")
def clouds():
    """Two simulators, each a provider of its own."""
    started = {name: start_simulator() for name in (CHEAP, DEAR)}
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture(autouse=True)
def healthy(clouds, redis_server):
    """Each test starts on healthy clouds, with no circuit, latency or arm figures of an earlier test's."""
    for sim in clouds.values():
        set_faults(sim, {})
    client_ = connect(redis_server.url)
    for pattern in ("flowcloud:deployment:*", "flowcloud:arms:*"):
        for key in client_.scan_iter(pattern):
            client_.delete(key)
    yield


def set_faults(sim: Simulator, rates: dict[str, float]) -> None:
    reply = requests.post(f"{sim.root}/_sim/config", json={"fault_rates": rates}, timeout=5)
    assert reply.ok, reply.text


def calls(sim: Simulator, tag: str) -> int:
    return len(sim.requests_log(tag))


def routing_config(redis_server, clouds, group: dict, **more) -> dict:
    def provider(name: str, price: float, context: int = 128_000) -> dict:
        return {"name": name, "kind": "openai", "base_url": clouds[name].url, "allow_private": True,
                "api_key_env": KEY_ENV,
                "timeout": {"connect": 2, "read": 2},
                "models": [{"name": "m", "input_per_mtok": price, "output_per_mtok": price},
                           {"name": "small", "input_per_mtok": price / 2, "output_per_mtok": price / 2,
                            "context_tokens": 1000},
                           {"name": "lopsided", "input_per_mtok": 1.0 if name == CHEAP else 3.0,
                            "output_per_mtok": 10.0 if name == CHEAP else 3.0}]}

    return {"redis_url": redis_server.url, "default_model": "m", "cache": {"enabled": False},
            "retry": {"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.05},
            "providers": [provider(CHEAP, 1.0), provider(DEAR, 3.0)],
            "model_groups": [{"name": "chat", **group}], **more}


@pytest.fixture
def build(redis_server, clouds):
    built: list[Runtime] = []

    def runtime(group: dict, **more) -> Runtime:
        rt = Runtime.build(validate(routing_config(redis_server, clouds, group, **more)), calls_in_flight=8)
        built.append(rt)
        return rt

    yield runtime
    for rt in built:
        rt.close()


def drive(rt: Runtime, prompt: str, model: str = "chat", **params):
    """One job through the pipeline until it ends, playing the broker's part: a retry or a wait runs
    again at once (its countdown cut to at most 0.2 s). Returns the record and the last outcome."""
    job_id = str(uuid.uuid4())
    request = {"messages": [{"role": "user", "content": prompt}], "model": model, **params}
    attempt = 1
    for _ in range(20):
        outcome = rt.pipeline.run(Job(job_id, request, CHAT, attempt))
        if not outcome.ending.later:
            return rt.store.get(job_id), outcome
        attempt += outcome.ending is Ending.RETRY
        time.sleep(max(0.0, min(outcome.not_before - time.time(), 0.2)))
    raise AssertionError(f"job {job_id} never ended")


def both(cheap: float, dear: float, **group) -> dict:
    return {"deployments": [{"provider": CHEAP, "model": group.pop("model", "m")},
                            {"provider": DEAR, "model": "m"}], **group}


def test_the_cost_strategy_sends_every_job_to_the_cheaper_deployment(build, clouds, tag):
    rt = build(both(1, 3, strategy="cost"))
    records = [drive(rt, f"{tag} question {i}")[0] for i in range(6)]
    assert {r.provider for r in records} == {CHEAP} and calls(clouds[DEAR], tag) == 0
    route = records[0].route
    assert route["deployment"] == "cheap/m" and route["reason"] == "cost"
    assert route["scores"]["cheap/m"] * 3 == pytest.approx(route["scores"]["dear/m"])


def test_the_cost_strategy_switches_to_the_dearer_deployment_while_the_cheaper_ones_circuit_is_open(
        build, clouds, tag):
    rt = build(both(1, 3, strategy="cost") | {"attempts_per_deployment": 1,
                                              "circuit": {"min_calls": 3, "open_seconds": 60}})
    set_faults(clouds[CHEAP], {"503": 1.0})
    records = [drive(rt, f"{tag} job {i}")[0] for i in range(10)]
    assert all(r.status == "succeeded" and r.provider == DEAR for r in records)
    assert calls(clouds[CHEAP], tag) == 3  # until its circuit opened; none since
    assert records[-1].route["skipped"] == {"cheap/m": "circuit open"} and records[-1].route["reason"] == "only"


def test_cost_is_the_jobs_expected_cost_not_the_sum_of_prices():
    # cheap/lopsided: 1 in + 10 out = 11 per Mtok; dear/lopsided: 3 + 3 = 6. A long prompt with a short
    # answer is cheaper on the first; a short prompt with a long answer on the second.
    entries = {CHEAP: ModelConfig(name="x", input_per_mtok=1, output_per_mtok=10),
               DEAR: ModelConfig(name="x", input_per_mtok=3, output_per_mtok=3)}
    candidates = [Candidate(DeploymentConfig(provider=p, model="x"), e, Health()) for p, e in entries.items()]
    assert choose("cost", candidates, "j", prompt_tokens=10_000, max_tokens=10).deployment.provider == CHEAP
    assert choose("cost", candidates, "j", prompt_tokens=10, max_tokens=2_000).deployment.provider == DEAR
    # With no max_tokens, the output the fleet observed across the group counts, the same for each.
    seen = [Candidate(c.deployment, c.entry, Health(output_tokens=n)) for c, n in zip(candidates, (None, 2_000))]
    assert choose("cost", seen, "j", prompt_tokens=10, max_tokens=None).deployment.provider == DEAR
    assert choose("cost", seen, "j", prompt_tokens=10, max_tokens=None).scores == {
        "cheap/x": pytest.approx((10 + 20_000) / 1e6), "dear/x": pytest.approx((30 + 6_000) / 1e6)}


def test_a_long_prompt_with_a_short_answer_goes_where_it_costs_least(build, clouds, tag):
    rt = build(both(1, 3, strategy="cost", model="lopsided") | {
        "deployments": [{"provider": CHEAP, "model": "lopsided"}, {"provider": DEAR, "model": "lopsided"}]})
    long_prompt = f"{tag} " + "word " * 4000
    record, _ = drive(rt, long_prompt, max_tokens=10)
    assert record.provider == CHEAP
    record, _ = drive(rt, f"{tag} short", max_tokens=2000)
    assert record.provider == DEAR


def test_a_failing_deployment_opens_its_circuit_and_jobs_complete_on_the_fallback(build, clouds, tag):
    group = {"deployments": [{"provider": CHEAP, "model": "m"}], "fallbacks": [{"provider": DEAR, "model": "m"}],
             "attempts_per_deployment": 2,
             "circuit": {"min_calls": 4, "failure_ratio": 0.5, "window_seconds": 30, "open_seconds": 1.5}}
    rt = build(group)
    set_faults(clouds[CHEAP], {"503": 1.0})
    records = [drive(rt, f"{tag} job {i}")[0] for i in range(8)]
    assert all(r.status == "succeeded" and r.provider == DEAR for r in records)
    tried = records[0].route["tried"]
    assert tried[0] == {"deployment": "cheap/m", "attempts": 2, "error": "server_error",
                        "moved_on": "retries exhausted"}
    assert Fleet(rt.store.client).health(group_deployment(CHEAP)).state == "open"
    while_open = calls(clouds[CHEAP], tag)
    later = [drive(rt, f"{tag} while open {i}")[0] for i in range(4)]
    assert calls(clouds[CHEAP], tag) == while_open  # an open circuit gets no calls
    assert {r.route["reason"] for r in later} == {"fallback"}
    assert later[0].route["skipped"] == {"cheap/m": "circuit open"}
    # It recovers; after open_seconds one probe closes the circuit and the cheap deployment is back.
    set_faults(clouds[CHEAP], {})
    time.sleep(1.6)
    probe, _ = drive(rt, f"{tag} probe")
    assert probe.provider == CHEAP and probe.route["reason"] == "probe"
    assert Fleet(rt.store.client).health(group_deployment(CHEAP)).state == "closed"
    assert drive(rt, f"{tag} after")[0].provider == CHEAP


def group_deployment(provider: str) -> DeploymentConfig:
    return DeploymentConfig(provider=provider, model="m")


def test_a_prompt_too_long_for_a_window_goes_to_the_larger_fallback(build, clouds, tag):
    rt = build({"deployments": [{"provider": CHEAP, "model": "small"}], "fallbacks": [{"provider": DEAR, "model": "m"}]})
    short, _ = drive(rt, f"{tag} short")
    assert short.provider == CHEAP and short.model == "small"
    long, _ = drive(rt, f"{tag} " + "word " * 2000)
    assert long.provider == DEAR and long.model == "m"
    assert long.route["skipped"] == {"cheap/small": "context window"} and long.route["reason"] == "fallback"


def test_a_prompt_that_fits_no_window_fails_naming_the_windows(build, clouds, tag):
    rt = build({"deployments": [{"provider": CHEAP, "model": "small"}, {"provider": DEAR, "model": "small"}]})
    record, outcome = drive(rt, f"{tag} " + "word " * 2000)
    assert outcome.ending is Ending.FAILED and "fits no deployment" in record.error["message"]
    assert "cheap/small 1000" in record.error["message"]


def test_a_bad_request_fails_without_moving_on(build, clouds, tag):
    rt = build({"deployments": [{"provider": CHEAP, "model": "m"}], "fallbacks": [{"provider": DEAR, "model": "m"}]})
    record, _ = drive(rt, f"{tag} [[sim:400]]")
    assert record.status == "failed" and record.error["kind"] == "bad_request"
    assert calls(clouds[DEAR], tag) == 0  # the job's own fault: no other deployment would take it


def test_weighted_splits_by_weight_and_keeps_each_job_on_its_arm():
    arms = [Candidate(DeploymentConfig(provider=CHEAP, model="m", name="old", weight=90), ModelConfig(name="m"),
                      Health()),
            Candidate(DeploymentConfig(provider=DEAR, model="m", name="new", weight=10), ModelConfig(name="m"),
                      Health())]
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    old = sum(choose("weighted", arms, i, 10, None).deployment.label == "old" for i in ids)
    assert 870 <= old <= 930
    assert all(0 <= draw(i) < 1 for i in ids[:50])
    assert choose("weighted", arms, ids[0], 10, None) == choose("weighted", arms, ids[0], 10, None)


def test_least_busy_and_latency_read_the_fleets_shared_state(build, clouds, tag):
    rt = build(both(1, 3, strategy="latency"))
    first = [drive(rt, f"{tag} {i}")[0].provider for i in range(2)]
    assert set(first) == {CHEAP, DEAR}  # each measured once before either is preferred
    fleet = Fleet(rt.store.client)
    rt.store.client.hset("flowcloud:deployment:dear/m", "latency_ms", 1.0)
    rt.store.client.hset("flowcloud:deployment:cheap/m", "latency_ms", 500.0)
    assert drive(rt, f"{tag} fast")[0].provider == DEAR
    busy = build(both(1, 3, strategy="least_busy"))
    fleet.busy(DeploymentConfig(provider=CHEAP, model="m"), 5)
    try:
        assert drive(busy, f"{tag} idle")[0].provider == DEAR
    finally:
        fleet.busy(DeploymentConfig(provider=CHEAP, model="m"), -5)
    assert fleet.health(DeploymentConfig(provider=DEAR, model="m")).busy == 0  # given back after the call


@pytest.mark.parametrize("group, field", [
    ({"deployments": [{"provider": "nope", "model": "m"}]}, "model_groups.0.deployments.0.provider"),
    ({"deployments": [{"provider": CHEAP, "model": "nope"}]}, "model_groups.0.deployments.0.model"),
    ({"deployments": [{"provider": CHEAP, "model": "m"}], "weights": {"x": 1}}, "model_groups.0.weights"),
    ({"deployments": [{"provider": CHEAP, "model": "m"}, {"provider": CHEAP, "model": "m"}]},
     "model_groups.0.deployments"),
    ({"deployments": [], "strategy": "cost"}, "model_groups.0.deployments"),
    ({"deployments": [{"provider": CHEAP, "model": "m"}], "strategy": "fastest"}, "model_groups.0.strategy"),
])
def test_a_bad_group_is_refused_naming_the_field(redis_server, clouds, group, field):
    with pytest.raises(ConfigError) as caught:
        validate(routing_config(redis_server, clouds, group))
    assert caught.value.field == field


def start_routing_workers(tmp_path, start_worker, data: dict, count: int = 1) -> int:
    """``count`` real workers on configuration ``data``, the first serving metrics; returns its port."""
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    for i in range(count):
        start_worker(env={"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_METRICS_PORT": str(port if i == 0 else 0)},
                     concurrency=8)
    return port


def submit_and_wait(data: dict, prompts: list[str]) -> list[dict]:
    previous = use_config(validate(data))  # the client checks the group's name against the same file
    try:
        return client.wait_all(client.submit_many(prompts, model="chat"), timeout=180)
    finally:
        use_config(previous)


def test_workers_complete_every_job_through_the_fallback(tmp_path, redis_server, clouds, start_worker, tag):
    data = routing_config(redis_server, clouds, {
        "deployments": [{"provider": CHEAP, "model": "m"}], "fallbacks": [{"provider": DEAR, "model": "m"}],
        "attempts_per_deployment": 1, "circuit": {"min_calls": 5, "open_seconds": 60}})
    set_faults(clouds[CHEAP], {"503": 1.0})
    port = start_routing_workers(tmp_path, start_worker, data, count=2)
    first = submit_and_wait(data, [f"{tag} first {i}" for i in range(10)])
    later = submit_and_wait(data, [f"{tag} later {i}" for i in range(30)])
    assert [r["status"] for r in first + later] == ["succeeded"] * 40
    assert {r["provider"] for r in first + later} == {DEAR}
    # The first jobs opened the circuit in Redis; no worker called the failing cloud after that.
    assert calls(clouds[CHEAP], f"{tag} first") == 10 and calls(clouds[CHEAP], f"{tag} later") == 0
    assert {r["route"]["reason"] for r in later} == {"fallback"}
    assert total(parse(scrape(port)), "flowcloud_circuit_state", deployment="cheap/m") == 2


def test_weighted_routing_counts_each_arm_in_the_metrics(tmp_path, redis_server, clouds, start_worker, tag):
    data = routing_config(redis_server, clouds, {
        "strategy": "weighted", "weights": {"old": 90, "new": 10},
        "deployments": [{"provider": CHEAP, "model": "m", "name": "old"},
                        {"provider": DEAR, "model": "m", "name": "new"}]})
    port = start_routing_workers(tmp_path, start_worker, data)
    records = submit_and_wait(data, [f"{tag} {i}" for i in range(1000)])
    assert [r["status"] for r in records] == ["succeeded"] * 1000
    by_arm = {arm: sum(r["route"]["deployment"] == arm for r in records) for arm in ("old", "new")}
    assert 870 <= by_arm["old"] <= 930 and by_arm["old"] + by_arm["new"] == 1000
    assert calls(clouds[DEAR], tag) == by_arm["new"]
    samples = parse(scrape(port))
    assert {arm: total(samples, "flowcloud_route_decisions_total", group="chat", deployment=arm, reason="weighted")
            for arm in by_arm} == by_arm


def test_the_ab_guard_turns_off_an_arm_that_fails_and_raises_its_alert(tmp_path, build, clouds, redis_server, tag):
    from flowcloud.workers.alerts.checks import run_checks
    from flowcloud.workers.routing.arms import Arms
    from tests.conftest import run_cli

    group = {"strategy": "weighted", "weights": {"old": 50, "new": 50}, "attempts_per_deployment": 1,
             "deployments": [{"provider": CHEAP, "model": "m", "name": "old"},
                             {"provider": DEAR, "model": "m", "name": "new"}],
             "guard": {"arm": "new", "baseline": "old", "max_error_rate_increase": 0.05, "min_calls": 30}}
    rt = build(group, alerts={})
    name = "chat"
    set_faults(clouds[DEAR], {"503": 0.2})
    records = [drive(rt, f"{tag} {i}")[0] for i in range(120)]
    assert all(r.status == "succeeded" for r in records)  # a failed call on the new arm moved on to the old
    notices = run_checks(rt.store.client, rt.config, time.time())
    fired = [n for n in notices if n.alert == f"ab_guard:{name}:new"]
    assert fired and fired[0].state == "firing" and "failed" in fired[0].summary
    assert Arms(rt.store.client).weights(name) == {"new": 0.0}
    after = [drive(rt, f"{tag} after {i}")[0] for i in range(20)]
    assert {r.route["deployment"] for r in after} == {"old"}  # every worker reads the weight from Redis

    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(routing_config(redis_server, clouds, group)))
    shown = run_cli("ab", "report", name, "--since", "10m", "--json", env={"FLOWCLOUD_CONFIG": str(path)})
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)["arms"]
    assert report["new"]["weight"] == 0.0 and report["new"]["calls"] >= 30
    assert report["new"]["success_rate"] < report["old"]["success_rate"] == 1.0
    assert report["old"]["p99_ms"] is not None and report["old"]["cost_per_job_usd"] > 0
    restored = run_cli("ab", "restore", name, "new", env={"FLOWCLOUD_CONFIG": str(path)})
    assert "restored" in restored.stdout and Arms(rt.store.client).weights(name) == {}


def test_the_readme_routing_table_is_what_config_check_prints_for_its_example():
    from tests.conftest import run_cli

    checked = run_cli("config", "check", env={"FLOWCLOUD_CONFIG": str(ROOT / "docs/examples/two-clouds.yaml")})
    assert checked.returncode == 0, checked.stderr
    printed = checked.stdout[checked.stdout.index("# routing table"):].splitlines()[:5]
    readme = (ROOT / "README.md").read_text()
    assert "\n".join(printed) in readme


def test_flower_shows_where_a_routed_retry_goes_and_what_it_found_open(build, clouds, tag):
    from flowcloud.tasks.attempt import retry_message

    rt = build({"deployments": [{"provider": CHEAP, "model": "m"}], "fallbacks": [{"provider": DEAR, "model": "m"}],
                "attempts_per_deployment": 1})
    set_faults(clouds[CHEAP], {"503": 1.0})
    job = Job(str(uuid.uuid4()), {"messages": [{"role": "user", "content": f"{tag} q"}], "model": "chat"}, CHAT)
    outcome = rt.pipeline.run(job)
    assert outcome.ending is Ending.RETRY
    shown = retry_message(job, outcome)["kwargsrepr"]
    assert shown == "{'attempt': 2, 'deployment': 'cheap/m', 'moved_on': 'retries exhausted'}"
    assert CANARY_KEY not in shown and tag not in shown
