"""What each provider serves against what the configuration names: one ``Standing`` per configured model.

``flowcloud models`` shows it and Beat's model check (``flowcloud.workers.alerts.checks``)
alerts on it. Each provider is asked once for its model list; a provider that
cannot answer is ``unreachable`` for all its models, never "every model
missing", and one whose adapter has no list is ``unsupported``. This module
only reads: it keeps no state and sends no notices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from flowcloud.workers.core.config import Config, ProviderConfig, VaultSettings
from flowcloud.workers.core.errors import NotFound, ProviderError
from flowcloud.workers.core.secrets import KeyPool
from flowcloud.workers.providers import build_provider
from flowcloud.workers.providers.base import Capability, Provider, ServedModel


class Standing(str, Enum):
    """How a configured model stands in its provider's model list."""

    SERVED = "served"
    DEPRECATED = "deprecated"
    MISSING = "missing"
    UNREACHABLE = "unreachable"  # the list could not be had: nothing is known of the model
    UNSUPPORTED = "unsupported"  # the adapter, or the service (404), has no model list

    @property
    def known(self) -> bool:
        """Whether the provider's list said something of the model."""
        return self in (Standing.SERVED, Standing.DEPRECATED, Standing.MISSING)


@dataclass(frozen=True)
class ModelReport:
    """One configured model of one provider, and what the provider's list says of it."""

    provider: str
    model: str
    standing: Standing
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "standing": self.standing.value}


def judge(provider: str, model: str, listed: dict[str, ServedModel]) -> ModelReport:
    """``model`` against the provider's list, keyed by every name that reaches a listed model."""
    served = listed.get(model)
    if served is None:
        return ModelReport(provider, model, Standing.MISSING, "not in the provider's model list")
    if served.deprecated:
        when = f", retires {served.deprecation_date}" if served.deprecation_date else ""
        return ModelReport(provider, model, Standing.DEPRECATED, f"marked deprecated as {served.id}{when}")
    return ModelReport(provider, model, Standing.SERVED, served.id if served.id != model else "")


def survey_provider(provider: Provider, models: list[str]) -> list[ModelReport]:
    """Ask ``provider`` for its model list once and judge each of ``models`` against it."""
    if not provider.supports(Capability.MODELS):
        return [ModelReport(provider.name, m, Standing.UNSUPPORTED, "the adapter lists no models") for m in models]
    try:
        served = provider.models()
    except NotFound as exc:
        return [ModelReport(provider.name, m, Standing.UNSUPPORTED, str(exc)) for m in models]
    except ProviderError as exc:
        return [ModelReport(provider.name, m, Standing.UNREACHABLE, str(exc)) for m in models]
    listed = {name: entry for entry in reversed(served) for name in entry.names}
    listed.update({entry.id: entry for entry in served})  # an id outranks another model's alias
    return [judge(provider.name, m, listed) for m in models]


def survey_config(entry: ProviderConfig, vault: VaultSettings | None = None) -> list[ModelReport]:
    """One configured provider's models, asked on a connection of their own that is closed after."""
    provider = build_provider(entry, pool_size=1, keys=KeyPool.for_provider(entry, vault))
    try:
        return survey_provider(provider, [model.name for model in entry.models])
    finally:
        provider.close()


def survey(config: Config) -> list[ModelReport]:
    """Every configured model of every provider, in the configuration's order."""
    return [report for entry in config.providers for report in survey_config(entry, config.vault)]
