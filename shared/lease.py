"""The single-active service lease: one copy of a service acts, its standbys wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys
from shared.log import error_text
from shared.metrics import LEASE_HELD, LEASE_TAKEOVERS, REPLICA_UNCONFIRMED
from shared.redisconn import ReplicaAck, ReplicaNotConfirmed, replica_ack_of, write_confirmed

log = logging.getLogger(__name__)

# A lease renewal that fails is tried again after RENEW_RETRY_S, each try cut at RENEW_ATTEMPT_S.
RENEW_ATTEMPT_S = 1.0
RENEW_RETRY_S = 0.1

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

    When the client carries a replica confirmation (``replica_ack_of``), an acquisition or
    renewal counts only once enough replicas confirmed it (WAIT): a failover to such a
    replica keeps the key, so no standby can take the lease while this copy still holds it.
    An unconfirmed acquisition is not a win (polled again); an unconfirmed renewal is a
    failed one (the lease is given up two thirds of a TTL after the last confirmed one).
    """

    def __init__(self, client: aioredis.Redis, service: str, ttl_ms: int) -> None:
        self.client = client
        self.service = service
        self.key = keys.lease_key(service)
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self.ack = replica_ack_of(client)
        # Monotonic time a command that confirmed the lease was sent; -inf when not held.
        self._confirmed = -math.inf
        self._give_up_s = ttl_ms * 2 / 3000
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._renew: Any = client.register_script(_RENEW)
        self._release: Any = client.register_script(_RELEASE)
        self._unconfirmed = False  # the last acquisition(s) the replicas did not confirm
        LEASE_HELD.labels(service).set(0)  # a standby reports 0 until it wins the lease

    async def _call(self, source: str, script: Any, args: list[Any]) -> tuple[int, int | None]:
        """Run a lease script; return its result and, with a replica confirmation, the acks."""
        if self.ack is None:
            return int(await script(keys=[self.key], args=args)), None
        # EVAL, not EVALSHA: a promoted replica has no script cache, and the WAIT must follow
        # the write on its connection in the same send.
        results, acked = await write_confirmed(
            self.client,
            lambda pipe: pipe.execute_command("EVAL", source, 1, self.key, *args),
            self.ack,
            transaction=False,
        )
        return int(results[0]), acked

    def _shortfall(self, result: int, acked: int | None) -> tuple[int, ReplicaAck] | None:
        """Return (acks, required) when a lease write succeeded on the primary but too few
        replicas confirmed it (counted in the metric); None when it needs no more."""
        if not result or acked is None or self.ack is None or acked >= self.ack.replicas:
            return None
        REPLICA_UNCONFIRMED.labels("lease").inc()
        return acked, self.ack

    async def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); return whether we hold it now."""
        sent = time.monotonic()
        result, acked = await self._call(_ACQUIRE, self._acquire, [self.token, self.ttl_ms])
        short = self._shortfall(result, acked)
        if short is not None:
            if not self._unconfirmed:  # the first of a streak
                log.warning(
                    "Lease: %s taken on the primary but confirmed by %d of %d replica(s) within "
                    "%d ms: not active until a replica confirms it (a failover could lose it)",
                    self.key, short[0], short[1].replicas, short[1].timeout_ms,
                )  # fmt: skip
            self._unconfirmed = True
            return False
        if result:
            if self._unconfirmed:
                log.info("Lease: %s confirmed by the replicas again", self.key)
            self._unconfirmed = False
            self._confirmed = sent
            LEASE_HELD.labels(self.service).set(1)
        return bool(result)

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; return False when it is not.

        Raise ``ReplicaNotConfirmed`` when it is ours but too few replicas confirmed the
        renewal: it does not count (``keep`` retries until the lease must be given up).
        """
        sent = time.monotonic()
        result, acked = await self._call(_RENEW, self._renew, [self.token, self.ttl_ms])
        short = self._shortfall(result, acked)
        if short is not None:
            raise ReplicaNotConfirmed(f"renewal of {self.key}", *short)
        if result:
            self._confirmed = sent
        else:
            self._confirmed = -math.inf
            LEASE_HELD.labels(self.service).set(0)
        return bool(result)

    def held(self) -> bool:
        """Return whether the lease is surely still ours (no I/O): check it before acting.

        Unlike the ``lost`` event of ``hold``, this is right even when the event loop was
        stalled and the renew task could not run.
        """
        return time.monotonic() < self._confirmed + self._give_up_s

    async def release(self) -> bool:
        """Free the lease if it is still ours; return whether we freed it."""
        self._confirmed = -math.inf
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
                # Another copy holds it (winning it later is a takeover), unless the key is
                # ours already and only the replicas' confirmation is missing.
                waited = waited or not self._unconfirmed
            await asyncio.sleep(interval)
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew every third of the TTL; set ``lost`` once the lease is gone or may be.

        Times count from when a successful command was sent, so they err early; the lease
        is given up two thirds of a TTL after the last confirmed renewal, leaving a third
        for the caller to stop before another copy can take over. A failed renewal is tried
        again at once, each attempt cut short after ``RENEW_ATTEMPT_S`` (the client's own
        reconnect backoff would otherwise wait seconds), so a Redis failover that completes
        within the two thirds keeps the lease. Any way out of this loop (even an
        unexpected error) sets ``lost``.
        """
        interval = self.ttl_ms / 3000
        wait = interval
        try:
            while True:
                await asyncio.sleep(wait)
                left = self._confirmed + self._give_up_s - time.monotonic()
                try:
                    async with asyncio.timeout(max(min(left, RENEW_ATTEMPT_S), 0.001)):
                        ok = await self.renew()
                except (RedisError, TimeoutError) as e:  # READONLY, OOM, MISCONF... too
                    if not self.held():
                        log.error("Lease: %s given up, renew failing: %s", self.key, error_text(e))
                        break
                    log.warning("Lease: renew of %s failed, retrying: %s", self.key, error_text(e))
                    wait = RENEW_RETRY_S
                    continue
                if not ok:
                    log.error("Lease: %s taken by another holder", self.key)
                    break
                wait = interval
        finally:
            self._confirmed = -math.inf
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
            await _cancel(task)
            with contextlib.suppress(RedisError):  # best effort: it expires anyway
                await self.release()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for its end, cancelling again if the cancellation was lost.

    redis-py 8.1 sometimes swallows the CancelledError of a command cancelled in flight
    (the command then completes): one ``cancel()`` does not always end the task.
    """
    try:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
    except asyncio.CancelledError:  # we are cancelled ourselves: leave it cancelled too
        task.cancel()
        raise
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
