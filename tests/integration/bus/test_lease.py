"""The single-active lease: exclusive, renewed and released only by its token, taken over."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.lease import Lease
from shared.redisconn import EmbeddedRedis, redis_from_url
from tests.integration.bus.helpers import Link, eventually
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here runs on Valkey and on Redis

SERVICE = "executor"


async def _holder(client: aioredis.Redis) -> Any:
    return await client.get(keys.lease_key(SERVICE))


async def test_second_holder_waits_until_release(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=60_000)
    b = Lease(redis_client, SERVICE, ttl_ms=60_000)
    assert await a.acquire()
    assert not await b.acquire()
    waiter = asyncio.create_task(b.wait_acquire())
    assert not await b.renew()
    assert not await b.release()
    assert await _holder(redis_client) == a.token.encode()
    assert not waiter.done()
    takeovers = REGISTRY.get_sample_value("tradebot_lease_takeovers_total", {"service": SERVICE})
    assert await a.release()
    assert await asyncio.wait_for(waiter, 30)
    assert await _holder(redis_client) == b.token.encode()
    after = REGISTRY.get_sample_value("tradebot_lease_takeovers_total", {"service": SERVICE})
    assert (after or 0) == (takeovers or 0) + 1  # b waited behind a: a takeover


async def test_renew_extends_only_our_lease(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=5_000)
    assert await a.acquire()
    await redis_client.pexpire(keys.lease_key(SERVICE), 1_000)
    assert await a.renew()
    assert await redis_client.pttl(keys.lease_key(SERVICE)) > 1_000


async def test_takeover_after_expiry_fences_the_old_holder(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=200)
    b = Lease(redis_client, SERVICE, ttl_ms=60_000)
    assert await a.acquire()
    await eventually(b.acquire)
    assert not await a.renew()
    assert not await a.release()
    assert await _holder(redis_client) == b.token.encode()


async def test_hold_renews_and_signals_loss(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=600)
    key = keys.lease_key(SERVICE)
    async with a.hold() as lost:
        assert await _holder(redis_client) == a.token.encode()
        await redis_client.pexpire(key, 300)
        await eventually(lambda: _pttl_above(redis_client, 350))
        assert not lost.is_set()
        await redis_client.set(key, "someone-else", px=60_000)
        await eventually(lost.is_set)
    assert await _holder(redis_client) == b"someone-else"


async def _pttl_above(client: aioredis.Redis, ms: int) -> bool:
    return int(await client.pttl(keys.lease_key(SERVICE))) > ms


async def test_hold_gives_up_when_redis_is_unreachable(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=600)
    async with a.hold() as lost:
        redis_server.kill()
        await eventually(lost.is_set)
        redis_server.start()


async def test_hold_signals_loss_when_renew_fails_with_a_redis_error(
    redis_client: aioredis.Redis,
) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=600)
    key = keys.lease_key(SERVICE)
    async with a.hold() as lost:
        await redis_client.delete(key)
        await redis_client.hset(key, "x", "y")  # renew now fails with WRONGTYPE
        await eventually(lost.is_set)
        assert not a.held()


async def test_acquire_again_with_our_own_token_succeeds(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=60_000)
    # As if our SET NX was applied but its reply was lost (redis-py then retries it).
    await redis_client.set(keys.lease_key(SERVICE), a.token, px=1_000)
    assert await a.acquire()
    assert await redis_client.pttl(keys.lease_key(SERVICE)) > 1_000


async def test_held_turns_false_without_the_renew_task(redis_client: aioredis.Redis) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=300)
    assert not a.held()
    assert await a.acquire()
    assert a.held()
    await eventually(lambda: not a.held())  # nothing renews: gone 2/3 of a TTL later
    assert await a.renew()
    assert a.held()
    await redis_client.set(keys.lease_key(SERVICE), "someone-else")
    assert not await a.renew()
    assert not a.held()


async def test_a_renewal_that_fails_for_a_moment_keeps_the_lease(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = Lease(redis_client, SERVICE, ttl_ms=6_000)  # renewed every 2 s, given up after 4 s
    key = keys.lease_key(SERVICE)
    with caplog.at_level(logging.WARNING, logger="shared.lease"):
        async with a.hold() as lost:
            await redis_client.delete(key)
            await redis_client.hset(key, "x", "y")  # the next renewals fail with WRONGTYPE
            await eventually(lambda: "failed, retrying" in caplog.text)
            await redis_client.delete(key)
            await redis_client.set(key, a.token, px=500)  # as it was: ours, near expiry
            await eventually(lambda: _pttl_above(redis_client, 1_000))  # renewed again
            assert not lost.is_set()
            assert a.held()


async def test_a_slow_renewal_is_waited_for(
    redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Every reply 20 ms late (a slow network): each renewal is waited for, none fails."""
    async with Link(redis_server.port, reply_delay_s=0.02).running() as port:
        client = redis_from_url(f"redis://127.0.0.1:{port}/0")
        try:
            a = Lease(client, SERVICE, ttl_ms=3_000)  # renewed every second, given up at 2 s
            with caplog.at_level(logging.WARNING, logger="shared.lease"):
                async with a.hold() as lost:
                    for _ in range(3):  # three renewals, each seen as the TTL going up
                        before = await client.pttl(keys.lease_key(SERVICE))
                        await eventually(lambda b=before: _pttl_above(client, b))
                    assert not lost.is_set()
                    assert a.held()
            assert "failed" not in caplog.text
        finally:
            await client.aclose()
