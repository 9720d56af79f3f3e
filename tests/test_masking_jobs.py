"""Masking through real workers: what reaches the "cloud" (the simulator's request log), what the caller gets back
with restoring on and off, what Redis and Flower's previews hold, and a masker that fails closed."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
import yaml

from flowcloud import client
from flowcloud.workers import runtime as worker_runtime
from flowcloud.workers.core.config import use_config, validate
from flowcloud.workers.core.config_sections import MaskSettings
from flowcloud.workers.core.masking import WITHHELD, masked_preview
from flowcloud.workers.pipeline import CHAT, Ending, Job
from flowcloud.workers.runtime import Runtime
from tests.conftest import KEY_ENV, config_yaml, free_port, run_cli
from tests.test_metrics import scrape_when_idle, total

EMAIL, EMAIL_2 = "li.wei@example.com", "ops@example.org"
PHONE = "13812345678"
CARD, BAD_CARD = "4111 1111 1111 1111", "4111 1111 1111 1112"
CN_ID, BAD_CN_ID = "11010519491231002X", "110105194912310021"
IBAN, BAD_IBAN = "GB82WEST12345698765432", "GB83WEST12345698765432"
SECRET = "sk-proj-Q2hhbmdlTWVQbGVhc2UxMjM0NTY3OA"
ORIGINALS = [EMAIL, EMAIL_2, PHONE, CARD, CN_ID, IBAN, SECRET, "+44 20 7946 0958", "10.1.2.3"]


def mask_config(redis_server, simulator, mask: dict) -> dict:
    """The tests' configuration with ``mask``, and a provider of one's own (``cloud: false``) on the simulator."""
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    data["providers"].append({"name": "own", "kind": "openai", "base_url": simulator.url, "allow_private": True, "api_key_env": KEY_ENV,
                              "cloud": False, "timeout": {"connect": 2, "read": 1.5},
                              "models": [{"name": "own-chat"}]})
    return {**data, "mask": mask}


@pytest.fixture
def masking(tmp_path, redis_server, simulator):
    """Puts a mask configuration in place for this process and returns the env that gives it to a worker."""
    saved = []

    def configure(mask: dict, client_too: bool = True) -> dict[str, str]:
        data = mask_config(redis_server, simulator, mask)
        path = tmp_path / f"flowcloud-mask-{len(saved)}.yaml"
        path.write_text(yaml.safe_dump(data))
        saved.append(use_config(validate(data) if client_too else None))
        return {"FLOWCLOUD_CONFIG": str(path)}

    yield configure
    if saved:
        use_config(saved[0])


def sent(simulator, tag: str) -> str:
    """Every prompt of this test the simulator received, as it logged them."""
    return "\n".join(call["prompt"] for call in simulator.requests_log(tag))


def everything_in(redis_client) -> str:
    """Every value in Redis as text, Celery messages' bodies decoded."""
    texts = []
    for key in redis_client.scan_iter():
        kind = redis_client.type(key)
        values = {b"string": lambda: [redis_client.get(key)], b"list": lambda: redis_client.lrange(key, 0, -1),
                  b"hash": lambda: list(redis_client.hgetall(key).values()), b"set": lambda: redis_client.smembers(key),
                  b"zset": lambda: redis_client.zrange(key, 0, -1)}.get(kind, lambda: [])()
        for value in values:
            text = value.decode(errors="replace")
            texts.append(text)
            try:
                message = json.loads(text)
                texts.append(base64.b64decode(message["body"]).decode(errors="replace"))
            except (ValueError, KeyError, TypeError):
                pass
    return "\n".join(texts)


def queued_messages(redis_client) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange("flowcloud", 0, -1)]


def test_a_cloud_gets_masked_prompts_and_checksums_that_fail_stay(masking, start_worker, simulator, tag):
    port = free_port()
    worker = start_worker(env={**masking({"flows": {"public": False}}), "FLOWCLOUD_METRICS_PORT": str(port)})
    prompts = [f"{tag} mail {EMAIL} phone {PHONE} card {CARD} not {BAD_CARD} id {CN_ID} not {BAD_CN_ID}",
               f"{tag} iban {IBAN} not {BAD_IBAN} key {SECRET} intl +44 20 7946 0958 ip 10.1.2.3 cc {EMAIL_2}"]
    records = client.wait_all([client.submit(p) for p in prompts], timeout=60)
    assert [r["status"] for r in records] == ["succeeded"] * 2
    assert records[0]["text"].startswith(f"Simulated answer to: {tag} mail <EMAIL_1> phone <PHONE_1> card <CARD_1>")

    cloud = sent(simulator, tag)
    assert not [value for value in ORIGINALS if value in cloud]
    for kept in (BAD_CARD, BAD_CN_ID, BAD_IBAN):
        assert kept in cloud
    assert f"mail <EMAIL_1> phone <PHONE_1> card <CARD_1> not {BAD_CARD} id <CN_ID_1> not {BAD_CN_ID}" in cloud
    assert f"iban <IBAN_1> not {BAD_IBAN} key <SECRET_1> intl <PHONE_1> ip <IP_1> cc <EMAIL_1>" in cloud
    # What the worker logged of these jobs is masked too (the previews in their messages).
    assert not [value for value in ORIGINALS if value in worker.log()]

    # Exempt: a provider of one's own, and a flow switched off.
    own = client.result(client.submit(f"{tag} own {EMAIL}", model="own-chat"), timeout=30)
    public = client.result(client.submit(f"{tag} public {EMAIL}", flow="public"), timeout=30)
    assert own["status"] == public["status"] == "succeeded"
    assert f"{tag} own {EMAIL}" in sent(simulator, tag) and f"{tag} public {EMAIL}" in sent(simulator, tag)

    _, samples = scrape_when_idle(port)
    masked = {kind: total(samples, "flowcloud_masked_entities_total", kind=kind)
              for kind in ("EMAIL", "PHONE", "CARD", "CN_ID", "IBAN", "SECRET", "IP")}
    assert masked == {"EMAIL": 2, "PHONE": 2, "CARD": 1, "CN_ID": 1, "IBAN": 1, "SECRET": 1, "IP": 1}


