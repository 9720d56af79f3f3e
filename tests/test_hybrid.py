"""Hybrid groups: simple prompts to the local tier, complex ones to the cloud, and a local answer or
tier that fails escalating at once, against simulators as the tiers and the real llama-server."""

from __future__ import annotations


import pytest
import yaml

from flowcloud import client
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.core.config_routing import COMPLEXITY_FEATURES, DEFAULT_COMPLEXITY_WEIGHTS
from flowcloud.workers.core.errors import ConfigError
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.routing.answer_check import rejection
from flowcloud.workers.routing.complexity import features_of, score
from flowcloud.workers.runtime import Runtime
from tests.conftest import KEY_ENV, ROOT, free_port, start_llama_server
from tests.test_metrics import parse, scrape, total
from tests.conftest import start_simulator
from tests.test_routing import drive as routed_drive, set_faults

LABELLED = yaml.safe_load((ROOT / "tests" / "data" / "complexity.yaml").read_text())
THRESHOLD = 0.5


def labelled(languages: tuple[str, ...] = ("en", "zh")) -> list[tuple[str, str]]:
    return [(label, text) for label in ("simple", "complex") for lang in languages
            for text in LABELLED[label][lang]]


def test_the_labelled_set_is_large_enough_and_covers_both_languages():
    assert len(labelled()) >= 60
    assert all(LABELLED[label][lang] for label in ("simple", "complex") for lang in ("en", "zh"))


def test_the_split_sends_at_least_90_percent_of_the_labelled_set_where_its_label_says():
    both = frozenset({"en", "zh"})
    right = sum((score(text, DEFAULT_COMPLEXITY_WEIGHTS, both).score >= THRESHOLD) == (label == "complex")
                for label, text in labelled())
    assert right / len(labelled()) >= 0.9


def test_a_language_the_local_model_does_not_speak_goes_to_the_cloud():
    for text in LABELLED["simple"]["zh"]:
        found = score(text, DEFAULT_COMPLEXITY_WEIGHTS, frozenset({"en"}))
        assert found.score >= THRESHOLD and "language" in found.top


def test_every_feature_is_weighted_and_the_top_ones_explain_the_score():
    assert set(features_of("hello", frozenset({"en"}))) == set(COMPLEXITY_FEATURES) == set(DEFAULT_COMPLEXITY_WEIGHTS)
    found = score("Write a Python function to compute 12 * 34, then explain why it works.", DEFAULT_COMPLEXITY_WEIGHTS)
    assert found.top[:2] == ["code", "arithmetic"] and found.score >= THRESHOLD


@pytest.mark.parametrize("text, finish, options, why", [
    ("Paris.", "stop", {}, None),
    ("", "stop", {}, "empty"),
    ("   \n", "stop", {}, "empty"),
    ("I'm sorry, but I can't help with that.", "stop", {}, "a refusal"),
    ("As an AI language model, I cannot browse.", "stop", {}, "a refusal"),
    ("抱歉，我无法回答。", "stop", {}, "a refusal"),
    ("The answer is", "length", {}, "cut off"),
    ('{"a": 1}', "stop", {"response_format": {"type": "json_object"}}, None),
    ('```json\n{"a": 1}\n```', "stop", {"response_format": {"type": "json_object"}}, None),
    ("a: 1", "stop", {"response_format": {"type": "json_object"}}, "not JSON"),
])
def test_the_answer_check(text, finish, options, why):
    assert rejection(text, finish, options) == why


# -- the pipeline, with simulators as the two tiers


@pytest.fixture(scope="module")
def tiers():
    started = {name: start_simulator() for name in ("local", "cloud")}
    yield started
    for sim in started.values():
        sim.stop()


