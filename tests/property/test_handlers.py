"""Fuzzing the handlers with messages that decode but carry absurd values.

test_consumers.py shows garbage never reaches a handler. These tests give the handlers
messages that pass every schema rule yet no healthy producer would send: extreme prices
and volumes, candle times far in the past or the future, unknown symbols.

- The signals worker never raises on a valid candle, whatever the window it is stored
  with, and every signal it publishes is for that candle.
- State folds events and ticks whole or not at all: a handler that raises on an absurd
  value (an infinite PnL) leaves the book and the streams as they were, for the bus to
  retry and dead-letter. A tick dated past the exchange time market_data last read is
  refused (dead-lettered as ``invalid``): it triggers no exit and blinds state to no later
  tick.
- The executor sends an entry order only for a signal whose candle closed (on the
  exchange's clock, give or take CLOSE_SLACK_MS), not longer ago than SIGNAL_MAX_AGE_MS, on
  a symbol of the universe, and never raises on an absurd price (a price near zero sizes an
  order too large for the market, refused before it is sent).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.executor.risk import CLOSE_SLACK_MS
from services.executor.service import Executor
from services.signals.rules import StrategyParams
from services.signals.service import CandleEvaluator
from services.state.service import Book, State
from shared import book, keys
from shared.book import BookPosition, Universe
from shared.bus import Invalid
from shared.order_ids import entry_client_id
from shared.redisconn import EmbeddedRedis
from shared.schemas import (
    Candle,
    EntrySignal,
    ExitSignal,
    OrderEvent,
    PriceTick,
    decode,
    encode,
    entry_signal_id,
)
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.executor.conftest import ETH, SOL
from tests.integration.signals.helpers import TF_MS, make_settings
from tests.property.mutations import prices

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
T0 = 1_767_225_600_000  # a 5m boundary
huge = st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False)
extreme_prices = prices | st.sampled_from([5e-324, 1e-300, 1e-12, 1e300, 1.7976931348623157e308])


@st.composite
def extreme_candle(draw: st.DrawFn, i: int) -> Candle:
    low, a, b, high = sorted(draw(st.lists(extreme_prices, min_size=4, max_size=4)))
    o, c = (a, b) if draw(st.booleans()) else (b, a)
    volume = draw(huge | st.sampled_from([0.0, 5e-324, 1e300]))
    return Candle(
        symbol=SOL, timeframe="5m", open_time=T0 + i * TF_MS, open=o, high=high, low=low,
        close=c, volume=volume,
    )  # fmt: skip


@st.composite
def windows(draw: st.DrawFn) -> list[Candle]:
    n = draw(st.integers(1, 40))
    same = draw(st.booleans())  # a flat market: every candle alike (ranges of zero...)
    first = draw(extreme_candle(0))
    out = []
    for i in range(n):
        c = first if same else draw(extreme_candle(i))
        out.append(c.model_copy(update={"open_time": T0 + i * TF_MS}))
    return out


@FUZZ
@given(window=windows())
async def test_signals_worker_never_raises_on_a_valid_candle(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, window: list[Candle]
) -> None:
    await redis_client.flushall()
    key = keys.candles_key(SOL, "5m")
    if len(window) > 1:
        await redis_client.zadd(key, {encode(c): c.open_time for c in window[:-1]})
    evaluator = CandleEvaluator(redis_client, make_settings(redis_server, tmp_path))
    candle = window[-1]

    with warnings.catch_warnings():  # numpy's overflow warnings, as in production: not errors
        warnings.simplefilter("ignore", RuntimeWarning)
        await evaluator.handle(candle, "1-0")

    rows: Any = await redis_client.xrange(keys.STREAM_SIGNALS)
    for _, fields in rows:
        signal = decode(fields[b"d"], EntrySignal)
        assert signal.candle_open_time == candle.open_time
        assert signal.price == candle.close
    evaluated = keys.close_evaluated_key(candle.open_time + TF_MS)
    assert await redis_client.sismember(evaluated, SOL)


@FUZZ
@given(
    symbol=st.sampled_from([SOL, ETH, "NOPE/USDT:USDT"]),
    side=st.sampled_from(["long", "short"]),
    candles_back=st.integers(-(10**6), 10**6) | st.integers(-3, 3),
    price=st.sampled_from([150.0, 149.0, 151.5]) | extreme_prices,
)
async def test_executor_enters_only_fresh_signals_of_the_universe(
    executor: Executor,
    sim: SimHandle,
    redis_client: aioredis.Redis,
    symbol: str,
    side: Any,
    candles_back: int,
    price: float,
) -> None:
    await redis_client.flushall()
    now = await executor.client.server_time()
    tf = executor.s.timeframe_ms
    open_ms = now - now % tf - candles_back * tf
    if open_ms < 0:
        return
    await redis_client.set(keys.UNIVERSE, Universe(symbols=[SOL], rotated_ms=now).dump())
    signal = EntrySignal(
        id=entry_signal_id(symbol, "5m", open_ms, side), symbol=symbol, timeframe="5m",
        candle_open_time=open_ms, side=side, price=price, body_pct=0.01, vol_ratio=2.0,
        chop=40.0, ts=now,
    )  # fmt: skip
    before = {o.client_order_id for o in sim.account.orders.values()}

    await executor.handle(signal, "1-0")
    for close_ms, _ in await executor.journal.batches():
        await executor.allot(close_ms)

    sent = {o.client_order_id for o in sim.account.orders.values()} - before
    age = now - (open_ms + tf)
    fresh = -CLOSE_SLACK_MS <= age <= executor.s.max_signal_age_ms
    if sent:
        assert sent == {entry_client_id(signal.id)}
        assert symbol == SOL, "an entry outside the universe"
        assert fresh, f"an entry for a candle closing {-age} ms after now (or {age} ms stale)"


PID = f"{SOL}|5m|1699999700000|long"
HELD = BookPosition(
    position_id=PID, symbol=SOL, side="long", quantity=2.0, entry_price=150.0,
    entry_time=1_000, stop_price=147.0, best_price=150.0,
)  # fmt: skip


@st.composite
def order_events(draw: st.DrawFn) -> OrderEvent:
    events = ["submitted", "filled", "rejected", "canceled", "stop_placed", "stop_filled"]
    event: Any = draw(st.sampled_from(events))
    return OrderEvent(
        event=event, client_order_id=draw(st.sampled_from(["c1", "c2"])), signal_id=PID,
        symbol=draw(st.sampled_from([SOL, ETH])), side=draw(st.sampled_from(["buy", "sell"])),
        purpose=draw(st.sampled_from(["entry", "stop", "exit"])),
        quantity=draw(extreme_prices), price=draw(st.none() | extreme_prices),
        fee=draw(huge), position_id=draw(st.sampled_from([PID, f"{SOL}|5m|0|short", None])),
        reason=draw(st.none() | st.sampled_from(["stop", "trail", "fault", "manual", "end"])),
        ts=draw(st.integers(0, 2**53)),
    )  # fmt: skip


@FUZZ
@given(
    events=st.lists(order_events(), max_size=6),
    ticks=st.lists(
        st.builds(PriceTick, symbol=st.sampled_from([SOL, ETH]), price=extreme_prices,
                  ts=st.integers(0, 10**6)),
        max_size=6,
    ),
)  # fmt: skip
async def test_state_handlers_succeed_or_change_nothing(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    events: list[OrderEvent],
    ticks: list[PriceTick],
) -> None:
    """An absurd fill (a price of 1e308 makes the PnL infinite) may make a handler raise: the
    bus then retries and dead-letters it. It must not leave half an effect behind."""
    await redis_client.flushall()
    await redis_client.hset(keys.BOOK_POSITIONS, PID, HELD.dump())
    s = make_settings(redis_server, tmp_path)
    state = State(
        ServiceContext(s, "state", "state-fuzz", redis_client),
        Book(redis_client, StrategyParams.from_settings(s)),
    )
    calls: list[Any] = [(state.on_event, ev) for ev in events]
    calls += [(state.on_tick, tick) for tick in ticks]
    for i, (handler, msg) in enumerate(calls):
        before = await snapshot(redis_client)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                await handler(msg, f"{i + 1}-0")
        except Exception:
            assert await snapshot(redis_client) == before, f"half an effect of {msg!r}"

    for pos in (await book.read_positions(redis_client)).values():
        assert pos.quantity > 0
        assert pos.entry_price > 0
    rows: Any = await redis_client.xrange(keys.STREAM_SIGNALS)
    for _, fields in rows:
        decode(fields[b"d"], ExitSignal)


async def snapshot(client: aioredis.Redis) -> tuple[Any, ...]:
    """Return the book and the streams state writes to."""
    return (
        await client.hgetall(keys.BOOK_POSITIONS),
        await client.hgetall(keys.BOOK_TRADES),
        await client.xlen(keys.STREAM_EVENTS),
        await client.xlen(keys.STREAM_SIGNALS),
    )


async def test_a_tick_from_the_future_does_not_blind_state(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await redis_client.hset(keys.BOOK_POSITIONS, PID, HELD.dump())
    s = make_settings(redis_server, tmp_path)
    state = State(
        ServiceContext(s, "state", "state-fuzz", redis_client),
        Book(redis_client, StrategyParams.from_settings(s)),
    )
    await redis_client.set(keys.MD_NOW, 5_000)  # market_data read the exchange at 5_000
    with pytest.raises(Invalid, match=r"dated 4611686018427387904 is past the newest exchange"):
        await state.on_tick(PriceTick(symbol=ETH, price=3_000.0, ts=2**62), "1-0")
    with pytest.raises(Invalid):  # through the stop, but no exchange's price
        await state.on_tick(PriceTick(symbol=SOL, price=140.0, ts=5_001), "2-0")
    assert await redis_client.xlen(keys.STREAM_SIGNALS) == 0
    await state.on_tick(PriceTick(symbol=SOL, price=140.0, ts=5_000), "3-0")  # a true one

    rows: Any = await redis_client.xrange(keys.STREAM_SIGNALS)
    exits = [decode(f[b"d"], ExitSignal) for _, f in rows]
    assert [(e.reason, e.ts) for e in exits] == [("stop", 5_000)]
