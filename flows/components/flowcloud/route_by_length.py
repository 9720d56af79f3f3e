"""Route by Length: send a text down the "Short" or the "Long" branch by its size in tokens.

Short texts are cheap to handle locally; long ones are worth the cloud's
chunked summarization. Tokens are estimated the way the summarize task
estimates them, so the threshold means the same on both sides. The branch not
taken is switched off for this run, like lfx's own If-Else does, so nothing
behind it runs; a node that both branches feed still runs once.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, its text functions (flowcloud.workers.core.present), lfx and the standard library.
"""

from __future__ import annotations

from lfx.custom.custom_component.component import Component
from lfx.io import IntInput, MultilineInput, Output
from lfx.schema.message import Message

from flowcloud.present import estimate_tokens

BRANCHES = ("short", "long")


class RouteByLength(Component):
    display_name = "Route by Length"
    description = "Send a text to the Short or the Long branch, by its estimated size in tokens."
    icon = "split"
    name = "RouteByLength"

    inputs = [
        MultilineInput(name="text", display_name="Text", required=True, info="The text to route."),
        IntInput(
            name="threshold_tokens", display_name="Threshold (tokens)", value=1000,
            info="Texts of more tokens than this take the Long branch (about four characters a token).",
        ),
    ]
    outputs = [
        Output(display_name="Short", name="short", method="short_text", group_outputs=True),
        Output(display_name="Long", name="long", method="long_text", group_outputs=True),
    ]

    def _pre_run_setup(self) -> None:
        self._branch = None

    def short_text(self) -> Message:
        return self._emit("short")

    def long_text(self) -> Message:
        return self._emit("long")

    def branch(self) -> str:
        """The branch this text takes: "short" or "long"."""
        text = self.text if isinstance(self.text, str) else ""
        if not text.strip():
            msg = "no text to route: the input is empty"
            raise ValueError(msg)
        if self.threshold_tokens < 1:
            msg = f"Threshold (tokens) must be at least 1, not {self.threshold_tokens}"
            raise ValueError(msg)
        tokens = estimate_tokens(text)
        taken = "long" if tokens > self.threshold_tokens else "short"
        self.status = f"{tokens} tokens: {taken} (threshold {self.threshold_tokens})"
        return taken

    def _emit(self, output: str) -> Message:
        # Both outputs are asked; decide and switch off the other branch once per build.
        if getattr(self, "_branch", None) is None:
            self._branch = self.branch()
            self._switch_off(next(b for b in BRANCHES if b != self._branch))
        return Message(text=self.text if output == self._branch else "")

    def _switch_off(self, output: str) -> None:
        if self._vertex is None:  # used on its own, outside a flow: no branches to switch
            return
        self.stop(output)
        # stop() lasts one pass; the conditional exclusion keeps the branch off for the whole run.
        self.graph.exclude_branch_conditionally(self._id, output_name=output)
