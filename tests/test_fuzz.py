"""Properties over arbitrary input (hypothesis): the configuration loader, ``submit()`` and its options,
every adapter's response parser and the SSRF guard's and masker's edges left by tests/test_ssrf.py and
tests/test_masking.py. Nothing crashes or hangs: what is accepted is well formed, and every failure is
a classified flowcloud error (a ConfigError naming its field, an InvalidJob, a ProviderError)."""

from __future__ import annotations

import json
import math
import socket
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcloud import client
from flowcloud.workers.core.config import Config, load_config, validate
from flowcloud.workers.core.config_sections import MaskSettings, ProviderConfig
from flowcloud.workers.core.errors import AddressRefused, ConfigError, FlowcloudError, ProviderError
from flowcloud.workers.core.jobspec import build_spec
from flowcloud.workers.core.masking import mask_spec, masked_preview, masker_for
from flowcloud.workers.core.ssrf import Guard
from flowcloud.workers.lanes.packing import unpack_reply
from flowcloud.workers.providers import anthropic, build_provider, openai
from flowcloud.workers.providers.base import Completion, Embeddings, ServedModel, Usage
from flowcloud.workers.providers.batch_api import BatchInfo, RequestResult
from flowcloud.workers.providers.http import Reply, json_object, status_error

# About 6,000 cases in all, in well under a minute of CPU.
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
FEWER = settings(PROPERTY, max_examples=150)

# -- values

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 3), st.floats(),
                    st.text(max_size=12), st.sampled_from(["", "0", "-1", "1e400", "gpt-4o-mini", "chat", "sim"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)
# Where a field is one of several in a strategy: anything, kept small so drawing it stays cheap.
odd_values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
# What Python code may pass besides JSON: bytes, sets, tuples, objects.
python_values = st.one_of(json_values, st.binary(max_size=8), st.frozensets(st.integers(), max_size=3),
                          st.tuples(st.integers()), st.builds(object), st.just(float("nan")), st.just(10 ** 40))


def maybe(keys: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Dicts holding any of ``keys`` (each with its own values or any JSON), and sometimes other keys."""
    return st.fixed_dictionaries({}, optional={key: st.one_of(values, odd_values) for key, values in keys.items()})


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- the configuration loader

BASE = {
    "redis_url": "redis://127.0.0.1:1/0",
    "providers": [{"name": "sim", "kind": "openai", "base_url": "http://127.0.0.1:8400/v1", "allow_private": True,
                   "timeout": {"connect": 2, "read": 5},
                   "models": [{"name": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6},
                              {"name": "text-embedding-3-small", "kind": "embedding"}]}],
}
SECTIONS = ["retry", "worker", "cache", "batching", "summarize", "flower", "alerts", "mask", "vault", "flow_worker"]
FIELDS = ["providers", "model_groups", "schedules", "budgets", "default_model", "metrics_port", "var_dir",
          "redis_url", "budget_output_tokens", "batch_api_poll_seconds", *SECTIONS]
PROVIDER_FIELDS = ["name", "kind", "preset", "region", "base_url", "allow_private", "endpoints", "api_key_env",
                   "api_key", "api_keys", "api_version", "anthropic_version", "timeout", "headers", "models",
                   "default_max_tokens", "cloud", "key_cooldown_seconds", "batch_price_ratio"]


@st.composite
def configs(draw) -> dict:
    """The base configuration with a few settings replaced by arbitrary values, at any depth it has."""
    data = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "provider", "model", "section"]))
        value = draw(st.one_of(json_values, st.sampled_from(
            [{"kind": "webhook", "url": "http://x"}, {"preset": "deepseek"}, {"preset": ["x"]},
             {"name": "g", "deployments": [{"provider": "sim", "model": "gpt-4o-mini"}]}])))
        if where == "top":
            data[draw(st.sampled_from(FIELDS + ["unknown"]))] = value
        elif where == "provider" and provider_of(data) is not None:
            provider_of(data)[draw(st.sampled_from(PROVIDER_FIELDS))] = value
        elif where == "model" and model_of(data) is not None:
            model_of(data)[draw(st.sampled_from(
                ["name", "kind", "batch", "max_batch", "input_per_mtok", "deployment", "context_tokens"]))] = value
        else:
            data[draw(st.sampled_from(SECTIONS))] = draw(st.one_of(json_values, st.dictionaries(
                st.sampled_from(["enabled", "max_attempts", "concurrency", "sinks", "degraded", "kinds", "flows",
                                 "phone_regions", "max_size", "flush_ms", "model", "token", "url", "pool"]),
                json_values, max_size=3)))
    return data


def provider_of(data: dict) -> dict | None:
    """The first provider's settings, while an earlier change left them a mapping."""
    providers = data.get("providers")
    first = providers[0] if isinstance(providers, list) and providers else None
    return first if isinstance(first, dict) else None


def model_of(data: dict) -> dict | None:
    models = (provider_of(data) or {}).get("models")
    first = models[0] if isinstance(models, list) and models else None
    return first if isinstance(first, dict) else None


def accepted_or_named(load) -> Config | None:
    try:
        return load()
    except ConfigError as exc:
        assert exc.field and isinstance(exc.field, str), exc
        return None


@PROPERTY
@given(configs())
def test_any_configuration_is_accepted_or_refused_naming_a_field(data):
    config = accepted_or_named(lambda: validate(data))
    assert config is None or isinstance(config, Config)


@PROPERTY
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)))
def test_any_top_level_value_is_accepted_or_refused_naming_a_field(data):
    accepted_or_named(lambda: validate(data))


