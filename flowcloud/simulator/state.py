"""Per-server state shared by the API and control handlers.

Holds the settings, what may change at runtime, the statistics and the
``times=`` counters, and makes the two decisions every API request needs:
is it authorised, and which fault (if any) does it get.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from aiohttp import web

from .faults import HEADER, FaultSpec, TimesCounter, draw_rate_fault, find_directive, parse_fault_spec
from .prompt_cache import PromptCache
from .settings import Behaviour, Settings
from .stats import Stats


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


KEY_READERS: dict[str, Callable[[Mapping[str, str]], str | None]] = {
    "bearer": _bearer,
    "api-key": lambda headers: headers.get("api-key"),
    "x-api-key": lambda headers: headers.get("x-api-key"),
}


class SimulatorState:
    """Everything one simulator server remembers between requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.behaviour = Behaviour(settings)
        self.stats = Stats()
        self.times = TimesCounter()
        self.prompt_cache = PromptCache()

    def authorised(self, headers: Mapping[str, str], ways: tuple[str, ...] = ("bearer", "api-key")) -> bool:
        """Whether the request carries an accepted API key in one of the ``ways`` its endpoint takes it
        (see ``KEY_READERS``): OpenAI's bearer token, Azure's ``api-key``, Anthropic's ``x-api-key``."""
        return not self.behaviour.keys or self.accepted_key(headers, ways) is not None

    def accepted_key(self, headers: Mapping[str, str], ways: tuple[str, ...] = ("bearer", "api-key")) -> int | None:
        """The place, among the accepted keys, of the one the request carries; None when it carries none."""
        presented = [key.encode("utf-8") for key in (KEY_READERS[way](headers) for way in ways) if key is not None]
        for index, expected in enumerate(self.behaviour.keys):
            if any(hmac.compare_digest(key, expected.encode("utf-8")) for key in presented):
                return index
        return None

    def choose_fault(self, headers: Mapping[str, str], texts: list[str], body: bytes) -> FaultSpec | None:
        """The fault for this request: header first, then a prompt directive, then rates.

        Raises FaultSpecError if the header or directive does not parse. Once an
        explicit spec's ``times`` are used up, the rate table decides again.
        """
        text = headers.get(HEADER)
        if text is None:
            text = find_directive(texts)
        if text is not None:
            spec = parse_fault_spec(text)
            if self.times.fires(spec, hashlib.sha256(body).digest()):
                return spec
        return draw_rate_fault(self.behaviour.fault_rates, self.behaviour.fault_rng)

    def reset(self) -> None:
        """Clear statistics, the request log, the ``times=`` counters and the cached prompts."""
        self.stats.reset()
        self.times.clear()
        self.prompt_cache.clear()


STATE = web.AppKey("flowcloud_simulator_state", SimulatorState)
