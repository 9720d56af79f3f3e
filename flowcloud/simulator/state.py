"""Per-server state shared by the API and control handlers.

Holds the settings, what may change at runtime, the statistics and the
``times=`` counters, and makes the two decisions every API request needs:
is it authorised, and which fault (if any) does it get.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from aiohttp import web

from .faults import HEADER, FaultSpec, TimesCounter, draw_rate_fault, find_directive, parse_fault_spec
from .settings import Behaviour, Settings
from .stats import Stats


class SimulatorState:
    """Everything one simulator server remembers between requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.behaviour = Behaviour(settings)
        self.stats = Stats()
        self.times = TimesCounter()

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the API key, OpenAI or Azure style."""
        expected = self.settings.api_key
        if expected is None:
            return True
        presented = headers.get("api-key")
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented = token.strip()
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))

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
        """Clear statistics, the request log and the ``times=`` counters."""
        self.stats.reset()
        self.times.clear()


STATE = web.AppKey("flowcloud_simulator_state", SimulatorState)
