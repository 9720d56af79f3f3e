"""The fault grammar: parsing fault specs, finding them, deciding when they fire.

A fault spec is ``;``-separated: the fault's name first, then options::

    429;times=2;retry-after=2
    slow;delay=5
    reset

Names are an HTTP error status (see ``FAULT_STATUSES``) or one of ``slow``,
``reset``, ``hang``, ``trickle``, ``malformed``, ``empty``, ``garbage``. Options are ``retry-after=S``,
``retry-after-ms=MS``, ``retry-after-date=S``, ``times=N`` and ``delay=S``.

Status faults answer with an error body in the shape of the endpoint's API
(OpenAI's, or Anthropic's on ``/v1/messages``); ``slow`` waits
``delay`` seconds (default 30) and then answers normally; ``reset`` drops the
connection with no response; ``hang`` sends the status line, the headers
(with the answer's ``Content-Length``) and half the body, then goes silent;
``trickle`` sends a chunked body that never ends, a few bytes every
``TRICKLE_INTERVAL`` seconds, so a per-read timeout alone never fires (both
stop once the client leaves, or after ``STALL_LIMIT`` seconds); ``malformed`` sends a 200 whose JSON is cut off;
``empty`` sends a 200 without ``choices``; ``refuse`` answers with a refusal
and ``blank`` with an empty message, like a small model at its limits (prompt
directives only, like ``garbage``); ``garbage`` answers a packed chat
request (several prompts to be answered as one JSON list, see ``api``) with
prose instead of the list, like a model that ignored the format, and answers
any other request normally; it works only as a prompt directive, on every
request that carries one (``times`` does not limit it). ``delay`` also holds back any
other fault. ``times=N`` limits a fault to the first N matching requests,
counted per (spec, request body), so a retried request uses up its own count.

A spec reaches the simulator three ways, tried in this order: the
``x-sim-fault`` request header, a ``[[sim:SPEC]]`` directive anywhere in the
prompt text (the first one found; in a legacy completion with a list of
prompts it applies to the whole call), or a rate table such as
``429=0.05,reset=0.01``. The directive stays in the prompt, so answers still
come from the full text. This module only parses and decides; turning a fault
into an HTTP response is the server's job.
"""

from __future__ import annotations

from flowcloud.workers.core.errors import FaultSpecError

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate

# 413 and 529 are Anthropic's: request too large, and overloaded.
FAULT_STATUSES = frozenset({400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529})
BEHAVIOURS = frozenset({"slow", "reset", "hang", "trickle", "malformed", "empty", "garbage", "refuse", "blank"})
GARBAGE = "garbage"
# Directives that change what the assistant says, not how the reply is sent.
ANSWER_SHAPES = frozenset({GARBAGE, "refuse", "blank"})
DEFAULT_SLOW_DELAY = 30.0
# Faults that start an answer and never finish it: only a bound on the whole call ends them.
STALLS = frozenset({"hang", "trickle"})
TRICKLE_INTERVAL = 0.2
# A stalled answer gives up at last, so a client that never leaves cannot pin the server forever.
STALL_LIMIT = 600.0
# A 429 drawn from a rate table has no spec of its own to say when to retry.
RATE_429_RETRY_AFTER = 1.0

HEADER = "x-sim-fault"
DIRECTIVE = re.compile(r"\[\[sim:([^\]]*)\]\]")

_NUMBER_OPTIONS = {
    "retry-after": "retry_after",
    "retry-after-ms": "retry_after_ms",
    "retry-after-date": "retry_after_date",
    "delay": "delay",
}


