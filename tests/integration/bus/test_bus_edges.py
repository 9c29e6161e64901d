"""The bus at its edges: where a group starts, batch sizes, what poll counts, publish's id.

Each test runs on Valkey and on Redis (``servers.redis_server``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.bus import Consumer, ensure_group, publish, publish_many
from shared.redisconn import EmbeddedRedis
from shared.schemas import PriceTick
from tests.integration.bus.helpers import GROUP, STREAM, eventually, running, tick
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here runs on Valkey and on Redis

RECREATED = f"Bus: group {GROUP} on {STREAM} was gone; recreated"


def recorder(seen: list[PriceTick]) -> Any:
    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg)

    return handle


async def group_exists(client: aioredis.Redis) -> bool:
    groups: Any = await client.xinfo_groups(STREAM)
    return any(g["name"] == GROUP.encode() for g in groups)


async def test_ensure_group_tells_whether_it_made_the_group(
    redis_client: aioredis.Redis,
) -> None:
    assert await ensure_group(redis_client, STREAM, GROUP) is True
    assert await ensure_group(redis_client, STREAM, GROUP) is False  # BUSYGROUP: there


async def test_a_group_started_at_dollar_skips_history_and_is_recreated_from_0(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """``start_id="$"``: a new group never sees what the stream held before. Once the group
    is gone (here XGROUP DESTROY), it is recreated from 0, so nothing published meanwhile is
    lost (the history is replayed: handlers are idempotent), and that is logged once."""
    caplog.set_level(logging.WARNING, logger="shared.bus")
    await publish(redis_client, STREAM, tick(1))  # history
    seen: list[PriceTick] = []
    consumer = Consumer(redis_client, STREAM, GROUP, "c1", recorder(seen), PriceTick,
                        block_ms=100, start_id="$")  # fmt: skip
    async with running(consumer):
        await eventually(lambda: group_exists(redis_client))
        await publish(redis_client, STREAM, tick(2))
        await eventually(lambda: len(seen) == 1)
        assert RECREATED not in caplog.text  # created at start: not "recreated"
        await redis_client.xgroup_destroy(STREAM, GROUP)
        await publish(redis_client, STREAM, tick(3))  # while the group is gone
        await eventually(lambda: len(seen) == 4)
    assert [m.ts for m in seen] == [2, 1, 2, 3]
    assert caplog.text.count(RECREATED) == 1


async def test_poll_reads_one_batch_and_counts_what_it_reclaimed(
    redis_client: aioredis.Redis,
) -> None:
    """A poll first takes back entries another consumer left pending (in rounds of
    ``count``), then reads at most ``count`` new ones; it returns how many it handled."""
    await ensure_group(redis_client, STREAM, GROUP)
    await publish_many(redis_client, STREAM, [tick(i) for i in range(3)])
    taken: Any = await redis_client.xreadgroup(GROUP, "gone", {STREAM: ">"}, count=3)
    assert len(taken[0][1]) == 3  # pending on a consumer that will never ack them
    await publish_many(redis_client, STREAM, [tick(i) for i in range(3, 6)])

    async def idle() -> bool:
        rows: Any = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
        return all(r["time_since_delivered"] >= 2 for r in rows)

    await eventually(idle)
    seen: list[PriceTick] = []
    consumer = Consumer(redis_client, STREAM, GROUP, "c1", recorder(seen), PriceTick,
                        count=2, block_ms=100, reclaim_idle_ms=2)  # fmt: skip
    assert await consumer.poll() == 3 + 2  # all three reclaimed, then one batch of two
    assert sorted(m.ts for m in seen) == [0, 1, 2, 3, 4]
    assert await consumer.poll() == 1  # the last new one
    rows: Any = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert rows == []


async def test_publish_returns_the_entry_id_as_text_on_any_client(
    redis_server: EmbeddedRedis,
) -> None:
    for decode in (False, True):
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=decode)
        try:
            entry_id = await publish(client, STREAM, tick(1))
            last: Any = await client.xrevrange(STREAM, count=1)
            assert entry_id == (last[0][0].decode() if not decode else last[0][0])
            assert entry_id.count("-") == 1
        finally:
            await client.aclose()
