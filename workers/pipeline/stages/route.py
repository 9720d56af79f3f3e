"""Routing around the call: which deployment of the job's model group serves this attempt, and
what the fleet learns from its call.

Before the call it passes over the deployments the job has spent (retries
exhausted, or a fault another may not have), those whose context window the
job does not fit, and those whose circuit is open; among the group's own
deployments left, the strategy chooses; when none is left, the fallbacks are
tried in order. An open circuit due for a probe sends this job as the one
probe. When every deployment left is open, the job waits as a countdown until
the first may be probed: it spends no attempt. After the call it records the
result in the deployment's circuit, latency and load, and the route, with
every deployment tried, in the job's record.

A job whose group is one deployment with no fallback (any model no group
names) is not routed: it costs nothing here.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

from redis.client import Pipeline as RedisPipeline

from flowcloud.workers import metrics
from flowcloud.workers.core import tally
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import DeploymentConfig, ModelGroup
from flowcloud.workers.core.config_sections import RetryPolicy
from flowcloud.workers.core.errors import AnswerRejected, InvalidJob, ProviderError
from flowcloud.workers.core.records import KEY_PREFIX
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.stage import AfterReader, Stage, StartReader
from flowcloud.workers.routing.answer_check import rejection
from flowcloud.workers.routing.arms import Arms
from flowcloud.workers.routing.complexity import score
from flowcloud.workers.routing.health import Fleet
from flowcloud.workers.routing.router import Router
from flowcloud.workers.routing.strategies import Candidate, Choice, choose
from flowcloud.workers.routing.trail import RouteState, Trail

log = logging.getLogger(__name__)
# The shortest wait of a job whose every deployment is open: a probe may be due any moment.
MIN_OPEN_WAIT_SECONDS = 0.5
# Why a hybrid group's job went to its local tier, by the job's kind: a simple prompt, a short text.
LOCAL_REASON = {"chat": "simple", "embedding": "short"}


class RouteStage(Stage):
    def __init__(self, config: Config, router: Router, fleet: Fleet, arms: Arms) -> None:
        self.config = config
        self.router = router
        self.fleet = fleet
        self.arms = arms
        self._policies: dict[str, RetryPolicy] = {}

    def start(self, job: Job, pipe: RedisPipeline) -> StartReader | None:
        group = job.group
        if group is None or not routed(group):
            return None
        read_health = self.fleet.read_in(pipe, group.chain)
        pipe.hget(KEY_PREFIX + job.id, "route")
        read_weights = self.arms.weights_in(pipe, group.name) if group.strategy == "weighted" else None

        def read(replies: Iterator[Any]) -> None:
            health = read_health(replies)
            trail = Trail.from_record(next(replies))
            job.route = RouteState(with_weights(group, read_weights(replies)) if read_weights else group,
                                   self.policy(group), trail, health, job.prompt_tokens(), job.output_tokens())

        return read

    def policy(self, group: ModelGroup) -> RetryPolicy:
        """The retry policy on one of ``group``'s deployments: its ``attempts_per_deployment``."""
        found = self._policies.get(group.name)
        if found is None:
            attempts = group.attempts_per_deployment or self.config.retry.max_attempts
            found = self._policies[group.name] = self.config.retry.model_copy(update={"max_attempts": attempts})
        return found

    def before(self, job: Job) -> Outcome | None:
        route = job.route
        if route is None:
            return None
        found = self.choose(job, route)
        if isinstance(found, Outcome):
            return found
        route.choice = found
        job.serve_on(found.deployment, self.router.provider(found.deployment.provider))
        if route.group.strategy == "least_busy":
            self.fleet.busy(found.deployment, 1)
            route.busy = True
        metrics.record_route(route.group.name, found.deployment.label, found.reason)
        return None

    def choose(self, job: Job, route: RouteState) -> Choice | Outcome:
        group = route.group
        route.usable = [d for d in group.chain if self.usable(route, d)]
        if group.hybrid is not None:
            local = self.split(job, route)
            if local is not None:
                return local
            route.usable = [d for d in route.usable if d != group.hybrid.local]  # the cloud tier's
        if not route.usable:
            return Outcome.failed(self.nothing_fits(route))
        for deployment in route.usable:  # an open circuit due for its probe first, or it never closes
            if not self.closed(route, deployment) and self.probe(job, route, deployment):
                return Choice(deployment, "probe")
        own = [self.candidate(route, d) for d in group.deployments if d in route.usable and self.closed(route, d)]
        if own:
            return choose(group.strategy, own, job.id, route.prompt_tokens, route.max_tokens)
        fallback = next((d for d in group.fallbacks if d in route.usable and self.closed(route, d)), None)
        if fallback is not None:
            return Choice(fallback, "fallback")
        due = min(route.health[d.id].open_until(group.circuit) for d in route.usable)
        log.info("job %s: every deployment of %s is open; waiting for a probe", job.id, group.name)
        return Outcome.wait(max(due - time.time(), MIN_OPEN_WAIT_SECONDS))

    def split(self, job: Job, route: RouteState) -> Choice | None:
        """A hybrid group's tier for this attempt: the local deployment (its choice), or None for the cloud.

        A chat prompt is judged by its complexity; an embedding by its length alone: any short text
        embeds as well locally, and a long one goes to the cloud tier, over the local model's window
        (``local window``) or the group's ``max_prompt_tokens`` (``long``).
        """
        hybrid = route.group.hybrid
        local = hybrid.local
        languages = frozenset(hybrid.local_languages)
        complexity = score(prompt_text(job), hybrid.weights, languages) if job.is_chat else None
        if route.trail.entry(local) is not None:
            reason = "escalated"  # the local tier tried this job and failed it
        elif route.prompt_tokens > hybrid.max_prompt_tokens:
            reason = "long"
        elif complexity is not None and complexity.score >= hybrid.threshold:
            reason = "complex"
        elif local not in route.usable:
            reason = "local window"
        elif not self.closed(route, local) and not self.probe(job, route, local):
            reason = "local down"
        elif hybrid.max_in_flight and route.health[local.id].busy >= hybrid.max_in_flight:
            reason = "saturated"
        else:
            reason = LOCAL_REASON[job.kind.name]
        tier = "local" if reason == LOCAL_REASON[job.kind.name] else "cloud"
        judged = complexity.as_record() if complexity else {"prompt_tokens": route.prompt_tokens}
        route.hybrid = {"tier": tier, "reason": reason, **judged}
        metrics.record_hybrid(tier, reason)
        if tier == "cloud":
            return None
        # One try on the local tier: a failed call or answer escalates at once.
        route.policy = route.policy.model_copy(update={"max_attempts": 1})
        if hybrid.max_in_flight:
            self.fleet.busy(local, 1)
            route.busy = True
        return Choice(local, "probe" if route.probe else "local")

    def review(self, job: Job, outcome: Outcome) -> Outcome | None:
        """A local answer that fails its check goes on to the cloud tier at once."""
        route = job.route
        if route is None or not route.hybrid or route.hybrid["tier"] != "local" or outcome.ending is not Ending.SUCCEEDED:
            return None
        if not job.is_chat:  # the check reads text; a vector of the right size is all an embedding promises
            return None
        why = rejection(outcome.answer.value, outcome.answer.finish_reason, job.spec.options)
        if why is None:
            return None
        route.moved_on = f"answer {why}"
        log.info("job %s: the local answer was %s; asking the cloud tier", job.id, why)
        return Outcome.retry(AnswerRejected(f"the local answer was {why}", provider=job.provider.name), 0.0)

    def usable(self, route: RouteState, deployment: DeploymentConfig) -> bool:
        if route.trail.spent(deployment):
            route.skipped[deployment.label] = "spent"
            return False
        if not route.fits(self.config.deployment_entry(deployment).context_tokens):
            route.skipped[deployment.label] = "context window"
            return False
        return True

    def closed(self, route: RouteState, deployment: DeploymentConfig) -> bool:
        if route.health[deployment.id].state == "closed":
            return True
        route.skipped[deployment.label] = "circuit open"
        return False

    def probe(self, job: Job, route: RouteState, deployment: DeploymentConfig) -> bool:
        health = route.health[deployment.id]
        if health.open_until(route.group.circuit) > time.time():
            return False
        lease = self.router.provider(deployment.provider).call_seconds
        route.probe = self.fleet.claim_probe(deployment, route.group.circuit, lease)
        if route.probe:
            route.skipped.pop(deployment.label, None)
            log.info("job %s probes %s's open circuit", job.id, deployment.label)
        return route.probe

    def candidate(self, route: RouteState, deployment: DeploymentConfig) -> Candidate:
        return Candidate(deployment, self.config.deployment_entry(deployment), route.health[deployment.id])

    def nothing_fits(self, route: RouteState) -> InvalidJob | ProviderError:
        windows = {d.label: self.config.deployment_entry(d).context_tokens for d in route.group.chain}
        if all(why == "context window" for why in route.skipped.values()):
            return InvalidJob(f"the prompt (about {route.prompt_tokens} tokens, plus max_tokens "
                              f"{route.max_tokens or 0}) fits no deployment of {route.group.name!r}: windows "
                              + ", ".join(f"{label} {size}" for label, size in windows.items()))
        return InvalidJob(f"every deployment of {route.group.name!r} is spent: "
                          + "; ".join(f"{t['deployment']} after {t['attempts']} attempt(s), {t.get('moved_on')}"
                                      for t in route.trail.tried))

    def after(self, job: Job, outcome: Outcome, pipe: RedisPipeline) -> AfterReader | None:
        route = job.route
        if route is None:
            return None
        if route.choice is None:  # ended before a deployment was chosen
            job.record_fields["route"] = route.as_record()
            return None
        deployment = route.choice.deployment
        error = outcome.error if isinstance(outcome.error, ProviderError) else None
        succeeded = outcome.ending is Ending.SUCCEEDED
        # A job a budget sent to its cheaper model (``Job.reroute``) called another deployment than this one.
        called = (succeeded or error is not None) and job.deployment is deployment
        ok = error is None or not error.deployment_fault
        latency_ms = (time.monotonic() - route.started) * 1000
        if called:
            route.trail.note(deployment, error, route.moved_on)
            usage = outcome.answer.usage if succeeded else None
            self.arms.record_in(pipe, route.group.name, deployment.label, tally.minute_of(time.time()), ok=ok,
                                succeeded=succeeded, latency_ms=latency_ms, cost_usd=outcome.cost_usd,
                                prompt_tokens=usage.prompt_tokens if usage else 0,
                                completion_tokens=usage.completion_tokens if usage else 0)
        job.record_fields["route"] = route.as_record()
        if not called and not route.busy:
            return None
        read = self.fleet.record_in(
            pipe, deployment, route.group.circuit, ok=ok, counted=called, latency_ms=latency_ms if called else None,
            output_tokens=outcome.answer.usage.completion_tokens if succeeded else None,
            busy=-1 if route.busy else 0)
        route.busy = False  # released: a second ending of this attempt (a countdown not sent) must not again

        def recorded(replies: Iterator[Any]) -> None:
            *_, last = replies  # the circuit's script is queued last, after the arm's counters
            state = read(last)
            state = state.decode() if isinstance(state, bytes) else state
            if state != route.health[deployment.id].state:
                log.warning("circuit of %s is now %s", deployment.label, state.replace("_", " "))

        return recorded


def prompt_text(job: Job) -> str:
    """What the complexity split reads: every message of a chat job (an embedding is judged by its length)."""
    return "\n".join(m.content for m in job.spec.messages)


def with_weights(group: ModelGroup, weights: dict[str, float]) -> ModelGroup:
    """``group`` with the weights set in Redis (the A/B guard's) in place of the configured ones."""
    if not weights:
        return group
    deployments = [d.model_copy(update={"weight": weights[d.label]}) if d.label in weights else d
                   for d in group.deployments]
    return group.model_copy(update={"deployments": deployments})


def routed(group: ModelGroup) -> bool:
    """Whether a group has a choice to make: more than one deployment, or a fallback."""
    return len(group.chain) > 1
