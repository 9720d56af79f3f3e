"""The simulator's settings and the part of them that can change at runtime.

``Settings`` is fixed when the server starts and checked there, so a bad value
fails before anything listens. ``Behaviour`` holds what ``/_sim/config`` may
change while it runs (latency, jitter, fault rates, seed, the models the model
lists name, the keys it accepts), validated by the same functions. Neither knows about HTTP.

The Batch API's timing is here too: a batch completes ``batch_delay`` seconds
after it is created, and ``batch_window`` is the simulated completion window
(OpenAI's 24 h): a batch that would take longer expires when it runs out.
"""

from __future__ import annotations

from flowcloud.workers.core.errors import ConfigError, FaultSpecError

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from .api import MODELS
from .faults import FaultSpec, parse_fault_rates

API_KEY_ENV = "FLOWCLOUD_SIM_API_KEY"
# Read by Settings.build when no value is given, like the key: `serve` passes only its own options.
BATCH_DELAY_ENV = "FLOWCLOUD_SIM_BATCH_DELAY"
BATCH_WINDOW_ENV = "FLOWCLOUD_SIM_BATCH_WINDOW"
# Small, so tests and demos see a batch finish; real providers take minutes to hours.
DEFAULT_BATCH_DELAY = 1.0
DEFAULT_BATCH_WINDOW = 24 * 3600.0


def check_seconds(option: str, value: object) -> float:
    """Return ``value`` as a finite number of seconds >= 0, or raise ConfigError."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(option, f"must be a number of seconds >= 0, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(option, f"must be a number of seconds >= 0, got {value!r}")
    return seconds


def check_seed(option: str, value: object) -> int | None:
    """Return ``value`` as an integer seed (or None), or raise ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(option, f"must be a whole number, got {value!r}")
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(option, f"must be a whole number, got {value!r}") from None


def check_fault_rates(option: str, value: object) -> dict[FaultSpec, float]:
    """Parse a rate table (string or mapping), or raise ConfigError."""
    try:
        return parse_fault_rates(value)  # type: ignore[arg-type]
    except FaultSpecError as exc:
        raise ConfigError(option, str(exc)) from None


def check_models(option: str, value: object) -> tuple[dict, ...]:
    """The model lists' entries: ids, or ``{"id": ..., "deprecated": true | "2026-01-31"}`` for a model
    the lists mark deprecated (a date: retiring then); None: the default list. Raises ConfigError."""
    if value is None:
        return tuple({"id": model, "deprecated": False, "deprecation_date": None} for model in MODELS)
    if not isinstance(value, list):
        raise ConfigError(option, f"must be a list of model ids or {{id, deprecated}} objects, got {value!r}")
    entries = []
    for item in value:
        entry = {"id": item} if isinstance(item, str) else item
        deprecated = entry.get("deprecated", False) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"] \
                or not isinstance(deprecated, (bool, str)) or set(entry) - {"id", "deprecated"}:
            raise ConfigError(option, f"{item!r} is not a model id or {{id, deprecated: true | date}}")
        date = deprecated if isinstance(deprecated, str) else None
        entries.append({"id": entry["id"], "deprecated": bool(deprecated), "deprecation_date": date})
    return tuple(entries)


def check_keys(option: str, value: object) -> tuple[str, ...]:
    """The API keys accepted, in order (a request log names a key by its place here); empty: no
    authentication. Raises ConfigError, never quoting a key."""
    if not isinstance(value, list) or not all(isinstance(key, str) and key for key in value):
        raise ConfigError(option, "must be a list of non-empty keys ([] turns authentication off)")
    return tuple(value)


def rates_as_json(rates: Mapping[FaultSpec, float]) -> dict[str, float]:
    """A rate table keyed by spec text, as ``/_sim/config`` shows it."""
    return {str(spec): rate for spec, rate in rates.items()}


