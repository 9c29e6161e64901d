"""Fuzzing every consumer: the real ``Consumer`` and the real handlers on a real Redis.

For each stream a service consumes (md.candles -> signals worker, signals -> executor,
events and md.ticks -> state), hypothesis draws a batch of entries made from valid
messages of that stream and mutated (tests/property/mutations.py), appends them, and
polls the consumer until its group is done. Then (tests/property/helpers.py ``Fed.check``):

- no exception escaped the consumer (``poll`` returned every time);
- every entry that does not decode is in the DLQ once, reason ``decode``, with its payload,
  and counted in ``tradebot_dlq_messages_total{stream, reason="decode"}``;
- every entry that decodes was handled and acked (``tradebot_bus_acked_total``); the
  signals worker and the executor never raised on one; state may, on an absurd fill (a
  price of 1e308 overflows the PnL), and then the entry is dead-lettered with reason
  ``handler`` and counted in ``tradebot_bus_handler_errors_total`` (test_handlers.py shows
  such a failure changes nothing);
- nothing was traded on garbage: every entry signal the signals worker published comes
  from a candle that decodes; every order on the simulator comes from an entry signal that
  decodes; every position, trade and exit signal of state comes from a message that decodes.

Each example starts from an empty Redis; the examples of one test share the server (and
for the executor the simulator, whose orders accumulate and are all checked every time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.executor.service import Executor
from services.signals.rules import StrategyParams
from services.signals.service import CandleEvaluator
from services.state.service import Book, State
from shared import book, keys
from shared.book import BookPosition, Universe
from shared.bus import ensure_group
from shared.ops import dlq
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id
from shared.redisconn import EmbeddedRedis
from shared.schemas import (
    FIELD,
    Candle,
    DlqEntry,
    EntrySignal,
    ExitSignal,
    Message,
    OrderEvent,
    PositionEvent,
    PriceTick,
    StopCommand,
    decode,
    entry_signal_id,
    exit_signal_id,
    stop_command_id,
)
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.executor.conftest import ETH, SOL
from tests.integration.signals.helpers import make_settings, store, trend
from tests.property.helpers import Fed, feed, fuzz_consumer, reset, text, valid
from tests.property.mutations import entry_fields, mutated

EXAMPLES = 40
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def batches(bases: list[Message]) -> st.SearchStrategy[list[dict[bytes, bytes]]]:
    """Return batches of 1..8 stream entries, each made from one of ``bases``."""
    one = entry_fields(st.sampled_from(bases).flatmap(mutated))
    return st.lists(one, min_size=1, max_size=8)


async def stream(client: aioredis.Redis, name: str) -> list[Message]:
    """Return every message of a stream, decoded."""
    rows: Any = await client.xrange(name)
    return [decode(f[FIELD.encode()]) for _, f in rows]


def no_handler_failures(fed: Fed) -> None:
    """Assert the bus contract, and that no handler raised on a message that decodes."""
    fed.check()
    failures = [(d.error, d.payload) for d in fed.handler_failures()]
    assert not failures, f"a handler raised on a valid message: {failures}"


# --- md.candles -> signals worker ------------------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_signals_worker_trades_nothing_on_garbage_candles(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, data: st.DataObject
) -> None:
    s = make_settings(redis_server, tmp_path)
    series = trend(SOL)  # its last candle qualifies for a long over the stored window
    quiet = trend(SOL, last_volume=100.0)[-1]
    other_tf = series[-1].model_copy(update={"timeframe": "1m"})
    entries = data.draw(batches([series[-1], quiet, other_tf]), label="entries")

    await reset(redis_client, keys.STREAM_CANDLES, keys.GROUP_SIGNALS)
    await store(redis_client, series[:-1])
    evaluator = CandleEvaluator(redis_client, s)
    consumer = fuzz_consumer(
        redis_client, keys.STREAM_CANDLES, keys.GROUP_SIGNALS, evaluator.handle, Candle
    )
    fed = await feed(redis_client, consumer, entries)

    no_handler_failures(fed)
    allowed = {
        entry_signal_id(c.symbol, c.timeframe, c.open_time, side)
        for c in fed.messages()
        if isinstance(c, Candle)
        for side in ("long", "short")
    }
    for signal in await stream(redis_client, keys.STREAM_SIGNALS):
        assert isinstance(signal, EntrySignal)
        assert signal.id in allowed, f"signal {signal.id} from no valid candle"


# --- signals -> executor ---------------------------------------------------------------------


def order_ids_of(signal_ids: set[str]) -> set[str]:
    """Return every client order id the executor may derive from these position ids."""
    out: set[str] = set()
    for pid in signal_ids:
        out |= {entry_client_id(pid), exit_client_id(pid)}
        out |= {stop_client_id(pid, seq) for seq in range(3)}
    return out


@FUZZ
@given(data=st.data())
async def test_executor_sends_no_order_for_garbage_signals(
    executor: Executor, sim: SimHandle, redis_client: aioredis.Redis, data: st.DataObject
) -> None:
    now = await executor.client.server_time()
    tf = executor.s.timeframe_ms
    open_ms = now - now % tf - tf  # the candle that closed last: a fresh signal trades

    def entry(symbol: str, side: Any) -> EntrySignal:
        return EntrySignal(
            id=entry_signal_id(symbol, "5m", open_ms, side), symbol=symbol, timeframe="5m",
            candle_open_time=open_ms, side=side, price=150.0, body_pct=0.01, vol_ratio=2.0,
            chop=40.0, ts=now,
        )  # fmt: skip

    pid = entry(SOL, "long").id
    bases: list[Message] = [
        entry(SOL, "long"),
        entry(SOL, "short"),
        entry(ETH, "long"),  # not in the universe: refused
        ExitSignal(
            id=exit_signal_id(pid, "trail"), position_id=pid, symbol=SOL, side="long",
            reason="trail", price=150.0, best_price=155.0, ts=now,
        ),
        StopCommand(
            id=stop_command_id(pid, 1), position_id=pid, symbol=SOL, side="long",
            quantity=1.0, stop_price=140.0, seq=1, ts=now,
        ),
    ]  # fmt: skip
    entries = data.draw(batches(bases), label="entries")

    await reset(redis_client, keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR)
    universe = Universe(symbols=[SOL], rotated_ms=now)
    await redis_client.set(keys.UNIVERSE, universe.dump())
    consumer = fuzz_consumer(
        redis_client, keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR, executor.handle, Message
    )
    fed = await feed(redis_client, consumer, entries)
    for close_ms, _ in await executor.journal.batches():  # what allot_loop does once ready
        await executor.allot(close_ms)

    no_handler_failures(fed)
    traded = {m.id for m in fed.messages() if isinstance(m, EntrySignal)}
    seen: set[str] = executor.__dict__.setdefault("fuzz_signal_ids", set())
    seen |= traded  # the simulator keeps the orders of earlier examples
    allowed = order_ids_of(seen)
    account = sim.account
    for order in account.orders.values():
        assert order.client_order_id in allowed, f"order {order.client_order_id} from garbage"
    for algo in account.algo_orders.values():
        assert algo.client_algo_id in allowed, f"stop {algo.client_algo_id} from garbage"


# --- events and md.ticks -> state --------------------------------------------------------------

PID = f"{SOL}|5m|1699999700000|long"
HELD = BookPosition(
    position_id=PID, symbol=SOL, side="long", quantity=2.0, entry_price=150.0,
    entry_time=1_000, stop_price=147.0, best_price=150.0,
)  # fmt: skip


def order_event(event: Any, purpose: Any, side: Any, price: float, pid: str, **kw: Any) -> Message:
    return OrderEvent(
        event=event, client_order_id=f"c-{event}-{purpose}", signal_id=pid, symbol=SOL,
        side=side, purpose=purpose, quantity=2.0, price=price, fee=0.15, position_id=pid,
        ts=2_000, **kw,
    )  # fmt: skip


@FUZZ
@given(data=st.data())
async def test_state_books_nothing_from_garbage_events_and_ticks(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, data: st.DataObject
) -> None:
    s = make_settings(redis_server, tmp_path)
    new_pid = f"{SOL}|5m|1700000000000|short"
    events: list[Message] = [
        order_event("filled", "entry", "sell", 151.0, new_pid),
        order_event("stop_placed", "stop", "sell", 146.5, PID),
        order_event("filled", "exit", "sell", 155.0, PID, reason="trail"),
        order_event("stop_filled", "stop", "sell", 146.9, PID, reason="stop"),
        PositionEvent(
            event="opened", position_id=PID, symbol=SOL, side="long", quantity=2.0,
            entry_price=150.0, ts=1_000,
        ),
    ]  # fmt: skip
    prices = (154.0, 146.0, 150.0)  # trail armed, through the stop, back
    ticks: list[Message] = [
        PriceTick(symbol=SOL, price=p, ts=3_000 + i) for i, p in enumerate(prices)
    ]
    ticks.append(PriceTick(symbol=ETH, price=3_000.0, ts=3_100))
    event_entries = data.draw(batches(events), label="events")
    tick_entries = data.draw(batches(ticks), label="ticks")

    await reset(redis_client, keys.STREAM_EVENTS, keys.GROUP_STATE)
    await ensure_group(redis_client, keys.STREAM_TICKS, keys.GROUP_STATE)
    await redis_client.hset(keys.BOOK_POSITIONS, PID, HELD.dump())
    ctx = ServiceContext(s, "state", "state-fuzz", redis_client)
    state = State(ctx, Book(redis_client, StrategyParams.from_settings(s)))
    on_events = fuzz_consumer(
        redis_client, keys.STREAM_EVENTS, keys.GROUP_STATE, state.on_event, Message
    )
    on_ticks = fuzz_consumer(
        redis_client, keys.STREAM_TICKS, keys.GROUP_STATE, state.on_tick, PriceTick
    )
    fed_events = await feed(redis_client, on_events, event_entries)
    fed_ticks = await feed(redis_client, on_ticks, tick_entries)

    fed_events.check()  # an absurd fill (PnL overflows) may fail: dead-lettered as "handler"
    fed_ticks.check()
    known = {PID} | {
        m.position_id
        for m in fed_events.messages()
        if isinstance(m, OrderEvent) and m.position_id is not None
    }
    positions = await book.read_positions(redis_client)
    trades: Any = await redis_client.hkeys(keys.BOOK_TRADES)
    assert set(positions) <= known, "a position from garbage"
    assert {t.decode() for t in trades} <= known, "a trade from garbage"
    tick_times = {m.ts for m in fed_ticks.messages() if isinstance(m, PriceTick)}
    for signal in await stream(redis_client, keys.STREAM_SIGNALS):
        assert isinstance(signal, ExitSignal)
        assert signal.position_id in known
        assert signal.ts in tick_times, f"exit signal from no valid tick: {signal}"


# --- the DLQ reader: tradebot dlq list / replay ------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_dlq_reader_survives_garbage_dead_letters(
    redis_client: aioredis.Redis, data: st.DataObject
) -> None:
    base = DlqEntry(
        stream=keys.STREAM_TICKS, group=keys.GROUP_STATE, entry_id="1-0", reason="decode",
        error="not valid JSON", deliveries=1, payload="{", ts=1,
    )  # fmt: skip
    entries = data.draw(batches([base]), label="dead letters")
    await redis_client.flushall()
    ids = [text(await redis_client.xadd(keys.STREAM_DLQ, f)) for f in entries]  # type: ignore[arg-type]

    letters = await dlq.newest(redis_client, 100)
    assert [x.id for x in letters] == ids[::-1]
    for letter, fields in zip(letters, entries[::-1], strict=True):
        assert letter.entry == valid(fields, DlqEntry)
        if letter.entry is None:  # unreadable: left in place, never replayed
            assert await dlq.replay_one(redis_client, letter.id) == (
                None, "not a readable dead letter (left in place)",
            )  # fmt: skip
    assert await redis_client.xlen(keys.STREAM_TICKS) == 0 or any(x.entry for x in letters)
