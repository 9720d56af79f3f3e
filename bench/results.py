"""What a benchmark hands back: figures, each beside the baseline measured in the same run.

The machine the bench runs on is shared and noisy, so an absolute figure means
little on its own; every figure carries a baseline from the same run and is
judged by its ratio to it, or, where the issue states an absolute goal (a
latency in milliseconds, a memory ceiling), by that goal. Tables, the markdown
page and the plot all read these objects; none of them measures anything.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Literal

COMPARE = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Target:
    """A goal for one figure: on its ratio to the baseline, its excess over the baseline, or its own value."""

    on: Literal["ratio", "excess", "value"]
    op: Literal["<=", ">="]
    limit: float

    def met(self, figure: Figure) -> bool | None:
        measured = {"ratio": figure.ratio, "excess": figure.excess, "value": figure.value}[self.on]
        if measured is None or math.isnan(measured):
            return None
        return COMPARE[self.op](measured, self.limit)

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"{self.op} {self.limit:g}x"
        if self.on == "excess":
            return f"{self.op} baseline + {format_number(self.limit)} {unit}".rstrip()
        return f"{self.op} {format_number(self.limit)} {unit}".rstrip()


@dataclass(frozen=True)
class Figure:
    """One measured quantity: flowcloud's value and the same-run baseline's, in ``unit``."""

    label: str
    unit: str
    value: float
    baseline: float | None = None
    target: Target | None = None
    plot: bool = True  # headline figures go into the chart; detail figures only into the tables

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.value / self.baseline if self.baseline else math.nan

    @property
    def excess(self) -> float | None:
        return None if self.baseline is None else self.value - self.baseline

    @property
    def met(self) -> bool | None:
        return self.target.met(self) if self.target else None


@dataclass
class Outcome:
    """Everything one benchmark reports."""

    name: str  # the name ``--only`` selects it by
    title: str  # what was run, with its parameters
    subject: str  # what the value column measured
    baseline: str  # what the baseline column measured
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed or unfinished jobs: the figures are suspect
    seconds: float = 0.0  # how long the benchmark took, workers' start-up included

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def targets_missed(self) -> list[Figure]:
        return [f for f in self.figures if f.met is False]


def format_number(value: float | None) -> str:
    """A figure as a person reads it: three significant digits, no exponent below a million."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"  # counts: calls, jobs
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.3g}"


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}x"
