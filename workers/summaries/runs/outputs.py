"""A run's output folder: one summary file per document, the run report, and what is done already.

Each summary is ``<document name>.summary.md``: YAML front matter (the source,
its SHA-256, model, tokens, cost, ...) and then the summary text. The files are
the run's memory: a document whose hash appears in one of them is done, so a
run that was stopped resumes where it was. Every file is written to a hidden
temporary file beside its target and renamed over it, so a crash leaves either
the old file, the new one, or a ``.tmp`` leftover that is never read as done.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from flowcloud.workers.core.errors import InvalidJob

SUMMARY_SUFFIX = ".summary.md"
REPORT_NAME = "run-report.json"
FRONT_MATTER = "---\n"


class OutputDir:
    """The folder a run writes into."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def prepare(self) -> None:
        """Create the folder; a folder that cannot be written raises ``InvalidJob`` before any work starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.root).close()
        except OSError as exc:
            raise InvalidJob(f"cannot write to the output folder {self.root}: {exc.strerror or exc}") from exc

    def summary_path(self, name: str) -> Path:
        return self.root / (name + SUMMARY_SUFFIX)

    @property
    def report_path(self) -> Path:
        return self.root / REPORT_NAME

    def finished(self) -> dict[str, str]:
        """SHA-256 of every document summarized here -> its summary file, relative to the folder."""
        done: dict[str, str] = {}
        if not self.root.is_dir():
            return done
        for path in sorted(self.root.rglob("*" + SUMMARY_SUFFIX)):
            metadata = read_metadata(path)
            if metadata and isinstance(metadata.get("sha256"), str):
                done.setdefault(metadata["sha256"], path.relative_to(self.root).as_posix())
        return done

    def write_summary(self, name: str, text: str, metadata: dict[str, Any]) -> Path:
        """Write one document's summary with its metadata; returns the file's path."""
        title = f"# Summary of {name}\n\n"
        body = FRONT_MATTER + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + FRONT_MATTER
        path = self.summary_path(name)
        write_atomically(path, body + title + text.strip() + "\n")
        return path

    def write_report(self, report: dict[str, Any]) -> Path:
        write_atomically(self.report_path, json.dumps(report, indent=2) + "\n")
        return self.report_path


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A summary file's front matter, or None for a file that is not one of ours."""
    try:
        with open(path, encoding="utf-8") as file:
            if file.readline() != FRONT_MATTER:
                return None
            lines = []
            for line in file:
                if line == FRONT_MATTER:
                    data = yaml.safe_load("".join(lines))
                    return data if isinstance(data, dict) else None
                lines.append(line)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
