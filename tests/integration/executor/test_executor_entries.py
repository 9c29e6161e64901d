"""The executor's entry flow when the exchange refuses, fails or loses the answer, and the
bookkeeping around it (the simulator through real ccxt, a real Redis).

An entry's outcome decides its slot: refused or provably not sent frees it at once, unknown
keeps it until the resume loop has asked the exchange. Each case is counted by outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.executor import orders as o
from shared import keys
from shared.exchange_errors import OutcomeUnknown, SendRefused, TemporaryError
from shared.exchange_models import Order
from shared.schemas import ExitSignal, OrderIntent, exit_signal_id
from tests.fixtures.metrics import sample
from tests.integration.bus.helpers import eventually
from tests.integration.executor.conftest import ETH, SOL, Harness, MakeHarness


def orders(outcome: str, kind: str = "entry") -> float:
    return sample("tradebot_orders_total", type=kind, outcome=outcome)


async def written_entry(h: Harness, quantity: float) -> OrderIntent:
    """Write a SOL long's entry intent as ``enter`` does (its slot taken); return it."""
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    intent = o.entry_intent(sig.id, SOL, "long", quantity, await h.now())
    submitted = h.executor.event(intent, "submitted", position_id=sig.id)
    await h.executor.journal.open_intent(intent, submitted, pending_symbol=True)
    return intent


async def assert_settled_and_freed(h: Harness, intent: OrderIntent, outcome: str) -> None:
    """The entry is settled with ``outcome``, its intent closed and its slot free again."""
    assert await h.executor.journal.settled(intent.signal_id) == outcome
    assert not await h.redis.sismember(keys.OPEN_INTENTS, intent.client_order_id)
    assert SOL not in await h.executor.journal.pending_entries()


async def rejected_event(h: Harness) -> Any:
    [rejected] = [e for e in await h.events() if e.event == "rejected"]
    return rejected


async def test_an_entry_the_exchange_refuses_is_settled_rejected_and_frees_its_slot(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 5_000.0)  # far past the margin of 10,000 USDT: -2019
    before = orders("rejected")
    await h.executor.place_entry(intent)
    assert orders("rejected") == before + 1
    await assert_settled_and_freed(h, intent, "rejected")
    rejected = await rejected_event(h)
    assert (rejected.client_order_id, rejected.position_id, rejected.purpose, rejected.side) == (
        intent.client_order_id,
        intent.signal_id,
        "entry",
        "buy",
    )
    assert "-2019" in (rejected.error or "")
    assert h.sim.account.orders == {}


