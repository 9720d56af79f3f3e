"""Summary Report: the summary (or the embedding) that a document pipeline produced, and how it was made.

Fed by both branches of a length router: Local Summary's Details or Embed
Text's Details, and Cloud Summarize's Record. Only the branch that ran delivers
anything; this node reports it as one text (the summary, then a line saying
local or cloud, the chunks, reduce depth and cost; for an embedding, the tier
the workers chose and why) and as one flat Data for further nodes.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, its text functions (flowcloud.workers.core.present), lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import HandleInput, Output
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud.present import answer_text, is_finished


def delivered(value) -> list[dict]:
    """The non-empty dicts among what arrived: Data, dicts, lists of them; a skipped branch brings nothing."""
    if isinstance(value, list):
        return [item for part in value for item in delivered(part)]
    if isinstance(value, Data):
        value = value.data
    return [value] if isinstance(value, dict) and value else []


def cloud_details(record: dict) -> dict:
    """A Cloud Summarize record (or ticket) flattened to the report's fields."""
    progress = record.get("progress") or {}
    status = record["status"]
    if is_finished(record):
        text = answer_text(record, 0.0)
    else:
        text = f"job {record['job_id']} still {status}; give its job id to Job Result to keep waiting"
    return {
        "route": "cloud", "status": status, "text": text, "chunks": progress.get("chunks_total", 0),
        "depth": progress.get("depth", 0), "tokens_in": (record.get("usage") or {}).get("prompt_tokens", 0),
        "cost_usd": record.get("cost_usd") or 0.0, "model": record.get("model"), "job_id": record["job_id"],
    }


def local_details(details: dict) -> dict:
    """Local Summary's Details, which always succeed, with the status the report shows for both roads."""
    return {"status": "succeeded", **details}


def details_of(item: dict) -> dict:
    """What arrived, in the report's fields: Embed Text's Details are already flat."""
    if item.get("route") == "embedded":
        return item
    return cloud_details(item) if "job_id" in item else local_details(item)


def how_made(details: dict) -> str:
    """One line saying which road the summary (or embedding) took and what it cost."""
    if details["route"] == "embedded":
        return embedded_how(details)
    if details["route"] == "local":
        return (f"Summarized locally: {details['sentences_kept']} of {details['sentences_total']} sentences kept, "
                f"about {details['tokens_in']} tokens in, no model call, $0.")
    if details["status"] != "succeeded":
        return f"Cloud summarization {details['status']} (job {details['job_id']})."
    return (f"Summarized in the cloud by {details['model']}: {details['chunks']} chunks, "
            f"reduce depth {details['depth']}, {details['tokens_in']} tokens in, "
            f"${details['cost_usd']:.6f} (job {details['job_id']}).")


def embedded_how(details: dict) -> str:
    """Which tier of the workers embedded the text, why (a hybrid group's reason), and what it cost."""
    if details["status"] != "succeeded":
        return f"Embedding {details['status']} (job {details['job_id']})."
    why = f" ({details['reason']})" if details.get("reason") else ""
    tier = f"on the {details['tier']} tier " if details.get("tier") else ""
    return (f"Embedded {tier}by {details['provider']}/{details['model']}{why}: {details['dimensions']} dimensions, "
            f"{details['tokens_in']} tokens in, ${details['cost_usd']:.6f} (job {details['job_id']}).")


class SummaryReport(Component):
    display_name = "Summary Report"
    description = "Join the branches of a document pipeline: the summary or embedding, and how it was made."
    icon = "clipboard-list"
    name = "SummaryReport"

    inputs = [
        HandleInput(
            name="summaries", display_name="Summaries", input_types=["Data", "JSON"], required=True, is_list=True,
            info="Local Summary's or Embed Text's Details and Cloud Summarize's Record; the branch that ran delivers.",
        ),
    ]
    outputs = [
        Output(display_name="Report", name="report", method="report_response"),
        Output(display_name="Details", name="details", method="details_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._details = None

    def report_response(self) -> Message:
        return Message(text="\n\n".join(f"{d['text']}\n\n{how_made(d)}" for d in self._run()))

    def details_response(self) -> Data:
        details = self._run()
        return Data(data=details[0] if len(details) == 1 else {"summaries": details})

    def _run(self) -> list[dict]:
        if getattr(self, "_details", None) is None:
            items = delivered(self.summaries)
            if not items:
                msg = "no summary arrived: connect Local Summary's or Embed Text's Details, or Cloud Summarize's Record"
                raise ValueError(msg)
            self._details = [details_of(i) for i in items]
            self.status = " | ".join(how_made(d) for d in self._details)
        return self._details
