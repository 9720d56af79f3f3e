"""Job Result: wait for a flowcloud job named by a ticket and hand on its record.

A ticket is whatever a ticket-mode node returned: a Message whose text is the
job id, a Data holding ``job_id``, or the id typed in. A failed job becomes its
error text, never an exception; a job still going at the timeout comes back as
it stands.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client and its helpers, lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import FloatInput, HandleInput, MessageTextInput, Output
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud import client
from flowcloud.present import answer_text, status_line
from flowcloud import JobTimeout


def ticket_job_id(ticket) -> str:
    """The job id a ticket carries: Message text, a Data's ``job_id``, or plain text."""
    if isinstance(ticket, list):
        ticket = ticket[0] if len(ticket) == 1 else None
    if isinstance(ticket, Message):  # before Data: a Message is a Data
        ticket = ticket.text
    elif isinstance(ticket, Data):
        ticket = ticket.data.get("job_id")
    elif isinstance(ticket, dict):
        ticket = ticket.get("job_id")
    if not isinstance(ticket, str) or not ticket.strip():
        msg = "no job ticket: connect a ticket (Message or Data with a job_id) or type the job id"
        raise ValueError(msg)
    return ticket.strip()


class JobResult(Component):
    display_name = "Job Result"
    description = "Wait for a queued flowcloud job, by its ticket, and output its answer and record."
    icon = "ticket-check"
    name = "JobResult"

    inputs = [
        HandleInput(
            name="ticket", display_name="Ticket", input_types=["Message", "Data", "JSON"], required=False,
            info="A ticket from a ticket-mode node: Message text or Data holding the job id.",
        ),
        MessageTextInput(name="job_id", display_name="Job ID", info="Used when no ticket is connected."),
        FloatInput(
            name="timeout", display_name="Timeout (s)", value=120.0,
            info="How long to wait before handing back the job as it stands.",
        ),
    ]
    outputs = [
        Output(display_name="Text", name="text", method="text_response"),
        Output(display_name="Record", name="record", method="record_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._record = None

    def text_response(self) -> Message:
        return Message(text=answer_text(self._run(), self.timeout))

    def record_response(self) -> Data:
        return Data(data=self._run())

    def _run(self) -> dict:
        # Both outputs share one wait per build.
        if getattr(self, "_record", None) is None:
            job_id = ticket_job_id(self.ticket if self.ticket else self.job_id)
            try:
                self._record = client.result(job_id, timeout=self.timeout)
            except JobTimeout:
                self._record = client.status(job_id)
            self.status = status_line(self._record)
        return self._record
