"""The import contracts of setup.cfg hold on this tree, and lint-imports catches an import that points back."""

from __future__ import annotations

import configparser
import re

from click import unstyle

from tests.conftest import ROOT
from tests.layers import lay_out, lint

SETUP_CFG = ROOT / "setup.cfg"


def contract(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SETUP_CFG)
    return parser[f"importlinter:contract:{name}"]


def test_the_tree_keeps_every_contract(tmp_path):
    done = lint(lay_out(ROOT, tmp_path / "tree"), SETUP_CFG)
    assert done.returncode == 0, unstyle(done.stdout + done.stderr)
    assert "0 broken" in unstyle(done.stdout)


def test_a_foundation_module_importing_the_tasks_breaks_the_layers(tmp_path):
    tree = lay_out(ROOT, tmp_path / "tree", copy=True)
    errors = tree / "flowcloud" / "workers" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport flowcloud.tasks  # noqa: E402,F401\n")

    done = lint(tree, SETUP_CFG)

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
