"""The signals worker: evaluates every closed candle and publishes entry signals.

Consumes ``md.candles`` (``Candle``) through the group ``signals``; any number of workers
share the group and hold no state between candles. For each candle of TIMEFRAME it loads
the symbol's recent closed candles (the ZSET market_data keeps) in one round trip, runs
``services.signals.evaluate`` (the backtester's functions) and, in one MULTI/EXEC, publishes
the ``EntrySignal`` (if the candle qualifies) to ``signals`` and adds the symbol to the set
of candles evaluated for that close time (``tb:close:{close ms}:evaluated``, kept a day), which
the executor counts. The entry is acked only after that transaction.

After a crash: a candle whose transaction ran but whose ack did not is handled again, by
this or another worker, and publishes the same signal id once more (the executor drops
duplicates by id; the set add is idempotent). A candle whose transaction did not run is
redelivered and evaluated as if for the first time; neither the signal nor the set entry
can be visible without the other.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from services.signals.evaluate import Evaluation, describe, entry_reason, evaluate
from shared import keys
from shared.bus import Consumer, publish_in
from shared.config import Settings
from shared.metrics import CANDLES_EVALUATED, ENTRY_SIGNALS, EVALUATION_SECONDS
from shared.schemas import Candle, EntrySignal, SchemaError, decode, entry_signal_id
from shared.service import ServiceContext

log = logging.getLogger("signals")

EVALUATED_TTL_S = 86_400  # how long a close's evaluated set is kept
BATCH = 16  # candles read per poll: small, so a close's candles spread over the workers


class CandleEvaluator:
    """Handle one candle message: load its window, evaluate it, record the outcome atomically."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    async def handle(self, candle: Candle, entry_id: str) -> None:
        """Evaluate a closed candle; publish its entry signal and mark it evaluated together."""
        if candle.timeframe != self.settings.timeframe:
            log.warning(
                "Candle: %s %s at %d ignored: timeframe is not %s",
                candle.symbol, candle.timeframe, candle.open_time, self.settings.timeframe,
            )  # fmt: skip
            return
        started = time.perf_counter()
        window = await self.load_window(candle)
        ev = evaluate(window, self.settings)
        signal = self.entry_signal(candle, ev)
        EVALUATION_SECONDS.observe(time.perf_counter() - started)
        await self.record(candle, signal)
        CANDLES_EVALUATED.inc()
        if signal is not None:
            ENTRY_SIGNALS.labels(signal.side, signal.symbol).inc()
            log.info("Signal: %s %s %s", signal.side.upper(), candle.symbol, describe(ev))
        else:
            log.debug("Candle: %s %d no entry (%s)", candle.symbol, candle.open_time, describe(ev))

    async def load_window(self, candle: Candle) -> list[Candle]:
        """Return the newest CANDLE_LIMIT stored candles up to this one, ending with this one.

        One ZREVRANGEBYSCORE; members that do not decode or belong elsewhere are skipped (the
        gap they leave restarts the indicator windows, so it can only suppress an entry).
        """
        limit = self.settings.candle_limit
        key = keys.candles_key(candle.symbol, candle.timeframe)
        raw: Any = await self.client.zrevrangebyscore(
            key, candle.open_time, "-inf", start=0, num=limit
        )
        by_time: dict[int, Candle] = {}
        for member in reversed(raw):
            try:
                stored = decode(member, Candle)
            except SchemaError as e:
                log.warning("Candle: %s skipped a bad stored candle: %s", key, e)
                continue
            if (stored.symbol, stored.timeframe) != (candle.symbol, candle.timeframe):
                log.warning("Candle: %s skipped a stored candle of %s", key, stored.symbol)
                continue
            by_time[stored.open_time] = stored
        if by_time.get(candle.open_time) != candle:
            log.debug(
                "Candle: %s window did not end with the candle at %d; appended it",
                candle.symbol, candle.open_time,
            )  # fmt: skip
        by_time.pop(candle.open_time, None)
        window = sorted(by_time.values(), key=lambda c: c.open_time)
        window.append(candle)
        return window[-limit:]

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

    async def record(self, candle: Candle, signal: EntrySignal | None) -> None:
        """Publish the signal and add the symbol to the close's evaluated set in one MULTI/EXEC."""
        evaluated = keys.close_evaluated_key(candle.open_time + self.settings.timeframe_ms)
        pipe = self.client.pipeline(transaction=True)
        if signal is not None:
            publish_in(pipe, keys.STREAM_SIGNALS, signal)
        pipe.sadd(evaluated, candle.symbol)
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
