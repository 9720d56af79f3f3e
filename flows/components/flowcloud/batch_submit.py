"""Batch Submit: one flowcloud job per text, results as a table in input order.

Texts come from a Message (one per line), a DataFrame (a chosen column) or a
list of Data. All jobs are queued in one call; "wait" mode returns once all are
final or the timeout passes, "ticket" mode returns the job ids at once. A failed
job fills its row's error and leaves the other rows alone. The table comes out
as a DataFrame and, for a Chat Output, as a Markdown table in a Message: drawn
here, since lfx's own DataFrame-to-text needs ``tabulate``, which lfx does not install.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import FloatInput, HandleInput, IntInput, MessageTextInput, MultilineInput, Output, TabInput
from lfx.schema.data import Data
from lfx.schema.dataframe import DataFrame
from lfx.schema.message import Message

from flowcloud import InvalidJob, client

COLUMNS = ["input", "text", "status", "error", "cost_usd", "attempts", "job_id"]


def texts_from(value, column: str) -> list[str]:
    """The texts in a Message (one per non-blank line), a DataFrame column, Data or lists of them."""
    if isinstance(value, list):
        return [text for item in value for text in texts_from(item, column)]
    if isinstance(value, Message):  # before Data: a Message is a Data
        value = value.text or ""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, DataFrame):
        if column not in value.columns:
            msg = f"the table has no column {column!r}; its columns: {', '.join(map(str, value.columns))}"
            raise ValueError(msg)
        return [str(text) for text in value[column].tolist()]
    if isinstance(value, Data):
        return [str(value.data[column] if column in value.data else value.get_text())]
    if value is None:
        return []
    msg = f"cannot read texts from {type(value).__name__}: connect a Message, a DataFrame or Data"
    raise ValueError(msg)


def row(text: str, record: dict) -> dict:
    error = record.get("error") or {}
    return {
        "input": text,
        "text": record.get("text") or "",
        "status": record["status"],
        "error": f"{error.get('kind', 'error')}: {error.get('message', '')}" if error else "",
        "cost_usd": record.get("cost_usd") or 0.0,
        "attempts": record.get("attempts") or 0,
        "job_id": record["job_id"],
    }


def markdown(rows: list[dict]) -> str:
    """A Markdown table of ``rows``, one line per row, pipes escaped."""
    def line(cells) -> str:
        text = (" ".join(str(cell).split()).replace("|", "\\|") for cell in cells)
        return "| " + " | ".join(text) + " |"

    return "\n".join([line(COLUMNS), line("---" for _ in COLUMNS), *(line(row[c] for c in COLUMNS) for row in rows)])


def summary(records: list[dict]) -> str:
    """Status line: how many jobs in which state, attempts and cost."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    attempts = sum(record.get("attempts") or 0 for record in records)
    cost = sum(record.get("cost_usd") or 0.0 for record in records)
    return f"{len(records)} jobs: {states} · attempts {attempts} · ${cost:.6f}"


class BatchSubmit(Component):
    display_name = "Batch Submit"
    description = "Run one flowcloud completion per text (lines, a table column or Data); answers in input order."
    icon = "layers"
    name = "BatchSubmit"

    inputs = [
        HandleInput(
            name="texts", display_name="Texts", input_types=["Message", "DataFrame", "Table", "Data", "JSON"],
            required=True, is_list=True,
            info="A Message (one text per line), a DataFrame (see Text Column) or a list of Data.",
        ),
        MessageTextInput(
            name="text_column", display_name="Text Column", value="text", advanced=True,
            info="The DataFrame column, or Data key, holding each text.",
        ),
        MultilineInput(name="system_prompt", display_name="System Prompt", info="Optional system message, every job."),
        MessageTextInput(name="model", display_name="Model", info="Empty: the model flowcloud is configured to use."),
        IntInput(name="max_tokens", display_name="Max Tokens", value=0, advanced=True, info="0: no limit."),
        FloatInput(
            name="temperature", display_name="Temperature", value=-1.0, advanced=True,
            info="Sampling temperature; below 0: the provider's default.",
        ),
        MessageTextInput(
            name="cost_flow", display_name="Flow Name (costs)", advanced=True,
            info="Books the jobs' cost to this name in their records; empty: this flow's name.",
        ),
        TabInput(
            name="mode", display_name="Mode", options=["wait", "ticket"], value="wait",
            info="wait: return when all jobs are done; ticket: return the job ids at once.",
        ),
        FloatInput(
            name="timeout", display_name="Timeout (s)", value=300.0,
            info="wait mode: how long to wait for the whole batch; rows still going show their state.",
        ),
    ]
    outputs = [
        Output(display_name="Results", name="results", method="results_response"),
        Output(display_name="Table Text", name="table", method="table_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._rows = None

    def results_response(self) -> DataFrame:
        return DataFrame(self._run(), columns=COLUMNS)

    def table_response(self) -> Message:
        return Message(text=markdown(self._run()))

    def _run(self) -> list[dict]:
        # Both outputs share one batch: submit once per build.
        if getattr(self, "_rows", None) is None:
            self._rows = self._submit()
        return self._rows

    def _submit(self) -> list[dict]:
        texts = texts_from(self.texts, self.text_column or "text")
        if not texts:
            msg = "no texts to submit"
            raise ValueError(msg)
        try:
            job_ids = client.submit_many(
                texts,
                model=self.model or None,
                flow=self.cost_flow or self.flow_name or None,
                max_tokens=self.max_tokens or None,
                system=self.system_prompt or None,
                **({"temperature": self.temperature} if self.temperature >= 0 else {}),
            )
        except InvalidJob as exc:  # refused, nothing queued: the node says why
            self.status = f"refused: {exc}"
            raise
        if self.mode == "ticket":
            records = [{"job_id": job_id, "status": client.status(job_id)["status"]} for job_id in job_ids]
        else:
            records = client.wait_all(job_ids, timeout=self.timeout)
        self.status = summary(records)
        return [row(text, record) for text, record in zip(texts, records)]
