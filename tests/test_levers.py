"""The levers, priced: cached input billed at its price, and what each lever saved counted in the
tally where the job finishes, with real workers, the simulator and `flowcloud costs`."""

from __future__ import annotations

import json

import pytest
import yaml

from flowcloud import client
from flowcloud.simulator import count_tokens
from flowcloud.simulator.prompt_cache import INCREMENT_TOKENS, MIN_CACHED_TOKENS
from flowcloud.workers.core import tally
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.core.config_sections import ModelConfig
from flowcloud.workers.core.money import to_nano
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.core.summary_plan import plan_summary
from tests.conftest import KEY_ENV, run_cli
from tests.test_batch_api import drive, engine, three_documents  # noqa: F401  (engine: a fixture)

MINI = {"name": "gpt-4o-mini", "input_per_mtok": 0.15, "cached_input_per_mtok": 0.075, "output_per_mtok": 0.60}


def levers_config(redis_url: str, sim_url: str) -> dict:
    def provider(name: str, models: list[dict]) -> dict:
        return {"name": name, "kind": "openai", "base_url": sim_url, "allow_private": True, "api_key_env": KEY_ENV,
                "timeout": {"connect": 2, "read": 10}, "models": models}

    return {"redis_url": redis_url, "default_model": "gpt-4o-mini",
            "providers": [provider("cloud", [MINI]),
                          provider("local", [{"name": "tiny", "input_per_mtok": 0.0, "output_per_mtok": 0.0}])],
            "model_groups": [{"name": "assistant", "deployments": [{"provider": "cloud", "model": "gpt-4o-mini"}],
                              "hybrid": {"local": {"provider": "local", "model": "tiny"}}}],
            "retry": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.2},
            "worker": {"pool": "threads", "concurrency": 8}, "metrics_port": 0}


@pytest.fixture
def levers(redis_server, simulator, start_worker, tmp_path):
    """A worker and this process on the levers' configuration; returns it."""
    data = levers_config(redis_server.url, simulator.url)
    path = tmp_path / "levers.yaml"
    path.write_text(yaml.safe_dump(data))
    start_worker(concurrency=8, env={"FLOWCLOUD_CONFIG": str(path)})
    config = validate(data)
    previous = use_config(config)
    yield config
    use_config(previous)


def saved_today(redis_server) -> dict[str, int]:
    """lever -> nano-USD in today's tally, over every flow, provider and model."""
    totals: dict[str, int] = {}
    for entry in tally.read_savings(connect(redis_server.url), [tally.utc_day()]):
        totals[entry.lever] = totals.get(entry.lever, 0) + entry.nano_usd
    return totals


def price(usage: dict) -> float:
    """The list price of a record's usage on gpt-4o-mini."""
    return ModelConfig(**MINI).cost(usage["prompt_tokens"], usage["completion_tokens"])


def test_a_shared_prefix_is_billed_at_the_cached_price_and_its_saving_tallied(levers, redis_server, tag):
    manual = f"{tag} You answer questions about this manual only.\n" + "The pump must be primed. " * 400
    first = client.result(client.submit(manual + "\nQuestion: how is it primed?", flow="manual"), timeout=30)
    second = client.result(client.submit(manual + "\nQuestion: what does it pump?", flow="manual"), timeout=30)

    assert first["status"] == second["status"] == "succeeded"
    assert "cached_tokens" not in first["usage"] and first["savings_usd"] is None
    cached = second["usage"]["cached_tokens"]
    shared = len(manual) // 4  # the simulator's four characters a token
    assert cached >= MIN_CACHED_TOKENS and (cached - MIN_CACHED_TOKENS) % INCREMENT_TOKENS == 0
    assert shared - INCREMENT_TOKENS < cached <= shared
    usage = second["usage"]
    assert second["cost_usd"] == pytest.approx(
        ((usage["prompt_tokens"] - cached) * 0.15 + cached * 0.075 + usage["completion_tokens"] * 0.60) / 1e6)
    assert second["savings_usd"] == {"cached_input": pytest.approx(cached * (0.15 - 0.075) / 1e6)}
    field = "manual|cloud|gpt-4o-mini|cached_input"
    tallied = tally.read_savings(connect(redis_server.url), [tally.utc_day()])
    assert [(e.flow, e.provider, e.model, e.lever, e.nano_usd) for e in tallied] == [
        (*field.split("|"), to_nano(second["savings_usd"]["cached_input"]))]


