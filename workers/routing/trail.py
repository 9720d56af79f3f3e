"""A routed job's trail: which deployments it tried, how often, and why it moved on.

Kept in the job's record (its ``route`` field), so a later attempt, on any
worker, knows which deployments the job has spent, and the user sees every
deployment tried. ``RouteState`` is what the route stage notes on one attempt:
the trail so far, the fleet's view of the group, the choice, and whether the
call's error sends the job on to the next deployment.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from flowcloud.workers.core.config_routing import DeploymentConfig, ModelGroup
from flowcloud.workers.core.config_sections import RetryPolicy
from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.routing.health import Health
from flowcloud.workers.routing.strategies import Choice


@dataclass
class Trail:
    tried: list[dict[str, Any]] = field(default_factory=list)  # [{deployment, attempts, error, moved_on}]

    @classmethod
    def from_record(cls, raw: Any) -> Trail:
        """The trail in a record's ``route`` field as stored (JSON), or an empty one."""
        if not raw:
            return cls()
        route = json.loads(raw)
        return cls(list(route.get("tried", []))) if isinstance(route, dict) else cls()

    def entry(self, deployment: DeploymentConfig) -> dict[str, Any] | None:
        return next((t for t in self.tried if t["deployment"] == deployment.label), None)

    def attempts_on(self, deployment: DeploymentConfig) -> int:
        found = self.entry(deployment)
        return found["attempts"] if found else 0

    def spent(self, deployment: DeploymentConfig) -> bool:
        found = self.entry(deployment)
        return bool(found and found.get("moved_on"))

    def note(self, deployment: DeploymentConfig, error: ProviderError | None, moved_on: str | None) -> None:
        found = self.entry(deployment)
        if found is None:
            found = {"deployment": deployment.label, "attempts": 0}
            self.tried.append(found)
        found["attempts"] += 1
        found["error"] = error.kind if error is not None else None
        if moved_on:
            found["moved_on"] = moved_on


@dataclass
class RouteState:
    group: ModelGroup
    policy: RetryPolicy  # the retry policy on one deployment: its attempts_per_deployment
    trail: Trail
    health: dict[str, Health]
    prompt_tokens: int
    max_tokens: int | None
    choice: Choice | None = None
    usable: list[DeploymentConfig] = field(default_factory=list)  # not spent, and the job fits their window
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was passed over
    probe: bool = False
    busy: bool = False  # counted in the deployment's calls in flight (least_busy)
    moved_on: str | None = None  # why the job leaves its deployment after this attempt
    hybrid: dict[str, Any] | None = None  # a hybrid group's split: the tier, why, the score and its top features
    started: float = field(default_factory=time.monotonic)

    @property
    def attempts_here(self) -> int:
        """This attempt's number on its deployment."""
        return self.trail.attempts_on(self.choice.deployment) + 1

    def fits(self, entry_context: int) -> bool:
        return self.prompt_tokens + (self.max_tokens or 0) <= entry_context

    def move_on(self, error: ProviderError) -> bool:
        """Whether ``error``, which ends the job on its deployment, sends it on to another instead."""
        others = [d for d in self.usable if d != self.choice.deployment]
        if not error.deployment_fault or not others:
            return False
        self.moved_on = "retries exhausted" if error.retryable else error.kind
        return True

    def summary(self) -> dict[str, Any]:
        """The few words Flower shows of this attempt's route: where it went, and what it passed over."""
        found: dict[str, Any] = {"deployment": self.choice.deployment.label} if self.choice else {}
        if self.moved_on:
            found["moved_on"] = self.moved_on
        if self.skipped:
            found["skipped"] = dict(self.skipped)
        return found

    def as_record(self) -> dict[str, Any]:
        """The record's ``route`` field."""
        choice = self.choice
        return {"group": self.group.name, "strategy": self.group.strategy,
                "deployment": choice.deployment.label if choice else None,
                "reason": choice.reason if choice else None,
                "scores": choice.scores if choice else {},
                "skipped": self.skipped, "tried": self.trail.tried,
                **({"hybrid": self.hybrid} if self.hybrid else {})}