def hybrid_config(redis_url: str, local_url: str, cloud_url: str, **hybrid) -> dict:
    def provider(name: str, url: str, price: float) -> dict:
        return {"name": name, "kind": "openai", "base_url": url, "allow_private": True, "api_key_env": KEY_ENV,
                "timeout": {"connect": 1, "read": 5},
                "models": [{"name": "m", "input_per_mtok": price, "output_per_mtok": price}]}

    return {"redis_url": redis_url, "default_model": "assistant", "cache": {"enabled": False},
            "retry": {"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.05},
            "providers": [provider("local", local_url, 0.0), provider("cloud", cloud_url, 1.0)],
            "model_groups": [{"name": "assistant", "deployments": [{"provider": "cloud", "model": "m"}],
                              "hybrid": {"local": {"provider": "local", "model": "m"}, **hybrid}}],
            "metrics_port": 0}


@pytest.fixture
def runtime(redis_server, tiers):
    client_ = connect(redis_server.url)
    for key in client_.scan_iter("flowcloud:deployment:*"):
        client_.delete(key)
    built = Runtime.build(validate(hybrid_config(redis_server.url, tiers["local"].url, tiers["cloud"].url)),
                          calls_in_flight=4)
    yield built
    built.close()


def drive(rt: Runtime, prompt: str, **params):
    return routed_drive(rt, prompt, model="assistant", **params)[0]


def test_a_simple_prompt_is_answered_locally_and_a_complex_one_in_the_cloud(runtime, tag):
    simple = drive(runtime, f"What is the capital of France? {tag}")
    assert simple.provider == "local" and simple.route["hybrid"]["tier"] == "local"
    assert simple.route["hybrid"]["reason"] == "simple" and simple.route["reason"] == "local"
    hard = drive(runtime, f"Write a Python function that sorts a list, then explain why it is O(n log n). {tag}")
    assert hard.provider == "cloud" and hard.route["hybrid"]["reason"] == "complex"
    assert hard.route["hybrid"]["top"][0] in ("code", "reasoning") and hard.route["hybrid"]["score"] >= THRESHOLD


@pytest.mark.parametrize("directive, local_faults, params, why", [
    ("[[sim:refuse]]", {}, {}, "answer a refusal"),
    ("[[sim:blank]]", {}, {}, "answer empty"),
    ("", {}, {"max_tokens": 2}, "answer cut off"),
    ("", {"503": 1.0}, {}, "retries exhausted"),
    ("", {"malformed": 1.0}, {}, "retries exhausted"),
])
def test_a_local_answer_or_call_that_fails_escalates_to_the_cloud_at_once(runtime, tiers, tag, directive,
                                                                            local_faults, params, why):
    set_faults(tiers["local"], local_faults)
    try:
        record = drive(runtime, f"What is the capital of Italy? {tag} {directive}", **params)
    finally:
        set_faults(tiers["local"], {})
    assert record.status == "succeeded" and record.provider == "cloud"
    local_try, = [t for t in record.route["tried"] if t["deployment"] == "local/m"]
    assert local_try["attempts"] == 1 and local_try["moved_on"] == why  # one try, then the cloud
    assert record.route["hybrid"] == {**record.route["hybrid"], "tier": "cloud", "reason": "escalated"}
    assert len(tiers["local"].requests_log(tag)) == 1


def test_a_local_tier_that_is_down_sends_every_job_to_the_cloud_and_none_fails(redis_server, tiers, tag):
    client_ = connect(redis_server.url)
    for key in client_.scan_iter("flowcloud:deployment:*"):
        client_.delete(key)
    data = hybrid_config(redis_server.url, f"http://127.0.0.1:{free_port()}/v1", tiers["cloud"].url)
    data["model_groups"][0]["circuit"] = {"min_calls": 3, "open_seconds": 60}
    rt = Runtime.build(validate(data), calls_in_flight=4)
    try:
        records = [drive(rt, f"What is 2 plus 2? {tag} {i}") for i in range(8)]
    finally:
        rt.close()
    assert all(r.status == "succeeded" and r.provider == "cloud" for r in records)
    assert {r.route["hybrid"]["reason"] for r in records[:3]} == {"escalated"}  # refused connections
    assert {r.route["hybrid"]["reason"] for r in records[3:]} == {"local down"}  # its circuit open: not tried


@pytest.mark.parametrize("hybrid, field", [
    ({"weights": {"vibes": 1}}, "model_groups.0.hybrid.weights"),
    ({"local": {"provider": "nope", "model": "m"}}, "model_groups.0.hybrid.local.provider"),
    ({"threshold": 0}, "model_groups.0.hybrid.threshold"),
])
def test_a_bad_hybrid_section_names_its_field(redis_server, tiers, hybrid, field):
    data = hybrid_config(redis_server.url, tiers["local"].url, tiers["cloud"].url, **hybrid)
    with pytest.raises(ConfigError) as caught:
        validate(data)
    assert caught.value.field == field


# -- the real local model, through a worker


@pytest.mark.llama_server
def test_a_worker_answers_simple_prompts_on_the_real_local_model_and_escalates_when_it_stops(
        tmp_path, redis_server, tiers, start_worker, tag):
    llama = start_llama_server(tmp_path)
    try:
        data = hybrid_config(redis_server.url, llama.url, tiers["cloud"].url)
        data["providers"][0] = {"name": "local", "preset": "llamacpp", "base_url": llama.url,
                                "timeout": {"connect": 1, "read": 60}}
        data["model_groups"][0]["hybrid"]["local"] = {"provider": "local", "model": "smollm2-135m-instruct"}
        path = tmp_path / "hybrid.yaml"
        path.write_text(yaml.safe_dump(data))
        port = free_port()
        start_worker(concurrency=4, env={"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_METRICS_PORT": str(port),
                                         "HF_HUB_OFFLINE": "1"})
        previous = use_config(validate(data))
        try:
            # Greedy decoding, so the small model's answers to these are short and stable.
            simple = ["Which city is the capital of France?"] * 3
            local = client.wait_all(client.submit_many(simple, model="assistant", max_tokens=48, temperature=0),
                                    timeout=120)
            llama.stop()  # mid-run: the local tier goes away
            later = client.wait_all(client.submit_many(simple, model="assistant", max_tokens=48, temperature=0),
                                    timeout=120)
        finally:
            use_config(previous)
    finally:
        llama.stop()
    answered_locally = [r for r in local if r["provider"] == "local"]
    assert len(answered_locally) == 3, [(r["route"]["hybrid"], r["route"]["tried"]) for r in local]
    for record in answered_locally:
        assert "Paris" in record["text"] and "Simulated answer" not in record["text"]
        assert record["usage"]["completion_tokens"] > 0 and record["cost_usd"] == 0.0
    assert all(r["status"] == "succeeded" for r in local + later)
    assert {r["provider"] for r in later} == {"cloud"}
    assert all(r["route"]["hybrid"]["reason"] == "escalated" for r in later)
    samples = parse(scrape(port))
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="local", reason="simple") >= len(answered_locally)
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="cloud", reason="escalated") >= len(later)
