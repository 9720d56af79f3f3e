"""Finding the documents of a run: files, folders (recursively) and globs, each read and hashed.

A document is named by its path relative to the folder or glob it was found
through; that name is what its output file is called. Its identity is the
SHA-256 of its bytes, so a renamed file is still recognised as done and an
edited one is summarized again. A file that cannot be read as text is kept as
a document with an ``error``: it fails alone, it does not stop the run.
Nothing here talks to Redis or a provider.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel

from flowcloud.workers.core.errors import InvalidJob

DEFAULT_EXTENSIONS = (".txt", ".md")
# A summary job carries its text in a Celery message; beyond this a document is
# more likely a log dump or a mistake than something to summarize in one piece.
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024


class Document(BaseModel):
    """One file to summarize; ``sha256`` is None when it could not be read (``error`` says why)."""

    name: str
    path: str
    sha256: str | None = None
    chars: int = 0
    error: str | None = None


def find_documents(sources: Iterable[str], extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                   exclude: Path | None = None) -> list[Document]:
    """Every document under ``sources``, in a stable order, each read once and hashed.

    A source is a file (taken whatever its extension), a folder (searched
    recursively for ``extensions``, hidden entries skipped) or a glob
    (``docs/**/*.md``; matched folders are searched like folders). Files under
    ``exclude`` (the run's output folder) are left out, so summaries are never
    summarized. A source that names nothing raises ``InvalidJob``.
    """
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    seen: set[Path] = set()
    names: set[str] = set()
    documents = []
    for source in sources:
        for path, name in _expand(source, suffixes):
            resolved = path.resolve()
            if resolved in seen or (exclude and resolved.is_relative_to(exclude.resolve())):
                continue
            seen.add(resolved)
            name = _unique(name, resolved, names)
            names.add(name)
            documents.append(read_document(name, path))
    return documents


def read_document(name: str, path: Path) -> Document:
    """``path`` read and hashed, or a document carrying the reason it cannot be summarized."""
    where = os.path.abspath(path)
    try:
        text, digest = load_text(path)
    except InvalidJob as exc:
        return Document(name=name, path=where, error=str(exc))
    return Document(name=name, path=where, sha256=digest, chars=len(text))


def load_text(path: Path | str) -> tuple[str, str]:
    """The file's text and the SHA-256 of its bytes.

    A file that is missing, unreadable, not UTF-8 text, empty or too large raises
    ``InvalidJob`` with the reason: that document fails alone.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_DOCUMENT_BYTES:
            raise InvalidJob(f"too large: {size / 1e6:.1f} MB (limit {MAX_DOCUMENT_BYTES / 1e6:.0f} MB)")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidJob(f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from exc
    if not text.strip():
        raise InvalidJob("empty document")
    return text, hashlib.sha256(data).hexdigest()


def _expand(source: str, suffixes: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """(path, name) pairs for one source."""
    if glob.has_magic(source):
        base = _glob_base(source)
        for match in sorted(glob.glob(os.path.expanduser(source), recursive=True)):
            path = Path(match)
            if path.is_dir():
                yield from ((p, _relative(p, base)) for p in _walk(path, suffixes))
            else:
                yield path, _relative(path, base)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        yield from ((p, _relative(p, path)) for p in _walk(path, suffixes))
    elif path.exists() or path.is_symlink():
        yield path, path.name
    else:
        raise InvalidJob(f"{source}: no such file or folder")


def _walk(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(suffixes)]
    return found


def _glob_base(pattern: str) -> Path:
    """The folder a glob's names are relative to: its leading parts without wildcards."""
    parts = Path(os.path.expanduser(pattern)).parts
    plain = []
    for part in parts:
        if glob.has_magic(part):
            break
        plain.append(part)
    return Path(*plain) if plain else Path(".")


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def _unique(name: str, resolved: Path, taken: set[str]) -> str:
    """``name``, or when two sources give the same name, one marked with a hash of its path."""
    if name not in taken:
        return name
    stem, dot, suffix = name.rpartition(".")
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return f"{stem}-{tag}.{suffix}" if dot and stem else f"{name}-{tag}"
