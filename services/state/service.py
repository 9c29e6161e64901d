"""State: the single writer of the position book. Consumes ``tb:events`` and ``tb:md.ticks``.

It folds the executor's order events into the book (an entry fill opens a position, a
placed stop is recorded, an exit or stop fill closes it into a trade with PnL and fees),
and on every price tick moves each position's best price and evaluates the exit rules in
docs/strategy.md order, publishing exit signals on ``tb:signals``. It reconciles the book with
the exchange at start and every RECONCILE_INTERVAL (``reconcile.py``), asking the executor
for any missing stop. It writes ``tb:state:tick_ms``, the newest price event handled, which
the executor waits for before giving a candle close's entries their slots.

After a crash: every book change and the events and signals it causes are one MULTI/EXEC,
and each fact is folded idempotently (a position opens once, closes once), so redelivered
events and ticks change nothing twice; reconciliation repairs whatever the exchange did
while no state was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from services.signals.rules import StrategyParams
from services.state import fold
from services.state.reconcile import Reconciler
from shared import book, keys
from shared.book import BookPosition, ClosedTrade
from shared.bus import Consumer, Invalid, publish_in
from shared.crash import crash_point
from shared.exchange import ExchangeClient
from shared.metrics import (
    EXIT_SIGNALS,
    POSITION_NOTIONAL,
    POSITIONS_OPEN,
    REALIZED_PNL,
    TRADES_CLOSED,
)
from shared.schemas import (
    ExitSignal,
    Message,
    OrderEvent,
    PriceTick,
    exit_signal_id,
)
from shared.service import ServiceContext

log = logging.getLogger("state")

ACCOUNT_EVERY_S = 5.0
STALE_TICK_MS = 60_000  # a tick this much older than the newest one seen is history, skipped


class Book:
    """The book in Redis; one asyncio lock serialises every read-modify-write of it."""

    def __init__(self, redis: aioredis.Redis, params: StrategyParams) -> None:
        self.redis = redis
        self.params = params
        self.lock = asyncio.Lock()
        self._notional_labels: set[tuple[str, str]] = set()  # position gauges now set

    async def positions(self) -> dict[str, BookPosition]:
        """Return the open positions by id."""
        return await book.read_positions(self.redis)

    async def is_closed(self, position_id: str) -> bool:
        """Return whether a position is already a closed trade."""
        return bool(await self.redis.hexists(keys.BOOK_TRADES, position_id))

    async def save(self, pos: BookPosition, *messages: tuple[str, Message]) -> None:
        """Write a position and publish what it causes, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.BOOK_POSITIONS, pos.position_id, pos.dump())
        for stream, msg in messages:
            publish_in(pipe, stream, msg)
        await pipe.execute()

    async def record_close(self, pos: BookPosition, trade: ClosedTrade, event: str) -> None:
        """Move a position to the closed trades and publish its closing event, in one go."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.BOOK_POSITIONS, pos.position_id)
        pipe.hset(keys.BOOK_TRADES, pos.position_id, trade.dump())
        pipe.zadd(keys.BOOK_TRADE_LOG, {pos.position_id: trade.exit_time})
        closed = fold.position_event(
            event, pos, exit_price=trade.exit_price, exit_reason=trade.reason,
            fees=trade.fees, pnl=trade.pnl, ts=trade.exit_time,
        )  # fmt: skip
        publish_in(pipe, keys.STREAM_EVENTS, closed)
        await pipe.execute()
        TRADES_CLOSED.labels(trade.reason, pos.symbol).inc()
        log.info(
            "Closed: %s %s %s entry=%g exit=%g pnl=%+.2f (fees %.2f) [%s]",
            pos.side.upper(), pos.symbol, trade.reason, trade.entry_price, trade.exit_price,
            trade.pnl, trade.fees, pos.position_id,
        )  # fmt: skip
        await self.refresh_gauges()

    async def close(
        self, pos: BookPosition, price: float, fee: float, ts: int, reason: Any
    ) -> None:
        """Close an open position at a fill price."""
        await self.record_close(pos, fold.close(pos, price, fee, ts, reason), "closed")

    async def refresh_gauges(self) -> None:
        """Update the open-position and realised-PnL gauges."""
        positions = await self.positions()
        POSITIONS_OPEN.set(len(positions))
        notional: dict[tuple[str, str], float] = {}
        for pos in positions.values():
            key = (pos.symbol, pos.side)
            notional[key] = notional.get(key, 0.0) + pos.quantity * pos.entry_price
        for labels in self._notional_labels - notional.keys():
            POSITION_NOTIONAL.remove(*labels)
        for labels, value in notional.items():
            POSITION_NOTIONAL.labels(*labels).set(value)
        self._notional_labels = set(notional)
        trades = await book.read_all_trades(self.redis)
        REALIZED_PNL.set(sum(t.pnl for t in trades))


class State:
    """The handlers of events and ticks; each is idempotent by its natural id."""

    def __init__(self, ctx: ServiceContext, book_: Book) -> None:
        self.ctx = ctx
        self.book = book_
        self.params = book_.params
        self.newest_tick_ms = 0
        self.last_tick: dict[str, int] = {}
        self.md_now_ms = 0  # tb:md:now as last read: no true tick is dated past it

    async def on_event(self, msg: Message, entry_id: str) -> None:
        """Fold one executor event into the book."""
        if not isinstance(msg, OrderEvent) or msg.position_id is None:
            return  # position events are our own; other kinds carry nothing for the book
        if msg.event in ("filled", "stop_filled"):  # pragma: no mutate (a crash-test hook)
            crash_point("event_seen")
        async with self.book.lock:
            await self._fold_order(msg)

    async def _fold_order(self, ev: OrderEvent) -> None:
        assert ev.position_id is not None
        positions = await self.book.positions()
        pos = positions.get(ev.position_id)
        if ev.event == "filled" and ev.purpose == "entry":
            if pos is not None or await self.book.is_closed(ev.position_id):
                return
            opened = fold.open_from_fill(ev, self.params)
            await self.book.save(
                opened, (keys.STREAM_EVENTS, fold.position_event("opened", opened))
            )
            log.info(
                "Opened: %s %s qty=%g entry=%g stop=%g [%s]",
                opened.side.upper(), opened.symbol, opened.quantity, opened.entry_price,
                opened.stop_price, opened.position_id,
            )  # fmt: skip
            await self.book.refresh_gauges()
        elif ev.event == "stop_placed" and pos is not None:
            await self.book.save(fold.with_stop(pos, ev))
        elif ev.event in ("filled", "stop_filled") and ev.purpose in ("exit", "stop"):
            if pos is None or ev.price is None:
                return
            reason = ev.reason or ("stop" if ev.event == "stop_filled" else "manual")
            await self.book.close(pos, ev.price, ev.fee, ev.ts, reason)

    async def on_tick(self, tick: PriceTick, entry_id: str) -> None:
        """Move best prices and ask for exits on one price event; then advance the watermark.

        A tick dated past the newest exchange time market_data read (``tb:md:now``) is no
        exchange's: it is dead-lettered (``Invalid``), so that it can neither trigger an exit
        nor, as the newest tick seen, make every true tick after it look stale.
        """
        if tick.ts > self.md_now_ms:
            await self._refuse_future(tick)
        if tick.ts < self.last_tick.get(tick.symbol, 0) or (
            tick.ts < self.newest_tick_ms - STALE_TICK_MS
        ):
            return
        self.last_tick[tick.symbol] = tick.ts
        self.newest_tick_ms = max(self.newest_tick_ms, tick.ts)
        async with self.book.lock:
            for pos in (await self.book.positions()).values():
                if pos.symbol == tick.symbol:
                    await self._price_event(pos, tick)
            await self.ctx.redis.set(keys.STATE_TICK_MS, self.newest_tick_ms)

    async def _refuse_future(self, tick: PriceTick) -> None:
        """Raise ``Invalid`` for a tick dated past ``tb:md:now`` (none yet: nothing to check)."""
        raw: Any = await self.ctx.redis.get(keys.MD_NOW)
        if raw is None:
            return
        self.md_now_ms = int(raw)
        if tick.ts > self.md_now_ms:
            raise Invalid(
                f"price tick {tick.symbol} dated {tick.ts} is past the newest exchange time "
                f"market_data read ({self.md_now_ms}): not an exchange price, ignored"
            )

    async def _price_event(self, pos: BookPosition, tick: PriceTick) -> None:
        out = fold.on_tick(pos, tick.price, tick.ts, self.params)
        if not out.changed:
            return
        messages: list[tuple[str, Message]] = []
        if out.position.best_price != pos.best_price:
            messages.append((keys.STREAM_EVENTS, fold.position_event("best_price", out.position,
                                                                ts=tick.ts)))  # fmt: skip
        if out.exit_reason is not None and out.exit_price is not None:
            signal = ExitSignal(
                id=exit_signal_id(pos.position_id, out.exit_reason),
                position_id=pos.position_id, symbol=pos.symbol, side=pos.side,
                reason=out.exit_reason, price=out.exit_price,
                best_price=out.position.best_price, ts=tick.ts,
            )  # fmt: skip
            messages.append((keys.STREAM_SIGNALS, signal))
            EXIT_SIGNALS.labels(out.exit_reason).inc()
            log.info(
                "Exit signal: %s %s %s at %g (best %g) [%s]",
                pos.side.upper(), pos.symbol, out.exit_reason, out.exit_price,
                out.position.best_price, pos.position_id,
            )  # fmt: skip
        await self.book.save(out.position, *messages)


async def run(ctx: ServiceContext) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Reconcile, then consume events and ticks and reconcile every RECONCILE_INTERVAL."""
    s = ctx.settings
    params = StrategyParams.from_settings(s)
    book_ = Book(ctx.redis, params)
    client = ExchangeClient.from_settings(s)
    try:
        if not await client.start_when_reachable(ctx.stop):
            return
        state = State(ctx, book_)
        reconciler = Reconciler(ctx, client, book_, params)
        await reconciler.run_once()
        events: Consumer[Message] = Consumer(
            ctx.redis, keys.STREAM_EVENTS, keys.GROUP_STATE, ctx.instance, state.on_event,
            Message, reclaim_idle_ms=s.reclaim_idle_ms, max_deliveries=s.max_deliveries,
        )  # fmt: skip
        ticks: Consumer[PriceTick] = Consumer(
            ctx.redis, keys.STREAM_TICKS, keys.GROUP_STATE, ctx.instance, state.on_tick,
            PriceTick, reclaim_idle_ms=s.reclaim_idle_ms, max_deliveries=s.max_deliveries,
        )  # fmt: skip
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(events.run(ctx.stop), name="state-events")
            tasks.create_task(ticks.run(ctx.stop), name="state-ticks")
            tasks.create_task(reconcile_loop(ctx, reconciler), name="state-reconcile")
            tasks.create_task(account_loop(ctx, reconciler), name="state-account")
    finally:
        await client.close()


async def reconcile_loop(ctx: ServiceContext, reconciler: Reconciler) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Reconcile every RECONCILE_INTERVAL seconds until stopped."""
    while not ctx.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ctx.settings.reconcile_interval)
        if not ctx.stop.is_set():
            await reconciler.run_once()


async def account_loop(ctx: ServiceContext, reconciler: Reconciler) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Refresh the account (wallet, equity) every ACCOUNT_EVERY_S seconds until stopped."""
    while not ctx.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ACCOUNT_EVERY_S)
        if not ctx.stop.is_set():
            await reconciler.refresh_account()
