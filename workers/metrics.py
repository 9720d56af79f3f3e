"""Every metric flowcloud exports, and the functions the worker calls to feed them.

``CATALOG`` names each metric, its type and its labels. Labels are bounded:
provider and model come from the configuration, status and reason from the error
tree, queue from the worker's queues, period and scope from the budget checks,
and flow, which users choose freely, is capped by ``FlowLabels``. Nothing here
takes a job id, a prompt or a key as a label value.

Values live in per-process files (prometheus_client's multiprocess mode), so
that the endpoint in the worker's parent can merge what its pool processes
count. ``enable``, called by the worker once ``PROMETHEUS_MULTIPROC_DIR`` names
its own directory (``flowcloud.workers.metrics_endpoint``), creates the metrics. Until
then every ``record_*`` function does nothing: the client, Beat and any other
process never load prometheus_client through here. A recorder never raises; a
failure is logged and the job goes on.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Literal

from flowcloud.workers.core.errors import FlowcloudError
from flowcloud.workers.core.records import FINISHED_STATUSES, JobStatus

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# Flows beyond this many distinct names (per process) are counted under OTHER_FLOW.
MAX_FLOW_LABELS = 100
MAX_LABEL_CHARS = 64
NO_FLOW = "none"
OTHER_FLOW = "other"
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric. ``name`` is the family name: counters are exported as ``<name>_total``,
    histograms as ``<name>_bucket``, ``_count`` and ``_sum``."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    # Gauges only: how the values of pool processes merge (prometheus_client's multiprocess_mode).
    merge: str = "livesum"

    def sample_names(self) -> set[str]:
        """The names this metric's samples carry in a scrape."""
        if self.type == "counter":
            return {self.name + "_total"}
        if self.type == "histogram":
            return {self.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        return {self.name}


PROVIDER_REQUESTS = MetricSpec(
    "flowcloud_provider_requests", "counter",
    "Provider HTTP requests by outcome: status is ok or the error kind (rate_limited, server_error, timeout, ...)",
    ("provider", "model", "status"))
PROVIDER_LATENCY = MetricSpec(
    "flowcloud_provider_request_duration_seconds", "histogram",
    "Seconds from sending a provider request to its answer or error", ("provider", "model"), LATENCY_BUCKETS)
BATCH_SIZE = MetricSpec(
    "flowcloud_provider_batch_size", "histogram",
    "Prompts or inputs carried by one batched provider request", ("provider", "model"), BATCH_BUCKETS)
JOBS_FINISHED = MetricSpec(
    "flowcloud_jobs_finished", "counter", "Jobs finished by a worker, by final status and flow", ("status", "flow"))
JOB_LATENCY = MetricSpec(
    "flowcloud_job_latency_seconds", "histogram",
    "Seconds from submit to the finished record, retries included", ("model", "status"), JOB_BUCKETS)
QUEUE_WAIT = MetricSpec(
    "flowcloud_job_queue_wait_seconds", "histogram",
    "Seconds from submit until a worker first started the job", ("queue",), JOB_BUCKETS)
INPUT_TOKENS = MetricSpec(
    "flowcloud_input_tokens", "counter", "Prompt tokens of finished jobs, as the provider reported them",
    ("provider", "model"))
OUTPUT_TOKENS = MetricSpec(
    "flowcloud_output_tokens", "counter", "Completion tokens of finished jobs, as the provider reported them",
    ("provider", "model"))
COST = MetricSpec(
    "flowcloud_cost_usd", "counter", "US dollars spent on finished jobs, priced from the configuration",
    ("provider", "model", "flow"))
RETRIES = MetricSpec(
    "flowcloud_retries", "counter", "Job attempts scheduled again after a retryable error, by error kind",
    ("reason",))
COALESCED = MetricSpec(
    "flowcloud_coalesced_jobs", "counter",
    "Jobs a worker finished from an identical job's answer instead of calling the provider", ("flow",))
IN_FLIGHT = MetricSpec(
    "flowcloud_jobs_in_flight", "gauge", "Jobs running now in this worker's processes (each job of a bundle counts)",
    ("queue",))
BUDGET_USED = MetricSpec(
    "flowcloud_budget_used_ratio", "gauge",
    "Spend over budget for each budget (1 = exhausted); period day or month, scope global, flow or provider",
    ("period", "scope", "name"), merge="mostrecent")
ROUTE_DECISIONS = MetricSpec(
    "flowcloud_route_decisions", "counter",
    "Attempts routed to each deployment of a model group, by why: the strategy, fallback, probe or only",
    ("group", "deployment", "reason"))
HYBRID_DECISIONS = MetricSpec(
    "flowcloud_hybrid_decisions", "counter",
    "Attempts of hybrid groups' jobs sent to the local or the cloud tier, by why (simple, short, complex, long, "
    "escalated, local down, saturated, ...)", ("tier", "reason"))
RATE_LIMITED = MetricSpec(
    "flowcloud_rate_limited", "counter",
    "Jobs told to wait for a slot because their deployment was at its rpm or tpm", ("deployment",))
MASKED_ENTITIES = MetricSpec(
    "flowcloud_masked_entities", "counter",
    "Values masked in prompts before they left for a cloud, by kind (EMAIL, PHONE, CARD, ...)", ("kind",))
# Fleet-wide values read from Redis at scrape time (flowcloud.workers.metrics_endpoint): every worker reports
# the same number, so dashboards and rules take max(), not sum().
QUEUE_LENGTH = MetricSpec(
    "flowcloud_queue_length", "gauge", "Messages waiting in each queue (fleet-wide, read from the broker)", ("queue",))
CACHE_HITS = MetricSpec(
    "flowcloud_cache_hits", "counter",
    "Jobs answered from the cache at submit, without a task (fleet-wide, read from Redis)", ("flow",))
CIRCUIT_STATE = MetricSpec(
    "flowcloud_circuit_state", "gauge",
    "Circuit breaker of each routed deployment (provider/model): 0 closed, 1 half open, 2 open (fleet-wide, "
    "read from Redis)", ("deployment",))

RECORDED = (PROVIDER_REQUESTS, PROVIDER_LATENCY, BATCH_SIZE, JOBS_FINISHED, JOB_LATENCY, QUEUE_WAIT,
            INPUT_TOKENS, OUTPUT_TOKENS, COST, RETRIES, COALESCED, IN_FLIGHT, BUDGET_USED, ROUTE_DECISIONS,
            HYBRID_DECISIONS, RATE_LIMITED, MASKED_ENTITIES)
READ_AT_SCRAPE = (QUEUE_LENGTH, CACHE_HITS, CIRCUIT_STATE)
CATALOG = RECORDED + READ_AT_SCRAPE


def exported_names() -> set[str]:
    """Every sample name flowcloud can export, for checking rules and dashboards against."""
    return {name for spec in CATALOG for name in spec.sample_names()}


class FlowLabels:
    """Turns user-chosen flow names into bounded label values.

    The first ``limit`` names seen keep their own series; later ones share
    ``other``. No flow is ``none``. The set is per process, so past the limit
    two pool processes may disagree on which flows are named.
    """

    def __init__(self, limit: int = MAX_FLOW_LABELS) -> None:
        self.limit = limit
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, flow: str | None) -> str:
        if not flow:
            return NO_FLOW
        name = str(flow)[:MAX_LABEL_CHARS]
        if name in self._named:
            return name
        with self._lock:
            if len(self._named) < self.limit:
                self._named.add(name)
                return name
        return OTHER_FLOW


