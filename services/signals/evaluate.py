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
    params = StrategyParams.from_settings(settings)
    pos = ind.segment_position(w.open_time, settings.timeframe_ms)
    body = ind.body_pct(w.open, w.close)
    vr = ind.vol_ratio(w.volume, settings.vr_window, pos)
    ch = ind.chop(w.high, w.low, w.close, settings.chop_period, pos)
    longs = rules.long_signal(w.open, w.close, body, vr, ch, params)
    shorts = rules.short_signal(w.open, w.close, body, vr, ch, params)
    side = int(longs[-1]) - int(shorts[-1])
    return Evaluation(
        open_time=int(w.open_time[-1]),
        body_pct=float(body[-1]),
        vol_ratio=float(vr[-1]),
        chop=float(ch[-1]),
        side=side if side in (LONG, SHORT) else None,
    )


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
