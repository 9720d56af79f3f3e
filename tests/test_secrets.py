"""The canary key: used for every call, found nowhere a person or a machine could read it."""

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from flowcloud import client
from tests.conftest import CANARY_KEY, ROOT, free_port

FLOWER_AUTH = ("admin", "flower-test-password")


@pytest.fixture
def flower(tmp_path):
    port = free_port()
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            # flowcloud's Flower entry point (flowcloud.cli.flower_app), as `flowcloud flower` runs it.
            [sys.executable, "-m", "flowcloud.cli.flower_app", "--address=127.0.0.1", f"--port={port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
        )
    deadline = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    time.sleep(1.0)  # let Flower subscribe to task events before jobs run
    yield f"http://127.0.0.1:{port}", log_path
    process.terminate()
    process.wait(20)


def redis_contents(redis_client) -> bytes:
    """Every key and value in Redis, whatever its type, as one blob."""
    blob = []
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key)
        blob.append(key)
        if kind == b"string":
            blob.append(redis_client.get(key) or b"")
        elif kind == b"hash":
            blob += [b"%s=%s" % item for item in redis_client.hgetall(key).items()]
        elif kind == b"list":
            blob += redis_client.lrange(key, 0, -1)
        elif kind == b"set":
            blob += list(redis_client.smembers(key))
        elif kind == b"zset":
            blob += redis_client.zrange(key, 0, -1)
    return b"\n".join(blob)


def test_canary_key_appears_nowhere(worker, flower, redis_server, tag):
    flower_url, flower_log = flower
    jobs = [
        client.submit(f"{tag} plain"),
        client.submit(f"{tag} throttled [[sim:429;times=1;retry-after=1]]"),
        client.submit(f"{tag} broken [[sim:malformed;times=1]]"),
        client.submit(f"{tag} wrong key", model="needs-other-key"),
        client.submit(f"{tag} server error [[sim:500]]"),
    ]
    records = [client.result(job, timeout=60) for job in jobs]
    assert [r["status"] for r in records] == ["succeeded", "succeeded", "succeeded", "failed", "failed"]
    time.sleep(1.0)  # the last task events reach Flower

    tasks = requests.get(f"{flower_url}/api/tasks", auth=FLOWER_AUTH, timeout=10)
    assert tasks.status_code == 200 and set(jobs) <= set(tasks.json())
    assert requests.get(f"{flower_url}/api/tasks", timeout=10).status_code == 401

    task_infos = b"".join(
        requests.get(f"{flower_url}/api/task/info/{job}", auth=FLOWER_AUTH, timeout=10).content for job in jobs
    )
    canary = CANARY_KEY.encode()
    places = {
        "redis": redis_contents(redis_server.client()),
        "records": repr(records).encode(),
        "worker log": worker.log().encode(),
        "flower log": flower_log.read_bytes(),
        "flower api": tasks.content + task_infos,
        "flower metrics": requests.get(f"{flower_url}/metrics", timeout=10).content,
    }
    leaks = [name for name, content in places.items() if canary in content]
    assert not leaks, f"the canary key leaked into: {leaks}"
