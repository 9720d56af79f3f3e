"""How records look in a terminal: one job as a key/value table, many as rows."""

from __future__ import annotations

import json
from typing import Any, Iterable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "retrying": "yellow"}


def console() -> Console:
    return Console(highlight=False)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def error_text(record: dict) -> str:
    error = record.get("error") or {}
    return f"{error.get('kind', 'error')}: {error.get('message', '')}" if error else ""


def record_table(record: dict) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    style = STATUS_STYLE.get(record["status"], "")
    table.add_row("job", record["job_id"])
    table.add_row("status", f"[{style}]{record['status']}[/]" if style else record["status"])
    if record.get("text") is not None:
        table.add_row("text", escape(record["text"]))
    if record.get("error"):
        table.add_row("error", f"[red]{escape(error_text(record))}[/]")
    usage = record.get("usage") or {}
    for label, key in (("provider", "provider"), ("model", "model"), ("flow", "flow"), ("worker", "worker")):
        if record.get(key):
            table.add_row(label, str(record[key]))
    table.add_row("tokens", f"{usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out")
    table.add_row("cost", f"${record.get('cost_usd', 0):.6f}")
    table.add_row("attempts", str(record.get("attempts", 0)))
    return table


def records_table(rows: Iterable[tuple[str, dict]], title: str | None = None) -> Table:
    """One row per (label, record): the demo's and batch runs' summary; fits 80 columns."""
    table = Table(title=title)
    table.add_column("prompt", max_width=34, no_wrap=True, overflow="ellipsis")
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("tokens", justify="right", no_wrap=True, min_width=7)
    table.add_column("cost $", justify="right", no_wrap=True, min_width=8)
    table.add_column("tries", justify="right", no_wrap=True, min_width=5)
    for label, record in rows:
        usage = record.get("usage") or {}
        style = STATUS_STYLE.get(record["status"], "")
        table.add_row(
            escape(label),
            f"[{style}]{record['status']}[/]" if style else record["status"],
            f"{usage.get('prompt_tokens', 0)}/{usage.get('completion_tokens', 0)}",
            f"{record.get('cost_usd', 0):.6f}",
            str(record.get("attempts", 0)),
        )
    return table
