"""Global rate limits: the limiter's Lua script on the session's real Redis, hammered by several OS
processes; and the rate-limit stage through the real pipeline. Four real workers sharing one limit
for the real minute are in tests/test_scale_out.py.

Windows are shortened where a test would otherwise wait for minutes (``window_seconds`` is a knob of
the limiter class, not of the configuration).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid

import pytest
import yaml

from flowcloud.workers.budget import JOB_PREFIX
from flowcloud.workers.core.cache import FLIGHT_PREFIX
from flowcloud.workers.core.config import validate
from flowcloud.workers.core.config_routing import DeploymentConfig
from flowcloud.workers.core.records import JobStatus
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.core.ssrf import Guard
from flowcloud.workers.pipeline import CHAT, Ending, Job, Pipeline, Stage, default_stages
from flowcloud.workers.providers import http
from flowcloud.workers.rate_limits import Limiter, ProviderLimits, limited_deployments, read_headers
from flowcloud.workers.rate_limits.limiter import BOOKING_PREFIX, BOOKING_SPACING_SECONDS, KEY_PREFIX
from flowcloud.workers.runtime import Runtime
from tests.conftest import KEY_ENV, config_yaml

WINDOW = 1.0
GUARD = 0.1


def deployment(rpm: int | None = None, tpm: int | None = None) -> DeploymentConfig:
    """A deployment of its own, so tests never share a log."""
    return DeploymentConfig(provider="sim", model=f"m-{uuid.uuid4().hex[:8]}", rpm=rpm, tpm=tpm)


@pytest.fixture
def limiter(redis_server) -> Limiter:
    return Limiter(connect(redis_server.url), {}, window_seconds=WINDOW, guard_seconds=GUARD)


def most_in_a_window(times: list[float], weights: list[int] | None = None, window: float = WINDOW) -> int:
    """The largest sum of ``weights`` (1 each by default) over the ``times`` of any window ``[t, t + window)``."""
    pairs = sorted(zip(times, weights or [1] * len(times)))
    return max(sum(w for u, w in pairs[i:] if u < t + window) for i, (t, _) in enumerate(pairs))


# -- the limiter, on Redis


def test_a_full_window_books_each_refused_job_a_slot_of_its_own_in_the_order_it_asked(limiter):
    limit = deployment(rpm=5)
    started = time.time()
    waits = [limiter.acquire(f"job-{i}", limit, 10) for i in range(12)]
    assert waits[:5] == [0.0] * 5
    # The sixth waits until the first leaves the window (plus the guard); none shares a slot.
    assert waits[5] == pytest.approx(WINDOW + GUARD, abs=0.05)
    slots = [float(limiter.client.get(BOOKING_PREFIX + f"job-{i}")) for i in range(5, 12)]
    assert all(b - a >= BOOKING_SPACING_SECONDS * 0.99 for a, b in zip(slots, slots[1:]))
    # The eleventh waits for the sixth to leave: two windows.
    assert waits[10] == pytest.approx(2 * (WINDOW + GUARD), abs=0.1)
    assert time.time() - started < 0.5  # booking is one call per job, not a wait


def test_a_booked_job_is_admitted_when_it_comes_back_for_its_slot_and_not_before(limiter):
    limit = deployment(rpm=1)
    assert limiter.acquire("first", limit, 1) == 0.0
    wait = limiter.acquire("second", limit, 1)
    assert wait > 0.5
    early = limiter.acquire("second", limit, 1)  # back too soon: told the rest, booked nothing more
    assert 0 < early < wait
    assert limiter.client.zcard(KEY_PREFIX + limit.id) == 2
    time.sleep(early)
    assert limiter.acquire("second", limit, 1) == 0.0
    assert limiter.client.exists(BOOKING_PREFIX + "second") == 0
    assert limiter.acquire("third", limit, 1) > 0.5  # the second's slot counts in its window


def test_requests_and_tokens_are_checked_together_in_one_call(limiter):
    limit = deployment(rpm=3, tpm=1000)
    assert [limiter.acquire(f"small-{i}", limit, 10) for i in range(3)] == [0.0] * 3
    assert limiter.acquire("small-3", limit, 10) > 0  # rpm refuses, tokens to spare

    tokens = deployment(rpm=3, tpm=1000)
    assert limiter.acquire("big-0", tokens, 450) == 0.0
    assert limiter.acquire("big-1", tokens, 450) == 0.0
    wait = limiter.acquire("big-2", tokens, 450)  # tpm refuses, requests to spare
    assert wait == pytest.approx(WINDOW + GUARD, abs=0.05)
    # The refusal counted nothing now: the log holds the two admitted and the one booked later.
    entries = limiter.client.zrange(KEY_PREFIX + tokens.id, 0, -1, withscores=True)
    assert [score for _, score in entries] == [450, 900, 1350]
    # Once big-0 leaves the window, big-2's slot comes: together they fit.
    time.sleep(wait)
    assert limiter.acquire("big-2", tokens, 450) == 0.0


def test_a_job_bigger_than_the_tpm_waits_for_an_empty_window_instead_of_forever(limiter):
    limit = deployment(tpm=100)
    assert limiter.acquire("some", limit, 30) == 0.0
    assert limiter.acquire("huge", limit, 5000) == pytest.approx(WINDOW + GUARD, abs=0.05)


def hammer(redis_url: str, dep: dict, jobs: int, seed: int, out) -> None:
    """One OS process: book ``jobs`` jobs as fast as it can, then claim each at its slot; reports
    (admission time, tokens) per job."""
    limit = DeploymentConfig(**dep)
    limiter = Limiter(connect(redis_url), {}, window_seconds=WINDOW, guard_seconds=GUARD)
    rand = random.Random(seed)
    booked = []
    for i in range(jobs):
        job_id, tokens = f"p{seed}-{i}", rand.randint(50, 150)
        wait = limiter.acquire(job_id, limit, tokens)
        booked.append((time.time() + wait, job_id, tokens))
    admitted = []
    for slot, job_id, tokens in sorted(booked):
        while (wait := limiter.acquire(job_id, limit, tokens)) > 0:
            time.sleep(max(slot - time.time(), wait))
        admitted.append((time.time(), tokens))
    out.put(admitted)


def test_processes_hammering_one_limit_never_pass_it_in_any_window(redis_server):
    limit = deployment(rpm=20, tpm=1600)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=hammer, args=(redis_server.url, limit.model_dump(), 20, seed, out))
                 for seed in range(4)]
    for process in processes:
        process.start()
    admitted = [entry for _ in processes for entry in out.get(timeout=60)]
    for process in processes:
        process.join(10)
    times, tokens = [t for t, _ in admitted], [n for _, n in admitted]
    assert len(admitted) == 80
    assert most_in_a_window(times) <= 20
    assert most_in_a_window(times, tokens) <= 1600


# -- what the provider says


@pytest.mark.parametrize("headers, expected", [
    ({"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"}, ProviderLimits(59, 1.0)),
    ({"x-ratelimit-remaining-tokens": "1500", "x-ratelimit-reset-tokens": "6m0s"},
     ProviderLimits(tokens=1500, tokens_reset=360.0)),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "250ms",
      "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "1m2.5s"}, ProviderLimits(0, 0.25, 10, 62.5)),
    ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "2"}, ProviderLimits(3, 2.0)),
    ({"x-ratelimit-remaining-requests": "3"}, ProviderLimits()),  # no reset: not taken
    ({"x-ratelimit-remaining-requests": "many", "x-ratelimit-reset-requests": "1s"}, ProviderLimits()),
    ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "soon"}, ProviderLimits()),
    ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "2h"}, ProviderLimits()),  # not a minute's
    ({}, ProviderLimits()),
])
def test_the_provider_headers_are_read_or_left_out(headers, expected):
    assert read_headers(headers) == expected


def test_a_provider_out_of_requests_holds_jobs_until_its_reset(limiter):
    limit = deployment(rpm=100)
    limiter.deployments[limit.id] = limit
    limiter.observe("sim", limit.model, {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "2s"})
    assert limiter.acquire("one", limit, 10) == 0.0  # the one it has left
    assert limiter.acquire("two", limit, 10) == pytest.approx(2.0, abs=0.1)  # our own rpm had room
    limiter.observe("sim", "not-limited", {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9s"})
    assert not limiter.client.exists(KEY_PREFIX + "sim/not-limited:provider")


def test_a_provider_with_more_left_than_the_limit_costs_no_redis_call(limiter):
    limit = deployment(rpm=10, tpm=1000)
    limiter.deployments[limit.id] = limit
    limiter.observe("sim", limit.model, {"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "6s",
                                         "x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "6s"})
    assert not limiter.client.exists(KEY_PREFIX + limit.id + ":provider")
    limiter.observe("sim", limit.model, {"x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "6s",
                                         "x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "6s"})
    assert limiter.client.hgetall(KEY_PREFIX + limit.id + ":provider").keys() == {"requests", "requests_reset"}


def test_a_provider_out_of_tokens_holds_a_job_that_needs_more(limiter):
    limit = deployment(tpm=100_000)
    limiter.deployments[limit.id] = limit
    limiter.observe("sim", limit.model, {"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "3s"})
    assert limiter.acquire("fits", limit, 400) == 0.0
    assert limiter.acquire("too-many", limit, 400) == pytest.approx(3.0, abs=0.1)


def test_every_reply_to_a_model_request_reaches_the_headers_observer(simulator, monkeypatch, tag):
    seen = []
    monkeypatch.setattr(http, "headers_observer", lambda provider, model, headers: seen.append((provider, model)))
    pool = http.make_pool(1, simulator.url, Guard("sim", allow_private=True))
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} hello"}]}
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    http.post_json(pool, simulator.url + "/chat/completions", payload, provider="sim", headers=headers,
                   timeout=(2, 2))
    with pytest.raises(Exception):
        http.post_json(pool, simulator.url + "/chat/completions",
                       {**payload, "messages": [{"role": "user", "content": f"{tag} [[sim:429]]"}]},
                       provider="sim", headers=headers, timeout=(2, 2))
    assert seen == [("sim", "gpt-4o-mini"), ("sim", "gpt-4o-mini")]


# -- the stage, through the real pipeline


def limited_config(redis_server, simulator, rpm: int | None = None, tpm: int | None = None, **extra):
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    group = {"name": "limited", "deployments": [{"provider": "sim", "model": "gpt-4o-mini", "rpm": rpm, "tpm": tpm}]}
    return validate({**data, "model_groups": [group], **extra})


def short_window_runtime(config, *before_limit: Stage) -> Runtime:
    """A runtime whose limiter counts one-second windows; ``before_limit`` stages run just before its stage."""
    runtime = Runtime.build(config, calls_in_flight=4)
    runtime.limiter = Limiter(runtime.store.client, limited_deployments(config), WINDOW, GUARD)
    http.headers_observer = runtime.limiter.observe
    stages = default_stages(config, runtime.store, runtime.cache, runtime.budgets, runtime.router, runtime.limiter)
    at = next(i for i, stage in enumerate(stages) if type(stage).__name__ == "RateLimitStage")
    stages[at:at] = before_limit
    runtime.pipeline = Pipeline(stages, runtime.pipeline.call, runtime.store, config, runtime.router)
    return runtime


def run(runtime, prompt: str, model: str = "limited", job_id: str | None = None):
    request = {"messages": [{"role": "user", "content": prompt}], "model": model, "max_tokens": 20}
    job = Job(job_id or str(uuid.uuid4()), request, CHAT)
    return job, runtime.pipeline.run(job)


def test_no_limit_in_the_configuration_means_no_stage(redis_server, simulator):
    config = validate(yaml.safe_load(config_yaml(redis_server.url, simulator.url)))
    runtime = Runtime.build(config, calls_in_flight=2)
    try:
        assert runtime.limiter is None
        assert "RateLimitStage" not in [type(stage).__name__ for stage in runtime.pipeline.stages]
    finally:
        runtime.close()


def test_a_job_over_the_limit_waits_for_its_slot_holding_no_flight_and_no_reservation(
        redis_server, simulator, tag):
    config = limited_config(redis_server, simulator, rpm=2,
                            budgets=[{"name": "all", "period": "daily", "limit_usd": 100.0}])
    runtime = short_window_runtime(config)
    redis_client = runtime.store.client
    try:
        assert [run(runtime, f"{tag} first {i}")[1].ending for i in range(2)] == [Ending.SUCCEEDED] * 2
        job, outcome = run(runtime, f"{tag} third")
        assert outcome.ending is Ending.WAIT and outcome.error is None
        assert outcome.not_before > time.time() + 0.5
        assert list(redis_client.scan_iter(f"{FLIGHT_PREFIX}*")) == []
        assert redis_client.hget(JOB_PREFIX + job.id, "state") is None  # it reserves once its slot comes
        record = runtime.store.get(job.id)
        assert record.status is JobStatus.QUEUED and record.next_attempt_at == pytest.approx(outcome.not_before)
        assert simulator.requests_log(f"{tag} third") == []

        time.sleep(outcome.not_before - time.time())
        _, again = run(runtime, f"{tag} third", job_id=job.id)  # the same attempt, at its slot
        assert again.ending is Ending.SUCCEEDED and job.attempt == 1
        assert redis_client.hget(JOB_PREFIX + job.id, "state") == "settled"
        assert len(simulator.requests_log(f"{tag} third")) == 1
    finally:
        runtime.close()


class Routed(Stage):
    """Stands in for the route stage: chooses the job's deployment before the rate limit reads it."""

    def __init__(self, chosen: DeploymentConfig) -> None:
        self.chosen = chosen

    def before(self, job):
        job.deployment = self.chosen
        return None


def test_the_limit_is_the_chosen_deployments(redis_server, simulator, tag):
    config = limited_config(redis_server, simulator, rpm=1000)
    tight = DeploymentConfig(provider="sim", model="gpt-4o-mini", name="tight", rpm=1)
    runtime = short_window_runtime(config, Routed(tight))
    try:
        assert run(runtime, f"{tag} one")[1].ending is Ending.SUCCEEDED
        assert run(runtime, f"{tag} two")[1].ending is Ending.WAIT  # the group's own rpm had room
    finally:
        runtime.close()


def test_tokens_count_the_prompt_and_max_tokens(redis_server, simulator, tag):
    config = limited_config(redis_server, simulator, tpm=60)
    runtime = short_window_runtime(config)
    try:
        assert run(runtime, f"{tag} short")[1].ending is Ending.SUCCEEDED  # ~10 prompt + 20 max tokens
        assert run(runtime, f"{tag} long " + "word " * 40)[1].ending is Ending.WAIT
    finally:
        runtime.close()
