"""One attempt at one job as it goes through the pipeline: what it asks, and what the stages found.

A ``Job`` starts as a request (what the Celery message carried) and is read by
the pipeline into a spec, a provider and a model; the stages then note on it
what they took (a flight, a budget hold) and chose (a lane), so that their
``after`` hooks know what to give back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from flowcloud.workers.budget import Hold
from flowcloud.workers.core.chunking import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from flowcloud.workers.core.config_routing import DeploymentConfig, ModelGroup
from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, parse_embedding_spec, parse_spec
from flowcloud.workers.lanes.lane import Lane
from flowcloud.workers.providers import Provider

if TYPE_CHECKING:
    from flowcloud.workers.core.masking import Placeholders
    from flowcloud.workers.routing.trail import RouteState


@dataclass(frozen=True)
class Kind:
    """A kind of job the pipeline runs: how its request is read, which models serve it, and the
    record field its answer lands in."""

    name: Literal["chat", "embedding"]
    parse: Callable[[Any], CompletionSpec | EmbeddingSpec]
    field: Literal["text", "embedding"]


CHAT = Kind("chat", parse_spec, "text")
EMBEDDING = Kind("embedding", parse_embedding_spec, "embedding")


@dataclass(eq=False)
class Job:
    id: str
    request: dict
    kind: Kind
    attempt: int = 1
    worker: str | None = None
    queue: str = "unknown"
    # The first delivery of the job's message: its queue wait is measured when it starts running.
    first_delivery: bool = True
    in_flight: bool = False  # counted in the in-flight gauge: from the pipeline's start until its end
    # Read from the request by the pipeline:
    spec: CompletionSpec | EmbeddingSpec | None = None
    group: ModelGroup | None = None  # the model group its model names
    deployment: DeploymentConfig | None = None  # the group's deployment that serves this attempt
    provider: Provider | None = None
    model: str | None = None  # the deployment's model: what the provider is asked for
    # Noted by the stages:
    route: RouteState | None = None  # how this attempt was routed (a group with a choice to make)
    record_fields: dict[str, Any] = field(default_factory=dict)  # more for the record's last write
    flight: str | None = None  # the cache key whose provider call this job leads
    hold: Hold | None = None  # its budget reservation
    degraded: bool = False  # sent to a budget's cheaper model: its answer is not the asked model's
    lane: Lane | None = None  # set when its call may be shared with other jobs
    placeholders: Placeholders | None = None  # what masking replaced in its prompt: only ever in this process

    @property
    def flow(self) -> str | None:
        return self.spec.flow if self.spec is not None else self.asked("flow")

    def asked(self, field: str) -> Any:
        """A field of the request as sent, before it is read (it may not even be a mapping)."""
        return self.request.get(field) if isinstance(self.request, dict) else None

    @property
    def is_chat(self) -> bool:
        return isinstance(self.spec, CompletionSpec)

    @property
    def text(self) -> str:
        """What a lane carries: a batched chat job is one user message; an embedding, its input."""
        return self.spec.messages[0].content if self.is_chat else self.spec.input

    def prompt_tokens(self) -> int:
        if self.is_chat:
            return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in self.spec.messages)
        return estimate_tokens(self.spec.input)

    def output_tokens(self) -> int | None:
        """The output bound its reservation assumes: None (unbounded) for a chat job without max_tokens;
        an embedding produces no tokens."""
        return self.spec.max_tokens if self.is_chat else 0

    def serve_on(self, deployment: DeploymentConfig, provider: Provider) -> None:
        self.deployment, self.provider, self.model = deployment, provider, deployment.model

    def reroute(self, provider: Provider, model: str) -> None:
        """Send the job to a cheaper model than it asked for."""
        self.provider, self.model, self.degraded = provider, model, True
        self.deployment = None  # none of its group's: routing records nothing of this call
