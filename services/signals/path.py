"""The four price events a candle is played as, in the backtest and the replaying simulator."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def candle_price_path(
    open_: float, high: float, low: float, close: float
) -> tuple[float, float, float, float]:
    """Return (open, low, high, close) for a green candle (close >= open), else (o, h, l, c)."""
    if close >= open_:
        return (open_, low, high, close)
    return (open_, high, low, close)


def candle_price_paths(
    open_: NDArray[np.float64],
    high: NDArray[np.float64],
    low: NDArray[np.float64],
    close: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Return the same four-event path for many candles, shape (n, 4), row i = candle i."""
    green = close >= open_
    return np.stack([open_, np.where(green, low, high), np.where(green, high, low), close], axis=1)
