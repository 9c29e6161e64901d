"""The executor against the simulator (real ccxt) and a real Redis: every order flow.

Each test drives the Executor's flows directly, as its consumer and loops would, and
checks the simulator's account (the exchange's truth), the events and the journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.exchange_sim import engine
from services.executor import orders as o
from services.executor.risk import EntryContext
from services.executor.service import position_stops
from services.signals.rules import StrategyParams
from services.state import fold
from shared import keys
from shared.book import BookPosition
from shared.bus import ensure_group
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id
from shared.schemas import (
    EntrySignal,
    ExitReason,
    ExitSignal,
    OrderEvent,
    PriceTick,
    StopCommand,
    exit_signal_id,
    stop_command_id,
)
from tests.fixtures.metrics import sample
from tests.integration.bus.helpers import eventually
from tests.integration.executor.conftest import ETH, SOL, Harness, MakeHarness

BTC = "BTC/USDT:USDT"

STOP_FILLED = {"type": "stop", "outcome": "filled"}


async def book_from_events(h: Harness) -> None:
    """Fold the executor's events into the book as state would (open + stop)."""
    params = StrategyParams.from_settings(h.executor.s)
    for ev in await h.events():
        if isinstance(ev, OrderEvent) and ev.event == "filled" and ev.purpose == "entry":
            pos = fold.open_from_fill(ev, params)
            await h.redis.hset(keys.BOOK_POSITIONS, pos.position_id, pos.dump())
        if isinstance(ev, OrderEvent) and ev.event == "stop_placed":
            raw = await h.redis.hget(keys.BOOK_POSITIONS, ev.position_id or "")
            assert raw is not None
            from shared.book import BookPosition

            pos = fold.with_stop(BookPosition.load(raw), ev)
            await h.redis.hset(keys.BOOK_POSITIONS, pos.position_id, pos.dump())


async def entered_long(h: Harness) -> EntrySignal:
    """Enter a SOL long through the executor and book it as state would; return its signal."""
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "long")
    await h.executor.enter(sig, await h.now())
    await book_from_events(h)
    return sig


async def exit_of(
    h: Harness, sig: EntrySignal, reason: ExitReason, price: float, best: float
) -> ExitSignal:
    """Return state's exit signal for the long ``sig`` (reason, price and best price)."""
    return ExitSignal(
        id=exit_signal_id(sig.id, reason), position_id=sig.id, symbol=SOL, side="long",
        reason=reason, price=price, best_price=best, ts=await h.now(),
    )  # fmt: skip


async def queued(h: Harness) -> bool:
    """Return whether an entry waits for its close's slot order."""
    return bool(await h.redis.zcard(keys.ENTRY_BATCHES))


async def test_entry_fills_then_its_stop_is_placed(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "long")
    await h.executor.enter(sig, await h.now())

    acct = h.sim.account
    pos = acct.positions["SOLUSDT"]
    assert pos.amount > 0
    [stop] = list(acct.algo_orders.values())
    assert (stop.status, stop.side, stop.reduce_only) == ("NEW", "SELL", True)
    assert stop.client_algo_id == stop_client_id(sig.id)
    assert stop.trigger_price == pytest.approx(pos.entry_price * 0.98, abs=0.001)
    kinds = [(e.event, e.purpose) for e in await h.events()]
    assert kinds == [("submitted", "entry"), ("filled", "entry"), ("stop_placed", "stop")]
    assert await h.redis.scard(keys.OPEN_INTENTS) == 0
    assert await h.executor.journal.settled(sig.id) == "filled"


async def test_the_same_signal_twice_gives_one_order(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "short")
    await h.executor.enter(sig, await h.now())
    await h.executor.enter(sig, await h.now())
    await h.executor.queue_entry(sig)  # a redelivery after it was settled
    orders = [
        x for x in h.sim.account.orders.values() if x.client_order_id == entry_client_id(sig.id)
    ]
    assert len(orders) == 1
    assert await h.redis.zcard(keys.ENTRY_BATCHES) == 0


