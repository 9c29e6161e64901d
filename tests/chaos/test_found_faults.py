"""Faults the chaos run found, each pinned down by a small deterministic test.

- An entry signal queued while its candle close was being decided was deleted unseen: the
  executor's ``finish_batch`` dropped the whole close, so the signal, already acked on
  tb:signals, was never settled (invariant 4: "entry signal ... never settled by the
  executor"; under chaos a reclaimed signal of a killed executor arrives just so).
- A repair stop was placed while the entry's own stop was still being placed (the
  exchange slow), so the position had two stops; when one fired and the other expired,
  reconciliation looked only at the stop the book named, missed the fill of the other and
  recorded a stop exit as ``fault`` (the e2e account check of the 30-minute run).
- The exchange unreachable while an entry was being decided (its balance not readable)
  crashed the executor: the refusal it meant to record named a variable never assigned
  (UnboundLocalError, exit code 1 in the 30-minute run, while the simulator restarted).
"""

from __future__ import annotations

import pytest

from services.executor import orders as o
from services.signals.rules import StrategyParams
from services.state import fold
from shared import book, keys
from shared.exchange_errors import TemporaryError
from shared.order_ids import stop_client_id
from shared.schemas import (
    EntrySignal,
    OrderEvent,
    OrderIntent,
    Side,
    StopCommand,
    stop_command_id,
)
from tests.fixtures.sim import SimHandle
from tests.integration.executor.conftest import ETH, SOL, MakeHarness, make_executor
from tests.integration.state.test_state import PID, StateHarness, harness, order_event

__all__ = ["harness", "make_executor"]  # the fixtures, imported for the tests below


async def test_an_entry_queued_while_its_close_is_decided_is_not_lost(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_executor()
    await h.set_universe(SOL, ETH)
    first, late = await h.signal(SOL, vr=3.0), await h.signal(ETH, vr=2.0)
    await h.executor.handle(first, "1-0")
    [(close_ms, _)] = await h.executor.journal.batches()
    enter = h.executor.enter

    async def enter_while_late_arrives(signal: EntrySignal, now: int) -> None:
        await enter(signal, now)
        await h.executor.handle(late, "2-0")  # the consumer queues it meanwhile

    monkeypatch.setattr(h.executor, "enter", enter_while_late_arrives)
    await h.executor.allot(close_ms)
    assert [s.id for s in await h.executor.journal.batch(close_ms)] == [late.id]
    assert [c for c, _ in await h.executor.journal.batches()] == [close_ms]

    monkeypatch.setattr(h.executor, "enter", enter)
    await h.executor.allot(close_ms)  # the next round decides it
    assert await h.executor.journal.settled(first.id) == "filled"
    assert await h.executor.journal.settled(late.id) == "filled"
    assert await h.redis.zcard(keys.ENTRY_BATCHES) == 0


async def test_a_repair_stop_is_not_placed_while_the_first_is_being_placed(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL)
    place_stop = h.executor.place_stop
    params = StrategyParams.from_settings(h.executor.s)

    async def repair_asked_meanwhile(intent: OrderIntent, side: Side) -> None:
        if intent.client_order_id == stop_client_id(sig.id, 0):  # state folds the fill...
            [fill] = [e for e in await h.events()
                      if isinstance(e, OrderEvent) and e.event == "filled"]  # fmt: skip
            pos = fold.open_from_fill(fill, params)
            await h.redis.hset(keys.BOOK_POSITIONS, pos.position_id, pos.dump())
            repair = StopCommand(
                id=stop_command_id(sig.id, 1), position_id=sig.id, symbol=SOL, side="long",
                quantity=pos.quantity, stop_price=pos.stop_price, seq=1, reason="repair",
                ts=await h.now(),
            )  # fmt: skip
            await h.executor.handle(repair, "9-0")  # ...and asks for a repair stop
        await place_stop(intent, side)

    monkeypatch.setattr(h.executor, "place_stop", repair_asked_meanwhile)
    await h.executor.enter(sig, await h.now())
    stops = [a.client_algo_id for a in h.sim.account.algo_orders.values()]
    assert stops == [stop_client_id(sig.id, 0)]


async def test_a_position_closed_by_its_repair_stop_is_a_stop_exit(
    harness: StateHarness, sim: SimHandle
) -> None:
    h = harness
    raw = sim.make_ccxt()
    await raw.load_markets()
    await raw.create_order(SOL, "market", "buy", 2.0)
    await raw.close()
    await h.state.on_event(order_event("filled", "entry", "buy", 150.0, ts=0), "1-0")
    for seq in (1, 0):  # the repair lands first, then the entry's own stop
        await h.rec.client.place_order(o.stop_intent(PID, SOL, "long", 2.0, 147.0, seq, 1))
    placed = order_event("stop_placed", "stop", "sell", 147.0, cid=stop_client_id(PID, 0))
    await h.state.on_event(placed, "2-0")
    pos = (await book.read_positions(h.redis))[PID]
    await h.state.book.save(pos.model_copy(update={"stop_seq": 1}))
    sim.set_path("SOLUSDT", [140.0])
    sim.step(1)  # the repair stop fills at 147; the other expires, nothing left to reduce

    await h.rec.run_once()
    [trade] = await book.read_all_trades(h.redis)
    assert (trade.reason, trade.exit_price) == ("stop", 147.0)


async def test_an_exchange_outage_while_an_entry_is_decided_refuses_it(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_executor()
    await h.set_universe(SOL)
    sig = await h.signal(SOL)

    async def unreachable() -> None:
        raise TemporaryError("balance: ExchangeNotAvailable (retries exhausted)", "balance")

    monkeypatch.setattr(h.executor.client, "balance", unreachable)
    await h.executor.enter(sig, await h.now())
    assert await h.executor.journal.settled(sig.id) == "refused:exchange_unreachable"
    assert h.sim.account.orders == {}