yaml_texts = st.one_of(
    st.text(max_size=80),
    st.builds(yaml.safe_dump, configs()),
    st.sampled_from(["!!binary AAAA", "- a\n- b", "a: !!set {x, y}", "providers: 2026-01-01", "{", "a: &x [*x]",
                     "providers: [{name: !!binary AAAA}]", "var_dir: \"a\\0b\"", "? [a]\n: b"]),
)
env_values = st.dictionaries(
    st.sampled_from(["FLOWCLOUD_REDIS_URL", "FLOWCLOUD_METRICS_PORT", "FLOWCLOUD_WORKER__CONCURRENCY",
                     "FLOWCLOUD_RETRY__MAX_ATTEMPTS", "FLOWCLOUD_PROVIDERS", "FLOWCLOUD_CACHE__ENABLED",
                     "FLOWCLOUD_RETRY", "FLOWCLOUD_VAR_DIR", "FLOWCLOUD_MASK__AT_SUBMIT", "FLOWCLOUD_A__B__C"]),
    st.text(max_size=12), max_size=3)


@FEWER
@given(yaml_texts, env_values)
def test_any_file_and_environment_load_or_are_refused_naming_a_field(tmp_path_factory, text, env):
    path = tmp_path_factory.mktemp("fuzz") / "flowcloud.yaml"
    path.write_text(text, encoding="utf-8")
    accepted_or_named(lambda: load_config({**env, "FLOWCLOUD_CONFIG": str(path)}))


# -- submit() and its options: the real client on the session's Redis; no worker runs them

OPTION_NAMES = ["model", "flow", "max_tokens", "system", "cache", "priority", "temperature", "top_p", "stop",
                "seed", "presence_penalty", "frequency_penalty", "response_format", "n", "tools", "api_key"]
prompts = st.one_of(
    st.text(max_size=30),
    st.lists(maybe({"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]),
                    "content": st.text(max_size=20)}), max_size=3),
    python_values,
)
options = st.dictionaries(st.one_of(st.sampled_from(OPTION_NAMES), st.from_regex(r"[a-z_]{1,10}", fullmatch=True)),
                          st.one_of(python_values, st.sampled_from(["gpt-4o-mini", "text-embedding-3-small", "x"])),
                          max_size=4)


def submitted_or_refused(submit) -> Any:
    try:
        return submit()
    except FlowcloudError:
        return None


@PROPERTY
@given(prompts, options)
def test_submit_queues_or_refuses_with_a_flowcloud_error(prompt, kwargs):
    # Off unless the case sets it: a cached answer would finish the job without queueing it.
    kwargs.setdefault("cache", False)
    job_id = submitted_or_refused(lambda: client.submit(prompt, **kwargs))
    assert job_id is None or client.status(job_id)["status"] in ("queued", "succeeded")


@FEWER
@given(st.one_of(st.lists(prompts, max_size=3), python_values), options)
def test_submit_many_queues_or_refuses_with_a_flowcloud_error(prompts_given, kwargs):
    kwargs.pop("cache", None)
    ids = submitted_or_refused(lambda: client.submit_many(prompts_given, cache=False, **kwargs))
    assert ids is None or all(isinstance(job_id, str) for job_id in ids)


