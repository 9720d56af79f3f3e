"""Scale-out: four worker processes set up as four hosts would be (each its own working directory,
its own copy of the configuration, its own temporary directory, a node name of its own) serve one
queue, and share through Redis alone one rate limit, one budget, one circuit state and one answer
cache; and the Kubernetes manifests that run such a fleet (deploy/kubernetes/), checked against the
command line and the queue they name.

The fleet's test keeps the real minute: 2,000 jobs at 1,000 requests a minute, so half of them
wait for slots a minute on. What the fleet shares besides the limit is shown while they wait.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import click
import pytest
import yaml

from flowcloud import client
from flowcloud.workers.budget import Ledger
from flowcloud.workers.core.config import Config, load_config, use_config, validate
from flowcloud.workers.core.money import to_nano
from flowcloud.workers.core.records import SPEND_KEY
from flowcloud.workers.core.redis_conn import connect
from tests.conftest import ROOT, Worker, config_yaml, free_port
from tests.faults.scenario import SHOWN
from tests.test_metrics import parse, scrape, total
from tests.test_rate_limits import most_in_a_window

HOSTS = 4
JOBS = 2000
RPM = 1000
CONCURRENCY = 12  # threads per worker: a light fleet, for a machine shared with the simulator and Redis
MAX_TOKENS = 16
LIMITED = "sim/gpt-4o-mini"
DOWN = "down/gpt-4o"
CIRCUIT_MIN_CALLS = 4
CAP_USD = 0.002  # the capped flow's budget: room for about ten of its forty jobs
CAPPED_JOBS = 40
DUPLICATES = 8
AFTER_OPEN = 40  # jobs sent once the circuit is open, one message each, so every host gets some
KUBERNETES = ROOT / "deploy" / "kubernetes"


def fleet_config(redis_url: str, simulator_url: str) -> dict:
    """The configuration every host gets a copy of: the limited group, a group whose first
    deployment is down (nothing listens at its address), a global budget and a flow's cap."""
    data = yaml.safe_load(config_yaml(redis_url, simulator_url))
    sim = data["providers"][0]
    down = {**sim, "name": "down", "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "models": [m for m in sim["models"] if m["name"] == "gpt-4o"]}
    circuit = {"min_calls": CIRCUIT_MIN_CALLS, "failure_ratio": 0.5, "window_seconds": 120, "open_seconds": 600}
    return {**data, "providers": [*data["providers"], down],
            # Batching off: every job is its own call, so the simulator's log counts jobs.
            "batching": {"enabled": False},
            # Bundles of 20 (submit_many's default): a bundled job is admitted only once a job thread is
            # free to make its call, so the limiter's log and the provider's minutes agree.
            "worker": {"pool": "threads", "concurrency": CONCURRENCY},
            "model_groups": [
                {"name": "limited", "deployments": [{"provider": "sim", "model": "gpt-4o-mini", "rpm": RPM}]},
                {"name": "guarded", "deployments": [{"provider": "down", "model": "gpt-4o"}],
                 "fallbacks": [{"provider": "sim", "model": "gpt-4o"}], "attempts_per_deployment": 1,
                 "circuit": circuit}],
            "budgets": [{"name": "all", "period": "daily", "limit_usd": 100.0},
                        {"name": "capped", "period": "daily", "scope": "flow", "match": "capped",
                         "limit_usd": CAP_USD}]}


@dataclass
class Host:
    """One worker as a host of its own would run it."""

    worker: Worker
    metrics_port: int
    home: Path


@pytest.fixture
def fleet(tmp_path, redis_server, simulator, start_worker):
    """Four workers, each in a directory of its own holding its own flowcloud.yaml (found as
    ./flowcloud.yaml, as on a host), and this process as their client on the same configuration."""
    data = fleet_config(redis_server.url, simulator.url)
    saved = use_config(validate(data))

    def start(home: Path, port: int) -> Host:
        (home / "tmp").mkdir(parents=True)
        (home / "flowcloud.yaml").write_text(yaml.safe_dump(data))
        env = {"FLOWCLOUD_CONFIG": "", "FLOWCLOUD_METRICS_PORT": str(port), "TMPDIR": str(home / "tmp")}
        return Host(start_worker(concurrency=CONCURRENCY, env=env, cwd=home), port, home)

    # Started and stopped together, as hosts would be: one after another, the four took 28 s to start here.
    homes, ports = [tmp_path / f"host-{i}" for i in range(HOSTS)], [free_port() for _ in range(HOSTS)]
    with ThreadPoolExecutor(HOSTS) as pool:
        hosts = list(pool.map(start, homes, ports))
    yield hosts
    with ThreadPoolExecutor(HOSTS) as pool:
        list(pool.map(lambda host: host.worker.stop(), hosts))
    use_config(saved)


def first_minute(ids: list[str], simulator, tag: str, timeout: float = 50.0) -> list[dict]:
    """Once the limit's first minute is spent: RPM calls made, every other job booked a slot.
    Returns the records as they stand then."""
    deadline = time.monotonic() + timeout
    while len(simulator.requests_log(f"{tag} scale", limit=JOBS)) < RPM:
        assert time.monotonic() < deadline, "the first minute's calls were never made"
        time.sleep(0.5)
    while True:
        records = [client.status(job_id) for job_id in ids]
        booked = sum(r["status"] == "queued" and r.get("next_attempt_at") is not None for r in records)
        done = sum(r["status"] == "succeeded" for r in records)
        if (done, booked) == (RPM, JOBS - RPM) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def served_by(records: Iterable[dict]) -> Counter:
    """Jobs per worker node name."""
    return Counter(r["worker"] for r in records)


def one_cache(tag: str) -> list[dict]:
    """Identical jobs sent as messages of their own while the first is still calling: one call."""
    prompt = f"{tag} the same question from {DUPLICATES} callers [[sim:slow;delay=1]]"
    ids = [client.submit(prompt, model="gpt-4o", max_tokens=MAX_TOKENS) for _ in range(DUPLICATES)]
    records = client.wait_all(ids, timeout=30)
    later = client.result(client.submit(prompt, model="gpt-4o", max_tokens=MAX_TOKENS), timeout=10)
    return records + [later]


def one_cap(tag: str) -> list[dict]:
    """A flow's jobs under a cap, sent as messages of their own so that every host reserves."""
    ids = [client.submit(f"{tag} capped {i:02d}", model="gpt-4o", flow="capped", max_tokens=MAX_TOKENS)
           for i in range(CAPPED_JOBS)]
    return client.wait_all(ids, timeout=60)


def one_circuit(tag: str) -> tuple[list[dict], list[dict]]:
    """Jobs on the guarded group one at a time until its down deployment's circuit is open, then a
    burst of jobs, one message each. Returns (the jobs until it opened, the burst)."""
    opening = []
    while not opening or opening[-1]["route"].get("skipped", {}).get(DOWN) != "circuit open":
        assert len(opening) < 3 * CIRCUIT_MIN_CALLS, "the circuit never opened"
        opening.append(client.result(client.submit(f"{tag} guarded {len(opening)}", model="guarded",
                                                   max_tokens=MAX_TOKENS), timeout=20))
    ids = [client.submit(f"{tag} guarded burst {i:02d}", model="guarded", max_tokens=MAX_TOKENS)
           for i in range(AFTER_OPEN)]
    return opening, client.wait_all(ids, timeout=60)


def every_job_once(records: list[dict], calls: list[dict], prompts: list[str], names: set[str]) -> str:
    """Succeeded, on the first attempt (a wait is not one), one call each, every host serving some."""
    assert [r["status"] for r in records] == ["succeeded"] * JOBS
    assert {r["attempts"] for r in records} == {1}
    per_worker = served_by(records)
    assert set(per_worker) == names
    assert [c["status"] for c in calls] == [200] * JOBS
    assert Counter(c["prompt"] for c in calls) == Counter(prompts)
    return f"{JOBS} jobs on {HOSTS} workers (per worker {' '.join(str(n) for _, n in sorted(per_worker.items()))})"


def one_limit(calls: list[dict], fleet: list[Host]) -> str:
    """No 60 s window at the provider saw more than the rpm; the second half went a minute on, each
    delayed job counted once by whichever host delayed it."""
    times = [c["t"] for c in calls]
    busiest, spread = most_in_a_window(times, window=60.0), max(times) - min(times)
    assert busiest == RPM and spread >= 60.0
    delayed = sum(total(parse(scrape(host.metrics_port)), "flowcloud_rate_limited_total", deployment=LIMITED)
                  for host in fleet)
    assert delayed == JOBS - RPM
    return f"rpm {RPM}: at most {busiest} calls in any 60 s, spread {spread:.1f} s, {delayed:.0f} booked a slot"


def one_cache_held(duplicates: list[dict], simulator, tag: str) -> str:
    assert len(simulator.requests_log(f"{tag} the same question")) == 1
    assert sum(not r["cached"] for r in duplicates) == 1 and all(r["status"] == "succeeded" for r in duplicates)
    workers = len(served_by(r for r in duplicates if r["worker"]))  # the last was answered at submit
    assert workers > 1
    return f"{len(duplicates)} duplicates (on {workers} workers): 1 call"


def one_cap_held(capped: list[dict], simulator, tag: str, ledger: Ledger) -> str:
    """The flow's jobs, reserved on every host, never spent more than its cap."""
    done = [r for r in capped if r["status"] == "succeeded"]
    refused = [r for r in capped if r["status"] == "failed"]
    assert 0 < len(done) < CAPPED_JOBS and len(done) + len(refused) == CAPPED_JOBS
    assert {(r["error"]["kind"], r["error"]["budget"]) for r in refused} == {("budget_exceeded", "capped")}
    assert len(simulator.requests_log(f"{tag} capped")) == len(done)
    assert len(served_by(capped)) > 1
    usage = {u.name: u for u in ledger.usage()}["capped"]
    assert to_nano(usage.used_usd) == sum(to_nano(r["cost_usd"]) for r in done) and usage.used_usd <= CAP_USD
    return f"cap ${CAP_USD}: {len(done)} served, {len(refused)} refused, ledger ${usage.used_usd:.6f}"


def one_circuit_held(opening: list[dict], burst: list[dict], names: set[str]) -> str:
    """The down deployment's failures, wherever they were seen, opened its circuit for every host."""
    tried_down = [r for r in opening if any(t["deployment"] == DOWN for t in r["route"].get("tried", []))]
    assert len(tried_down) == CIRCUIT_MIN_CALLS and all(r["status"] == "succeeded" for r in opening)
    assert all(r["status"] == "succeeded" and r["route"]["skipped"] == {DOWN: "circuit open"} for r in burst)
    assert set(served_by(burst)) == names
    return (f"circuit open after {len(tried_down)} failed calls, {len(burst)} jobs on "
            f"{len(served_by(burst))} workers skipped it")


def one_budget_held(everything: list[dict], ledger: Ledger, redis) -> str:
    """The global budget's ledger and the spend counter hold the records' costs exactly: billed once."""
    billed = sum(to_nano(r["cost_usd"]) for r in everything)
    usage = {u.name: u for u in ledger.usage()}
    assert to_nano(usage["all"].used_usd) == billed == int(redis.get(SPEND_KEY))
    assert usage["all"].reserved_usd == usage["capped"].reserved_usd == 0.0
    return f"spend ${billed / 1e9:.6f} = ledger = sum of {len(everything)} records' costs"


@pytest.mark.timeout(300)  # 2,000 jobs at 1,000 a minute take more than a minute by design
def test_four_hosts_share_one_limit_one_budget_one_circuit_and_one_cache(fleet, simulator, redis_server, tag, capsys):
    started = time.time()
    names = {host.worker.hostname for host in fleet}
    redis = connect(redis_server.url)
    ledger = Ledger(redis, load_config({"FLOWCLOUD_CONFIG": str(fleet[0].home / "flowcloud.yaml")}))
    prompts = [f"{tag} scale {i:04d}" for i in range(JOBS)]
    ids = client.submit_many(prompts, model="limited", max_tokens=MAX_TOKENS)

    # The first minute's 1,000 calls are made; the other 1,000 are booked slots a minute on.
    waiting = first_minute(ids, simulator, tag)
    assert Counter(r["status"] for r in waiting) == {"succeeded": RPM, "queued": JOBS - RPM}
    assert all(r["next_attempt_at"] > started + 60 for r in waiting if r["status"] == "queued")
    # Waiting jobs hold no worker slot and no budget reservation: other jobs are served at once.
    assert {u.name: u.reserved_usd for u in ledger.usage()} == {"all": 0.0, "capped": 0.0}
    asked = time.monotonic()
    probe = client.result(client.submit(f"{tag} probe", model="gpt-4o", max_tokens=MAX_TOKENS), timeout=10)
    probe_seconds = time.monotonic() - asked
    assert probe["status"] == "succeeded" and probe_seconds < 5
    duplicates, capped, (opening, burst) = one_cache(tag), one_cap(tag), one_circuit(tag)

    records = client.wait_all(ids, timeout=180)
    wall = time.time() - started
    calls = simulator.requests_log(f"{tag} scale", limit=JOBS + 100)
    figures = [every_job_once(records, calls, prompts, names), one_limit(calls, fleet),
               f"probe served in {probe_seconds:.2f} s",
               one_budget_held(records + [probe] + duplicates + capped + opening + burst, ledger, redis),
               one_cap_held(capped, simulator, tag, ledger), one_cache_held(duplicates, simulator, tag),
               one_circuit_held(opening, burst, names), f"wall {wall:.0f} s"]
    line = "scale-out: " + "; ".join(figures)
    SHOWN.append(line)  # the run's summary, from whichever test process ran this
    with capsys.disabled():
        print("\n" + line, file=sys.stderr)


# -- the Kubernetes manifests, parsed


def manifests() -> dict[str, dict]:
    """Every object in deploy/kubernetes/, by kind."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found[document["kind"]] = document
    return found


def flowcloud_cli() -> click.Group:
    """The ``flowcloud`` group with every command registered, as ``flowcloud.cli.main`` builds it."""
    from flowcloud.cli import ab, alerts, budgets, cli, config_cmd, costs, flows, jobs, models, stack, summarize

    for module in (jobs, flows, summarize, costs, budgets, alerts, ab, models, stack, config_cmd):
        module.register(cli)
    return cli


def celery_worker_context(argv: list[str]) -> click.Context:
    """The arguments after ``worker`` in a ``celery`` command line, through Celery's own parser."""
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    from flowcloud.workers.core.celery_app import app

    rest = argv[argv.index("worker") + 1:]
    return worker.make_context("worker", rest, obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True))


