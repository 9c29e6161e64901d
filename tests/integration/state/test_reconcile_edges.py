"""Reconciliation at its edges, against a real Redis and the simulator over HTTP.

Each test sets up the exchange as a person would (plain ccxt orders and stops) and the book
as the executor's events leave it, runs the reconciler, and reads the book, the stop
commands it asked for and its metrics. The cases: long positions adopted (their own stop,
or a stop asked for below the entry), how many positions count as unprotected, the grace a
fresh position gets for its first stop, when a vanished position is closed and at what fill,
which of a position's stops fired, and the account read between reconciliations.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.state.reconcile import STOP_GRACE_MS
from shared import book, keys
from shared.book import BookPosition, ClosedTrade
from shared.order_ids import exit_client_id, stop_client_id
from shared.schemas import StopCommand
from tests.fixtures.metrics import sample
from tests.fixtures.sim import SimHandle
from tests.integration.executor.conftest import ETH, SOL
from tests.integration.state.test_state import (
    BTC,
    StateHarness,
    fill_event,
    harness,
    raw,
    stop_by_hand,
)

__all__ = ["harness", "raw"]  # the fixtures, used by name

XRP = "XRP/USDT:USDT"
CORRECTIONS = "tradebot_reconcile_corrections_total"


def pid_of(symbol: str, side: str) -> str:
    """Return the position id of an entry on ``symbol`` (one candle, one side)."""
    return f"{symbol}|5m|1699999700000|{side}"


async def book_entry(
    h: StateHarness, symbol: str, side: str, qty: float, price: float, ts: int, n: int
) -> str:
    """Fold the executor's entry fill of a position into the book; return its id."""
    pid = pid_of(symbol, side)
    order_side = "buy" if side == "long" else "sell"
    await h.state.on_event(fill_event(pid, symbol, order_side, qty, price, ts=ts), f"{n}-0")
    return pid


async def report_stop(
    h: StateHarness, pid: str, symbol: str, side: str, qty: float, trigger: float, n: int
) -> str:
    """Fold the executor's report that a position's first stop is placed; return its id."""
    cid = stop_client_id(pid)
    closing = "sell" if side == "long" else "buy"
    ev = fill_event(pid, symbol, closing, qty, trigger, event="stop_placed", purpose="stop",
                    cid=cid)  # fmt: skip
    await h.state.on_event(ev, f"{n}-0")
    return cid


async def edit(h: StateHarness, pid: str, **update: Any) -> None:
    """Change a booked position's record in Redis (what a later event would have done)."""
    raw_pos = await h.redis.hget(keys.BOOK_POSITIONS, pid)
    assert raw_pos is not None
    pos = BookPosition.load(raw_pos).model_copy(update=update)
    await h.redis.hset(keys.BOOK_POSITIONS, pid, pos.dump())


async def stop_commands(h: StateHarness) -> list[StopCommand]:
    return [c for c in await h.stream(keys.STREAM_SIGNALS) if isinstance(c, StopCommand)]


async def trades_by_symbol(h: StateHarness) -> dict[str, ClosedTrade]:
    return {t.symbol: t for t in await book.read_all_trades(h.redis)}


