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
from shared.book import BookPosition
from shared.bus import Consumer
from shared.exchange import ExchangeClient
from shared.order_ids import exit_client_id, stop_client_id
from shared.redisconn import EmbeddedRedis
from shared.schemas import ExitSignal, Message, OrderEvent, PriceTick, StopCommand, decode
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.exchange.conftest import FAST
from tests.integration.executor.conftest import ETH, SOL, stack_settings

PID = "SOL/USDT:USDT|5m|1699999700000|long"
BTC = "BTC/USDT:USDT"


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


@pytest.fixture
async def raw(sim: SimHandle) -> Any:
    """A plain ccxt client on the simulator, markets loaded: the exchange as a person uses it."""
    client = sim.make_ccxt()
    await client.load_markets()
    return client


async def stop_by_hand(
    raw: Any, symbol: str, side: str, qty: float, trigger: float, cid: str
) -> None:
    """Place a reduce-only stop-market order straight through ccxt, as a person would."""
    await raw.create_order(
        symbol, "market", side, qty, None,
        {"clientOrderId": cid, "triggerPrice": trigger, "reduceOnly": True},
    )  # fmt: skip


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


async def test_a_stop_fill_and_an_exit_without_a_reason_close_as_stop_and_manual(
    harness: StateHarness,
) -> None:
    h = harness
    by_stop, by_hand = PID, PID.replace("SOL/USDT:USDT", ETH)
    closed_before = {r: gauge("tradebot_trades_closed_total", reason=r, symbol=sym) or 0
                     for r, sym in (("stop", SOL), ("manual", ETH))}  # fmt: skip
    for i, ev in enumerate([
        fill_event(by_stop, SOL, "buy", 2.0, 150.0),
        fill_event(by_hand, ETH, "sell", 1.0, 3000.0),
        fill_event(by_stop, SOL, "sell", 2.0, 147.0, event="stop_filled", purpose="stop",
                   cid="s", ts=5_000),
        fill_event(by_hand, ETH, "buy", 1.0, 2990.0, purpose="exit", cid="x", ts=6_000),
    ]):  # fmt: skip
        await h.state.on_event(ev, f"{i + 1}-0")
    assert await book.read_positions(h.redis) == {}
    trades = {t.position_id: t for t in await book.read_all_trades(h.redis)}
    assert (trades[by_stop].reason, trades[by_stop].exit_price) == ("stop", 147.0)
    assert (trades[by_hand].reason, trades[by_hand].exit_price) == ("manual", 2990.0)
    closed = {e.position_id: e for e in await h.stream(keys.STREAM_EVENTS) if e.event == "closed"}
    for pid, t in trades.items():
        e = closed[pid]
        assert (e.exit_price, e.exit_reason, e.fees, e.pnl, e.ts) == (
            t.exit_price,
            t.reason,
            t.fees,
            t.pnl,
            t.exit_time,
        )
    assert trades[by_stop].pnl == pytest.approx(2.0 * (147.0 - 150.0) - 0.2)
    assert trades[by_hand].exit_time == 6_000
    for r, sym in (("stop", SOL), ("manual", ETH)):
        assert gauge("tradebot_trades_closed_total", reason=r, symbol=sym) == closed_before[r] + 1


async def test_ticks_move_best_and_ask_for_the_trail_exit(harness: StateHarness) -> None:
    h = harness
    await h.state.on_event(order_event("filled", "entry", "buy", 100.0), "1-0")
    trail_exits = gauge("tradebot_exit_signals_total", reason="trail") or 0
    for ts, price in ((2_000, 103.0), (3_000, 102.4), (4_000, 102.0)):
        await h.state.on_tick(PriceTick(symbol=SOL, price=price, ts=ts), f"{ts}-0")
    assert gauge("tradebot_exit_signals_total", reason="trail") == trail_exits + 1
    [signal] = await h.stream(keys.STREAM_SIGNALS)
    assert isinstance(signal, ExitSignal)
    assert (signal.reason, signal.price, signal.best_price) == ("trail", 102.4, 103.0)
    assert int(await h.redis.get(keys.STATE_TICK_MS) or 0) == 4_000
    await h.state.on_tick(PriceTick(symbol=SOL, price=90.0, ts=1_500), "old")  # older: skipped
    assert len(await h.stream(keys.STREAM_SIGNALS)) == 1


