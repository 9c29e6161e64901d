"""The bus at its edges: where a group starts, batch sizes, what poll counts, publish's id.

Each test runs on Valkey and on Redis (``servers.redis_server``).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from shared import bus, keys
from shared.bus import Consumer, ensure_group, publish, publish_many
from shared.redisconn import EmbeddedRedis
from shared.schemas import PriceTick
from tests.fixtures.metrics import sample
from tests.integration.bus.helpers import (
    GROUP,
    STREAM,
    dlq_entries,
    eventually,
    pending_count,
    running,
    tick,
)
from tests.integration.bus.servers import redis_server
from tests.unit.shared.test_exchange_client import FakeTime

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


# --- options, metrics and the outage backoff ------------------------------------------------


def options_consumer(client: aioredis.Redis, **options: Any) -> Consumer[PriceTick]:
    return Consumer(client, STREAM, GROUP, "c1", recorder([]), PriceTick, **options)


@pytest.mark.parametrize("option", ["count", "block_ms", "max_deliveries", "reclaim_idle_ms"])
async def test_every_consumer_option_must_be_positive(
    redis_client: aioredis.Redis, option: str
) -> None:
    with pytest.raises(ValueError, match=r"must be > 0") as err:
        options_consumer(redis_client, **{option: 0})
    assert str(err.value) == "count, block_ms, reclaim_idle_ms and max_deliveries must be > 0"
    options_consumer(redis_client, **{option: 1})  # the smallest value taken


async def test_the_consumer_defaults_and_its_reclaim_rhythm(redis_client: aioredis.Redis) -> None:
    """Batches of 100, reads blocking 1 s, entries idle 30 s taken back, dead-lettered after
    5 deliveries (docs/bus.md); reclaims run every half idle time, at most every 5 s."""
    c = options_consumer(redis_client)
    assert (c.count, c.block_ms, c.reclaim_idle_ms, c.max_deliveries) == (100, 1000, 30_000, 5)
    assert c._reclaim_every_s == 5.0
    assert options_consumer(redis_client, reclaim_idle_ms=2_000)._reclaim_every_s == 1.0
    assert bus._maxlen("tb:some:other:stream") == keys.DEFAULT_MAXLEN


async def test_a_client_whose_timeout_is_shorter_than_the_block_is_refused_with_the_fix(
    redis_server: EmbeddedRedis,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=1.0)
    try:
        with pytest.raises(ValueError, match=r"socket_timeout") as err:
            options_consumer(client, block_ms=1000)
        assert str(err.value) == (
            "block_ms=1000 must be below the client's socket_timeout (1.0s); "
            "make the client with shared.redisconn.redis_from_url"
        )
    finally:
        await client.aclose()


async def test_handler_failures_and_reclaims_are_counted_per_stream_and_group(
    redis_client: aioredis.Redis,
) -> None:
    errors = sample("tradebot_bus_handler_errors_total", stream=STREAM, group=GROUP)
    reclaimed = sample("tradebot_bus_reclaimed_total", stream=STREAM, group=GROUP)
    await ensure_group(redis_client, STREAM, GROUP)
    await publish_many(redis_client, STREAM, [tick(1), tick(2)])
    await redis_client.xreadgroup(GROUP, "gone", {STREAM: ">"}, count=1)  # tick 1 left pending

    async def idle() -> bool:
        rows: Any = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
        return all(r["time_since_delivered"] >= 2 for r in rows)

    await eventually(idle)

    async def fail(msg: PriceTick, entry_id: str) -> None:
        raise RuntimeError("boom")

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", fail, PriceTick,
                        block_ms=100, reclaim_idle_ms=2)  # fmt: skip
    await consumer.poll()  # reclaims tick 1, reads tick 2: both handlers fail
    assert sample("tradebot_bus_reclaimed_total", stream=STREAM, group=GROUP) == reclaimed + 1
    assert sample("tradebot_bus_handler_errors_total", stream=STREAM, group=GROUP) == errors + 2


async def test_an_outage_is_ridden_out_with_doubling_waits_capped_then_given_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeTime()  # monotonic time that only the bus's backoff sleeps move
    monkeypatch.setattr(bus, "time", SimpleNamespace(monotonic=clock.clock))
    monkeypatch.setattr(bus, "asyncio", SimpleNamespace(sleep=clock.sleep))
    failures = iter(range(7))

    async def flaky() -> str:
        if next(failures, None) is not None:
            raise redis.exceptions.ConnectionError("refused")
        return "done"

    assert await bus.ride_out("test step", flaky, 60.0) == "done"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert "retry 7 in 2.0 s" in caplog.text

    clock.sleeps.clear()

    async def down() -> str:
        raise redis.exceptions.ConnectionError("refused")

    with pytest.raises(bus.BusUnavailable) as gave_up:
        await bus.ride_out("test step", down, 0.5)
    # The error that ends the service names the last Redis error, for its exit line.
    assert str(gave_up.value) == "test step: Redis unreachable for 0.5 s: ConnectionError: refused"
    # 0.1 and 0.2, then the 0.2 s left of the outage; at 0.5 s exactly it gives up.
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.2])
    assert "giving up after 0.5 s of Redis errors (4 attempts)" in caplog.text


async def test_a_batch_handler_gets_every_decoded_entry_of_a_read_at_once(
    redis_client: aioredis.Redis,
) -> None:
    """One call per read with the entries that decoded, in stream order with their ids; the
    per-entry handler is not called; an undecodable entry is dead-lettered as always, and a
    read of nothing but such entries does not call the batch handler."""
    fallbacks = sample("tradebot_bus_batch_fallbacks_total", stream=STREAM, group=GROUP)
    await ensure_group(redis_client, STREAM, GROUP)
    first = await publish(redis_client, STREAM, tick(1))
    await redis_client.xadd(STREAM, {"d": b"not json"})
    last = await publish(redis_client, STREAM, tick(2))
    batches: list[list[tuple[PriceTick, str]]] = []
    seen: list[PriceTick] = []

    async def batch(items: list[tuple[PriceTick, str]]) -> None:
        batches.append(items)

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", recorder(seen), PriceTick,
                        block_ms=100, batch_handler=batch)  # fmt: skip
    assert await consumer.poll() == 3
    assert batches == [[(tick(1), first), (tick(2), last)]]
    assert seen == []
    assert [d.reason for d in await dlq_entries(redis_client)] == ["decode"]
    assert await pending_count(redis_client) == 0
    await redis_client.xadd(STREAM, {"d": b"[]"})
    assert await consumer.poll() == 1
    assert len(batches) == 1  # nothing decoded: no call
    assert sample("tradebot_bus_batch_fallbacks_total", stream=STREAM, group=GROUP) == fallbacks


async def test_a_failed_batch_is_handled_entry_by_entry(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch handler raised: each entry goes through the per-entry handler, so only the
    entry that fails there too stays pending and counts as a handler error."""
    caplog.set_level(logging.WARNING, logger="shared.bus")
    fallbacks = sample("tradebot_bus_batch_fallbacks_total", stream=STREAM, group=GROUP)
    errors = sample("tradebot_bus_handler_errors_total", stream=STREAM, group=GROUP)
    await ensure_group(redis_client, STREAM, GROUP)
    await publish_many(redis_client, STREAM, [tick(1), tick(2), tick(3)])
    seen: list[int] = []

    async def batch(items: list[tuple[PriceTick, str]]) -> None:
        raise RuntimeError("one of them is bad")

    async def one(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg.ts)
        if msg.ts == 2:
            raise RuntimeError("bad")

    consumer = Consumer(redis_client, STREAM, GROUP, "c1", one, PriceTick,
                        block_ms=100, batch_handler=batch)  # fmt: skip
    assert await consumer.poll() == 3
    assert seen == [1, 2, 3]
    assert await pending_count(redis_client) == 1
    assert sample("tradebot_bus_batch_fallbacks_total", stream=STREAM, group=GROUP) == (
        fallbacks + 1
    )
    assert sample("tradebot_bus_handler_errors_total", stream=STREAM, group=GROUP) == errors + 1
    assert (
        f"Bus: batch handler failed on 3 entries of {STREAM}: RuntimeError: one of them is bad; "
        "handling them one by one"
    ) in caplog.text
