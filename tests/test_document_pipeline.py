"""Summarization inside Langflow: the Cloud Summarize node and flows/document_pipeline.json.

The nodes are built from their files by lfx's own loader; the flow runs under a
real `lfx run` process against a real worker and the simulator, which logs every
provider call, so "no call for a short text" is checked where calls happen.
"""

import pytest

from flowcloud import client
from tests.test_components import component, jobs_in_redis
from tests.test_flows import job_records, lfx_run


def long_text(tag: str, paragraphs: int = 100) -> str:
    """About 58 tokens a paragraph (5,800 by default: four chunks of the default 2,000). The tag opens
    every short sentence, so it falls inside the prompt excerpt the simulator logs for every chunk."""
    return "\n\n".join(
        f"{tag} part {i}: the queue held {i * 17} jobs at noon. {tag} part {i}: {i * 3} workers drained it. "
        f"{tag} part {i}: retries waited {i % 7} s. {tag} part {i}: costs came to {i * 0.25:.2f} dollars. "
        f"{tag} part {i}: no job was lost."
        for i in range(paragraphs)
    )


# These tests follow the chunks: with the default strategy, a text that fits the window is one call.
FASTEST = {"FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"}

SHORT = ("Queues decouple producers from consumers.   Workers pull jobs when they are free.\n\n\n"
         "A broker keeps the jobs safe while the workers sleep. Retries wait for the provider's Retry-After. "
         "Summaries save the workers reading time. The end.")


# Nodes on their own, no worker needed.

def test_route_by_length_measures_tokens_against_its_threshold():
    router = component("route_by_length.py")
    text = "x" * 4000  # 1,000 tokens at four characters each
    assert router(text=text, threshold_tokens=1000).branch() == "short"
    assert router(text=text, threshold_tokens=999).branch() == "long"
    node = router(text=text, threshold_tokens=999)
    assert (node.long_text().text, node.short_text().text) == (text, "")  # only the taken branch carries it
    assert node.status == "1000 tokens: long (threshold 999)"
    with pytest.raises(ValueError, match="no text to route"):
        router(text="  \n ", threshold_tokens=10).branch()
    with pytest.raises(ValueError, match="at least 1"):
        router(text=text, threshold_tokens=0).branch()


def test_local_summary_keeps_the_richest_sentences_in_text_order():
    text = ("The weather was mild. Queue workers retry failed queue jobs. Lunch was soup. "
            "Queue jobs retry when workers fail. Nothing else happened.")
    node = component("local_summary.py")(text=text, max_sentences=2)
    assert node.summary_response().text == "Queue workers retry failed queue jobs. Queue jobs retry when workers fail."
    assert node.details_response().data == {"route": "local", "text": node.summary_response().text,
                                            "sentences_kept": 2, "sentences_total": 5, "tokens_in": 34,
                                            "cost_usd": 0.0}
    short = component("local_summary.py")(text="一句话。第二句话！", max_sentences=3)
    assert short.summary_response().text == "一句话。 第二句话！"  # fewer sentences than asked: all kept
    with pytest.raises(ValueError, match="Max Sentences"):
        component("local_summary.py")(text=text, max_sentences=0).summary_response()


def test_clean_text_tidies_whitespace_and_keeps_paragraphs():
    node = component("clean_text.py")(text="  one   two\t three \x07\r\n\n\n\nfour  ")
    assert node.cleaned().text == "one two three\n\nfour"


def test_summary_report_says_how_a_summary_was_made():
    from lfx.schema.data import Data

    local = {"route": "local", "text": "Kept.", "sentences_kept": 1, "sentences_total": 4, "tokens_in": 30,
             "cost_usd": 0.0}
    report = component("summary_report.py")(summaries=[Data(data={}), Data(data=local)])
    assert report.report_response().text == ("Kept.\n\nSummarized locally: 1 of 4 sentences kept, "
                                             "about 30 tokens in, no model call, $0.")
    assert report.details_response().data == {"status": "succeeded", **local}
    with pytest.raises(ValueError, match="no summary arrived"):
        component("summary_report.py")(summaries=[Data(data={})]).report_response()


