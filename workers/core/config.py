"""flowcloud's configuration: one validated file plus ``FLOWCLOUD_*`` environment overrides.

Where it comes from, first match wins: the file named by ``FLOWCLOUD_CONFIG``,
``./flowcloud.yaml``, else built-in defaults that send every job to the bundled
provider simulator. Top-level scalars and the scalars of each section can be
overridden from the environment (``FLOWCLOUD_REDIS_URL``, ``FLOWCLOUD_METRICS_PORT``,
``FLOWCLOUD_WORKER__CONCURRENCY``, ``FLOWCLOUD_RETRY__MAX_ATTEMPTS``...). Any problem raises ``ConfigError`` naming the
field. API keys never live here: a provider names the environment variable that
holds its key, and only the worker reads it. The sections themselves are in
``flowcloud.workers.core.config_sections``.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from flowcloud.workers.core import local_model, redis_conn
from flowcloud.workers.core.config_routing import DeploymentConfig, ModelGroup
from flowcloud.workers.core.config_sections import (  # the sections the root model holds, importable from here too
    SIMULATOR_URL,
    AlertSettings,
    BatchingSettings,
    BeatSettings,
    BudgetConfig,
    CacheSettings,
    FlowerSettings,
    FlowWorkerSettings,
    MaskSettings,
    ModelConfig,
    ProviderConfig,
    RetryPolicy,
    Schedule,
    Strict,
    SummarizeSettings,
    VaultSettings,
    WorkerSettings,
)
from flowcloud.workers.core.errors import ConfigError, InvalidJob
from flowcloud.workers.core.limits import LimitSettings

ENV_PREFIX = "FLOWCLOUD_"
DEFAULT_CONFIG_FILE = "flowcloud.yaml"
FIELD_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*$")


class Config(Strict):
    # A validation error's text would otherwise quote its input, redis_url and its password with it.
    model_config = ConfigDict(hide_input_in_errors=True)

    redis_url: str | None = Field(None, description="broker and result store; unset: embedded Redis under var_dir")
    broker_url: str | None = Field(None, description="where Celery's messages wait, Redis or RabbitMQ (amqp://); "
                                                     "unset: the Redis of redis_url")
    var_dir: Path = Path("var")
    default_model: str = "gpt-4o-mini"
    metrics_port: int = Field(9808, ge=0, le=65535, description="Prometheus endpoint of each worker host; 0: none")
    metrics_address: str = Field("127.0.0.1", min_length=1,
                                 description="interface the metrics endpoint listens on (0.0.0.0 in a container)")
    providers: list[ProviderConfig] = Field(min_length=1)
    model_groups: list[ModelGroup] = Field(
        default_factory=list, description="logical model names served by deployments across providers")
    retry: RetryPolicy = RetryPolicy()
    worker: WorkerSettings = WorkerSettings()
    flow_worker: FlowWorkerSettings = FlowWorkerSettings()
    cache: CacheSettings = CacheSettings()
    batching: BatchingSettings = BatchingSettings()
    summarize: SummarizeSettings = SummarizeSettings()
    schedules: list[Schedule] = Field(default_factory=list)
    batch_api_poll_seconds: float = Field(60.0, gt=0, description="how often Beat polls provider batches")
    flower: FlowerSettings = FlowerSettings()
    beat: BeatSettings = BeatSettings()
    budgets: list[BudgetConfig] = Field(default_factory=list)
    budget_output_tokens: int = Field(
        4096, ge=1, description="max_tokens given to a job under a budget that sets none: its reservation's bound")
    alerts: AlertSettings | None = Field(None, description="Beat's checks and alert sinks; unset: no checks")
    mask: MaskSettings | None = Field(None, description="masking of personal data before prompts reach a cloud; "
                                                      "unset: none")
    vault: VaultSettings | None = Field(None, description="where vault: keys are read; unset: $VAULT_ADDR, $VAULT_TOKEN")
    limits: LimitSettings = Field(LimitSettings(), description="how large one submission may be, globally and "
                                                               "per flow (flowcloud.workers.core.limits)")

    @field_validator("redis_url")
    @classmethod
    def _usable_redis_url(cls, url: str | None) -> str | None:
        if url:
            redis_conn.check_url(url)
        return url

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, url: str | None) -> str | None:
        from flowcloud.workers.core.broker import check_url  # with Celery: only a configured broker pays it

        return check_url(url) if url else url

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        refuse_duplicates("providers", "provider", [p.name for p in self.providers])
        slowest = max(p.timeout.call_seconds for p in self.providers)
        if self.worker.visibility_timeout <= slowest:
            raise ValueError(
                f"worker.visibility_timeout: {self.worker.visibility_timeout} s is too short for a provider "
                f"call that may take {slowest:g} s; a running job would be delivered twice "
                f"(use more than {slowest:g})"
            )
        self._check_groups()
        for where, model in self._named_models():
            if model is not None and self.model(model) is None:
                raise ValueError(f"{where}: {model!r} is served by no provider (models: {', '.join(self.model_names())})")
        refuse_duplicates("schedules", "schedule", [s.name for s in self.schedules])
        if self.model(self.default_model) is None:
            raise ValueError(
                f"default_model: {self.default_model!r} is served by no provider "
                f"(models: {', '.join(self.model_names())})"
            )
        return self

    @model_validator(mode="after")
    def _budgets_consistent(self) -> Config:
        refuse_duplicates("budgets", "budget", [b.name for b in self.budgets])
        providers = [p.name for p in self.providers]
        for i, budget in enumerate(self.budgets):
            if budget.scope == "provider" and budget.match not in providers:
                raise ValueError(f"budgets.{i}.match: no provider {budget.match!r} (providers: {', '.join(providers)})")
            model = self.model(budget.degrade_model) if budget.degrade_model else None
            if budget.degrade_model and (model is None or model.kind != "chat"):
                raise ValueError(f"budgets.{i}.degrade_model: {budget.degrade_model!r} is no configured chat model "
                                 f"(models: {', '.join(self.model_names())})")
        return self

    def _check_groups(self) -> None:
        refuse_duplicates("model_groups", "group", [g.name for g in self.model_groups])
        for i, group in enumerate(self.model_groups):
            kinds = set()
            for where, deployment in group_entries(group):
                provider = next((p for p in self.providers if p.name == deployment.provider), None)
                if provider is None:
                    raise ValueError(f"model_groups.{i}.{where}.provider: no provider {deployment.provider!r} "
                                     f"(providers: {', '.join(p.name for p in self.providers)})")
                entry = provider.price(deployment.model)
                if entry is None:
                    raise ValueError(f"model_groups.{i}.{where}.model: provider {provider.name!r} lists no model "
                                     f"{deployment.model!r} (it lists: {', '.join(m.name for m in provider.models)})")
                kinds.add(entry.kind)
            if len(kinds) > 1:
                raise ValueError(f"model_groups.{i}: mixes chat and embedding models; a group serves one kind")

    def _named_models(self) -> list[tuple[str, str | None]]:
        return [("summarize.model", self.summarize.model)] + [
            (f"schedules.{i}.model", s.model) for i, s in enumerate(self.schedules)
        ] + [("alerts.degraded.model", self.alerts.degraded.model if self.alerts and self.alerts.degraded else None)]

    def group(self, name: str) -> ModelGroup:
        """The group a job asking for ``name`` is routed in: a configured group of that name, else the
        one-deployment group of the first provider that lists the model. Raises ``InvalidJob``."""
        found = self._groups.get(name)
        if found is None:
            provider, _ = self.serving(name)
            found = ModelGroup(name=name, deployments=[DeploymentConfig(provider=provider.name, model=name)])
            self._groups[name] = found
        return found

    def deployment_entry(self, deployment: DeploymentConfig) -> ModelConfig:
        """The deployment's model entry at its provider (prices, batching, window)."""
        return self.provider(deployment.provider).price(deployment.model)

    @cached_property
    def _groups(self) -> dict[str, ModelGroup]:
        return {g.name: g for g in self.model_groups}

    def serving(self, model: str) -> tuple[ProviderConfig, ModelConfig]:
        """Which provider serves ``model``, and its entry there (prices, batching, window).

        A model a provider lists: the first provider that lists it. A group's name:
        its first deployment, which stands for the group where a job is checked
        before it is routed (its kind, its batching). Raises ``InvalidJob`` naming
        the configured models.
        """
        found = self._serving(model)
        if found is None:
            served = ", ".join(self.model_names())
            raise InvalidJob(f"no provider serves model {model!r}; configured models: {served}")
        return found

    def model(self, name: str) -> ModelConfig | None:
        """The entry for model ``name`` at the provider serving it, or None when none does."""
        found = self._serving(name)
        return found[1] if found else None

    def _serving(self, model: str) -> tuple[ProviderConfig, ModelConfig] | None:
        group = self._groups.get(model)
        if group is not None:
            first = group.deployments[0]
            return self.provider(first.provider), self.deployment_entry(first)
        return next(((p, m) for p in self.providers for m in p.models if m.name == model), None)

    def batch_size(self, name: str) -> int:
        model = self.model(name)
        return (model.max_batch if model and model.max_batch else None) or self.batching.max_size

    def model_names(self) -> list[str]:
        """Every name a job may ask for: the groups', then the providers' models."""
        return list(dict.fromkeys([g.name for g in self.model_groups] + [m.name for p in self.providers for m in p.models]))

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)

    def uses_simulator(self) -> bool:
        return any(p.kind == "simulator" for p in self.providers)

    def redis_url_or_embedded(self) -> str:
        """The Redis to use: the configured URL, else the embedded server's socket under var_dir."""
        return self.redis_url or f"redis+socket://{self.embedded_redis_socket()}"

    def broker_url_or_redis(self) -> str:
        """Where Celery's messages go: ``broker_url``, else the Redis that holds everything else."""
        return self.broker_url or self.redis_url_or_embedded()

    def embedded_redis_socket(self) -> Path:
        return self.var_dir / "redis.sock"


