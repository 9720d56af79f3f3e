"""The sections of flowcloud's configuration: one validated model per part of the system.

``flowcloud.workers.core.config`` assembles them into ``Config`` and loads it from the file and
the environment; this module only says what each section holds and what is valid.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from flowcloud.workers.core import presets
from flowcloud.workers.core.secrets.refs import SecretRef, parse_ref

SIMULATOR_URL = "http://127.0.0.1:8400/v1"
ANTHROPIC_VERSION = "2023-06-01"
# What a kind needs besides the common settings, each with an example; and the settings only one kind uses.
KIND_NEEDS = {
    "anthropic": {"base_url": "https://api.anthropic.com"},
    "azure": {"base_url": "https://my-resource.openai.azure.com", "api_version": '"2024-10-21"'},
}
KIND_ONLY = {"api_version": "azure", "anthropic_version": "anthropic"}
MODEL_KIND_ONLY = {"deployment": "azure"}
Endpoint = Literal["chat", "completions", "embeddings", "batch_api"]
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def checked_ref(text: str) -> str:
    parse_ref(text)  # its ValueError never quotes the text, which may be a key pasted in by mistake
    return text


# A key by reference; a key written out is refused (flowcloud.workers.core.secrets.refs).
KeyRef = Annotated[str, AfterValidator(checked_ref)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    connect: float = Field(5.0, gt=0, description="seconds to open a connection")
    read: float = Field(60.0, gt=0, description="seconds to wait for the answer")

    @property
    def call_seconds(self) -> float:
        """The longest one call may take: what a flight, a flusher lock or a visibility timeout must outlive."""
        return self.connect + self.read


class ModelConfig(Strict):
    """A model a provider serves: its prices and how short prompts to it may be batched."""

    name: str = Field(min_length=1)
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    cached_input_per_mtok: float | None = Field(
        None, ge=0, description="USD per million prompt tokens the provider served from its prompt cache "
        "(usage.prompt_tokens_details.cached_tokens; Anthropic's cache reads); null: the input price")
    kind: Literal["chat", "embedding"] = "chat"
    batch: Literal["none", "completions", "pack"] = Field(
        "none",
        description="how short prompts are merged into one call: completions (the legacy endpoint's "
        "list of prompts), pack (several prompts in one chat request, answered as a JSON list; opt-in) "
        "or none. Embedding models always batch their inputs.",
    )
    max_batch: int | None = Field(None, ge=1, le=2048, description="prompts per batched call; default batching.max_size")
    context_tokens: int = Field(128_000, ge=256, description="the model's context window, for summarization")
    deployment: str | None = Field(None, min_length=1, description="azure only: the deployment serving this model; "
                                                                 "default: its name")

    @model_validator(mode="after")
    def _cached_price_is_a_discount(self) -> ModelConfig:
        if self.cached_input_per_mtok is not None and self.cached_input_per_mtok > self.input_per_mtok:
            raise ValueError(f"cached_input_per_mtok: {self.cached_input_per_mtok} is above input_per_mtok "
                             f"({self.input_per_mtok}); a cached prompt token costs at most a fresh one")
        return self

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for the tokens; ``cached_tokens`` (part of ``prompt_tokens``) at the cached input price."""
        cached_price = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        return ((prompt_tokens - cached_tokens) * self.input_per_mtok + cached_tokens * cached_price
                + completion_tokens * self.output_per_mtok) / 1e6

    def cached_input_saving(self, cached_tokens: int) -> float:
        """What ``cached_tokens`` cost less at the cached input price than at the list input price."""
        return self.cost(cached_tokens, 0) - self.cost(cached_tokens, 0, cached_tokens)


