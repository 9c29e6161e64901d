"""The executor's journal on a real server: what each record holds, how long it is kept, and
which writes land together (one MULTI/EXEC, counted in the server's own command stats)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.executor import orders as o
from services.executor.journal import DAY_S, RECORD_TTL_S, IntentNotConfirmed, Journal
from shared import keys
from shared.schemas import (
    EntrySignal,
    OrderEvent,
    PriceTick,
    SchemaError,
    encode,
    entry_signal_id,
)

SOL = "SOL/USDT:USDT"
CLOSE = 1_700_000_300_000


def signal(symbol: str, open_ms: int = CLOSE - 300_000) -> EntrySignal:
    return EntrySignal(
        id=entry_signal_id(symbol, "5m", open_ms, "long"), symbol=symbol, timeframe="5m",
        candle_open_time=open_ms, side="long", price=100.0, body_pct=0.01, vol_ratio=2.0,
        chop=40.0, ts=CLOSE,
    )  # fmt: skip


def submitted(intent: Any) -> OrderEvent:
    return OrderEvent(
        event="submitted", client_order_id=intent.client_order_id, signal_id=intent.signal_id,
        symbol=intent.symbol, side=intent.side, purpose=intent.purpose,
        quantity=intent.quantity, ts=1,
    )  # fmt: skip


async def transactions(client: aioredis.Redis) -> int:
    """Return how many MULTI blocks the server has run so far."""
    stats: Any = await client.info("commandstats")
    return int(stats.get("cmdstat_multi", {}).get("calls", 0))


async def test_an_intent_is_kept_a_month_and_marks_its_symbol_only_when_asked(
    redis_client: aioredis.Redis,
) -> None:
    journal = Journal(redis_client)
    entry = o.entry_intent("pos-1", SOL, "long", 2.0, 1)
    stop = o.stop_intent("pos-2", "ETH/USDT:USDT", "long", 1.0, 2_900.0, 0, 2)
    before = await transactions(redis_client)
    await journal.open_intent(entry, submitted(entry), pending_symbol=True)
    await journal.open_intent(stop)
    assert await transactions(redis_client) == before + 2  # each intent with its event
    ttl = await redis_client.ttl(keys.order_intent_key(entry.client_order_id))
    assert 30 * DAY_S - 60 < ttl <= 30 * DAY_S
    assert await journal.pending_entries() == {SOL: "pos-1"}  # the stop marked nothing
    assert await journal.intent(stop.client_order_id) == stop
    assert [i.client_order_id for i in await journal.open_intents()] == [
        entry.client_order_id, stop.client_order_id,
    ]  # fmt: skip
    assert await redis_client.xlen(keys.STREAM_EVENTS) == 1
    assert REGISTRY.get_sample_value("tradebot_intents_open") == 2
    await journal.close_intent(stop, "placed")
    assert REGISTRY.get_sample_value("tradebot_intents_open") == 1


async def test_a_settled_intent_leaves_a_week_long_record_in_one_transaction(
    redis_client: aioredis.Redis,
) -> None:
    journal = Journal(redis_client)
    entry = o.entry_intent("pos-1", SOL, "long", 2.0, 1)
    await journal.open_intent(entry, pending_symbol=True)
    before = await transactions(redis_client)
    await journal.close_intent(entry, "rejected", submitted(entry), record_id="pos-1",
                               clear_pending=True)  # fmt: skip
    assert await transactions(redis_client) == before + 1
    assert await journal.settled("pos-1") == "rejected"
    ttl = await redis_client.ttl(keys.signal_done_key("pos-1"))
    assert RECORD_TTL_S - 60 < ttl <= RECORD_TTL_S
    assert (await journal.open_intents(), await journal.pending_entries()) == ([], {})

    await journal.settle("sig-2", "refused:halted")
    assert await journal.settled("sig-2") == "refused:halted"
    assert await redis_client.ttl(keys.signal_done_key("sig-2")) > RECORD_TTL_S - 60

    before = await transactions(redis_client)
    await journal.publish(submitted(entry), submitted(entry))
    assert await transactions(redis_client) == before + 1


async def test_a_record_of_another_kind_is_refused_not_used(redis_client: aioredis.Redis) -> None:
    journal = Journal(redis_client)
    tick = encode(PriceTick(symbol=SOL, price=1.0, ts=1))
    await redis_client.set(keys.order_intent_key("odd"), tick)
    await redis_client.sadd(keys.OPEN_INTENTS, "odd")
    with pytest.raises(SchemaError, match="expected OrderIntent"):
        await journal.intent("odd")
    with pytest.raises(SchemaError, match="expected OrderIntent"):
        await journal.open_intents()
    await redis_client.hset(keys.entry_batch_key(CLOSE), "odd", tick)
    with pytest.raises(SchemaError, match="expected EntrySignal"):
        await journal.batch(CLOSE)


async def test_entries_wait_per_close_with_the_first_arrival_kept(
    redis_client: aioredis.Redis,
) -> None:
    journal = Journal(redis_client)
    closes = [CLOSE, CLOSE + 300_000, CLOSE + 600_000]
    before = await transactions(redis_client)
    for close in reversed(closes):
        await journal.queue_entry(signal(SOL, close - 300_000), close)
    assert await transactions(redis_client) == before + 3
    assert [c for c, _ in await journal.batches()] == closes  # every close, oldest first
    ttl = await redis_client.ttl(keys.entry_batch_key(CLOSE))
    assert DAY_S - 60 < ttl <= DAY_S

    # A later entry of the same close leaves its arrival time (the wait counts from the first).
    await redis_client.zadd(keys.ENTRY_BATCHES, {str(CLOSE): 5})
    await journal.queue_entry(signal("ETH/USDT:USDT"), CLOSE)
    assert (await journal.batches())[0] == (CLOSE, 5)
    assert {s.symbol for s in await journal.batch(CLOSE)} == {SOL, "ETH/USDT:USDT"}

    # Finishing with one entry still queued keeps the close and that entry.
    assert not await journal.finish_batch(CLOSE, [signal(SOL).id])
    assert [s.symbol for s in await journal.batch(CLOSE)] == ["ETH/USDT:USDT"]
    assert await journal.finish_batch(CLOSE, [signal("ETH/USDT:USDT").id])
    assert [c for c, _ in await journal.batches()] == closes[1:]
    assert not await redis_client.exists(keys.entry_batch_key(CLOSE))


async def test_evaluations_of_a_close(redis_client: aioredis.Redis) -> None:
    journal = Journal(redis_client)
    assert await journal.evaluations(CLOSE) == (None, 0)  # market_data has not published it
    await redis_client.set(keys.close_expected_key(CLOSE), 3)
    await redis_client.sadd(keys.close_evaluated_key(CLOSE), "A", "B")
    assert await journal.evaluations(CLOSE) == (3, 2)


def test_an_unconfirmed_intent_error_names_its_order() -> None:
    err = IntentNotConfirmed("intent x confirmed by 0 of 1: order not sent", "tb-x")
    assert (str(err), err.call, err.client_order_id) == (
        "intent x confirmed by 0 of 1: order not sent", "open_intent", "tb-x",
    )  # fmt: skip
