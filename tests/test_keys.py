"""Provider keys by reference: each source read again when it changes, several keys per provider
with cooldowns shared through Redis, and a key rotated in Vault mid-run. Everything is real: files,
OpenBao's dev server, Redis, the simulator over HTTP and Celery workers."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from flowcloud import client
from flowcloud.workers.core.config import ProviderConfig, VaultSettings, use_config, validate
from flowcloud.workers.core.errors import ConfigError, KeyUnavailable
from flowcloud.workers.core.secrets import KeyPool, fingerprint, reload_all
from flowcloud.workers.core.secrets.cooldowns import PREFIX
from tests.conftest import Simulator

MODEL = {"name": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.60}


def new_key(label: str) -> str:
    return f"sk-test-{label}-{uuid.uuid4().hex}"


@pytest.fixture
def sim(own_simulator) -> Simulator:
    return own_simulator


def accept(sim: Simulator, *keys: str) -> None:
    reply = requests.post(f"{sim.root}/_sim/config", json={"keys": list(keys)}, timeout=10)
    assert reply.status_code == 200 and reply.json()["keys"] == len(keys), reply.text


def calls(sim: Simulator) -> list[dict]:
    """The simulator's chat calls, oldest first."""
    logged = requests.get(f"{sim.root}/_sim/requests", params={"limit": 20000}, timeout=10).json()
    return [entry for entry in logged if entry["path"].endswith("/chat/completions")]


def provider(sim: Simulator, **keys) -> dict:
    return {"name": "keyed", "kind": "openai", "base_url": sim.url, "allow_private": True, "timeout": {"connect": 2, "read": 5},
            "models": [MODEL], **keys}


def use_stack(tmp_path: Path, redis_server, providers: list[dict], vault: dict | None = None) -> tuple[Path, dict]:
    data = {"redis_url": redis_server.url, "default_model": "gpt-4o-mini", "providers": providers,
            "retry": {"max_attempts": 3, "base_delay": 0.1, "max_delay": 0.5}, "metrics_port": 0,
            "worker": {"pool": "threads", "concurrency": 8}, "cache": {"enabled": False}}
    if vault is not None:
        data["vault"] = vault
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


@pytest.fixture
def stack(tmp_path, redis_server, start_worker):
    """Write a configuration, make it this process's and start workers on it; put the old one back after."""
    previous = []

    def start(providers: list[dict], vault: dict | None = None, env: dict | None = None, pool: str = "threads"):
        path, data = use_stack(tmp_path, redis_server, providers, vault)
        previous.append(use_config(validate(data)))
        return start_worker(pool=pool, concurrency=8 if pool == "threads" else 2,
                            env={"FLOWCLOUD_CONFIG": str(path), **(env or {})})

    yield start
    if previous:
        use_config(previous[0])


def run(prompts: list[str], timeout: float = 60) -> list[dict]:
    return [client.result(job, timeout=timeout) for job in [client.submit(p) for p in prompts]]


# -- references in the configuration


@pytest.mark.parametrize("given, field", [
    ({"api_key": "sk-live-0123456789abcdef"}, "providers.0.api_key"),
    ({"api_keys": ["env:GOOD", "sk-live-0123456789abcdef"]}, "providers.0.api_keys.1"),
    ({"api_key": "env:9BAD"}, "providers.0.api_key"),
    ({"api_key": "file:relative/path"}, "providers.0.api_key"),
    ({"api_key": "vault:secret#field"}, "providers.0.api_key"),
    ({"api_key": "vault:secret/path"}, "providers.0.api_key"),
    ({"api_keys": ["env:A", "env:A"]}, "providers.0.api_keys"),
    ({"api_key": "env:A", "api_key_env": "B"}, "providers.0.api_key"),
])
def test_a_key_is_given_by_reference_only(given, field):
    entry = {"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": [MODEL], **given}
    with pytest.raises(ConfigError) as caught:
        validate({"providers": [entry]})
    assert caught.value.field == field, caught.value
    assert "sk-live" not in str(caught.value)


