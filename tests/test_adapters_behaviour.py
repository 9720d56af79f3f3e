"""The same behaviour from every adapter: OpenAI's, Anthropic's and Azure's, each against the simulator
speaking its API over real HTTP, then the OpenAI and Anthropic adapters against fakellm, a mock
server written by others, as a second opinion on the wire formats."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import CANARY_KEY, KEY_ENV, free_port
from flowcloud.simulator import answer_for
from flowcloud.workers.core.config import ProviderConfig, validate
from flowcloud.workers.core.errors import (
    AuthenticationFailed,
    BadRequest,
    Conflict,
    InvalidJob,
    MalformedResponse,
    NotFound,
    PermissionDenied,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeout,
    RateLimited,
    RequestTimeout,
    ServerError,
    UnprocessableRequest,
    Unsupported,
)
from flowcloud.workers.providers import Capability, build_provider

MODEL = "gpt-4o-mini"
PRICES = {"input_per_mtok": 0.15, "output_per_mtok": 0.60}
KINDS = ("openai", "anthropic", "azure")


def provider_config(kind: str, simulator_url: str, more_models: tuple[dict, ...] = (), **extra) -> ProviderConfig:
    """A provider of ``kind`` on the simulator: OpenAI's root ends in /v1, Anthropic's and Azure's do not."""
    root = simulator_url.removesuffix("/v1")
    settings = {
        "openai": {"base_url": simulator_url},
        "anthropic": {"base_url": root},
        "azure": {"base_url": root, "api_version": "2024-10-21"},
    }[kind]
    model = {"name": MODEL, **PRICES, **({"deployment": "dep-4o-mini"} if kind == "azure" else {})}
    return ProviderConfig(name=f"sim-{kind}", kind=kind, allow_private=True, api_key_env=KEY_ENV, timeout={"connect": 2, "read": 1},
                          models=[model, *more_models], **settings, **extra)


@pytest.fixture(params=KINDS)
def adapter(request, simulator):
    provider = build_provider(provider_config(request.param, simulator.url), pool_size=4)
    yield provider
    provider.close()


def ask(provider, text: str, system: str | None = None, **params):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return provider.chat(messages, MODEL, **params)


def test_an_answer_with_its_usage_cost_and_request_id(adapter, tag):
    prompt = f"hello {tag}"
    completion = ask(adapter, prompt, system="Answer briefly.")
    assert completion.text == answer_for(prompt)
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.finish_reason == "stop" and completion.request_id
    expected = (completion.usage.prompt_tokens * 0.15 + completion.usage.completion_tokens * 0.60) / 1e6
    assert adapter.cost(MODEL, completion.usage) == pytest.approx(expected)


def test_generation_options_reach_the_api_under_its_own_names(adapter, tag):
    # The simulator refuses fields an API does not know (Anthropic's has stop_sequences, not stop).
    completion = ask(adapter, f"{tag} options", temperature=0.2, top_p=0.9, stop=["\n\n"], max_tokens=3)
    assert completion.finish_reason == "length" and completion.usage.completion_tokens <= 3


@pytest.mark.parametrize("header, seconds", [("retry-after=2", 2.0), ("retry-after-ms=1500", 1.5)])
def test_a_429_is_rate_limited_with_its_retry_after(adapter, tag, header, seconds):
    with pytest.raises(RateLimited) as caught:
        ask(adapter, f"{tag} [[sim:429;{header}]]")
    assert caught.value.retryable and caught.value.retry_after == pytest.approx(seconds)
    assert "requests quota spent" in str(caught.value)


def test_a_retry_after_may_be_an_http_date(adapter, tag):
    with pytest.raises(RateLimited) as caught:
        ask(adapter, f"{tag} [[sim:429;retry-after-date=5]]")
    assert 3.0 <= caught.value.retry_after <= 5.0


