"""State's price ticks at their edges, and the order events that must not close a position.

Against a real Redis (the ``harness`` of test_state): which ticks move a position, which are
skipped as out of order or stale, which are refused as dated past the exchange's time, and
what the best-price event carries.
"""

from __future__ import annotations

import pytest

from services.state.service import STALE_TICK_MS, Book
from shared import book, keys
from shared.book import BookPosition
from shared.bus import Invalid
from shared.schemas import PositionEvent, PriceTick
from tests.fixtures.metrics import sample
from tests.integration.executor.conftest import ETH, SOL
from tests.integration.state.test_state import StateHarness, harness, order_event

__all__ = ["harness"]  # the fixture, used by name


async def opened(h: StateHarness, price: float = 100.0) -> None:
    """Open a SOL long at ``price`` (best price = entry)."""
    await h.state.on_event(order_event("filled", "entry", "buy", price), "1-0")


async def best(h: StateHarness) -> float:
    [pos] = (await book.read_positions(h.redis)).values()
    return pos.best_price


async def best_events(h: StateHarness) -> list[PositionEvent]:
    return [
        e
        for e in await h.stream(keys.STREAM_EVENTS)
        if isinstance(e, PositionEvent) and e.event == "best_price"
    ]


async def test_a_tick_at_the_exchange_time_is_taken_one_past_it_refused(
    harness: StateHarness,
) -> None:
    """tb:md:now is the newest exchange time market_data read: a tick dated at it is a true
    price; one a millisecond later cannot be, and is refused before it moves anything."""
    h = harness
    await opened(h)
    await h.redis.set(keys.MD_NOW, 5_000)
    await h.state.on_tick(PriceTick(symbol=SOL, price=101.0, ts=5_000), "a")
    assert await best(h) == 101.0
    with pytest.raises(Invalid, match=r"dated 5001 is past the newest exchange time"):
        await h.state.on_tick(PriceTick(symbol=SOL, price=110.0, ts=5_001), "b")
    assert await best(h) == 101.0
    assert int(await h.redis.get(keys.STATE_TICK_MS) or 0) == 5_000


async def test_ticks_in_one_millisecond_all_count_an_older_one_does_not(
    harness: StateHarness,
) -> None:
    h = harness
    await opened(h)
    await h.state.on_tick(PriceTick(symbol=SOL, price=101.0, ts=2_000), "a")
    await h.state.on_tick(PriceTick(symbol=SOL, price=102.0, ts=2_000), "b")  # same ms: taken
    assert await best(h) == 102.0
    # Older than this symbol's last tick (though recent overall): out of order, skipped.
    await h.state.on_tick(PriceTick(symbol=SOL, price=105.0, ts=1_999), "c")
    assert await best(h) == 102.0


async def test_a_tick_exactly_the_stale_limit_behind_another_symbol_is_taken(
    harness: StateHarness,
) -> None:
    """Ticks of other symbols set how old is stale: at the limit a tick still counts."""
    h = harness
    await opened(h)
    newest = 100_000
    await h.state.on_tick(PriceTick(symbol=ETH, price=3_000.0, ts=newest), "eth")
    await h.state.on_tick(PriceTick(symbol=SOL, price=101.0, ts=newest - STALE_TICK_MS), "a")
    assert await best(h) == 101.0
    await h.state.on_tick(PriceTick(symbol=SOL, price=102.0, ts=newest - STALE_TICK_MS - 1), "b")
    assert await best(h) == 101.0  # a millisecond older than that: history, skipped


async def test_a_best_price_event_only_when_the_best_moves_dated_by_its_tick(
    harness: StateHarness,
) -> None:
    h = harness
    await opened(h)  # entry 100: the trail exit is asked for once the price gives back
    await h.state.on_tick(PriceTick(symbol=SOL, price=103.0, ts=2_000), "a")
    await h.state.on_tick(PriceTick(symbol=SOL, price=102.4, ts=3_000), "b")  # trail exit
    [event] = await best_events(h)
    assert (event.best_price, event.ts) == (103.0, 2_000)  # the tick's time, not the entry's
    assert len(await h.stream(keys.STREAM_SIGNALS)) == 1  # the exit, with no new best


@pytest.mark.parametrize("event", ["submitted", "rejected", "canceled"])
async def test_an_exit_order_that_did_not_fill_leaves_the_position_open(
    harness: StateHarness, event: str
) -> None:
    h = harness
    await opened(h)
    await h.state.on_event(order_event(event, "exit", "sell", 99.0, cid="x"), "2-0")
    await h.state.on_event(order_event(event, "stop", "sell", 97.0, cid="s"), "3-0")
    assert list(await book.read_positions(h.redis)) != []
    assert await book.read_all_trades(h.redis) == []


async def test_notional_adds_up_positions_of_one_symbol_and_side(harness: StateHarness) -> None:
    """The exposure gauge sums every position on a symbol and side (one adopted next to one
    opened, say), rather than showing the last one."""
    h = harness
    book_: Book = h.state.book
    for pid, qty in (("p1", 2.0), ("p2", 3.0)):
        await book_.save(
            BookPosition(
                position_id=pid,
                symbol=SOL,
                side="long",
                quantity=qty,
                entry_price=10.0,
                entry_time=0,
                stop_price=9.0,
                best_price=10.0,
            )
        )
    await book_.refresh_gauges()
    assert sample("tradebot_position_notional", symbol=SOL, side="long") == 50.0
