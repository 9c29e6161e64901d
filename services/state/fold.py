"""The position book's pure fold: fills open and close positions, prices move best and exits.

Every function takes the current record and a fact and returns the new record (or None
when the fact changes nothing), so folding the same fact twice changes nothing twice.
The exit rules are docs/strategy.md's, through ``services.signals.rules.on_price`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.signals import rules
from services.signals.rules import StrategyParams
from shared.book import BookPosition, ClosedTrade
from shared.schemas import ExitReason, OrderEvent, PositionEvent, Side, side_sign

EXIT_RETRY_MS = 30_000  # an exit asked for and still open is asked for again after this


def open_from_fill(event: OrderEvent, params: StrategyParams) -> BookPosition:
    """Return the position an entry fill opens (stop at SL_PCT until the placed one is known)."""
    assert event.price is not None
    assert event.position_id is not None
    side: Side = "long" if event.side == "buy" else "short"
    return BookPosition(
        position_id=event.position_id,
        symbol=event.symbol,
        side=side,
        quantity=event.quantity,
        entry_price=event.price,
        entry_time=event.ts,
        entry_fee=event.fee,
        stop_price=rules.stop_price(side_sign(side), event.price, params),
        best_price=event.price,
    )


def with_stop(pos: BookPosition, event: OrderEvent) -> BookPosition:
    """Return the position with the stop the executor placed."""
    return pos.model_copy(
        update={
            "stop_client_order_id": event.client_order_id,
            "stop_price": event.price if event.price is not None else pos.stop_price,
        }
    )


def close(pos: BookPosition, price: float, fee: float, ts: int, reason: ExitReason) -> ClosedTrade:
    """Return the trade a position's exit fill completes: PnL net of both fees."""
    fees = pos.entry_fee + fee
    pnl = side_sign(pos.side) * (price - pos.entry_price) * pos.quantity - fees
    return ClosedTrade(
        position_id=pos.position_id,
        symbol=pos.symbol,
        side=pos.side,
        quantity=pos.quantity,
        entry_price=pos.entry_price,
        entry_time=pos.entry_time,
        exit_price=price,
        exit_time=ts,
        fees=fees,
        pnl=pnl,
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one price event does to a position: its new record and the exit to ask for."""

    position: BookPosition
    changed: bool
    exit_reason: ExitReason | None = None
    exit_price: float | None = None


def on_tick(pos: BookPosition, price: float, ts: int, params: StrategyParams) -> TickOutcome:
    """Apply one price event in docs/strategy.md order (stop, best, trail) to a position.

    An exit already asked for is asked for again only after EXIT_RETRY_MS (the executor
    ignores a duplicate of a finished exit, and a stop that has not filled yet).
    """
    side = side_sign(pos.side)
    decision = rules.on_price(
        rules.OpenPosition(side, pos.entry_price, pos.stop_price, pos.best_price), price, params
    )
    best = decision.position.best
    updated = pos.model_copy(update={"best_price": best}) if best != pos.best_price else pos
    reason = decision.reason
    if reason is None:
        return TickOutcome(updated, updated is not pos)
    asked = pos.exit_requested_ms
    if pos.exit_requested is not None and asked is not None and ts - asked < EXIT_RETRY_MS:
        return TickOutcome(updated, updated is not pos)
    exit_reason: ExitReason = "stop" if reason is rules.ExitReason.STOP else "trail"
    updated = updated.model_copy(update={"exit_requested": exit_reason, "exit_requested_ms": ts})
    return TickOutcome(updated, True, exit_reason, decision.price)


def position_event(event: str, pos: BookPosition, **fields: Any) -> PositionEvent:
    """Return a position event for the audit trail."""
    return PositionEvent(
        event=event,  # type: ignore[arg-type]
        position_id=pos.position_id,
        symbol=pos.symbol,
        side=pos.side,
        quantity=pos.quantity,
        entry_price=pos.entry_price,
        stop_price=pos.stop_price,
        best_price=pos.best_price,
        ts=fields.pop("ts", pos.entry_time),
        **fields,
    )
