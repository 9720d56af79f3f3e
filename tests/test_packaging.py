"""flowcloud installs one import package, ``flowcloud``, and lives beside a user's own modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT, wait_until_ready, Worker
from flowcloud import client

SOURCE_FOLDERS = {"flowcloud": "flowcloud", "workers": "flowcloud/workers", "tasks": "flowcloud/tasks",
                  "beat": "flowcloud/beat", "flows": "flowcloud/flows"}


def build_wheel(out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return next(out.glob("flowcloud-*.whl"))


def test_the_wheel_installs_only_flowcloud(tmp_path):
    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    assert {name.split("/")[0] for name in names} == {"flowcloud", "flowcloud-0.1.0.dist-info"}
    # Every module of the five source folders lands under flowcloud/, so setup.cfg's package list is whole.
    expected = {f"{prefix}/{path.relative_to(ROOT / folder)}" for folder, prefix in SOURCE_FOLDERS.items()
                for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts}
    assert expected - set(names) == set()
    assert "flowcloud/workers/core/presets.yaml" in names  # package data: the provider presets' table


def test_a_worker_serves_jobs_from_a_directory_with_its_own_tasks_workers_and_flows(tmp_path):
    """The names Celery's tutorial gives a user's modules do not shadow flowcloud's."""
    (tmp_path / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    for package in ("workers", "flows", "beat"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"raise SystemExit('the user {package} was imported')\n")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flowcloud.cli", "worker", "--hostname", "user@%h",
                                    "--without-mingle", "--without-gossip"],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    worker = Worker("user", process, log_path)
    try:
        wait_until_ready(worker)
        record = client.result(client.submit("hello from a user's project"), timeout=30)
        assert record["status"] == "succeeded", record
    finally:
        worker.stop()
