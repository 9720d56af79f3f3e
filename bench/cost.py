"""Cost: what a standard mixed workload costs through flowcloud, against the same items sent naively.

The workload (``bench/cost_workload.py``, the same every run) is 142 items: 40 short
factual questions, 16 short code-and-reasoning questions, 24 exact repeats of
them (17% of the items; half sent beside their original, half after it), 48
questions about 6 documents of 5-50 KB (8 each, the first asked before the
others, as a person reading one would), 2 documents of 8 and 35 KB summarized
interactively and 12 of 5-50 KB summarized by a nightly schedule. Simple
prompts, repeats of them included, are 39% of the items; documents are well over
half of the naive spend (the figure is in the notes).

flowcloud runs it through its public API (``submit_many``, ``summarize``; the
nightly share is a configured schedule with ``mode: batch_api``, fired as Beat
fires it, its batches polled as Beat polls them) on the simulator as the cloud
(``gpt-5-mini`` at the published prices of ``presets.yaml``: input $0.25,
cached input $0.025, output $2.00 per million tokens; Batch API at half price),
with the hybrid split's local tier on the real llama-server with SmolLM2 when
``make local-model`` installed it, and without a local tier (said in the notes)
when not. Its spend is what the tally booked (``flowcloud costs``), and the
savings by lever are the tally's. The baseline is each item once as one direct
chat call to the model the job asked for, at list price (every prompt token at
the input price); it runs after flowcloud, with the simulator's prompt cache
reset, and its success rate stands beside flowcloud's.

Read the figure with its conditions: the simulator's answers are short (about 30
tokens), so input dominates, and input is what cached prompts and the Batch API
discount; real summaries of 300 tokens make output a larger share. A direct
caller whose prompts put the shared document first gets the provider's cached
input price too: the list-price baseline is the naive call, not a careful one.
The notes re-price the same tokens at ``gpt-4o-mini``'s prices, whose cached
input is half price rather than a tenth. When scheduled runs gain ``mode: auto``
(the Batch API when the provider serves it and the schedule allows its window),
the nightly schedule here says ``mode: auto`` instead and runs the same way.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import urllib3
import yaml

from bench.cost_workload import QUICK, Item, Scale, check_mix, workload
from bench.jobs import await_all, flowcloud_fetch, problems
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import Stack, free_port, stop_process
from flowcloud.cli.local_stack import answers_ok

MODEL = "gpt-5-mini"
GROUP = "assistant"
REPRICED = "gpt-4o-mini"
TARGET_RATIO = 0.35
BATCH_DELAY = 1.0  # the simulator's batches complete this long after they are created
NIGHTLY = "nightly"
JOB_TIMEOUT = 300.0
NIGHTLY_TIMEOUT = 300.0
POLL_SECONDS = 1.0
DIRECT_THREADS = 8
MAX_TOKENS = 300  # every chat item's, flowcloud's and the direct call's; summaries use summarize.summary_tokens


def run(stack: Stack, options: Options) -> Outcome:
    """Spend through flowcloud against naive direct calls, with the savings by lever."""
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app
    from flowcloud.workers.core.config import use_config, validate

    items = workload(QUICK if options.quick else Scale())
    nightly_dir = _write_nightly(stack.workdir / "nightly", items)
    with local_tier(stack.workdir) as local, stack.simulator.batches_after(BATCH_DELAY):
        data = config_data(stack, nightly_dir, local)
        path = stack.workdir / "cost.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = validate(data)
        previous = use_config(config)
        try:
            with stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, options.slots(),
                               env={"FLOWCLOUD_CONFIG": str(path)}):
                measured = _through_flowcloud(items, nightly_dir)
        finally:
            use_config(previous)
    stack.simulator.reset()  # the direct calls find no prefix flowcloud's calls left in the prompt cache
    naive = _direct_calls(stack.simulator.url, items, config)
    return _outcome(items, measured, naive, config, local is not None)


def config_data(stack: Stack, nightly_dir: Path, local: str | None) -> dict:
    """The cloud on the simulator with the published prices; the local tier when llama-server runs."""
    from flowcloud.workers.core.local_model import MODEL_NAME

    group: dict = {"name": GROUP, "deployments": [{"provider": "cloud", "model": MODEL}]}
    providers = [{"name": "cloud", "preset": "openai", "base_url": stack.simulator.url, "allow_private": True,
                  "timeout": {"connect": 5, "read": 60}}]
    if local is not None:
        providers.append({"name": "local", "preset": "llamacpp", "base_url": local, "timeout": {"connect": 2, "read": 60}})
        group["hybrid"] = {"local": {"provider": "local", "model": MODEL_NAME}}
    return {
        "redis_url": stack.redis.url, "metrics_port": 0, "default_model": MODEL, "providers": providers,
        "model_groups": [group], "batch_api_poll_seconds": POLL_SECONDS,
        "schedules": [{"name": NIGHTLY, "cron": "0 2 * * *", "source": str(nightly_dir / "*.txt"),
                       "output": str(nightly_dir.parent / "nightly-summaries"), "model": MODEL,
                       "mode": "batch_api"}],
    }


@contextmanager
def local_tier(workdir: Path) -> Iterator[str | None]:
    """llama-server with SmolLM2 on a free port while the block runs (its URL); None when not installed."""
    from flowcloud.workers.core import local_model

    found = local_model.find()
    if found is None:
        yield None
        return
    port, log_path = free_port(), workdir / "llama-server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(found.server_argv(port), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not answers_ok(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not start; see {log_path}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(process)


def _write_nightly(folder: Path, items: list[Item]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        if item.kind == "nightly":
            (folder / item.name).write_text(item.text, encoding="utf-8")
    return folder


def _through_flowcloud(items: list[Item], nightly_dir: Path) -> dict:
    """Every item through flowcloud's public API: records, the nightly run's report, the tally."""
    from flowcloud.workers.core.celery_app import SUMMARIZE_RUN_TASK, app

    app.send_task(SUMMARIZE_RUN_TASK, args=[NIGHTLY])  # as Beat fires the schedule
    records: dict[int, dict] = {}
    for later in (False, True):  # late repeats and follow-up questions once the first round is in
        ids = _submit([(i, item) for i, item in enumerate(items) if item.later == later and item.kind != "nightly"])
        done = await_all(list(ids.values()), flowcloud_fetch(), timeout=JOB_TIMEOUT)
        records.update({index: done[job_id] for index, job_id in ids.items() if job_id in done})
        trouble = problems("first round" if not later else "second round", list(ids.values()), done)
        if trouble:
            return {"records": records, "report": None, "problems": trouble}
    report = _await_nightly(nightly_dir.parent / "nightly-summaries" / "run-report.json")
    return {"records": records, "report": report, "tally": _tally(),
            "problems": [] if report else [f"the nightly run did not finish within {NIGHTLY_TIMEOUT:g} s"]}


def _submit(indexed: list[tuple[int, Item]]) -> dict[int, str]:
    """Job ids by item index: the chat items of a round in one ``submit_many`` per flow (so a repeat sent
    beside its original is queued with it), each summary on its own."""
    from flowcloud import client

    ids = {}
    for flow in ("short", "documents"):
        chats = [(i, item) for i, item in indexed if item.kind != "summary" and _flow(item) == flow]
        if chats:
            sent = client.submit_many([list(item.messages) for _, item in chats], model=GROUP, flow=flow,
                                      max_tokens=MAX_TOKENS)
            ids.update({i: job_id for (i, _), job_id in zip(chats, sent)})
    ids.update({i: client.summarize(item.text, model=MODEL, flow="summaries") for i, item in indexed
                if item.kind == "summary"})
    return ids


def _flow(item: Item) -> str:
    return "documents" if item.document else "short"


def _await_nightly(report_path: Path) -> dict | None:
    """Poll the Batch API runs as Beat would until the nightly run's report says it completed."""
    from flowcloud.workers.core.celery_app import POLL_BATCHES_TASK, app

    deadline = time.monotonic() + NIGHTLY_TIMEOUT
    while time.monotonic() < deadline:
        app.send_task(POLL_BATCHES_TASK)
        time.sleep(POLL_SECONDS)
        if report_path.exists():
            report = json.loads(report_path.read_text())
            if report["status"] == "completed":
                return report
    return None