async def test_a_long_is_adopted_with_its_own_sell_stop_or_a_stop_asked_below_its_entry(
    harness: StateHarness, raw: Any
) -> None:
    """A long found only on the exchange keeps its own (sell) stop and that stop's price; a
    bare long gets a stop asked for below its entry, under the reason "adopted", so the
    executor protects it on the right side. Shorts alone would not show a stop looked up or
    priced on the wrong side: a long is what tells sell from buy."""
    h = harness
    await raw.create_order(SOL, "market", "buy", 2.0)
    await raw.create_order(ETH, "market", "buy", 1.0)
    await stop_by_hand(raw, SOL, "sell", 2.0, 147.0, "by-hand-sol")

    await h.rec.run_once()
    positions = {p.symbol: p for p in (await book.read_positions(h.redis)).values()}
    sol, eth = positions[SOL], positions[ETH]
    assert (sol.side, sol.adopted, sol.stop_price, sol.stop_client_order_id) == (
        "long", True, 147.0, "by-hand-sol"
    )  # fmt: skip
    assert (eth.side, eth.adopted, eth.stop_client_order_id) == ("long", True, None)
    assert eth.stop_price == pytest.approx(2940.0)  # 2 % below the 3000 entry
    [cmd] = await stop_commands(h)
    assert (cmd.position_id, cmd.side, cmd.quantity, cmd.seq, cmd.reason) == (
        eth.position_id, "long", 1.0, 0, "adopted"
    )  # fmt: skip
    assert cmd.stop_price == pytest.approx(2940.0)
    assert sample("tradebot_positions_without_stop") == 1


async def test_every_unprotected_position_is_counted_and_agreeing_sizes_are_left_alone(
    harness: StateHarness, raw: Any
) -> None:
    """Two positions adopted bare and two booked ones whose stop is missing make four
    positions without a stop: the gauge an operator alerts on counts them all, whatever
    order the exchange lists them in. Sizes that agree with the exchange are no correction."""
    h = harness
    await raw.create_order(BTC, "market", "sell", 0.01)
    await raw.create_order(ETH, "market", "sell", 1.0)
    await raw.create_order(SOL, "market", "buy", 2.0)
    await raw.create_order(XRP, "market", "buy", 20.0)
    sol = await book_entry(h, SOL, "long", 2.0, 150.0, 0, 1)
    xrp = await book_entry(h, XRP, "long", 20.0, 0.6, 0, 2)
    sized = sample(CORRECTIONS, kind="quantity")

    await h.rec.run_once()
    assert sample("tradebot_positions_without_stop") == 4
    assert sample(CORRECTIONS, kind="quantity") == sized
    asked = sorted((c.symbol, c.seq, c.reason) for c in await stop_commands(h))
    assert asked == [(BTC, 0, "adopted"), (ETH, 0, "adopted"),
                     (SOL, 1, "repair"), (XRP, 1, "repair")]  # fmt: skip
    positions = await book.read_positions(h.redis)
    assert (positions[sol].quantity, positions[xrp].quantity) == (2.0, 20.0)


async def test_a_fresh_position_waits_for_its_first_stop_but_a_reported_stop_gone_is_repaired(
    harness: StateHarness, raw: Any
) -> None:
    """The executor places a position's first stop just after its entry: for 30 s a position
    with no stop reported yet is left alone and not counted as unprotected. That grace ends
    at exactly 30 s, is only for a stop not yet reported (one reported and then gone from the
    exchange is repaired at once, however fresh the position) and a position being exited
    needs no new stop."""
    h = harness
    now = await h.rec.client.server_time()
    await raw.create_order(SOL, "market", "buy", 2.0)
    await raw.create_order(ETH, "market", "sell", 1.0)
    await raw.create_order(BTC, "market", "buy", 0.01)
    await raw.create_order(XRP, "market", "buy", 20.0)
    await book_entry(h, SOL, "long", 2.0, 150.0, now, 1)  # fresh, no stop reported yet
    eth = await book_entry(h, ETH, "short", 1.0, 3000.0, now, 2)
    await report_stop(h, eth, ETH, "short", 1.0, 3060.0, 3)  # reported, but not on the exchange
    btc = await book_entry(h, BTC, "long", 0.01, 60000.0, 0, 4)
    await edit(h, btc, exit_requested="trail", exit_requested_ms=now)  # its exit is on the way
    xrp = await book_entry(h, XRP, "long", 20.0, 0.6, now - STOP_GRACE_MS, 5)  # grace just over

    await h.rec.run_once()
    asked = sorted((c.position_id, c.seq, c.reason) for c in await stop_commands(h))
    assert asked == [(eth, 1, "repair"), (xrp, 1, "repair")]
    assert sample("tradebot_positions_without_stop") == 2


