"""The benchmark chart: every headline figure as its ratio to the same-run baseline, on one log axis.

Green bars met their target, red ones missed it, grey ones have none. A figure
without a baseline (the calls one worker holds at once) is drawn against its
target instead. Each bar is labelled with the absolute figures behind it.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.results import Figure, Outcome, format_number

COLOURS = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}
LEGEND = ((True, "target met"), (False, "target missed"), (None, "no target"))


def bar(figure: Figure) -> tuple[float, str] | None:
    """The ratio to draw and its label, or None when the figure has nothing to compare with."""
    value = format_number(figure.value)
    if figure.baseline:
        return figure.ratio, f"{value} vs {format_number(figure.baseline)} {figure.unit}"
    if figure.target and figure.target.limit:
        return figure.value / figure.target.limit, f"{value} {figure.unit} of {format_number(figure.target.limit)} wanted"
    return None


def draw(outcomes: list[Outcome], path: Path, caption: str) -> Path:
    """Write the chart of ``outcomes`` as a PNG at ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [(f"{o.name}: {f.label}", f, drawn) for o in outcomes for f in o.figures
            if f.plot and (drawn := bar(f)) and not math.isnan(drawn[0]) and drawn[0] > 0]
    ratios = [ratio for *_, (ratio, _) in rows] or [1.0]
    # A log axis has no zero: bars grow from the left edge, labels need room on the right.
    low, high = min(min(ratios) / 2, 0.5), max(max(ratios) * 10, 4)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * max(len(rows), 1)))
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    for y, (_, figure, (ratio, label)) in enumerate(rows):
        ax.barh(y, ratio - low, left=low, color=COLOURS[figure.met], height=0.6)
        ax.text(ratio * 1.08, y, label, va="center", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # stays readable over the 1x line
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [name for name, *_ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("flowcloud / baseline measured in the same run (log scale; 1 = the baseline)")
    ax.set_title("flowcloud benchmarks", fontsize=11)
    legend = [Patch(color=COLOURS[met], label=text) for met, text in LEGEND]
    ax.legend(handles=legend, loc="lower right", fontsize=8)
    fig.text(0.01, 0.01, caption, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