class ProviderConfig(Strict):
    """A cloud AI service: its API (``kind``), where it is, where its keys are and the models it serves.

    ``preset: NAME`` fills in what ``presets.yaml`` knows of a service (``flowcloud.workers.core.presets``)
    before anything is validated, so a preset provider is an ordinary one from here on.
    """

    name: str
    kind: Literal["openai", "simulator", "anthropic", "azure", "sentence_encoder"] = Field(
        description="openai: any OpenAI-compatible API; anthropic: Anthropic's Messages API; azure: Azure "
        "OpenAI (deployments, api-key header); simulator: the bundled simulator, which `flowcloud up` starts itself; "
        "sentence_encoder: embeddings from the MiniLM model in the worker's own process (the minilm preset)"
    )
    preset: str | None = Field(None, description="a known service whose base URL, endpoints and models fill in "
                                                 "what this entry leaves out")
    region: str | None = Field(None, description="which of its preset's base URLs (dashscope, moonshot: cn or intl)")
    base_url: str = SIMULATOR_URL
    allow_private: bool = Field(False, description="let base_url reach loopback, private (RFC 1918, fc00::/7) and "
                                                   "CGNAT addresses: the simulator, a local model server")
    endpoints: list[Endpoint] | None = Field(
        None, description="what the service serves (chat, completions, embeddings, batch_api); null: all its kind offers")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    api_key: KeyRef | None = Field(None, description="where the key is: env:NAME, file:/path or "
                                                  "vault:mount/path#field; never the key itself")
    api_keys: list[KeyRef] | None = Field(None, min_length=1, description="several keys by reference, used in "
                                       "order: a call refused with 401 or 429 moves on to the next")
    key_cooldown_seconds: float = Field(300.0, gt=0, description="how long a key refused with 401 is set aside "
                                                                 "(a 429: its Retry-After)")
    api_version: str | None = Field(None, min_length=1, description="azure only, required: the api-version query")
    anthropic_version: str | None = Field(
        None, min_length=1, description=f"anthropic only: the anthropic-version header; null: {ANTHROPIC_VERSION}")
    default_max_tokens: int = Field(
        4096, ge=1, description="max_tokens sent when a job sets none, to an API that requires one (anthropic)")
    batch_price_ratio: float = Field(
        0.5, gt=0, le=1, description="price of a Batch API request relative to a normal one (OpenAI: half)"
    )
    timeout: Timeouts = Timeouts()
    headers: dict[str, str] = Field(default_factory=dict, description="extra non-secret request headers")
    cloud: bool = Field(True, description="a service outside your own network: with mask configured, prompts to "
                                          "it are masked; false for a server of your own (the ollama, vllm "
                                          "and llamacpp presets), which masking leaves alone")
    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _preset_filled_in(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") is None and data.get("preset") is None:
            raise ValueError("kind: give the provider's kind (openai, anthropic, azure, simulator, sentence_encoder) "
                             f"or a preset ({', '.join(presets.names())})")
        return presets.fill_in(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _settings_fit_kind(self) -> ProviderConfig:
        for field, example in KIND_NEEDS.get(self.kind, {}).items():
            if field not in self.model_fields_set or getattr(self, field) is None:
                raise ValueError(f"{field}: a kind: {self.kind} provider needs it (e.g. {field}: {example})")
        for field, kind in KIND_ONLY.items():
            if getattr(self, field) is not None and self.kind != kind:
                raise ValueError(f"{field}: only kind: {kind} uses it")
        for i, model in enumerate(self.models):
            for field, kind in MODEL_KIND_ONLY.items():
                if getattr(model, field) is not None and self.kind != kind:
                    raise ValueError(f"models.{i}.{field}: only kind: {kind} uses it")
            missing = self._endpoint_missing_for(model)
            if missing:
                raise ValueError(f"models.{i}: {model.name!r} needs the {missing} endpoint, which this provider "
                                 f"does not serve (endpoints: {', '.join(self.endpoints or [])})")
        return self

    def _endpoint_missing_for(self, model: ModelConfig) -> str | None:
        needed = "embeddings" if model.kind == "embedding" else "completions" if model.batch == "completions" else "chat"
        return needed if self.endpoints is not None and needed not in self.endpoints else None

    def serves(self, endpoint: str) -> bool:
        """Whether the service serves ``endpoint`` (chat, completions, embeddings, batch_api) as configured."""
        return self.endpoints is None or endpoint in self.endpoints

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

    @field_validator("api_keys")
    @classmethod
    def _listed_once(cls, texts: list[str] | None) -> list[str] | None:
        if texts is not None and len(set(texts)) != len(texts):
            raise ValueError("a reference is listed twice")
        return texts

    @model_validator(mode="after")
    def _one_way_to_the_keys(self) -> ProviderConfig:
        given = [name for name in ("api_key_env", "api_key", "api_keys") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give the key one way (api_key_env, api_key or api_keys), not {' and '.join(given)}")
        return self

    def key_refs(self) -> list[tuple[SecretRef, str]]:
        """Each key's reference and how the configuration names it; none when the provider takes no key."""
        if self.api_key_env:
            return [(SecretRef("env", self.api_key_env), f"api_key_env {self.api_key_env}")]
        texts = self.api_keys or ([self.api_key] if self.api_key else [])
        return [(parse_ref(text), text) for text in texts]

    def price(self, model: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == model), None)


class VaultSettings(Strict):
    """HashiCorp Vault (or OpenBao), where ``vault:`` keys are read (KV version 2, through hvac)."""

    url: str | None = Field(None, description="Vault's address; null: $VAULT_ADDR")
    token: KeyRef | None = Field(None, description="the token by reference (env:NAME or file:/path); null: $VAULT_TOKEN")
    role_id: KeyRef | None = Field(None, description="AppRole login instead of a token: the role id by reference")
    secret_id: KeyRef | None = Field(None, description="AppRole: the secret id by reference")
    approle_mount: str = Field("approle", min_length=1, description="where the AppRole auth method is mounted")
    namespace: str | None = Field(None, description="Vault Enterprise namespace")
    ca_cert: Path | None = Field(None, description="CA bundle for Vault's TLS; null: the system's")
    timeout: float = Field(5.0, gt=0, le=60, description="seconds a read from Vault may take")
    refresh_seconds: float = Field(30.0, gt=0, description="how often a key's secret is read again for a new version")

    @field_validator("token", "role_id", "secret_id")
    @classmethod
    def _env_or_file(cls, text: str | None) -> str | None:
        if text is not None and parse_ref(text).scheme == "vault":
            raise ValueError("give env:NAME or file:/path: what opens Vault cannot be kept in it")
        return text

    @model_validator(mode="after")
    def _one_login(self) -> VaultSettings:
        if (self.role_id is None) != (self.secret_id is None):
            raise ValueError("role_id: AppRole needs both role_id and secret_id")
        if self.role_id is not None and self.token is not None:
            raise ValueError("token: give a token or an AppRole (role_id, secret_id), not both")
        return self


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
    # One Celery message per job costs a worker about as much CPU as the job's own work; carrying
    # many in one message is what lets a worker keep up with a large submit_many.
    bundle_size: int = Field(
        20, ge=1, le=1000,
        description="jobs of one submit_many call carried per message (1: a message, and a Flower task, per job)",
    )


class CacheSettings(Strict):
    enabled: bool = Field(True, description="answer identical requests from Redis; a job can opt out")
    ttl: int = Field(3600, ge=1, description="seconds an answer is kept")


class BatchingSettings(Strict):
    """Short prompts from independent producers merged into one provider call."""

    enabled: bool = True
    max_size: int = Field(16, ge=1, le=2048, description="prompts per batched call unless the model says")
    flush_ms: int = Field(
        50, ge=1, le=10_000, description="a batch is sent once no prompt has joined it for this long, or when full"
    )
    max_wait_ms: int = Field(200, ge=1, le=60_000, description="the longest the first prompt of a batch waits")
    max_prompt_tokens: int = Field(256, ge=1, description="longer prompts are sent on their own")

    @model_validator(mode="after")
    def _first_prompt_waits_for_a_quiet_lane(self) -> BatchingSettings:
        if self.max_wait_ms < self.flush_ms:
            raise ValueError(f"max_wait_ms: {self.max_wait_ms} must be at least flush_ms ({self.flush_ms})")
        return self


class SummaryStrategy(str, Enum):
    """How a summary is planned (``flowcloud.workers.core.summary_plan``)."""

    CHEAPEST = "cheapest"  # fewest tokens billed: one call when the text fits the window, else the largest chunks
    # (or chunk_tokens' chunks, where those happen to bill fewer)
    FASTEST = "fastest"  # chunks of chunk_tokens summarized in parallel, whatever the window: the least wall time


class SummarizeSettings(Strict):
    """Long texts: one call when they fit the model's window, else chunked, summarized in parallel and
    reduced (a tree when needed)."""

    model: str | None = Field(None, description="model for summaries; default: default_model")
    strategy: SummaryStrategy = Field(
        SummaryStrategy.CHEAPEST, description="cheapest: one call when the text fits the model's context window, "
        "else chunks as large as it allows; fastest: parallel chunks of chunk_tokens")
    chunk_tokens: int = Field(2000, ge=100, description="tokens per chunk sent to the model (strategy fastest)")
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
    mode: Literal["auto", "tasks", "batch_api"] = Field(
        "auto", description="auto: the Batch API when the provider serving the model offers one and the schedule "
        "leaves its completion window, else tasks; tasks: one job per chunk now; batch_api: the provider's "
        "Batch API (cheaper, slower)"
    )
    deadline_hours: float | None = Field(
        None, gt=0, description="mode auto: how long after a firing the run's summaries may arrive; "
        "default: the shortest interval between two firings")

    @model_validator(mode="after")
    def _deadline_only_for_auto(self) -> Schedule:
        if self.deadline_hours is not None and self.mode != "auto":
            raise ValueError(f"deadline_hours: only mode: auto uses it (this schedule's mode is {self.mode})")
        return self

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


MaskKind = Literal["EMAIL", "PHONE", "CARD", "IBAN", "CN_ID", "IP", "SECRET"]
MASK_KINDS: tuple[MaskKind, ...] = ("EMAIL", "PHONE", "CARD", "IBAN", "CN_ID", "IP", "SECRET")


class MaskDetector(Strict):
    """A detector of a site's own (ticket numbers, staff ids): a function the worker imports."""

    kind: str = Field(pattern=r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$", description="its placeholders' kind: <KIND_1>")
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="module:function taking a text and yielding (start, end) spans")


class MaskSettings(Strict):
    """Masking of personal data before prompts leave for a cloud (``flowcloud.workers.core.masking``)."""

    enabled: bool = Field(True, description="mask the jobs of flows not named in flows")
    flows: dict[str, bool] = Field(default_factory=dict, description="per flow: true masks it, false leaves it")
    kinds: list[MaskKind] = Field(default_factory=lambda: list(MASK_KINDS), description="the built-in detectors to run")
    phone_regions: list[str] = Field(default_factory=lambda: ["CN"], min_length=1,
                                     description="regions whose national phone forms are found; +... always is")
    detectors: list[MaskDetector] = Field(default_factory=list, description="detectors of your own, run after the built-in ones")
    restore: bool = Field(False, description="put the originals back into the answer, in the worker")
    at_submit: bool = Field(False, description="mask in the client, before a prompt enters Redis")

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        import phonenumbers  # only when regions are given: the light client need not load it

        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown region(s) {', '.join(unknown)}; use ISO 3166 codes such as CN, US, GB, DE")
        return regions

    @model_validator(mode="after")
    def _restore_needs_the_worker(self) -> MaskSettings:
        if self.restore and self.at_submit:
            raise ValueError("restore: with at_submit the originals never reach a worker, so none could put them "
                             "back; turn off at_submit to restore, or restore in your own code")
        return self

    def covers(self, flow: str | None) -> bool:
        """Whether jobs of ``flow`` are masked."""
        return self.flows.get(flow, self.enabled) if flow is not None else self.enabled


class FlowerSettings(Strict):
    address: str = "127.0.0.1"
    port: int = Field(5555, ge=1, le=65535)
    user: str = "admin"
    password_env: str | None = Field(None, description="variable holding Flower's password; else one is generated")
    metrics_public: bool = Field(False, description="serve Flower's /metrics (which has no auth) to any client; "
                                                    "false: loopback clients only")


class BeatSettings(Strict):
    """The lease in Redis that lets several Beats run while one sends (flowcloud.beat.scheduler)."""

    lock_seconds: int = Field(30, ge=2, description="the lease: a Beat that stops renewing it is replaced "
                                                    "this long after its last renewal")
    loop_seconds: float = Field(5.0, gt=0, description="longest sleep between Beat's ticks; the lease is renewed "
                                                       "every tick, and a standby asks for it this often")

    @model_validator(mode="after")
    def _renewed_before_it_lapses(self) -> BeatSettings:
        if self.lock_seconds < 2 * self.loop_seconds:
            raise ValueError(f"lock_seconds: {self.lock_seconds} s must be at least twice loop_seconds "
                             f"({self.loop_seconds:g} s), or a running Beat's lease lapses between its ticks")
        return self


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
    allow_private: bool = Field(False, description="webhook only: let url reach loopback, private and CGNAT addresses")

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
    """Beat's checks (error rate, budgets, backlog, models), where their alerts go, and degraded mode."""

    check_seconds: float = Field(30.0, ge=1, description="how often Beat sends the checks")
    models_check_seconds: float | None = Field(
        3600.0, ge=1, description="how often Beat asks the providers for their model lists; null: never")
    repeat_minutes: float = Field(60.0, gt=0, description="a firing alert is sent again no sooner than this")
    error_rate: ErrorRateAlert = ErrorRateAlert()
    backlog: BacklogAlert = BacklogAlert()
    budget: BudgetAlert = BudgetAlert()
    sinks: list[AlertSink] = Field(default_factory=lambda: [AlertSink(kind="log")])
    degraded: DegradedMode | None = None


class BudgetConfig(Strict):
    """A spending limit per UTC day or month, for all jobs, one flow or one provider (``flowcloud.workers.budget``)."""

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
