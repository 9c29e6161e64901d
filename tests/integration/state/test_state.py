"""State against a real Redis and the simulator: folding events, exits on ticks, reconciliation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.signals.rules import StrategyParams
from services.state.reconcile import Reconciler
from services.state.service import Book, State
from shared import book, keys
from shared.bus import Consumer
from shared.exchange import ExchangeClient
from shared.order_ids import stop_client_id
from shared.redisconn import EmbeddedRedis
from shared.schemas import ExitSignal, Message, OrderEvent, PriceTick, StopCommand, decode
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.exchange.conftest import FAST
from tests.integration.executor.conftest import SOL, stack_settings

PID = "SOL/USDT:USDT|5m|1699999700000|long"


class StateHarness:
    def __init__(self, state: State, rec: Reconciler, redis: aioredis.Redis) -> None:
        self.state, self.rec, self.redis = state, rec, redis

    async def stream(self, name: str) -> list[Any]:
        rows: Any = await self.redis.xrange(name)
        return [decode(f[b"d"]) for _, f in rows]


@pytest.fixture
async def harness(
    sim: SimHandle, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[StateHarness]:
    settings = stack_settings(sim, redis_server.url, tmp_path)
    ctx = ServiceContext(settings, "state", "state-test", redis_client)
    client = ExchangeClient.from_settings(settings, FAST)
    await client.start()
    params = StrategyParams.from_settings(settings)
    book_ = Book(redis_client, params)
    try:
        yield StateHarness(State(ctx, book_), Reconciler(ctx, client, book_, params), redis_client)
    finally:
        await client.close()


def gauge(name: str, **labels: str) -> float | None:
    """Return a metric's current value in this process's registry."""
    return REGISTRY.get_sample_value(name, labels)


async def watermark_is(h: StateHarness, ms: int) -> bool:
    """Return whether state's tick watermark is at ``ms``."""
    return int(await h.redis.get(keys.STATE_TICK_MS) or 0) == ms


async def has_positions(h: StateHarness) -> bool:
    """Return whether the book holds an open position."""
    return bool(await book.read_positions(h.redis))


def order_event(event: str, purpose: str, side: str, price: float, **kw: Any) -> OrderEvent:
    return OrderEvent(
        event=event, client_order_id=kw.pop("cid", "c-" + event), signal_id=PID,  # type: ignore[arg-type]
        symbol=SOL, side=side, purpose=purpose, quantity=2.0, price=price,  # type: ignore[arg-type]
        fee=kw.pop("fee", 0.15), position_id=kw.pop("position_id", PID), ts=kw.pop("ts", 1_000),
        **kw,
    )  # fmt: skip


async def test_events_open_protect_and_close_a_position_once(harness: StateHarness) -> None:
    h = harness
    entry = order_event("filled", "entry", "buy", 150.0)
    await h.state.on_event(entry, "1-0")
    await h.state.on_event(entry, "1-0")  # redelivered
    await h.state.on_event(order_event("stop_placed", "stop", "sell", 147.0, cid="s0"), "2-0")
    [pos] = (await book.read_positions(h.redis)).values()
    assert (pos.entry_price, pos.stop_price, pos.stop_client_order_id) == (150.0, 147.0, "s0")
    exit_fill = order_event("filled", "exit", "sell", 153.0, reason="trail", ts=9_000)
    await h.state.on_event(exit_fill, "3-0")
    await h.state.on_event(exit_fill, "3-0")
    await h.state.on_event(entry, "1-0")  # a late redelivery cannot reopen it
    assert await book.read_positions(h.redis) == {}
    [trade] = await book.read_all_trades(h.redis)
    assert trade.pnl == pytest.approx(2 * 3.0 - 0.3)
    assert (trade.reason, trade.exit_time) == ("trail", 9_000)
    kinds = [e.event for e in await h.stream(keys.STREAM_EVENTS)]
    assert kinds == ["opened", "closed"]


async def test_ticks_move_best_and_ask_for_the_trail_exit(harness: StateHarness) -> None:
    h = harness
    await h.state.on_event(order_event("filled", "entry", "buy", 100.0), "1-0")
    for ts, price in ((2_000, 103.0), (3_000, 102.4), (4_000, 102.0)):
        await h.state.on_tick(PriceTick(symbol=SOL, price=price, ts=ts), f"{ts}-0")
    [signal] = await h.stream(keys.STREAM_SIGNALS)
    assert isinstance(signal, ExitSignal)
    assert (signal.reason, signal.price, signal.best_price) == ("trail", 102.4, 103.0)
    assert int(await h.redis.get(keys.STATE_TICK_MS) or 0) == 4_000
    await h.state.on_tick(PriceTick(symbol=SOL, price=90.0, ts=1_500), "old")  # older: skipped
    assert len(await h.stream(keys.STREAM_SIGNALS)) == 1


