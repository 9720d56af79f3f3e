"""The local model: SmolLM2-135M-Instruct on a real llama-server, through real workers on the llamacpp preset.

Nothing here is mocked: the server is the llama-server `make local-model` built,
serving the installed GGUF on a free port, and the worker runs with
HF_HUB_OFFLINE=1, so nothing it does may come from a model hub.
"""

from __future__ import annotations

import math

import pytest
import requests
import yaml

from flowcloud import client
from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.providers import build_provider

# Each pair says one thing twice in other words; the third text of a triple is about something else.
TRIPLES = [
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch.", "Interest rates rose by half a percent."),
    ("How do I reset my password?", "I forgot my password and need to change it.",
     "The train to Paris leaves at nine."),
    ("The weather is sunny and warm today.", "It is a hot, bright day outside.", "Please send the invoice by Friday."),
]


def local_config(redis_url: str, base_url: str) -> dict:
    return {
        "redis_url": redis_url,
        "default_model": local_model.MODEL_NAME,
        "providers": [{"name": "local", "preset": "llamacpp", "base_url": base_url,
                       "timeout": {"connect": 2, "read": 60}}],
        "worker": {"pool": "threads", "concurrency": 8},
        "metrics_port": 0,
    }


@pytest.fixture
def local_worker(tmp_path, redis_server, llama_server, start_worker):
    """A worker whose only provider is the local llama-server; the client checks models against the same file."""
    data = local_config(redis_server.url, llama_server.url)
    path = tmp_path / "flowcloud-local.yaml"
    path.write_text(yaml.safe_dump(data))
    start_worker(env={"FLOWCLOUD_CONFIG": str(path), "HF_HUB_OFFLINE": "1"})
    previous = use_config(validate(data))
    yield llama_server
    use_config(previous)


def test_the_preset_lists_what_the_server_answers_to(llama_server):
    provider = validate(local_config("redis://127.0.0.1:6379/0", llama_server.url)).providers[0]
    served = {name for model in build_provider(provider, pool_size=1).models() for name in model.names}
    assert {m.name for m in provider.models} == served == {local_model.MODEL_NAME, local_model.EMBEDDING_MODEL_NAME}
    assert all(m.input_per_mtok == m.output_per_mtok == 0 for m in provider.models)


def test_a_chat_job_is_answered_by_the_local_model(local_worker, tag):
    prompt = f"What is the capital of France? Answer in one word. ({tag})"
    record = client.result(client.submit(prompt, max_tokens=12, cache=False), timeout=60)
    assert (record["status"], record["provider"], record["model"]) == ("succeeded", "local", local_model.MODEL_NAME)
    assert record["text"].strip() and "simulated" not in record["text"].lower()
    # The usage is the server's own count: the same request made directly is counted the same.
    direct = requests.post(f"{local_worker.url}/chat/completions", timeout=30, json={
        "model": local_model.MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1})
    assert record["usage"]["prompt_tokens"] == direct.json()["usage"]["prompt_tokens"]
    assert 0 < record["usage"]["completion_tokens"] <= 12 and record["cost_usd"] == 0


def test_local_embeddings_put_paraphrases_closer_than_unrelated_texts(local_worker):
    texts = [text for triple in TRIPLES for text in triple]
    records = client.wait_all(client.embed(texts, model=local_model.EMBEDDING_MODEL_NAME), timeout=60)
    assert {(r["status"], r["provider"]) for r in records} == {("succeeded", "local")}
    vectors = [r["embedding"] for r in records]
    for i in range(0, len(vectors), 3):
        anchor, paraphrase, unrelated = vectors[i:i + 3]
        assert cosine(anchor, paraphrase) > cosine(anchor, unrelated), TRIPLES[i // 3]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_without_the_model_the_stack_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWCLOUD_CACHE", str(tmp_path))
    monkeypatch.setenv("FLOWCLOUD_LLAMA_SERVER", str(tmp_path / "no-such-binary"))
    monkeypatch.setenv("FLOWCLOUD_LOCAL_MODEL", str(tmp_path / "no-such.gguf"))
    assert local_model.find() is None
    assert local_model.missing() == ("llama-server and SmolLM2-135M-Instruct.Q4_1.gguf not found "
                                     "(install with `make local-model`)")
