"""flowcloud's configuration: one validated file plus ``FLOWCLOUD_*`` environment overrides.

Where it comes from, first match wins: the file named by ``FLOWCLOUD_CONFIG``,
``./flowcloud.yaml``, else built-in defaults that send every job to the bundled
provider simulator. Top-level scalars and the scalars of each section can be
overridden from the environment (``FLOWCLOUD_REDIS_URL``, ``FLOWCLOUD_METRICS_PORT``,
``FLOWCLOUD_WORKER__CONCURRENCY``, ``FLOWCLOUD_RETRY__MAX_ATTEMPTS``...). Any problem raises ``ConfigError`` naming the
field. API keys never live here: a provider names the environment variable that
holds its key, and only the worker reads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.errors import ConfigError

ENV_PREFIX = "FLOWCLOUD_"
DEFAULT_CONFIG_FILE = "flowcloud.yaml"
SIMULATOR_URL = "http://127.0.0.1:8400/v1"
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    connect: float = Field(5.0, gt=0, description="seconds to open a connection")
    read: float = Field(60.0, gt=0, description="seconds to wait for the answer")


class ModelConfig(Strict):
    """A model a provider serves: its prices and how short prompts to it may be batched."""

    name: str = Field(min_length=1)
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    kind: Literal["chat", "embedding"] = "chat"
    batch: Literal["none", "completions", "pack"] = Field(
        "none",
        description="how short prompts are merged into one call: completions (the legacy endpoint's "
        "list of prompts), pack (several prompts in one chat request, answered as a JSON list; opt-in) "
        "or none. Embedding models always batch their inputs.",
    )
    max_batch: int | None = Field(None, ge=1, le=2048, description="prompts per batched call; default batching.max_size")
    context_tokens: int = Field(128_000, ge=256, description="the model's context window, for summarization")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


class ProviderConfig(Strict):
    name: str
    kind: Literal["openai", "simulator"] = Field(
        description="openai: any OpenAI-compatible API; simulator: the bundled simulator, "
        "which `flowcloud up` starts itself"
    )
    base_url: str = SIMULATOR_URL
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    batch_price_ratio: float = Field(
        0.5, gt=0, le=1, description="price of a Batch API request relative to a normal one (OpenAI: half)"
    )
    timeout: Timeouts = Timeouts()
    headers: dict[str, str] = Field(default_factory=dict, description="extra non-secret request headers")
    models: list[ModelConfig] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, name: str) -> str:
        if not PROVIDER_NAME.match(name):
            raise ValueError("use lower-case letters, digits, '-' and '_' (it becomes a metric label)")
        return name

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, name: str | None) -> str | None:
        if name is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError("give the NAME of an environment variable, not the key itself")
        return name

    def api_key(self) -> str | None:
        """The key, read from the environment at call time; never stored or logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def price(self, model: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == model), None)


class RetryPolicy(Strict):
    max_attempts: int = Field(5, ge=1, le=50, description="provider calls per job, first one included")
    base_delay: float = Field(0.5, gt=0, description="backoff base in seconds (doubles per attempt)")
    max_delay: float = Field(30.0, gt=0, description="backoff cap in seconds")
    max_retry_after: float = Field(
        900.0, gt=0, description="longest Retry-After honoured; a provider asking for more fails the job"
    )


class WorkerSettings(Strict):
    # threads, not gevent: measured with bench --compare-pools, gevent's concurrent acks exhaust
    # kombu's Redis connection pool and lose acks (jobs then wait out the visibility timeout).
    pool: Literal["threads", "gevent", "prefork", "solo"] = "threads"
    concurrency: int = Field(100, ge=1, le=10_000, description="provider calls in flight per worker process")
    visibility_timeout: int = Field(3600, ge=5, description="seconds before an unacked job is redelivered")
    result_ttl: int = Field(86_400, ge=60, description="seconds a result record is kept")


