"""``docs/benchmarks.md`` and its chart, rewritten from the outcomes of a full run.

The page says when and on what the figures were measured, shows the chart and
a summary, then one section per benchmark: how it measures (its module's
docstring), its table and its notes. It holds nothing that was not measured in
the run that wrote it.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from bench import plot
from bench.results import Figure, Outcome, format_number, format_ratio
from bench.suite import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "img" / "benchmarks.png"
VERDICT = {True: "met", False: "**missed**", None: ""}


def write(outcomes: list[Outcome], command: str, loads: tuple[str, str], page: Path = PAGE,
          chart: Path = CHART) -> Path:
    """Write the page and its chart for ``outcomes``; ``loads`` is the load average at start and end."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, celery {version('celery')}, "
               f"load average {loads[0]} at the start and {loads[1]} at the end")
    plot.draw(outcomes, chart, f"{command}, {when}; {machine}")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {when} ({machine}). The machine is shared, so every figure stands",
        "beside a baseline measured in the same run on the same private stack (Redis, the provider",
        "simulator, real Celery workers), and is judged by its ratio to that baseline or by the goal",
        "the figure has. Run `make bench` to measure again; the page and the chart are rewritten.",
        "",
        f"![flowcloud against same-run baselines]({os.path.relpath(chart, page.parent)})",
        "",
        "## Summary",
        "",
        *summary(outcomes),
    ]
    for outcome in outcomes:
        lines += ["", *section(outcome)]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return page


def summary(outcomes: list[Outcome]) -> list[str]:
    rows = ["| benchmark | figure | flowcloud | baseline | ratio | target | |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for outcome in outcomes:
        rows += [f"| {outcome.name} | {_row(figure)} |" for figure in outcome.figures if figure.plot]
        rows += [f"| {outcome.name} | {problem} | | | | | **problem** |" for problem in outcome.problems]
    return rows


def section(outcome: Outcome) -> list[str]:
    lines = [f"## {outcome.name}", "", f"{outcome.title}. Took {outcome.seconds:.0f} s.", ""]
    method = method_text(outcome.name)
    if method:
        lines += [method, ""]
    lines += [f"| figure | {outcome.subject} | baseline: {outcome.baseline} | ratio | target | |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {_row(figure)} |" for figure in outcome.figures]
    extra = outcome.notes + [f"**Problem:** {problem}" for problem in outcome.problems]
    if extra:
        lines += ["", *[f"- {text}" for text in extra]]
    return lines


def method_text(name: str) -> str:
    """How a benchmark measures: its module's docstring, as markdown."""
    benchmark = next((b for b in BENCHMARKS if b.name == name), None)
    doc = importlib.import_module(benchmark.module).__doc__ if benchmark else None
    return re.sub(r"``([^`]+)``", r"`\1`", doc.strip()) if doc else ""


def _row(figure: Figure) -> str:
    target = figure.target.describe(figure.unit) if figure.target else ""
    return (f"{figure.label} ({figure.unit}) | {format_number(figure.value)} | {format_number(figure.baseline)} | "
            f"{format_ratio(figure.ratio)} | {target} | {VERDICT[figure.met]}")
