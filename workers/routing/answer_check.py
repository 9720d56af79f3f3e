"""The cheap check a local tier's answer must pass, or the job escalates to the cloud tier.

No model call: an answer is rejected when it is empty, opens with a refusal,
was cut off at max_tokens, or is not the JSON the job asked for
(``response_format``). A cloud answer is never checked: it is the last tier.
"""

from __future__ import annotations

import json
import re
from typing import Any

REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i am unable|i'?m unable|i am not able"
    r"|as an ai|i don'?t know|抱歉|对不起|我无法|我不能)", re.IGNORECASE)


def rejection(text: Any, finish_reason: str | None, options: dict[str, Any]) -> str | None:
    """Why a local answer is not good enough (``empty``, ``a refusal``, ``cut off``, ``not JSON``), or None."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    if REFUSAL.match(text.strip()):
        return "a refusal"
    if finish_reason == "length":
        return "cut off"
    if wants_json(options) and not parses(text):
        return "not JSON"
    return None


def wants_json(options: dict[str, Any]) -> bool:
    wanted = options.get("response_format")
    return isinstance(wanted, dict) and wanted.get("type") in ("json_object", "json_schema")


def parses(text: str) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