def test_a_rejected_key_is_an_authentication_failure_that_never_shows_the_key(adapter, tag, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-not-the-right-one-" + tag)
    with pytest.raises(AuthenticationFailed, match="sim-.* rejected the API key") as caught:
        ask(adapter, tag)
    assert not caught.value.retryable and tag not in str(caught.value)


@pytest.mark.parametrize(
    "fault, error_class, retryable",
    [
        ("400", BadRequest, False),
        ("401", AuthenticationFailed, False),
        ("403", PermissionDenied, False),
        ("404", NotFound, False),
        ("413", ProviderStatusError, False),
        ("422", UnprocessableRequest, False),
        ("408", RequestTimeout, True),
        ("409", Conflict, True),
        ("500", ServerError, True),
        ("503", ServerError, True),
        ("529", ServerError, True),  # Anthropic's overloaded_error
        ("slow;delay=3", ProviderTimeout, True),
        ("malformed", MalformedResponse, True),
        ("empty", MalformedResponse, True),
        ("reset", ProviderConnectionError, True),
    ],
)
def test_failures_land_in_the_one_error_tree(adapter, tag, fault, error_class, retryable):
    with pytest.raises(error_class) as caught:
        ask(adapter, f"{tag} [[sim:{fault}]]")
    error = caught.value
    assert type(error) is error_class and error.retryable is retryable and error.provider == adapter.name
    assert CANARY_KEY not in str(error) and CANARY_KEY not in repr(error.to_record())


def test_the_api_s_own_error_message_is_quoted(adapter, tag):
    with pytest.raises(ServerError, match="(?i)overloaded") as caught:
        ask(adapter, f"{tag} [[sim:529]]")
    assert caught.value.status == 529 and caught.value.request_id


def test_what_each_adapter_offers():
    offered = {kind: build_provider(provider_config(kind, "http://127.0.0.1:9/v1"), 1).offered for kind in KINDS}
    assert offered["openai"] == frozenset(Capability)
    assert offered["anthropic"] == {Capability.CHAT, Capability.MODELS}
    assert offered["azure"] == {Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS, Capability.MODELS}


# -- what only one API has


def test_azure_calls_go_to_the_model_s_deployment_with_its_api_version(simulator, tag):
    provider = build_provider(provider_config("azure", simulator.url), pool_size=1)
    before = simulator.stats()["by_endpoint"].get("/openai/deployments/dep-4o-mini/chat/completions", {})
    ask(provider, tag)
    after = simulator.stats()["by_endpoint"]["/openai/deployments/dep-4o-mini/chat/completions"]
    assert after.get("200", 0) == before.get("200", 0) + 1
    missing_version = requests.post(f"{simulator.root}/openai/deployments/d/chat/completions",
                                    headers={"api-key": CANARY_KEY}, json={"messages": [{"role": "user", "content": "x"}]})
    assert missing_version.status_code == 400 and "api-version" in missing_version.text


def test_azure_serves_embeddings_and_legacy_completions_through_deployments(simulator, tag):
    config = provider_config("azure", simulator.url, more_models=({"name": "text-embedding-3-small", "kind": "embedding"},))
    provider = build_provider(config, pool_size=1)
    prompts = [f"{tag} one", f"{tag} two"]
    assert [c.text for c in provider.complete(prompts, MODEL)] == [answer_for(p) for p in prompts]
    assert len(provider.embed(prompts, "text-embedding-3-small").vectors) == 2


def test_anthropic_refuses_options_and_roles_its_api_has_no_place_for(simulator, tag):
    provider = build_provider(provider_config("anthropic", simulator.url), pool_size=1)
    with pytest.raises(InvalidJob, match="takes no option seed"):
        ask(provider, tag, seed=7)
    with pytest.raises(InvalidJob, match="'tool'"):
        provider.chat([{"role": "user", "content": tag}, {"role": "tool", "content": "42"}], MODEL)
    with pytest.raises(InvalidJob, match="needs a user message"):
        provider.chat([{"role": "system", "content": tag}], MODEL)


def test_anthropic_sends_the_default_max_tokens_and_the_configured_version(simulator, tag):
    provider = build_provider(provider_config("anthropic", simulator.url, default_max_tokens=2,
                                              anthropic_version="2023-01-01"), pool_size=1)
    assert ask(provider, f"{tag} a long enough question").finish_reason == "length"
    bare = requests.post(f"{simulator.root}/v1/messages", headers={"x-api-key": CANARY_KEY},
                         json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert bare.status_code == 400 and bare.json()["error"]["type"] == "invalid_request_error"


def test_a_provider_offers_only_the_endpoints_its_preset_serves(simulator):
    config = validate({"providers": [{"name": "deepseek", "preset": "deepseek", "base_url": simulator.url,
                                      "allow_private": True,
                                      "api_key_env": KEY_ENV}], "default_model": "deepseek-chat"}).providers[0]
    provider = build_provider(config, pool_size=1)
    # The model list is no endpoint a job goes to: offered whatever the preset serves.
    assert provider.offered == {Capability.CHAT, Capability.MODELS} and not provider.supports(Capability.EMBEDDINGS)
    for call in (lambda: provider.embed(["a"], "deepseek-chat"), provider.batch_api):
        with pytest.raises(Unsupported, match="provider 'deepseek' offers no"):
            call()
    assert ask(provider, "hi there").text == answer_for("hi there")


# -- fakellm: another implementation of both wire formats

FAKELLM_RULES = """\
version: 1
defaults:
  fallback: deterministic_echo
rules:
  - name: pirate
    when:
      messages_contain: "talk like a pirate"
    respond:
      content: "Arr, the queue never sleeps."
  - name: busy
    when:
      messages_contain: "please rate limit"
    respond:
      status: 429
      error: "Slow down (fakellm)"
"""


@pytest.fixture(scope="module")
def fakellm(tmp_path_factory):
    rules = tmp_path_factory.mktemp("fakellm") / "fakellm.yaml"
    rules.write_text(FAKELLM_RULES)
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).with_name("fakellm")), "serve", "--host", "127.0.0.1",
                                "--port", str(port), "--config", str(rules)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "fakellm exited"
        try:
            if requests.get(f"{url}/_fakellm/stats", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "fakellm never answered"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(params=["openai", "anthropic"])
def fake_adapter(request, fakellm):
    base_url = fakellm + "/v1" if request.param == "openai" else fakellm
    config = ProviderConfig(name=f"fake-{request.param}", kind=request.param, base_url=base_url, allow_private=True,
                            api_key_env=KEY_ENV, timeout={"connect": 2, "read": 5}, models=[{"name": MODEL, **PRICES}])
    provider = build_provider(config, pool_size=1)
    yield provider
    provider.close()


def test_fakellm_round_trip(fake_adapter, tag):
    completion = ask(fake_adapter, f"what is new {tag}?", system="Answer briefly.")
    assert completion.text.startswith(f"[mock response for {MODEL}")
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.finish_reason == "stop" and completion.request_id
    assert fake_adapter.cost(MODEL, completion.usage) > 0


def test_fakellm_sees_the_system_prompt(fake_adapter, tag):
    # Anthropic's system prompt travels in the top-level field; fakellm reads it from there.
    completion = ask(fake_adapter, tag, system="Please talk like a pirate.")
    assert completion.text == "Arr, the queue never sleeps."


def test_fakellm_error_bodies_are_read_in_either_shape(fake_adapter, tag):
    with pytest.raises(RateLimited, match=r"answered 429: Slow down \(fakellm\)") as caught:
        ask(fake_adapter, f"{tag} please rate limit")
    assert caught.value.retryable and CANARY_KEY not in str(caught.value)
