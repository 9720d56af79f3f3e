"""The import contracts of setup.cfg hold on this tree, and lint-imports catches an import that points back."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

from click import unstyle

from tests.conftest import ROOT

SETUP_CFG = ROOT / "setup.cfg"
# flowcloud/ holds links to the others, so a copy of these five is the package as it installs.
PACKAGE_FOLDERS = ("flowcloud", "workers", "tasks", "beat", "flows")


def lint(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports over the package in ``tree`` (it reads ``flowcloud`` from its working directory)."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(SETUP_CFG), "--no-cache"]
    return subprocess.run(command, cwd=tree, capture_output=True, text=True)


def copy_of_the_tree(dest: Path) -> Path:
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, dest / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def contract(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SETUP_CFG)
    return parser[f"importlinter:contract:{name}"]


def test_the_tree_keeps_every_contract():
    done = lint(ROOT)
    assert done.returncode == 0, unstyle(done.stdout + done.stderr)
    assert "0 broken" in unstyle(done.stdout)


def test_a_foundation_module_importing_the_tasks_breaks_the_layers(tmp_path):
    tree = copy_of_the_tree(tmp_path / "tree")
    errors = tree / "workers" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport flowcloud.tasks  # noqa: E402,F401\n")

    done = lint(tree)

    report = unstyle(done.stdout)
    assert done.returncode != 0, report
    assert "flowcloud.workers is not allowed to import flowcloud.tasks" in report
    assert "flowcloud.workers.core.errors -> flowcloud.tasks" in report


def test_the_client_is_kept_from_every_engine_module():
    """The foundation contract lists every engine module (it is exhaustive); the client's must forbid them all."""
    *upper, foundation = contract("foundation")["layers"].strip().splitlines()
    engine = [name for layer in upper for name in re.split(r"[|:]", layer)]
    assert foundation.strip() == "core"
    forbidden = set(contract("light")["forbidden_modules"].split())
    assert {f"flowcloud.workers.{name.strip()}" for name in engine} <= forbidden
