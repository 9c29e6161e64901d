"""The orders of a position, as pure functions: sides, sizes, stop prices, intents.

Client order ids come from ``shared.order_ids`` (derived from the position id).
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from services.signals import rules
from services.signals.rules import StrategyParams
from services.signals.sizing import MarketLimits
from shared.exchange_models import MarketInfo
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id
from shared.schemas import OrderIntent, OrderSide, Side, side_sign


def opening_side(side: Side) -> OrderSide:
    """Return the order side that opens a position of ``side``."""
    return "buy" if side == "long" else "sell"


def closing_side(side: Side) -> OrderSide:
    """Return the order side that reduces a position of ``side``."""
    return "sell" if side == "long" else "buy"


def position_side(order_side: str) -> Side:
    """Return the position side an opening order of ``order_side`` creates."""
    return "long" if order_side == "buy" else "short"


def side_closed_by(order_side: str) -> Side:
    """Return the position side a reducing order of ``order_side`` closes."""
    return "long" if order_side == "sell" else "short"


def round_to_tick(price: float, tick: float | None, rounding: str = ROUND_HALF_EVEN) -> float:
    """Round a price to a multiple of the tick (exactly, in decimal; nearest by default)."""
    if tick is None or tick <= 0:
        return price
    d_tick = Decimal(repr(float(tick)))
    units = (Decimal(repr(float(price))) / d_tick).to_integral_value(rounding)
    return float(units * d_tick)


def stop_on_grid(side: Side, stop: float, tick: float | None) -> float:
    """Put a stop on the tick grid away from the entry: down for a long, up for a short.

    On the grid, "price <= stop" (long) holds exactly when "price <= floor(stop)" does, so
    the exchange's stop fires on the same price events as the contract's; rounding to the
    nearest tick could move it towards the entry and fire one tick early.
    """
    return round_to_tick(stop, tick, ROUND_FLOOR if side == "long" else ROUND_CEILING)


def stop_price_for(side: Side, entry: float, params: StrategyParams, tick: float | None) -> float:
    """Return the stop at SL_PCT from the entry fill, on the market's price grid."""
    return stop_on_grid(side, rules.stop_price(side_sign(side), entry, params), tick)


def limits_of(market: MarketInfo) -> MarketLimits:
    """Return the sizing limits of a market (missing ones count as none)."""
    return MarketLimits(
        amount_step=market.amount_step or 0.0,
        min_amount=market.min_amount or 0.0,
        min_notional=market.min_notional or 0.0,
        max_amount=market.max_amount or 0.0,
    )


def taker_fee(quantity: float, price: float, fee_rate: float) -> float:
    """Return the fee of a market fill: FEE_RATE x notional."""
    fee = quantity * price * fee_rate
    return fee if math.isfinite(fee) else 0.0


def entry_intent(
    position_id: str, symbol: str, side: Side, quantity: float, ts: int
) -> OrderIntent:
    """Return the market order that opens the position of an entry signal."""
    return OrderIntent(
        client_order_id=entry_client_id(position_id),
        signal_id=position_id,
        symbol=symbol,
        side=opening_side(side),
        purpose="entry",
        type="market",
        quantity=quantity,
        ts=ts,
    )


def stop_intent(
    position_id: str, symbol: str, side: Side, quantity: float, stop: float, seq: int, ts: int
) -> OrderIntent:
    """Return the reduce-only stop-market order that protects a position."""
    return OrderIntent(
        client_order_id=stop_client_id(position_id, seq),
        signal_id=position_id,
        symbol=symbol,
        side=closing_side(side),
        purpose="stop",
        type="stop_market",
        quantity=quantity,
        stop_price=stop,
        reduce_only=True,
        ts=ts,
    )


def exit_intent(
    position_id: str,
    symbol: str,
    side: Side,
    quantity: float,
    signal_id: str,
    ts: int,
    cancels: list[str] | None = None,
) -> OrderIntent:
    """Return the reduce-only market order that closes a position (then cancels ``cancels``)."""
    return OrderIntent(
        client_order_id=exit_client_id(position_id),
        signal_id=signal_id,
        symbol=symbol,
        side=closing_side(side),
        purpose="exit",
        type="market",
        quantity=quantity,
        reduce_only=True,
        ts=ts,
        cancels=cancels or [],
    )
