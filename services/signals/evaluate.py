"""The entry decision at one closed candle, from the window of the symbol's recent candles.

Pure (no I/O). It runs the very functions the backtester runs per candle
(``segment_position``, ``body_pct``, ``vol_ratio``, ``chop``, ``long_signal``,
``short_signal``), vectorized over the window, and reads their values at the window's last
candle. Every indicator value at a candle depends only on the candles of its window (summed
oldest first, restarting after a gap), so a window of CANDLE_LIMIT candles ending at t gives
bit for bit the side and indicator values the backtester computes at t on the whole series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.signals import indicators as ind
from services.signals import rules
from services.signals.indicators import FloatArray
from services.signals.rules import LONG, SHORT, StrategyParams
from shared.config import Settings
from shared.schemas import Candle, Side

Prices = tuple[float, float, float, float, float]  # open, high, low, close, volume
_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class CandleWindow:
    """A symbol's recent closed candles as column arrays, oldest first (open times in ms)."""

    open_time: NDArray[np.int64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __post_init__(self) -> None:
        n = len(self.open_time)
        columns = (self.open, self.high, self.low, self.close, self.volume)
        if n == 0:
            raise ValueError("a candle window needs at least the candle being evaluated")
        if any(len(c) != n for c in columns):
            raise ValueError("the columns of a candle window must have the same length")

    @classmethod
    def from_candles(cls, candles: Sequence[Candle]) -> CandleWindow:
        """Build the column arrays from candle messages (oldest first)."""
        return cls(
            open_time=np.array([c.open_time for c in candles], dtype=np.int64),
            open=np.array([c.open for c in candles], dtype=np.float64),
            high=np.array([c.high for c in candles], dtype=np.float64),
            low=np.array([c.low for c in candles], dtype=np.float64),
            close=np.array([c.close for c in candles], dtype=np.float64),
            volume=np.array([c.volume for c in candles], dtype=np.float64),
        )

    @classmethod
    def from_rows(cls, times: Sequence[int], prices: Sequence[Prices]) -> CandleWindow:
        """Build the column arrays from open times and (open, high, low, close, volume) rows."""
        n = len(times)
        table = np.array(prices, dtype=np.float64).reshape(n, 5)
        return cls(np.array(times, dtype=np.int64), *np.ascontiguousarray(table.T))

    def __len__(self) -> int:
        return len(self.open_time)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Indicator values at the window's last candle and the entry side (None = no entry)."""

    open_time: int
    body_pct: float
    vol_ratio: float
    chop: float
    side: int | None

    @property
    def side_name(self) -> Side | None:
        """Return 'long', 'short' or None, as entry signals spell the side."""
        if self.side is None:
            return None
        return "long" if self.side == LONG else "short"


def evaluate(window: CandleWindow | Sequence[Candle], settings: Settings) -> Evaluation:
    """Return the indicators and the entry side at the last candle of the window."""
    w = window if isinstance(window, CandleWindow) else CandleWindow.from_candles(window)
    return evaluate_many([w], settings)[0]


def evaluate_many(windows: Sequence[CandleWindow], settings: Settings) -> list[Evaluation]:
    """Return ``evaluate`` of each window, computed in one pass over all of them.

    The windows are laid end to end and each starts a segment of its own, so no value reads
    across two windows: every indicator at a window's last candle sums the same candles in
    the same order as ``evaluate`` of that window alone, and is bit for bit the same.
    """
    if not windows:
        return []
    w = CandleWindow(*(np.concatenate([getattr(x, name) for x in windows]) for name in _COLUMNS))
    tf_ms = settings.timeframe_ms
    pos = np.concatenate([ind.segment_position(x.open_time, tf_ms) for x in windows])
    params = StrategyParams.from_settings(settings)
    body = ind.body_pct(w.open, w.close)
    vr = ind.vol_ratio(w.volume, settings.vr_window, pos)
    ch = ind.chop(w.high, w.low, w.close, settings.chop_period, pos)
    longs = rules.long_signal(w.open, w.close, body, vr, ch, params)
    shorts = rules.short_signal(w.open, w.close, body, vr, ch, params)
    out = []
    for last in np.cumsum([len(x) for x in windows]) - 1:
        side = int(longs[last]) - int(shorts[last])
        out.append(
            Evaluation(
                open_time=int(w.open_time[last]),
                body_pct=float(body[last]),
                vol_ratio=float(vr[last]),
                chop=float(ch[last]),
                side=side if side in (LONG, SHORT) else None,
            )
        )
    return out


def entry_reason(ev: Evaluation, settings: Settings) -> str:
    """Return why the candle qualifies, as the thresholds it met (for the signal's reason)."""
    min_vr = settings.long_vr if ev.side == LONG else settings.short_vr
    candle = "green" if ev.side == LONG else "red"
    return (
        f"{candle} body {ev.body_pct:.2%} >= {settings.min_body_pct:.2%}, "
        f"VR {ev.vol_ratio:.2f} >= {min_vr:g}, CHOP {ev.chop:.1f} < {settings.chop_threshold:g}"
    )


def describe(ev: Evaluation) -> str:
    """Return the indicator part of a signal log line: ``body=0.82% VR=2.1 CHOP=43``."""
    return f"body={ev.body_pct:.2%} VR={ev.vol_ratio:.1f} CHOP={ev.chop:.0f}"  # NaN: "nan"
