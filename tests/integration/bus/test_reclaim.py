"""Reclaim: entries left pending by a consumer process killed mid-batch are handled by another."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared.bus import Consumer, publish_many
from shared.redisconn import EmbeddedRedis
from shared.schemas import PriceTick
from tests.integration.bus.helpers import GROUP, STREAM, eventually, running, tick
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here runs on Valkey and on Redis

ROOT = Path(__file__).resolve().parents[3]


async def test_entries_of_killed_consumer_are_reclaimed(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    await publish_many(redis_client, STREAM, [tick(i) for i in range(30)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "tests.integration.bus.consumer_proc",
        redis_server.url,
        "dead",
        "10",
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env)
    try:
        await eventually(lambda: _exists(redis_client, "test:hanging"), within=60)
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await redis_client.scard("test:handled:dead") == 11
    left = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 100, consumername="dead")
    assert len(left) == 30

    seen: list[PriceTick] = []

    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg)

    survivor = Consumer(
        redis_client,
        STREAM,
        GROUP,
        "survivor",
        handle,
        PriceTick,
        block_ms=100,
        reclaim_idle_ms=200,
    )
    async with running(survivor):
        await eventually(lambda: len(seen) >= 30)
        await eventually(lambda: _pending_zero(redis_client))
    assert sorted(m.ts for m in seen) == list(range(30))


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _pending_zero(client: aioredis.Redis) -> bool:
    info = await client.xpending(STREAM, GROUP)
    return int(info["pending"]) == 0


async def test_pending_entries_trimmed_away_are_reported_lost(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await publish_many(redis_client, STREAM, [tick(i) for i in range(5)])
    await redis_client.xgroup_create(STREAM, GROUP, id="0")
    await redis_client.xreadgroup(GROUP, "crashed", {STREAM: ">"})
    await redis_client.xtrim(STREAM, maxlen=2, approximate=False)
    labels = {"stream": STREAM, "group": GROUP}
    before = REGISTRY.get_sample_value("tradebot_bus_trimmed_pending_total", labels) or 0
    seen: list[PriceTick] = []

    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg)

    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=100, reclaim_idle_ms=1
    )
    with caplog.at_level(logging.ERROR, logger="shared.bus"):
        async with running(consumer):
            await eventually(lambda: len(seen) == 2)
            await eventually(lambda: _pending_zero(redis_client))
    assert [m.ts for m in seen] == [3, 4]
    after = REGISTRY.get_sample_value("tradebot_bus_trimmed_pending_total", labels)
    assert after == before + 3
    assert any(
        "3 pending entries" in r.getMessage() and ids[0] in r.getMessage() for r in caplog.records
    )
