"""How a job record reads to a person: one status line, and the answer or why there is none.

Shared by the Langflow nodes (their ``self.status`` and text outputs); light, like the client.
"""

from __future__ import annotations

# Re-exported for the Langflow nodes, which import nothing else of flowcloud's
# internals: they measure and tidy text exactly as the summarize task does.
from flowcloud.workers.core.chunking import clean_text, estimate_tokens  # noqa: F401
from flowcloud.workers.core.records import JobStatus


def status_line(record: dict) -> str:
    """One line: job, state, a summary's progress, attempts and cost."""
    line = f"job {record['job_id']}: {record['status']}"
    if record.get("progress"):
        line += f" · {progress_text(record['progress'])}"
    if "attempts" in record:
        line += f" · attempts {record['attempts']} · ${record.get('cost_usd') or 0:.6f}"
    return line


def is_finished(record: dict) -> bool:
    """Whether the job is done for good (succeeded, failed or cancelled): nothing more will come of it."""
    return JobStatus(record["status"]).finished


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


def progress_text(progress: dict) -> str:
    """A summary job's progress: chunks summarized so far, of how many, and the reduce depth."""
    done, total = progress.get("chunks_done", 0), progress.get("chunks_total", 0)
    return f"chunks {done}/{total} · depth {progress.get('depth', 0)}"