@FEWER
@given(python_values, st.one_of(st.none(), python_values), st.one_of(st.none(), python_values))
def test_embed_and_summarize_queue_or_refuse_with_a_flowcloud_error(text, model, flow):
    submitted_or_refused(lambda: client.embed(text, model=model, flow=flow))
    submitted_or_refused(lambda: client.summarize(text, model=model, flow=flow))


@FEWER
@given(st.one_of(json_values, st.text(max_size=20), st.just({"data": {"nodes": []}})), python_values)
def test_submit_flow_queues_or_refuses_with_a_flowcloud_error(tmp_path_factory, flow_json, input_value):
    submitted_or_refused(lambda: client.submit_flow(flow_json, input_value))
    path = tmp_path_factory.mktemp("flow") / "flow.json"
    path.write_text(json.dumps(flow_json))
    submitted_or_refused(lambda: client.submit_flow(path, "hi"))


# -- every adapter's response parser: arbitrary JSON (and bytes) in, an answer or a ProviderError out

def adapter(kind: str, **extra):
    config = ProviderConfig(**{"name": "fuzz", "kind": kind, "base_url": "http://127.0.0.1:9", "allow_private": True,
                               "models": [{"name": "m"}, {"name": "e", "kind": "embedding"}], **extra})
    return build_provider(config, pool_size=1)


