"""The executor's exits against the simulator (real ccxt) and a real Redis: every outcome.

An exit filled, refused, not sent, of unknown outcome, answered open or ended without a
fill; the stops an exit cancels and what it reports of them. The main flows are in
test_executor.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from services.exchange_sim import engine
from services.executor import orders as o
from services.executor import service
from services.signals.rules import StrategyParams
from services.state import fold
from shared import keys
from shared.book import BookPosition
from shared.exchange import Guard, OrderRequest
from shared.exchange_errors import SendRefused, TemporaryError
from shared.exchange_models import Order
from shared.order_ids import exit_client_id, stop_client_id
from shared.schemas import EntrySignal, ExitReason, ExitSignal, OrderEvent, exit_signal_id
from tests.fixtures.metrics import sample
from tests.integration.bus.helpers import eventually
from tests.integration.executor.conftest import SOL, Harness, MakeHarness

LOGGER = "executor"


def exit_orders(outcome: str) -> float:
    """Return the count of exit orders with this outcome."""
    return sample("tradebot_orders_total", type="exit", outcome=outcome)


async def events_of(h: Harness, event: str, purpose: str = "exit") -> list[OrderEvent]:
    return [e for e in await h.events() if e.event == event and e.purpose == purpose]


async def entered_long(h: Harness) -> EntrySignal:
    """Enter a SOL long through the executor and book it (with its stop) as state would."""
    await h.set_universe(SOL)
    sig = await h.signal(SOL, "long")
    await h.executor.enter(sig, await h.now())
    [filled, placed] = [e for e in await h.events() if e.event in ("filled", "stop_placed")]
    pos = fold.open_from_fill(filled, StrategyParams.from_settings(h.executor.s))
    pos = fold.with_stop(pos, placed)
    await h.redis.hset(keys.BOOK_POSITIONS, pos.position_id, pos.dump())
    return sig


async def exit_of(h: Harness, pid: str, reason: ExitReason = "trail") -> ExitSignal:
    """Return state's exit signal for the SOL long ``pid``."""
    return ExitSignal(
        id=exit_signal_id(pid, reason), position_id=pid, symbol=SOL, side="long",
        reason=reason, price=150.0, best_price=155.0, ts=await h.now(),
    )  # fmt: skip


async def sell_by_hand(h: Harness, qty: float) -> None:
    """Reduce the SOL long by ``qty`` with an order of our own (not the executor's)."""
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "sell", qty, None, {"reduceOnly": True})


async def update_book(h: Harness, pid: str, **update: object) -> None:
    raw = await h.redis.hget(keys.BOOK_POSITIONS, pid)
    assert raw is not None
    pos = BookPosition.load(raw).model_copy(update=update)
    await h.redis.hset(keys.BOOK_POSITIONS, pid, pos.dump())


def exits_on_exchange(h: Harness, pid: str) -> list[engine.Order]:
    cid = exit_client_id(pid)
    return [x for x in h.sim.account.orders.values() if x.client_order_id == cid]


