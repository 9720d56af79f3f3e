"""Flower as `flowcloud flower` starts it: basic auth, task previews instead of prompts, and a
/metrics endpoint that answers loopback clients only unless configured."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from flowcloud import client
from flowcloud.workers.core.jobspec import PREVIEW_CHARS
from tests.conftest import CANARY_KEY, ROOT, free_port
from flowcloud.cli.flower_app import REFUSAL, guard_metrics, is_loopback

AUTH = ("admin", "flower-test-password")


@dataclass
class Flower:
    port: int
    process: subprocess.Popen
    log_path: Path

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_flower(tmp_path):
    """Start `flowcloud flower` on all interfaces; stopped when the test ends."""
    started: list[Flower] = []

    def start(env: dict[str, str]) -> Flower:
        port = free_port()
        log_path = tmp_path / f"flower-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "flowcloud.cli", "flower"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "FLOWCLOUD_FLOWER__ADDRESS": "0.0.0.0", "FLOWCLOUD_FLOWER__PORT": str(port),
                     **env})
        flower = Flower(port, process, log_path)
        started.append(flower)
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert process.poll() is None and time.monotonic() < deadline, flower.log()
            time.sleep(0.2)
        time.sleep(1.0)  # let Flower subscribe to task events before jobs run
        return flower

    yield start
    for flower in started:
        flower.process.terminate()
        flower.process.wait(20)


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback (no packet is sent), or None."""
    for target in ("10.255.255.254", "192.168.255.254", "172.31.255.254", "192.0.2.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))  # routing only: a UDP connect sends nothing
            except OSError:
                continue
            address = probe.getsockname()[0]
        if not is_loopback(address):
            return address
    return None


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.0.2.2", False), ("10.0.0.7", False), ("::ffff:10.0.0.7", False), ("fd00::2", False),
    ("0.0.0.0", False), ("", False), ("not-an-address", False),
])
def test_loopback_decision(address, loopback):
    assert is_loopback(address) is loopback


def test_guard_replaces_only_the_metrics_route():
    import flower.urls

    handlers = list(flower.urls.handlers)
    assert guard_metrics(handlers)
    changed = [(old, new) for old, new in zip(flower.urls.handlers, handlers) if old is not new]
    assert len(changed) == 1 and changed[0][1][0] == r"/metrics"
    assert issubclass(changed[0][1][1], changed[0][0][1])  # still Flower's handler underneath
    assert not guard_metrics([("/other", object)])


def test_task_list_shows_previews_never_prompts_or_keys(worker, start_flower, tag):
    flower = start_flower({"FLOWER_BASIC_AUTH": ":".join(AUTH)})
    secret_tail = f"TAIL-{tag}-the-rest-of-the-prompt"
    padding = "lorem ipsum dolor " * 10
    texts = {
        "complete": f"{tag} question {padding}{secret_tail}",
        "retried": f"{tag} throttled {padding}{secret_tail} [[sim:429;times=1;retry-after=0.2]]",
        "embed": f"{tag} embed me {padding}{secret_tail}",
        "summarize": f"{tag} summarize this {padding}{secret_tail}",
    }
    assert all(len(text) > PREVIEW_CHARS + len(secret_tail) for text in texts.values())
    jobs = {
        "complete": client.submit(texts["complete"], cache=False),
        "retried": client.submit(texts["retried"], cache=False),
        "embed": client.embed(texts["embed"]),
        "summarize": client.summarize(texts["summarize"], cache=False),
    }
    records = {name: client.result(job, timeout=90) for name, job in jobs.items()}
    assert {name: record["status"] for name, record in records.items()} == dict.fromkeys(jobs, "succeeded")
    assert records["retried"]["attempts"] >= 2
    time.sleep(1.0)  # the last task events reach Flower

    listing = requests.get(f"{flower.url()}/api/tasks", auth=AUTH, timeout=10)
    assert listing.status_code == 200 and set(jobs.values()) <= set(listing.json())
    infos = {name: requests.get(f"{flower.url()}/api/task/info/{job}", auth=AUTH, timeout=10).json()
             for name, job in jobs.items()}
    for name, info in infos.items():
        # A preview is there (a waiting summary re-sends itself described by its stage)...
        assert tag in info["args"] or info["args"].startswith("summary level"), (name, info["args"])
        assert len(info["args"]) < PREVIEW_CHARS + 80, (name, info["args"])  # ...and only a preview
    shown = listing.text + repr(infos)
    assert secret_tail not in shown and "lorem ipsum dolor lorem" not in shown
    assert CANARY_KEY not in shown + flower.log()

    assert requests.get(f"{flower.url()}/api/tasks", timeout=10).status_code == 401
    assert requests.get(f"{flower.url()}/api/tasks", auth=("admin", "wrong"), timeout=10).status_code == 401


def test_metrics_answer_loopback_only_unless_public(start_flower):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to reach Flower from")
    guarded = start_flower({"FLOWER_BASIC_AUTH": ":".join(AUTH)})
    local = requests.get(f"{guarded.url()}/metrics", timeout=10)
    assert local.status_code == 200 and "flower_" in local.text
    remote = requests.get(f"{guarded.url(address)}/metrics", timeout=10)
    assert remote.status_code == 403 and remote.text == REFUSAL
    # Only /metrics is narrowed: the authenticated API still answers on that address.
    assert requests.get(f"{guarded.url(address)}/api/workers", auth=AUTH, timeout=10).status_code == 200
    assert requests.get(f"{guarded.url(address)}/api/workers", timeout=10).status_code == 401

    public = start_flower({"FLOWER_BASIC_AUTH": ":".join(AUTH), "FLOWCLOUD_FLOWER__METRICS_PUBLIC": "true"})
    opened = requests.get(f"{public.url(address)}/metrics", timeout=10)
    assert opened.status_code == 200 and "flower_" in opened.text


def test_generated_password_is_printed_and_works(start_flower):
    env = {name: value for name, value in os.environ.items() if name != "FLOWER_BASIC_AUTH"}
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    try:
        flower = start_flower({})
    finally:
        os.environ.clear()
        os.environ.update(env)
    line = next(line for line in flower.log().splitlines() if "generated password" in line)
    password = line.rsplit(" ", 1)[1]
    assert requests.get(f"{flower.url()}/api/workers", auth=("admin", password), timeout=10).status_code == 200
    assert requests.get(f"{flower.url()}/api/workers", timeout=10).status_code == 401
