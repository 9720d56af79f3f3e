"""``flowcloud up``: bring the local stack up in order, show where everything is, stop it all on Ctrl-C."""

from __future__ import annotations

import importlib.util
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import click

from flowcloud.cli.processes import beat_argv, flower_argv, flower_credentials, flower_env, simulator_port, worker_argv
from flowcloud.cli.supervisor import Supervisor
from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import Config, get_config
from flowcloud.workers.core.errors import FlowcloudError
from flowcloud.workers.core.redis_conn import display_url


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def worker_answers(name: str) -> bool:
    from flowcloud.workers.core.celery_app import app

    return bool(app.control.ping(destination=[f"{name}@{socket.gethostname()}"], timeout=0.5))


def log_grows_with(path: Path, text: str) -> Callable[[], bool]:
    """A readiness check: ``text`` appears in the part of the log written from now on."""
    start = path.stat().st_size if path.exists() else 0

    def ready() -> bool:
        with open(path, "rb") as log:
            log.seek(start)
            return text.encode() in log.read()

    return ready


def lfx_installed() -> bool:
    return importlib.util.find_spec("lfx") is not None


def start_redis(config: Config):
    from flowcloud.workers.core.embedded_redis import RedisServer

    sock = config.embedded_redis_socket()
    server = RedisServer(config.var_dir, socket=sock, persist=True)
    if server.answers():  # a stale socket of a killed stack does not answer: start() replaces it
        raise FlowcloudError(f"a flowcloud stack is already running here ({sock} answers); stop it first")
    return server.start()


def answers_ok(url: str) -> bool:
    """True once ``url`` answers 200 (llama-server's /health says 503 while it loads the model)."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_local_model(config: Config, supervisor: Supervisor) -> str:
    """Serve the local model when it is installed; returns what the banner says about it.

    It is optional: when missing, or when its port is taken (another llama-server,
    say), the stack starts without it.
    """
    local = local_model.find()
    if local is None:
        return local_model.missing()
    port = local_model.port(config.providers)
    if port_open(port):
        return f"not started: port {port} is taken"
    health = f"http://127.0.0.1:{port}/health"
    supervisor.start("llama-server", local.server_argv(port), ready=lambda: answers_ok(health))
    return f"{local_model.MODEL_NAME} http://127.0.0.1:{port}/v1 (llama-server, preset llamacpp)"


def start_children(config: Config, supervisor: Supervisor, latency: float) -> tuple[str, str]:
    """Start simulator, workers, Beat and Flower; returns Flower's user and password."""
    if config.uses_simulator():
        port = simulator_port(config)
        if port_open(port):
            raise FlowcloudError(f"port {port} is taken: the simulator cannot start there")
        supervisor.start("simulator", [sys.executable, "-m", "flowcloud.simulator", "--port", str(port),
                                       "--latency", str(latency), "--jitter", str(latency / 2)],
                         ready=lambda: port_open(port))
    supervisor.start("worker", worker_argv(config), ready=lambda: worker_answers("flowcloud"), timeout=90)
    if lfx_installed():
        # Both workers serve metrics on this host: the flow worker takes the next port.
        metrics_port = {"FLOWCLOUD_METRICS_PORT": str(config.metrics_port + 1)} if config.metrics_port else {}
        supervisor.start("flow-worker", worker_argv(config, flows=True), ready=lambda: worker_answers("flows"),
                         timeout=120, env=metrics_port)
    # Beat has no port to probe; it logs this line once its schedule is loaded.
    supervisor.start("beat", beat_argv(config),
                     ready=log_grows_with(supervisor.log_dir / "beat.log", "beat: Starting"))
    user, password, _ = flower_credentials(config)
    supervisor.env = {**supervisor.env, **flower_env(user, password)}
    supervisor.start("flower", flower_argv(config), ready=lambda: port_open(config.flower.port), timeout=60)
    return user, password


def describe(config: Config, credentials: tuple[str, str], supervisor: Supervisor, local: str) -> None:
    click.secho("flowcloud is up", fg="green", bold=True)
    click.echo(f"  Redis      {display_url(config.redis_url_or_embedded())}")
    for provider in config.providers:
        click.echo(f"  provider   {provider.name} ({provider.kind}) {provider.base_url}")
    click.echo(f"  local      {local}")
    schedules = ", ".join(f"{s.name} ({s.cron})" for s in config.schedules) or "no schedules configured"
    click.echo(f"  Beat       {schedules}")
    click.echo(f"  Flower     http://{config.flower.address}:{config.flower.port}  "
               f"user {credentials[0]!r} password {credentials[1]}")
    click.echo(f"  logs       {supervisor.log_dir}/")


def run_stack(demo: bool, exit_after_demo: bool, latency: float) -> None:
    config = get_config()
    redis_server = None
    if not config.redis_url:
        redis_server = start_redis(config)
    supervisor = Supervisor(config.var_dir / "logs")
    supervisor.env["FLOWCLOUD_REDIS_URL"] = config.redis_url_or_embedded()
    # `docker stop`, systemd and `timeout` send SIGTERM: stop the children as for Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        local = start_local_model(config, supervisor)
        credentials = start_children(config, supervisor, latency)
        describe(config, credentials, supervisor, local)
        if demo:
            from flowcloud.cli.demo import run_demo

            run_demo()
        if exit_after_demo:
            return
        click.echo("Ctrl-C stops everything.")
        watch(supervisor)
    except KeyboardInterrupt:
        click.echo("\nstopping...")
    finally:
        supervisor.stop_all()
        if redis_server:
            redis_server.stop()
        click.echo("stopped")


def watch(supervisor: Supervisor) -> None:
    while True:
        dead = supervisor.first_exited()
        if dead:
            raise FlowcloudError(f"{dead.name} exited with status {dead.process.returncode}; see {dead.log_path}")
        time.sleep(0.5)
