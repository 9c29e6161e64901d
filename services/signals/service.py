"""The signals worker: evaluates every closed candle and publishes entry signals.

Consumes ``md.candles`` (``Candle``) through the group ``signals``; any number of workers
share the group and hold no state between candles. For each candle of TIMEFRAME it loads
the symbol's recent closed candles (the ZSET market_data keeps), runs
``services.signals.evaluate`` (the backtester's functions) and, in one MULTI/EXEC, publishes
the ``EntrySignal`` (if the candle qualifies) to ``signals`` and adds the symbol to the set
of candles evaluated for that close time (``tb:close:{close ms}:evaluated``, kept a day), which
the executor counts. The entry is acked only after that transaction. The candles of one read
(up to BATCH) share the round trips: their windows are loaded in one pipeline, evaluated in
one pass and recorded in one MULTI/EXEC; if that fails they are handled one by one.

After a crash: a candle whose transaction ran but whose ack did not is handled again, by
this or another worker, and publishes the same signal id once more (the executor drops
duplicates by id; the set add is idempotent). A candle whose transaction did not run is
redelivered and evaluated as if for the first time; neither the signal nor the set entry
can be visible without the other.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from services.signals.evaluate import (
    CandleWindow,
    Evaluation,
    Prices,
    describe,
    entry_reason,
    evaluate_many,
)
from shared import keys
from shared.bus import Consumer, publish_in
from shared.config import Settings
from shared.metrics import CANDLES_EVALUATED, ENTRY_SIGNALS, EVALUATION_SECONDS
from shared.schemas import Candle, EntrySignal, SchemaError, decode, entry_signal_id
from shared.service import ServiceContext

log = logging.getLogger("signals")

EVALUATED_TTL_S = 86_400  # how long a close's evaluated set is kept
BATCH = 16  # candles read per poll: small, so a close's candles spread over the workers
CACHE_SPARE_SYMBOLS = 16  # decoded windows cached beyond TOP_N (symbols leaving the universe)


Owner = tuple[str, str]  # symbol, timeframe
Row = tuple[Owner, int, Prices]  # whose candle, open time, prices


def stored_row(member: bytes) -> Row | str:
    """Decode and validate one stored candle; return why it is not a valid one instead."""
    try:
        c = decode(member, Candle)
    except SchemaError as e:
        return str(e)
    prices = (c.open, c.high, c.low, c.close, c.volume)
    return (sys.intern(c.symbol), sys.intern(c.timeframe)), c.open_time, prices


def skipped(key: str, rows: list[Row | str], owner: Owner) -> None:
    """Log each stored member of a window that is not a valid candle of its own symbol."""
    for r in rows:
        if isinstance(r, str):
            log.warning("Candle: %s skipped a bad stored candle: %s", key, r)
        elif r[0] != owner:
            log.warning("Candle: %s skipped a stored candle of %s", key, r[0][0])


class CandleEvaluator:
    """Handle candle messages: load their windows, evaluate them, record the outcomes atomically.

    A stored candle is decoded once per worker: ``stored_row`` is a pure function of the
    member's bytes, cached for about every symbol's whole window, so a close re-reads the
    windows it needs but decodes only the candle that is new in each.
    """

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        size = (settings.top_n + CACHE_SPARE_SYMBOLS) * (settings.candle_limit + 1)
        self.stored_row = functools.lru_cache(maxsize=size)(stored_row)

    async def handle(self, candle: Candle, entry_id: str) -> None:
        """Evaluate one closed candle; see ``handle_batch``."""
        await self.handle_batch([(candle, entry_id)])

    async def handle_batch(self, items: list[tuple[Candle, str]]) -> None:
        """Evaluate closed candles; publish their entry signals and mark them evaluated together.

        Two round trips for the whole batch: one pipeline loads every window, one MULTI/EXEC
        records every outcome.
        """
        candles = [candle for candle, _ in items if self.ours(candle)]
        if not candles:
            return
        started = time.perf_counter()
        windows = await self.load_windows(candles)
        evs = evaluate_many(windows, self.settings)
        signals = [self.entry_signal(c, ev) for c, ev in zip(candles, evs, strict=True)]
        per_candle = (time.perf_counter() - started) / len(candles)
        await self.record(candles, signals)
        for candle, ev, signal in zip(candles, evs, signals, strict=True):
            EVALUATION_SECONDS.observe(per_candle)
            CANDLES_EVALUATED.inc()
            if signal is not None:
                ENTRY_SIGNALS.labels(signal.side, signal.symbol).inc()
                log.info("Signal: %s %s %s", signal.side.upper(), candle.symbol, describe(ev))
            else:
                log.debug(
                    "Candle: %s %d no entry (%s)", candle.symbol, candle.open_time, describe(ev)
                )

    def ours(self, candle: Candle) -> bool:
        """Return whether the candle is of TIMEFRAME; log the ones that are not."""
        if candle.timeframe == self.settings.timeframe:
            return True
        log.warning(
            "Candle: %s %s at %d ignored: timeframe is not %s",
            candle.symbol, candle.timeframe, candle.open_time, self.settings.timeframe,
        )  # fmt: skip
        return False

    async def load_windows(self, candles: list[Candle]) -> list[CandleWindow]:
        """Return each candle's window (``window_of``), all loaded in one pipeline."""
        limit = self.settings.candle_limit
        pipe = self.client.pipeline(transaction=False)
        for candle in candles:
            key = keys.candles_key(candle.symbol, candle.timeframe)
            pipe.zrevrangebyscore(key, candle.open_time, "-inf", start=0, num=limit)
        replies: list[Any] = await pipe.execute()
        return [self.window_of(c, raw) for c, raw in zip(candles, replies, strict=True)]

    def window_of(self, candle: Candle, raw: list[bytes]) -> CandleWindow:
        """Return the newest CANDLE_LIMIT stored candles up to this one, ending with this one.

        ``raw`` is the ZREVRANGEBYSCORE reply (newest first); members that do not decode or
        belong elsewhere are skipped (the gap they leave restarts the indicator windows, so
        it can only suppress an entry).
        """
        owner = (candle.symbol, candle.timeframe)
        rows = [self.stored_row(member) for member in reversed(raw)]
        mine = [r for r in rows if type(r) is tuple and r[0] == owner]
        if len(mine) < len(rows):
            skipped(keys.candles_key(*owner), rows, owner)
        by_time = {open_time: prices for _, open_time, prices in mine}
        own = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        if by_time.pop(candle.open_time, None) != own:
            log.debug(
                "Candle: %s window did not end with the candle at %d; appended it",
                candle.symbol, candle.open_time,
            )  # fmt: skip
        keep = self.settings.candle_limit - 1  # stored candles before this one
        times = sorted(by_time)[max(0, len(by_time) - keep) :]
        prices = [by_time[t] for t in times]
        return CandleWindow.from_rows([*times, candle.open_time], [*prices, own])

    def entry_signal(self, candle: Candle, ev: Evaluation) -> EntrySignal | None:
        """Return the entry signal the evaluation calls for, or None."""
        side = ev.side_name
        if side is None:
            return None
        return EntrySignal(
            id=entry_signal_id(candle.symbol, candle.timeframe, candle.open_time, side),
            symbol=candle.symbol,
            timeframe=candle.timeframe,
            candle_open_time=candle.open_time,
            side=side,
            price=candle.close,
            body_pct=ev.body_pct,
            # A baseline of almost no volume overflows the ratio to inf; the message carries
            # the largest finite float instead, which keeps its place first in slot order.
            vol_ratio=min(ev.vol_ratio, sys.float_info.max),
            chop=ev.chop,
            reason=entry_reason(ev, self.settings),
            ts=int(time.time() * 1000),
        )

    async def record(self, candles: list[Candle], signals: list[EntrySignal | None]) -> None:
        """Publish the signals and add the symbols to their closes' evaluated sets, in one
        MULTI/EXEC."""
        tf_ms = self.settings.timeframe_ms
        pipe = self.client.pipeline(transaction=True)
        for signal in signals:
            if signal is not None:
                publish_in(pipe, keys.STREAM_SIGNALS, signal)
        closes: dict[str, set[str]] = {}
        for candle in candles:
            closes.setdefault(keys.close_evaluated_key(candle.open_time + tf_ms), set()).add(
                candle.symbol
            )
        for evaluated, symbols in closes.items():
            pipe.sadd(evaluated, *symbols)
            pipe.expire(evaluated, EVALUATED_TTL_S)
        await pipe.execute()


def candle_consumer(ctx: ServiceContext) -> Consumer[Candle]:
    """Return this worker's consumer of md.candles in the shared signals group."""
    evaluator = CandleEvaluator(ctx.redis, ctx.settings)
    return Consumer(
        ctx.redis,
        keys.STREAM_CANDLES,
        keys.GROUP_SIGNALS,
        ctx.instance,
        evaluator.handle,
        Candle,
        batch_handler=evaluator.handle_batch,
        count=BATCH,
        reclaim_idle_ms=ctx.settings.reclaim_idle_ms,
        max_deliveries=ctx.settings.max_deliveries,
    )


async def run(ctx: ServiceContext) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Evaluate candles until ``ctx.stop`` is set."""
    log.info(
        "signals: %s evaluating %s candles (window %d)",
        ctx.instance, ctx.settings.timeframe, ctx.settings.candle_limit,
    )  # fmt: skip
    await candle_consumer(ctx).run(ctx.stop)