def _tally() -> dict:
    """Today's booked spend and savings by lever (yesterday's too, should the run cross midnight)."""
    from flowcloud.workers.core import tally
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.money import from_nano
    from flowcloud.workers.core.redis_conn import connect

    redis = connect(get_config().redis_url_or_embedded())
    days = [tally.utc_day(time.time() - 86400), tally.utc_day()]
    saved = {lever.value: 0 for lever in tally.Lever}
    for entry in tally.read_savings(redis, days):
        saved[entry.lever] += entry.nano_usd
    return {"spend": from_nano(sum(e.nano_usd for e in tally.read_costs(redis, days))),
            "saved": {lever: from_nano(nano) for lever, nano in saved.items()}}


def _direct_calls(url: str, items: list[Item], config) -> list[dict | None]:
    """Each item once as one direct chat call; its usage, or None when the call failed."""
    pool = urllib3.PoolManager(maxsize=DIRECT_THREADS)

    def call(item: Item) -> dict | None:
        body = json.dumps({"model": MODEL, "messages": list(item.messages), "max_tokens": MAX_TOKENS}).encode()
        try:
            answer = pool.request("POST", f"{url}/chat/completions", body=body,
                                  headers={"Content-Type": "application/json"}, timeout=60.0, retries=False)
        except urllib3.exceptions.HTTPError:
            return None
        return json.loads(answer.data)["usage"] if answer.status == 200 else None

    with ThreadPoolExecutor(DIRECT_THREADS) as threads:
        return list(threads.map(call, items))


