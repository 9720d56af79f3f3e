"""Which environment variables flowcloud reads: found in its source (the keys of ``os.environ``
lookups and the ``FLOWCLOUD_*`` names it uses), in its configuration model (``FLOWCLOUD_<SETTING>``
overrides) and in a configuration file (the variables it names); and what ``.env.example`` lists.
Used by tests/test_compose.py. The source is read as syntax trees, never imported; only the
configuration model is.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from flowcloud.workers.core.config import ENV_PREFIX, Config

# The folders setup.cfg's package_dir builds flowcloud from: what "the code" is.
SOURCE_FOLDERS = ("flowcloud", "workers", "tasks", "beat", "flows")
# Read by the standard library on the code's behalf: the call that reads them, and what it reads.
LIBRARY_READS = {"getproxies_environment": {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"}}


def source_files(root: Path) -> list[Path]:
    files = []
    for folder in SOURCE_FOLDERS:
        for directory, _, names in os.walk(root / folder):  # not into flowcloud/'s links to the others
            files += [Path(directory) / n for n in names if n.endswith(".py")]
    return files


def string_constants(trees: list[ast.Module]) -> dict[str, set[str]]:
    """Module-level ``NAME = "text"`` (and ``A + B`` of those) across the code, by name."""
    found: dict[str, set[str]] = {}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, set()).add(node.value.value)
    return found


def values_of(node: ast.AST, constants: dict[str, set[str]]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name):
        return constants.get(node.id, set())
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return {a + b for a in values_of(node.left, constants) for b in values_of(node.right, constants)}
    return set()


def is_environ(node: ast.AST) -> bool:
    """``os.environ`` or a parameter called ``env`` (the code passes os.environ in as that)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id in ("env", "environ"))


def env_lookup(node: ast.AST) -> ast.AST | None:
    """The key of ``environ.get(K)``, ``environ.setdefault(K)``, ``environ[K]`` or ``os.getenv(K)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        if node.func.attr in ("get", "setdefault") and is_environ(node.func.value):
            return node.args[0]
        if node.func.attr == "getenv":
            return node.args[0]
    if isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
        return node.slice
    return None


def literal_reads(trees: list[ast.Module]) -> set[str]:
    constants = string_constants(trees)
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            key = env_lookup(node)
            if key is not None:
                names |= values_of(key, constants)
            # FLOWCLOUD_* names the code hands to other processes or reports are read too.
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"FLOWCLOUD_[A-Z0-9_]+", node.value):
                names.add(node.value)
    return {name for name in names if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}


def code_reads(root: Path) -> set[str]:
    """Every variable flowcloud's own code (under ``root``) reads by name."""
    files = source_files(root)
    trees = [ast.parse(path.read_text(), str(path)) for path in files]
    names = literal_reads(trees)
    text = "".join(path.read_text() for path in files)
    for call, read in LIBRARY_READS.items():
        if call in text:
            names |= read
    return names


def top_level_overrides() -> set[str]:
    """``FLOWCLOUD_<FIELD>`` for the configuration's plain top-level settings (config.env_overrides)."""
    return {ENV_PREFIX + name.upper() for name, field in Config.model_fields.items()
            if field.annotation in (str, int, float, bool, Path, str | None)}


def section_override(name: str) -> bool:
    """Whether ``name`` is ``FLOWCLOUD_<SECTION>__<FIELD>`` of a real section and field."""
    section, sep, field = name.removeprefix(ENV_PREFIX).lower().partition("__")
    if not (name.startswith(ENV_PREFIX) and sep and section in Config.model_fields):
        return False
    model = Config.model_fields[section].annotation
    model = next((a for a in getattr(model, "__args__", (model,)) if hasattr(a, "model_fields")), model)
    return field in getattr(model, "model_fields", {})


def configured_names(config: Config) -> set[str]:
    """Variables the compose configuration tells the code to read (api_key_env, password_env, env: refs)."""
    names = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_env") and isinstance(value, str):
                    names.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node.startswith("env:"):
            names.add(node.removeprefix("env:"))

    walk(config.model_dump(mode="json"))
    return names


def env_example(path: Path) -> dict[str, str]:
    """.env.example's variables (``NAME=value``, or ``#NAME=value`` when optional) and the comment above each."""
    found, comment = {}, ""
    for line in path.read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line)
        if match:
            assert comment, f".env.example: {match[1]} has no comment above it"
            found[match[1]] = comment
        comment = line if line.startswith("# ") else ("" if not line.strip() else comment)
    return found