def test_a_repeat_saves_by_the_cache_and_identical_jobs_in_flight_by_coalescing(levers, redis_server, tag):
    asked = f"{tag} a question asked again later"
    original = client.result(client.submit(asked), timeout=30)
    repeat = client.result(client.submit(asked), timeout=30)  # answered at submit, from the cache
    assert repeat["cached"] and repeat["savings_usd"] == {"cache": pytest.approx(original["cost_usd"])}

    together = f"{tag} the same question from three nodes [[sim:slow;delay=1]]"
    records = client.wait_all(client.submit_many([together] * 3), timeout=60)
    leader, = [r for r in records if not r["cached"]]
    followers = [r for r in records if r["cached"]]
    assert leader["cost_usd"] > 0 and leader["savings_usd"] is None
    assert [r["savings_usd"] for r in followers] == [{"coalescing": pytest.approx(leader["cost_usd"])}] * 2
    saved = saved_today(redis_server)
    assert saved["cache"] == to_nano(original["cost_usd"])
    assert saved["coalescing"] == pytest.approx(2 * to_nano(leader["cost_usd"]), abs=2)


def test_a_job_the_local_tier_served_saves_what_the_cloud_tier_would_have_billed(levers, redis_server, tag):
    record = client.result(client.submit(f"What is the capital of France? {tag}", model="assistant"), timeout=30)
    assert record["provider"] == "local" and record["cost_usd"] == 0.0
    assert record["savings_usd"] == {"local_tier": pytest.approx(price(record["usage"]))}
    hard = client.result(client.submit(f"Write a Python function that sorts a list, then explain why it is "
                                       f"O(n log n). {tag}", model="assistant"), timeout=30)
    assert hard["provider"] == "cloud" and not hard["savings_usd"]
    assert saved_today(redis_server) == {"local_tier": to_nano(price(record["usage"]))}


def test_a_summary_in_one_call_saves_the_chunked_plans_extra_cost(levers, redis_server, tag):
    text = "\n\n".join(f"{tag} section {n}. " + " ".join(f"word{i % 89}" for i in range(400)) for n in range(16))
    record = client.result(client.summarize(text, flow="digest"), timeout=60)

    entry = levers.model("gpt-4o-mini")
    chosen = plan_summary(text, entry, levers.summarize)
    chunked = plan_summary(text, entry, levers.summarize, "fastest")
    assert record["status"] == "succeeded" and chosen.calls == 1 < chunked.calls
    assert record["savings_usd"] == {"summary_plan": pytest.approx(chunked.cost_usd - chosen.cost_usd)}
    assert saved_today(redis_server)["summary_plan"] == to_nano(chunked.cost_usd - chosen.cost_usd)


def test_flowcloud_costs_shows_the_savings_by_lever_beside_the_spend(levers, redis_server, tag, tmp_path):
    asked = f"{tag} a question for the report"
    original = client.result(client.submit(asked, flow="report"), timeout=30)
    client.result(client.submit(asked, flow="report"), timeout=30)

    done = run_cli("costs", "--json", "--csv", str(tmp_path / "c.csv"), "--png", str(tmp_path / "c.png"),
                   env={"FLOWCLOUD_REDIS_URL": redis_server.url})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    levers_shown = {row["lever"]: row["saved_usd"] for row in report["savings"]}
    assert set(levers_shown) == {lever.value for lever in tally.Lever}
    assert levers_shown["cache"] == pytest.approx(original["cost_usd"])
    assert report["naive_usd"] == pytest.approx(report["total_usd"] + report["saved_usd"])
    table = run_cli("costs", "--csv", str(tmp_path / "c.csv"), "--png", str(tmp_path / "c.png"),
                    env={"FLOWCLOUD_REDIS_URL": redis_server.url})
    assert table.returncode == 0 and "Saved by lever" in table.stdout and "coalescing" in table.stdout


