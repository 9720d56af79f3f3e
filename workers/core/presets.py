"""Provider presets: ``preset: NAME`` on a provider fills in what the table in ``presets.yaml`` knows.

``fill_in`` runs before a provider's settings are validated, so everything after
validation sees a plain ``ProviderConfig``; nothing else reads the table. The
provider's own settings win over the preset's: its ``models`` replace the preset's
list whole (merging two lists of prices would leave nobody sure which one is
billed), its ``base_url`` beats the region's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
# What a preset entry may give a provider; regions and default_region pick its base_url.
PROVIDER_FIELDS = ("kind", "base_url", "allow_private", "endpoints", "models", "cloud")


@functools.cache
def table() -> dict[str, dict[str, Any]]:
    """Every preset by name, read once per process."""
    return yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))["presets"]


def names() -> list[str]:
    return sorted(table())


def fill_in(data: dict[str, Any]) -> dict[str, Any]:
    """A provider's raw settings with its preset's filled in where it sets none.

    Raises ``ValueError`` as ``"field: reason"`` so the configuration error names the field.
    """
    name = data.get("preset")
    if name is None:
        if data.get("region") is not None:
            raise ValueError("region: only a preset with regions uses it (add preset: NAME)")
        return data
    preset = table().get(name) if isinstance(name, str) else None
    if preset is None:
        raise ValueError(f"preset: unknown preset {name!r} (presets: {', '.join(names())})")
    filled = {key: preset[key] for key in PROVIDER_FIELDS if key in preset}
    region_url = _region_url(name, preset, data.get("region"))
    if region_url is not None:
        filled["base_url"] = region_url
    if not filled.get("models") and not data.get("models"):
        raise ValueError(f"models: the {name} preset knows no models; list the ones your server serves")
    return {**filled, **data}


def _region_url(name: str, preset: dict[str, Any], region: str | None) -> str | None:
    regions = preset.get("regions")
    if not regions:
        if region is not None:
            raise ValueError(f"region: the {name} preset has one base URL and no regions")
        return None
    chosen = region if region is not None else preset["default_region"]
    if not isinstance(chosen, str) or chosen not in regions:
        raise ValueError(f"region: {chosen!r} is no region of the {name} preset (regions: {', '.join(regions)})")
    return regions[chosen]
