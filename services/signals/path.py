"""The four price events a candle is played as, in the backtest and the replaying simulator."""

from __future__ import annotations


def candle_price_path(
    open_: float, high: float, low: float, close: float
) -> tuple[float, float, float, float]:
    """Return (open, low, high, close) for a green candle (close >= open), else (o, h, l, c)."""
    if close >= open_:
        return (open_, low, high, close)
    return (open_, high, low, close)