@dataclass(frozen=True)
class FaultSpec:
    """One parsed fault: what to do and the options that shape it."""

    name: str
    retry_after: float | None = None
    retry_after_ms: float | None = None
    retry_after_date: float | None = None
    times: int | None = None
    delay: float | None = None

    @property
    def status(self) -> int | None:
        """The HTTP status this fault answers with, or None for a behaviour."""
        return int(self.name) if self.name.isdigit() else None

    def headers(self, now: float) -> dict[str, str]:
        """Response headers carrying the retry hints, ``now`` in unix seconds."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = _number(self.retry_after)
        if self.retry_after_date is not None:
            headers["Retry-After"] = formatdate(now + self.retry_after_date, usegmt=True)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = _number(self.retry_after_ms)
        if self.status == 429:
            # As OpenAI and Azure say which quota a 429 ran out of; the simulator's is always requests.
            headers["x-ratelimit-remaining-requests"] = "0"
        return headers

    def __str__(self) -> str:
        parts = [self.name]
        for option, field in _NUMBER_OPTIONS.items():
            value = getattr(self, field)
            if value is not None:
                parts.append(f"{option}={_number(value)}")
        if self.times is not None:
            parts.append(f"times={self.times}")
        return ";".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_fault_spec(text: str) -> FaultSpec:
    """Parse ``text`` into a FaultSpec, raising FaultSpecError if it is invalid."""
    tokens = [token.strip() for token in text.split(";")]
    name = tokens[0].lower()
    if not name.isdigit() and name not in BEHAVIOURS:
        raise FaultSpecError(f"unknown fault {tokens[0]!r} in {text!r}; {_known_faults()}")
    if name.isdigit() and int(name) not in FAULT_STATUSES:
        raise FaultSpecError(f"status {name} cannot be injected; {_known_faults()}")
    options: dict[str, float | int] = {}
    for token in tokens[1:]:
        if not token:
            continue
        key, sep, value = token.partition("=")
        key = key.strip().lower()
        if not sep:
            raise FaultSpecError(f"option {token!r} in {text!r} needs a value, like {token}=1")
        options.update(_parse_option(key, value.strip(), text))
    return FaultSpec(name=name, **options)


def _parse_option(key: str, value: str, text: str) -> dict[str, float | int]:
    if key == "times":
        if not value.isdigit() or int(value) < 1:
            raise FaultSpecError(f"times must be a whole number >= 1 in {text!r}, got {value!r}")
        return {"times": int(value)}
    if key not in _NUMBER_OPTIONS:
        known = ", ".join([*_NUMBER_OPTIONS, "times"])
        raise FaultSpecError(f"unknown option {key!r} in {text!r}; known options: {known}")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        raise FaultSpecError(f"{key} must be a number >= 0 in {text!r}, got {value!r}")
    return {_NUMBER_OPTIONS[key]: number}


def _known_faults() -> str:
    statuses = ", ".join(str(s) for s in sorted(FAULT_STATUSES))
    return f"known faults: {statuses}, {', '.join(sorted(BEHAVIOURS))}"


def find_directive(texts: Iterable[str]) -> str | None:
    """Return the spec of the first ``[[sim:...]]`` directive in ``texts``, if any."""
    for text in texts:
        match = DIRECTIVE.search(text)
        if match:
            return match.group(1)
    return None


def answer_shape(texts: Iterable[str]) -> str | None:
    """The request's directive when it shapes the answer (``garbage``, ``refuse``, ``blank``), else None."""
    text = find_directive(texts)
    name = text.split(";", 1)[0].strip().lower() if text is not None else None
    return name if name in ANSWER_SHAPES else None


def parse_fault_rates(rates: str | Mapping[str, object] | None) -> dict[FaultSpec, float]:
    """Parse a rate table such as ``"429=0.05,500=0.05,reset=0.01"`` or a mapping.

    Keys are fault specs (options allowed: ``slow;delay=2=0.1``); values are
    probabilities in [0, 1] whose sum may not exceed 1. A bare 429 gets
    ``Retry-After: 1`` so clients have something to honour.
    """
    if rates is None:
        return {}
    if isinstance(rates, str):
        pairs = []
        for item in filter(None, (part.strip() for part in rates.split(","))):
            spec, sep, value = item.rpartition("=")
            if not sep or not spec:
                raise FaultSpecError(f"{item!r} is not FAULT=RATE, e.g. 429=0.05")
            pairs.append((spec, value))
    elif isinstance(rates, Mapping):
        pairs = list(rates.items())
    else:
        raise FaultSpecError("fault rates must be a string like '429=0.05' or a mapping")
    table = {_rate_spec(str(spec)): _rate_value(spec, value) for spec, value in pairs}
    if sum(table.values()) > 1.0 + 1e-9:
        raise FaultSpecError(f"fault rates add up to {sum(table.values()):g}; the total may not exceed 1")
    return table


def _rate_spec(text: str) -> FaultSpec:
    spec = parse_fault_spec(text)
    if spec.times is not None:
        raise FaultSpecError(f"times= has no meaning in a fault rate ({text!r})")
    untimed = spec.retry_after is None and spec.retry_after_date is None
    if spec.status == 429 and untimed and spec.retry_after_ms is None:
        spec = replace(spec, retry_after=RATE_429_RETRY_AFTER)
    return spec


def _rate_value(spec: object, value: object) -> float:
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FaultSpecError(f"rate for {spec!r} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise FaultSpecError(f"rate for {spec!r} must be between 0 and 1, got {value!r}")
    return rate


def draw_rate_fault(table: Mapping[FaultSpec, float], rng: random.Random) -> FaultSpec | None:
    """Pick at most one fault from ``table``; each fires with its own probability."""
    if not table:
        return None
    roll = rng.random()
    for spec, rate in table.items():
        if roll < rate:
            return spec
        roll -= rate
    return None


class TimesCounter:
    """Counts matches of each (spec, request body) so ``times=N`` can expire.

    Keying on the body means a retried request counts against its own budget
    while a different prompt with the same spec starts afresh.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, bytes], int] = {}

    def fires(self, spec: FaultSpec, body_digest: bytes) -> bool:
        """Count one match and say whether the fault still applies."""
        if spec.times is None:
            return True
        key = (str(spec), body_digest)
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        return count <= spec.times

    def clear(self) -> None:
        self._seen.clear()
