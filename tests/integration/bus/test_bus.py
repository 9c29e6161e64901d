"""The bus against a real server: delivery, acks, retries, the dead-letter stream, recreation."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.bus import Consumer, Invalid, ensure_group, publish, publish_in, publish_many
from shared.redisconn import EmbeddedRedis, redis_from_url
from shared.schemas import Candle, DlqEntry, Message, PriceTick, decode, encode
from tests.integration.bus.helpers import (
    GROUP,
    STREAM,
    dlq_entries,
    eventually,
    pending_count,
    running,
    text,
    tick,
)
from tests.integration.bus.servers import redis_server

__all__ = ["redis_server"]  # every test here runs on Valkey and on Redis


def make_consumer(
    client: aioredis.Redis,
    seen: list[PriceTick],
    fail: Counter[int] | None = None,
    max_deliveries: int = 3,
) -> Consumer[PriceTick]:
    """Return a consumer that records messages; message ts=i fails ``fail[i]`` more times."""
    failures = fail if fail is not None else Counter()

    async def handle(msg: PriceTick, entry_id: str) -> None:
        if failures[msg.ts] > 0:
            failures[msg.ts] -= 1
            raise RuntimeError(f"boom {msg.ts}")
        seen.append(msg)

    return Consumer(
        client,
        STREAM,
        GROUP,
        "c1",
        handle,
        PriceTick,
        count=50,
        block_ms=100,
        reclaim_idle_ms=100,
        max_deliveries=max_deliveries,
    )


async def test_every_message_delivered_and_acked(redis_client: aioredis.Redis) -> None:
    seen: list[PriceTick] = []
    await publish_many(redis_client, STREAM, [tick(i) for i in range(120)])
    async with running(make_consumer(redis_client, seen)):
        await publish(redis_client, STREAM, tick(120))
        await eventually(lambda: len(seen) >= 121)
        await eventually(lambda: _no_pending(redis_client))
    assert sorted(m.ts for m in seen) == list(range(121))
    assert await pending_count(redis_client) == 0
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_ack_only_after_handler_returns(redis_client: aioredis.Redis) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def handle(msg: PriceTick, entry_id: str) -> None:
        started.set()
        await release.wait()

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=100)
    entry_id = await publish(redis_client, STREAM, tick(1))
    async with running(consumer):
        await eventually(started.is_set)
        pending = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
        assert [text(p["message_id"]) for p in pending] == [entry_id]
        release.set()
        await eventually(lambda: _no_pending(redis_client))


async def _no_pending(client: aioredis.Redis) -> bool:
    return await pending_count(client) == 0


async def test_failed_message_is_redelivered(redis_client: aioredis.Redis) -> None:
    seen: list[PriceTick] = []
    fail = Counter({3: 2})
    await publish_many(redis_client, STREAM, [tick(i) for i in range(6)])
    async with running(make_consumer(redis_client, seen, fail)):
        await eventually(lambda: sorted(m.ts for m in seen) == list(range(6)))
        await eventually(lambda: _no_pending(redis_client))
    assert fail[3] == 0
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_dead_letter_after_max_deliveries(redis_client: aioredis.Redis) -> None:
    before = REGISTRY.get_sample_value(
        "tradebot_dlq_messages_total", {"stream": STREAM, "reason": "handler"}
    )
    seen: list[PriceTick] = []
    fail = Counter({2: 1000})
    ids = await publish_many(redis_client, STREAM, [tick(i) for i in range(4)])
    async with running(make_consumer(redis_client, seen, fail, max_deliveries=3)):
        await eventually(lambda: _dlq_len(redis_client, 1))
        await eventually(lambda: _no_pending(redis_client))
    assert fail[2] == 1000 - 3
    assert sorted(m.ts for m in seen) == [0, 1, 3]
    [dead] = await dlq_entries(redis_client)
    assert (dead.stream, dead.group, dead.entry_id) == (STREAM, GROUP, ids[2])
    assert (dead.reason, dead.deliveries) == ("handler", 3)
    assert "boom 2" in dead.error
    assert dead.payload == encode(tick(2)).decode()
    after = REGISTRY.get_sample_value(
        "tradebot_dlq_messages_total", {"stream": STREAM, "reason": "handler"}
    )
    assert (after or 0) - (before or 0) == 1


async def test_an_invalid_message_is_dead_lettered_at_once(redis_client: aioredis.Redis) -> None:
    seen: list[PriceTick] = []
    handed: list[str] = []

    async def handle(msg: PriceTick, entry_id: str) -> None:
        handed.append(entry_id)
        if msg.ts == 2:
            raise Invalid("tick 2 cannot be true")
        seen.append(msg)

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", handle, PriceTick, max_deliveries=3)
    ids = await publish_many(redis_client, STREAM, [tick(i) for i in range(4)])
    async with running(consumer):
        await eventually(lambda: _dlq_len(redis_client, 1))
        await eventually(lambda: _no_pending(redis_client))
    assert sorted(m.ts for m in seen) == [0, 1, 3]
    assert sorted(handed) == sorted(ids)  # each handler call gets its entry's id
    [dead] = await dlq_entries(redis_client)
    assert (dead.entry_id, dead.reason, dead.deliveries) == (ids[2], "invalid", 1)
    assert dead.error == "tick 2 cannot be true"
    assert dead.payload == encode(tick(2)).decode()  # the message itself, to replay


async def _dlq_len(client: aioredis.Redis, n: int) -> bool:
    return await client.xlen(keys.STREAM_DLQ) >= n


async def test_poison_entries_go_to_dlq_and_consumer_goes_on(redis_client: aioredis.Redis) -> None:
    seen: list[PriceTick] = []
    bad_version = encode(tick(0)).replace(b'"v":1', b'"v":9')
    bad_price = encode(tick(0)).replace(b'"price":1.0', b'"price":-1.0')
    poison: list[Any] = [
        {b"d": b"not json"},
        {b"other": b"x"},
        {b"d": bad_version},
        {b"d": bad_price},
    ]
    poison_ids = [text(await redis_client.xadd(STREAM, p)) for p in poison]
    started_ms = int(time.time() * 1000)
    await publish(redis_client, STREAM, tick(7))
    async with running(make_consumer(redis_client, seen)) as task:
        await eventually(lambda: len(seen) == 1)
        await eventually(lambda: _dlq_len(redis_client, 4))
        await publish(redis_client, STREAM, tick(8))
        await eventually(lambda: len(seen) == 2)
        assert not task.done()
    dead = await dlq_entries(redis_client)
    assert [d.entry_id for d in dead] == poison_ids
    assert {d.reason for d in dead} == {"decode"}
    assert dead[1].error == "entry has no 'd' field"
    assert all(started_ms <= d.ts <= time.time() * 1000 for d in dead)
    assert "version" in dead[2].error
    assert "price" in dead[3].error
    assert await pending_count(redis_client) == 0


async def test_group_recreated_after_stream_deleted(redis_client: aioredis.Redis) -> None:
    seen: list[PriceTick] = []
    async with running(make_consumer(redis_client, seen)):
        await publish(redis_client, STREAM, tick(1))
        await eventually(lambda: len(seen) == 1)
        await redis_client.delete(STREAM)
        await publish_many(redis_client, STREAM, [tick(2), tick(3)])
        await eventually(lambda: len(seen) == 3)
    assert [m.ts for m in seen] == [1, 2, 3]
    groups = await redis_client.xinfo_groups(STREAM)
    assert [g["name"].decode() for g in groups] == [GROUP]


async def test_a_stream_deleted_under_a_blocked_read_is_recreated_not_raised(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[PriceTick] = []
    consumer = Consumer(redis_client, STREAM, GROUP, "c1", _record(seen), PriceTick,
                        block_ms=10_000, reclaim_idle_ms=60_000)  # fmt: skip
    await publish(redis_client, STREAM, tick(1))
    await ensure_group(redis_client, STREAM, GROUP)
    assert await consumer.poll() == 1
    reading = asyncio.create_task(consumer.poll())  # nothing new: blocks up to 10 s

    async def blocked() -> bool:
        clients: Any = await redis_client.client_list()
        return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

    await eventually(blocked)
    await redis_client.delete(STREAM)  # the server ends the blocked read with UNBLOCKED
    assert await asyncio.wait_for(reading, 30) == 0
    groups: Any = await redis_client.xinfo_groups(STREAM)  # recreated at once
    assert [g["name"].decode() for g in groups] == [GROUP]
    await publish(redis_client, STREAM, tick(2))
    assert await consumer.poll() == 1
    assert [m.ts for m in seen] == [1, 2]


def _record(seen: list[PriceTick]) -> Any:
    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg)

    return handle


async def test_a_group_recreated_reads_what_was_added_while_it_was_gone(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[PriceTick] = []
    consumer = make_consumer(redis_client, seen)
    await publish(redis_client, STREAM, tick(1))
    await ensure_group(redis_client, STREAM, GROUP)
    for _ in range(3):
        await consumer.poll()
    assert [m.ts for m in seen] == [1]
    await redis_client.xgroup_destroy(STREAM, GROUP)
    await publish_many(redis_client, STREAM, [tick(2), tick(3)])  # while the group is gone
    for _ in range(5):  # NOGROUP: the group is recreated (from 0), then read
        await consumer.poll()
    assert [m.ts for m in seen] == [1, 1, 2, 3]  # 1 again (handlers are idempotent), not lost


@pytest.mark.parametrize("bad", [0, -1])
async def test_consumer_rejects_bad_options(redis_client: aioredis.Redis, bad: int) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        make_consumer(redis_client, [], max_deliveries=bad)


async def test_stream_of_several_kinds(redis_client: aioredis.Redis) -> None:
    candle = Candle(
        symbol="S", timeframe="5m", open_time=0, open=1, high=2, low=1, close=2, volume=0
    )
    seen: list[Message] = []

    async def handle(msg: Message, entry_id: str) -> None:
        seen.append(msg)

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", handle, Message, block_ms=100)
    await publish_many(redis_client, STREAM, [tick(1), candle])
    async with running(consumer):
        await eventually(lambda: len(seen) == 2)
    assert seen == [tick(1), candle]


async def test_consumer_rejects_block_longer_than_socket_timeout() -> None:
    client = redis_from_url("redis://127.0.0.1:1/0", socket_timeout=1.0)
    with pytest.raises(ValueError, match="socket_timeout"):
        Consumer(client, STREAM, GROUP, "c1", _noop, PriceTick, block_ms=1000)
    await client.aclose()


async def _noop(msg: PriceTick, entry_id: str) -> None:
    return None


async def test_entry_that_keeps_killing_consumers_is_dead_lettered(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[PriceTick] = []
    entry_id = await publish(redis_client, STREAM, tick(5))
    await redis_client.xgroup_create(STREAM, GROUP, id="0")
    await redis_client.xreadgroup(GROUP, "crashed", {STREAM: ">"})
    await redis_client.xclaim(STREAM, GROUP, "crashed", 0, [entry_id], retrycount=7)
    async with running(make_consumer(redis_client, seen, max_deliveries=3)):
        await eventually(lambda: _dlq_len(redis_client, 1))
    [dead] = await dlq_entries(redis_client)
    assert (dead.entry_id, dead.reason, dead.deliveries) == (entry_id, "deliveries", 8)
    assert dead.payload == encode(tick(5)).decode()
    assert seen == []
    assert await pending_count(redis_client) == 0


async def test_dead_letter_keeps_the_message_of_a_redis_error(
    redis_client: aioredis.Redis,
) -> None:
    async def handle(msg: PriceTick, entry_id: str) -> None:
        await redis_client.lpush(STREAM, b"x")  # WRONGTYPE: the stream is not a list

    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=100, max_deliveries=1
    )
    await publish(redis_client, STREAM, tick(1))
    async with running(consumer):
        await eventually(lambda: _dlq_len(redis_client, 1))
    [dead] = await dlq_entries(redis_client)
    assert dead.error.startswith("ResponseError: WRONGTYPE"), dead.error


async def test_delivery_counts_found_past_many_of_our_own_pending_entries(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[PriceTick] = []
    await redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    first = await publish(redis_client, STREAM, tick(1))
    await publish_many(redis_client, STREAM, [tick(2)] * 1001)
    last = await publish(redis_client, STREAM, tick(3))
    await redis_client.xreadgroup(GROUP, "c1", {STREAM: ">"})  # all pending to c1, fresh
    # Two entries that kept killing consumers, idle long enough to be reclaimed.
    await redis_client.xclaim(
        STREAM, GROUP, "crashed", 0, [first, last], idle=120_000, retrycount=7
    )

    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg)

    # count=200: one XAUTOCLAIM call scans up to 2000 PEL entries, so its batch spans ours.
    consumer = Consumer(
        redis_client, STREAM, GROUP, "c1", handle, PriceTick, count=200, max_deliveries=3
    )
    assert await consumer.reclaim() == 2
    dead = await dlq_entries(redis_client)
    assert sorted((d.entry_id, d.reason, d.deliveries) for d in dead) == [
        (first, "deliveries", 8),
        (last, "deliveries", 8),
    ]
    assert seen == []


@pytest.mark.parametrize("how", ["publish", "publish_many", "publish_in"])
async def test_a_stream_stays_bounded_by_its_maxlen(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setitem(keys.STREAM_MAXLEN, STREAM, 200)
    published = {"stream": STREAM}
    before = REGISTRY.get_sample_value("tradebot_bus_published_total", published) or 0
    for batch in range(10):
        msgs = [tick(batch * 100 + i) for i in range(100)]
        if how == "publish":
            for m in msgs:
                await publish(redis_client, STREAM, m)
        elif how == "publish_many":
            await publish_many(redis_client, STREAM, msgs)
        else:  # queued with the caller's own writes, as the executor and state do
            async with redis_client.pipeline(transaction=True) as pipe:
                for m in msgs:
                    publish_in(pipe, STREAM, m)
                await pipe.execute()
    # Approximate trimming drops whole nodes (100 entries each by default): 200 to 300 stay,
    # the newest ones, of the 1 000 published.
    assert 200 <= await redis_client.xlen(STREAM) <= 300
    newest: Any = await redis_client.xrevrange(STREAM, count=1)
    assert decode(newest[0][1][b"d"], PriceTick).ts == 999
    assert REGISTRY.get_sample_value("tradebot_bus_published_total", published) == before + 1000


async def test_the_dead_letter_stream_stays_bounded_by_its_maxlen(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(keys.STREAM_MAXLEN, keys.STREAM_DLQ, 100)
    for i in range(500):
        await redis_client.xadd(STREAM, {b"junk": str(i).encode()})
    consumer = make_consumer(redis_client, [])
    await ensure_group(redis_client, STREAM, GROUP)
    for _ in range(50):  # 50 entries a poll: 10 polls read them all
        if await _all_read(redis_client, 500):
            break
        await consumer.poll()
    # Trimmed like any stream: whole nodes of 100 go, the newest dead letters stay.
    assert 100 <= await redis_client.xlen(keys.STREAM_DLQ) <= 200
    assert await pending_count(redis_client) == 0
    newest: Any = await redis_client.xrevrange(keys.STREAM_DLQ, count=1)
    assert "junk" in decode(newest[0][1][b"d"], DlqEntry).payload


async def _all_read(client: aioredis.Redis, n: int) -> bool:
    groups: Any = await client.xinfo_groups(STREAM)
    return bool(groups) and int(groups[0]["entries-read"] or 0) >= n


@pytest.mark.parametrize("decode_responses", [False, True])
async def test_publish_many_returns_the_id_of_every_message(
    redis_server: EmbeddedRedis, decode_responses: bool
) -> None:
    client = aioredis.from_url(redis_server.url, decode_responses=decode_responses)
    try:
        ids = await publish_many(client, STREAM, [tick(i) for i in range(5)])
        rows: Any = await client.xrange(STREAM)
    finally:
        await client.aclose()
    assert ids == [text(entry_id) for entry_id, _ in rows]
    assert all(isinstance(i, str) for i in ids)
