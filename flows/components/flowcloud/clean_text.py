"""Clean Text: tidy a text's whitespace the way flowcloud's summarizer does, before routing or sending it.

Runs of spaces and tabs collapse, lines lose their edge spaces, runs of blank
lines shrink to one and control characters go; paragraph breaks stay, because
the summarizer cuts chunks at them. Pasted documents (PDF copies, web pages)
often carry enough stray whitespace to change which branch a length router picks.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, its text functions (flowcloud.workers.core.present), lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import MultilineInput, Output
from lfx.schema.message import Message

from flowcloud.present import clean_text


class CleanText(Component):
    display_name = "Clean Text"
    description = "Tidy a text's whitespace and drop control characters, keeping its paragraphs."
    icon = "sparkles"
    name = "CleanText"

    inputs = [
        MultilineInput(
            name="text", display_name="Text", required=True, input_types=["Message", "Data"],
            info="The text to clean: typed, a Message, or Data whose text key holds it.",
        ),
    ]
    outputs = [Output(display_name="Text", name="text_output", method="cleaned")]

    def cleaned(self) -> Message:
        text = self.text if isinstance(self.text, str) else ""
        result = clean_text(text)
        self.status = f"{len(text)} characters in, {len(result)} out"
        return Message(text=result)
