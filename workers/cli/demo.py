"""The demo of ``flowcloud up --demo``: bundled prompts through the queue, a progress bar, a results table."""

from __future__ import annotations

from importlib import resources

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rich.markup import escape

from workers.cli.render import console, error_text, records_table

DEMO_FLOW = "demo"
DEMO_TIMEOUT = 120.0


def demo_prompts() -> list[str]:
    text = resources.files("workers.demo").joinpath("prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def run_demo() -> list[dict]:
    from tasks import client

    prompts = demo_prompts()
    out = console()
    # Past the cache, so every run shows the real path: calls, retries, one failure.
    jobs = [(prompt, client.submit(prompt, flow=DEMO_FLOW, max_tokens=60, cache=False)) for prompt in prompts]
    records = []
    columns = (TextColumn("demo jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out) as progress:
        bar = progress.add_task("jobs", total=len(jobs))
        for prompt, job_id in jobs:  # they run in parallel; waiting in order is enough here
            records.append(client.result(job_id, timeout=DEMO_TIMEOUT))
            progress.advance(bar)
    served_by = sorted({f"{r['provider']} / {r['model']}" for r in records if r.get("provider")})
    out.print(records_table(zip(prompts, records), title=f"demo results ({', '.join(served_by)})"))
    total = sum(r["cost_usd"] for r in records)
    ok = sum(r["status"] == "succeeded" for r in records)
    out.print(f"{ok}/{len(records)} succeeded, total cost ${total:.6f}")
    for prompt, record in zip(prompts, records):
        if record["status"] == "failed":
            out.print(f"[red]failed:[/] {escape(prompt[:50])}: {escape(error_text(record))}")
    return records
