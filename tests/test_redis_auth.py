"""Redis with a password, and Redis with TLS and a password, end to end: a real worker, a client, Flower
and `config check` against each; a wrong password or an unverifiable certificate is a clear error at
once; the password shows nowhere (worker log, Flower's API, pages and log, `config check`, records,
metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from kombu.exceptions import OperationalError

from flowcloud.workers.core import redis_transport
from flowcloud.workers.core.config import load_config
from flowcloud.workers.core.embedded_redis import redis_server_binary
from flowcloud.workers.core.errors import BrokerUnavailable
from flowcloud.workers.core.redis_conn import check_url, connect, display_url, tls_options
from tests.conftest import ROOT, config_yaml, free_port, run_cli
from tests.test_flower import AUTH, start_flower  # noqa: F401 (a fixture)

PASSWORD = "pw-" + uuid.uuid4().hex
DEBIAN_REDIS = Path("/usr/bin/redis-server")

# A user's program: submit (one bundle, single jobs, an embedding), wait, print the records.
CLIENT = """
import json, sys
from flowcloud import client
tag = sys.argv[1]
ids = client.submit_many([f"{tag} bundled {i}" for i in range(3)], cache=False)
ids += [client.submit(f"{tag} single {i}", cache=False) for i in range(3)] + [client.embed(f"{tag} embed")]
print(json.dumps(client.wait_all(ids, timeout=60)))
"""


@dataclass
class SecuredRedis:
    """A redis-server of the test's own, reached only with ``PASSWORD`` (and TLS when ``tls``)."""

    url: str
    argv: list[str]
    log_path: Path
    tls: bool
    process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def with_password(self, password: str) -> str:
        return self.url.replace(PASSWORD, password)

    def start(self) -> SecuredRedis:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, f"redis-server exited:\n{self.log()[-2000:]}"
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"redis-server not ready:\n{self.log()[-2000:]}"
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_redis(binary: str, workdir: Path, args: list[str], url: str, tls: bool) -> SecuredRedis:
    argv = [binary, "--dir", str(workdir), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
            "--save", "", "--appendonly", "no", *args]
    return SecuredRedis(url, argv, workdir / "redis.log", tls).start()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the server's, its CA and the client's (mutual TLS)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def tls_capable_redis() -> str:
    """The Debian redis-server, which links OpenSSL; the test is skipped (and says why) without it."""
    reason = None
    if not DEBIAN_REDIS.is_file():
        reason = f"{DEBIAN_REDIS} is missing (apt-get install redis-server)"
    elif b"libssl" not in DEBIAN_REDIS.read_bytes():
        reason = f"{DEBIAN_REDIS} is built without TLS"
    if reason:
        print(f"skipping the Redis TLS test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return str(DEBIAN_REDIS)


def password_redis(workdir: Path) -> SecuredRedis:
    port = free_port()
    return start_redis(redis_server_binary(), workdir, ["--port", str(port)],
                       f"redis://:{PASSWORD}@127.0.0.1:{port}/0", tls=False)


def tls_redis(workdir: Path) -> SecuredRedis:
    binary = tls_capable_redis()
    cert, key = make_certificate(workdir)
    port = free_port()
    args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "yes"]
    url = (f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
           f"&ssl_certfile={cert}&ssl_keyfile={key}")
    return start_redis(binary, workdir, args, url, tls=True)


@pytest.fixture(params=["password", "tls"])
def secured(request, tmp_path):
    workdir = tmp_path / "secured-redis"
    workdir.mkdir()
    server = (password_redis if request.param == "password" else tls_redis)(workdir)
    yield server
    server.stop()


@pytest.fixture
def tls_only(tmp_path):
    workdir = tmp_path / "tls-redis"
    workdir.mkdir()
    server = tls_redis(workdir)
    yield server
    server.stop()


def config_env(tmp_path: Path, redis_url: str, sim_url: str, name: str = "flowcloud.yaml") -> dict[str, str]:
    path = tmp_path / name
    # Quoted: the URL's query holds '&' and '?'.
    path.write_text(config_yaml(json.dumps(redis_url), sim_url))
    return {"FLOWCLOUD_CONFIG": str(path)}


def run_client(env: dict[str, str], tag: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", CLIENT, tag], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    return json.loads(done.stdout)


def everything_stored(server: SecuredRedis) -> str:
    """Every key and value in ``server``, as text: records, results, queues, tallies."""
    client = server.client()
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}.get(kind)
        parts.append(f"{key!r} {value(key) if value else kind!r}")
    return "\n".join(parts)