flow_label = FlowLabels()
_live: dict[str, Any] | None = None  # family name -> prometheus_client metric, once enabled
_made: dict[tuple[str, tuple[str, ...]], Any] = {}  # (family, label values) -> series; labels are bounded
_task = threading.local()  # the task running on this thread: its queue, and whether its wait is unmeasured


def enable() -> None:
    """Create the metrics (once per process), their values kept in files under
    ``$PROMETHEUS_MULTIPROC_DIR``, which must be set first."""
    global _live
    import prometheus_client
    from prometheus_client import values

    # prometheus_client chooses file-backed values only if the variable was set when it was first
    # imported, and the celery command has imported it already (Flower's command plugin does).
    # Metrics take the class at creation, so choosing it here, before creating ours, is enough.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    if _live is None:
        _live = {spec.name: _build(prometheus_client, spec) for spec in RECORDED}


def _build(prometheus_client: Any, spec: MetricSpec) -> Any:
    kind = {"counter": prometheus_client.Counter, "gauge": prometheus_client.Gauge,
            "histogram": prometheus_client.Histogram}[spec.type]
    options: dict[str, Any] = {"registry": None}
    if spec.type == "histogram":
        options["buckets"] = spec.buckets
    if spec.type == "gauge":
        options["multiprocess_mode"] = spec.merge
    return kind(spec.name, spec.help, spec.labels, **options)