class CacheSettings(Strict):
    enabled: bool = Field(True, description="answer identical requests from Redis; a job can opt out")
    ttl: int = Field(3600, ge=1, description="seconds an answer is kept")


class BatchingSettings(Strict):
    """Short prompts from independent producers merged into one provider call."""

    enabled: bool = True
    max_size: int = Field(16, ge=1, le=2048, description="prompts per batched call unless the model says")
    flush_ms: int = Field(50, ge=1, le=10_000, description="longest a prompt waits for others to join its batch")
    max_prompt_tokens: int = Field(256, ge=1, description="longer prompts are sent on their own")


class SummarizeSettings(Strict):
    """Long texts: chunked, each chunk summarized in parallel, then reduced (a tree when needed)."""

    model: str | None = Field(None, description="model for summaries; default: default_model")
    chunk_tokens: int = Field(2000, ge=100, description="tokens per chunk sent to the model")
    overlap_tokens: int = Field(100, ge=0, description="tokens repeated between neighbouring chunks")
    summary_tokens: int = Field(300, ge=16, description="max_tokens of each summary")
    reduce_tokens: int = Field(6000, ge=200, description="most tokens of summaries merged by one reduce call")

    @model_validator(mode="after")
    def _overlap_fits(self) -> SummarizeSettings:
        if self.overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError(f"overlap_tokens: {self.overlap_tokens} must be under half of chunk_tokens")
        return self


class Schedule(Strict):
    """A summarization run that Celery Beat starts on a cron schedule."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    cron: str = Field(description="five fields: minute hour day-of-month month day-of-week")
    source: str = Field(min_length=1, description="glob of the documents to summarize")
    output: Path
    model: str | None = None
    mode: Literal["tasks", "batch_api"] = Field(
        "tasks", description="tasks: one job per chunk now; batch_api: the provider's Batch API (cheaper, slower)"
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"{cron!r} is not a cron line; give five fields, e.g. '0 2 * * *' for 02:00 daily")
        return cron


class FlowWorkerSettings(Strict):
    """Workers that run whole Langflow flows (``flowcloud worker --flows``): CPU work, so processes."""

    pool: Literal["prefork", "threads", "solo"] = "prefork"
    concurrency: int = Field(2, ge=1, le=256, description="flows run at once per flow worker")


class FlowerSettings(Strict):
    address: str = "127.0.0.1"
    port: int = Field(5555, ge=1, le=65535)
    user: str = "admin"
    password_env: str | None = Field(None, description="variable holding Flower's password; else one is generated")
    metrics_public: bool = Field(False, description="serve Flower's /metrics (which has no auth) to any client; "
                                                    "false: loopback clients only")


class ErrorRateAlert(Strict):
    threshold: float = Field(0.05, gt=0, le=1, description="share of finished jobs that failed")
    window_minutes: int = Field(5, ge=1, le=120, description="minutes looked back, the current one included")
    min_jobs: int = Field(20, ge=1, description="fewer finished jobs in the window give no alert")


class BacklogAlert(Strict):
    threshold: int | None = Field(1000, ge=1, description="messages waiting in the queues; null: no check")
    queues: list[str] = Field(default_factory=lambda: ["flowcloud", "flowcloud.flows"], min_length=1)


class BudgetAlert(Strict):
    enabled: bool = True
    default_alert_at: list[float] = Field(default_factory=lambda: [0.8, 1.0], min_length=1,
                                          description="thresholds for a budget that names no alert_at")
    degrade_at: float = Field(1.0, gt=0, description="used ratio at which a budget switches on degraded mode")


class AlertSink(Strict):
    """Where alerts go: the worker's log, or a webhook (Slack-compatible JSON body)."""

    kind: Literal["log", "webhook"]
    url: str | None = Field(None, description="webhook only; alerts are posted here and nowhere else")
    headers: dict[str, str] = Field(default_factory=dict, description="webhook only; never logged")
    timeout: float = Field(5.0, gt=0, le=30, description="seconds before a webhook post is given up")

    @model_validator(mode="after")
    def _url_fits_kind(self) -> AlertSink:
        if self.kind == "webhook" and not re.match(r"^https?://[^/\s@]+(/\S*)?$", self.url or ""):
            raise ValueError(f"url: {self.url!r} is not an http(s) URL (a webhook needs one, without user:password@)")
        if self.kind == "log" and (self.url or self.headers):
            raise ValueError("url: a log sink takes no url or headers (use kind: webhook)")
        return self


