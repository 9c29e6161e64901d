"""Reconciliation: make the book agree with the exchange, and every position carry its stop.

At start and every RECONCILE_INTERVAL, under the book lock:
- a position the exchange has and the book lacks (and no entry of ours is in flight on
  that symbol) is adopted, with its open stop if it has one, else a stop is asked for;
- a book position the exchange no longer has is closed with the exchange's fill: our exit
  order's, else the fill of the market order its stop triggered, else its last fills;
  one the exchange holds on the other side (closed, then reversed by hand) is closed the
  same way and the exchange's position adopted;
- a book position whose stop is not open on the exchange gets a new one (next sequence
  number); a size that differs from the exchange's is corrected.
Every correction is logged and counted in ``tradebot_reconcile_corrections_total{kind}``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.signals import rules
from services.signals.rules import StrategyParams
from services.state import fold
from shared import keys
from shared.book import Account, BookPosition
from shared.bus import publish
from shared.exchange import ExchangeClient
from shared.exchange_errors import ExchangeFailure, TemporaryError
from shared.exchange_models import Order, Position
from shared.metrics import (
    EQUITY,
    POSITIONS_WITHOUT_STOP,
    RECONCILE_CORRECTIONS,
    RECONCILE_RUNS,
    UNREALIZED_PNL,
)
from shared.order_ids import exit_client_id, stop_client_id
from shared.schemas import ExitReason, Side, StopCommand, side_sign, stop_command_id
from shared.service import ServiceContext

if TYPE_CHECKING:
    from services.state.service import Book

log = logging.getLogger("state")

STOP_GRACE_MS = 30_000  # a fresh position may wait this long for its first stop report
# A book position the exchange does not show (or shows on the other side) is closed only
# once this old: a fill the executor just booked may not show on the exchange at once.
GONE_GRACE_MS = 5_000


class Reconciler:
    """Compare the book with the exchange and correct the book (or ask for a stop)."""

    def __init__(
        self, ctx: ServiceContext, client: ExchangeClient, book: Book, params: StrategyParams
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.book = book
        self.params = params

    async def run_once(self) -> None:
        """Reconcile once; an unreachable exchange is logged and tried again next time."""
        try:
            async with self.book.lock:
                await self._reconcile()
        except TemporaryError as e:
            RECONCILE_RUNS.labels("unreachable").inc()
            log.warning("Reconcile: exchange unreachable, tried again later: %s", e)
            return
        RECONCILE_RUNS.labels("ok").inc()

    async def _reconcile(self) -> None:
        now = await self.client.server_time()
        live = {p.symbol: p for p in await self.client.positions()}
        stops = await self.client.open_stop_orders()
        positions = await self.book.positions()
        pending_raw: Any = await self.ctx.redis.hgetall(keys.PENDING_ENTRIES)
        pending = {k.decode() for k in pending_raw}
        by_symbol = {p.symbol: p for p in positions.values()}
        unprotected = 0
        for symbol, ex_pos in live.items():
            pos = by_symbol.get(symbol)
            if pos is not None and pos.side != ex_pos.side and now - pos.entry_time > GONE_GRACE_MS:
                await self._close_missing(pos, now)  # the book's side is gone, the other open
                pos = None
            if pos is None:
                if symbol not in pending:
                    unprotected += not await self._adopt(ex_pos, stops, now)
                continue
            unprotected += not await self._check(pos, ex_pos, stops, now)
        for pos in positions.values():
            if pos.symbol not in live and now - pos.entry_time > GONE_GRACE_MS:
                await self._close_missing(pos, now)
        POSITIONS_WITHOUT_STOP.set(unprotected)
        await self.book.refresh_gauges()
        await self._account(now)

    async def _adopt(self, ex_pos: Position, stops: list[Order], now: int) -> bool:
        """Adopt a position only the exchange has; return whether its stop is open."""
        side: Side = ex_pos.side
        pid = f"adopted|{ex_pos.symbol}|{now}"
        stop = _stop_for(ex_pos.symbol, side, stops)
        if stop is not None and stop.stop_price:
            stop_price = stop.stop_price
        else:
            stop_price = rules.stop_price(side_sign(side), ex_pos.entry_price, self.params)
        pos = BookPosition(
            position_id=pid, symbol=ex_pos.symbol, side=side, quantity=ex_pos.contracts,
            entry_price=ex_pos.entry_price, entry_time=now, stop_price=stop_price,
            stop_client_order_id=stop.client_order_id if stop else None,
            best_price=ex_pos.entry_price, adopted=True,
        )  # fmt: skip
        await self.book.save(pos, (keys.STREAM_EVENTS, fold.position_event("adopted", pos, ts=now)))
        RECONCILE_CORRECTIONS.labels("adopted").inc()
        log.warning(
            "Reconcile: adopted %s %s qty=%g entry=%g from the exchange (%s) [%s]",
            side.upper(), ex_pos.symbol, ex_pos.contracts, ex_pos.entry_price,
            "its stop is open" if stop else "no stop: asking for one", pid,
        )  # fmt: skip
        if stop is None:
            await self._ask_stop(pos, 0, "adopted", now)
        return stop is not None

    async def _check(
        self, pos: BookPosition, ex_pos: Position, stops: list[Order], now: int
    ) -> bool:
        """Correct a book position's size and stop; return False when it has no open stop
        (beyond the grace of a fresh position, or while an exit is in flight)."""
        if abs(ex_pos.contracts - pos.quantity) > 1e-12 and ex_pos.side == pos.side:
            RECONCILE_CORRECTIONS.labels("quantity").inc()
            log.warning("Reconcile: %s size %g in the book, %g on the exchange: corrected",
                          pos.symbol, pos.quantity, ex_pos.contracts)  # fmt: skip
            pos = pos.model_copy(update={"quantity": ex_pos.contracts})
            await self.book.save(pos)
        open_ids = {s.client_order_id for s in stops if s.symbol == pos.symbol}
        if pos.stop_client_order_id is not None and pos.stop_client_order_id in open_ids:
            return True
        if pos.exit_requested is not None:
            return True  # the exit closes it; its stop may already be cancelled
        if pos.stop_client_order_id is None and now - pos.entry_time < STOP_GRACE_MS:
            return True  # the executor is placing the first stop right now
        seq = pos.stop_seq + 1
        RECONCILE_CORRECTIONS.labels("stop_missing").inc()
        log.warning("Reconcile: %s %s has no open stop on the exchange: asking for stop #%d",
                      pos.side.upper(), pos.symbol, seq)  # fmt: skip
        await self.book.save(pos.model_copy(update={"stop_seq": seq}))
        await self._ask_stop(pos, seq, "repair", now)
        return False

    async def _ask_stop(self, pos: BookPosition, seq: int, reason: str, now: int) -> None:
        cmd = StopCommand(
            id=stop_command_id(pos.position_id, seq), position_id=pos.position_id,
            symbol=pos.symbol, side=pos.side, quantity=pos.quantity,
            stop_price=pos.stop_price, seq=seq, reason=reason, ts=now,
        )  # fmt: skip
        await publish(self.ctx.redis, keys.STREAM_SIGNALS, cmd)

    async def _close_missing(self, pos: BookPosition, now: int) -> None:
        price, fee, ts, reason = await self._exit_fill(pos, now)
        RECONCILE_CORRECTIONS.labels("closed_missing").inc()
        log.warning("Reconcile: %s %s is gone from the exchange: closed at %g (%s)",
                      pos.side.upper(), pos.symbol, price, reason)  # fmt: skip
        await self.book.record_close(pos, fold.close(pos, price, fee, ts, reason), "reconciled")

    async def _exit_fill(self, pos: BookPosition, now: int) -> tuple[float, float, int, ExitReason]:
        """Find how a vanished position was closed: our exit, its stop, or its last fills."""
        fee_rate = self.ctx.settings.fee_rate
        exit_order = await self.client.fetch_order(pos.symbol, exit_client_id(pos.position_id))
        if exit_order is not None and exit_order.filled > 0 and exit_order.average:
            reason: ExitReason = pos.exit_requested or "manual"
            p = exit_order.average
            return p, p * exit_order.filled * fee_rate, exit_order.timestamp or now, reason
        for stop_cid in _stop_ids(pos):
            stop = await self.client.fetch_stop_order(pos.symbol, stop_cid)
            if stop is not None and stop.triggered_order_id is not None:
                fill = await self.client.fetch_order_by_id(pos.symbol, stop.triggered_order_id)
                if fill is not None and fill.filled > 0 and fill.average:
                    p = fill.average
                    return p, p * fill.filled * fee_rate, fill.timestamp or now, "stop"
        try:
            trades = await self.client.trade_history(pos.symbol, pos.entry_time)
        except (ExchangeFailure, ValueError) as e:
            log.warning("Reconcile: fills of %s not read: %s", pos.symbol, e)
            trades = []
        # The first closing-side fills up to the position's size: a later one (or the rest
        # of one that reversed the position) opened the other side. Fees pro rata.
        closing = "sell" if pos.side == "long" else "buy"
        used = cost = fee = 0.0
        last = now
        for t in trades:
            part = min(t.amount, pos.quantity - used)
            if t.side != closing or part <= 0:
                continue
            used, cost, fee, last = (
                used + part,
                cost + t.price * part,
                fee + t.fee * part / t.amount,
                t.timestamp,
            )
        if used > 0:
            return cost / used, fee, last, "fault"
        return pos.best_price, 0.0, now, "fault"

    async def refresh_account(self) -> None:
        """Read the wallet and equity from the exchange into the book (tradebot status)."""
        try:
            await self._account(await self.client.server_time())
        except TemporaryError as e:
            log.warning("Account: exchange unreachable, read again later: %s", e)

    async def _account(self, now: int) -> None:
        balance = await self.client.balance()
        account = Account(
            wallet=balance.wallet, equity=balance.equity,
            unrealized_pnl=balance.unrealized_pnl, ts=now,
        )  # fmt: skip
        await self.ctx.redis.set(keys.BOOK_ACCOUNT, account.dump())
        EQUITY.set(balance.equity)
        UNREALIZED_PNL.set(balance.unrealized_pnl)


def _stop_ids(pos: BookPosition) -> list[str]:
    """Return every stop a position may have had: the one the book names, then each number.

    The book names the stop reported last; a repair stop (a later number) may be the one
    that fired while the other expired with nothing left to reduce.
    """
    ids = [stop_client_id(pos.position_id, seq) for seq in range(pos.stop_seq + 1)]
    named = pos.stop_client_order_id
    return ids if named is None else [named, *(i for i in ids if i != named)]


def _stop_for(symbol: str, side: Side, stops: list[Order]) -> Order | None:
    """Return an open reduce-only stop that closes a position of ``side`` on ``symbol``."""
    closing = "sell" if side == "long" else "buy"
    for s in stops:
        if s.symbol == symbol and s.side == closing:
            return s
    return None