async def test_unknown_symbol_is_refused_with_a_logged_reason(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    await h.set_universe("FOO/USDT:USDT")
    sig = await h.signal("FOO/USDT:USDT", price=1.0)
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.enter(sig, await h.now())
    assert "Entry refused: LONG FOO/USDT:USDT (unknown_symbol" in caplog.text
    assert h.sim.account.orders == {}
    assert await h.executor.journal.settled(sig.id) == "refused:unknown_symbol"


async def test_stale_halted_and_outside_universe_are_refused(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.set_universe(ETH)
    sig = await h.signal(SOL)
    await h.executor.enter(sig, await h.now())
    assert await h.executor.journal.settled(sig.id) == "refused:not_in_universe"
    await h.set_universe(SOL)
    await h.redis.set(keys.HALT, b'{"reason":"test"}')
    sig2 = await h.signal(SOL, "short")
    await h.executor.enter(sig2, await h.now())
    assert await h.executor.journal.settled(sig2.id) == "refused:halted"
    await h.redis.delete(keys.HALT)
    h.sim.step(5)  # 375 s later: the candle closed more than one timeframe ago
    sig3 = await h.signal(SOL)
    h.sim.step(5)
    await h.executor.enter(sig3, await h.now())
    assert await h.executor.journal.settled(sig3.id) == "refused:stale"
    assert h.sim.account.orders == {}


async def test_slots_go_by_vol_ratio_within_one_close(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor(max_positions=1)
    await h.set_universe(SOL, ETH)
    low, high = await h.signal(SOL, vr=2.0), await h.signal(ETH, vr=3.0)
    await h.executor.handle(low, "1-0")
    await h.executor.handle(high, "2-0")
    [(close_ms, _)] = await h.executor.journal.batches()
    await h.executor.allot(close_ms)
    assert set(h.sim.account.open_positions()) == {"ETHUSDT"}
    assert await h.executor.journal.settled(low.id) == "refused:no_free_slot"
    assert await h.redis.zcard(keys.ENTRY_BATCHES) == 0


async def test_a_close_waits_for_its_evaluations_then_for_the_deadline(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor(entry_wait_ms=60_000)
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    await h.executor.handle(sig, "1-0")
    [(close_ms, arrived)] = await h.executor.journal.batches()
    await h.redis.set(keys.close_expected_key(close_ms), 2)
    await h.redis.sadd(keys.close_evaluated_key(close_ms), "SOL/USDT:USDT")
    assert not await h.executor.close_ready(close_ms, arrived)  # 1 of 2 evaluated
    with caplog.at_level(logging.WARNING, logger="executor"):
        assert await h.executor.close_ready(close_ms, arrived - 60_000)  # the deadline passed
    assert "allotting after 60000 ms (1/2 candles evaluated)" in caplog.text
    await h.redis.sadd(keys.close_evaluated_key(close_ms), "ETH/USDT:USDT")
    assert not await h.executor.close_ready(close_ms, arrived)  # state not at the close yet
    assert await h.executor.close_ready(close_ms, arrived - 60_000)  # the deadline passed

    await h.redis.set(keys.STATE_TICK_MS, close_ms - 1)
    assert not await h.executor.close_ready(close_ms, arrived)  # state one ms short
    await h.redis.set(keys.STATE_TICK_MS, close_ms)
    assert not await h.executor.close_ready(close_ms, arrived)  # no stream read by anyone yet
    await ensure_group(h.redis, keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR)
    await ensure_group(h.redis, keys.STREAM_EVENTS, "another-reader")
    assert not await h.executor.close_ready(close_ms, arrived)  # state's group not there yet
    await ensure_group(h.redis, keys.STREAM_EVENTS, keys.GROUP_STATE)
    assert await h.executor.close_ready(close_ms, arrived)  # all evaluated, nothing in flight
    for stream, group in ((keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR),
                          (keys.STREAM_EVENTS, keys.GROUP_STATE)):  # fmt: skip
        await h.redis.xadd(stream, {"d": "x"})
        assert not await h.executor.close_ready(close_ms, arrived)  # unread: lag
        read: Any = await h.redis.xreadgroup(group, "c", {stream: ">"})
        [[_, [(entry_id, _)]]] = read
        assert not await h.executor.close_ready(close_ms, arrived)  # read, not acked
        await h.redis.xack(stream, group, entry_id)
        assert await h.executor.close_ready(close_ms, arrived)
    await h.redis.set(keys.close_expected_key(close_ms), 3)
    assert not await h.executor.close_ready(close_ms, arrived)  # 2 of 3 evaluated


async def test_a_pending_entry_is_dropped_once_its_position_is_booked_or_closed(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    journal = h.executor.journal
    await h.redis.hset(keys.PENDING_ENTRIES, mapping={SOL: "pid-closed", ETH: "pid-in-flight"})
    await h.redis.hset(keys.BOOK_TRADES, "pid-closed", "{}")
    context = await h.executor.entry_context(SOL, await h.now())
    assert await journal.pending_entries() == {ETH: "pid-in-flight"}
    assert context.occupied == {ETH}
    await journal.drop_pending(ETH, "pid-older")  # not the entry in flight now: kept
    assert await journal.pending_entries() == {ETH: "pid-in-flight"}
    await journal.drop_pending(ETH, "pid-in-flight")
    assert await journal.pending_entries() == {}


async def test_exit_closes_at_market_then_cancels_the_stop(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    exit_sig = await exit_of(h, sig, "trail", 150.0, 155.0)
    await h.executor.handle(exit_sig, "3-0")
    acct = h.sim.account
    assert "SOLUSDT" not in acct.open_positions()
    [stop] = list(acct.algo_orders.values())
    assert stop.status == "CANCELED"
    tail = [(e.event, e.purpose, e.reason) for e in await h.events()][-3:]
    assert tail == [("submitted", "exit", "trail"), ("filled", "exit", "trail"),
                    ("canceled", "stop", None)]  # fmt: skip
    _, filled, canceled = (await h.events())[-3:]
    [order] = [x for x in acct.orders.values() if x.client_order_id == exit_client_id(sig.id)]
    entry_fill = next(e for e in await h.events() if e.event == "filled" and e.purpose == "entry")
    assert (filled.position_id, filled.side, filled.exchange_order_id) == (
        sig.id,
        "sell",
        str(order.order_id),
    )
    assert (filled.quantity, filled.price) == (entry_fill.quantity, order.avg_price)
    assert filled.fee == pytest.approx(filled.quantity * filled.price * h.executor.s.fee_rate)
    assert (canceled.position_id, canceled.client_order_id) == (sig.id, stop_client_id(sig.id))
    assert await h.redis.get(keys.signal_done_key(exit_client_id(sig.id))) == b"filled"
    assert not await h.redis.sismember(keys.OPEN_INTENTS, exit_client_id(sig.id))
    await h.executor.handle(exit_sig, "3-0")  # redelivered: nothing more is sent
    exits = [x for x in acct.orders.values() if x.client_order_id == exit_client_id(sig.id)]
    assert len(exits) == 1


async def test_an_exit_refused_while_the_stop_is_still_open_is_recorded_rejected(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "sell", h.sim.account.position("SOLUSDT").amount,
                           None, {"reduceOnly": True})  # closed by hand  # fmt: skip
    exit_sig = await exit_of(h, sig, "trail", 150.0, 155.0)
    await h.executor.handle(exit_sig, "3-0")
    last = (await h.events())[-1]
    assert (last.event, last.purpose, last.position_id) == ("rejected", "exit", sig.id)
    assert not [e for e in await h.events() if e.event == "stop_filled"]
    assert await h.redis.get(keys.signal_done_key(exit_client_id(sig.id))) is None
    assert not await h.redis.sismember(keys.OPEN_INTENTS, exit_client_id(sig.id))


async def test_an_exit_refused_because_the_stop_filled_first_reports_the_stop_fill(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    h.sim.set_path("SOLUSDT", [140.0])
    h.sim.step(1)  # the stop at 147 fills: no position is left to exit
    exit_sig = await exit_of(h, sig, "trail", 150.0, 155.0)
    await h.executor.handle(exit_sig, "3-0")
    stop_filled, rejected = (await h.events())[-2:]  # the fill is published first
    assert (rejected.event, rejected.purpose, rejected.position_id) == ("rejected", "exit", sig.id)
    assert "ReduceOnly" in (rejected.error or "")
    assert (stop_filled.event, stop_filled.position_id) == ("stop_filled", sig.id)
    assert stop_filled.price == pytest.approx(147.0)
    exit_cid = exit_client_id(sig.id)
    assert await h.redis.get(keys.signal_done_key(exit_cid)) == b"stop"
    assert not await h.redis.sismember(keys.OPEN_INTENTS, exit_cid)


async def test_a_stop_the_exchange_refuses_closes_the_position(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "long")
    await h.executor.enter(sig, await h.now())
    pos = h.sim.account.positions["SOLUSDT"]
    # A repair asking for a sell stop above the price: it would trigger at once (-2021).
    await h.executor.protect(sig.id, SOL, "long", pos.amount, 200.0, seq=1)
    assert "SOLUSDT" not in h.sim.account.open_positions()
    closing = [e for e in await h.events() if e.purpose == "exit" and e.event == "filled"]
    assert [e.reason for e in closing] == ["fault"]


async def test_a_stop_fill_is_confirmed_from_the_exchange(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    h.sim.set_path("SOLUSDT", [140.0])
    h.sim.step(1)  # through the stop at 147: it fills at its trigger price
    stop_sig = await exit_of(h, sig, "stop", 147.0, 150.0)
    before = REGISTRY.get_sample_value("tradebot_orders_total", STOP_FILLED) or 0
    await h.executor.handle(stop_sig, "4-0")
    [filled] = [e for e in await h.events() if e.event == "stop_filled"]
    assert filled.price == pytest.approx(147.0)
    assert (filled.reason, filled.position_id) == ("stop", sig.id)
    [algo] = h.sim.account.algo_orders.values()
    fill = h.sim.account.orders[algo.actual_order_id]
    assert (filled.side, filled.exchange_order_id) == ("sell", str(algo.actual_order_id))
    assert (filled.client_order_id, filled.quantity) == (stop_client_id(sig.id), fill.executed_qty)
    assert filled.fee == pytest.approx(filled.quantity * 147.0 * h.executor.s.fee_rate)
    assert filled.ts == fill.time
    assert REGISTRY.get_sample_value("tradebot_orders_total", STOP_FILLED) == before + 1


async def test_resume_abandons_an_entry_never_sent_and_finishes_one_that_filled(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    never = await h.signal(SOL)
    sent = await h.signal(ETH, "short")
    now = await h.now()
    for sig in (never, sent):
        intent = o.entry_intent(sig.id, sig.symbol, sig.side, 1.0, now)
        await h.executor.journal.open_intent(intent, pending_symbol=True)
    # The crashed executor had sent the ETH entry: it is on the exchange, no stop yet.
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(ETH, "market", "sell", 1.0, None,
                           {"clientOrderId": entry_client_id(sent.id)})  # fmt: skip
    await h.executor.resume()
    assert await h.executor.journal.settled(never.id) == "abandoned"
    assert await h.executor.journal.settled(sent.id) == "filled"
    [abandoned] = [e for e in await h.events() if e.event == "rejected"]
    assert (abandoned.position_id, abandoned.client_order_id) == (
        never.id,
        entry_client_id(never.id),
    )
    assert abandoned.error == "not on the exchange after a restart or unclear send"
    assert SOL not in await h.executor.journal.pending_entries()  # its slot is free again
    [stop] = list(h.sim.account.algo_orders.values())
    assert (stop.symbol, stop.side, stop.status) == ("ETHUSDT", "BUY", "NEW")
    assert await h.redis.scard(keys.OPEN_INTENTS) == 0
    assert len(h.sim.account.orders) == 1  # nothing was sent again


async def test_resume_sends_a_stop_and_an_exit_the_crashed_executor_had_only_written(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    long_, short = await h.signal(SOL, "long"), await h.signal(ETH, "short")
    for sig in (long_, short):
        await h.executor.enter(sig, await h.now())
    await book_from_events(h)
    acct = h.sim.account
    sol_qty, eth_qty = acct.position("SOLUSDT").amount, -acct.position("ETHUSDT").amount
    raw_pos = await h.redis.hget(keys.BOOK_POSITIONS, short.id)
    assert raw_pos is not None
    asked = BookPosition.load(raw_pos).model_copy(update={"exit_requested": "trail"})
    await h.redis.hset(keys.BOOK_POSITIONS, short.id, asked.dump())
    now = await h.now()
    # Written, then the crash: a repaired stop #1 for the long, the exit of the short.
    await h.executor.journal.open_intent(
        o.stop_intent(long_.id, SOL, "long", sol_qty, 146.0, 1, now)
    )
    exit_id = exit_signal_id(short.id, "trail")
    await h.executor.journal.open_intent(
        o.exit_intent(short.id, ETH, "short", eth_qty, exit_id, now)
    )

    await h.executor.resume()
    assert await h.redis.scard(keys.OPEN_INTENTS) == 0
    repaired = next(a for a in acct.algo_orders.values()
                    if a.client_algo_id == stop_client_id(long_.id, 1))  # fmt: skip
    assert (repaired.symbol, repaired.side, repaired.trigger_price, repaired.status) == (
        "SOLUSDT",
        "SELL",
        146.0,
        "NEW",
    )
    assert "ETHUSDT" not in acct.open_positions()
    events = await h.events()
    placed = [e for e in events if e.event == "stop_placed"
              and e.client_order_id == stop_client_id(long_.id, 1)]  # fmt: skip
    assert [(e.position_id, e.side) for e in placed] == [(long_.id, "sell")]
    [exited] = [e for e in events if e.event == "filled" and e.purpose == "exit"]
    assert (exited.position_id, exited.reason, exited.side) == (short.id, "trail", "buy")
    eth_stops = [a for a in acct.algo_orders.values() if a.symbol == "ETHUSDT"]
    assert [a.status for a in eth_stops] == ["CANCELED"]


async def test_resume_leaves_alone_an_intent_in_flight_worked_on_lately_or_while_stopping(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    ex = h.executor
    ex.client.tuning = dataclasses.replace(ex.client.tuning, settle_slack_ms=5_000)
    now = await h.now()
    sigs = [await h.signal(symbol) for symbol in (SOL, ETH, BTC)]
    busy, lately, idle = [o.entry_intent(s.id, s.symbol, "long", 1.0, now + i)
                          for i, s in enumerate(sigs)]  # fmt: skip
    for intent in (busy, lately, idle):  # written, never sent
        await ex.journal.open_intent(intent)

    async def settled() -> list[str | None]:
        return [await ex.journal.settled(s.id) for s in sigs]

    ex.busy.add(busy.client_order_id)  # another flow is sending it right now
    # Worked on a recvWindow ago: a send may still wait inside the exchange for the slack.
    ex.touched[lately.client_order_id] = time.monotonic() - ex.client.tuning.recv_window_ms / 1000
    await ex.resume()
    assert await settled() == [None, None, "abandoned"]
    ex.busy.discard(busy.client_order_id)
    h.sim.set_faults({"http5xx": 1.0})
    await ex.resume()  # its lookup fails: left open, and worked on just now
    h.sim.set_faults({})
    await ex.resume()
    assert await settled() == [None, None, "abandoned"]
    ex.touched.clear()
    ex.ctx.stop.set()  # stopping, as when the lease is lost: nothing is touched
    await ex.resume()
    assert await settled() == [None, None, "abandoned"]
    ex.ctx.stop.clear()
    await ex.resume()
    assert await settled() == ["abandoned"] * 3


async def test_resume_closes_a_long_whose_written_stop_the_exchange_refuses(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    qty = h.sim.account.position("SOLUSDT").amount
    # Written, then the crash; the price is below it now, so the exchange refuses it (-2021).
    await h.executor.journal.open_intent(
        o.stop_intent(sig.id, SOL, "long", qty, 200.0, 1, await h.now())
    )
    await h.executor.resume()
    assert "SOLUSDT" not in h.sim.account.open_positions()
    [exited] = [e for e in await h.events() if e.event == "filled" and e.purpose == "exit"]
    assert (exited.side, exited.reason, exited.quantity) == ("sell", "fault", qty)


async def test_resume_exits_with_reason_fault_and_cancels_every_stop_of_the_position(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    long_, short = await h.signal(SOL, "long"), await h.signal(ETH, "short")
    for sig in (long_, short):
        await h.executor.enter(sig, await h.now())
    acct = h.sim.account
    sol_qty, eth_qty = acct.position("SOLUSDT").amount, -acct.position("ETHUSDT").amount
    # A repair of each while #0 is open (a stop command of state, then #0 found again).
    await h.executor.protect(long_.id, SOL, "long", sol_qty, 140.0, seq=1)
    await h.executor.protect(short.id, ETH, "short", eth_qty, 3100.0, seq=1)
    await book_from_events(h)
    raw_short = await h.redis.hget(keys.BOOK_POSITIONS, short.id)
    assert raw_short is not None
    short_stops = position_stops(short.id, BookPosition.load(raw_short))
    now = await h.now()
    # Written, then the crash: exits nobody asked a reason for in the book. The long's was
    # written by an executor before v2 (no stops named); the short's names its stops, and its
    # fill reached state, which closed it in the book.
    await h.executor.journal.open_intent(
        o.exit_intent(long_.id, SOL, "long", sol_qty, exit_signal_id(long_.id, "fault"), now)
    )
    await h.executor.journal.open_intent(
        o.exit_intent(
            short.id, ETH, "short", eth_qty, exit_signal_id(short.id, "fault"), now, short_stops
        )
    )
    await h.redis.hdel(keys.BOOK_POSITIONS, short.id)
    await h.executor.resume()
    assert acct.open_positions() == {}
    exits = [e for e in await h.events() if e.event == "filled" and e.purpose == "exit"]
    assert sorted((e.symbol, e.side, e.reason) for e in exits) == [
        (ETH, "buy", "fault"),
        (SOL, "sell", "fault"),
    ]
    stops = sorted((a.client_algo_id, a.status) for a in acct.algo_orders.values())
    assert stops == sorted((stop_client_id(sig.id, seq), "CANCELED")
                           for sig in (long_, short) for seq in (0, 1))  # fmt: skip


async def test_resume_of_an_exit_the_stop_beat_reports_the_stop_fill(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    qty = h.sim.account.position("SOLUSDT").amount
    await h.executor.journal.open_intent(
        o.exit_intent(sig.id, SOL, "long", qty, exit_signal_id(sig.id, "trail"), await h.now())
    )  # written, then the crash; meanwhile the stop at 147 fills
    h.sim.set_path("SOLUSDT", [140.0])
    h.sim.step(1)
    await h.executor.resume()
    [stop_filled] = [e for e in await h.events() if e.event == "stop_filled"]
    assert (stop_filled.side, stop_filled.quantity) == ("sell", qty)
    assert stop_filled.position_id == sig.id
    assert await h.redis.get(keys.signal_done_key(exit_client_id(sig.id))) == b"stop"


async def test_a_stop_command_places_a_repair_only_when_no_earlier_stop_is_open(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    acct = h.sim.account
    qty = acct.position("SOLUSDT").amount

    def command(seq: int, pid: str = sig.id) -> StopCommand:
        return StopCommand(
            id=stop_command_id(pid, seq), position_id=pid, symbol=SOL, side="long",
            quantity=qty, stop_price=145.5, seq=seq, reason="repair", ts=0,
        )  # fmt: skip

    await h.executor.handle(command(1), "5-0")  # stop #0 is still open: nothing more
    await h.executor.handle(command(1, "SOL/USDT:USDT|5m|1|long"), "6-0")  # not in the book
    assert [a.client_algo_id for a in acct.algo_orders.values()] == [stop_client_id(sig.id)]
    [first] = acct.algo_orders.values()
    engine.cancel_algo(acct, first, 0)  # then someone cancels it on the exchange
    await h.executor.handle(command(1), "7-0")
    [repair] = [a for a in acct.algo_orders.values() if a.status == "NEW"]
    assert (repair.client_algo_id, repair.side, repair.trigger_price) == (
        stop_client_id(sig.id, 1),
        "SELL",
        145.5,
    )
    assert repair.quantity == qty
    placed = [e for e in await h.events() if e.event == "stop_placed"]
    assert [(e.client_order_id, e.position_id) for e in placed][-1] == (
        stop_client_id(sig.id, 1),
        sig.id,
    )
    await h.executor.handle(command(2), "8-0")  # repair #1 is open (#0 is not): nothing more
    assert [a.client_algo_id for a in acct.algo_orders.values() if a.status == "NEW"] == [
        stop_client_id(sig.id, 1)
    ]


async def test_bad_messages_on_the_signals_stream_go_to_the_dlq(
    make_executor: MakeHarness,
) -> None:
    from shared.bus import Consumer, publish
    from shared.schemas import Message

    h: Harness = await make_executor()
    await h.set_universe(SOL)
    consumer: Consumer[Message] = Consumer(
        h.redis, keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR, "t", h.executor.handle, Message,
        block_ms=100,
    )  # fmt: skip
    await h.redis.xadd(keys.STREAM_SIGNALS, {b"d": b'{"kind":"entry","v":1,"id":"x"}'})
    sig = await h.signal(SOL)
    await publish(h.redis, keys.STREAM_SIGNALS, sig)
    task = asyncio.create_task(consumer.run(h.executor.ctx.stop))
    try:
        await eventually(lambda: queued(h))
    finally:
        h.executor.ctx.stop.set()
        await task
    assert await h.redis.xlen(keys.STREAM_DLQ) == 1


async def test_an_exit_racing_the_entrys_stop_still_leaves_no_stop_behind(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    [first] = list(h.sim.account.algo_orders.values())
    # The position's stop #1 is being placed right now (as right after an entry fill):
    repair = stop_client_id(sig.id, 1)
    h.executor.busy.add(repair)
    exit_sig = await exit_of(h, sig, "manual", 150.0, 150.0)
    raw = await h.redis.hget(keys.BOOK_POSITIONS, sig.id)
    assert raw is not None
    from shared.book import BookPosition

    pos = BookPosition.load(raw).model_copy(update={"stop_seq": 1})
    await h.redis.hset(keys.BOOK_POSITIONS, sig.id, pos.dump())
    closing = asyncio.create_task(h.executor.handle(exit_sig, "5-0"))
    ccxt_client = h.sim.make_ccxt()
    await ccxt_client.load_markets()
    await eventually(lambda: "SOLUSDT" not in h.sim.account.open_positions())  # exit filled
    assert not closing.done()
    await ccxt_client.create_order(
        SOL, "market", "sell", pos.quantity, None,
        {"clientOrderId": repair, "triggerPrice": 140.0, "reduceOnly": True},
    )  # fmt: skip
    h.executor.busy.discard(repair)
    h.executor.work_done.set()
    await asyncio.wait_for(closing, 10)
    statuses = {a.client_algo_id: a.status for a in h.sim.account.algo_orders.values()}
    assert statuses == {first.client_algo_id: "CANCELED", repair: "CANCELED"}


async def test_a_refused_first_stop_closes_at_once(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 2.0)  # filled, stop not placed yet
    # A sell stop above the price is refused (-2021): the position is closed by this flow,
    # which must not wait for the very stop it is placing.
    await asyncio.wait_for(h.executor.protect("p-first", SOL, "long", 2.0, 200.0, seq=0), 10)
    assert "SOLUSDT" not in h.sim.account.open_positions()


async def test_a_stop_whose_cancel_failed_is_cancelled_by_the_resume_loop(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "long")
    await h.executor.enter(sig, await h.now())
    [stop] = list(h.sim.account.algo_orders.values())
    exit_intent = o.exit_intent(sig.id, SOL, "long", 1.0, sig.id, await h.now())
    h.sim.set_faults({"http5xx": 1.0})  # the exchange answers nothing but 5xx for a while
    assert await h.executor.cancel_stop(exit_intent, sig.id, stop.client_algo_id) is None
    h.sim.set_faults({})
    assert stop.status == "NEW"
    assert await h.executor.journal.stale_stops() == {stop.client_algo_id: SOL}
    await h.executor.resume()
    assert stop.status == "CANCELED"
    assert await h.executor.journal.stale_stops() == {}


async def test_a_bug_while_deciding_an_entry_refuses_it_and_trading_goes_on(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    broken, fine = await h.signal(SOL, vr=3.0), await h.signal(ETH, vr=2.0)
    for i, sig in enumerate((broken, fine)):
        await h.executor.handle(sig, f"{i + 1}-0")
    [(close_ms, _)] = await h.executor.journal.batches()
    entry_context = h.executor.entry_context

    async def buggy_for_sol(symbol: str, now: int) -> EntryContext:
        if symbol == SOL:
            raise ZeroDivisionError("float division by zero")
        return await entry_context(symbol, now)

    monkeypatch.setattr(h.executor, "entry_context", buggy_for_sol)
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.allot(close_ms)  # no raise: the executor lives on
    assert await h.executor.journal.settled(broken.id) == "refused:error"
    assert f"Entry {broken.id} not decided, unexpected ZeroDivisionError" in caplog.text
    assert await h.executor.journal.settled(fine.id) == "filled"
    assert [o.symbol for o in h.sim.account.orders.values()] == ["ETHUSDT"]


async def test_leverage_the_exchange_refuses_refuses_the_entry(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    h.executor.s = h.executor.s.model_copy(update={"leverage": 500})
    await h.executor.enter(sig, await h.now())
    assert await h.executor.journal.settled(sig.id) == "refused:exchange_rejected"
    assert h.sim.account.orders == {}


async def test_an_entry_of_another_timeframe_is_refused_before_it_is_queued(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await h.signal(SOL)
    minute = sig.model_copy(
        update={"id": sig.id.replace("|5m|", "|1m|"), "timeframe": "1m"}
    )  # an id of its own timeframe, as a 1m worker would make it
    before = sample("tradebot_entries_refused_total", reason="wrong_timeframe")
    await h.executor.queue_entry(minute)
    assert await h.executor.journal.settled(minute.id) == "refused:wrong_timeframe"
    assert sample("tradebot_entries_refused_total", reason="wrong_timeframe") == before + 1
    assert not await queued(h)


async def test_the_candle_to_fill_delay_is_measured_from_the_candle_close(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    before = sample("tradebot_candle_to_order_seconds_sum")
    count = sample("tradebot_candle_to_order_seconds_count")
    sig = await entered_long(h)
    [filled] = [e for e in await h.events() if e.event == "filled"]
    close_ms = sig.candle_open_time + h.executor.s.timeframe_ms
    assert sample("tradebot_candle_to_order_seconds_count") == count + 1
    assert sample("tradebot_candle_to_order_seconds_sum") - before == pytest.approx(
        (filled.ts - close_ms) / 1000
    )


async def test_a_message_not_for_the_executor_is_left_alone(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    tick = PriceTick(symbol=SOL, price=1.0, ts=1)
    with caplog.at_level(logging.WARNING, logger="executor"):
        await h.executor.handle(tick, "5-1")
    assert "Signals: PriceTick 5-1 is not for the executor; ignored" in caplog.text
    assert (h.sim.account.orders, await h.events()) == ({}, [])


async def test_entries_sent_are_timed_from_the_publication_of_their_close(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Each entry order the exchange acknowledged is observed in
    tradebot_publish_to_order_seconds from market_data's publication of its close (wall
    clock) and logged; a close without a publication time (expired, or allotted by another
    copy) is not timed; a refused entry is not timed."""
    h: Harness = await make_executor(max_positions=1)
    await h.set_universe(SOL, ETH)
    count = sample("tradebot_publish_to_order_seconds_count")
    total = sample("tradebot_publish_to_order_seconds_sum")
    sol, eth = await h.signal(SOL, vr=3.0), await h.signal(ETH, vr=2.0)  # ETH finds no slot
    await h.executor.handle(sol, "1-0")
    await h.executor.handle(eth, "2-0")
    [(close_ms, _)] = await h.executor.journal.batches()
    published_us = time.time_ns() // 1000 - 250_000  # a quarter of a second ago
    await h.redis.set(keys.close_published_key(close_ms), published_us)
    started = time.time()
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.allot(close_ms)
    took = time.time() - started
    assert sample("tradebot_publish_to_order_seconds_count") == count + 1
    spent = sample("tradebot_publish_to_order_seconds_sum") - total
    assert 0.25 <= spent <= 0.25 + took + 0.01
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Entry sent")]
    assert re.fullmatch(rf"Entry sent: {re.escape(SOL)} \d+\.\d\d ms after its candle was "
                        rf"published \[{re.escape(sol.id)}\]", line)  # fmt: skip
    assert h.executor.published_us == {}  # forgotten once the close is decided

    unknown = o.entry_intent(eth.id, ETH, "long", 1.0, await h.now())
    h.executor.sent(unknown)  # its close's publication time is not known: not timed
    assert sample("tradebot_publish_to_order_seconds_count") == count + 1