@dataclass(frozen=True)
class Settings:
    """How a simulator server starts. Build it with ``Settings.build`` to validate."""

    latency: float = 0.0
    jitter: float = 0.0
    fault_rates: Mapping[FaultSpec, float] = field(default_factory=dict)
    # Kept out of repr so the key never lands in a log line or traceback.
    api_key: str | None = field(default=None, repr=False)
    seed: int | None = None
    access_log: bool = False
    batch_delay: float = DEFAULT_BATCH_DELAY
    batch_window: float = DEFAULT_BATCH_WINDOW

    @classmethod
    def build(
        cls,
        latency: object = 0.0,
        jitter: object = 0.0,
        fault_rates: object = None,
        api_key: str | None = None,
        seed: object = None,
        access_log: bool = False,
        batch_delay: object = None,
        batch_window: object = None,
    ) -> Settings:
        """Validate raw values (numbers, strings, a rate spec) into Settings.

        Without ``api_key`` the key is read from ``FLOWCLOUD_SIM_API_KEY``;
        an empty key means no authentication. Without ``batch_delay`` or
        ``batch_window`` they are read from ``FLOWCLOUD_SIM_BATCH_DELAY`` and
        ``FLOWCLOUD_SIM_BATCH_WINDOW``, else 1 s and 24 h.
        """
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV)
        if batch_delay is None:
            batch_delay = os.environ.get(BATCH_DELAY_ENV) or DEFAULT_BATCH_DELAY
        if batch_window is None:
            batch_window = os.environ.get(BATCH_WINDOW_ENV) or DEFAULT_BATCH_WINDOW
        return cls(
            latency=check_seconds("latency", latency),
            jitter=check_seconds("jitter", jitter),
            fault_rates=check_fault_rates("fault_rates", fault_rates),
            api_key=api_key or None,
            seed=check_seed("seed", seed),
            access_log=bool(access_log),
            batch_delay=check_seconds("batch_delay", batch_delay),
            batch_window=check_seconds("batch_window", batch_window),
        )


class Behaviour:
    """Latency, jitter, fault rates, random draws and batch timing, changeable while serving.

    Jitter and fault rates draw from separate generators so that turning on
    jitter does not change which requests a seeded fault rate hits.
    """

    CHANGEABLE = ("latency", "jitter", "fault_rates", "seed", "batch_delay", "batch_window", "models", "keys")

    def __init__(self, settings: Settings) -> None:
        self.latency = settings.latency
        self.jitter = settings.jitter
        self.batch_delay = settings.batch_delay
        self.batch_window = settings.batch_window
        self.fault_rates = dict(settings.fault_rates)
        self.models = check_models("models", None)
        self.keys: tuple[str, ...] = (settings.api_key,) if settings.api_key else ()
        self.reseed(settings.seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.fault_rng = random.Random(seed)
        self.jitter_rng = random.Random(None if seed is None else seed + 1)

    def delay(self) -> float:
        """Seconds to wait before answering: latency plus up to ``jitter``."""
        if self.jitter:
            return self.latency + self.jitter_rng.uniform(0.0, self.jitter)
        return self.latency

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply ``changes`` all or nothing; raise ConfigError on a bad one."""
        unknown = sorted(set(changes) - set(self.CHANGEABLE))
        if unknown:
            raise ConfigError(unknown[0], f"cannot be changed; changeable: {', '.join(self.CHANGEABLE)}")
        latency = check_seconds("latency", changes.get("latency", self.latency))
        jitter = check_seconds("jitter", changes.get("jitter", self.jitter))
        rates = self.fault_rates
        if "fault_rates" in changes:
            rates = check_fault_rates("fault_rates", changes["fault_rates"])
        seed = check_seed("seed", changes["seed"]) if "seed" in changes else None
        batch_delay = check_seconds("batch_delay", changes.get("batch_delay", self.batch_delay))
        batch_window = check_seconds("batch_window", changes.get("batch_window", self.batch_window))
        models = check_models("models", changes["models"]) if "models" in changes else self.models
        keys = check_keys("keys", changes["keys"]) if "keys" in changes else self.keys
        self.latency, self.jitter, self.fault_rates, self.models = latency, jitter, rates, models
        self.keys = keys
        self.batch_delay, self.batch_window = batch_delay, batch_window
        if "seed" in changes:
            self.reseed(seed)

    def as_json(self) -> dict:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "fault_rates": rates_as_json(self.fault_rates),
            "seed": self.seed,
            "batch_delay": self.batch_delay,
            "batch_window": self.batch_window,
            "models": list(self.models),
            "keys": len(self.keys),  # how many, never which
        }
