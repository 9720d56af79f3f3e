"""How a group's strategy ranks the deployments that may take a job: pure functions of the job's
size and what the fleet knows of each deployment, so every choice can be explained by its scores.

- ``cost``: the price of this job on each deployment, its prompt tokens at the
  input price plus its expected output at the output price. The output is the
  job's ``max_tokens`` when it sets one, else the mean the fleet has observed
  across the group (one figure for every deployment, so a deployment never
  measured is not priced on a guess beside measured ones), else
  ``DEFAULT_OUTPUT_TOKENS``; never the bare sum of the two prices, which ranks
  wrongly whenever prompt and answer differ in size.
- ``latency``: the moving average of each deployment's call latency; one never
  measured is tried first, so every deployment gets measured.
- ``least_busy``: the fewest calls in flight, fleet-wide.
- ``weighted``: a share of jobs per deployment (gray release, A/B). The draw is
  seeded by the job's id, so each attempt of a job picks the same arm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from flowcloud.workers.core.config_routing import DeploymentConfig
from flowcloud.workers.core.config_sections import ModelConfig
from flowcloud.workers.routing.health import Health

DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class Choice:
    deployment: DeploymentConfig
    reason: str  # the strategy's name, or why not: "fallback", "probe", "only"
    scores: dict[str, float] = field(default_factory=dict)  # by deployment label; lower ranks first


@dataclass(frozen=True)
class Candidate:
    deployment: DeploymentConfig
    entry: ModelConfig
    health: Health


def choose(strategy: str, candidates: list[Candidate], job_id: str, prompt_tokens: int,
           max_tokens: int | None) -> Choice:
    """The deployment ``strategy`` picks among ``candidates`` (at least one), with every score."""
    if len(candidates) == 1:
        return Choice(candidates[0].deployment, "only")
    if strategy == "weighted":
        return weighted(candidates, job_id)
    score = SCORES[strategy]
    if max_tokens is None:
        max_tokens = observed_output(candidates)
    scores = {c.deployment.label: score(c, prompt_tokens, max_tokens) for c in candidates}
    best = min(candidates, key=lambda c: scores[c.deployment.label])  # ties: the first listed
    return Choice(best.deployment, strategy, scores)


def observed_output(candidates: list[Candidate]) -> int:
    """The group's mean output tokens as the fleet observed them, or ``DEFAULT_OUTPUT_TOKENS``."""
    seen = [c.health.output_tokens for c in candidates if c.health.output_tokens is not None]
    return round(sum(seen) / len(seen)) if seen else DEFAULT_OUTPUT_TOKENS


def expected_cost(candidate: Candidate, prompt_tokens: int, max_tokens: int) -> float:
    return candidate.entry.cost(prompt_tokens, max_tokens)


def latency(candidate: Candidate, prompt_tokens: int, max_tokens: int) -> float:
    return candidate.health.latency_ms if candidate.health.latency_ms is not None else 0.0


def busy(candidate: Candidate, prompt_tokens: int, max_tokens: int) -> float:
    return float(candidate.health.busy)


SCORES = {"cost": expected_cost, "latency": latency, "least_busy": busy}


def weighted(candidates: list[Candidate], job_id: str) -> Choice:
    shares = {c.deployment.label: c.deployment.weight for c in candidates}
    total = sum(shares.values())
    if total <= 0:  # every arm still open has weight 0: the first one takes the job
        return Choice(candidates[0].deployment, "weighted", shares)
    point = draw(job_id) * total
    for candidate in candidates:
        point -= candidate.deployment.weight
        if point < 0:
            return Choice(candidate.deployment, "weighted", shares)
    return Choice(candidates[-1].deployment, "weighted", shares)


def draw(job_id: str) -> float:
    """A number in [0, 1) fixed by the job's id."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
