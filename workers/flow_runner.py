"""Runs a whole Langflow flow with lfx, the way `lfx run` does. The only place the worker touches lfx.

lfx is imported on first use: it costs seconds and ~170 MB, which only the flow
workers should pay.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from flowcloud.workers.core.errors import FlowFailed


@dataclass
class FlowOutcome:
    text: str
    outputs: list[dict[str, Any]] = field(default_factory=list)


def preload() -> None:
    import lfx.run.base  # noqa: F401  (the import is the point)


def run_flow(flow: dict[str, Any], input_value: str) -> FlowOutcome:
    from lfx.run.base import RunError, run_flow as lfx_run_flow

    try:
        result = asyncio.run(lfx_run_flow(
            flow_json=json.dumps(flow), input_value=input_value, output_format="json",
            check_variables=False, check_dependencies=False,
        ))
    except RunError as exc:
        raise FlowFailed(f"the flow failed: {exc}") from exc
    if not result.get("success", False):
        raise FlowFailed(f"the flow failed: {result.get('exception_message') or result.get('text') or result}")
    text = result.get("result", result.get("text", ""))
    text = text if isinstance(text, str) else json.dumps(text, default=str)
    output = {key: result.get(key) for key in ("component", "component_id", "type")}
    return FlowOutcome(text=text, outputs=[{**output, "text": text}])