async def test_an_entry_provably_not_sent_is_settled_not_sent_and_frees_its_slot(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    before = orders("not_sent")
    h.sim.set_faults({"http5xx": 1.0})  # even the lookup before the send fails
    await h.executor.place_entry(intent)
    h.sim.set_faults({})
    assert orders("not_sent") == before + 1
    await assert_settled_and_freed(h, intent, "not_sent")
    rejected = await rejected_event(h)
    assert (rejected.position_id, rejected.purpose) == (intent.signal_id, "entry")
    assert "5" in (rejected.error or "")  # the exchange's status, as the client reported it
    assert h.sim.account.orders == {}


async def test_an_entry_whose_answer_was_lost_keeps_its_slot_until_resume_finds_it(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    place_order = h.executor.client.place_order

    async def sent_but_answer_lost(req: OrderIntent, guard: Any = None) -> Order:
        # The simulator cannot drop exactly this one answer: the order is really placed,
        # then the client reports what it reports when the answer never came.
        await place_order(req, guard)
        raise OutcomeUnknown("answer lost", "place_order", req.client_order_id)

    monkeypatch.setattr(h.executor.client, "place_order", sent_but_answer_lost)
    before = orders("unknown")
    await h.executor.place_entry(intent)
    monkeypatch.undo()
    assert orders("unknown") == before + 1
    assert await h.executor.journal.settled(intent.signal_id) is None
    assert await h.redis.sismember(keys.OPEN_INTENTS, intent.client_order_id)
    assert SOL in await h.executor.journal.pending_entries()  # the slot stays taken
    await h.executor.resume()
    assert await h.executor.journal.settled(intent.signal_id) == "filled"
    [stop] = h.sim.account.algo_orders.values()
    assert (stop.symbol, stop.side, stop.status) == ("SOLUSDT", "SELL", "NEW")
    assert len(h.sim.account.orders) == 1


async def test_an_entry_is_not_sent_once_this_copy_may_no_longer_act(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    h.executor.ctx.stop.set()  # stopping, as when the lease is lost
    with pytest.raises(SendRefused):
        await h.executor.place_entry(intent)
    assert h.sim.account.orders == {}


def answered(
    intent: OrderIntent, status: str, filled: float, average: float | None, ts: int | None = None
) -> Order:
    return Order(
        id="77", client_order_id=intent.client_order_id, symbol=intent.symbol, side="buy",
        type="market", status=status, amount=intent.quantity, filled=filled, average=average,
        stop_price=None, reduce_only=False, timestamp=ts,
    )  # fmt: skip


async def test_an_entry_answered_open_is_left_to_the_resume_loop(
    make_executor: MakeHarness,
) -> None:
    # The simulator fills market orders at once; Binance may answer NEW under load.
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    await h.executor.finish_entry(intent, answered(intent, "open", 0.0, None))
    assert await h.executor.journal.settled(intent.signal_id) is None
    assert await h.redis.sismember(keys.OPEN_INTENTS, intent.client_order_id)
    assert [e.event for e in await h.events()] == ["submitted"]


async def test_an_entry_that_ended_without_a_fill_is_settled_rejected(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    before = orders("rejected")
    # Expired with nothing filled; the exchange's average price reads 0, not missing.
    await h.executor.finish_entry(intent, answered(intent, "expired", 0.0, 0.0))
    assert orders("rejected") == before + 1
    await assert_settled_and_freed(h, intent, "rejected")
    rejected = await rejected_event(h)
    assert (rejected.position_id, rejected.client_order_id, rejected.error) == (
        intent.signal_id,
        intent.client_order_id,
        "expired",
    )
    assert h.sim.account.algo_orders == {}  # no stop for a position that does not exist


async def test_leverage_is_set_once_per_symbol(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    await h.executor.ensure_leverage(SOL)
    assert h.sim.account.leverage_of("SOLUSDT") == h.executor.s.leverage
    requests = h.sim.sim.faults.counts["requests"]
    await h.executor.ensure_leverage(SOL)
    assert h.sim.sim.faults.counts["requests"] == requests


async def test_a_stale_stop_whose_cancel_fails_does_not_hold_up_the_others(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    cancel_stop = h.executor.client.cancel_stop

    async def sol_unreachable(symbol: str, cid: str) -> Order | None:
        if symbol == SOL:  # the simulator cannot fail one symbol's requests only
            raise TemporaryError("503", "cancel_stop")
        return await cancel_stop(symbol, cid)

    monkeypatch.setattr(h.executor.client, "cancel_stop", sol_unreachable)
    await h.executor.journal.add_stale_stop("sol-stop", SOL)  # first in line
    await h.executor.journal.add_stale_stop("eth-stop", ETH)
    await h.executor.cancel_stale_stops()
    assert await h.executor.journal.stale_stops() == {"sol-stop": SOL}


async def test_entries_wait_while_an_exit_is_being_handled(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    release = [asyncio.Event(), asyncio.Event()]
    started: list[int] = []

    async def held_exit(signal: ExitSignal) -> None:
        i = int(signal.position_id.split("|")[2])
        started.append(i)
        await release[i].wait()

    monkeypatch.setattr(h.executor, "on_exit_signal", held_exit)

    def exit_signal(i: int) -> ExitSignal:
        pid = f"{SOL}|5m|{i}|long"
        return ExitSignal(
            id=exit_signal_id(pid, "trail"), position_id=pid, symbol=SOL, side="long",
            reason="trail", price=1.0, best_price=1.0, ts=0,
        )  # fmt: skip

    tasks = [asyncio.create_task(h.executor.handle(exit_signal(i), f"{i}-0")) for i in (0, 1)]
    await eventually(lambda: len(started) == 2)  # both handlers are in their exit
    assert h.executor.exits_running == 2
    release[0].set()
    await tasks[0]
    assert h.executor.exits_running == 1  # the other one still runs
    release[1].set()
    await tasks[1]
    assert h.executor.exits_running == 0


def refused(reason: str) -> float:
    return sample("tradebot_entries_refused_total", reason=reason)


async def test_an_entry_not_decided_for_want_of_the_exchange_is_refused_and_says_why(
    make_executor: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    before, now = refused("exchange_unreachable"), await h.now()
    h.sim.set_faults({"http5xx": 1.0})  # the balance cannot be read
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.enter(sig, now)
    h.sim.set_faults({})
    assert await h.executor.journal.settled(sig.id) == "refused:exchange_unreachable"
    assert refused("exchange_unreachable") == before + 1
    assert "(exchange_unreachable: balance: " in caplog.text  # the client's error, named
    assert h.sim.account.orders == {}


async def test_an_entry_refused_by_the_exchange_or_a_bug_logs_the_error_itself(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    high, buggy = await h.signal(SOL), await h.signal(ETH)
    before = refused("exchange_rejected"), refused("error")
    h.executor.s = h.executor.s.model_copy(update={"leverage": 500})
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.enter(high, await h.now())
        monkeypatch.setattr(h.executor, "entry_context", _raise_zero_division)
        await h.executor.enter(buggy, await h.now())
    assert (refused("exchange_rejected"), refused("error")) == (before[0] + 1, before[1] + 1)
    assert "(exchange_rejected: set_leverage: " in caplog.text
    assert "(error: ZeroDivisionError: float division by zero)" in caplog.text


async def _raise_zero_division(symbol: str, now: int) -> Any:
    raise ZeroDivisionError("float division by zero")


async def test_an_entry_is_submitted_for_its_position_at_the_decision_time_and_marked_in_work(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    place_order = h.executor.client.place_order
    in_work: list[bool] = []

    async def spied(req: OrderIntent, guard: Any = None) -> Order:
        in_work.append(req.client_order_id in h.executor.busy)
        return await place_order(req, guard)

    monkeypatch.setattr(h.executor.client, "place_order", spied)
    now = await h.now()
    await h.executor.enter(sig, now - 1_000)  # decided a second ago (the allotment's time)
    await h.executor.enter(sig, now)  # again: settled, nothing more
    events = await h.events()
    [submitted] = [e for e in events if e.event == "submitted"]
    assert (submitted.position_id, submitted.ts) == (sig.id, now - 1_000)
    assert [e.event for e in events].count("filled") == 1
    assert await h.executor.journal.settled(sig.id) == "filled"  # not re-decided
    assert in_work[0] is True  # the resume loop keeps off it while it is sent


async def test_a_filled_entry_reports_the_exchanges_fill_not_the_intent(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    intent = await written_entry(h, 1.0)
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 0.5)  # what the exchange really filled
    before = orders("filled")
    filled_at = await h.now() - 2_000
    # The answer as the exchange gives it: half the size asked, at its own price and time.
    await h.executor.finish_entry(intent, answered(intent, "closed", 0.5, 150.0, filled_at))
    assert orders("filled") == before + 1
    [filled] = [e for e in await h.events() if e.event == "filled"]
    assert (filled.quantity, filled.price, filled.exchange_order_id, filled.ts) == (
        0.5,
        150.0,
        "77",
        filled_at,
    )
    assert filled.fee == pytest.approx(0.5 * 150.0 * h.executor.s.fee_rate)
    [stop] = h.sim.account.algo_orders.values()
    assert stop.quantity == 0.5  # the stop covers what was filled
