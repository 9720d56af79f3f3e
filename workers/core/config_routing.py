"""Model groups: a logical model name served by deployments across providers, how one is chosen, and
when a job moves on to the next.

A *deployment* is one model at one provider (``provider/model``). A *group*
maps a name a job may ask for (``model: chat``) to its deployments, a strategy
that chooses among them, and a fallback chain tried when they fail. A model a
provider lists and no group names is a group of its own, with that one
deployment: every job is routed the same way. This module only says what is
valid; the router (``flowcloud.workers.routing``) does the choosing.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from flowcloud.workers.core.config_sections import Strict

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
STRATEGIES = ("cost", "latency", "least_busy", "weighted")


class DeploymentConfig(Strict):
    """One model at one provider, with the limits every worker on every host shares."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    name: str | None = Field(None, description="the arm's name in A/B reports and weights; default provider/model")
    weight: float = Field(1.0, ge=0, description="share of jobs under the weighted strategy (0: none)")
    rpm: int | None = Field(None, ge=1, description="requests per minute across all workers; unset: no limit")
    tpm: int | None = Field(None, ge=1, description="tokens per minute across all workers; unset: no limit")

    @property
    def id(self) -> str:
        """``provider/model``: the deployment's key in Redis and its metric label."""
        return f"{self.provider}/{self.model}"

    @property
    def label(self) -> str:
        return self.name or self.id


class CircuitSettings(Strict):
    """When a deployment's circuit opens, and how it is tried again."""

    failure_ratio: float = Field(0.5, gt=0, le=1, description="share of failed calls in the window that opens it")
    min_calls: int = Field(10, ge=1, description="fewer calls in the window never open it")
    window_seconds: int = Field(30, ge=1, le=3600, description="seconds of calls looked back")
    open_seconds: float = Field(15.0, gt=0, description="seconds an open circuit waits before one probe")


class ArmGuard(Strict):
    """Beat's guard over a gray release: turns ``arm`` off (weight 0 on every worker) and raises an
    alert when it does worse than ``baseline`` over the last ``window_minutes``."""

    arm: str = Field(description="the new arm, by its deployment name")
    baseline: str = Field(description="the arm it is compared with")
    max_error_rate_increase: float = Field(
        0.05, ge=0, le=1, description="how far the arm's share of failed calls may exceed the baseline's")
    max_p99_ratio: float | None = Field(
        2.0, gt=1, description="how many times the baseline's p99 latency the arm's may reach; null: not checked")
    min_calls: int = Field(50, ge=1, description="calls each arm needs in the window before it is judged")
    window_minutes: int = Field(10, ge=1, le=1440)


# The complexity features (flowcloud.workers.routing.complexity) and their default weights: a prompt
# whose weighted sum reaches hybrid.threshold goes to the cloud tier. Tuned on tests/data/complexity.yaml.
COMPLEXITY_FEATURES = ("length", "code", "reasoning", "steps", "arithmetic", "questions", "constraints", "language")
DEFAULT_COMPLEXITY_WEIGHTS = {"length": 0.3, "code": 0.6, "reasoning": 0.5, "steps": 0.35, "arithmetic": 0.6,
                              "questions": 0.35, "constraints": 0.25, "language": 0.6}


class HybridSettings(Strict):
    """A local tier beside a group's cloud deployments: simple prompts go local, the rest to the cloud,
    and a local answer that fails its check (empty, a refusal, cut off, bad JSON) escalates at once."""

    local: DeploymentConfig
    threshold: float = Field(0.5, gt=0, description="a complexity score at or above this goes to the cloud")
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_COMPLEXITY_WEIGHTS),
                                      description="complexity feature weights, over the defaults")
    local_languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1,
                                       description="languages the local model answers in (en, zh)")
    max_prompt_tokens: int = Field(512, ge=1, description="longer prompts always go to the cloud")
    max_in_flight: int | None = Field(None, ge=1, description="the local tier's calls in flight fleet-wide "
                                      "before it counts as saturated and jobs go to the cloud; unset: no bound")

    @field_validator("weights")
    @classmethod
    def _known_features(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(COMPLEXITY_FEATURES))
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(COMPLEXITY_FEATURES)}")
        return {**DEFAULT_COMPLEXITY_WEIGHTS, **weights}


class ModelGroup(Strict):
    name: str
    strategy: Literal["cost", "latency", "least_busy", "weighted"] = "cost"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    fallbacks: list[DeploymentConfig] = Field(
        default_factory=list, description="tried in order once every deployment is spent, open or too small")
    weights: dict[str, float] | None = Field(
        None, description="weighted strategy: share per arm name (sets each deployment's weight)")
    attempts_per_deployment: int | None = Field(
        None, ge=1, le=50, description="calls tried on one deployment before the job moves on; default "
        "retry.max_attempts")
    circuit: CircuitSettings = CircuitSettings()
    guard: ArmGuard | None = Field(None, description="weighted groups: turn a new arm off when it does worse")
    hybrid: HybridSettings | None = Field(None, description="a local tier for the simple prompts")

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, name: str) -> str:
        if not GROUP_NAME.match(name):
            raise ValueError("use letters, digits, '.', ':', '-' and '_' (it becomes a metric label)")
        return name

    @model_validator(mode="after")
    def _arms_named_once(self) -> ModelGroup:
        labels = [d.label for d in self.chain]
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"deployments: {', '.join(dupes)} listed twice (give each a distinct name)")
        if self.weights is not None:
            unknown = sorted(set(self.weights) - {d.label for d in self.deployments})
            if unknown:
                raise ValueError(f"weights: no deployment named {', '.join(unknown)} "
                                 f"(deployments: {', '.join(d.label for d in self.deployments)})")
            weighted = [d.model_copy(update={"weight": self.weights.get(d.label, 0.0)}) for d in self.deployments]
            object.__setattr__(self, "deployments", weighted)
        if self.guard is not None:
            arms = {d.label for d in self.deployments}
            for where, arm in (("guard.arm", self.guard.arm), ("guard.baseline", self.guard.baseline)):
                if arm not in arms:
                    raise ValueError(f"{where}: no deployment named {arm!r} (deployments: {', '.join(sorted(arms))})")
            if self.strategy != "weighted":
                raise ValueError("guard: only a weighted group has arms to turn off (strategy: weighted)")
        if self.strategy == "weighted" and not any(d.weight > 0 for d in self.deployments):
            raise ValueError("weights: every deployment has weight 0; give at least one a share")
        return self

    @property
    def chain(self) -> list[DeploymentConfig]:
        """Every deployment the group may send a job to: its local tier, its own, then its fallbacks in order."""
        local = [self.hybrid.local] if self.hybrid else []
        return [*local, *self.deployments, *self.fallbacks]