def test_cloud_summarize_refuses_empty_text_and_queues_nothing(redis_server):
    with pytest.raises(ValueError, match="no text to summarize"):
        component("cloud_summarize.py")(text="   \n").summary_response()
    assert jobs_in_redis(redis_server) == 0


# Against a real worker and the simulator.

def test_cloud_summarize_summarizes_a_long_text_through_several_chunks(start_worker, simulator, tag):
    start_worker(env=FASTEST)
    node = component("cloud_summarize.py")(text=long_text(tag), cost_flow="docs", timeout=120)
    summary = node.summary_response().text
    record = node.record_response().data  # the same job: both outputs share one submit
    progress = record["progress"]
    assert record["status"] == "succeeded" and summary == record["text"] and summary
    assert progress["chunks_total"] >= 3 and progress["chunks_done"] == progress["chunks_total"]
    assert record["flow"] == "docs" and record["cost_usd"] > 0
    assert len(simulator.requests_log(tag)) >= progress["chunks_total"]  # one map call per chunk at least
    assert f"chunks {progress['chunks_total']}/{progress['chunks_total']}" in node.status


def test_wait_mode_logs_progress_while_chunks_run(worker, tag):
    # One chunk's call times out twice at the provider (read timeout 1.5 s) before it is answered,
    # so the summary takes longer than one progress beat and the waiting node reports in between.
    text = long_text(tag).replace(f"{tag} part 50: no job was lost.",
                                  f"{tag} part 50: no job was lost [[sim:slow;delay=3;times=2]].")
    node = component("cloud_summarize.py")(text=text, timeout=120)
    record = node.record_response().data
    assert record["status"] == "succeeded"
    progress_logs = [str(log.message) for log in node.get_logs()]
    assert progress_logs and all(line.startswith(f"job {record['job_id']}: running · chunks ")
                                 for line in progress_logs)


def test_cloud_summarize_ticket_then_job_result_shows_progress(worker, tag):
    node = component("cloud_summarize.py")(text=long_text(tag), mode="ticket")
    job_id = node.summary_response().text
    assert node.record_response().data["job_id"] == job_id
    waiter = component("job_result.py")(job_id=job_id, timeout=120)
    record = waiter.record_response().data
    assert record["status"] == "succeeded" and waiter.text_response().text == record["text"]
    assert f"chunks {record['progress']['chunks_total']}/" in waiter.status


def test_a_failed_summary_is_text_not_a_trace(worker, tag):
    node = component("cloud_summarize.py")(text=long_text(tag, paragraphs=30), model="needs-other-key", timeout=60)
    assert node.summary_response().text.startswith("job failed: ")
    assert node.record_response().data["status"] == "failed"


# The whole flow, under `lfx run`.

def test_short_text_takes_the_local_path_with_no_provider_call(worker, simulator, redis_server, tmp_path, tag):
    text = f"{tag} marks this text. {SHORT}"
    result = lfx_run("document_pipeline.json", text, cwd=tmp_path)["result"]
    summary, how = result.rsplit("\n\n", 1)
    assert how.startswith("Summarized locally: 3 of ") and how.endswith("no model call, $0.")
    assert "  " not in summary and all(sentence in text for sentence in summary.split(". "))
    assert simulator.requests_log(tag) == [] and job_records(redis_server) == []


def test_long_text_takes_the_cloud_path_through_several_chunks(start_worker, simulator, redis_server, tmp_path, tag):
    start_worker(env=FASTEST)
    result = lfx_run("document_pipeline.json", long_text(tag), cwd=tmp_path)["result"]
    [record] = [r for r in job_records(redis_server) if r.get("progress")]
    chunks = record["progress"]["chunks_total"]
    assert chunks >= 3 and record["status"] == "succeeded" and record["flow"] == "document_pipeline"
    assert result == (f"{record['text']}\n\nSummarized in the cloud by {record['model']}: {chunks} chunks, "
                      f"reduce depth {record['progress']['depth']}, {record['usage']['prompt_tokens']} tokens in, "
                      f"${record['cost_usd']:.6f} (job {record['job_id']}).")
    assert len(simulator.requests_log(tag)) >= chunks
    assert client.status(record["job_id"])["status"] == "succeeded"