class DegradedMode(Strict):
    """What submit does while the backlog or a budget is over its threshold."""

    model: str | None = Field(None, description="send chat jobs for more expensive models to this one")
    refuse_priority_below: int | None = Field(None, ge=0, le=10, description="refuse jobs with a lower priority")
    # Not "on": YAML 1.1 reads a bare on as true.
    triggers: list[Literal["backlog", "budget"]] = Field(default_factory=lambda: ["backlog", "budget"],
                                                         min_length=1, description="checks that switch it on")

    @model_validator(mode="after")
    def _does_something(self) -> DegradedMode:
        if self.model is None and self.refuse_priority_below is None:
            raise ValueError("model: give a cheaper model, refuse_priority_below, or both")
        return self


class AlertSettings(Strict):
    """Beat's checks (error rate, budgets, backlog), where their alerts go, and degraded mode."""

    check_seconds: float = Field(30.0, ge=1, description="how often Beat sends the checks")
    repeat_minutes: float = Field(60.0, gt=0, description="a firing alert is sent again no sooner than this")
    error_rate: ErrorRateAlert = ErrorRateAlert()
    backlog: BacklogAlert = BacklogAlert()
    budget: BudgetAlert = BudgetAlert()
    sinks: list[AlertSink] = Field(default_factory=lambda: [AlertSink(kind="log")])
    degraded: DegradedMode | None = None


