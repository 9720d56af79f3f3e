"""The Langflow components against a real Redis, a real worker process and the simulator.

Each component class is built from its file by lfx's own loader, the same path a
flow's embedded code takes, then run in this process as a Langflow node would.
"""

import sys

import pytest

from flowcloud import client
from flowcloud.workers.core.records import KEY_PREFIX
from tests.conftest import ROOT
from flowcloud.simulator import answer_for

COMPONENTS = ROOT / "flows" / "components" / "flowcloud"


def jobs_in_redis(redis_server) -> int:
    return len(redis_server.client().keys(KEY_PREFIX + "*"))


def component(file: str):
    from lfx.custom.eval import eval_custom_component_code

    return eval_custom_component_code((COMPONENTS / file).read_text(encoding="utf-8"))


def test_components_import_only_the_light_client_lfx_and_stdlib():
    import ast

    allowed = {"flowcloud", "lfx", "__future__", *sys.stdlib_module_names}
    for path in COMPONENTS.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert {m.split(".")[0] for m in modules} <= allowed, path.name
        light = {"flowcloud", "flowcloud.present"}  # `from flowcloud import client, JobTimeout`
        assert {m for m in modules if m.startswith("flowcloud")} <= light, path.name


def test_ticket_returns_while_the_job_runs_and_job_result_waits_for_it(worker, redis_server, tag):
    prompt = f"{tag} take your time [[sim:slow;delay=3;times=1]]"
    completion = component("cloud_completion.py")(prompt=prompt, mode="ticket")
    ticket = completion.text_response()
    job_id = ticket.text
    assert client.status(job_id)["status"] in {"queued", "running", "retrying"}  # returned before the job finished
    assert completion.record_response().data["job_id"] == job_id
    assert jobs_in_redis(redis_server) == 1  # both outputs share one job
    assert completion.status.startswith(f"job {job_id}: ")

    waiter = component("job_result.py")(ticket=completion.record_response(), timeout=30)
    text, record = waiter.text_response().text, waiter.record_response().data
    assert record == client.result(job_id, timeout=1)
    assert record["status"] == "succeeded" and text == answer_for(prompt) and record["worker"] == worker.hostname
    assert waiter.status == f"job {job_id}: succeeded · attempts {record['attempts']} · ${record['cost_usd']:.6f}"


def test_wait_mode_returns_the_answer_and_the_record(worker, tag):
    prompt = f"{tag} what is a queue?"
    completion = component("cloud_completion.py")(prompt=prompt, system_prompt="be brief", max_tokens=200,
                                                  temperature=0.2, cost_flow="docs")
    assert completion.text_response().text == answer_for(prompt)
    record = completion.record_response().data
    assert (record["status"], record["flow"], record["worker"]) == ("succeeded", "docs", worker.hostname)
    assert len(client.wait_all([record["job_id"]], timeout=1)) == 1


def test_a_failed_job_is_text_not_a_trace(worker, tag):
    completion = component("cloud_completion.py")(prompt=f"{tag} hi", model="needs-other-key", mode="ticket")
    job_id = completion.text_response().text
    for ticket in (job_id, completion.text_response()):  # typed id, then the Message ticket
        waiter = component("job_result.py")(job_id=ticket, timeout=30) if isinstance(ticket, str) \
            else component("job_result.py")(ticket=ticket, timeout=30)
        assert waiter.text_response().text.startswith("job failed: authentication: ")
        assert waiter.record_response().data["status"] == "failed"


def test_job_result_hands_back_an_unfinished_job_at_the_timeout(tag):
    job_id = client.submit(f"{tag} nobody is working")  # no worker in this test
    waiter = component("job_result.py")(job_id=job_id, timeout=0.2)
    assert waiter.text_response().text == f"job {job_id} still queued after 0.2 s; " \
                                          "give its job id to Job Result to keep waiting"
    assert waiter.record_response().data["status"] == "queued"


@pytest.mark.parametrize("kind", ["message", "dataframe", "data"])
def test_batch_submit_reads_lines_tables_and_data(worker, redis_server, tag, kind):
    from lfx.schema.data import Data
    from lfx.schema.dataframe import DataFrame
    from lfx.schema.message import Message

    questions = [f"{tag} {kind} question {i}" for i in range(5)]
    texts = {"message": Message(text="\n".join(questions) + "\n\n"),
             "dataframe": DataFrame([{"q": q, "other": 1} for q in questions]),
             "data": [Data(data={"q": q}) for q in questions]}[kind]
    batch = component("batch_submit.py")(texts=texts, text_column="q", timeout=30)
    table = batch.results_response()
    assert list(table.columns) == ["input", "text", "status", "error", "cost_usd", "attempts", "job_id"]
    assert table["input"].tolist() == questions
    assert table["text"].tolist() == [answer_for(q) for q in questions]
    assert batch.status.startswith("5 jobs: 5 succeeded")
    lines = batch.table_response().text.splitlines()  # the same batch, as Markdown for a Chat Output
    assert len(lines) == 7 and lines[2].startswith(f"| {questions[0]} | {answer_for(questions[0])} | succeeded |")
    assert jobs_in_redis(redis_server) == 5


def test_batch_ticket_mode_returns_job_ids_at_once(tag):
    batch = component("batch_submit.py")(texts=f"{tag} one\n{tag} two", mode="ticket")
    table = batch.results_response()
    assert table["status"].tolist() == ["queued", "queued"]
    assert [client.status(j)["status"] for j in table["job_id"]] == ["queued", "queued"]


def test_run_flow_in_background_returns_a_ticket(tag):
    flow = (ROOT / "flows" / "queued_completion.json").read_text(encoding="utf-8")
    for source in (flow, str(ROOT / "flows" / "queued_completion.json")):
        runner = component("run_flow_background.py")(flow_json=source, input_value=f"{tag} hi")
        job_id = runner.ticket_response().text
        assert runner.record_response().data == {"job_id": job_id, "status": "queued", "flow": "Queued Completion"}
        assert client.status(job_id)["flow"] == "Queued Completion"
    with pytest.raises(ValueError, match="not valid JSON"):
        component("run_flow_background.py")(flow_json="{oops").ticket_response()


def test_components_load_from_a_components_path():
    """What Langflow does with ``LANGFLOW_COMPONENTS_PATH=flows/components``: one category, every node."""
    from lfx.custom.utils import build_custom_components

    loaded = build_custom_components([str(ROOT / "flows" / "components")])
    assert set(loaded) == {"flowcloud"}
    assert set(loaded["flowcloud"]) == {"CloudCompletion", "JobResult", "BatchSubmit", "RunFlowInBackground",
                                        "CloudSummarize", "CleanText", "RouteByLength", "LocalSummary",
                                        "SummaryReport", "EmbedText"}
    for node in loaded["flowcloud"].values():
        assert node["display_name"] and node["description"] and node["icon"]