def flower_pages(flower) -> dict[str, str]:
    """Flower's API and pages that could show the broker, by path: its workers (with their broker
    settings), tasks, queue lengths (read by Flower's own Redis client), broker page and metrics."""
    pages = {}
    for path in ("/api/workers?refresh=1", "/api/tasks", "/api/queues/length", "/broker", "/metrics"):
        answer = requests.get(f"{flower.url()}{path}", auth=AUTH, timeout=20)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        pages[path] = answer.text
    return pages


def test_jobs_flower_and_config_check_work_and_never_show_the_password(
        secured, simulator, start_worker, start_flower, tmp_path, tag):
    metrics_port = free_port()
    env = config_env(tmp_path, secured.url, simulator.url)
    worker = start_worker(env={**env, "FLOWCLOUD_METRICS_PORT": str(metrics_port)})
    flower = start_flower({**env, "FLOWER_BASIC_AUTH": ":".join(AUTH)})

    records = run_client(env, tag)
    assert [record["status"] for record in records] == ["succeeded"] * 7, records
    assert all(tag in json.dumps(record) for record in records[:6])

    time.sleep(1.0)  # the last task events reach Flower
    pages = flower_pages(flower)
    queues = json.loads(pages["/api/queues/length"])["active_queues"]
    assert "flowcloud" in {queue["name"] for queue in queues}  # over TLS by Flower's own client too
    assert worker.hostname in pages["/api/workers?refresh=1"]
    # Single jobs are tasks under their own ids (the bundled three share one task).
    assert set(json.loads(pages["/api/tasks"])) >= {record["job_id"] for record in records[3:]}
    flower_argv = Path(f"/proc/{flower.process.pid}/cmdline").read_bytes()

    check = run_cli("config", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert display_url(secured.url) in check.stdout and ":***@127.0.0.1" in check.stdout

    metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "flowcloud_" in metrics.text

    shown = {"worker log": worker.log(), **pages, "Flower log": flower.log(),
             "Flower's command line": flower_argv.decode(errors="replace"),
             "config check": check.stdout + check.stderr, "records and results in Redis": everything_stored(secured),
             "metrics": metrics.text}
    assert [where for where, text in shown.items() if PASSWORD in text] == []
    scheme = "rediss" if secured.tls else "redis"
    assert f"{scheme}://:**@127.0.0.1" in worker.log()  # Celery's banner: the broker, masked


def test_a_wrong_password_is_a_clear_error_at_once_naming_the_url_masked(secured, simulator, tmp_path):
    wrong = "wrong-" + uuid.uuid4().hex
    env = config_env(tmp_path, secured.with_password(wrong), simulator.url, "wrong.yaml")
    shown = display_url(secured.with_password(wrong))
    assert wrong not in shown and ":***@127.0.0.1" in shown
    for command in (["worker"], ["flower"], ["submit", "hello", "--wait", "--timeout", "5"]):
        started = time.monotonic()
        done = run_cli(*command, env=env, timeout=30)
        took = time.monotonic() - started
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert f"Redis at {shown} refused the login" in done.stderr, (command, done.stderr)
        assert "check the user and password in redis_url" in done.stderr
        assert wrong not in done.stdout + done.stderr and PASSWORD not in done.stdout + done.stderr
        assert took < 20, (command, took)

    with pytest.raises(BrokerUnavailable, match="refused the login") as raised:
        connect(secured.url.replace(f":{PASSWORD}@", "@"))  # no password at all
    assert PASSWORD not in str(raised.value)


def test_tls_goes_through_flowclouds_transport_and_verifies_the_certificate_by_default(tls_only, tmp_path):
    from flowcloud.workers.core.celery_app import create_app  # not at collection: see tests/conftest.py

    app = create_app(load_config(config_env(tmp_path, tls_only.url, "http://127.0.0.1:9/v1")))
    assert app.conf.broker_use_ssl == app.conf.redis_backend_use_ssl == tls_options(tls_only.url)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        assert type(connection.transport) is redis_transport.Transport
        client = connection.default_channel.client
        assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
        assert client.ping()
    assert app.backend.client.ping()

    # The same URL without the CA: the system's CAs do not know the self-signed certificate, and
    # kombu, which would not check it at all for a bare rediss:// URL, is told to require it.
    unverified = tls_only.url.split("?")[0]
    with pytest.raises(BrokerUnavailable, match=r"TLS to Redis at rediss://:\*\*\*@127\.0\.0\.1.*CERTIFICATE_VERIFY"):
        connect(unverified)
    bare = create_app(load_config(config_env(tmp_path, unverified, "http://127.0.0.1:9/v1", "bare.yaml")))
    assert bare.conf.broker_use_ssl["ssl_cert_reqs"].name == "CERT_REQUIRED"
    with bare.connection_for_write() as connection, pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        connection.ensure_connection(max_retries=0)

    # Plain Redis spoken to its TLS port: no hang past the connect timeout.
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
        connect(unverified.replace("rediss://", "redis://"))
    assert time.monotonic() - started < 10


def test_a_worker_on_tls_lives_through_a_redis_restart(tls_only, simulator, start_worker, tmp_path, tag):
    """What flowcloud's transport is for (kombu's own stops the worker), over TLS: the channels it
    opens again after the restart are TLS channels."""
    env = config_env(tmp_path, tls_only.url, simulator.url)
    worker = start_worker(env=env)
    assert [record["status"] for record in run_client(env, f"{tag} before")] == ["succeeded"] * 7
    tls_only.stop()
    time.sleep(1.0)
    tls_only.start()
    assert [record["status"] for record in run_client(env, f"{tag} after")] == ["succeeded"] * 7
    assert worker.process.poll() is None and "Unrecoverable error" not in worker.log()
    assert "Connection to broker lost" in worker.log()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://hunter2@host/0", "redis://***@host/0"),  # one field: it may be a password
    ("redis://:hun@ter/2@host/0", "redis://:***@host/0"),
    ("rediss://:hunter2@host:1/0?ssl_ca_certs=/certs/a@b.pem", "rediss://:***@host:1/0?ssl_ca_certs=/certs/a@b.pem"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("redis+socket:///var/redis.sock", "redis+socket:///var/redis.sock"),
])
def test_display_url_hides_the_password_only(url, shown):
    assert display_url(url) == shown


