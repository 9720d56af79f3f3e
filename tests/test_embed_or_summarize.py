"""The seed's flow, flows/embed_or_summarize.json: a short text embedded by the workers' hybrid group
(MiniLM in the worker's process within its window, the cloud past it), a long one summarized in the cloud.

The flow runs under a real `lfx run` process against a real worker (HF_HUB_OFFLINE=1)
whose cloud is the simulator, which logs every provider call.
"""

from __future__ import annotations

import pytest
import yaml

from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import use_config, validate
from tests.conftest import config_yaml
from tests.test_components import component, jobs_in_redis
from tests.test_document_pipeline import long_text
from tests.test_flows import job_records, lfx_run

FLOW = "embed_or_summarize.json"
MINILM = local_model.SENTENCE_MODEL_NAME
# About 80 estimated tokens: within MiniLM's 256-token window.
SHORT = "Workers pull jobs from the queue when they are free, and retries wait for the provider. " * 4
# About 420 estimated tokens: past MiniLM's window, short of Route by Length's 1000.
MEDIUM = "The quarterly report covers revenue, costs, hiring and the outlook for next year. " * 20


def with_embeddings(redis_url: str, sim_url: str) -> dict:
    """The test run's configuration plus MiniLM in-process and the flow's hybrid group, "embeddings"."""
    data = yaml.safe_load(config_yaml(redis_url, sim_url))
    data["providers"].append({"name": "minilm", "preset": "minilm"})
    data["model_groups"] = [{"name": "embeddings",
                             "deployments": [{"provider": "sim", "model": "text-embedding-3-small"}],
                             "hybrid": {"local": {"provider": "minilm", "model": MINILM}}}]
    return data


@pytest.fixture
def embedding_worker(tmp_path, monkeypatch, redis_server, simulator, start_worker):
    """A worker, and the `lfx run` processes after it, on the configuration with the hybrid group."""
    data = with_embeddings(redis_server.url, simulator.url)
    path = tmp_path / "flowcloud-embeddings.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("FLOWCLOUD_CONFIG", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start_worker()
    previous = use_config(validate(data))
    yield
    use_config(previous)


# The nodes on their own.

def test_embed_text_refuses_empty_text_and_queues_nothing(redis_server):
    with pytest.raises(ValueError, match="no text to embed"):
        component("embed_text.py")(text="  \n").details_response()
    assert jobs_in_redis(redis_server) == 0


def test_summary_report_says_which_tier_embedded_a_text():
    from lfx.schema.data import Data

    details = {"route": "embedded", "status": "succeeded", "text": "384-dimension vector [0.1, ...]",
               "dimensions": 384, "tier": "local", "reason": "short", "provider": "minilm", "model": MINILM,
               "tokens_in": 12, "cost_usd": 0.0, "job_id": "j1"}
    report = component("summary_report.py")(summaries=[Data(data={}), Data(data=details)])
    assert report.report_response().text == (
        "384-dimension vector [0.1, ...]\n\nEmbedded on the local tier by minilm/all-minilm-l6-v2 (short): "
        "384 dimensions, 12 tokens in, $0.000000 (job j1).")
    assert report.details_response().data == details


# The whole flow, under `lfx run`.

def test_a_short_text_is_embedded_locally_with_no_provider_call(embedding_worker, simulator, redis_server,
                                                                tmp_path, tag):
    result = lfx_run(FLOW, f"{tag}   {SHORT}", cwd=tmp_path)["result"]
    [record] = job_records(redis_server)
    assert (record["status"], record["provider"], len(record["embedding"])) == ("succeeded", "minilm", 384)
    assert record["flow"] == "embed_or_summarize" and record["route"]["hybrid"]["reason"] == "short"
    vector, how = result.split("\n\n")
    assert vector.startswith("384-dimension vector [")
    assert how == (f"Embedded on the local tier by minilm/{MINILM} (short): 384 dimensions, "
                   f"{record['usage']['prompt_tokens']} tokens in, $0.000000 (job {record['job_id']}).")
    assert simulator.requests_log(tag) == []


def test_a_text_past_the_local_window_is_embedded_in_the_cloud(embedding_worker, simulator, redis_server,
                                                               tmp_path, tag):
    result = lfx_run(FLOW, f"{tag} {MEDIUM}", cwd=tmp_path)["result"]
    [record] = job_records(redis_server)
    assert (record["status"], record["provider"], record["model"]) == ("succeeded", "sim", "text-embedding-3-small")
    assert result.endswith(f"Embedded on the cloud tier by sim/text-embedding-3-small (local window): "
                           f"{len(record['embedding'])} dimensions, {record['usage']['prompt_tokens']} tokens in, "
                           f"${record['cost_usd']:.6f} (job {record['job_id']}).")
    assert len(simulator.requests_log(tag)) == 1


def test_a_long_text_is_summarized_in_the_cloud(embedding_worker, simulator, redis_server, tmp_path, tag):
    result = lfx_run(FLOW, long_text(tag), cwd=tmp_path)["result"]
    [record] = [r for r in job_records(redis_server) if r.get("progress")]
    assert record["status"] == "succeeded" and record["flow"] == "embed_or_summarize"
    assert result.startswith(record["text"]) and "Summarized in the cloud by gpt-4o-mini: " in result
    assert not any(r.get("embedding") for r in job_records(redis_server))
