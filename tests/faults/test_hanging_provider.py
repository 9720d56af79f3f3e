"""A provider that starts its answers and never finishes them. Every adapter cuts such a call at its
bound. Then, against a worker with two slots: 10 jobs whose first call hangs mid-body (headers and half
the body sent, then silence), 10 whose first call trickles a body that never ends (a few bytes every
0.2 s, so no single read ever times out), and 20 fresh jobs sent once both slots are held by such calls.
Every stalled call is cut by its call's bound (connect + read timeout) and retried; no slot is held past
that bound, and the fresh jobs are served while the stalled ones wait for their retries. Nothing is
lost or billed twice."""

from __future__ import annotations

import time

import pytest

from flowcloud.workers.core.errors import ProviderTimeout
from flowcloud.workers.providers import build_provider
from tests.conftest import config_yaml, start_simulator
from tests.faults.scenario import Driver, figures
from tests.test_adapters_behaviour import KINDS, MODEL, provider_config

CONNECT, READ = 2.0, 1.0
BOUND = CONNECT + READ  # Timeouts.call_seconds: the longest one provider call may take
SLOTS = 2
STALLED, FRESH = 10, 20  # jobs per stall fault; fresh jobs
STALLS = ("hang", "trickle")


@pytest.mark.parametrize("kind", KINDS)
def test_every_adapter_cuts_a_stalled_answer_at_its_call_bound(simulator, kind, tag):
    adapter = build_provider(provider_config(kind, simulator.url), pool_size=1)  # timeouts: connect 2, read 1
    bound = adapter.call_seconds
    try:
        for fault in STALLS:
            started = time.monotonic()
            with pytest.raises(ProviderTimeout) as cut:
                adapter.chat([{"role": "user", "content": f"[[sim:{fault}]] {tag}"}], MODEL)
            assert cut.value.retryable
            assert time.monotonic() - started < 2 * bound, f"{kind} held a {fault} call past its bound"
            # The connection cut mid-answer is not handed out again: the next call on the pool is answered.
            assert adapter.chat([{"role": "user", "content": f"after {fault} {tag}"}], MODEL).text
    finally:
        adapter.close()


def test_a_model_list_that_never_ends_is_cut_too(simulator):
    adapter = build_provider(provider_config("openai", simulator.url, headers={"x-sim-fault": "trickle"}), 1)
    try:
        with pytest.raises(ProviderTimeout, match="bound"):
            adapter.models()
    finally:
        adapter.close()


@pytest.fixture
def provider():
    sim = start_simulator()
    yield sim
    sim.stop()


@pytest.mark.timeout(400)
def test_stalled_answers_are_cut_at_the_call_bound_and_retried_without_holding_a_slot(
        provider, redis_server, start_worker, tmp_path, tag):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(redis_server.url, provider.url)
                    .replace("connect: 2, read: 1.5", f"connect: {CONNECT:g}, read: {READ:g}"))
    env = {"FLOWCLOUD_CONFIG": str(path)}
    start_worker(concurrency=SLOTS, env=env)

    stalled = [Driver(env, STALLED, f"[[sim:{fault};times=1]] {tag}", timeout=300) for fault in STALLS]
    wait_for_stalled_calls(provider, SLOTS)  # both slots now hold an answer that will never finish
    fresh = Driver(env, FRESH, f"fresh {tag}", timeout=300)
    records = [record for driver in [*stalled, fresh] for record in driver.records(timeout=330)]

    log = sorted(provider.requests_log(tag), key=lambda r: r["t"])
    answered = sum(r["status"] == 200 and r["fault"] is None for r in log)  # a stalled answer is never billed
    result = figures("hanging provider", records, answered, redis_server)
    result.show()
    assert (result.submitted, result.completed, result.failed, result.lost, result.billed_twice_usd) == (
        2 * STALLED + FRESH, 2 * STALLED + FRESH, 0, 0, 0)

    cut = [r for r in log if stall_of(r)]
    assert sorted(stall_of(r) for r in cut) == sorted(STALLS * STALLED)  # each stalled job stalled once
    for request in cut:
        held = request["ended"] - request["t"]
        # Cut no sooner than its read timeout; a trickle's reads never time out, so its call's bound cut it.
        assert held >= READ, request
        assert held < 2 * BOUND, f"a slot was held {held:.1f} s by {request}"

    retries = retried_after_the_cut(log)
    assert len(retries) == 2 * STALLED
    assert all(record["attempts"] >= 2 for record in records[:2 * STALLED])
    # While a cut job waited for its retry, its slot served other jobs.
    assert sum(others for _, others in retries) > 0
    # The fresh jobs came after both slots were taken, and ran once the stalled calls were cut.
    first_fresh = next(r for r in log if "fresh" in r["prompt"])
    assert first_fresh["t"] >= min(r["t"] for r in cut) + READ


def stall_of(request: dict) -> str | None:
    """The stall fault a logged request got (its spec is logged whole: ``hang;times=1``), else None."""
    name = (request["fault"] or "").split(";")[0]
    return name if name in STALLS else None


def wait_for_stalled_calls(provider, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while provider.stats()["in_flight"] < count:
        assert time.monotonic() < deadline, "the stalled calls never started"
        time.sleep(0.05)


def retried_after_the_cut(log: list[dict]) -> list[tuple[str, int]]:
    """Each stalled job's prompt, with how many calls of other jobs began between its stalled call and its
    retry. Asserts that the retry came, answered, and no sooner than the read timeout after the stall."""
    found = []
    for request in (r for r in log if stall_of(r)):
        later = [r for r in log if r["prompt"] == request["prompt"] and r["t"] > request["t"]]
        assert later and later[-1]["status"] == 200 and later[-1]["fault"] is None, (request, later)
        retry = later[0]
        assert retry["t"] - request["t"] >= READ, (request, retry)
        others = sum(request["t"] < r["t"] < retry["t"] and r["prompt"] != request["prompt"] for r in log)
        found.append((request["prompt"], others))
    return found