async def test_a_vanished_position_is_closed_only_once_older_than_five_seconds(
    harness: StateHarness,
) -> None:
    """A booked position the exchange does not list is closed only when it was opened more
    than 5 s before: a younger one may just not be listed yet. With no exit, stop or fill to
    go by, it closes at its best price at the exchange's time, charged its entry fee only,
    and the correction is counted as closed_missing."""
    h = harness
    now = await h.rec.client.server_time()
    young = await book_entry(h, SOL, "long", 2.0, 150.0, now - 5_000, 1)
    old = await book_entry(h, ETH, "short", 1.0, 3000.0, now - 5_001, 2)
    closed = sample(CORRECTIONS, kind="closed_missing")

    await h.rec.run_once()
    assert list(await book.read_positions(h.redis)) == [young]
    [trade] = await book.read_all_trades(h.redis)
    assert (trade.position_id, trade.reason, trade.exit_price) == (old, "fault", 3000.0)
    assert trade.exit_time == now
    assert trade.fees == pytest.approx(0.1)  # the entry fee: nothing charged for the exit
    assert sample(CORRECTIONS, kind="closed_missing") == closed + 1


async def test_a_small_exit_by_our_id_is_manual_and_a_short_closed_by_hand_uses_its_buy_fill(
    harness: StateHarness, sim: SimHandle, raw: Any
) -> None:
    """An exit order under our exit id that we did not ask for (someone used it by hand) is
    booked as a manual exit at its price, even when it filled a single contract. A short
    closed on the exchange by hand is booked at its buy fill, not at its entry's sell fill."""
    h = harness
    fee_rate = h.rec.ctx.settings.fee_rate
    start = await h.rec.client.server_time()
    await raw.create_order(SOL, "market", "buy", 1.0)
    await raw.create_order(ETH, "market", "sell", 1.0)
    sol = await book_entry(h, SOL, "long", 1.0, 150.0, start, 1)
    await book_entry(h, ETH, "short", 1.0, 3000.0, start, 2)
    sim.set_path("SOLUSDT", [152.0])
    sim.set_path("ETHUSDT", [2900.0])
    sim.step(1)
    exit_order = await raw.create_order(
        SOL, "market", "sell", 1.0, None,
        {"clientOrderId": exit_client_id(sol), "reduceOnly": True},
    )  # fmt: skip
    await raw.create_order(ETH, "market", "buy", 1.0, None, {"reduceOnly": True})
    [hand_fill] = [t for t in await raw.fetch_my_trades(ETH) if t["side"] == "buy"]
    sim.step(1)  # the exchange's clock moves past the fills

    await h.rec.run_once()
    trades = await trades_by_symbol(h)
    manual, by_hand = trades[SOL], trades[ETH]
    assert (manual.reason, manual.exit_price) == ("manual", 152.0)
    assert manual.exit_time == exit_order["timestamp"]
    assert manual.fees == pytest.approx(0.1 + 152.0 * fee_rate)
    assert (by_hand.reason, by_hand.exit_price) == ("fault", 2900.0)
    assert by_hand.exit_time == hand_fill["timestamp"]
    assert by_hand.fees == pytest.approx(0.1 + hand_fill["fee"]["cost"])
    assert by_hand.pnl == pytest.approx(3000.0 - 2900.0 - by_hand.fees)


