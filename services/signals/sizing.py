"""Position size from equity (docs/strategy.md "Size"), with the amount step and minimums."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class MarketLimits:
    """A market's order limits: amount step (0 = any), minimum amount and minimum notional,
    maximum amount of one order (0 = none)."""

    amount_step: float = 0.0
    min_amount: float = 0.0
    min_notional: float = 0.0
    max_amount: float = 0.0


def round_down_to_step(amount: float, step: float) -> float:
    """Round amount down to a multiple of step, exactly in decimal (0.3 stays 0.3, not 0.2999).

    Both go through float() first: numpy 2 prints a float64 as ``np.float64(0.3)``, which
    Decimal cannot parse, and the backtest's equity is a float64.
    """
    if step <= 0:
        return amount
    d_step = Decimal(repr(float(step)))
    units = math.floor(Decimal(repr(float(amount))) / d_step)
    return float(units * d_step)


def position_quantity(
    equity: float,
    price: float,
    trade_pct: float,
    max_positions: int,
    leverage: int,
    limits: MarketLimits = MarketLimits(),
) -> float:
    """Return margin * LEVERAGE / price rounded down to the step, or 0.0 when no order is allowed.

    margin = equity * TRADE_PCT / MAX_POSITIONS; no order (0.0) when equity or price is not
    positive, the quantity is not finite (a price near zero), or the rounded quantity is
    below the minimum amount or its notional below the minimum notional.
    """
    if equity <= 0 or price <= 0:
        return 0.0
    margin = equity * trade_pct / max_positions
    raw = margin * leverage / price
    if not math.isfinite(raw):  # a price so small the quantity overflows: no order
        return 0.0
    quantity = round_down_to_step(raw, limits.amount_step)
    if quantity <= 0 or quantity < limits.min_amount or quantity * price < limits.min_notional:
        return 0.0
    return quantity
