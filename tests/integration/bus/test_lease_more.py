"""The lease as an operator and a standby see it: the held gauge, the takeover counter, the
token, a standby polling through an outage, a stop while waiting, and ``_cancel``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared import keys
from shared.lease import Lease, _cancel
from shared.redisconn import EmbeddedRedis
from tests.integration.bus.helpers import Link, eventually
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here using a server runs on Valkey and on Redis


def fresh_service() -> str:
    """Return a service name no other test used: its metrics start unset."""
    return f"svc-{uuid.uuid4().hex[:12]}"


def held_gauge(service: str) -> float | None:
    """Return tradebot_lease_held{service=...}, None if never set."""
    return REGISTRY.get_sample_value("tradebot_lease_held", {"service": service})


def takeovers(service: str) -> float | None:
    """Return tradebot_lease_takeovers_total{service=...}, None if never counted."""
    return REGISTRY.get_sample_value("tradebot_lease_takeovers_total", {"service": service})


async def test_token_is_32_hex_chars_and_differs_per_copy(redis_client: aioredis.Redis) -> None:
    service = fresh_service()
    a = Lease(redis_client, service, ttl_ms=60_000)
    b = Lease(redis_client, service, ttl_ms=60_000)
    assert len(a.token) == 32
    assert int(a.token, 16) >= 0  # hex only
    assert a.token != b.token
    assert await a.acquire()
    assert await redis_client.get(keys.lease_key(service)) == a.token.encode()


async def test_held_gauge_is_0_for_a_standby_1_once_acquired_0_after_release(
    redis_client: aioredis.Redis,
) -> None:
    service = fresh_service()
    a = Lease(redis_client, service, ttl_ms=60_000)
    assert held_gauge(service) == 0  # a standby reports 0 before it ever tries
    assert await a.acquire()
    assert held_gauge(service) == 1
    assert a.held()
    assert await a.release()
    assert held_gauge(service) == 0
    assert not a.held()
    assert await redis_client.get(keys.lease_key(service)) is None


async def test_a_renewal_finding_the_lease_taken_clears_the_gauge(
    redis_client: aioredis.Redis,
) -> None:
    service = fresh_service()
    a = Lease(redis_client, service, ttl_ms=60_000)
    assert await a.acquire()
    assert held_gauge(service) == 1
    await redis_client.set(keys.lease_key(service), "someone-else")
    assert not await a.renew()
    assert held_gauge(service) == 0
    assert not a.held()


async def test_keep_giving_up_on_a_failing_renewal_clears_the_gauge(
    redis_client: aioredis.Redis,
) -> None:
    service = fresh_service()
    key = keys.lease_key(service)
    a = Lease(redis_client, service, ttl_ms=600)
    async with a.hold() as lost:
        assert held_gauge(service) == 1
        await redis_client.delete(key)
        await redis_client.hset(key, "x", "y")  # renew raises WRONGTYPE until given up
        await eventually(lost.is_set)
        assert held_gauge(service) == 0  # before hold's release, set by keep itself


async def test_acquiring_again_without_replicas_logs_nothing(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = Lease(redis_client, fresh_service(), ttl_ms=60_000)
    with caplog.at_level(logging.DEBUG, logger="shared.lease"):
        assert await a.acquire()
        assert await a.acquire()  # ours already: extended
        assert await a.acquire()
    assert "replica" not in caplog.text


async def test_winning_a_free_lease_is_not_a_takeover(redis_client: aioredis.Redis) -> None:
    service = fresh_service()
    a = Lease(redis_client, service, ttl_ms=60_000)
    assert await a.wait_acquire()
    assert held_gauge(service) == 1
    assert (takeovers(service) or 0) == 0  # won at the first poll, behind nobody


async def test_a_stopped_standby_does_not_win(redis_client: aioredis.Redis) -> None:
    service = fresh_service()
    a = Lease(redis_client, service, ttl_ms=60_000)
    b = Lease(redis_client, service, ttl_ms=60_000)
    assert await a.acquire()
    stop = asyncio.Event()
    waiter = asyncio.create_task(b.wait_acquire(stop))
    stop.set()
    assert await asyncio.wait_for(waiter, 30) is False
    async with b.hold(stop) as lost:  # stopped before it started: lost at once
        assert lost.is_set()
    assert not b.held()
    assert await redis_client.get(keys.lease_key(service)) == a.token.encode()


@pytest.mark.parametrize("mode", ["drop", "hang"])
async def test_a_standby_polls_through_an_outage_and_wins_after(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, mode: Literal["drop", "hang"]
) -> None:
    """Each poll failing with a connection error ("drop") or a timeout ("hang") is retried."""
    link = Link(redis_server.port)
    async with link.running() as port:
        # No retries inside the client: every acquisition attempt is one connection.
        client = aioredis.Redis(
            host="127.0.0.1", port=port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        try:
            service = fresh_service()
            lease = Lease(client, service, ttl_ms=250)  # polled every 50 ms
            link.mode = mode
            waiter = asyncio.create_task(lease.wait_acquire())
            # A third connection means two attempts failed and the standby went on polling.
            await eventually(lambda: link.accepted >= 3 or waiter.done())
            assert not waiter.done(), waiter.exception()
            link.mode = "pass"
            assert await asyncio.wait_for(waiter, 30)
            assert await redis_client.get(keys.lease_key(service)) == lease.token.encode()
            assert held_gauge(service) == 1
            assert await lease.release()
        finally:
            await client.aclose()


async def test_cancel_cancels_again_a_task_that_swallowed_the_cancellation() -> None:
    started, swallowed = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # as redis-py may do with a command cancelled in flight
        await asyncio.Event().wait()  # ends only on a second cancel

    task = asyncio.create_task(stubborn())
    await started.wait()
    await asyncio.wait_for(_cancel(task), 10)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_cancel_swallows_what_the_task_raises() -> None:
    started = asyncio.Event()

    async def failing_on_cancel() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def failed() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(failing_on_cancel())
    await started.wait()
    await asyncio.wait_for(_cancel(task), 10)  # no raise
    assert isinstance(task.exception(), RuntimeError)

    done = asyncio.create_task(failed())
    await asyncio.wait({done})
    await _cancel(done)  # already finished with an error: no raise either
    assert isinstance(done.exception(), ValueError)