async def test_reconcile_adopts_an_unknown_position_and_asks_for_its_stop(
    harness: StateHarness, raw: Any
) -> None:
    h = harness
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
    harness: StateHarness, raw: Any
) -> None:
    h = harness
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0, ts=0), "1-0")
    stop_cid = stop_client_id(PID)
    await h.state.on_event(order_event("stop_placed", "stop", "sell", 147.0, cid=stop_cid), "2-0")
    await h.rec.run_once()  # the exchange has no such position: closed, reason fault
    assert await book.read_positions(h.redis) == {}
    [trade] = await book.read_all_trades(h.redis)
    assert trade.reason == "fault"

    await raw.create_order(SOL, "market", "buy", 2.0)
    other = PID.replace("1699999700000", "1699999400000")
    ev = order_event("filled", "entry", "buy", 150.0, ts=0, position_id=other)
    await h.state.on_event(ev, "3-0")
    missing = gauge("tradebot_reconcile_corrections_total", kind="stop_missing") or 0
    await h.rec.run_once()  # on the exchange, no stop open: stop #1 is asked for
    cmds = [c for c in await h.stream(keys.STREAM_SIGNALS) if isinstance(c, StopCommand)]
    assert [(c.position_id, c.seq) for c in cmds] == [(other, 1)]
    assert (cmds[0].reason, cmds[0].stop_price, cmds[0].quantity) == ("repair", 147.0, 2.0)
    assert gauge("tradebot_reconcile_corrections_total", kind="stop_missing") == missing + 1
    [pos] = (await book.read_positions(h.redis)).values()
    assert pos.stop_seq == 1  # the next repair asks for #2: a new id, not a duplicate of #1
    assert gauge("tradebot_positions_without_stop") == 1
    assert gauge("tradebot_position_notional", symbol=SOL, side="long") == pytest.approx(300.0)


def fill_event(pid: str, symbol: str, side: str, qty: float, price: float, **kw: Any) -> OrderEvent:
    """Return the entry fill (or, with ``event=`` and ``purpose=``, another event) of ``pid``."""
    return OrderEvent(
        event=kw.pop("event", "filled"), client_order_id=kw.pop("cid", "c-" + pid),
        signal_id=pid, symbol=symbol, side=side, purpose=kw.pop("purpose", "entry"),  # type: ignore[arg-type]
        quantity=qty, price=price, fee=0.1, position_id=pid, ts=kw.pop("ts", 0), **kw,
    )  # fmt: skip


async def test_reconcile_books_how_a_vanished_position_closed(
    harness: StateHarness, sim: SimHandle, raw: Any
) -> None:
    """Our exit filled (reason as asked), its stop triggered (reason stop), or someone
    closed it on the exchange (reason fault, at the fills' average price and fees)."""
    h = harness
    fee_rate = h.rec.ctx.settings.fee_rate
    by_exit, by_stop, by_hand = (f"{s}|5m|1699999700000|{side}" for s, side in
                                 ((SOL, "long"), (ETH, "short"), (BTC, "long")))  # fmt: skip
    await raw.create_order(SOL, "market", "buy", 2.0)
    await raw.create_order(ETH, "market", "sell", 1.0)
    await raw.create_order(BTC, "market", "buy", 0.01)
    stop_cid = stop_client_id(by_stop)
    await stop_by_hand(raw, ETH, "buy", 1.0, 3060.0, stop_cid)
    for i, ev in enumerate([
        fill_event(by_exit, SOL, "buy", 2.0, 150.0),
        fill_event(by_stop, ETH, "sell", 1.0, 3000.0),
        fill_event(by_stop, ETH, "buy", 1.0, 3060.0, event="stop_placed", purpose="stop",
                   cid=stop_cid),
        fill_event(by_hand, BTC, "buy", 0.01, 60000.0, ts=await h.rec.client.server_time()),
    ]):  # fmt: skip
        await h.state.on_event(ev, f"{i + 1}-0")
    raw_pos = await h.redis.hget(keys.BOOK_POSITIONS, by_exit)
    assert raw_pos is not None
    asked = BookPosition.load(raw_pos).model_copy(update={"exit_requested": "trail"})
    await h.redis.hset(keys.BOOK_POSITIONS, by_exit, asked.dump())

    sim.set_path("SOLUSDT", [153.0])
    sim.set_path("ETHUSDT", [3100.0])  # through the stop at 3060
    sim.set_path("BTCUSDT", [61000.0])
    sim.step(1)
    exit_order = await raw.create_order(
        SOL, "market", "sell", 2.0, None,
        {"clientOrderId": exit_client_id(by_exit), "reduceOnly": True},
    )  # fmt: skip
    await raw.create_order(BTC, "market", "sell", 0.004, None, {"reduceOnly": True})
    sim.set_path("BTCUSDT", [61500.0])
    sim.step(1)
    await raw.create_order(BTC, "market", "sell", 0.006, None, {"reduceOnly": True})
    hand_fills: Any = [t for t in await raw.fetch_my_trades(BTC) if t["side"] == "sell"]
    assert not sim.account.open_positions()

    await h.rec.run_once()
    assert await book.read_positions(h.redis) == {}
    trades = {t.position_id: t for t in await book.read_all_trades(h.redis)}
    exited = trades[by_exit]
    assert (exited.reason, exited.exit_price) == ("trail", exit_order["average"])
    assert exited.exit_time == exit_order["timestamp"]
    assert exited.fees == pytest.approx(0.1 + 2.0 * exit_order["average"] * fee_rate)
    stopped = trades[by_stop]
    assert (stopped.reason, stopped.exit_price) == ("stop", 3060.0)
    assert stopped.fees == pytest.approx(0.1 + 3060.0 * fee_rate)
    assert stopped.pnl == pytest.approx(3000.0 - 3060.0 - stopped.fees)
    by_hand_trade = trades[by_hand]
    assert by_hand_trade.reason == "fault"
    assert by_hand_trade.exit_price == pytest.approx((0.004 * 61000.0 + 0.006 * 61500.0) / 0.01)
    assert by_hand_trade.exit_time == hand_fills[-1]["timestamp"]
    assert by_hand_trade.fees == pytest.approx(0.1 + sum(t["fee"]["cost"] for t in hand_fills))