def test_a_batch_api_round_is_billed_at_the_batch_price_with_its_saving_once(engine, redis_server, tag):
    run_id = f"run-{tag}"
    engine.start(run_id, [engine.BatchDocument(n, t) for n, t in three_documents(tag).items()], "gpt-4o-mini",
                 "nightly")
    state = drive(engine, run_id)
    engine.advance(run_id)  # a finished run bills nothing more

    assert state.finished and state.cost_usd > 0
    redis = connect(redis_server.url)
    costs = {(e.flow, e.provider, e.model): e.nano_usd for e in tally.read_costs(redis, [tally.utc_day()])}
    assert costs == {("nightly", "sim", "gpt-4o-mini"): pytest.approx(to_nano(state.cost_usd), abs=2)}
    saved = {(e.flow, e.lever): e.nano_usd for e in tally.read_savings(redis, [tally.utc_day()])}
    assert saved == {("nightly", "batch_api"): pytest.approx(to_nano(state.list_price_usd - state.cost_usd), abs=2)}


def test_the_cost_benchmarks_workload_keeps_the_mix_it_promises():
    from bench.cost_workload import QUICK, check_mix, workload

    entry = ModelConfig(name="m", input_per_mtok=0.25, output_per_mtok=2.0)
    for scale in (None, QUICK):
        items = workload() if scale is None else workload(scale)
        # Each direct call priced as the simulator counts it, with a short answer.
        naive = [entry.cost(sum(count_tokens(m["content"]) for m in item.messages), 30) for item in items]
        shares, broken = check_mix(items, naive)
        assert broken == [] and shares["documents_spend"] >= 0.5
        assert any(i.kind == "repeat" and not i.later for i in items) and any(i.kind == "nightly" for i in items)
    assert len(workload()) == 142 and workload() == workload()  # the same every run
    _, broken = check_mix(workload()[:80], [1.0] * 80)  # short items only: too many repeats and simple ones
    assert len(broken) >= 2


def adapter(kind: str, **extra):
    from flowcloud.workers.core.config import ProviderConfig
    from flowcloud.workers.providers import build_provider

    return build_provider(ProviderConfig(name=kind, kind=kind, base_url="http://127.0.0.1:9", models=[MINI], **extra),
                          pool_size=1)


@pytest.mark.parametrize("usage, cached", [
    ({"prompt_tokens": 2006, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 1920}}, 1920),
    ({"prompt_tokens": 2006, "completion_tokens": 9, "prompt_cache_hit_tokens": 1024,  # DeepSeek's
      "prompt_cache_miss_tokens": 982}, 1024),
    ({"prompt_tokens": 2006, "completion_tokens": 9}, 0),
])
def test_the_openai_adapter_reads_cached_tokens_where_compatible_services_report_them(usage, cached):
    body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": usage}
    completion = adapter("openai").read_chat(body, "gpt-4o-mini", None)
    assert completion.usage.cached_tokens == cached and completion.usage.prompt_tokens == 2006


def test_the_anthropic_adapter_counts_cache_reads_as_cached_prompt_tokens():
    body = {"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1500,
                      "output_tokens": 7}}
    usage = adapter("anthropic", anthropic_version="2023-06-01").read_message(body, "gpt-4o-mini").usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (1550, 1500, 7)


@pytest.mark.parametrize("details", [{"cached_tokens": "many"}, {"cached_tokens": 5000}, {"cached_tokens": -1}])
def test_cached_tokens_that_make_no_sense_are_a_malformed_response(details):
    from flowcloud.workers.core.errors import MalformedResponse

    body = {"choices": [{"message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 2006, "completion_tokens": 9, "prompt_tokens_details": details}}
    with pytest.raises(MalformedResponse, match="usage|cached"):
        adapter("openai").read_chat(body, "gpt-4o-mini", None)


def test_a_cached_price_above_the_input_price_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="cached_input_per_mtok"):
        ModelConfig(name="m", input_per_mtok=0.1, cached_input_per_mtok=0.2)
