"""Input limits: every limit refused at submit with the setting named and nothing in Redis; per-flow
overrides; the CLI and a Langflow node saying why; and a real worker failing, alone, a job that a client
did not check (its message sent straight through Celery)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import yaml

from flowcloud import client
from flowcloud.workers.core.config import load_config, use_config, validate
from flowcloud.workers.core.errors import ConfigError, InvalidJob, LimitExceeded
from flowcloud.workers.core.limits import LimitSettings
from flowcloud.workers.core.records import JobRecord, JobStatus, JobStore
from tests.conftest import config_yaml, run_cli
from tests.test_components import component

LIMITS = {"prompt_chars": 40, "messages": 3, "batch": 4, "max_tokens": 500, "summary_chars": 60,
          "flows": {"tight": {"prompt_chars": 10, "batch": 2}, "roomy": {"prompt_chars": 1000, "max_tokens": 2000}}}
SMALL_WINDOW = {"name": "small-window", "context_tokens": 1000}  # providers.0.models.4


def limits_config(redis_server, simulator, **extra) -> dict:
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    data["providers"][0]["models"].append(SMALL_WINDOW)
    return {**data, "limits": LIMITS, **extra}


@pytest.fixture
def limited(tmp_path, redis_server, simulator):
    """The limits above for this process; returns the env that gives them to a worker or the CLI."""
    data = limits_config(redis_server, simulator)
    path = tmp_path / "flowcloud-limits.yaml"
    path.write_text(yaml.safe_dump(data))
    saved = use_config(validate(data))
    yield {"FLOWCLOUD_CONFIG": str(path)}
    use_config(saved)


EMPTY_FLOW = {"data": {"nodes": [], "edges": []}}


def messages(count: int) -> list[dict]:
    return [{"role": "user", "content": f"m{i}"} for i in range(count)]


# (what is sent, the limit, the setting named): each one over its limit by one.
REFUSED = [
    (lambda: client.submit("x" * 41), "prompt_chars", "limits.prompt_chars"),
    (lambda: client.submit("x" * 36, system="y" * 5), "prompt_chars", "limits.prompt_chars"),  # all messages count
    (lambda: client.submit("x" * 11, flow="tight"), "prompt_chars", "limits.flows.tight.prompt_chars"),
    (lambda: client.submit(messages(4)), "messages", "limits.messages"),
    (lambda: client.submit_many(["a"] * 5), "batch", "limits.batch"),
    (lambda: client.submit_many(["a"] * 3, flow="tight"), "batch", "limits.flows.tight.batch"),
    (lambda: client.submit_many(["ok", "x" * 41, "ok"]), "prompt_chars", "limits.prompt_chars"),  # one bad: none go
    (lambda: client.submit("hi", max_tokens=501), "max_tokens", "limits.max_tokens"),
    (lambda: client.submit("hi", max_tokens=2001, flow="roomy"), "max_tokens", "limits.flows.roomy.max_tokens"),
    # The model's window bounds max_tokens even where the limits allow more.
    (lambda: client.submit("hi", model="small-window", max_tokens=1001, flow="roomy"), "max_tokens",
     "providers.0.models.4.context_tokens"),
    (lambda: client.summarize("x" * 61), "summary_chars", "limits.summary_chars"),
    (lambda: client.summarize("a text", max_tokens=501), "max_tokens", "limits.max_tokens"),
    (lambda: client.embed("x" * 41), "prompt_chars", "limits.prompt_chars"),
    (lambda: client.embed(["a"] * 5), "batch", "limits.batch"),
    (lambda: client.embed(["a"] * 3, flow="tight"), "batch", "limits.flows.tight.batch"),
    (lambda: client.submit_flow(EMPTY_FLOW, "x" * 41), "prompt_chars", "limits.prompt_chars"),
    (lambda: client.submit_flow(EMPTY_FLOW, "x" * 11, flow_name="tight"), "prompt_chars",
     "limits.flows.tight.prompt_chars"),
]


@pytest.mark.parametrize("send, limit, field", REFUSED)
def test_every_limit_is_refused_at_submit_naming_its_setting_and_nothing_enters_redis(limited, redis_server,
                                                                                      send, limit, field):
    with pytest.raises(LimitExceeded) as refused:
        send()
    error = refused.value
    assert (error.limit, error.field, error.value) == (limit, field, error.maximum + 1)
    assert str(error).startswith(f"{limit}: ") and f"set by {field}" in str(error)
    assert error.to_record()["kind"] == "limit_exceeded" and not error.retryable
    assert redis_server.client().keys("*") == []  # no record, no queued message, nothing else


ACCEPTED = [
    lambda: client.submit("x" * 40),  # at the limit
    lambda: client.submit("x" * 900, flow="roomy"),  # a flow's own limit may be looser
    lambda: client.submit(messages(3), max_tokens=500),
    lambda: client.submit("hi", model="small-window", max_tokens=1000, flow="roomy"),
    lambda: client.submit_many(["a", "b"], flow="tight"),
    lambda: client.summarize("y" * 60),
    lambda: client.embed(["a"] * 4),
]


@pytest.mark.parametrize("send", ACCEPTED)
def test_a_submission_at_its_limits_is_queued(limited, redis_server, send):
    send()
    assert redis_server.client().llen("flowcloud") >= 1


@pytest.mark.parametrize("send, reason", [
    (lambda: client.submit(5), "prompt: give a string or a list of messages, not int"),
    (lambda: client.submit({"role": "user", "content": "hi"}), "a list of messages, not dict"),
    (lambda: client.submit_many("abc"), "prompts: give a list of prompts, not str"),
    (lambda: client.submit_many({"a": 1}), "prompts: give a list of prompts, not dict"),
    (lambda: client.embed(3), "text: give a string or a list of strings, not int"),
    (lambda: client.submit([{"role": "user", "content": 7}]), "messages.0.content: "),
])
def test_a_malformed_submission_is_a_job_error_and_queues_nothing(limited, redis_server, send, reason):
    with pytest.raises(InvalidJob, match=reason):
        send()
    assert redis_server.client().keys("*") == []


def test_any_iterable_of_prompts_is_a_batch(limited, redis_server):
    assert len(client.submit_many(f"prompt {i}" for i in range(3))) == 3
    assert redis_server.client().llen("flowcloud") >= 1


def test_masking_at_submit_is_checked_again_since_a_placeholder_may_be_longer(tmp_path, redis_server, simulator):
    prompt = "write to a@b.cn " + "x" * 24  # 40 characters; "<EMAIL_1>" is three more than the address
    data = limits_config(redis_server, simulator, mask={"at_submit": True})
    saved = use_config(validate(data))
    try:
        with pytest.raises(LimitExceeded, match="the prompt has 43 characters"):
            client.submit(prompt)
    finally:
        use_config(saved)
    assert redis_server.client().keys("*") == []


def test_the_defaults_are_generous_but_finite():
    settings = LimitSettings()
    found = {name: settings.limit(name, None) for name in ("prompt_chars", "messages", "batch", "summary_chars")}
    assert {name: limit.maximum for name, limit in found.items()} == {
        "prompt_chars": 1_000_000, "messages": 1_000, "batch": 10_000, "summary_chars": 10_000_000}
    assert settings.limit("max_tokens", None) is None  # bounded by the model's context window alone
    assert settings.limit("batch", "a-flow-without-limits").field == "limits.batch"


@pytest.mark.parametrize("limits, field", [
    ({"prompt_chars": 0}, "limits.prompt_chars"),
    ({"flows": {"nightly": {"batch": 0}}}, "limits.flows.nightly.batch"),
    ({"flows": {"nightly": {"prompt": 5}}}, "limits.flows.nightly.prompt"),
    ({"max_prompt": 5}, "limits.max_prompt"),
])
def test_bad_limits_are_refused_at_start_naming_the_field(redis_server, simulator, limits, field):
    data = {**limits_config(redis_server, simulator), "limits": limits}
    with pytest.raises(ConfigError) as refused:
        validate(data)
    assert refused.value.field == field


def test_a_limit_can_come_from_the_environment(tmp_path, redis_server, simulator):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(yaml.safe_dump(limits_config(redis_server, simulator)))
    config = load_config({"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_LIMITS__PROMPT_CHARS": "12"})
    assert config.limits.prompt_chars == 12 and config.limits.flows["tight"].prompt_chars == 10


def test_the_cli_refuses_with_the_setting_and_no_traceback(limited, redis_server):
    done = run_cli("submit", "x" * 11, "--flow", "tight", env=limited)
    assert done.returncode == 1, done.stderr
    assert "error: prompt_chars: the prompt has 11 characters, over the limit of 10 set by " \
           "limits.flows.tight.prompt_chars" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    done = run_cli("submit", "hi", "--max-tokens", "501", env=limited)
    assert done.returncode == 1 and "set by limits.max_tokens" in done.stderr
    assert redis_server.client().keys("*") == []


def test_a_langflow_node_shows_the_refusal(limited, redis_server):
    completion = component("cloud_completion.py")(prompt="x" * 41, mode="ticket")
    with pytest.raises(LimitExceeded, match="set by limits.prompt_chars"):
        asyncio.run(completion.build_results())  # how Langflow builds a node: its error is what the node shows
    assert completion.status.startswith("refused: prompt_chars: the prompt has 41 characters")

    batch = component("batch_submit.py")(texts="\n".join(["one", "two", "three"]), cost_flow="tight", mode="ticket")
    with pytest.raises(LimitExceeded, match="set by limits.flows.tight.batch"):
        batch.results_response()
    assert batch.status.startswith("refused: batch: 3 jobs were sent at once")

    summary = component("cloud_summarize.py")(text="x" * 61, mode="ticket")
    with pytest.raises(LimitExceeded, match="set by limits.summary_chars"):
        summary.summary_response()
    assert summary.status.startswith("refused: summary_chars: ")
    assert redis_server.client().keys("*") == []


def sent_as_an_old_client_would(task: str, args: list, job_ids: list[str]) -> None:
    """A record and a message, with no check of the limits in between."""
    from flowcloud.workers.core.celery_app import app  # after the fixtures point the app at the test Redis
    from flowcloud.workers.core.config import get_config

    store = JobStore.open(get_config())
    for job_id in job_ids:
        store.create(JobRecord(job_id=job_id, status=JobStatus.QUEUED, submitted_at=time.time()))
    app.send_task(task, args=args, task_id=None if len(job_ids) > 1 else job_ids[0])


def test_a_worker_fails_an_oversized_message_alone_with_the_same_error(limited, start_worker, simulator, tag):
    from flowcloud.workers.core.celery_app import BUNDLE_TASK, COMPLETE_TASK, EMBED_TASK, SUMMARIZE_TASK

    start_worker(env=limited)
    bad = f"{tag}-bad "
    ids = {name: str(uuid.uuid4()) for name in ("good", "prompt", "max_tokens", "embed", "summary")}
    bundled = [str(uuid.uuid4()) for _ in range(3)]
    chat = lambda text, **more: {"messages": [{"role": "user", "content": text}], **more}  # noqa: E731
    sent_as_an_old_client_would(COMPLETE_TASK, [chat(f"{tag} a fine question")], [ids["good"]])
    sent_as_an_old_client_would(COMPLETE_TASK, [chat(bad + "x" * 40)], [ids["prompt"]])
    sent_as_an_old_client_would(COMPLETE_TASK, [chat(bad, max_tokens=501)], [ids["max_tokens"]])
    sent_as_an_old_client_would(EMBED_TASK, [{"input": bad + "x" * 40, "model": "text-embedding-3-small"}],
                                [ids["embed"]])
    sent_as_an_old_client_would(SUMMARIZE_TASK, [{"text": bad + "x" * 60}], [ids["summary"]])
    sent_as_an_old_client_would(BUNDLE_TASK, [COMPLETE_TASK, [[job_id, chat(bad, flow="tight")] for job_id in bundled]],
                                bundled)

    records = dict(zip([*ids, *bundled], client.wait_all([*ids.values(), *bundled], timeout=30)))
    assert records.pop("good")["status"] == "succeeded"
    fields = {name: (record["status"], record["error"]["kind"], record["error"]["field"])
              for name, record in records.items()}
    assert fields == {"prompt": ("failed", "limit_exceeded", "limits.prompt_chars"),
                      "max_tokens": ("failed", "limit_exceeded", "limits.max_tokens"),
                      "embed": ("failed", "limit_exceeded", "limits.prompt_chars"),
                      "summary": ("failed", "limit_exceeded", "limits.summary_chars"),
                      **{job_id: ("failed", "limit_exceeded", "limits.flows.tight.batch") for job_id in bundled}}
    with pytest.raises(LimitExceeded) as at_submit:
        client.submit(bad + "x" * 40)
    assert records["prompt"]["error"]["message"] == str(at_submit.value)  # the same error at both ends
    assert simulator.requests_log(bad) == []  # nothing oversized reached the provider
