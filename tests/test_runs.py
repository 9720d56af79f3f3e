"""`flowcloud summarize` over folders: outputs, the report, failures that stay alone, and resuming.

The CLI runs as a real process against the private Redis, a real worker and
the simulator; the request log of the simulator shows which documents were
sent to the provider, and when.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from flowcloud.workers.summaries.runs.documents import find_documents
from flowcloud.workers.summaries.runs.outputs import OutputDir, read_metadata
from flowcloud.workers.summaries.runs.store import RunStore
from tests.conftest import ROOT, run_cli
from flowcloud.workers.core.config import get_config
from flowcloud.workers.core.errors import InvalidJob

WIDE = {"COLUMNS": "200"}


def paragraph(marker: str, words: int) -> str:
    """Prose-like filler whose first characters carry ``marker`` (the simulator logs prompt starts)."""
    body = " ".join(f"word{i % 97}" + ("." if i % 12 == 11 else "") for i in range(words))
    return f"{marker}. {body}\n"


def write_docs(folder: Path, tag: str, count: int, words: int = 60) -> dict[str, str]:
    """``count`` documents named doc<i>.txt; returns name -> marker."""
    folder.mkdir(parents=True, exist_ok=True)
    markers = {}
    for i in range(count):
        marker = f"doc-{tag}-{i}"
        (folder / f"doc{i}.txt").write_text(paragraph(marker, words))
        markers[f"doc{i}.txt"] = marker
    return markers


def report_of(out: Path) -> dict:
    return json.loads((out / "run-report.json").read_text())


def calls_since(simulator, marker: str, since: float) -> list[dict]:
    return [r for r in simulator.requests_log(marker) if r["t"] >= since]


# -- finding documents (no Redis, no worker)


def test_documents_come_from_files_folders_and_globs(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "one.txt").write_text("one")
    (tmp_path / "a" / "deep" / "two.md").write_text("two")
    (tmp_path / "a" / "skip.csv").write_text("not taken from a folder")
    (tmp_path / "a" / ".hidden.txt").write_text("hidden")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.txt").write_text("another one")  # the same name from another source
    (tmp_path / "explicit.csv").write_text("named on purpose")
    out = tmp_path / "a" / "summaries"
    out.mkdir()
    (out / "old.txt").write_text("inside the output folder")

    docs = find_documents([str(tmp_path / "a"), str(tmp_path / "b" / "*.txt"), str(tmp_path / "explicit.csv")],
                          exclude=out)

    names = [d.name for d in docs]
    assert names[:2] == ["one.txt", "deep/two.md"]
    assert names[2].startswith("one-") and names[2].endswith(".txt")  # made unique
    assert names[3] == "explicit.csv"
    assert docs[0].sha256 == hashlib.sha256(b"one").hexdigest()
    with pytest.raises(InvalidJob, match="no such file or folder"):
        find_documents([str(tmp_path / "missing")])


def test_clear_errors_before_anything_is_submitted(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli("summarize", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and "no documents found" in done.stderr, done.stderr
    done = run_cli("summarize", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and "nope: no such file or folder" in done.stderr, done.stderr
    (tmp_path / "empty" / "a.txt").write_text("text")
    done = run_cli("summarize", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--model", "no-such")
    assert done.returncode == 1 and "no provider serves model 'no-such'" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_plan_prints_each_documents_calls_and_cost_and_calls_nothing(tmp_path, redis_server, simulator, tag):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("".join(paragraph(f"small-{tag}-{i}", 700) for i in range(8)))  # ~40 KB
    (docs / "big.txt").write_text("".join(paragraph(f"big-{tag}-{i}", 700) for i in range(120)))  # ~600 KB
    (docs / "broken.txt").write_bytes(b"\xff\xfe not text")

    done = run_cli("summarize", str(docs), "--plan", "--json")

    assert done.returncode == 0, done.stderr
    rows = {row["document"]: row for row in json.loads(done.stdout)}
    assert rows["broken.txt"]["error"].startswith("not UTF-8 text")
    small, big = rows["small.txt"], rows["big.txt"]
    assert small["plan"]["strategy"] == "cheapest" and small["other"]["strategy"] == "fastest"
    assert small["plan"]["calls"] == 1 and small["plan"]["cost_usd"] == small["direct"]["cost_usd"]
    assert small["other"]["calls"] > 1 and small["other"]["cost_usd"] > small["plan"]["cost_usd"]
    assert not big["direct"]["fits"] and big["plan"]["calls"] > 1 and big["plan"]["depth"] >= 1
    assert big["plan"]["cost_usd"] <= big["other"]["cost_usd"]
    table = run_cli("summarize", str(docs / "big.txt"), "--plan", env={**WIDE, "FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"})
    assert table.returncode == 0 and "fastest: " in table.stdout and "x direct" in table.stdout, table.stderr
    assert "does not fit the window" in table.stdout
    assert simulator.requests_log(tag) == [] and not redis_server.client().keys("flowcloud:job:*")


# -- whole runs


def test_summarize_folder_writes_outputs_and_report(tmp_path, start_worker, simulator, tag):
    start_worker(env={"FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"})  # the long document in chunks
    docs = tmp_path / "docs"
    markers = write_docs(docs, tag, 2)
    (docs / "nested").mkdir()
    long_text = "".join(paragraph(f"long-{tag}-{i}", 700) for i in range(6))  # several chunks
    (docs / "nested" / "long.md").write_text(long_text)
    (docs / "broken.txt").write_bytes(b"\xff\xfe not text \x00")
    out = tmp_path / "out"

    done = run_cli("summarize", str(docs), "--out", str(out), env=WIDE, timeout=120)

    assert done.returncode == 3, done.stdout + done.stderr  # one document failed
    report = report_of(out)
    assert (report["documents"], report["done"], report["skipped"], report["failed"]) == (4, 3, 0, 1)
    assert report["status"] == "completed" and report["remaining"] == 0
    assert report["failures"] == [{"document": "broken.txt", "reason": "not UTF-8 text (byte 0xff at offset 0)"}]
    assert report["tokens_in"] > 0 and report["tokens_out"] > 0 and report["cost_usd"] > 0
    assert report["duration_s"] > 0 and report["output"] == str(out.resolve())
    long_result = next(r for r in report["results"] if r["name"] == "nested/long.md")
    assert long_result["chunks"] > 1
    for name in [*markers, "nested/long.md"]:
        summary = out / f"{name}.summary.md"
        metadata = read_metadata(summary)
        assert metadata["sha256"] == hashlib.sha256((docs / name).read_bytes()).hexdigest()
        assert metadata["document"] == name and metadata["tokens_in"] > 0
        assert "Simulated answer to: " in summary.read_text()
    assert not (out / "broken.txt.summary.md").exists()
    for name, marker in markers.items():
        assert simulator.requests_log(marker), f"{name} never reached the provider"
    for text in ("doc0.txt", "nested/long.md", "broken.txt", "not UTF-8", "run-report.json",
                 "3 summarized, 0 skipped, 1 failed of 4 documents"):
        assert text in done.stdout, text

    again = run_cli("summarize", str(docs), "--out", str(out), "--json", timeout=60)
    report = json.loads(again.stdout)
    assert (report["done"], report["skipped"], report["failed"]) == (0, 3, 1)


def test_interrupted_run_resumes_without_redoing_finished_documents(tmp_path, worker, simulator, tag):
    docs, out = tmp_path / "docs", tmp_path / "out"
    markers = write_docs(docs, tag, 8)
    argv = [sys.executable, "-m", "flowcloud.cli", "summarize", str(docs), "--out", str(out),
            "--max-in-flight", "1", "--no-cache"]
    slow_provider(simulator, latency=0.3)
    try:
        first = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **WIDE}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: len(list(out.glob("*.summary.md"))) >= 2, first)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = first.communicate(timeout=60)
    finally:
        slow_provider(simulator, latency=0.05)

    assert first.returncode == 130, output
    assert "run the same command again" in output
    interrupted = report_of(out)
    finished = {r["name"] for r in interrupted["results"] if r["outcome"] == "done"}
    assert interrupted["status"] == "interrupted"
    assert 2 <= len(finished) < 8 and interrupted["remaining"] == 8 - len(finished)
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"

    second_started = time.time()
    second = run_cli("summarize", str(docs), "--out", str(out), "--max-in-flight", "1", "--no-cache",
                     env=WIDE, timeout=120)

    assert second.returncode == 0, second.stdout + second.stderr
    resumed = report_of(out)
    assert resumed["status"] == "completed"
    assert {r["name"] for r in resumed["results"] if r["outcome"] == "skipped"} == finished
    assert resumed["done"] == 8 - len(finished)
    for name, marker in markers.items():
        calls = calls_since(simulator, marker, second_started)
        if name in finished:
            assert not calls, f"{name} was finished by the first run but sent again"
        else:
            assert calls, f"{name} was not finished by the first run and was not sent by the second"
        assert (out / f"{name}.summary.md").exists()


def test_batch_api_run_writes_the_same_outputs_and_shows_the_saving(tmp_path, worker, simulator, tag):
    docs, out = tmp_path / "docs", tmp_path / "out"
    write_docs(docs, tag, 2)
    (docs / "long.txt").write_text("".join(paragraph(f"long-{tag}-{i}", 700) for i in range(6)))

    done = run_cli("summarize", str(docs), "--out", str(out), "--mode", "batch_api", env=WIDE, timeout=180)

    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(out)
    assert (report["mode"], report["status"], report["done"], report["failed"]) == ("batch_api", "completed", 3, 0)
    assert report["cost_usd"] > 0 and report["list_price_usd"] == pytest.approx(2 * report["cost_usd"])
    assert report["saving_usd"] == pytest.approx(report["cost_usd"])  # the simulator's batches are half price
    assert "saved" in done.stdout
    for name in ("doc0.txt", "doc1.txt", "long.txt"):
        metadata = read_metadata(out / f"{name}.summary.md")
        assert metadata["mode"] == "batch_api" and metadata["tokens_in"] > 0
    assert simulator.stats()["by_endpoint"].get("/v1/batches"), "no batch reached the simulator"

    again = run_cli("summarize", str(docs), "--out", str(out), "--mode", "batch_api", "--json", timeout=60)
    assert json.loads(again.stdout)["skipped"] == 3


def slow_provider(simulator, latency: float) -> None:
    requests.post(f"{simulator.root}/_sim/config", json={"latency": latency}).raise_for_status()


def wait_for(condition, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- the output folder and the claims that keep scheduled runs apart


def test_summaries_are_written_whole_and_found_by_hash(tmp_path):
    output = OutputDir(tmp_path)
    output.write_summary("a/b.txt", "The summary.", {"sha256": "f" * 64, "document": "a/b.txt"})
    (tmp_path / "a" / "notes.summary.md").write_text("written by hand, no front matter")
    (tmp_path / ".b.txt.summary.md.x1.tmp").write_text("---\nsha256: " + "e" * 64 + "\n---\n")

    assert output.finished() == {"f" * 64: "a/b.txt.summary.md"}
    assert (tmp_path / "a" / "b.txt.summary.md").read_text().endswith("# Summary of a/b.txt\n\nThe summary.\n")


def test_a_schedule_runs_once_at_a_time():
    store = RunStore.open(get_config())
    assert store.claim_schedule("nightly", "run-1", ttl=60) is None
    assert store.claim_schedule("nightly", "run-2", ttl=60) == "run-1"
    store.release_schedule("nightly", "run-2")  # not its claim: nothing happens
    assert store.claim_schedule("nightly", "run-3", ttl=60) == "run-1"
    store.release_schedule("nightly", "run-1")
    assert store.claim_schedule("nightly", "run-3", ttl=60) is None
    assert store.claim_hop("run-3") and not store.claim_hop("run-3")
    store.release_hop("run-3")
    assert store.claim_hop("run-3")
