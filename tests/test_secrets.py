"""The canary keys: used for every call, from every source a key may come from, found nowhere a
person or a machine could read them."""

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from flowcloud import client
from flowcloud.workers.core.config import use_config, validate
from tests.conftest import CANARY_KEY, KEY_ENV, ROOT, free_port, run_cli
from tests.test_keys import accept, calls, provider, use_stack

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


def test_canary_keys_from_every_source_appear_nowhere(flower, own_simulator, vault_server, redis_server, start_worker,
                                                      tmp_path, tag):
    """A canary key in each source (env, file, Vault), through successes, retries, a key refused and
    replaced by the next, a key rotated in Vault and failures: none is found anywhere."""
    flower_url, flower_log = flower
    sim = own_simulator
    file_refused, file_key, wrong = (CANARY_KEY + "-file-refused", CANARY_KEY + "-file", CANARY_KEY + "-wrong")
    vault_old, vault_new = CANARY_KEY + "-vault-1", CANARY_KEY + "-vault-2"
    for name, value in [("refused", file_refused), ("key", file_key), ("wrong", wrong)]:
        (tmp_path / name).write_text(value + "\n")
    vault_server.put("flowcloud/canary", api_key=vault_old)
    accept(sim, CANARY_KEY, file_key, vault_old)
    providers = [
        provider(sim, api_key=f"env:{KEY_ENV}") | {"name": "from-env"},
        provider(sim, api_keys=[f"file:{tmp_path / 'refused'}", f"file:{tmp_path / 'key'}"])
        | {"name": "from-file", "models": [{"name": "file-model"}]},
        provider(sim, api_key="vault:secret/flowcloud/canary#api_key")
        | {"name": "from-vault", "models": [{"name": "vault-model"}]},
        provider(sim, api_key=f"file:{tmp_path / 'wrong'}") | {"name": "refused", "models": [{"name": "wrong-model"}]},
    ]
    vault = {"url": vault_server.url, "token": "env:FLOWCLOUD_TEST_VAULT_TOKEN", "refresh_seconds": 0.5}
    path, data = use_stack(tmp_path, redis_server, providers, vault)
    env = {"FLOWCLOUD_CONFIG": str(path), "FLOWCLOUD_TEST_VAULT_TOKEN": vault_server.token}
    metrics_port = free_port()
    worker = start_worker(env={**env, "FLOWCLOUD_METRICS_PORT": str(metrics_port)})
    previous = use_config(validate(data))
    try:
        jobs = [
            client.submit(f"{tag} plain"),
            client.submit(f"{tag} throttled [[sim:429;times=1;retry-after=1]]"),
            client.submit(f"{tag} broken [[sim:malformed;times=1]]"),
            client.submit(f"{tag} from a file", model="file-model"),
            client.submit(f"{tag} from vault", model="vault-model"),
            client.submit(f"{tag} from vault, throttled [[sim:429;times=1;retry-after=1]]", model="vault-model"),
        ]
        records = [client.result(job, timeout=60) for job in jobs]
        vault_server.put("flowcloud/canary", api_key=vault_new)  # rotated, the old key revoked at once
        accept(sim, CANARY_KEY, file_key, vault_new)
        later = [client.submit(f"{tag} rotated {i}", model="vault-model") for i in range(3)]
        failing = [client.submit(f"{tag} wrong key", model="wrong-model"), client.submit(f"{tag} server [[sim:500]]")]
        records += [client.result(job, timeout=60) for job in later + failing]
        jobs += later + failing
    finally:
        use_config(previous)
    assert [r["status"] for r in records] == ["succeeded"] * 9 + ["failed"] * 2, records
    assert records[1]["attempts"] == 2 and records[3]["attempts"] == 1  # a retry; a key replaced at once
    assert "rejected the API key" in records[9]["error"]["message"]
    made = calls(sim)
    assert (401, None) in [(c["status"], c["key"]) for c in made] and made[-1]["status"] == 500
    assert any(c["key"] == 2 and c["status"] == 200 for c in made[-6:])  # the new Vault key was used
    time.sleep(1.0)  # the last task events reach Flower

    checked = run_cli("config", "check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "fingerprint" in checked.stdout and "vault:secret/flowcloud/canary#api_key" in checked.stdout
    tasks = requests.get(f"{flower_url}/api/tasks", auth=FLOWER_AUTH, timeout=10)
    assert tasks.status_code == 200 and set(jobs) <= set(tasks.json())
    task_infos = b"".join(
        requests.get(f"{flower_url}/api/task/info/{job}", auth=FLOWER_AUTH, timeout=10).content for job in jobs
    )
    pages = b"".join(requests.get(f"{flower_url}{page}", auth=FLOWER_AUTH, timeout=10).content
                     for page in ["/", "/tasks", "/workers"] + [f"/task/{job}" for job in jobs])
    canary = CANARY_KEY.encode()
    places = {
        "redis": redis_contents(redis_server.client()),
        "records": repr(records).encode(),
        "worker log": worker.log().encode(),
        "flower pages": pages,
        "worker metrics": requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).content,
        "config check": (checked.stdout + checked.stderr).encode(),
        "flower log": flower_log.read_bytes(),
        "flower api": tasks.content + task_infos,
        "flower metrics": requests.get(f"{flower_url}/metrics", timeout=10).content,
    }
    leaks = [name for name, content in places.items() if canary in content]
    assert not leaks, f"a canary key leaked into: {leaks}"
