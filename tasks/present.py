"""How a job record reads to a person: one status line, and the answer or why there is none.

Shared by the Langflow nodes (their ``self.status`` and text outputs); light, like the client.
"""

from __future__ import annotations


def status_line(record: dict) -> str:
    """One line: job, state, attempts and cost."""
    line = f"job {record['job_id']}: {record['status']}"
    if "attempts" in record:
        line += f" · attempts {record['attempts']} · ${record.get('cost_usd') or 0:.6f}"
    return line


def answer_text(record: dict, timeout: float) -> str:
    """The job's text, or why there is none, in words a person can act on."""
    status = record["status"]
    if status == "succeeded":
        return record.get("text") or ""
    if status == "failed":
        error = record.get("error") or {}
        return f"job failed: {error.get('kind', 'error')}: {error.get('message', '')}"
    if status == "cancelled":
        return f"job {record['job_id']} was cancelled"
    return f"job {record['job_id']} still {status} after {timeout:g} s; give its job id to Job Result to keep waiting"
