"""The entry indicators of docs/strategy.md: body_pct, vol_ratio, chop.

Two forms with bit-identical values: vectorized over a whole series (the backtest and a live
scan of CANDLE_LIMIT candles) and incremental over a rolling window (``IndicatorWindow``).
Both sum window values one by one, oldest first, so the floating-point results agree exactly.
Undefined values are NaN, and every comparison with NaN is False, so NaN means "no entry".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def body_pct(open_: FloatArray, close: FloatArray) -> FloatArray:
    """Return |close - open| / open per candle."""
    return np.asarray(np.abs(close - open_) / open_, dtype=np.float64)


def _window_sum(x: FloatArray, width: int) -> FloatArray:
    """Return s[t] = x[t-width+1] + ... + x[t], summed oldest first; NaN for t < width-1."""
    n = len(x)
    out = np.full(n, np.nan)
    if n < width:
        return out
    total = np.zeros(n - width + 1)
    for k in range(width):
        total = total + x[k : n - width + 1 + k]
    out[width - 1 :] = total
    return out


def _window_extreme(x: FloatArray, width: int, op: np.ufunc) -> FloatArray:
    """Return op over x[t-width+1 .. t] for t >= width-1 (length n - width + 1)."""
    n = len(x)
    out = x[: n - width + 1].copy()
    for k in range(1, width):
        out = op(out, x[k : n - width + 1 + k])
    return out


def segment_position(timestamps: NDArray[np.int64], timeframe_ms: int) -> NDArray[np.int64]:
    """Return each candle's index since the last gap or the first candle; windows restart there."""
    n = len(timestamps)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.arange(n, dtype=np.int64)
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    starts[1:] = np.diff(timestamps) != timeframe_ms
    start_idx = np.maximum.accumulate(np.where(starts, idx, 0))
    return idx - start_idx


def vol_ratio(volume: FloatArray, window: int, pos: NDArray[np.int64] | None = None) -> FloatArray:
    """Return volume[t] / mean(volume[t-window .. t-1]); NaN with too little history or mean 0.

    ``pos`` is ``segment_position``: a value needs ``window`` earlier candles in its segment.
    """
    n = len(volume)
    out = np.full(n, np.nan)
    if n <= window:
        return out
    baseline = _window_sum(volume, window)[window - 1 : n - 1] / window
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = volume[window:] / baseline
    out[window:] = np.where(baseline > 0, ratio, np.nan)
    if pos is not None:
        out[pos < window] = np.nan
    return out


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """Return TR[i] = max(high-low, |high-prev close|, |low-prev close|); NaN at i = 0."""
    tr = np.full(len(high), np.nan)
    if len(high) > 1:
        prev = close[:-1]
        tr[1:] = np.maximum(
            high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev))
        )
    return tr


def _chop_from(
    tr_sum: FloatArray | float, hi: FloatArray | float, lo: FloatArray | float, n: int
) -> FloatArray:
    """Return 100 * log10(sum TR / (max high - min low)) / log10(n); NaN where the range is 0."""
    rng = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = 100.0 * np.log10(np.asarray(tr_sum, dtype=np.float64) / rng) / np.log10(float(n))
    return np.asarray(np.where(rng > 0, value, np.nan), dtype=np.float64)


def chop(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    period: int,
    pos: NDArray[np.int64] | None = None,
) -> FloatArray:
    """Return the choppiness index over ``period`` candles; needs period + 1 candles."""
    n = len(high)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    tr_sum = _window_sum(true_range(high, low, close), period)
    hi = _window_extreme(high, period, np.maximum)[1:]
    lo = _window_extreme(low, period, np.minimum)[1:]
    out[period:] = _chop_from(tr_sum[period:], hi, lo, period)
    if pos is not None:
        out[pos < period] = np.nan
    return out


@dataclass(frozen=True, slots=True)
class Indicators:
    """Indicator values at one closed candle (NaN = undefined, no entry)."""

    body_pct: float
    vol_ratio: float
    chop: float


class IndicatorWindow:
    """Keep the last candles of one symbol and give the indicators at each new closed candle.

    Call ``reset()`` after a gap so the windows restart instead of mixing distant candles.
    """

    def __init__(self, vr_window: int, chop_period: int) -> None:
        self.vr_window = vr_window
        self.chop_period = chop_period
        self._volumes: deque[float] = deque(maxlen=vr_window + 1)
        self._highs: deque[float] = deque(maxlen=chop_period)
        self._lows: deque[float] = deque(maxlen=chop_period)
        self._trs: deque[float] = deque(maxlen=chop_period)
        self._prev_close: float | None = None

    def reset(self) -> None:
        """Forget all history (after a gap)."""
        self._volumes.clear()
        self._highs.clear()
        self._lows.clear()
        self._trs.clear()
        self._prev_close = None

    def push(
        self, open_: float, high: float, low: float, close: float, volume: float
    ) -> Indicators:
        """Add a closed candle and return the indicators at it."""
        bp = float(body_pct(np.float64(open_), np.float64(close)))  # type: ignore[arg-type]
        self._volumes.append(volume)
        vr = float("nan")
        if len(self._volumes) == self.vr_window + 1:
            total = 0.0
            for v in list(self._volumes)[:-1]:
                total = total + v
            baseline = total / self.vr_window
            if baseline > 0:
                with np.errstate(over="ignore"):
                    vr = volume / baseline
        if self._prev_close is not None:
            prev = self._prev_close
            self._trs.append(max(high - low, max(abs(high - prev), abs(low - prev))))
        self._prev_close = close
        self._highs.append(high)
        self._lows.append(low)
        ch = float("nan")
        if len(self._trs) == self.chop_period:
            tr_sum = 0.0
            for tr in self._trs:
                tr_sum = tr_sum + tr
            ch = float(_chop_from(tr_sum, max(self._highs), min(self._lows), self.chop_period))
        return Indicators(bp, vr, ch)