DEFAULTS: dict[str, Any] = {
    "providers": [
        {
            "name": "simulator",
            "kind": "simulator",
            "base_url": SIMULATOR_URL,
            "allow_private": True,  # the simulator `flowcloud up` starts on loopback
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


# With the local model installed (``make local-model``), the defaults serve it as the local tier of a
# hybrid group, so the demo answers simple questions on this machine and the rest on the simulator.
LOCAL_TIER_GROUP = "assistant"
LOCAL_TIER_DEFAULTS: dict[str, Any] = {
    "providers": [{"name": "local", "preset": "llamacpp"}],
    "model_groups": [{"name": LOCAL_TIER_GROUP,
                      "deployments": [{"provider": "simulator", "model": "gpt-4o-mini"}],
                      "hybrid": {"local": {"provider": "local", "model": local_model.MODEL_NAME}}}],
}


def defaults() -> dict[str, Any]:
    """The built-in configuration: the simulator, plus the local tier when the local model is installed."""
    if local_model.find() is None:
        return DEFAULTS
    return {"providers": DEFAULTS["providers"] + LOCAL_TIER_DEFAULTS["providers"],
            "model_groups": LOCAL_TIER_DEFAULTS["model_groups"]}


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
            continue
        section = merged.get(path[0]) or {}
        if not isinstance(section, dict):
            raise ConfigError(path[0], f"is not a section of settings, so ${ENV_PREFIX}"
                                       f"{'__'.join(path).upper()} has nothing to set {path[1]} in")
        merged[path[0]] = {**section, path[1]: value}
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
        # Checks of a whole section name their field as "field: reason": it joins the section's path.
        named, sep, rest = reason.partition(": ")
        if first["type"] == "value_error" and sep and FIELD_PATH.match(named):
            field, reason = ".".join(filter(None, (field, named))), rest
        if first["type"] == "extra_forbidden":
            reason = "unknown setting (check its spelling and indentation)"
        if tuple(field.split(".")) in set(from_env):
            field += f" (from ${ENV_PREFIX}{field.upper().replace('.', '__')})"
        field = field or "(the whole configuration)"
        more = f"; {len(errors) - 1} more problem(s) after this one" if len(errors) > 1 else ""
        raise ConfigError(field, reason + more) from exc


def group_entries(group: ModelGroup) -> list[tuple[str, DeploymentConfig]]:
    """Each deployment of ``group`` with the field path that names it."""
    local = [("hybrid.local", group.hybrid.local)] if group.hybrid else []
    return local + [(f"deployments.{i}", d) for i, d in enumerate(group.deployments)] + [
        (f"fallbacks.{i}", d) for i, d in enumerate(group.fallbacks)]


def refuse_duplicates(field: str, what: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{field}: duplicate {what} name(s) {', '.join(dupes)}")

def load_config(env: Mapping[str, str] = os.environ) -> Config:
    """Read, overlay and validate the configuration; raises ``ConfigError``."""
    path = config_path(env)
    data = read_file(path) if path else {}
    if "providers" not in data:
        data = {**defaults(), **data}
    overrides = env_overrides(env)
    config = validate(apply_env(data, overrides), overrides)
    try:
        var_dir = config.var_dir.resolve()
    except (OSError, ValueError) as exc:  # a NUL in the path, a loop of links
        raise ConfigError("var_dir", f"{str(config.var_dir)!r} is not a usable path ({exc})") from exc
    return config.model_copy(update={"var_dir": var_dir})


_current: Config | None = None


def get_config() -> Config:
    """The process-wide configuration, loaded once."""
    global _current
    if _current is None:
        _current = load_config()
    return _current


def use_config(config: Config | None) -> Config | None:
    """Make ``config`` this process's configuration (None: load it again on next use); returns the
    one it replaces, so a caller (a test) can put it back."""
    global _current
    replaced, _current = _current, config
    return replaced


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data with secrets hidden, for display."""
    data = config.model_dump(mode="json")
    if data.get("redis_url"):
        data["redis_url"] = redis_conn.display_url(data["redis_url"])
    if data.get("broker_url"):
        data["broker_url"] = redis_conn.display_url(data["broker_url"])
    for provider, model in zip(data["providers"], config.providers):
        if model.api_key_env:
            state = "set" if os.environ.get(model.api_key_env) else "NOT SET"
            provider["api_key_env"] = f"{model.api_key_env} ({state})"
    for sink in (data.get("alerts") or {}).get("sinks", []):
        if sink.get("url"):  # a webhook URL often is its own secret (Slack's are)
            sink["url"] = re.sub(r"^(https?://[^/]+).*$", r"\1/***", sink["url"])
        sink["headers"] = {name: "***" for name in sink.get("headers", {})}
    return data