def _recorder(record: Callable[..., None]) -> Callable[..., None]:
    """Does nothing until ``enable``; logs instead of raising, so a metric never fails a job."""

    @functools.wraps(record)
    def guarded(*args: Any, **kwargs: Any) -> None:
        if _live is None:
            return
        try:
            record(*args, **kwargs)
        except Exception:
            log.warning("metrics: %s failed; the job is not affected", record.__name__, exc_info=True)

    return guarded


def _series(spec: MetricSpec, *labels: str) -> Any:
    """The series of ``spec`` with these label values. Kept here once made: prometheus_client's own
    ``labels()`` validates and locks on every call, and a job touches a dozen series."""
    key = (spec.name, labels)
    series = _made.get(key)
    if series is None:
        series = _made[key] = _live[spec.name].labels(*labels)  # type: ignore[index]  # _recorder: enabled
    return series


@_recorder
def record_request(provider: str, payload: dict[str, Any], error: BaseException | None, seconds: float) -> None:
    """One provider request ended (the adapter layer's HTTP boundary calls this after every request)."""
    model = _label(payload.get("model"))
    status = "ok" if error is None else (error.kind if isinstance(error, FlowcloudError) else "interrupted")
    _series(PROVIDER_REQUESTS, provider, model, status).inc()
    _series(PROVIDER_LATENCY, provider, model).observe(seconds)
    # Batched endpoints take a list: legacy completions' prompt, embeddings' input.
    batch = next((value for value in (payload.get("prompt"), payload.get("input")) if isinstance(value, list)), None)
    if batch is not None:
        record_batch(provider, model, len(batch))


@_recorder
def record_batch(provider: str, model: str, size: int) -> None:
    """One provider call carried ``size`` jobs' prompts (for batching that ``record_request`` cannot see)."""
    _series(BATCH_SIZE, provider, model).observe(size)


@_recorder
def record_write(job_id: str, fields: dict[str, Any], billed: bool = True) -> None:
    """A job record was written (flowcloud.workers.core.records calls this in workers, with the record's submitted_at
    and flow among ``fields``): start and finish measurements.

    An unbilled finish (a summary whose cost is its chunk jobs') counts as a job but adds no tokens or cost.
    """
    status, submitted_at = _text(fields.get("status")), fields.get("submitted_at")
    if status == JobStatus.RUNNING:
        _first_start(submitted_at)
    elif status in FINISHED_STATUSES:
        _job_finished(status, fields, submitted_at, billed)


def _first_start(submitted_at: float | None) -> None:
    # Measured once per delivery: a retry or a coalesced job's re-check is not queue wait.
    if getattr(_task, "wait_unmeasured", False) and submitted_at:
        _task.wait_unmeasured = False
        _series(QUEUE_WAIT, _task.queue).observe(max(time.time() - submitted_at, 0.0))


def _job_finished(status: str, fields: dict[str, Any], submitted_at: float | None, billed: bool) -> None:
    provider, model, flow = _label(fields.get("provider")), _label(fields.get("model")), flow_label(fields.get("flow"))
    _series(JOBS_FINISHED, status, flow).inc()
    if submitted_at and fields.get("finished_at"):
        _series(JOB_LATENCY, model, status).observe(max(fields["finished_at"] - submitted_at, 0.0))
    if fields.get("cached"):
        _series(COALESCED, flow).inc()
    if fields.get("cached") or not billed:
        return
    usage = fields.get("usage") or {}
    prompt_tokens, completion_tokens = _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")
    if prompt_tokens or completion_tokens:
        _series(INPUT_TOKENS, provider, model).inc(prompt_tokens)
        _series(OUTPUT_TOKENS, provider, model).inc(completion_tokens)
    cost = float(fields.get("cost_usd") or 0.0)
    if cost > 0 or status == JobStatus.SUCCEEDED:
        _series(COST, provider, model, flow).inc(cost)


