"""The executor: the only code that sends orders. Consumes ``tb:signals``, produces ``tb:events``.

It consumes entry signals (from signals workers), exit signals and stop commands (from
state). Entry signals of one candle close are kept in Redis until every candle of that
close was evaluated, the exits of that close are done and state has folded every fill
(or ``ENTRY_WAIT_MS`` passed); then they get the free slots by descending vol_ratio,
then symbol. Each entry passes the risk checks (``risk.check_entry``), is sized from the
exchange's equity, written as an intent and only then sent; once filled, its reduce-only
stop is placed at SL_PCT. Exits are reduce-only market orders; the stop is cancelled only
after the exit filled. Every step is an event on ``tb:events``.

After a crash: every order that may exist has an open intent; a new holder of the lease
first waits a recvWindow plus slack (any send of the previous holder is then dead, its
timestamp being pinned at its lease check), then asks the exchange about each open intent
by client order id. An entry found is completed (stop placed); an entry not found is
abandoned, never resent; a stop or exit not found is placed (both are reduce-only). No
signal id ever yields two orders: every order's client id derives from its position id.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisError

from services.executor import orders as o
from services.executor.journal import IntentNotConfirmed, Journal
from services.executor.risk import (
    EntryContext,
    EntryDecision,
    by_priority,
    check_entry,
    close_time_ms,
)
from services.signals.rules import StrategyParams
from shared import book, keys
from shared.book import BookPosition
from shared.bus import Consumer
from shared.crash import crash_point
from shared.exchange import ExchangeClient
from shared.exchange_errors import (
    OperationalError,
    OrderRejected,
    OutcomeUnknown,
    SendRefused,
    TemporaryError,
)
from shared.exchange_models import MarketInfo, Order
from shared.metrics import ENTRIES_REFUSED, ORDERS, PUBLISH_TO_ORDER, SIGNAL_TO_ORDER
from shared.order_ids import stop_client_id
from shared.schemas import (
    EntrySignal,
    ExitReason,
    ExitSignal,
    Message,
    OrderEvent,
    OrderIntent,
    Side,
    StopCommand,
    entry_candle_open_ms,
)
from shared.service import ServiceContext

log = logging.getLogger("executor")

POLL_S = 0.05
# A close waiting for its last evaluations is checked again after 1 ms, then 2, 4... up to
# POLL_S: its entries go out within about a millisecond of the close becoming complete,
# and a close that stays incomplete (a worker down) costs no more than the idle polling.
READY_POLL_S = 0.001
# The orders the current flow (task) itself is working on.
_OWN_WORK: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "executor_own_work", default=frozenset()
)
RESUME_EVERY_S = 5.0
STOP_SETTLE_WAIT_S = 30.0
STOP_PLACE_TRIES = 3


class Executor:
    """The order flows; each method states what it does to money."""

    def __init__(self, ctx: ServiceContext, client: ExchangeClient, markets: dict[str, MarketInfo]):
        self.ctx = ctx
        self.s = ctx.settings
        self.client = client
        self.markets = markets
        self.params = StrategyParams.from_settings(ctx.settings)
        self.journal = Journal(ctx.redis)
        self.redis = ctx.redis
        self.leverage_set: set[str] = set()
        self.busy: set[str] = set()  # client order ids being worked on right now
        self.touched: dict[str, float] = {}  # client order id -> monotonic time last worked on
        self.exits_running = 0
        self.published_us: dict[int, int] = {}  # close ms -> when market_data published it
        self.wake = asyncio.Event()
        self.work_done = asyncio.Event()  # set whenever an order stops being worked on

    # --- plumbing ------------------------------------------------------------------------

    def guard(self) -> bool:
        """Return whether this copy may send now (lease held, not stopping)."""
        return self.ctx.may_act()

    @contextlib.contextmanager
    def working_on(self, client_order_id: str) -> Iterator[None]:
        """Mark an order as being worked on, so the resume loop leaves it alone."""
        self.busy.add(client_order_id)
        token = _OWN_WORK.set(_OWN_WORK.get() | {client_order_id})
        try:
            yield
        finally:
            _OWN_WORK.reset(token)
            self.busy.discard(client_order_id)
            self.touched[client_order_id] = time.monotonic()
            self.work_done.set()

    def event(self, intent: OrderIntent, event: str, **fields: Any) -> OrderEvent:
        """Return an event about an intent's order."""
        return OrderEvent(
            event=event,  # type: ignore[arg-type]
            client_order_id=intent.client_order_id,
            signal_id=intent.signal_id,
            symbol=intent.symbol,
            side=intent.side,
            purpose=intent.purpose,
            quantity=fields.pop("quantity", intent.quantity),
            ts=fields.pop("ts", None) or self.client.exchange_now_ms(),
            **fields,
        )

    async def handle(self, msg: Message, entry_id: str) -> None:
        """Route one message of ``tb:signals``; effects are durable before it returns."""
        if isinstance(msg, EntrySignal):
            await self.queue_entry(msg)
        elif isinstance(msg, ExitSignal | StopCommand):
            self.exits_running += 1  # entries of a close wait for these (see close_ready)
            try:
                if isinstance(msg, ExitSignal):
                    await self.on_exit_signal(msg)
                else:
                    await self.on_stop_command(msg)
            finally:
                self.exits_running -= 1
        else:
            log.warning(
                "Signals: %s %s is not for the executor; ignored", type(msg).__name__, entry_id
            )

    # --- entries -------------------------------------------------------------------------

    async def queue_entry(self, signal: EntrySignal) -> None:
        """Keep an entry with the others of its candle close until the close is complete."""
        if await self.journal.settled(signal.id) is not None:
            log.info("Entry %s already settled: duplicate ignored", signal.id)
            return
        if signal.timeframe != self.s.timeframe:
            log.warning("Entry refused: %s (timeframe %s is not ours)", signal.id, signal.timeframe)
            ENTRIES_REFUSED.labels("wrong_timeframe").inc()
            await self.journal.settle(signal.id, "refused:wrong_timeframe")
            return
        await self.journal.queue_entry(signal, close_time_ms(signal, self.s.timeframe_ms))
        self.wake.set()

    async def close_ready(self, close_ms: int, arrived_ms: int) -> bool:
        """Return whether a close's entries may get their slots now (see the module doc)."""
        if time.time() * 1000 - arrived_ms >= self.s.entry_wait_ms:
            expected, evaluated = await self.journal.evaluations(close_ms)
            log.warning(
                "Entries of close %d: allotting after %d ms (%d/%s candles evaluated)",
                close_ms, self.s.entry_wait_ms, evaluated, expected,
            )  # fmt: skip
            return True
        expected, evaluated = await self.journal.evaluations(close_ms)
        if expected is None or evaluated < expected or self.exits_running:
            return False
        watermark = await self.redis.get(keys.STATE_TICK_MS)
        if watermark is None or int(watermark) < close_ms:
            return False
        return await self._group_idle(keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR) and (
            await self._group_idle(keys.STREAM_EVENTS, keys.GROUP_STATE)
        )

    async def _group_idle(self, stream: str, group: str) -> bool:
        """Return whether the group exists and has read and acknowledged all of the stream."""
        if not await self.redis.exists(stream):  # its reader never started: not idle
            return False
        groups: Any = await self.redis.xinfo_groups(stream)
        for g in groups:
            if g["name"] == group.encode():  # the services' clients never decode replies
                return bool(not g.get("lag") and not g.get("pending"))
        return False

    async def allot_loop(self) -> None:
        # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
        """Give complete closes their slots, oldest close first."""
        waiting: int | None = None  # the close found incomplete at the last check
        wait_s = POLL_S
        while not self.ctx.stop.is_set():
            self.wake.clear()  # before looking: a wake while we look is not lost
            blocked = None
            for close_ms, arrived in await self.journal.batches():
                if not await self.close_ready(close_ms, arrived):
                    blocked = close_ms
                    break
                try:
                    await self.allot(close_ms)
                except TemporaryError as e:
                    log.warning("Entries of close %d: exchange unreachable, retried: %s",
                                close_ms, e)  # fmt: skip
                    break
            if blocked is None:
                wait_s = POLL_S
            else:
                wait_s = READY_POLL_S if blocked != waiting else min(wait_s * 2, POLL_S)
            waiting = blocked
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait_s)

    async def allot(self, close_ms: int) -> None:
        """Decide the entries of one close in slot order and send the accepted ones."""
        published: Any = await self.redis.get(keys.close_published_key(close_ms))
        if published is not None:
            self.published_us[close_ms] = int(published)
        signals = by_priority(await self.journal.batch(close_ms))
        now = await self.client.server_time()
        for signal in signals:
            await self.enter(signal, now)
        await self.journal.finish_batch(close_ms, [s.id for s in signals])
        self.published_us.pop(close_ms, None)

    async def entry_context(self, symbol: str, now: int) -> EntryContext:
        """Read what the risk checks need: halt, slots, universe, market, equity."""
        positions = await book.read_positions(self.redis)
        pending = await self.journal.pending_entries()
        held = {p.position_id for p in positions.values()}
        for sym, pid in pending.items():
            if pid in held or await self.redis.hexists(keys.BOOK_TRADES, pid):
                await self.journal.drop_pending(sym, pid)
        pending = await self.journal.pending_entries()
        occupied = {p.symbol for p in positions.values()} | set(pending)
        universe = await book.read_universe(self.redis)
        market = self.markets.get(symbol)
        balance = await self.client.balance()
        return EntryContext(
            now_ms=now,
            halted=await book.is_halted(self.redis),
            occupied=occupied,
            universe=None if universe is None else set(universe.symbols),
            limits=None if market is None else o.limits_of(market),
            equity=balance.equity,
            free_margin=balance.free,
        )

    async def enter(self, signal: EntrySignal, now: int) -> None:
        """Risk-check one entry, write its intent, send it; see ``place_entry``."""
        if await self.journal.settled(signal.id) is not None:
            return
        try:
            decision = check_entry(signal, await self.entry_context(signal.symbol, now), self.s)
            if decision.refused is None:
                await self.ensure_leverage(signal.symbol)
        except TemporaryError as e:
            log.warning("Entry %s not decided, exchange unreachable: %s", signal.id, e)
            decision = EntryDecision(refused="exchange_unreachable", detail=str(e))
        except (OrderRejected, OperationalError) as e:  # e.g. the leverage refused
            log.error("Entry %s not decided, the exchange refused: %s", signal.id, e)
            decision = EntryDecision(refused="exchange_rejected", detail=str(e))
        except (RedisError, ConnectionError):
            raise  # Redis away: the bus outage policy, not this entry's fault
        except Exception as e:  # a bug while deciding: refuse this one entry, keep trading
            log.exception("Entry %s not decided, unexpected %s: refused (please report this "
                          "log line)", signal.id, type(e).__name__)  # fmt: skip
            decision = EntryDecision(refused="error", detail=f"{type(e).__name__}: {e}")
        if decision.refused is not None:
            log.info(
                "Entry refused: %s %s (%s: %s) [%s]",
                signal.side.upper(), signal.symbol, decision.refused, decision.detail, signal.id,
            )  # fmt: skip
            ENTRIES_REFUSED.labels(decision.refused).inc()
            await self.journal.settle(signal.id, f"refused:{decision.refused}")
            return
        # Stamped with the signing clock, as stop and exit intents are: resume() compares it
        # with that clock (the server time runs ahead of it on a sped-up simulator).
        intent = o.entry_intent(
            signal.id, signal.symbol, signal.side, decision.quantity, self.client.exchange_now_ms()
        )
        log.info(
            "Entry: %s %s qty=%g at ~%g (VR=%.2f) [%s]",
            signal.side.upper(), signal.symbol, intent.quantity, signal.price,
            signal.vol_ratio, signal.id,
        )  # fmt: skip
        submitted = self.event(intent, "submitted", position_id=signal.id, ts=now)
        with self.working_on(intent.client_order_id):  # before the write: resume keeps off
            try:
                await self.journal.open_intent(intent, submitted, pending_symbol=True)
            except IntentNotConfirmed:
                return  # not sent (the journal said why); the resume loop abandons the intent
            crash_point("entry_intent_written")
            await self.place_entry(intent)

    async def ensure_leverage(self, symbol: str) -> None:
        """Set LEVERAGE on a symbol once per run (idempotent on the exchange)."""
        if symbol not in self.leverage_set:
            await self.client.set_leverage(symbol, self.s.leverage)
            self.leverage_set.add(symbol)

    async def place_entry(self, intent: OrderIntent) -> None:
        """Send the entry; a refusal or a provable non-send frees the slot, unknown keeps it.

        OrderRejected / InsufficientMargin / TemporaryError: not executed, the signal is
        settled and its slot freed. OutcomeUnknown: the intent stays open and the slot
        taken until the resume loop finds the order or proves it absent.
        """
        pid = intent.signal_id
        try:
            order = await self.client.place_order(intent, guard=self.guard)
        except (OrderRejected, TemporaryError) as e:
            outcome = "rejected" if isinstance(e, OrderRejected) else "not_sent"
            log.warning("Entry %s %s: %s", intent.symbol, outcome.replace("_", " "), e)
            ORDERS.labels("entry", outcome).inc()
            rejected = self.event(intent, "rejected", position_id=pid, error=str(e))
            await self.journal.close_intent(
                intent, outcome, rejected, record_id=pid, clear_pending=True
            )
            return
        except OutcomeUnknown as e:
            log.error("Entry %s outcome unknown, kept in flight: %s", intent.symbol, e)
            ORDERS.labels("entry", "unknown").inc()
            return
        self.sent(intent)
        await self.finish_entry(intent, order)

    def sent(self, intent: OrderIntent) -> None:
        """Time an entry the exchange just acknowledged from when its close was published."""
        close_ms = entry_candle_open_ms(intent.signal_id) + self.s.timeframe_ms
        published = self.published_us.get(close_ms)
        if published is None:  # allotted by another holder, or the key expired
            return
        seconds = max(0.0, time.time() - published / 1e6)
        PUBLISH_TO_ORDER.observe(seconds)
        log.info("Entry sent: %s %.2f ms after its candle was published [%s]",
                 intent.symbol, seconds * 1000, intent.signal_id)  # fmt: skip

    async def finish_entry(self, intent: OrderIntent, order: Order) -> None:
        """Report a placed entry's fill, then protect it with its stop before settling."""
        pid = intent.signal_id
        if order.status == "open":
            log.warning("Entry %s not filled yet; resumed later", intent.client_order_id)
            return
        if order.filled <= 0 or order.average is None:
            ORDERS.labels("entry", "rejected").inc()
            rejected = self.event(intent, "rejected", position_id=pid, error=order.status)
            await self.journal.close_intent(
                intent, "rejected", rejected, record_id=pid, clear_pending=True
            )
            return
        side = o.position_side(intent.side)
        price = order.average
        filled = self.event(
            intent, "filled", position_id=pid, quantity=order.filled, price=price,
            fee=o.taker_fee(order.filled, price, self.s.fee_rate),
            exchange_order_id=order.id, ts=order.timestamp,
        )  # fmt: skip
        await self.journal.publish(filled)
        ORDERS.labels("entry", "filled").inc()
        if order.timestamp is not None:  # candle close to fill, both on the exchange's clock
            candle_open = entry_candle_open_ms(pid)
            SIGNAL_TO_ORDER.observe(
                max(0, order.timestamp - candle_open - self.s.timeframe_ms) / 1000
            )
        log.info("Filled: %s %s qty=%g at %g [%s]", side.upper(), intent.symbol, order.filled,
                 price, pid)  # fmt: skip
        crash_point("entry_filled")
        entry_stop = o.stop_price_for(side, price, self.params, self._tick(intent.symbol))
        await self.protect(pid, intent.symbol, side, order.filled, entry_stop, seq=0)
        await self.journal.close_intent(intent, "filled", record_id=pid)

    # --- protection ----------------------------------------------------------------------

    def _tick(self, symbol: str) -> float | None:
        market = self.markets.get(symbol)
        return None if market is None else market.price_tick

    async def protect(
        self, pid: str, symbol: str, side: Side, qty: float, stop: float, seq: int
    ) -> None:
        """Place the reduce-only stop; if the exchange refuses it, close the position.

        A position without its stop is a fault repaired at once: a refused stop (e.g. the
        price is already beyond it, -2021) or one that cannot be sent after a few tries
        closes the position at market. An unknown outcome is left to the resume loop and to
        state's reconciliation, which repairs a missing stop.
        """
        now = self.client.exchange_now_ms()
        on_grid = o.stop_on_grid(side, stop, self._tick(symbol))
        intent = o.stop_intent(pid, symbol, side, qty, on_grid, seq, now)
        with self.working_on(intent.client_order_id):
            await self.journal.open_intent(intent)
            await self.place_stop(intent, side)

    async def place_stop(self, intent: OrderIntent, side: Side) -> None:
        """Send a stop intent (looked up first); report it, or close the position on refusal."""
        pid = intent.signal_id
        failure: Exception | None = None
        for attempt in range(1, STOP_PLACE_TRIES + 1):
            try:
                order = await self.client.place_order(intent, guard=self.guard)
            except OrderRejected as e:
                failure = e
                break
            except TemporaryError as e:
                failure = e
                if attempt < STOP_PLACE_TRIES:
                    await asyncio.sleep(attempt)
                continue
            except OutcomeUnknown as e:
                log.error("Stop %s outcome unknown; resumed later: %s", intent.symbol, e)
                ORDERS.labels("stop", "unknown").inc()
                return
            if order.status in ("open", "closed"):
                placed = self.event(
                    intent, "stop_placed", position_id=pid, price=intent.stop_price,
                    exchange_order_id=order.id,
                )  # fmt: skip
                await self.journal.close_intent(intent, "placed", placed)
                ORDERS.labels("stop", "placed").inc()
                log.info("Stop placed: %s %s at %g [%s]", side.upper(), intent.symbol,
                         intent.stop_price, pid)  # fmt: skip
                return
            failure = OrderRejected(f"stop ended {order.status}")
            break
        log.error(
            "Stop for %s %s not placed (%s): closing the position at market [%s]",
            side.upper(), intent.symbol, failure, pid,
        )  # fmt: skip
        ORDERS.labels("stop", "rejected").inc()
        rejected = self.event(intent, "rejected", position_id=pid, error=str(failure))
        await self.journal.close_intent(intent, "rejected", rejected)
        await self.close_position(pid, intent.symbol, side, intent.quantity, "fault", pid, [])

    async def on_stop_command(self, cmd: StopCommand) -> None:
        """Place the stop state asked for (an adopted position, or a repair)."""
        positions = await book.read_positions(self.redis)
        if cmd.position_id not in positions:
            log.info("Stop command for %s: position no longer open; ignored", cmd.position_id)
            return
        # A repair asked for while this executor was down may find the position's earlier
        # stop placed since (resume finished it): a second one would outlive the position.
        # One being placed right now (the entry's own stop, slowed by the exchange) counts too:
        # that flow ends with it placed, the position closed, or its intent left to resume.
        earlier = {stop_client_id(cmd.position_id, seq) for seq in range(cmd.seq)}
        if earlier & self.busy:
            log.info("Stop command for %s: an earlier stop of it is being placed; not placing "
                     "another", cmd.position_id)  # fmt: skip
            return
        open_stops = await self.client.open_stop_orders(cmd.symbol) if earlier else []
        if any(s.client_order_id in earlier for s in open_stops):
            log.info("Stop command for %s: an earlier stop of it is open; not placing another",
                     cmd.position_id)  # fmt: skip
            return
        log.info("Stop command: %s %s at %g (%s)", cmd.side.upper(), cmd.symbol, cmd.stop_price,
                 cmd.reason or "repair")  # fmt: skip
        await self.protect(cmd.position_id, cmd.symbol, cmd.side, cmd.quantity, cmd.stop_price,
                           cmd.seq)  # fmt: skip

    # --- exits ---------------------------------------------------------------------------

    async def on_exit_signal(self, signal: ExitSignal) -> None:
        """Close a position at market (trail, manual, fault) or confirm its stop filled."""
        positions = await book.read_positions(self.redis)
        pos = positions.get(signal.position_id)
        if pos is None:
            log.info("Exit %s: position not open in the book; ignored", signal.id)
            return
        stops = position_stops(pos.position_id, pos)
        if signal.reason == "stop":
            await self.confirm_stop(pos.position_id, pos.symbol, pos.side, stops)
            return
        await self.close_position(
            pos.position_id, pos.symbol, pos.side, pos.quantity, signal.reason, signal.id, stops
        )

    async def stop_fill(self, symbol: str, stop_cid: str) -> Order | None:
        """Return the market order a stop triggered, once that order filled, else None.

        A triggered stop reads TRIGGERING (ccxt: open), then TRIGGERED (closed, maybe without
        its order id yet), then FINISHED with ``actualOrderId``; only the filled order it
        placed proves the fill and gives its price.
        """
        stop = await self.client.fetch_stop_order(symbol, stop_cid)
        if stop is None or stop.status != "closed" or stop.triggered_order_id is None:
            return None
        fill = await self.client.fetch_order_by_id(symbol, stop.triggered_order_id)
        if fill is None or fill.filled <= 0 or fill.average is None:
            return None
        return fill

    async def confirm_stop(self, pid: str, symbol: str, side: Side, stop_cids: list[str]) -> bool:
        """Report the fill of one of a position's stops; return whether one filled."""
        for stop_cid in stop_cids:
            fill = await self.stop_fill(symbol, stop_cid)
            if fill is not None and fill.average is not None:
                break
        else:
            log.info("Stop of %s %s not filled on the exchange yet [%s]", side.upper(), symbol, pid)
            return False
        event = OrderEvent(
            event="stop_filled", client_order_id=stop_cid, exchange_order_id=fill.id,
            signal_id=pid, symbol=symbol, side=o.closing_side(side), purpose="stop",
            quantity=fill.filled, price=fill.average,
            fee=o.taker_fee(fill.filled, fill.average, self.s.fee_rate), position_id=pid,
            reason="stop", ts=fill.timestamp or self.client.exchange_now_ms(),
        )  # fmt: skip
        await self.journal.publish(event)
        ORDERS.labels("stop", "filled").inc()
        log.info("Stop filled: %s %s at %g [%s]", side.upper(), symbol, fill.average, pid)
        return True

    async def close_position(
        self,
        pid: str,
        symbol: str,
        side: Side,
        qty: float,
        reason: ExitReason,
        signal_id: str,
        stop_cids: list[str],
    ) -> None:
        """Close a position with a reduce-only market order, then cancel its stop.

        Reduce-only means neither this order nor a stop that fires at the same moment can
        ever open an opposite position. Refused because nothing is left (-2022): the stop
        probably filled, and that fill is reported instead. TemporaryError: provably not
        sent; raised so that the bus retries the signal. OutcomeUnknown: the intent stays
        open for the resume loop.
        """
        stop_cids = stop_cids or [stop_client_id(pid)]
        intent = o.exit_intent(
            pid, symbol, side, qty, signal_id, self.client.exchange_now_ms(), stop_cids
        )
        if await self.journal.settled(intent.client_order_id) is not None:
            log.info("Exit of %s already done; ignored [%s]", symbol, pid)
            return
        existing = await self.journal.intent(intent.client_order_id)
        intent = existing or intent
        submitted = self.event(intent, "submitted", position_id=pid, reason=reason)
        log.info("Exit: %s %s qty=%g (%s) [%s]", side.upper(), symbol, qty, reason, pid)
        with self.working_on(intent.client_order_id):
            await self.journal.open_intent(intent, submitted)
            await self.place_exit(intent, side, reason, stop_cids)

    async def place_exit(
        self, intent: OrderIntent, side: Side, reason: ExitReason, stop_cids: list[str]
    ) -> None:
        """Send an exit intent (looked up first), report the fill, then cancel the stops."""
        pid = intent.signal_id.split("|exit|")[0]
        try:
            order = await self.client.place_order(intent, guard=self.guard)
        except OrderRejected as e:
            ORDERS.labels("exit", "rejected").inc()
            rejected = self.event(intent, "rejected", position_id=pid, error=str(e))
            filled_by_stop = await self.confirm_stop(pid, intent.symbol, side, stop_cids)
            if not filled_by_stop:
                log.error("Exit of %s refused (%s); reconciliation will settle it [%s]",
                          intent.symbol, e, pid)  # fmt: skip
            await self.journal.close_intent(
                intent, "stop" if filled_by_stop else "rejected", rejected,
                record_id=intent.client_order_id if filled_by_stop else None,
            )  # fmt: skip
            return
        except TemporaryError:
            ORDERS.labels("exit", "not_sent").inc()
            await self.journal.close_intent(intent, "not_sent")
            raise
        except OutcomeUnknown as e:
            log.error("Exit of %s outcome unknown; resumed later: %s", intent.symbol, e)
            ORDERS.labels("exit", "unknown").inc()
            return
        if order.status == "open":
            log.warning("Exit %s not filled yet; resumed later", intent.client_order_id)
            return
        if order.filled <= 0 or order.average is None:
            log.error("Exit of %s ended %s without a fill [%s]", intent.symbol, order.status, pid)
            ORDERS.labels("exit", "rejected").inc()
            await self.journal.close_intent(intent, "rejected")
            return
        filled = self.event(
            intent, "filled", position_id=pid, quantity=order.filled, price=order.average,
            fee=o.taker_fee(order.filled, order.average, self.s.fee_rate),
            exchange_order_id=order.id, reason=reason, ts=order.timestamp,
        )  # fmt: skip
        await self.journal.publish(filled)
        ORDERS.labels("exit", "filled").inc()
        log.info("Closed: %s %s at %g (%s) [%s]", side.upper(), intent.symbol, order.average,
                 reason, pid)  # fmt: skip
        crash_point("exit_filled")
        await self.stops_settled(stop_cids)
        canceled = [await self.cancel_stop(intent, pid, cid) for cid in stop_cids]
        await self.journal.close_intent(
            intent, "filled", *[c for c in canceled if c is not None],
            record_id=intent.client_order_id,
        )  # fmt: skip

    async def stops_settled(self, stop_cids: list[str]) -> None:
        """Wait while a stop of the position is being placed (its entry just filled), so the
        cancel that follows the exit does not miss a stop that lands a moment later."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_SETTLE_WAIT_S):
                # Not the ones this very flow is placing (a refused stop closes its position).
                while any(cid in self.busy - _OWN_WORK.get() for cid in stop_cids):
                    self.work_done.clear()
                    await self.work_done.wait()

    async def cancel_stop(self, exit_intent: OrderIntent, pid: str, cid: str) -> OrderEvent | None:
        """Cancel a closed position's stop; return the canceled event (None if nothing to do)."""
        try:
            final = await self.client.cancel_stop(exit_intent.symbol, cid)
        except (TemporaryError, OutcomeUnknown) as e:
            # Left open, a reduce-only stop could later close a new position on this symbol
            # at a stale price: the resume loop keeps cancelling it until it is gone.
            log.warning("Stop %s of %s not cancelled (%s): cancelled later by the resume loop",
                        cid, exit_intent.symbol, e)  # fmt: skip
            await self.journal.add_stale_stop(cid, exit_intent.symbol)
            return None
        if final is None:
            return None
        if final.status != "canceled":
            log.warning("Stop %s of %s was %s, not cancelled: it fired with the exit; "
                        "reduce-only, so it opened nothing", cid, exit_intent.symbol,
                        final.status)  # fmt: skip
            return None
        return OrderEvent(
            event="canceled", client_order_id=cid, exchange_order_id=final.id, signal_id=pid,
            symbol=exit_intent.symbol, side=exit_intent.side, purpose="stop",
            quantity=final.amount or exit_intent.quantity, position_id=pid,
            ts=self.client.exchange_now_ms(),
        )  # fmt: skip

    # --- after a crash -------------------------------------------------------------------

    async def fence(self) -> None:
        # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
        """Wait until every send of a previous lease holder is provably dead."""
        t = self.client.tuning
        wait_s = (t.recv_window_ms + t.settle_slack_ms) / 1000
        log.info("Executor: waiting %.1f s before the first send (a previous holder's "
                 "requests expire in that time)", wait_s)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ctx.stop.wait(), wait_s)

    async def resume_loop(self) -> None:
        # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
        """Settle open intents now and every few seconds (unknown outcomes, crashes)."""
        while not self.ctx.stop.is_set():
            await self.resume()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stop.wait(), RESUME_EVERY_S)

    async def resume(self) -> None:
        """Ask the exchange about every open intent by client order id, and finish its flow.

        An intent worked on less than a recvWindow (plus slack) ago is left for later: a
        send of it may still be queued inside the exchange. After a restart, ``fence``
        has already waited that long.
        """
        if self.guard():
            await self.cancel_stale_stops()
        t = self.client.tuning
        settle_s = (t.recv_window_ms + t.settle_slack_ms) / 1000
        for intent in await self.journal.open_intents():
            cid = intent.client_order_id
            recent = time.monotonic() - self.touched.get(cid, float("-inf")) < settle_s
            if cid in self.busy or recent or not self.guard():
                continue  # a send of it may still be in flight: not yet
            try:
                with self.working_on(intent.client_order_id):
                    await self.resume_one(intent)
            except (TemporaryError, OutcomeUnknown) as e:
                log.warning("Resume of %s: exchange unclear, retried later: %s",
                            intent.client_order_id, e)  # fmt: skip

    async def cancel_stale_stops(self) -> None:
        """Cancel the stops of closed positions whose cancel failed earlier."""
        for cid, symbol in (await self.journal.stale_stops()).items():
            try:
                final = await self.client.cancel_stop(symbol, cid)
            except (TemporaryError, OutcomeUnknown) as e:
                log.warning("Stale stop %s of %s still not cancelled: %s", cid, symbol, e)
                continue
            log.info("Stale stop %s of %s: %s", cid, symbol,
                     "gone" if final is None else final.status)  # fmt: skip
            await self.journal.drop_stale_stop(cid)

    async def resume_one(self, intent: OrderIntent) -> None:
        """Finish one open intent after a crash or an unknown outcome."""
        log.info("Resume: %s intent %s for %s", intent.purpose, intent.client_order_id,
                 intent.symbol)  # fmt: skip
        if intent.purpose == "entry":
            order = await self.client.fetch_order(intent.symbol, intent.client_order_id)
            if order is None:
                log.warning("Resume: entry %s never reached the exchange: abandoned, not resent",
                            intent.signal_id)  # fmt: skip
                abandoned = self.event(
                    intent,
                    "rejected",
                    position_id=intent.signal_id,
                    error="not on the exchange after a restart or unclear send",
                )
                await self.journal.close_intent(
                    intent, "abandoned", abandoned, record_id=intent.signal_id, clear_pending=True
                )
                return
            await self.finish_entry(intent, order)
        elif intent.purpose == "stop":
            await self.place_stop(intent, o.side_closed_by(intent.side))
        else:
            pid = intent.signal_id.split("|exit|")[0]
            pos = (await book.read_positions(self.redis)).get(pid)
            # The book's stops now, and those it had when the exit was written: state may
            # have closed the position in the book since (its exit filled before the crash).
            stops = list(dict.fromkeys([*position_stops(pid, pos), *intent.cancels]))
            reason: ExitReason = "fault"
            if pos is not None and pos.exit_requested is not None:
                reason = pos.exit_requested
            await self.place_exit(intent, o.side_closed_by(intent.side), reason,
                                  stops)  # fmt: skip


