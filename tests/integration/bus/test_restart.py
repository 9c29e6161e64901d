"""No loss across a server crash: AOF keeps entries, acks and pending; consumers reconnect."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError

from shared.bus import Consumer, publish, publish_many
from shared.redisconn import EmbeddedRedis
from shared.schemas import PriceTick
from tests.integration.bus.helpers import GROUP, STREAM, eventually, pending_count, running, tick
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here runs on Valkey and on Redis


async def _snapshot(client: aioredis.Redis) -> tuple[Any, ...]:
    entries = await client.xrange(STREAM)
    pending = await client.xpending_range(STREAM, GROUP, "-", "+", 100)
    groups = await client.xinfo_groups(STREAM)
    return (
        entries,
        sorted((p["message_id"], p["consumer"]) for p in pending),
        [(g["name"], g["last-delivered-id"]) for g in groups],
    )


async def test_acked_and_pending_survive_server_kill(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    handled: list[int] = []
    tries: Counter[int] = Counter()

    async def handle(msg: PriceTick, entry_id: str) -> None:
        tries[msg.ts] += 1
        if msg.ts >= 10:
            raise RuntimeError("not now")
        handled.append(msg.ts)

    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, count=5, block_ms=100,
        reclaim_idle_ms=3_600_000, max_deliveries=100,
    )  # fmt: skip
    await publish_many(redis_client, STREAM, [tick(i) for i in range(20)])
    async with running(consumer):
        await eventually(lambda: len(tries) == 20)
    assert await pending_count(redis_client) == 10
    before = await _snapshot(redis_client)

    redis_server.kill()
    redis_server.start()

    assert await _snapshot(redis_client) == before
    assert await pending_count(redis_client) == 10


async def test_consumer_survives_server_restart(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    seen: list[int] = []

    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg.ts)

    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=100, reclaim_idle_ms=500
    )
    async with running(consumer) as task:
        await publish_many(redis_client, STREAM, [tick(i) for i in range(5)])
        await eventually(lambda: len(seen) == 5)
        redis_server.kill()
        redis_server.start()
        for i in range(5, 10):
            await publish(redis_client, STREAM, tick(i))
        await eventually(lambda: set(seen) == set(range(10)))
        await eventually(lambda: _no_pending(redis_client))
        assert not task.done()


async def _no_pending(client: aioredis.Redis) -> bool:
    return await pending_count(client) == 0


async def test_consumer_gives_up_after_reconnect_window(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    async def handle(msg: PriceTick, entry_id: str) -> None:
        return None

    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=100, reconnect_for_s=0.5
    )
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: _stream_exists(redis_client))
    redis_server.kill()
    await eventually(task.done)
    assert isinstance(task.exception(), ConnectionError)


async def _stream_exists(client: aioredis.Redis) -> bool:
    return bool(await client.exists(STREAM))
