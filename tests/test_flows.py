"""The example flows, run headless by `lfx run` against a real worker, and kept in step with their sources."""

import json
import os
import subprocess
import sys
from pathlib import Path

from flowcloud import client
from flowcloud.workers.core.records import KEY_PREFIX
from tests.conftest import ROOT
from flowcloud.simulator import answer_for

FLOWS = ROOT / "flows"
LFX = Path(sys.executable).parent / "lfx"


def lfx_run(flow: str, input_value: str, cwd: Path) -> dict:
    """``lfx run -f json`` in a fresh process that reads the FLOWCLOUD_CONFIG of this test run."""
    done = subprocess.run([str(LFX), "run", "-f", "json", str(FLOWS / flow), input_value], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ), timeout=240)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout)
    assert result["success"], result
    return result


def job_records(redis_server) -> list[dict]:
    keys = redis_server.client().keys(KEY_PREFIX + "*")
    return [client.status(key.decode().removeprefix(KEY_PREFIX)) for key in keys]


def markdown_rows(table: str) -> list[dict]:
    """Rows of the Markdown table Batch Submit writes for a Chat Output."""
    def cells(line: str) -> list[str]:
        parts = line.strip().strip("|").replace("\\|", "\0").split("|")
        return [part.strip().replace("\0", "|") for part in parts]

    header, _rule, *body = table.strip().splitlines()
    return [dict(zip(cells(header), cells(line))) for line in body]


def test_queued_completion_is_answered_by_a_worker(worker, redis_server, tmp_path):
    result = lfx_run("queued_completion.json", "hello", cwd=tmp_path)
    assert result["result"] == answer_for("hello")
    [record] = job_records(redis_server)
    assert record["worker"] == worker.hostname  # produced in the worker process, not in lfx's
    assert (record["text"], record["flow"]) == (answer_for("hello"), "queued_completion")


def test_batch_questions_answers_in_order_and_a_failure_stays_in_its_row(worker, tmp_path, tag):
    questions = [f"{tag} question {i}: what is {i} squared?" for i in range(50)]
    questions[17] += " [[sim:400]]"
    rows = markdown_rows(lfx_run("batch_questions.json", "\n".join(questions), cwd=tmp_path)["result"])

    assert [row["input"] for row in rows] == questions
    failed = rows.pop(17)
    assert failed["status"] == "failed" and failed["error"].startswith("bad_request: ") and failed["text"] == ""
    assert all(row["status"] == "succeeded" and row["error"] == "" for row in rows)
    assert [row["text"] for row in rows] == [answer_for(q) for i, q in enumerate(questions) if i != 17]


def test_flow_jsons_are_valid_and_match_their_sources(tmp_path, capsys):
    """lfx validates the committed flows; the generator's check mode passes on them and fails on a stale copy."""
    from lfx.cli.validate import validate_flow_file

    from flowcloud.flows import build

    for path in FLOWS.glob("*.json"):
        assert validate_flow_file(path).ok, validate_flow_file(path).errors
    assert build.main(["--check"]) == 0, capsys.readouterr().err

    for path in FLOWS.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    stale = json.loads((tmp_path / "batch_questions.json").read_text(encoding="utf-8"))
    stale["data"]["nodes"][1]["data"]["node"]["template"]["code"]["value"] += "\n# edited by hand\n"
    (tmp_path / "batch_questions.json").write_text(json.dumps(stale, indent=2), encoding="utf-8")
    assert build.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale: batch_questions.json;" in capsys.readouterr().err
    assert json.loads((tmp_path / "batch_questions.json").read_text(encoding="utf-8")) == stale  # wrote nothing