async def test_reconcile_adopts_an_unknown_position_and_asks_for_its_stop(
    harness: StateHarness, sim: SimHandle
) -> None:
    h = harness
    raw = sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "sell", 3.0)
    await h.rec.run_once()
    [pos] = (await book.read_positions(h.redis)).values()
    assert (pos.side, pos.quantity, pos.adopted) == ("short", 3.0, True)
    [cmd] = await h.stream(keys.STREAM_SIGNALS)
    assert isinstance(cmd, StopCommand)
    assert (cmd.position_id, cmd.seq) == (pos.position_id, 0)
    assert cmd.stop_price == pytest.approx(153.0)
    await h.rec.run_once()  # the stop is asked for once; adoption happens once
    assert len(await book.read_positions(h.redis)) == 1


async def test_reconcile_closes_a_vanished_position_and_repairs_a_missing_stop(
    harness: StateHarness, sim: SimHandle
) -> None:
    h = harness
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0, ts=0), "1-0")
    stop_cid = stop_client_id(PID)
    await h.state.on_event(order_event("stop_placed", "stop", "sell", 147.0, cid=stop_cid), "2-0")
    await h.rec.run_once()  # the exchange has no such position: closed, reason fault
    assert await book.read_positions(h.redis) == {}
    [trade] = await book.read_all_trades(h.redis)
    assert trade.reason == "fault"

    raw = sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 2.0)
    other = PID.replace("1699999700000", "1699999400000")
    ev = order_event("filled", "entry", "buy", 150.0, ts=0, position_id=other)
    await h.state.on_event(ev, "3-0")
    await h.rec.run_once()  # on the exchange, no stop open: stop #1 is asked for
    cmds = [c for c in await h.stream(keys.STREAM_SIGNALS) if isinstance(c, StopCommand)]
    assert [(c.position_id, c.seq) for c in cmds] == [(other, 1)]
    assert gauge("tradebot_positions_without_stop") == 1
    assert gauge("tradebot_position_notional", symbol=SOL, side="long") == pytest.approx(300.0)


async def test_a_malformed_tick_goes_to_the_dlq_and_ticks_go_on(harness: StateHarness) -> None:
    h = harness
    await h.state.on_event(order_event("filled", "entry", "buy", 100.0), "1-0")
    stop = asyncio.Event()
    consumer: Consumer[PriceTick] = Consumer(
        h.redis, keys.STREAM_TICKS, keys.GROUP_STATE, "t", h.state.on_tick, PriceTick, block_ms=100
    )
    await h.redis.xadd(keys.STREAM_TICKS, {b"d": b'{"kind":"tick","v":1,"symbol":"X","price":-1}'})
    await h.redis.xadd(keys.STREAM_TICKS, {b"d": b"not json"})
    from shared.bus import publish

    await publish(h.redis, keys.STREAM_TICKS, PriceTick(symbol=SOL, price=101.0, ts=5_000))
    task = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: watermark_is(h, 5_000))
    finally:
        stop.set()
        await task
    assert await h.redis.xlen(keys.STREAM_DLQ) == 2
    [pos] = (await book.read_positions(h.redis)).values()
    assert pos.best_price == 101.0


async def test_events_of_other_kinds_are_ignored(harness: StateHarness) -> None:
    msg: Message = PriceTick(symbol=SOL, price=1.0, ts=1)
    await harness.state.on_event(msg, "1-0")
    assert await book.read_positions(harness.redis) == {}


async def test_reconcile_leaves_a_protected_position_alone(
    harness: StateHarness, sim: SimHandle
) -> None:
    h = harness
    raw = sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 2.0)
    stop_cid = stop_client_id(PID)
    await raw.create_order(
        SOL, "market", "sell", 2.0, None,
        {"clientOrderId": stop_cid, "triggerPrice": 147.0, "reduceOnly": True},
    )  # fmt: skip
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0, ts=0), "1-0")
    await h.state.on_event(order_event("stop_placed", "stop", "sell", 147.0, cid=stop_cid), "2-0")
    await h.rec.run_once()
    await h.rec.run_once()
    assert [p.stop_client_order_id for p in (await book.read_positions(h.redis)).values()] == [
        stop_cid
    ]
    assert gauge("tradebot_positions_without_stop") == 0
    assert not [c for c in await h.stream(keys.STREAM_SIGNALS) if isinstance(c, StopCommand)]


async def test_a_malformed_event_goes_to_the_dlq_and_events_go_on(harness: StateHarness) -> None:
    h = harness
    stop = asyncio.Event()
    consumer: Consumer[Message] = Consumer(
        h.redis, keys.STREAM_EVENTS, keys.GROUP_STATE, "t", h.state.on_event, Message,
        block_ms=100,
    )  # fmt: skip
    await h.redis.xadd(keys.STREAM_EVENTS, {b"d": b'{"kind":"order","v":9}'})
    from shared.bus import publish

    await publish(h.redis, keys.STREAM_EVENTS, order_event("filled", "entry", "buy", 100.0))
    task = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: has_positions(h))
    finally:
        stop.set()
        await task
    [dead] = await h.stream(keys.STREAM_DLQ)
    assert "unsupported schema version" in dead.error
