"""The import contracts of ``[importlinter]`` in setup.cfg, checked over this checkout.

lint-imports reads a package from the folder its import name is found in, but this
checkout keeps ``workers/``, ``tasks/``, ``beat/`` and ``flows/`` beside ``flowcloud/``:
setup.cfg's ``package_dir`` puts them under ``flowcloud`` only once installed. So the
packages are first laid out as they install, as links under ``build/lint``, and
lint-imports runs there (it puts its working directory first on ``sys.path``).

    python -m tests.layers      # `make lint`; `make test` runs it before pytest
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_TREE = ROOT / "build" / "lint"


def package_dirs(setup_cfg: Path) -> dict[str, str]:
    """setup.cfg's ``package_dir``: the folder of each import name, e.g. ``flowcloud.workers`` -> ``workers``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(setup_cfg)
    lines = parser["options"]["package_dir"].strip().splitlines()
    return dict((name.strip(), folder.strip()) for name, folder in (line.split("=") for line in lines))


def lay_out(root: Path, dest: Path, copy: bool = False) -> Path:
    """``root``'s packages under their import names in ``dest``: links, or copies a test may edit."""
    shutil.rmtree(dest, ignore_errors=True)
    # Parents first: flowcloud/ is laid before flowcloud/workers goes into it.
    for name, folder in sorted(package_dirs(root / "setup.cfg").items(), key=lambda item: item[0].count(".")):
        source, target = root / folder, dest.joinpath(*name.split("."))
        if copy:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            continue
        target.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    return dest


def lint(tree: Path, config: Path) -> subprocess.CompletedProcess:
    """lint-imports over the packages laid out in ``tree``, against the contracts in ``config``."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config), "--no-cache"]
    return subprocess.run(command, cwd=tree, capture_output=True, text=True)


def main() -> int:
    done = lint(lay_out(ROOT, LINT_TREE), ROOT / "setup.cfg")
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