async def test_the_stop_that_fired_is_found_among_every_stop_a_position_had(
    harness: StateHarness, sim: SimHandle, raw: Any
) -> None:
    """A vanished position closed by a stop is booked as a stop exit at that stop's fill,
    dated when it filled: whether the stop that fired is a repair stop the book does not
    name yet, or a stop placed by hand that an adopted position took over. A stop whose
    fill the exchange no longer returns (Binance drops old orders from lookups) falls back
    to the position's fills instead of breaking reconciliation."""
    h = harness
    fee_rate = h.rec.ctx.settings.fee_rate
    await raw.create_order(ETH, "market", "sell", 1.0)
    await stop_by_hand(raw, ETH, "buy", 1.0, 3060.0, "by-hand-eth")
    await h.rec.run_once()  # adopted, with the stop placed by hand
    [adopted] = (await book.read_positions(h.redis)).values()
    assert adopted.stop_client_order_id == "by-hand-eth"

    start = await h.rec.client.server_time()
    await raw.create_order(SOL, "market", "buy", 3.0)
    sol = await book_entry(h, SOL, "long", 3.0, 150.0, start, 1)
    await report_stop(h, sol, SOL, "long", 3.0, 147.0, 2)  # the book names stop #0 ...
    await edit(h, sol, stop_seq=1)  # ... repair #1 was asked for ...
    await stop_by_hand(raw, SOL, "sell", 3.0, 147.0, stop_client_id(sol, 1))  # ... and placed
    await raw.create_order(BTC, "market", "buy", 0.01)
    btc = await book_entry(h, BTC, "long", 0.01, 60000.0, start, 3)
    btc_stop = await report_stop(h, btc, BTC, "long", 0.01, 59000.0, 4)
    await stop_by_hand(raw, BTC, "sell", 0.01, 59000.0, btc_stop)

    sim.set_path("SOLUSDT", [146.0])
    sim.set_path("ETHUSDT", [3100.0])
    sim.set_path("BTCUSDT", [58000.0])
    sim.step(1)  # all three stops fire
    fired_at = await h.rec.client.server_time()
    [btc_algo] = [a for a in sim.account.algo_orders.values() if a.client_algo_id == btc_stop]
    assert btc_algo.actual_order_id is not None
    del sim.account.orders[btc_algo.actual_order_id]  # its fill no longer found by id
    sim.step(1)  # the exchange's clock moves past the fills

    await h.rec.run_once()
    assert await book.read_positions(h.redis) == {}
    trades = await trades_by_symbol(h)
    repaired, taken_over, forgotten = trades[SOL], trades[ETH], trades[BTC]
    assert (repaired.reason, repaired.exit_price, repaired.exit_time) == ("stop", 147.0, fired_at)
    assert repaired.fees == pytest.approx(0.1 + 147.0 * 3.0 * fee_rate)
    assert (taken_over.reason, taken_over.exit_price, taken_over.exit_time) == (
        "stop", 3060.0, fired_at
    )  # fmt: skip
    assert (forgotten.reason, forgotten.exit_price, forgotten.exit_time) == (
        "fault", 59000.0, fired_at
    )  # fmt: skip


async def test_the_account_is_read_between_reconciliations_and_an_unreachable_run_is_counted(
    harness: StateHarness, sim: SimHandle, raw: Any
) -> None:
    """The wallet and equity shown by tradebot status are read every few seconds, dated with
    the exchange's time; while the exchange answers nothing but errors, a reconciliation is
    counted as unreachable (not ok) and the account read only logs."""
    h = harness
    await raw.create_order(SOL, "market", "buy", 2.0)
    sim.set_path("SOLUSDT", [155.0])
    sim.step(1)
    await h.rec.refresh_account()
    account = await book.read_account(h.redis)
    assert account is not None
    assert account.ts == await h.rec.client.server_time()
    balance = await raw.fetch_balance()
    assert account.wallet == pytest.approx(float(balance["info"]["totalWalletBalance"]))
    assert account.unrealized_pnl == pytest.approx(2.0 * 5.0)
    assert sample("tradebot_equity") == pytest.approx(account.equity)

    ok = sample("tradebot_reconcile_runs_total", outcome="ok")
    unreachable = sample("tradebot_reconcile_runs_total", outcome="unreachable")
    sim.set_faults({"http5xx": 1.0})
    try:
        await h.rec.run_once()
        await h.rec.refresh_account()
    finally:
        sim.set_faults({})
    assert sample("tradebot_reconcile_runs_total", outcome="unreachable") == unreachable + 1
    assert sample("tradebot_reconcile_runs_total", outcome="ok") == ok