def position_stops(pid: str, pos: BookPosition | None) -> list[str]:
    """Return the client ids of every stop a position may have had (each seq up to its last).

    Cancelling them all after the exit leaves no stop behind even when a repair and a
    resumed stop both reached the exchange; a stop that never existed costs one lookup.
    """
    last = 0 if pos is None else pos.stop_seq
    ids = [stop_client_id(pid, seq) for seq in range(last + 1)]
    if pos is not None and pos.stop_client_order_id and pos.stop_client_order_id not in ids:
        ids.append(pos.stop_client_order_id)
    return ids


async def run(ctx: ServiceContext) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Run the executor until stopped: fence, resume, then consume signals and allot slots."""
    client = ExchangeClient.from_settings(ctx.settings)
    try:
        if not await client.start_when_reachable(ctx.stop):
            return
        executor = Executor(ctx, client, await client.markets())
        await executor.fence()
        if ctx.stop.is_set():
            return
        await executor.resume()
        consumer: Consumer[Message] = Consumer(
            ctx.redis,
            keys.STREAM_SIGNALS,
            keys.GROUP_EXECUTOR,
            ctx.instance,
            executor.handle,
            Message,
            reclaim_idle_ms=ctx.settings.reclaim_idle_ms,
            max_deliveries=ctx.settings.max_deliveries,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(consumer.run(ctx.stop), name="executor-signals")
                tasks.create_task(executor.allot_loop(), name="executor-allot")
                tasks.create_task(executor.resume_loop(), name="executor-resume")
        except* SendRefused:
            log.error("Executor: a send was refused by the lease guard; stopping")
    finally:
        await client.close()
