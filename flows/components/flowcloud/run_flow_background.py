"""Run Flow in Background: queue a whole Langflow flow on the flowcloud flow workers.

Returns a ticket at once (the job id as a Message, and a Data with the job's
state); a Job Result node, the CLI or ``client.result`` collects the outcome.
The flow is given as its JSON text or as the path of a flow file.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, lfx and the standard library.
"""

from __future__ import annotations

import json

from lfx.custom.custom_component.component import Component
from lfx.io import MessageTextInput, MultilineInput, Output
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud import client


def flow_source(text: str) -> dict | str:
    """A flow given as JSON text becomes a dict; anything else is taken as a file path."""
    text = (text or "").strip()
    if not text:
        msg = "no flow: paste the flow's JSON or give the path of a flow file"
        raise ValueError(msg)
    if not text.startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"the flow is not valid JSON: {exc}"
        raise ValueError(msg) from exc


class RunFlowInBackground(Component):
    display_name = "Run Flow in Background"
    description = "Queue a whole flow on the flowcloud flow workers and get a job ticket at once."
    icon = "workflow"
    name = "RunFlowInBackground"

    inputs = [
        MultilineInput(
            name="flow_json", display_name="Flow", required=True,
            info="The flow's JSON, or the path of a flow file readable by this Langflow process.",
        ),
        MessageTextInput(name="input_value", display_name="Input", info="The flow's chat input."),
        MessageTextInput(
            name="run_name", display_name="Flow Name (costs)", advanced=True,
            info="Names the run in its record; empty: the flow's own name.",
        ),
    ]
    outputs = [
        Output(display_name="Ticket", name="ticket", method="ticket_response"),
        Output(display_name="Record", name="record", method="record_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._record = None

    def ticket_response(self) -> Message:
        return Message(text=self._run()["job_id"])

    def record_response(self) -> Data:
        return Data(data=self._run())

    def _run(self) -> dict:
        # Both outputs share one job: submit once per build.
        if getattr(self, "_record", None) is None:
            job_id = client.submit_flow(flow_source(self.flow_json), self.input_value or "", self.run_name or None)
            record = client.status(job_id)
            self._record = {"job_id": job_id, "status": record["status"], "flow": record.get("flow")}
            self.status = f"job {job_id}: {record['status']} (flow {record.get('flow')!r})"
        return self._record