async def test_a_position_reversed_by_hand_is_closed_and_the_other_side_adopted(
    harness: StateHarness, raw: Any
) -> None:
    """The book holds a long the exchange no longer has, and the exchange a short on the
    same symbol (someone closed the long and sold more by hand, here in one 5-contract
    sell): the long is closed at that sell's price with the part of its fee that closed 2
    contracts, and the short is adopted and gets a stop. A book position that young that
    the exchange may not show it yet is left alone."""
    h = harness
    start = await h.rec.client.server_time()
    sol = await book_entry(h, SOL, "long", 2.0, 150.0, start - 6_000, 1)
    await book_entry(h, ETH, "long", 1.0, 3000.0, start, 2)  # booked just now
    await raw.create_order(SOL, "market", "sell", 5.0)
    await raw.create_order(ETH, "market", "sell", 1.0)
    [sell] = await raw.fetch_my_trades(SOL)

    await h.rec.run_once()
    [trade] = (await trades_by_symbol(h)).values()
    assert (trade.position_id, trade.reason, trade.exit_price) == (sol, "fault", sell["price"])
    assert trade.fees == pytest.approx(0.1 + sell["fee"]["cost"] * 2 / 5)
    positions = {p.symbol: p for p in (await book.read_positions(h.redis)).values()}
    short = positions[SOL]
    assert (short.side, short.quantity, short.adopted) == ("short", 5.0, True)
    assert [(c.position_id, c.side, c.quantity) for c in await stop_commands(h)] == [
        (short.position_id, "short", 5.0)
    ]
    assert positions[ETH].side == "long"  # within the grace: not judged yet


async def test_a_reversal_takes_only_the_fills_that_closed_and_waits_out_the_grace(
    harness: StateHarness, sim: SimHandle, raw: Any
) -> None:
    """A long of 2 reversed by hand in sells of 1.5, 1.5 and 0.5: the long closed at the
    first 1.5 and 0.5 of the second, its fees pro rata, dated by the last fill it took (the
    rest opened the short). A reversal is judged only past the 5 s grace, like a
    vanished position; one with no closing fill since its entry closes at its best price at
    the exchange's time."""
    h = harness
    await raw.create_order(XRP, "market", "sell", 20.0)  # before the book's entry below
    sim.step(1)
    start = await h.rec.client.server_time()
    sol = await book_entry(h, SOL, "long", 2.0, 150.0, start - 6_000, 1)
    xrp = await book_entry(h, XRP, "long", 20.0, 0.5, start - 6_000, 3)
    sim.set_path("SOLUSDT", [151.0, 149.0, 148.0])
    for qty in (1.5, 1.5, 0.5):
        sim.step(1)
        await raw.create_order(SOL, "market", "sell", qty)
    await raw.create_order(ETH, "market", "sell", 1.0)
    first, second, _ = await raw.fetch_my_trades(SOL)
    now = await h.rec.client.server_time()
    await book_entry(h, ETH, "long", 1.0, 3000.0, now - 5_000, 2)  # exactly at the grace

    await h.rec.run_once()
    trades = await trades_by_symbol(h)
    closed = trades[SOL]
    assert closed.position_id == sol
    assert closed.exit_price == pytest.approx((1.5 * first["price"] + 0.5 * second["price"]) / 2)
    assert closed.fees == pytest.approx(
        0.1 + first["fee"]["cost"] + second["fee"]["cost"] * 0.5 / 1.5
    )
    assert closed.exit_time == second["timestamp"]
    assert (trades[XRP].position_id, trades[XRP].exit_time) == (xrp, now)  # no fill after
    assert ETH not in trades  # within the grace: not judged yet
    positions = {p.symbol: p for p in (await book.read_positions(h.redis)).values()}
    assert (positions[SOL].side, positions[SOL].quantity) == ("short", 3.5)  # all it sold
    assert positions[ETH].side == "long"
