"""The demo of ``flowcloud up --demo``: a summarization run over the bundled sample documents,
then, with a hybrid group configured, questions split between the local model and the cloud.

The same run as ``flowcloud summarize``: a progress bar while documents and
their chunks finish, then the run report. Earlier demo summaries are cleared
first and the answer cache is bypassed, so every demo shows real provider calls
rather than a run that skips everything it did last time.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flowcloud.cli.render import console
from flowcloud.workers.core.config import get_config

DEMO_FLOW = "demo"
DEMO_OUTPUT = "demo-summaries"


def demo_documents() -> Path:
    """The folder of bundled sample documents (plain files inside the installed package)."""
    return Path(str(resources.files("flowcloud.workers.demo").joinpath("docs")))


def run_demo():
    """Summarize the sample documents into ``<var_dir>/demo-summaries``; returns the run report."""
    from flowcloud.workers.summaries.runs.engine import RunSpec, plan_run
    from flowcloud.workers.summaries.runs.outputs import SUMMARY_SUFFIX
    from flowcloud.cli.split_demo import hybrid_group, run_split_demo
    from flowcloud.cli.summarize import run_with_progress, show_report

    config = get_config()
    output = config.var_dir / DEMO_OUTPUT
    for old in output.glob("*" + SUMMARY_SUFFIX):
        old.unlink()
    out = console()
    out.print(f"[bold]demo:[/] summarizing the sample documents in {demo_documents()}")
    state = plan_run(RunSpec(name="demo", sources=[str(demo_documents())], output=output, flow=DEMO_FLOW,
                             cache=False))
    report = run_with_progress(state)
    show_report(report)
    out.print(f"summaries in {output}/")
    group = hybrid_group(config)
    if group:
        run_split_demo(config, group)
    return report