class BudgetConfig(Strict):
    """A spending limit per UTC day or month, for all jobs, one flow or one provider (``workers.budget``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    period: Literal["daily", "monthly"]
    scope: Literal["global", "flow", "provider"] = "global"
    match: str | None = Field(None, description="the flow or provider the budget covers; null for global")
    limit_usd: float = Field(gt=0)
    alert_at: list[float] | None = Field(
        None, min_length=1, description="used ratios that alert; null: alerts.budget.default_alert_at (0.8, 1.0)")
    on_exceed: Literal["refuse", "degrade"] = Field(
        "refuse", description="refuse: the job fails with budget_exceeded; degrade: it runs on degrade_model if that fits")
    degrade_model: str | None = Field(None, description="the cheaper model degraded jobs use")

    @field_validator("alert_at")
    @classmethod
    def _ratios(cls, ratios: list[float] | None) -> list[float] | None:
        if ratios is not None and not all(0 < r <= 2 for r in ratios):
            raise ValueError(f"{ratios} must be ratios of the limit above 0 and at most 2, e.g. [0.8, 1.0]")
        return sorted(set(ratios)) if ratios is not None else None

    @model_validator(mode="after")
    def _policy_complete(self) -> BudgetConfig:
        if self.scope == "global" and self.match is not None:
            raise ValueError("match: a global budget covers every job; remove match or set scope: flow|provider")
        if self.scope != "global" and not self.match:
            raise ValueError(f"match: a {self.scope} budget needs the name of the {self.scope} it covers")
        if self.on_exceed == "degrade" and not self.degrade_model:
            raise ValueError("degrade_model: on_exceed: degrade needs the cheaper model to run jobs on")
        if self.on_exceed == "refuse" and self.degrade_model:
            raise ValueError("degrade_model: only used with on_exceed: degrade")
        return self


class Config(Strict):
    redis_url: str | None = Field(None, description="broker and result store; unset: embedded Redis under var_dir")
    var_dir: Path = Path("var")
    default_model: str = "gpt-4o-mini"
    metrics_port: int = Field(9808, ge=0, le=65535, description="Prometheus endpoint of each worker host; 0: none")
    metrics_address: str = Field("127.0.0.1", min_length=1,
                                 description="interface the metrics endpoint listens on (0.0.0.0 in a container)")
    providers: list[ProviderConfig] = Field(min_length=1)
    retry: RetryPolicy = RetryPolicy()
    worker: WorkerSettings = WorkerSettings()
    flow_worker: FlowWorkerSettings = FlowWorkerSettings()
    cache: CacheSettings = CacheSettings()
    batching: BatchingSettings = BatchingSettings()
    summarize: SummarizeSettings = SummarizeSettings()
    schedules: list[Schedule] = Field(default_factory=list)
    batch_api_poll_seconds: float = Field(60.0, gt=0, description="how often Beat polls provider batches")
    flower: FlowerSettings = FlowerSettings()
    budgets: list[BudgetConfig] = Field(default_factory=list)
    budget_output_tokens: int = Field(
        4096, ge=1, description="max_tokens given to a job under a budget that sets none: its reservation's bound")
    alerts: AlertSettings | None = Field(None, description="Beat's checks and alert sinks; unset: no checks")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        names = [p.name for p in self.providers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"providers: duplicate provider name(s) {', '.join(dupes)}")
        slowest = max(p.timeout.connect + p.timeout.read for p in self.providers)
        if self.worker.visibility_timeout <= slowest:
            raise ValueError(
                f"worker.visibility_timeout: {self.worker.visibility_timeout} s is too short for a provider "
                f"call that may take {slowest:g} s; a running job would be delivered twice "
                f"(use more than {slowest:g})"
            )
        for where, model in self._named_models():
            if model is not None and model not in self.model_names():
                raise ValueError(f"{where}: {model!r} is served by no provider (models: {', '.join(self.model_names())})")
        names = [s.name for s in self.schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schedules: duplicate schedule name(s) {', '.join(dupes)}")
        if not any(p.price(self.default_model) for p in self.providers):
            raise ValueError(
                f"default_model: {self.default_model!r} is served by no provider "
                f"(models: {', '.join(self.model_names())})"
            )
        return self

    @model_validator(mode="after")
    def _budgets_consistent(self) -> Config:
        names = [b.name for b in self.budgets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"budgets: duplicate budget name(s) {', '.join(dupes)}")
        providers = [p.name for p in self.providers]
        for i, budget in enumerate(self.budgets):
            if budget.scope == "provider" and budget.match not in providers:
                raise ValueError(f"budgets.{i}.match: no provider {budget.match!r} (providers: {', '.join(providers)})")
            model = self.model(budget.degrade_model) if budget.degrade_model else None
            if budget.degrade_model and (model is None or model.kind != "chat"):
                raise ValueError(f"budgets.{i}.degrade_model: {budget.degrade_model!r} is no configured chat model "
                                 f"(models: {', '.join(self.model_names())})")
        return self

    def _named_models(self) -> list[tuple[str, str | None]]:
        return [("summarize.model", self.summarize.model)] + [
            (f"schedules.{i}.model", s.model) for i, s in enumerate(self.schedules)
        ] + [("alerts.degraded.model", self.alerts.degraded.model if self.alerts and self.alerts.degraded else None)]

    def model(self, name: str) -> ModelConfig | None:
        """The first configured entry for model ``name`` (the one the router sends it to)."""
        return next((m for p in self.providers for m in p.models if m.name == name), None)

    def batch_size(self, name: str) -> int:
        model = self.model(name)
        return (model.max_batch if model and model.max_batch else None) or self.batching.max_size

    def model_names(self) -> list[str]:
        return list(dict.fromkeys(m.name for p in self.providers for m in p.models))

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)

    def uses_simulator(self) -> bool:
        return any(p.kind == "simulator" for p in self.providers)

    def redis_url_or_embedded(self) -> str:
        """The Redis to use: the configured URL, else the embedded server's socket under var_dir."""
        return self.redis_url or f"redis+socket://{self.embedded_redis_socket()}"

    def embedded_redis_socket(self) -> Path:
        return self.var_dir / "redis.sock"


