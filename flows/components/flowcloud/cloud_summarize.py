"""Cloud Summarize: a long text summarized by the flowcloud workers.

The workers cut the text into overlapping chunks, summarize the chunks in
parallel and merge the summaries (a tree of merges when they are too long for
one call), so neither the Langflow process nor a proxy timeout waits on one
huge request. "wait" mode blocks this node until the summary is final or the
timeout passes, logging progress as chunks finish; "ticket" mode returns the
job id at once, for a Job Result node further on. A failed job comes out as
its error text, like the other flowcloud nodes.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, flowcloud.workers.core.present, flowcloud.workers.core.errors, lfx and the standard library.
"""

from __future__ import annotations

import time

from lfx.custom.custom_component.component import Component
from lfx.io import BoolInput, FloatInput, IntInput, MessageTextInput, MultilineInput, Output, TabInput
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud import client
from flowcloud.present import answer_text, status_line
from flowcloud import InvalidJob, JobTimeout

# How often a waiting node re-reads the record to report progress; the wait
# itself ends as soon as the job finishes, not on this beat.
PROGRESS_EVERY_SECONDS = 2.0


class CloudSummarize(Component):
    display_name = "Cloud Summarize"
    description = (
        "Summarize a long text on the flowcloud workers: chunked, chunk summaries in parallel, then merged; "
        "wait for the summary or get a job ticket at once."
    )
    icon = "scroll-text"
    name = "CloudSummarize"

    inputs = [
        MultilineInput(
            name="text", display_name="Text", required=True, input_types=["Message", "Data"],
            info="The text to summarize: typed, a Message, or Data whose text key holds it.",
        ),
        MessageTextInput(name="model", display_name="Model", info="Empty: the model flowcloud summarizes with."),
        IntInput(
            name="max_tokens", display_name="Max Tokens", value=0, advanced=True,
            info="Longest summary, in tokens; 0: flowcloud's configured summary length.",
        ),
        BoolInput(
            name="use_cache", display_name="Use Cache", value=True, advanced=True,
            info="Reuse answers already given for identical chunks; off: every call goes to the provider.",
        ),
        MessageTextInput(
            name="cost_flow", display_name="Flow Name (costs)", advanced=True,
            info="Books the job's cost to this name in its record; empty: this flow's name.",
        ),
        TabInput(
            name="mode", display_name="Mode", options=["wait", "ticket"], value="wait",
            info="wait: return the summary; ticket: return the job id at once, for Job Result.",
        ),
        FloatInput(
            name="timeout", display_name="Timeout (s)", value=600.0,
            info="wait mode: how long to wait before handing back the job as it stands.",
        ),
    ]
    outputs = [
        Output(display_name="Summary", name="summary", method="summary_response"),
        Output(display_name="Record", name="record", method="record_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._record = None

    def summary_response(self) -> Message:
        record = self._run()
        if self.mode == "ticket":
            return Message(text=record["job_id"])
        return Message(text=answer_text(record, self.timeout))

    def record_response(self) -> Data:
        return Data(data=self._run())

    def _run(self) -> dict:
        # Both outputs share one job: submit once per build.
        if getattr(self, "_record", None) is None:
            text = self.text if isinstance(self.text, str) else ""
            if not text.strip():
                msg = "no text to summarize: type it, or connect a Message or Data holding it"
                raise ValueError(msg)
            try:
                job_id = client.summarize(
                    text,
                    model=self.model or None,
                    flow=self.cost_flow or self.flow_name or None,  # flow_name: the running flow's, from lfx
                    max_tokens=self.max_tokens or None,
                    cache=self.use_cache,
                )
            except InvalidJob as exc:  # refused, nothing queued: the node says why
                self.status = f"refused: {exc}"
                raise
            self._record = self._ticket(job_id) if self.mode == "ticket" else self._wait(job_id)
            self.status = status_line(self._record)
        return self._record

    def _ticket(self, job_id: str) -> dict:
        return {"job_id": job_id, "status": client.status(job_id)["status"]}

    def _wait(self, job_id: str) -> dict:
        """The finished record, or the record as it stands at the timeout; logs each progress step."""
        deadline = time.monotonic() + self.timeout
        reported = None
        while True:
            step = min(PROGRESS_EVERY_SECONDS, max(deadline - time.monotonic(), 0.0))
            try:
                return client.result(job_id, timeout=step)
            except JobTimeout:
                record = client.status(job_id)
            if time.monotonic() >= deadline:
                return record
            if record.get("progress") != reported:
                reported = record.get("progress")
                self.log(status_line(record))