async def test_reconcile_adopts_positions_with_their_own_open_stops_and_corrects_sizes(
    harness: StateHarness, raw: Any
) -> None:
    h = harness
    await raw.create_order(SOL, "market", "buy", 3.0)  # the book says 2 (below)
    await raw.create_order(BTC, "market", "sell", 0.01)
    await raw.create_order(ETH, "market", "sell", 1.0)
    own_stop = stop_client_id(PID)
    for symbol, side, qty, trigger, cid in (
        (SOL, "sell", 3.0, 147.0, own_stop),
        (BTC, "buy", 0.01, 62000.0, "by-hand-btc"),  # a buy stop of another symbol first
        (ETH, "buy", 1.0, 3100.0, "by-hand-eth"),
    ):
        await stop_by_hand(raw, symbol, side, qty, trigger, cid)
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0, ts=0), "1-0")
    await h.state.on_event(order_event("stop_placed", "stop", "sell", 147.0, cid=own_stop), "2-0")
    before = {k: gauge("tradebot_reconcile_corrections_total", kind=k) or 0
              for k in ("adopted", "quantity")}  # fmt: skip

    await h.rec.run_once()
    positions = {p.symbol: p for p in (await book.read_positions(h.redis)).values()}
    assert positions[SOL].quantity == 3.0  # corrected to the exchange's size
    assert (positions[SOL].position_id, positions[SOL].stop_client_order_id) == (PID, own_stop)
    for symbol, trigger, cid in ((BTC, 62000.0, "by-hand-btc"), (ETH, 3100.0, "by-hand-eth")):
        adopted = positions[symbol]
        assert (adopted.side, adopted.adopted, adopted.stop_seq) == ("short", True, 0)
        assert (adopted.stop_price, adopted.stop_client_order_id) == (trigger, cid)
    assert not [c for c in await h.stream(keys.STREAM_SIGNALS) if isinstance(c, StopCommand)]
    assert gauge("tradebot_positions_without_stop") == 0
    assert gauge("tradebot_reconcile_corrections_total", kind="adopted") == before["adopted"] + 2
    assert gauge("tradebot_reconcile_corrections_total", kind="quantity") == before["quantity"] + 1
    events = [e for e in await h.stream(keys.STREAM_EVENTS) if e.event == "adopted"]
    assert sorted(e.symbol for e in events) == [BTC, ETH]


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


async def test_reconcile_leaves_a_protected_position_alone(harness: StateHarness, raw: Any) -> None:
    h = harness
    await raw.create_order(SOL, "market", "buy", 2.0)
    stop_cid = stop_client_id(PID)
    await stop_by_hand(raw, SOL, "sell", 2.0, 147.0, stop_cid)
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


async def test_the_book_and_account_gauges_follow_positions_and_the_exchange(
    harness: StateHarness, raw: Any
) -> None:
    h = harness
    realized_before = await book.read_all_trades(h.redis)
    assert realized_before == []  # a fresh server: the realised PnL is this test's trades only
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0), "1-0")
    assert gauge("tradebot_positions_open") == 1
    assert gauge("tradebot_position_notional", symbol=SOL, side="long") == pytest.approx(300.0)
    exit_fill = order_event("filled", "exit", "sell", 153.0, reason="trail", ts=9_000)
    await h.state.on_event(exit_fill, "2-0")
    assert gauge("tradebot_positions_open") == 0
    assert gauge("tradebot_position_notional", symbol=SOL, side="long") is None  # removed
    assert gauge("tradebot_realized_pnl") == pytest.approx(2 * 3.0 - 0.3)

    await raw.create_order(SOL, "market", "buy", 2.0)  # an open position moves equity
    runs = gauge("tradebot_reconcile_runs_total", outcome="ok") or 0
    await h.rec.run_once()
    assert gauge("tradebot_reconcile_runs_total", outcome="ok") == runs + 1
    balance = await raw.fetch_balance()
    account = await book.read_account(h.redis)
    assert account is not None
    assert account.wallet == pytest.approx(float(balance["info"]["totalWalletBalance"]))
    assert gauge("tradebot_equity") == pytest.approx(account.equity)
    assert gauge("tradebot_unrealized_pnl") == pytest.approx(account.unrealized_pnl)
    assert account.equity == pytest.approx(account.wallet + account.unrealized_pnl)