def worker_command(config: Config, argv: list[str]) -> click.Context:
    """``argv`` as the container runs it: ``flowcloud worker ...``, then the Celery worker it execs."""
    from flowcloud.cli.processes import worker_argv

    assert argv[:2] == ["flowcloud", "worker"], argv
    group = flowcloud_cli()
    parent = group.make_context("flowcloud", argv[1:])
    name, command, rest = group.resolve_command(parent, argv[1:])
    ctx = command.make_context(name, rest, parent=parent)
    return celery_worker_context(worker_argv(config, tuple(ctx.args), flows=ctx.params["flows"]))


def test_the_worker_deployment_runs_a_command_the_cli_accepts_on_the_queue_the_scaler_watches():
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE

    objects = manifests()
    [container] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    config = validate(yaml.safe_load(objects["ConfigMap"]["data"]["flowcloud.yaml"]))
    celery = worker_command(config, container["command"] + container.get("args", []))
    assert celery.params["queues"] == [DEFAULT_QUEUE]
    assert celery.params["concurrency"] == config.worker.concurrency
    assert celery.params["hostname"] == f"flowcloud@{socket.gethostname()}"  # a pod's node name is its own

    scaled = objects["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == DEFAULT_QUEUE
    assert trigger["authenticationRef"]["name"] == objects["TriggerAuthentication"]["metadata"]["name"]
    # The RabbitMQ trigger, commented out beside it, names the same queue.
    text = (KUBERNETES / "keda-scaledobject.yaml").read_text()
    assert re.search(rf"^\s*#\s*queueName: {re.escape(DEFAULT_QUEUE)}$", text, re.M)


def test_the_check_rejects_a_command_the_cli_would_reject():
    config = validate(yaml.safe_load(manifests()["ConfigMap"]["data"]["flowcloud.yaml"]))
    with pytest.raises(click.UsageError):
        worker_command(config, ["flowcloud", "worker", "--no-such-celery-option"])
    with pytest.raises(click.UsageError):
        worker_command(config, ["flowcloud", "worker", "--concurrency", "many"])


def test_the_list_the_scaler_watches_is_where_the_backlog_waits(redis_server, tag):
    """No worker runs: every message sent stays in the list, a bundle of submit_many counting once."""
    client.submit_many([f"{tag} backlog {i}" for i in range(45)])  # bundles of 20, 20 and 5
    client.submit(f"{tag} alone")
    [trigger] = manifests()["ScaledObject"]["spec"]["triggers"]
    assert connect(redis_server.url).llen(trigger["metadata"]["listName"]) == 4
