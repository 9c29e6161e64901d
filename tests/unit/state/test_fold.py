"""The book's fold: fills open and close positions once; ticks apply docs/strategy.md's exits."""

from __future__ import annotations

import pytest

from services.signals.rules import StrategyParams
from services.state import fold
from shared.config import Settings
from shared.schemas import OrderEvent

P = StrategyParams.from_settings(Settings())


def fill(side: str = "buy", price: float = 100.0, qty: float = 10.0) -> OrderEvent:
    return OrderEvent(
        event="filled", client_order_id="c", signal_id="pos", symbol="SOL/USDT:USDT",
        side=side, purpose="entry", quantity=qty, price=price, fee=0.5,  # type: ignore[arg-type]
        position_id="pos", ts=1_000,
    )  # fmt: skip


def test_an_entry_fill_opens_a_position_with_its_stop_and_best() -> None:
    pos = fold.open_from_fill(fill("sell", 100.0), P)
    assert (pos.side, pos.entry_price, pos.best_price, pos.entry_fee) == (
        "short",
        100.0,
        100.0,
        0.5,
    )
    assert pos.stop_price == pytest.approx(102.0)


def test_close_nets_both_fees() -> None:
    pos = fold.open_from_fill(fill("buy", 100.0, 10.0), P)
    trade = fold.close(pos, 102.0, 0.51, 2_000, "trail")
    assert trade.pnl == pytest.approx(20.0 - 0.5 - 0.51)
    assert trade.fees == pytest.approx(1.01)
    assert (trade.reason, trade.exit_time) == ("trail", 2_000)


def test_ticks_follow_the_contract_example() -> None:
    # docs/strategy.md: long from 100: 103 arms the trail, 102.4 exits at 102.4.
    pos = fold.open_from_fill(fill("buy", 100.0), P)
    out = fold.on_tick(pos, 103.0, 2_000, P)
    assert (out.changed, out.exit_reason, out.position.best_price) == (True, None, 103.0)
    out = fold.on_tick(out.position, 102.4, 3_000, P)
    assert (out.exit_reason, out.exit_price) == ("trail", 102.4)
    assert out.position.exit_requested == "trail"


def test_stop_comes_before_trail_and_asks_once_then_again_after_a_while() -> None:
    pos = fold.open_from_fill(fill("buy", 100.0), P).model_copy(update={"best_price": 110.0})
    out = fold.on_tick(pos, 97.0, 2_000, P)
    assert (out.exit_reason, out.exit_price) == ("stop", 98.0)
    again = fold.on_tick(out.position, 97.0, 2_000 + fold.EXIT_RETRY_MS - 1, P)
    assert again.exit_reason is None
    later = fold.on_tick(out.position, 97.0, 2_000 + fold.EXIT_RETRY_MS, P)
    assert later.exit_reason == "stop"


def test_a_price_that_changes_nothing_writes_nothing() -> None:
    pos = fold.open_from_fill(fill("buy", 100.0), P)
    out = fold.on_tick(pos, 99.5, 2_000, P)
    assert not out.changed
    assert out.position is pos


def test_unrealized_pnl_by_side() -> None:
    assert fold.open_from_fill(fill("sell", 100.0, 2.0), P).unrealized(90.0) == 20.0


def test_a_tick_that_moves_nothing_changes_nothing() -> None:
    pos = fold.open_from_fill(fill("buy", 100.0), P)
    out = fold.on_tick(pos, 100.5, 2_000, P)  # a new best
    assert (out.changed, out.position.best_price) == (True, 100.5)
    same = fold.on_tick(out.position, 100.2, 3_000, P)  # below the best, above the stop
    assert (same.changed, same.exit_reason) == (False, None)
    assert same.position is out.position
    asked = fold.on_tick(pos, 97.0, 4_000, P).position  # the stop, asked for
    repeat = fold.on_tick(asked, 97.0, 4_500, P)  # the stop again, within the retry wait
    assert (repeat.changed, repeat.exit_reason, repeat.position) == (False, None, asked)


def test_a_stop_placed_event_sets_the_stop_and_its_id() -> None:
    pos = fold.open_from_fill(fill("buy", 100.0), P)
    placed = fill().model_copy(update={"event": "stop_placed", "client_order_id": "s1",
                                       "price": 97.5, "purpose": "stop"})  # fmt: skip
    protected = fold.with_stop(pos, placed)
    assert (protected.stop_price, protected.stop_client_order_id) == (97.5, "s1")
    no_price = fold.with_stop(pos, placed.model_copy(update={"price": None}))
    assert no_price.stop_price == pos.stop_price


def test_a_position_event_carries_the_position() -> None:
    pos = fold.open_from_fill(fill("sell", 100.0), P).model_copy(update={"best_price": 95.0})
    ev = fold.position_event("best_price", pos, ts=5_000)
    assert (ev.event, ev.position_id, ev.symbol, ev.side, ev.quantity) == (
        "best_price",
        "pos",
        "SOL/USDT:USDT",
        "short",
        10.0,
    )
    assert (ev.entry_price, ev.stop_price, ev.best_price, ev.ts) == (100.0, 102.0, 95.0, 5_000)
    closed = fold.position_event("closed", pos, exit_price=99.0, pnl=9.0)
    assert (closed.exit_price, closed.pnl, closed.ts) == (99.0, 9.0, 1_000)  # ts: the entry's