def _outcome(items: list[Item], measured: dict, naive: list[dict | None], config, local: bool) -> Outcome:
    from flowcloud.workers.core.savings import list_cost

    entry = config.provider("cloud").price(MODEL)
    naive_usd = [list_cost(entry, usage) for usage in naive]
    shares, broken = check_mix(items, naive_usd)
    succeeded = _flowcloud_successes(measured)
    spend = measured.get("tally", {}).get("spend", float("nan"))
    saved = measured.get("tally", {}).get("saved", {})
    figures = [
        Figure("spend", "$", spend, sum(naive_usd), Target("ratio", "<=", TARGET_RATIO)),
        Figure("success rate", "%", 100 * succeeded / len(items), 100 * sum(u is not None for u in naive) / len(items),
               Target("ratio", ">=", 1.0), plot=False),
        *[Figure(f"saved by {lever}", "$", usd, plot=False) for lever, usd in saved.items()],
    ]
    notes = [
        f"{len(items)} items: repeats {shares['repeats']:.0%} of them, simple prompts {shares['simple']:.0%}; "
        f"documents {shares['documents_spend']:.0%} of the naive spend",
        "local tier: llama-server with SmolLM2" if local else
        "local tier: not installed (`make local-model`), so this run had none and simple prompts went to the cloud",
        "saved by summary_plan is against the chunked plan, not against the naive call (one call, as the plan used)",
        *_repriced(measured, naive, config),
    ]
    return Outcome("cost", f"{len(items)} mixed items on {MODEL} at published prices, nightly share by Batch API",
                   subject="flowcloud", baseline="each item once, one direct call at list price",
                   figures=figures, notes=notes, problems=measured["problems"] + broken)


def _flowcloud_successes(measured: dict) -> int:
    records = measured["records"]
    jobs = sum(record.get("status") == "succeeded" for record in records.values())
    report = measured.get("report") or {}
    return jobs + int(report.get("done", 0))


def _repriced(measured: dict, naive: list[dict | None], config) -> list[str]:
    """The same tokens at ``REPRICED``'s published prices: how much the figure owes the model's cached price."""
    from flowcloud.workers.core.savings import list_cost

    entry = config.provider("cloud").price(REPRICED)
    report = measured.get("report")
    if entry is None or report is None:
        return []
    billed = [r for r in measured["records"].values() if r.get("provider") == "cloud" and not r.get("cached")]
    spend = sum(entry.cost(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"],
                           r["usage"].get("cached_tokens", 0)) for r in billed)
    batch_ratio = config.provider("cloud").batch_price_ratio
    spend += batch_ratio * entry.cost(report["tokens_in"], report["tokens_out"])
    baseline = sum(list_cost(entry, usage) for usage in naive)
    if not baseline:
        return []
    return [f"the same tokens at {REPRICED}'s prices (cached input half the input price): spend "
            f"{spend / baseline:.2f}x the naive calls"]

