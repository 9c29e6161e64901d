"""The executor's stops: on the exchange's price grid, and what placing one does on every
answer (placed, refused, ended, unreachable, lost), against the simulator through real
ccxt and a real Redis.

A position without its stop is repaired at once: a stop that cannot be placed closes the
position at market; one whose outcome is unknown is left open for the resume loop.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.exchange_sim import engine
from services.executor import orders as o
from shared import keys
from shared.exchange_errors import OutcomeUnknown, SendRefused
from shared.exchange_models import Order
from shared.order_ids import stop_client_id
from shared.schemas import OrderIntent
from tests.fixtures.metrics import sample
from tests.integration.executor.conftest import ETH, SOL, Harness, MakeHarness

STOP_ATTEMPTS = 3


def stops(outcome: str) -> float:
    return sample("tradebot_orders_total", type="stop", outcome=outcome)


async def long_without_stop(h: Harness, qty: float = 2.0) -> None:
    """Open a SOL long straight through ccxt (a filled entry whose stop is not placed yet)."""
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", qty)


async def still_open(h: Harness, cid: str) -> bool:
    """Return whether an order's intent is still open (left to the resume loop)."""
    return bool(await h.redis.sismember(keys.OPEN_INTENTS, cid))


async def stop_written_and_sent(h: Harness, trigger: float) -> OrderIntent:
    """A SOL long whose stop a crashed executor wrote and sent (it never saw the answer)."""
    await long_without_stop(h)
    intent = o.stop_intent("p-1", SOL, "long", 2.0, trigger, 0, await h.now())
    await h.executor.journal.open_intent(intent)
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "sell", 2.0, None, {
        "triggerPrice": trigger, "reduceOnly": True, "clientOrderId": intent.client_order_id,
    })  # fmt: skip
    return intent


def spy_on_sends(
    h: Harness, monkeypatch: pytest.MonkeyPatch, lose_stop_answers: bool = False
) -> list[bool]:
    """Count the stop sends (each: was the stop marked as being worked on?), passing them on."""
    place_order = h.executor.client.place_order
    calls: list[bool] = []

    async def spied(req: OrderIntent, guard: Any = None) -> Order:
        if req.purpose != "stop":
            return await place_order(req, guard)
        calls.append(req.client_order_id in h.executor.busy)
        order = await place_order(req, guard)
        if lose_stop_answers:  # placed, then the answer is lost (the simulator cannot pick one)
            raise OutcomeUnknown("answer lost", "place_stop", req.client_order_id)
        return order

    monkeypatch.setattr(h.executor.client, "place_order", spied)
    return calls


