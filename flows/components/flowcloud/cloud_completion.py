"""Cloud Completion (queued): one completion run by the flowcloud workers.

The call is queued, so provider retries and Retry-After waits happen on the
workers, not in the Langflow process, and no proxy timeout cuts a long call. "wait" mode blocks
this node until the record is final or the timeout passes; "ticket" mode
returns the job id at once, for a Job Result node further on.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client and its helpers, lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import FloatInput, IntInput, MessageTextInput, MultilineInput, Output, TabInput
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud import client
from flowcloud.present import answer_text, status_line
from flowcloud import InvalidJob, JobTimeout


class CloudCompletion(Component):
    display_name = "Cloud Completion (queued)"
    description = (
        "Run a completion on the flowcloud workers, with retries that honour Retry-After; "
        "wait for the answer or get a job ticket at once."
    )
    icon = "cloud"
    name = "CloudCompletion"

    inputs = [
        MultilineInput(name="prompt", display_name="Prompt", required=True, info="The user message to complete."),
        MultilineInput(name="system_prompt", display_name="System Prompt", info="Optional system message."),
        MessageTextInput(name="model", display_name="Model", info="Empty: the model flowcloud is configured to use."),
        IntInput(name="max_tokens", display_name="Max Tokens", value=0, advanced=True, info="0: no limit."),
        FloatInput(
            name="temperature", display_name="Temperature", value=-1.0, advanced=True,
            info="Sampling temperature; below 0: the provider's default.",
        ),
        MessageTextInput(
            name="cost_flow", display_name="Flow Name (costs)", advanced=True,
            info="Books the job's cost to this name in its record; empty: this flow's name.",
        ),
        TabInput(
            name="mode", display_name="Mode", options=["wait", "ticket"], value="wait",
            info="wait: return the answer; ticket: return the job id at once, for Job Result.",
        ),
        FloatInput(
            name="timeout", display_name="Timeout (s)", value=120.0,
            info="wait mode: how long to wait before handing back the job as it stands.",
        ),
    ]
    outputs = [
        Output(display_name="Text", name="text", method="text_response"),
        Output(display_name="Record", name="record", method="record_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._record = None

    def text_response(self) -> Message:
        record = self._run()
        if self.mode == "ticket":
            return Message(text=record["job_id"])
        return Message(text=answer_text(record, self.timeout))

    def record_response(self) -> Data:
        return Data(data=self._run())

    def _run(self) -> dict:
        # Both outputs share one job: submit once per build.
        if getattr(self, "_record", None) is None:
            try:
                job_id = client.submit(
                    self.prompt,
                    model=self.model or None,
                    flow=self._flow_label(),
                    max_tokens=self.max_tokens or None,
                    system=self.system_prompt or None,
                    **({"temperature": self.temperature} if self.temperature >= 0 else {}),
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
        try:
            return client.result(job_id, timeout=self.timeout)
        except JobTimeout:
            return client.status(job_id)

    def _flow_label(self) -> str | None:
        return self.cost_flow or self.flow_name or None  # flow_name: the running flow's, from lfx
