"""Each arm of a model group as the fleet saw it, per minute: calls, failures, latency, tokens and
cost, for the A/B report and its guard; and the weights the guard overrides.

An arm is a deployment of a group, named by its label. Every call a routed job
makes is counted here (``record_in``, queued on the job's last round trip) in a
hash per group, arm and minute, ``flowcloud:arms:<group>:<arm>:<minute>``, kept
``RETENTION_SECONDS``. Latency is kept as a histogram over ``LATENCY_BOUNDS_MS``,
so percentiles over any span are read back without keeping every sample. A
weight set here (``flowcloud:arms:weights:<group>``) replaces the configured one
until it is cleared: that is how the guard turns an arm off on every worker.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import redis
from redis.client import Pipeline as RedisPipeline

from flowcloud.workers.core.money import from_nano, to_nano

PREFIX = "flowcloud:arms:"
RETENTION_SECONDS = 8 * 86_400
# Upper bounds of the latency histogram's buckets; a slower call falls in the last, open one.
LATENCY_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000)


@dataclass
class ArmStats:
    calls: int = 0
    failed: int = 0
    succeeded: int = 0
    answered: int = 0  # answered with an error the job caused (a bad request): not the arm's failure
    cost_nano: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def add(self, fields: dict[str, str]) -> None:
        for name, value in fields.items():
            if name.startswith("lat:"):
                self.latency[int(name[4:])] += int(value)
            elif name in COUNTERS:
                setattr(self, name, getattr(self, name) + int(value))

    @property
    def error_rate(self) -> float:
        return self.failed / self.calls if self.calls else 0.0

    @property
    def cost_per_job(self) -> float:
        return from_nano(self.cost_nano) / self.succeeded if self.succeeded else 0.0

    def percentile_ms(self, share: float) -> float | None:
        """The bucket bound below which ``share`` of the calls fell (None: no call)."""
        total = sum(self.latency)
        if not total:
            return None
        seen = 0
        for i, count in enumerate(self.latency):
            seen += count
            if seen >= share * total:
                return float(LATENCY_BOUNDS_MS[i]) if i < len(LATENCY_BOUNDS_MS) else float("inf")
        return float("inf")


COUNTERS = ("calls", "failed", "succeeded", "answered", "cost_nano", "prompt_tokens", "completion_tokens")


class Arms:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def record_in(self, pipe: RedisPipeline, group: str, arm: str, minute: int, *, ok: bool, succeeded: bool,
                  latency_ms: float, cost_usd: float, prompt_tokens: int, completion_tokens: int) -> None:
        """Queue one call's figures; nothing to read back."""
        key = minute_key(group, arm, minute)
        pipe.hincrby(key, "calls", 1)
        pipe.hincrby(key, "failed" if not ok else "succeeded" if succeeded else "answered", 1)
        pipe.hincrby(key, f"lat:{bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)}", 1)
        if succeeded:
            pipe.hincrby(key, "cost_nano", to_nano(cost_usd))
            pipe.hincrby(key, "prompt_tokens", prompt_tokens)
            pipe.hincrby(key, "completion_tokens", completion_tokens)
        pipe.expire(key, RETENTION_SECONDS)

    def read(self, group: str, arms: list[str], minutes: range) -> dict[str, ArmStats]:
        """Each arm's figures summed over ``minutes``, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for arm in arms:
            for minute in minutes:
                pipe.hgetall(minute_key(group, arm, minute))
        replies = iter(pipe.execute())
        found = {}
        for arm in arms:
            stats = ArmStats()
            for _ in minutes:
                stats.add({_text(k): _text(v) for k, v in next(replies).items()})
            found[arm] = stats
        return found

    def weights_in(self, pipe: RedisPipeline, group: str) -> Callable[[Iterator[Any]], dict[str, float]]:
        """Queue a read of the weights set for ``group``'s arms; the reader returns them by arm."""
        pipe.hgetall(weights_key(group))
        return lambda replies: {_text(k): float(v) for k, v in next(replies).items()}

    def weights(self, group: str) -> dict[str, float]:
        return {_text(k): float(v) for k, v in self.client.hgetall(weights_key(group)).items()}

    def set_weight(self, group: str, arm: str, weight: float) -> None:
        self.client.hset(weights_key(group), arm, weight)

    def clear_weight(self, group: str, arm: str) -> bool:
        """Back to the configured weight; False when none was set."""
        return bool(self.client.hdel(weights_key(group), arm))


def minute_key(group: str, arm: str, minute: int) -> str:
    return f"{PREFIX}{group}:{arm}:{minute}"


def weights_key(group: str) -> str:
    return f"{PREFIX}weights:{group}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value