def test_vault_is_opened_by_a_reference_kept_outside_it():
    for settings, field in [({"token": "vault:secret/vault#token"}, "vault.token"),
                            ({"role_id": "env:ROLE"}, "vault.role_id"),
                            ({"token": "env:T", "role_id": "env:R", "secret_id": "env:S"}, "vault.token")]:
        with pytest.raises(ConfigError) as caught:
            validate({"providers": [provider_stub()], "default_model": "gpt-4o-mini", "vault": settings})
        assert caught.value.field == field, caught.value


# -- sources, read directly


def test_a_file_key_is_read_again_when_the_file_changes(tmp_path):
    path = tmp_path / "key"
    first, second = new_key("one"), new_key("second")
    path.write_text(first + "\n")
    pool = KeyPool.for_provider(ProviderConfig(**provider_stub(api_key=f"file:{path}")))
    key = pool.first()
    assert key.secret == first and key.fingerprint == fingerprint("stub", first)
    assert first not in repr(key) and len(key.fingerprint) == 8
    path.write_text(second + "\n")
    assert pool.first().secret == second
    path.unlink()
    with pytest.raises(KeyUnavailable, match=f"file:{path} cannot be read"):
        pool.first()


def provider_stub(**keys) -> dict:
    return {"name": "stub", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": [MODEL], **keys}


def test_a_vault_key_moves_to_its_new_version(vault_server, monkeypatch):
    path = f"flowcloud/{uuid.uuid4().hex}"
    first, second, third = new_key("v1"), new_key("v2"), new_key("v3")
    vault_server.put(path, api_key=first)
    often = VaultSettings(url=vault_server.url, token="env:FLOWCLOUD_TEST_VAULT_TOKEN", refresh_seconds=0.2)
    seldom = often.model_copy(update={"refresh_seconds": 3600})
    config = ProviderConfig(**provider_stub(api_key=f"vault:secret/{path}#api_key"))
    monkeypatch.setenv("FLOWCLOUD_TEST_VAULT_TOKEN", vault_server.token)
    polled, held = KeyPool.for_provider(config, often), KeyPool.for_provider(config, seldom)
    assert polled.first().secret == first and held.first().secret == first

    vault_server.put(path, api_key=second)
    deadline = time.monotonic() + 20
    while polled.first().secret != second:  # read again once refresh_seconds have passed
        assert time.monotonic() < deadline, "the new version was never read"
        time.sleep(0.1)
    assert held.first().secret == first  # not yet due
    reload_all()  # what a worker's SIGHUP does
    assert held.first().secret == second

    vault_server.put(path, api_key=third)
    assert held.describe() == [{"key": f"vault:secret/{path}#api_key", "fingerprint": fingerprint("stub", second)}]


def test_an_approle_login_reads_the_key(vault_server, tmp_path, monkeypatch):
    admin = vault_server.client()
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy("flowcloud-keys", 'path "secret/data/flowcloud/*" { capabilities = ["read"] }')
    admin.auth.approle.create_or_update_approle("flowcloud", token_policies=["flowcloud-keys"], token_ttl="5m")
    role_id = admin.auth.approle.read_role_id("flowcloud")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id("flowcloud")["data"]["secret_id"]
    (tmp_path / "role_id").write_text(role_id)
    monkeypatch.setenv("FLOWCLOUD_TEST_SECRET_ID", secret_id)
    key = new_key("approle")
    vault_server.put("flowcloud/approle", api_key=key)
    vault = VaultSettings(url=vault_server.url, role_id=f"file:{tmp_path / 'role_id'}",
                          secret_id="env:FLOWCLOUD_TEST_SECRET_ID")
    allowed = ProviderConfig(**provider_stub(api_key="vault:secret/flowcloud/approle#api_key"))
    assert KeyPool.for_provider(allowed, vault).first().secret == key

    vault_server.put("elsewhere/key", api_key=key)
    denied = ProviderConfig(**provider_stub(api_key="vault:secret/elsewhere/key#api_key"))
    with pytest.raises(KeyUnavailable, match="secret/elsewhere/key was refused") as caught:
        KeyPool.for_provider(denied, vault).first()
    assert key not in str(caught.value) and secret_id not in str(caught.value)


def test_an_unreadable_key_is_named_never_shown(vault_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCLOUD_TEST_VAULT_TOKEN", vault_server.token)
    vault = VaultSettings(url=vault_server.url, token="env:FLOWCLOUD_TEST_VAULT_TOKEN")
    vault_server.put("flowcloud/other-field", other=new_key("other"))
    for ref, why in [("env:FLOWCLOUD_TEST_UNSET_KEY", "is not set"),
                     (f"file:{tmp_path}/absent", "cannot be read"),
                     ("vault:secret/flowcloud/absent#api_key", "does not exist"),
                     ("vault:secret/flowcloud/other-field#api_key", "names no text field 'api_key'")]:
        pool = KeyPool.for_provider(ProviderConfig(**provider_stub(api_key=ref)), vault)
        with pytest.raises(KeyUnavailable, match=why) as caught:
            pool.first()
        assert ref.split(":", 1)[1].split("#")[0] in str(caught.value) and caught.value.retryable


# -- several keys, through real workers


def test_a_rejected_key_moves_jobs_to_the_next_and_cools_down_across_workers(sim, stack, redis_server, tag, monkeypatch):
    rejected, accepted = new_key("rejected"), new_key("accepted")
    accept(sim, accepted)
    monkeypatch.setenv("FLOWCLOUD_TEST_KEY_A", rejected)
    monkeypatch.setenv("FLOWCLOUD_TEST_KEY_B", accepted)
    first_worker = stack([provider(sim, api_keys=["env:FLOWCLOUD_TEST_KEY_A", "env:FLOWCLOUD_TEST_KEY_B"])])
    [record] = run([f"{tag} first"])
    assert record["status"] == "succeeded" and record["attempts"] == 1, record
    cooling = f"{PREFIX}keyed:{fingerprint('keyed', rejected)}"
    redis = redis_server.client()
    assert redis.get(cooling) == b"401" and 0 < redis.pttl(cooling) <= 300_000
    assert [(c["status"], c["key"]) for c in calls(sim)] == [(401, None), (200, 0)]
    first_worker.stop()

    stack([provider(sim, api_keys=["env:FLOWCLOUD_TEST_KEY_A", "env:FLOWCLOUD_TEST_KEY_B"])])  # a second process
    records = run([f"{tag} then {i}" for i in range(10)])
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in records), records
    later = calls(sim)[2:]
    assert len(later) == 10 and all(c["status"] == 200 and c["key"] == 0 for c in later), later
    assert rejected.encode() not in b"".join(redis.keys(f"{PREFIX}*"))


def test_a_429_moves_the_job_to_the_next_key_at_once(sim, stack, redis_server, tag, monkeypatch):
    first, second = new_key("first"), new_key("second")
    accept(sim, first, second)
    monkeypatch.setenv("FLOWCLOUD_TEST_KEY_A", first)
    monkeypatch.setenv("FLOWCLOUD_TEST_KEY_B", second)
    stack([provider(sim, api_keys=["env:FLOWCLOUD_TEST_KEY_A", "env:FLOWCLOUD_TEST_KEY_B"])])
    [record] = run([f"{tag} [[sim:429;times=1;retry-after=30]]"])
    assert record["status"] == "succeeded" and record["attempts"] == 1, record
    assert [(c["status"], c["key"]) for c in calls(sim)] == [(429, 0), (200, 1)]
    cooling = f"{PREFIX}keyed:{fingerprint('keyed', first)}"
    assert redis_server.client().get(cooling) == b"429"
    assert 0 < redis_server.client().pttl(cooling) <= 30_000  # set aside for its Retry-After
    run([f"{tag} next"])
    assert calls(sim)[-1]["key"] == 1  # the first key is still set aside


def wait_until_succeeded(jobs: list[str], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(client.status(job)["status"] == "succeeded" for job in jobs) < count:
        assert time.monotonic() < deadline, "jobs never finished"
        time.sleep(0.05)


def test_rotating_the_key_in_vault_mid_run_fails_no_job(sim, stack, vault_server, tag):
    old, new = new_key("old"), new_key("new")
    path = f"flowcloud/{uuid.uuid4().hex}"
    vault_server.put(path, api_key=old)
    accept(sim, old)
    vault = {"url": vault_server.url, "token": "env:FLOWCLOUD_TEST_VAULT_TOKEN", "refresh_seconds": 3600}
    stack([provider(sim, api_key=f"vault:secret/{path}#api_key")], vault,
          env={"FLOWCLOUD_TEST_VAULT_TOKEN": vault_server.token})
    requests.post(f"{sim.root}/_sim/config", json={"latency": 0.1}, timeout=10)
    jobs = client.submit_many([f"{tag} {i}" for i in range(60)])
    wait_until_succeeded(jobs, 15)
    vault_server.put(path, api_key=new)  # rotated: the old key is revoked at once
    accept(sim, new)
    records = client.wait_all(jobs, timeout=120)
    assert [r["status"] for r in records] == ["succeeded"] * 60
    assert all(r["attempts"] == 1 for r in records), [r["attempts"] for r in records]
    made = calls(sim)
    assert all(c["status"] in (200, 401) for c in made) and sum(c["status"] == 200 for c in made) == 60
    assert any(c["status"] == 401 for c in made), "the rotation came after every call"
    assert made[-1]["status"] == 200 and made[-1]["key"] == 0  # the new key, the only one accepted now


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sighup_makes_a_worker_read_its_keys_again(sim, stack, vault_server, tag, pool):
    old, new = new_key("old"), new_key("new")
    path = f"flowcloud/{uuid.uuid4().hex}"
    vault_server.put(path, api_key=old)
    accept(sim, old, new)  # both accepted: nothing but the signal makes the worker read Vault again
    vault = {"url": vault_server.url, "token": "env:FLOWCLOUD_TEST_VAULT_TOKEN", "refresh_seconds": 3600}
    worker = stack([provider(sim, api_key=f"vault:secret/{path}#api_key")], vault,
                   env={"FLOWCLOUD_TEST_VAULT_TOKEN": vault_server.token}, pool=pool)
    run([f"{tag} before {i}" for i in range(4)])  # a prefork pool's processes each read the key
    vault_server.put(path, api_key=new)
    run([f"{tag} still before {i}" for i in range(4)])
    assert [c["key"] for c in calls(sim)] == [0] * 8
    os.kill(worker.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "provider keys are read again" not in worker.log():
        assert time.monotonic() < deadline and worker.process.poll() is None, worker.log()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # the signal reaches the pool's processes
    run([f"{tag} after {i}" for i in range(4)])
    assert [c["key"] for c in calls(sim)[-4:]] == [1] * 4, worker.log()[-4000:]
    assert worker.process.poll() is None and "Restarting celery worker" not in worker.log()
    assert "exited with" not in worker.log()  # no pool process was lost to the signal


def test_a_pool_uses_its_readable_keys_and_the_one_free_soonest_when_all_are_set_aside(tmp_path, redis_server):
    from flowcloud.workers.core.errors import AuthenticationFailed, RateLimited

    first, second = new_key("first"), new_key("second")
    (tmp_path / "second").write_text(second)
    config = ProviderConfig(**provider_stub(api_keys=[f"file:{tmp_path / 'first'}", f"file:{tmp_path / 'second'}"]))
    pool = KeyPool.for_provider(config, client=redis_server.client())
    assert pool.first().secret == second  # the first key's file is missing: the next one serves
    (tmp_path / "first").write_text(first)
    assert pool.first().secret == first

    tried: set[str] = set()
    refused = AuthenticationFailed("refused", provider="stub", status=401)
    following = pool.next_after(pool.first(), refused, tried)
    assert following.secret == second
    throttled = RateLimited("slow down", provider="stub", status=429, retry_after=5)
    assert pool.next_after(following, throttled, tried) is None  # nothing left for this call
    assert pool.first().secret == second  # both set aside: the 429's 5 s end before the 401's 300 s
    assert KeyPool.for_provider(config, client=redis_server.client()).first().secret == second  # shared