@pytest.mark.parametrize(("url", "problem"), [
    ("http://:hunter2@host/0", r"http://:\*\*\*@host/0 is not a Redis URL"),
    ("redis://:hunter2@host/0?ssl_cert_reqs=required", "apply to TLS only: write the URL as rediss://"),
    ("rediss://:hunter2@host/0?ssl_cert_reqs=CERT_REQUIRED", "must be one of required, optional, none"),
    ("rediss://:hunter2@host/0?ssl_check_hostname=false", "ssl_check_hostname is not supported"),
    ("rediss://:hunter2@host/0?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs=/nonexistent/ca.pem: no such file"),
])
def test_an_unusable_redis_url_is_refused_naming_the_field_never_the_password(tmp_path, url, problem):
    with pytest.raises(ValueError, match=problem) as raised:
        check_url(url)
    assert "hunter2" not in str(raised.value)
    done = run_cli("config", "check", env={**config_env(tmp_path, url, "http://127.0.0.1:9/v1")})
    assert done.returncode == 2 and "redis_url:" in done.stderr, done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_tls_options_default_to_verified_certificates():
    import ssl

    assert tls_options("redis://host/0") is None and tls_options("redis+socket:///s") is None
    assert tls_options("rediss://host/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert tls_options("rediss://host/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem") == {
        "ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/ca.pem"}
    check_url("rediss://:pw@host:6380/0?ssl_cert_reqs=optional")


def test_the_password_is_blanked_from_what_the_process_writes():
    from flowcloud.workers.core import guard
    from flowcloud.workers.core.redis_conn import protect_password

    secret = "pw-" + uuid.uuid4().hex
    protect_password(f"rediss://user:{secret}@host:6380/0?ssl_cert_reqs=required")
    assert guard.redact(f"lost {secret} midway") == f"lost {guard.MASK} midway"


def test_a_configuration_error_traceback_quotes_no_password():
    """A worker started by `celery worker` itself prints the whole chain, pydantic's error included."""
    import traceback

    from flowcloud.workers.core.config import DEFAULTS, validate
    from flowcloud.workers.core.errors import ConfigError

    with pytest.raises(ConfigError, match="default_model") as raised:
        validate({**DEFAULTS, "redis_url": f"redis://:{PASSWORD}@host:6379/0", "default_model": "unknown"})
    assert PASSWORD not in "".join(traceback.format_exception(raised.value))
