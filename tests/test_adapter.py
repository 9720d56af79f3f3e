"""The OpenAI-compatible adapter against the simulator over real HTTP: answers, usage, cost, what an
adapter offers, and the failures only the transport sees. How every adapter classifies the
provider's failures is tests/test_adapters_behaviour.py's."""

import pytest

from tests.conftest import KEY_ENV
from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import AddressRefused, InvalidJob, ProviderConnectionError, Unsupported
from flowcloud.workers.providers import ADAPTERS, Capability, Completion, Provider, Usage, build_provider
from flowcloud.simulator import answer_for


@pytest.fixture
def provider(simulator):
    config = ProviderConfig(
        name="sim", kind="openai", base_url=simulator.url, allow_private=True, api_key_env=KEY_ENV,
        timeout={"connect": 2, "read": 1},
        models=[{"name": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.60}],
    )
    adapter = build_provider(config, pool_size=8)
    yield adapter
    adapter.close()


def test_chat_answer_usage_and_cost(provider, tag):
    prompt = f"hello {tag}"
    completion = provider.chat([{"role": "user", "content": prompt}], "gpt-4o-mini")
    assert completion.text == answer_for(prompt)
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    expected = (completion.usage.prompt_tokens * 0.15 + completion.usage.completion_tokens * 0.60) / 1e6
    assert provider.cost("gpt-4o-mini", completion.usage) == pytest.approx(expected)


def test_legacy_completions_take_a_list_of_prompts(provider, simulator, tag):
    prompts = [f"{tag} first", f"{tag} second", f"{tag} third"]
    completions = provider.complete(prompts, "gpt-4o-mini")
    assert [c.text for c in completions] == [answer_for(p) for p in prompts]
    assert len(simulator.requests_log(tag)) == 1  # one call for all three
    total = sum((c.usage for c in completions), Usage())
    assert total.prompt_tokens >= 3


def test_what_an_adapter_offers_is_discoverable_and_the_rest_is_refused_as_a_job_error(provider):
    assert all(provider.supports(capability) for capability in Capability)

    class ChatOnly(Provider):
        capabilities = frozenset({Capability.CHAT})

        def chat(self, messages: list[dict], model: str, **params) -> Completion:
            return Completion("hi", Usage(), model)

    chat_only = ChatOnly(provider.config)
    assert chat_only.supports(Capability.CHAT) and not chat_only.supports(Capability.BATCH_API)
    assert chat_only.chat([], "gpt-4o-mini").text == "hi"
    for call in (lambda: chat_only.embed(["a"], "m"), lambda: chat_only.complete(["a"], "m"), chat_only.batch_api):
        with pytest.raises(Unsupported, match="provider 'sim' offers no") as caught:
            call()
        assert isinstance(caught.value, InvalidJob) and not caught.value.retryable
    assert caught.value.to_record()["kind"] == "invalid_job" and caught.value.capability == "batch_api"


def test_an_adapter_that_claims_what_it_lacks_is_refused_when_defined():
    with pytest.raises(TypeError, match="EMBEDDINGS"):
        class Boasting(Provider):
            capabilities = frozenset({Capability.EMBEDDINGS})
    with pytest.raises(TypeError, match="batch_api = Provider.batch_api"):
        class Quiet(ADAPTERS["openai"]):  # inherits a batch_api it does not claim
            capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS})


def test_a_batched_calls_usage_splits_into_shares_that_add_up(provider):
    shares = provider.split_usage(Usage(10, 4), 3)
    assert shares == [Usage(4, 2), Usage(3, 1), Usage(3, 1)] and sum(shares, Usage()) == Usage(10, 4)


def test_embeddings_take_a_list(provider, tag):
    embeddings = provider.embed([f"{tag} a", f"{tag} b"], "text-embedding-3-small")
    assert len(embeddings.vectors) == 2 and embeddings.vectors[0] != embeddings.vectors[1]


def test_connection_refused_is_a_transport_error(tag):
    config = ProviderConfig(name="gone", kind="openai", base_url="http://127.0.0.1:9/v1",
                            allow_private=True, models=[{"name": "m"}])
    with pytest.raises(ProviderConnectionError, match="gone"):
        build_provider(config, pool_size=1).chat([{"role": "user", "content": tag}], "m")


def test_a_redirect_is_not_followed_and_the_key_stays_home(tag):
    import http.server
    import threading

    seen: list[str] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = ProviderConfig(name="moved", kind="openai", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                                allow_private=True, models=[{"name": "m"}])
        with pytest.raises(AddressRefused, match="answered 307, a redirect to 127.0.0.1: redirects are not followed"):
            build_provider(config, pool_size=1).chat([{"role": "user", "content": tag}], "m")
    finally:
        server.shutdown()
    assert seen == ["/v1/chat/completions"]