@pytest.mark.parametrize("book_corrected", [False, True])
async def test_an_exit_reports_the_fill_and_the_stop_as_the_exchange_has_them(
    make_executor: MakeHarness, book_corrected: bool
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    [stop] = h.sim.account.algo_orders.values()
    await sell_by_hand(h, h.sim.account.position("SOLUSDT").amount - 0.5)  # 0.5 SOL left
    if book_corrected:  # as reconciliation corrects the size; the stop keeps its own
        await update_book(h, sig.id, quantity=0.5)
    h.sim.step(1)  # the exchange clock moves ahead of the executor's estimate of it
    before = exit_orders("filled")
    await h.executor.handle(await exit_of(h, sig.id), "3-0")
    submitted, filled, canceled = (await h.events())[-3:]
    [order] = exits_on_exchange(h, sig.id)
    assert (submitted.event, submitted.position_id) == ("submitted", sig.id)
    assert (filled.event, filled.quantity, filled.ts) == ("filled", 0.5, order.time)
    assert (canceled.event, canceled.exchange_order_id, canceled.quantity) == (
        "canceled",
        str(stop.algo_id),
        stop.quantity,
    )
    assert exit_orders("filled") == before + 1


async def test_an_exit_redelivered_after_its_fill_publishes_nothing_more(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    exit_sig = await exit_of(h, sig.id)
    await h.executor.handle(exit_sig, "3-0")
    events = await h.events()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(exit_sig, "3-0")
    assert await h.events() == events
    assert "Exit of SOL/USDT:USDT already done; ignored" in caplog.text


@pytest.mark.parametrize("stop_filled", [False, True])
async def test_an_exit_the_exchange_refuses_is_counted_and_logged_unless_its_stop_filled(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture, stop_filled: bool
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    if stop_filled:
        h.sim.set_path("SOLUSDT", [140.0])
        h.sim.step(1)  # through the stop at 147
    else:
        await sell_by_hand(h, h.sim.account.position("SOLUSDT").amount)
    before = exit_orders("rejected")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(await exit_of(h, sig.id), "3-0")
    assert [e.position_id for e in await events_of(h, "rejected")] == [sig.id]
    assert exit_orders("rejected") == before + 1
    refused = "Exit of SOL/USDT:USDT refused (" in caplog.text
    assert refused is not stop_filled  # logged for the operator: reconciliation settles it


async def test_an_exit_not_sent_is_closed_and_raised_for_the_bus_to_retry(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    exit_sig = await exit_of(h, sig.id)
    before = exit_orders("not_sent")
    h.sim.set_faults({"http5xx": 1.0})
    with pytest.raises(TemporaryError):
        await h.executor.handle(exit_sig, "3-0")
    h.sim.set_faults({})
    assert exit_orders("not_sent") == before + 1
    assert await h.executor.journal.open_intents() == []
    assert await h.executor.journal.settled(exit_client_id(sig.id)) is None
    assert "SOLUSDT" in h.sim.account.open_positions()
    await h.executor.handle(exit_sig, "3-0")  # the bus redelivers it
    assert "SOLUSDT" not in h.sim.account.open_positions()
    assert len(await events_of(h, "filled")) == 1


def lose_every_answer_from_the_exit_send(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the order POST on, each request executes and its answer is lost (sim faults)."""
    ex = h.executor.client.ex
    sign = ex.sign

    def faulty_from_the_send(path: str, api: object = "public", method: str = "GET",
                             *rest: object) -> object:  # fmt: skip
        if method == "POST" and path == "order":
            h.sim.set_faults({"drop": 1.0})
        return sign(path, api, method, *rest)

    monkeypatch.setattr(ex, "sign", faulty_from_the_send)


async def test_an_exit_of_unknown_outcome_stays_open_and_its_redelivery_keeps_its_intent(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    exit_sig = await exit_of(h, sig.id)
    qty = h.sim.account.position("SOLUSDT").amount
    before = exit_orders("unknown")
    lose_every_answer_from_the_exit_send(h, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(exit_sig, "3-0")
    monkeypatch.undo()
    h.sim.set_faults({})
    assert "Exit of SOL/USDT:USDT outcome unknown; resumed later" in caplog.text
    assert exit_orders("unknown") == before + 1
    [written] = await h.executor.journal.open_intents()
    assert (written.client_order_id, written.quantity) == (exit_client_id(sig.id), qty)
    assert written.cancels == [stop_client_id(sig.id)]  # the stops to cancel once it filled
    assert "SOLUSDT" not in h.sim.account.open_positions()  # it was sent and filled
    assert await events_of(h, "filled") == []

    await update_book(h, sig.id, quantity=qty + 1)  # the book moved meanwhile
    await h.executor.handle(exit_sig, "3-0")  # redelivered: the order sent is found
    assert await h.executor.journal.intent(written.client_order_id) == written
    assert [e.quantity for e in await events_of(h, "submitted")] == [qty, qty]
    [filled] = await events_of(h, "filled")
    assert filled.quantity == qty
    assert await h.executor.journal.open_intents() == []
    assert len(exits_on_exchange(h, sig.id)) == 1


async def test_an_exit_refused_by_the_guard_sends_nothing(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    h.executor.ctx.stop.set()  # this copy is stopping: it may no longer send
    with pytest.raises(SendRefused):
        await h.executor.handle(await exit_of(h, sig.id), "3-0")
    assert "SOLUSDT" in h.sim.account.open_positions()
    assert exits_on_exchange(h, sig.id) == []


async def test_a_stop_exit_before_the_stop_filled_sends_no_order(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(await exit_of(h, sig.id, "stop"), "4-0")
    assert "Stop of LONG SOL/USDT:USDT not filled on the exchange yet" in caplog.text
    assert "SOLUSDT" in h.sim.account.open_positions()
    assert exits_on_exchange(h, sig.id) == []
    assert [e.event for e in await h.events()][-1] == "stop_placed"  # nothing since the entry


async def test_an_exit_answered_open_is_left_to_the_resume_loop(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    [stop] = h.sim.account.algo_orders.values()
    place = h.executor.client.place_order

    async def answered_open(req: OrderRequest, guard: Guard | None = None) -> Order:
        # Binance may answer NEW and the fill not be read in time; the simulator fills at once.
        order = await place(req, guard)
        return dataclasses.replace(order, status="open", filled=0.0, average=None)

    monkeypatch.setattr(h.executor.client, "place_order", answered_open)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(await exit_of(h, sig.id), "3-0")
    monkeypatch.undo()
    assert f"Exit {exit_client_id(sig.id)} not filled yet; resumed later" in caplog.text
    [intent] = await h.executor.journal.open_intents()
    assert intent.client_order_id == exit_client_id(sig.id)
    assert (await events_of(h, "filled"), stop.status) == ([], "NEW")
    await h.executor.resume_one(intent)  # as the resume loop does once the send is old
    assert [e.quantity for e in await events_of(h, "filled")] == [intent.quantity]
    assert stop.status == "CANCELED"
    assert await h.executor.journal.settled(exit_client_id(sig.id)) == "filled"


@pytest.mark.parametrize("average", [None, 150.0])
async def test_an_exit_that_ended_without_a_fill_is_closed_and_reports_no_fill(
    make_executor: MakeHarness,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    average: float | None,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)

    async def expired(req: OrderRequest, guard: Guard | None = None) -> Order:
        # The simulator fills every market order; Binance may expire one with nothing filled
        # (and an answer could even quote a price for it).
        return Order(
            id="1", client_order_id=req.client_order_id, symbol=req.symbol, side=req.side,
            type="market", status="expired", amount=req.quantity, filled=0.0, average=average,
            stop_price=None, reduce_only=True, timestamp=None,
        )  # fmt: skip

    monkeypatch.setattr(h.executor.client, "place_order", expired)
    before = exit_orders("rejected")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(await exit_of(h, sig.id), "3-0")
    assert "Exit of SOL/USDT:USDT ended expired without a fill" in caplog.text
    assert exit_orders("rejected") == before + 1
    assert await events_of(h, "filled") == []
    assert await h.executor.journal.open_intents() == []
    assert await h.executor.journal.settled(exit_client_id(sig.id)) is None  # may be retried
    assert [a.status for a in h.sim.account.algo_orders.values()] == ["NEW"]


async def test_a_stop_fill_smaller_than_one_unit_is_confirmed(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    await sell_by_hand(h, h.sim.account.position("SOLUSDT").amount - 0.5)  # 0.5 SOL left
    h.sim.set_path("SOLUSDT", [140.0])
    h.sim.step(1)  # the stop fills what is left
    await h.executor.handle(await exit_of(h, sig.id, "stop"), "4-0")
    [filled] = await events_of(h, "stop_filled", "stop")
    assert (filled.quantity, filled.price) == (0.5, 147.0)


@pytest.mark.parametrize("fill_read", ["not_found", "nothing_filled"])
async def test_a_triggered_stop_without_a_fill_to_show_is_not_reported_filled(
    make_executor: MakeHarness,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fill_read: str,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    h.sim.set_path("SOLUSDT", [140.0])
    h.sim.step(1)  # the stop fills at 147
    fetch = h.executor.client.fetch_order_by_id

    async def unreadable(symbol: str, order_id: str) -> Order | None:
        # The simulator keeps every order with its fill; Binance may not (archived orders).
        fill = await fetch(symbol, order_id)
        assert fill is not None
        return None if fill_read == "not_found" else dataclasses.replace(fill, filled=0.0)

    monkeypatch.setattr(h.executor.client, "fetch_order_by_id", unreadable)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await h.executor.handle(await exit_of(h, sig.id, "stop"), "4-0")
    assert "Stop of LONG SOL/USDT:USDT not filled on the exchange yet" in caplog.text
    assert await events_of(h, "stop_filled", "stop") == []


async def test_an_exit_cancels_the_stop_the_book_names_for_an_adopted_position(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 2.0)  # opened by hand, then adopted
    await raw.create_order(SOL, "market", "sell", 2.0, None,
                           {"clientOrderId": "hand-stop", "triggerPrice": 140.0,
                            "reduceOnly": True})  # fmt: skip
    pid = "adopted|SOL/USDT:USDT|1"
    pos = BookPosition(
        position_id=pid, symbol=SOL, side="long", quantity=2.0, entry_price=150.0,
        entry_time=0, stop_price=140.0, stop_client_order_id="hand-stop", best_price=150.0,
        adopted=True,
    )  # fmt: skip
    await h.redis.hset(keys.BOOK_POSITIONS, pid, pos.dump())
    await h.executor.handle(await exit_of(h, pid), "3-0")
    assert "SOLUSDT" not in h.sim.account.open_positions()
    [stop] = h.sim.account.algo_orders.values()
    assert (stop.client_algo_id, stop.status) == ("hand-stop", "CANCELED")
    [canceled] = await events_of(h, "canceled", "stop")
    assert (canceled.client_order_id, canceled.position_id) == ("hand-stop", pid)


async def test_resume_finishes_an_exit_whose_position_left_the_book(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    await h.redis.hdel(keys.BOOK_POSITIONS, sig.id)
    qty = h.sim.account.position("SOLUSDT").amount
    exit_id = exit_signal_id(sig.id, "manual")
    # Written, then the crash; meanwhile the book dropped the position.
    await h.executor.journal.open_intent(o.exit_intent(sig.id, SOL, "long", qty, exit_id, 0))
    await h.executor.resume()
    assert "SOLUSDT" not in h.sim.account.open_positions()
    [filled] = await events_of(h, "filled")
    assert (filled.position_id, filled.reason) == (sig.id, "fault")
    [stop] = h.sim.account.algo_orders.values()
    assert (stop.client_algo_id, stop.status) == (stop_client_id(sig.id), "CANCELED")
    assert await h.executor.journal.open_intents() == []


async def test_an_exit_in_flight_is_marked_busy_for_the_resume_loop(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    sig = await entered_long(h)
    repair = stop_client_id(sig.id, 1)
    h.executor.busy.add(repair)  # stop #1 is being placed: the exit waits for it
    await update_book(h, sig.id, stop_seq=1)
    closing = asyncio.create_task(h.executor.handle(await exit_of(h, sig.id), "3-0"))
    await eventually(lambda: "SOLUSDT" not in h.sim.account.open_positions())
    assert not closing.done()
    assert exit_client_id(sig.id) in h.executor.busy
    h.executor.busy.discard(repair)
    h.executor.work_done.set()
    await asyncio.wait_for(closing, 10)
    assert exit_client_id(sig.id) not in h.executor.busy


async def test_an_exit_waits_for_a_stop_being_placed_only_so_long(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "STOP_SETTLE_WAIT_S", 0.2)  # 30 s otherwise
    h: Harness = await make_executor()
    sig = await entered_long(h)
    h.executor.busy.add(stop_client_id(sig.id, 1))  # a flow placing stop #1 that never ends
    await update_book(h, sig.id, stop_seq=1)
    await asyncio.wait_for(h.executor.handle(await exit_of(h, sig.id), "3-0"), 10)
    [stop] = h.sim.account.algo_orders.values()
    assert stop.status == "CANCELED"
    assert await h.executor.journal.settled(exit_client_id(sig.id)) == "filled"