async def test_entry_stops_land_on_the_price_grid_away_from_the_entry(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await h.set_universe(SOL, ETH)
    h.sim.set_path("SOLUSDT", [150.37])  # tick 0.001: 2 % below is 147.3626
    h.sim.set_path("ETHUSDT", [3001.7])  # tick 0.01: 2 % above is 3061.734
    h.sim.step(1)
    for symbol, side in ((SOL, "long"), (ETH, "short")):
        await h.executor.enter(await h.signal(symbol, side), await h.now())
    acct = h.sim.account
    assert (acct.position("SOLUSDT").entry_price, acct.position("ETHUSDT").entry_price) == (
        150.37,
        3001.7,
    )
    triggers = {a.symbol: a.trigger_price for a in acct.algo_orders.values() if a.status == "NEW"}
    assert triggers == {"SOLUSDT": 147.362, "ETHUSDT": 3061.74}  # down for a long, up for a short


async def test_a_placed_stop_is_reported_counted_and_settled(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    sends = spy_on_sends(h, monkeypatch)
    before = stops("placed")
    await h.executor.protect("p-1", SOL, "long", 2.0, 140.0, seq=0)
    assert sends == [True]  # marked as being worked on while it is sent
    assert stops("placed") == before + 1
    [stop] = h.sim.account.algo_orders.values()
    [placed] = [e for e in await h.events() if e.event == "stop_placed"]
    assert (placed.client_order_id, placed.position_id, placed.price, placed.exchange_order_id) == (
        stop_client_id("p-1"),
        "p-1",
        140.0,
        str(stop.algo_id),
    )
    assert not await still_open(h, stop_client_id("p-1"))


async def test_a_refused_stop_is_reported_counted_and_closes_the_position(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    before = stops("rejected")
    await h.executor.protect("p-1", SOL, "long", 2.0, 200.0, seq=0)  # above the price: -2021
    assert stops("rejected") == before + 1
    [rejected] = [e for e in await h.events() if e.event == "rejected"]
    assert (rejected.purpose, rejected.position_id) == ("stop", "p-1")
    assert "-2021" in (rejected.error or "")
    assert not await still_open(h, stop_client_id("p-1"))
    assert "SOLUSDT" not in h.sim.account.open_positions()


async def test_a_stop_the_exchange_cannot_take_is_tried_three_times_then_the_position_closed(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    sends = spy_on_sends(h, monkeypatch)
    h.sim.sim.faults.paths = ("/fapi/v1/algoOrder",)  # stop orders only: exits still go through
    h.sim.set_faults({"http5xx": 1.0})
    await h.executor.protect("p-1", SOL, "long", 2.0, 140.0, seq=0)
    h.sim.set_faults({})
    assert len(sends) == STOP_ATTEMPTS
    [rejected] = [e for e in await h.events() if e.event == "rejected"]
    assert (rejected.purpose, rejected.position_id) == ("stop", "p-1")
    assert "(retries exhausted)" in (rejected.error or "")  # the client's last failure
    assert "SOLUSDT" not in h.sim.account.open_positions()


async def test_a_stop_whose_answer_was_lost_is_left_to_the_resume_loop(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    spy_on_sends(h, monkeypatch, lose_stop_answers=True)
    before = stops("unknown")
    await h.executor.protect("p-1", SOL, "long", 2.0, 140.0, seq=0)
    assert stops("unknown") == before + 1
    assert await still_open(h, stop_client_id("p-1"))
    assert h.sim.account.position("SOLUSDT").amount == 2.0  # not closed: the stop is there
    monkeypatch.undo()
    h.executor.touched.clear()  # as a recvWindow later
    await h.executor.resume()
    assert not await still_open(h, stop_client_id("p-1"))
    assert [e.event for e in await h.events()] == ["stop_placed"]  # found, not sent again
    assert len(h.sim.account.algo_orders) == 1


async def test_a_stop_found_triggered_counts_as_placed(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    intent = await stop_written_and_sent(h, 147.0)
    h.sim.set_path("SOLUSDT", [146.0])
    h.sim.step(1)  # the crashed executor's stop was sent, then it fired
    await h.executor.resume()
    assert not await still_open(h, intent.client_order_id)
    assert [e.event for e in await h.events()] == ["stop_placed"]


async def test_a_stop_found_cancelled_closes_the_position(make_executor: MakeHarness) -> None:
    h: Harness = await make_executor()
    intent = await stop_written_and_sent(h, 140.0)
    [stop] = h.sim.account.algo_orders.values()
    engine.cancel_algo(h.sim.account, stop, 0)
    await h.executor.resume()  # sent, then cancelled by hand: the position has no stop
    [rejected] = [e for e in await h.events() if e.event == "rejected"]
    assert (rejected.purpose, rejected.error) == ("stop", "stop ended canceled")
    assert not await still_open(h, intent.client_order_id)
    assert "SOLUSDT" not in h.sim.account.open_positions()


async def test_a_stop_asked_for_off_the_grid_is_placed_on_it_away_from_the_position(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    raw = h.sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(ETH, "market", "sell", 1.0)
    # As state may ask (a repair at the book's stop): SOL's tick is 0.001, ETH's 0.01.
    await h.executor.protect("p-1", SOL, "long", 2.0, 140.0004, seq=0)
    await h.executor.protect("p-2", ETH, "short", 1.0, 3100.001, seq=0)
    triggers = {a.symbol: a.trigger_price for a in h.sim.account.algo_orders.values()}
    assert triggers == {"SOLUSDT": 140.0, "ETHUSDT": 3100.01}  # down for a long, up for a short


async def test_a_stop_is_not_sent_once_this_copy_may_no_longer_act(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    h.executor.ctx.stop.set()  # stopping, as when the lease is lost
    with pytest.raises(SendRefused):
        await h.executor.protect("p-1", SOL, "long", 2.0, 140.0, seq=0)
    assert h.sim.account.algo_orders == {}


async def test_a_stop_on_a_symbol_listed_after_the_start_is_placed_as_asked(
    make_executor: MakeHarness,
) -> None:
    h: Harness = await make_executor()
    await long_without_stop(h)
    del h.executor.markets[SOL]  # not in the market list this executor loaded
    await h.executor.protect("p-1", SOL, "long", 2.0, 140.0, seq=0)
    [stop] = h.sim.account.algo_orders.values()
    assert (stop.trigger_price, stop.status) == (140.0, "NEW")