def queue_of(request: Any) -> str:
    """The queue a Celery task request came from, for the in-flight and queue-wait labels."""
    return (request.delivery_info or {}).get("routing_key") or "unknown"


@_recorder
def record_task_start(queue: str, first_delivery: bool) -> None:
    """A task started on this thread (Celery's task_prerun)."""
    _task.queue = queue
    _task.wait_unmeasured = first_delivery
    _series(IN_FLIGHT, queue).inc()


@_recorder
def record_task_end() -> None:
    """The task on this thread ended, however it ended (Celery's task_postrun)."""
    queue = getattr(_task, "queue", None)
    if queue is not None:
        _task.queue = None
        _task.wait_unmeasured = False
        _series(IN_FLIGHT, queue).dec()


class QueueWait:
    """Around a job's running write: the write's observer measures the job's queue wait (once per
    delivery, so not a retry's or a coalesced job's second look)."""

    __slots__ = ("queue", "first_delivery", "_outer")

    def __init__(self, queue: str, first_delivery: bool) -> None:
        self.queue, self.first_delivery = queue, first_delivery

    def __enter__(self) -> None:
        self._outer = getattr(_task, "queue", None), getattr(_task, "wait_unmeasured", False)
        _task.queue, _task.wait_unmeasured = self.queue, self.first_delivery

    def __exit__(self, *_: object) -> None:
        _task.queue, _task.wait_unmeasured = self._outer  # a task around it keeps its own


@_recorder
def record_in_flight(queue: str, change: int) -> None:
    """``change`` jobs of ``queue`` began (positive) or ended (negative) running: the pipeline counts each
    of its jobs from its first round trip to its end, a bundle's in one change for them all."""
    _series(IN_FLIGHT, queue).inc(change)


@_recorder
def record_retry(error: BaseException | None) -> None:
    """A task was scheduled again. Waits that carry no error (coalescing, long countdowns) are not retries."""
    if error is not None:
        reason = error.kind if isinstance(error, FlowcloudError) else "other"
        _series(RETRIES, reason).inc()


@_recorder
def set_budget_used(period: str, scope: str, name: str | None, ratio: float) -> None:
    """Spend over budget for one budget: period ``day`` or ``month``; scope ``global``, ``flow`` or
    ``provider``; ``name`` the flow or provider (None for the global budget)."""
    label = flow_label(name) if scope == "flow" else _label(name or "all")
    _series(BUDGET_USED, period, scope, label).set(ratio)


@_recorder
def record_route(group: str, deployment: str, reason: str) -> None:
    """An attempt of a job in ``group`` was sent to ``deployment`` (its label), for ``reason``."""
    _series(ROUTE_DECISIONS, _label(group), _label(deployment), reason).inc()


@_recorder
def record_hybrid(tier: str, reason: str) -> None:
    """A hybrid group's job was sent to ``tier`` (local or cloud) for ``reason``."""
    _series(HYBRID_DECISIONS, tier, reason).inc()


@_recorder
def record_rate_limited(deployment: str) -> None:
    """A job was booked a later slot by its deployment's rate limit (``provider/model``, from the configuration)."""
    _series(RATE_LIMITED, _label(deployment)).inc()


@_recorder
def record_masked(counts: dict[str, int]) -> None:
    """A job's prompt was masked: ``counts`` values of each kind (kinds come from the configuration)."""
    for kind, count in counts.items():
        _series(MASKED_ENTITIES, _label(kind)).inc(count)


def _label(value: Any) -> str:
    return str(value)[:MAX_LABEL_CHARS] if value else "none"


def _text(value: Any) -> str | None:
    return value.value if isinstance(value, Enum) else value


def _tokens(usage: Any, field: str) -> int:
    value = usage.get(field) if isinstance(usage, dict) else getattr(usage, field, 0)
    return int(value or 0)