def test_embeddings_summaries_and_batched_prompts_are_masked_and_restored_per_job(masking, start_worker, simulator,
                                                                                   tag):
    start_worker(env=masking({"restore": True}))
    emails = [f"user{i}@example.com" for i in range(6)]
    batched = client.wait_all(client.submit_many([f"{tag} b{i} {e}" for i, e in enumerate(emails)],
                                                 model="gpt-3.5-turbo-instruct"), timeout=60)
    # Each job of a shared call gets its own value back, though all of them sent <EMAIL_1>.
    assert [r["text"].removeprefix("Simulated answer to: ").rsplit(" [", 1)[0] for r in batched] == \
        [f"{tag} b{i} {e}" for i, e in enumerate(emails)]
    assert max(r.get("batch_size") or 1 for r in batched) > 1
    embedded = client.result(client.embed(f"{tag} embed from {EMAIL}"), timeout=30)
    # A summary's calls are jobs of their own: masked like any other.
    summary = client.result(client.summarize(f"{tag} The report was sent by {EMAIL} from 10.1.2.3."), timeout=60)
    assert embedded["status"] == summary["status"] == "succeeded"

    calls = simulator.requests_log(tag)
    assert {"/v1/completions", "/v1/embeddings", "/v1/chat/completions"} <= {c["path"] for c in calls}
    cloud = sent(simulator, tag)
    assert not [value for value in emails + [EMAIL, "10.1.2.3"] if value in cloud]
    assert f"{tag} embed from <EMAIL_1>" in cloud and "<IP_1>" in cloud


def test_restore_puts_the_originals_back_only_when_asked(masking, start_worker, simulator, tag):
    start_worker(env=masking({"restore": True}))
    restored = client.result(client.submit(f"{tag} on {EMAIL} {PHONE}"), timeout=30)
    assert restored["text"].startswith(f"Simulated answer to: {tag} on {EMAIL} {PHONE} [")
    assert f"{tag} on <EMAIL_1> <PHONE_1>" in sent(simulator, tag) and EMAIL not in sent(simulator, tag)


def test_a_failing_detector_fails_the_job_and_nothing_reaches_the_provider(masking, start_worker, simulator, tag):
    # The worker's masker runs a detector the configuration names, which raises on every text; this
    # process (the client) does not mask, so the job reaches the worker unmasked.
    env = masking({"detectors": [{"kind": "BROKEN", "function": "tests.mask_detectors:broken"}]}, client_too=False)
    worker = start_worker(env=env)
    failed = client.result(client.submit(f"{tag} mail {EMAIL}"), timeout=30)
    assert failed["status"] == "failed"
    assert failed["error"]["kind"] == "masking_failed" and not failed["error"]["retryable"]
    assert failed["error"]["message"] == "detector BROKEN raised RuntimeError"
    embedded = client.result(client.embed(f"{tag} embed {EMAIL}"), timeout=30)
    assert embedded["status"] == "failed" and embedded["error"]["kind"] == "masking_failed"
    assert simulator.requests_log(tag) == []
    assert "detector crashed on" not in worker.log()  # the detector's own message quotes the text


def test_at_submit_nothing_unmasked_enters_redis(masking, redis_server, tag):
    masking({"at_submit": True})
    ids = [client.submit(f"{tag} mail {EMAIL} card {CARD}"), client.embed(f"{tag} embed {PHONE}"),
           client.summarize(f"{tag} report from {CN_ID}")]
    everything = everything_in(redis_server.client())
    assert tag in everything and "<EMAIL_1>" in everything and "<CN_ID_1>" in everything
    assert not [value for value in (EMAIL, CARD, PHONE, CN_ID) if value in everything]
    assert len(ids) == 3


