"""Entry and exit rules of docs/strategy.md, written once for scalars and numpy arrays alike.

Every predicate here uses only numpy ufuncs, so the live services call them on floats and the
backtest calls the very same functions on whole arrays. Side is +1 for long, -1 for short.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np

from shared.config import Settings

LONG = 1
SHORT = -1

# A float or a float64 array: each predicate works on either.
X = TypeVar("X", float, np.ndarray)


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """The docs/strategy.md parameters the rules read, as plain floats; built only from Settings."""

    min_body_pct: float
    long_vr: float
    short_vr: float
    chop_threshold: float
    sl_pct: float
    trail_activate: float
    trail_stop: float
    surge_threshold: float
    surge_trail_stop: float
    fee_rate: float
    slippage: float

    @classmethod
    def from_settings(cls, s: Settings) -> StrategyParams:
        """Take the rule parameters from the one settings object."""
        return cls(
            min_body_pct=s.min_body_pct,
            long_vr=s.long_vr,
            short_vr=s.short_vr,
            chop_threshold=float(s.chop_threshold),
            sl_pct=s.sl_pct,
            trail_activate=s.trail_activate,
            trail_stop=s.trail_stop,
            surge_threshold=s.surge_threshold,
            surge_trail_stop=s.surge_trail_stop,
            fee_rate=s.fee_rate,
            slippage=s.slippage,
        )


class ExitReason(StrEnum):
    """Why a position closed."""

    STOP = "stop"
    TRAIL = "trail"
    END = "end"


# ---- entries -------------------------------------------------------------------------------


def long_signal(open_: X, close: X, body: X, vr: X, chop: X, p: StrategyParams) -> X:
    """Long when body >= MIN_BODY_PCT, close > open, vol_ratio >= LONG_VR, chop < CHOP_THRESHOLD."""
    return (  # type: ignore[no-any-return]
        np.greater_equal(body, p.min_body_pct)
        & np.greater(close, open_)
        & np.greater_equal(vr, p.long_vr)
        & np.less(chop, p.chop_threshold)
    )


def short_signal(open_: X, close: X, body: X, vr: X, chop: X, p: StrategyParams) -> X:
    """Short when body >= MIN_BODY_PCT, close < open, vol_ratio >= SHORT_VR, chop < CHOP_THRESH."""
    return (  # type: ignore[no-any-return]
        np.greater_equal(body, p.min_body_pct)
        & np.less(close, open_)
        & np.greater_equal(vr, p.short_vr)
        & np.less(chop, p.chop_threshold)
    )


def entry_side(
    open_: float, close: float, body: float, vr: float, chop: float, p: StrategyParams
) -> int | None:
    """Return LONG, SHORT or None for the indicators at one closed candle."""
    if bool(long_signal(open_, close, body, vr, chop, p)):
        return LONG
    if bool(short_signal(open_, close, body, vr, chop, p)):
        return SHORT
    return None


def entry_fill_price(side: int, close: float, p: StrategyParams) -> float:
    """Return the backtest fill of a market entry: close moved against the trader by SLIPPAGE."""
    return close * (1.0 + side * p.slippage)


def stop_price(side: int, entry: float, p: StrategyParams) -> float:
    """Return the protective stop: entry * (1 - SL_PCT) long, entry * (1 + SL_PCT) short."""
    return entry * (1.0 - side * p.sl_pct)


# ---- exits, on one price event ---------------------------------------------------------------


def stop_hit(side: int, price: X, stop: float) -> X:
    """Return whether the stop triggers: price <= stop (long) or price >= stop (short)."""
    if side == LONG:
        return np.less_equal(price, stop)  # type: ignore[no-any-return]
    return np.greater_equal(price, stop)  # type: ignore[no-any-return]


def update_best(side: int, best: X, price: X) -> X:
    """Return the new best price: max(best, price) long, min(best, price) short."""
    return np.maximum(best, price) if side == LONG else np.minimum(best, price)  # type: ignore[no-any-return]


def trail_distance(side: int, best: X, entry: float, p: StrategyParams) -> X:
    """Return SURGE_TRAIL_STOP once best is SURGE_THRESHOLD beyond entry, else TRAIL_STOP."""
    if side == LONG:
        surged = np.greater_equal(best, entry * (1.0 + p.surge_threshold))
    else:
        surged = np.less_equal(best, entry * (1.0 - p.surge_threshold))
    return np.where(surged, p.surge_trail_stop, p.trail_stop)  # type: ignore[return-value]


def trail_hit(side: int, price: X, best: X, distance: X, entry: float, p: StrategyParams) -> X:
    """Return whether the trail exits: armed at TRAIL_ACTIVATE and price retraced by distance."""
    if side == LONG:
        armed = np.greater_equal(best, entry * (1.0 + p.trail_activate))
        return armed & np.less_equal(price, best * (1.0 - distance))  # type: ignore[no-any-return]
    armed = np.less_equal(best, entry * (1.0 - p.trail_activate))
    return armed & np.greater_equal(price, best * (1.0 + distance))  # type: ignore[no-any-return]


def trail_fill_price(side: int, price: float, p: StrategyParams) -> float:
    """Return the backtest fill of a market exit at price, moved against the trader by SLIPPAGE."""
    return price * (1.0 - side * p.slippage)


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """What the exit rules need of a position: side, entry fill, stop and best price so far."""

    side: int
    entry: float
    stop: float
    best: float


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """Outcome of one price event: the updated position, and the exit if there is one."""

    position: OpenPosition
    reason: ExitReason | None = None
    price: float | None = None


def on_price(pos: OpenPosition, price: float, p: StrategyParams) -> ExitDecision:
    """Apply one price event: stop first, then best, trail distance, trailing exit.

    The exit price is the rule's price (the stop price, or the event price for the trail);
    the backtest applies slippage to the trail fill with ``trail_fill_price``.
    """
    if bool(stop_hit(pos.side, price, pos.stop)):
        return ExitDecision(pos, ExitReason.STOP, pos.stop)
    best = float(update_best(pos.side, pos.best, price))
    moved = OpenPosition(pos.side, pos.entry, pos.stop, best)
    distance = float(trail_distance(pos.side, best, pos.entry, p))
    if bool(trail_hit(pos.side, price, best, distance, pos.entry, p)):
        return ExitDecision(moved, ExitReason.TRAIL, price)
    return ExitDecision(moved)


def open_position(side: int, entry: float, p: StrategyParams) -> OpenPosition:
    """Return a fresh position: stop placed at the SL_PCT distance, best = entry."""
    return OpenPosition(side, entry, stop_price(side, entry, p), entry)