def answering(provider, body: Any) -> None:
    """Give the adapter's transport seam (``post``, ``get``, ``request``: the HTTP boundary, not the parsers
    under test) one answer: ``body`` as JSON, or as bytes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    provider.post = provider.get = lambda *args: json_object(Reply(200, {}, raw), provider.name)
    provider.request = lambda *args, **kwargs: Reply(200, {}, raw)


OPENAI, AZURE = adapter("openai"), adapter("azure", base_url="https://x.openai.azure.com", api_version="2024-10-21")
ANTHROPIC = adapter("anthropic", base_url="https://api.anthropic.com")
usage = maybe({name: st.one_of(st.integers(-5, 10 ** 6), st.floats(), st.text(max_size=4), st.just(float("inf")))
               for name in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                            "cache_read_input_tokens", "cache_creation_input_tokens", "prompt_cache_hit_tokens")}
              | {"prompt_tokens_details": maybe({"cached_tokens": st.integers(-5, 100)})})
choice = maybe({"index": st.integers(-1, 3), "message": maybe({"content": st.text(max_size=8), "role": scalars}),
                "text": st.text(max_size=8), "finish_reason": st.sampled_from(["stop", "length"])})
chat_bodies = maybe({"choices": st.lists(choice, max_size=3), "usage": usage, "model": st.text(max_size=6),
                     "id": st.text(max_size=6)})
embedding_bodies = maybe({"data": st.lists(maybe({"index": st.integers(-1, 3),
                                                  "embedding": st.lists(st.floats(), max_size=3)}), max_size=3),
                          "usage": usage})
message_bodies = maybe({"content": st.lists(maybe({"type": st.just("text"), "text": st.text(max_size=8)}), max_size=3),
                        "stop_reason": st.sampled_from(["end_turn", "max_tokens", "refusal"]), "usage": usage,
                        "model": st.text(max_size=6), "id": st.text(max_size=6)})
model_entry = maybe({"id": st.text(max_size=10), "deprecated": st.booleans(), "status": st.just("deprecated"),
                     "lifecycle_status": st.just("retiring"), "deprecation_date": st.integers(-5, 10 ** 12),
                     "deprecation": maybe({"inference": st.one_of(st.integers(), st.floats())}),
                     "aliases": st.lists(st.text(max_size=5), max_size=2)})
model_lists = maybe({"data": st.lists(model_entry, max_size=3), "has_more": st.booleans(),
                     "last_id": st.text(max_size=5)})


def parsed_or_classified(parse) -> Any:
    try:
        return parse()
    except ProviderError as exc:
        assert str(exc) and exc.kind, exc
        return None


def well_formed_usage(usage: Usage) -> None:
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    assert all(type(n) is int and n >= 0 for n in counts), usage
    assert usage.cached_tokens <= usage.prompt_tokens, usage


def well_formed(completion: Completion) -> None:
    assert isinstance(completion.text, str) and isinstance(completion.model, str), completion
    assert completion.finish_reason is None or isinstance(completion.finish_reason, str), completion
    assert completion.request_id is None or isinstance(completion.request_id, str), completion
    well_formed_usage(completion.usage)


@PROPERTY
@given(st.one_of(chat_bodies, json_values), st.integers(1, 3))
def test_openai_and_azure_answers_parse_or_are_malformed(body, prompts_sent):
    for provider in (OPENAI, AZURE):
        answering(provider, body)
        found = parsed_or_classified(lambda: provider.chat([{"role": "user", "content": "hi"}], "m"))
        if found is not None:
            well_formed(found)
        found = parsed_or_classified(lambda: provider.complete(["p"] * prompts_sent, "m"))
        assert found is None or len(found) == prompts_sent
        for completion in found or []:
            well_formed(completion)


@PROPERTY
@given(st.one_of(embedding_bodies, json_values), st.integers(1, 3))
def test_embedding_answers_parse_or_are_malformed(body, inputs):
    answering(OPENAI, body)
    found = parsed_or_classified(lambda: OPENAI.embed(["x"] * inputs, "e"))
    if found is not None:
        assert isinstance(found, Embeddings) and len(found.vectors) == inputs
        assert all(isinstance(x, float | int) and math.isfinite(x) for v in found.vectors for x in v), found
        well_formed_usage(found.usage)


@PROPERTY
@given(st.one_of(message_bodies, json_values))
def test_anthropic_answers_parse_or_are_malformed(body):
    answering(ANTHROPIC, body)
    found = parsed_or_classified(lambda: ANTHROPIC.chat([{"role": "user", "content": "hi"}], "m"))
    if found is not None:
        well_formed(found)


@PROPERTY
@given(st.one_of(model_lists, json_values))
def test_model_lists_parse_or_are_malformed(body):
    for provider in (OPENAI, AZURE, ANTHROPIC):
        answering(provider, body)
        served = parsed_or_classified(provider.models)
        for model in served or []:
            assert isinstance(model, ServedModel) and isinstance(model.id, str), model
            assert all(isinstance(name, str) for name in model.names), model
            assert model.deprecation_date is None or isinstance(model.deprecation_date, str), model


@PROPERTY
@given(st.one_of(usage, json_values))
def test_usage_parses_or_is_malformed(counts):
    for shape in (openai.USAGE, anthropic.USAGE):
        found = parsed_or_classified(lambda: OPENAI.token_counts({"usage": counts}, *shape))
        if found is not None:
            well_formed_usage(found)


batch_lines = maybe({"custom_id": st.text(max_size=5), "response": maybe({
    "status_code": st.integers(100, 600), "request_id": st.text(max_size=4),
    "body": st.one_of(chat_bodies, maybe({"error": maybe({"message": st.text(max_size=5)})}))}),
    "error": maybe({"code": st.sampled_from(["batch_expired", "batch_cancelled", "x"]), "message": scalars})})
batch_bodies = maybe({"id": st.text(max_size=5), "status": st.sampled_from(["completed", "in_progress", "failed"]),
                      "output_file_id": st.text(max_size=4), "error_file_id": st.text(max_size=4),
                      "request_counts": st.dictionaries(st.text(max_size=5), scalars, max_size=2),
                      "errors": maybe({"data": st.lists(maybe({"line": st.integers(), "message": scalars}))})})


@PROPERTY
@given(st.one_of(batch_lines, json_values))
def test_batch_result_lines_parse_or_are_classified(line):
    batch = OPENAI.batch_api()
    result = parsed_or_classified(lambda: batch.read_result(line)) if isinstance(line, dict) else None
    if result is not None:
        assert isinstance(result, RequestResult) and (result.completion is None) != (result.error is None)
        if result.completion is not None:
            well_formed(result.completion)


@PROPERTY
@given(st.one_of(batch_bodies, json_values))
def test_batch_descriptions_parse_or_are_malformed(body):
    batch = OPENAI.batch_api()
    answering(OPENAI, body)
    info = parsed_or_classified(lambda: batch.get("b"))
    if info is not None:
        assert isinstance(info, BatchInfo) and isinstance(info.id, str) and info.status
        assert all(isinstance(f, str) for f in (info.output_file_id, info.error_file_id) if f is not None), info
        assert all(isinstance(e, str) for e in info.errors), info
        parsed_or_classified(lambda: batch.results(info))


raw_bodies = st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode), json_values.map(
    lambda v: json.dumps(v).encode()), st.sampled_from([deep(5000), b"NaN", b"[Infinity]", b"\xff\xfe{}", b""]))


@PROPERTY
@given(raw_bodies, st.integers(100, 599), st.dictionaries(st.sampled_from(
    ["retry-after", "retry-after-ms", "x-request-id", "x-ratelimit-remaining-requests"]), st.text(max_size=12)))
def test_raw_answers_decode_or_are_classified(raw, status, headers):
    reply = Reply(status, headers, raw)
    body = parsed_or_classified(lambda: json_object(reply, "fuzz"))
    assert body is None or isinstance(body, dict)
    if status >= 400:
        error = status_error(reply, "fuzz", None)
        assert isinstance(error, ProviderError) and error.status == status
        assert error.retry_after is None or (math.isfinite(error.retry_after) and error.retry_after >= 0), error
    answering(OPENAI, raw)
    for line_file in (raw, raw + b"\n" + raw):
        OPENAI.request = lambda *args, **kwargs: Reply(200, {}, line_file)
        parsed_or_classified(lambda: OPENAI.batch_api().content("f"))


@PROPERTY
@given(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=5), max_size=3).map(json.dumps),
                 st.just(deep(5000).decode()), st.just("```json\n" + deep(3000).decode() + "\n```")),
       st.integers(0, 4))
def test_packed_replies_unpack_or_are_refused(reply, count):
    answers = unpack_reply(reply, count)
    assert answers is None or (len(answers) == count and all(isinstance(a, str) for a in answers))


# -- the SSRF guard and the masker: the edges their own files' properties leave

def hostile_resolver(host: str, port: int, *args, **kwargs) -> list[tuple]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]


@PROPERTY
@given(st.one_of(st.text(max_size=40), st.from_regex(r"https?://[\w.\[\]:%-]{0,30}(:\d{0,6})?/?", fullmatch=True)),
       st.booleans())
def test_a_written_url_is_judged_without_resolving_or_refused(url, allow_private):
    guard = Guard("fuzz", allow_private=allow_private, resolver=hostile_resolver)
    try:
        found = guard.check_written(url)
    except AddressRefused as refused:
        assert refused.rule
        return
    assert found is None or found.addresses


@PROPERTY
@given(st.text(max_size=30), st.integers(-10, 70_000), st.booleans())
def test_any_host_and_port_are_judged_or_refused(host, port, allow_private):
    guard = Guard("fuzz", allow_private=allow_private, resolver=hostile_resolver)
    try:
        found = guard.check_host(host, port)
    except (AddressRefused, socket.gaierror):
        return
    assert all(address.is_global or allow_private for address in found.addresses), found


MASK = MaskSettings()
MASKER = masker_for(MASK)
mask_texts = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(
    ["alice@example.com", "13800138000", "4111 1111 1111 1111", "GB82WEST12345698765432", "<EMAIL_1>", "10.1.2.3",
     "sk-" + "a" * 40, " ", "\n"])), min_size=1, max_size=6).map("".join)


@FEWER
@given(st.lists(mask_texts, min_size=1, max_size=3), st.one_of(st.none(), st.text(max_size=5)), st.text(max_size=60))
def test_masked_jobs_restore_and_their_previews_show_no_masked_value(texts, flow, answer):
    messages = [{"role": "user", "content": text} for text in texts if text.strip()] or [{"role": "user", "content": "x"}]
    spec = build_spec(messages, flow=flow)
    masked, placeholders = mask_spec(spec, MASKER)
    assert [placeholders.restore(m.content) for m in masked.messages] == [m.content for m in spec.messages]
    # An answer holding no placeholder of this job's comes back as the model wrote it.
    if not any(placeholder in answer for placeholder in (placeholders.placeholder(v) for v in placeholders.values())):
        assert placeholders.restore(answer) == answer
    preview = masked_preview(spec, MASK)
    head = " ".join(spec.messages[-1].content.split())[:160]  # what a preview is made of
    found = [head[f.start:f.end] for f in MASKER.find(head)]
    assert not [value for value in found if value in preview], preview