def test_flower_sees_a_masked_preview_when_the_worker_masks(masking, redis_server, tag):
    masking({})
    client.submit(f"{tag} mail {EMAIL} now")
    [message] = queued_messages(redis_server.client())
    assert message["headers"]["argsrepr"].startswith(f"'{tag} mail <EMAIL_1> now'")
    # The message itself carries the prompt as given: the worker masks it before any cloud sees it.
    assert EMAIL in base64.b64decode(message["body"]).decode()


def test_a_failing_detector_at_submit_queues_nothing(masking, redis_server, tag):
    from flowcloud.workers.core.errors import MaskingFailed

    masking({"at_submit": True, "detectors": [{"kind": "BROKEN", "function": "tests.mask_detectors:broken"}]})
    with pytest.raises(MaskingFailed, match="detector BROKEN raised RuntimeError"):
        client.submit(f"{tag} mail {EMAIL}")
    assert EMAIL not in everything_in(redis_server.client())



@pytest.fixture
def restoring_runtime(redis_server, simulator):
    """A worker's runtime in this process, masking and restoring, put in place as the current one."""
    built = Runtime.build(validate(mask_config(redis_server, simulator, {"restore": True})), calls_in_flight=4)
    replaced = worker_runtime.install(built)
    yield built
    worker_runtime.install(replaced)
    built.close()


def chat_job(prompt: str) -> Job:
    return Job(str(uuid.uuid4()), {"messages": [{"role": "user", "content": prompt}]}, CHAT)


def test_the_cache_never_hands_one_callers_restored_answer_to_another(restoring_runtime, simulator, tag):
    first, other, again = (chat_job(f"{tag} mail {email}") for email in (EMAIL, EMAIL_2, EMAIL))
    answers = [restoring_runtime.pipeline.run(job) for job in (first, other, again)]
    assert [a.ending for a in answers] == [Ending.SUCCEEDED, Ending.SUCCEEDED, Ending.CACHED]
    assert EMAIL in answers[0].answer.value and EMAIL_2 in answers[1].answer.value
    assert EMAIL in answers[2].cached["text"]  # its own prompt's answer, as its own caller got it
    # The provider saw the same masked prompt twice: the cache keyed them apart on what was submitted.
    assert [call["prompt"] for call in simulator.requests_log(tag)] == [f"{tag} mail <EMAIL_1>"] * 2


def test_a_job_sent_again_is_previewed_masked_and_withheld_when_masking_fails(restoring_runtime, tag):
    from flowcloud.tasks.attempt import preview

    job = chat_job(f"{tag} mail {EMAIL}")
    size = f"({len(tag) + 6 + len(EMAIL)} chars, model=default)"
    assert preview(job) == f"'{tag} mail <EMAIL_1>' {size}"
    broken = MaskSettings(detectors=[{"kind": "BROKEN", "function": "tests.mask_detectors:broken"}])
    assert masked_preview(job.kind.parse(job.request), broken) == f"{WITHHELD!r} {size}"


def test_config_check_refuses_a_detector_it_cannot_import(masking):
    env = masking({"detectors": [{"kind": "TICKET", "function": "tests.mask_detectors:nowhere"}]}, client_too=False)
    checked = run_cli("config", "check", env=env)
    assert checked.returncode == 2
    assert "mask.detectors.0.function: cannot import 'tests.mask_detectors:nowhere'" in checked.stderr + checked.stdout
    fine = run_cli("config", "check", env=masking({"detectors": [
        {"kind": "TICKET", "function": "tests.mask_detectors:tickets"}]}, client_too=False))
    assert fine.returncode == 0 and "configuration OK" in fine.stdout


def test_a_batch_api_run_stores_and_sends_its_documents_masked(redis_server, simulator, tag):
    from flowcloud.simulator.answers import answer_for
    from flowcloud.workers.batch_runs import run as batch_api
    from flowcloud.workers.core.chunking import clean_text, map_prompt
    from tests.test_batch_api import ROUND_DELAY, drive

    config = validate(mask_config(redis_server, simulator, {}))
    replaced_config, replaced_runtime = use_config(config), worker_runtime.install(Runtime.build(config))
    sim_config = f"{simulator.root}/_sim/config"
    before = requests.get(sim_config, timeout=10).json()
    requests.post(sim_config, json={"batch_delay": ROUND_DELAY}, timeout=10)
    try:
        batch_api.start(f"run-{tag}", [batch_api.BatchDocument("note.txt", f"{tag} written by {EMAIL} at {PHONE}.")],
                        "gpt-4o-mini")
        stored = everything_in(redis_server.client())
        assert f"{tag} written by <EMAIL_1> at <PHONE_1>." in stored and EMAIL not in stored
        state = drive(batch_api, f"run-{tag}")
    finally:
        requests.post(sim_config, json={"batch_delay": before["batch_delay"]}, timeout=10)
        worker_runtime.install(replaced_runtime).close()
        use_config(replaced_config)
    # The answer's digest is of the prompt the provider read: the masked one.
    assert state.results["note.txt"].text == answer_for(map_prompt(clean_text(f"{tag} written by <EMAIL_1> at <PHONE_1>.")))
