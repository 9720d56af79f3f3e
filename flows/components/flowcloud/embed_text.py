"""Embed Text: a text's vector, made by the flowcloud workers.

The text goes to the workers as one embedding job (``client.embed``); this node
waits for its record. Name a hybrid model group as the model and the workers
choose the tier: a short text is embedded by the local model in their own
process (MiniLM, free), a longer one by the group's cloud deployment; the
Details output says which and why, in the shape Summary Report reads. A failed
job comes out as its error text, like the other flowcloud nodes.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, its text functions (flowcloud.present), lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import FloatInput, MessageTextInput, MultilineInput, Output
from lfx.schema.data import Data

from flowcloud import InvalidJob, client
from flowcloud.present import answer_text, status_line

# How many of the vector's numbers the report's text shows.
PREVIEW_NUMBERS = 4


def details_of(record: dict, timeout: float) -> dict:
    """An embedding job's record as the report reads it: which tier made the vector, why, at what cost."""
    hybrid = (record.get("route") or {}).get("hybrid") or {}
    vector = record.get("embedding") or []
    if record["status"] == "succeeded":
        preview = ", ".join(f"{x:.4f}" for x in vector[:PREVIEW_NUMBERS])
        text = f"{len(vector)}-dimension vector [{preview}, ...]"
    else:
        text = answer_text(record, timeout)
    return {
        "route": "embedded", "status": record["status"], "text": text, "dimensions": len(vector),
        "tier": hybrid.get("tier"), "reason": hybrid.get("reason"), "provider": record.get("provider"),
        "model": record.get("model"), "tokens_in": (record.get("usage") or {}).get("prompt_tokens", 0),
        "cost_usd": record.get("cost_usd") or 0.0, "job_id": record["job_id"],
    }


class EmbedText(Component):
    display_name = "Embed Text"
    description = "Turn a text into a vector on the flowcloud workers; a hybrid group embeds short texts locally."
    icon = "binary"
    name = "EmbedText"

    inputs = [
        MultilineInput(
            name="text", display_name="Text", required=True, input_types=["Message", "Data"],
            info="The text to embed: typed, a Message, or Data whose text key holds it.",
        ),
        MessageTextInput(
            name="model", display_name="Model",
            info="An embedding model or a hybrid group of them; empty: the first embedding model configured.",
        ),
        MessageTextInput(
            name="cost_flow", display_name="Flow Name (costs)", advanced=True,
            info="Books the job's cost to this name in its record; empty: this flow's name.",
        ),
        FloatInput(name="timeout", display_name="Timeout (s)", value=120.0,
                   info="How long to wait for the vector before handing back the job as it stands."),
    ]
    outputs = [
        Output(display_name="Embedding", name="embedding", method="embedding_response"),
        Output(display_name="Details", name="details", method="details_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._record = None

    def embedding_response(self) -> Data:
        """The text and its vector (empty when the job failed), for a vector store or further nodes."""
        record = self._run()
        return Data(data={"text": self.text, "embedding": record.get("embedding") or [],
                          "model": record.get("model"), "job_id": record["job_id"]})

    def details_response(self) -> Data:
        return Data(data=details_of(self._run(), self.timeout))

    def _run(self) -> dict:
        # Both outputs share one job: embed once per build.
        if getattr(self, "_record", None) is None:
            text = self.text if isinstance(self.text, str) else ""
            if not text.strip():
                msg = "no text to embed: type it, or connect a Message or Data holding it"
                raise ValueError(msg)
            try:
                job_id = client.embed(text, model=self.model or None, flow=self.cost_flow or self.flow_name or None)
            except InvalidJob as exc:  # refused, nothing queued: the node says why
                self.status = f"refused: {exc}"
                raise
            self._record = client.wait_all([job_id], timeout=self.timeout)[0]
            self.status = status_line(self._record)
        return self._record