DEFAULTS: dict[str, Any] = {
    "providers": [
        {
            "name": "simulator",
            "kind": "simulator",
            "base_url": SIMULATOR_URL,
            "models": [
                {"name": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.60},
                {"name": "gpt-4o", "input_per_mtok": 2.50, "output_per_mtok": 10.00},
                {"name": "gpt-3.5-turbo-instruct", "input_per_mtok": 1.50, "output_per_mtok": 2.00,
                 "batch": "completions"},
                {"name": "text-embedding-3-small", "input_per_mtok": 0.02, "kind": "embedding"},
            ],
        }
    ],
}


def config_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """The file to read, or None for the built-in defaults."""
    if env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
        if not path.is_file():
            raise ConfigError("FLOWCLOUD_CONFIG", f"{path} does not exist or is not a file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}{line}", f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping of settings")
    return data


def env_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """``FLOWCLOUD_X`` and ``FLOWCLOUD_SECTION__X`` variables, keyed by the field path they set."""
    found = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        path = tuple(var[len(ENV_PREFIX):].lower().split("__"))
        # Other FLOWCLOUD_* variables belong to other parts (the simulator, tests).
        if path[0] in Config.model_fields and len(path) <= 2:
            found[path] = value
    return found


def apply_env(data: dict[str, Any], overrides: dict[tuple[str, ...], str]) -> dict[str, Any]:
    merged = {**data}
    for path, value in overrides.items():
        if len(path) == 1:
            merged[path[0]] = value
        else:
            merged[path[0]] = {**(merged.get(path[0]) or {}), path[1]: value}
    return merged


def validate(data: dict[str, Any], from_env: Iterable[tuple[str, ...]] = ()) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        # An unknown key usually explains a "missing" one beside it: report it first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        if not field:  # whole-config checks name their field as "field: reason"
            field, _, reason = reason.partition(": ")
        if first["type"] == "extra_forbidden":
            reason = "unknown setting (check its spelling and indentation)"
        if tuple(field.split(".")) in set(from_env):
            field += f" (from ${ENV_PREFIX}{field.upper().replace('.', '__')})"
        more = f"; {len(errors) - 1} more problem(s) after this one" if len(errors) > 1 else ""
        raise ConfigError(field, reason + more) from exc


def load_config(env: Mapping[str, str] = os.environ) -> Config:
    """Read, overlay and validate the configuration; raises ``ConfigError``."""
    path = config_path(env)
    data = read_file(path) if path else {}
    if "providers" not in data:
        data = {**DEFAULTS, **data}
    overrides = env_overrides(env)
    config = validate(apply_env(data, overrides), overrides)
    return config.model_copy(update={"var_dir": config.var_dir.resolve()})


_current: Config | None = None


def get_config() -> Config:
    """The process-wide configuration, loaded once."""
    global _current
    if _current is None:
        _current = load_config()
    return _current


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data with secrets hidden, for display."""
    data = config.model_dump(mode="json")
    if data.get("redis_url"):
        data["redis_url"] = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", data["redis_url"])
    for provider, model in zip(data["providers"], config.providers):
        if model.api_key_env:
            state = "set" if model.api_key() else "NOT SET"
            provider["api_key_env"] = f"{model.api_key_env} ({state})"
    for sink in (data.get("alerts") or {}).get("sinks", []):
        if sink.get("url"):  # a webhook URL often is its own secret (Slack's are)
            sink["url"] = re.sub(r"^(https?://[^/]+).*$", r"\1/***", sink["url"])
        sink["headers"] = {name: "***" for name in sink.get("headers", {})}
    return data
