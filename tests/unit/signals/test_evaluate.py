"""evaluate() on the window ending at t == the backtester's candidate_sides at t, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from services.backtest.engine import BacktestConfig, candidate_sides
from services.signals import indicators as ind
from services.signals.evaluate import (
    CandleWindow,
    Evaluation,
    describe,
    entry_reason,
    evaluate,
    evaluate_many,
)
from services.signals.rules import LONG, SHORT
from shared.config import Settings
from shared.schemas import Candle
from shared.synthetic import generate_candles

TF = "5m"
TF_MS = 300_000


def bits(x: float) -> bytes:
    """Return the IEEE-754 bytes of a float (NaN payload and sign included)."""
    return np.float64(x).tobytes()


def window_at(frame: pd.DataFrame, t: int, limit: int) -> CandleWindow:
    """Return the window of the last ``limit`` candles ending at row t, as arrays."""
    part = frame.iloc[max(0, t - limit + 1) : t + 1]
    return CandleWindow(
        open_time=part["timestamp"].to_numpy(np.int64),
        open=part["open"].to_numpy(np.float64),
        high=part["high"].to_numpy(np.float64),
        low=part["low"].to_numpy(np.float64),
        close=part["close"].to_numpy(np.float64),
        volume=part["volume"].to_numpy(np.float64),
    )


def as_candles(frame: pd.DataFrame, symbol: str) -> list[Candle]:
    """Return the frame's rows as candle messages, as market_data stores them."""
    ts = frame["timestamp"].to_numpy(np.int64).tolist()
    cols = [frame[k].to_numpy(np.float64).tolist() for k in ("open", "high", "low", "close")]
    volume = frame["volume"].to_numpy(np.float64).tolist()
    return [
        Candle(symbol=symbol, timeframe=TF, open_time=t, open=o, high=h, low=lo, close=c, volume=v)
        for t, o, h, lo, c, v in zip(ts, *cols, volume, strict=True)
    ]


def assert_parity(frame: pd.DataFrame, s: Settings, symbol: str = "SYN/USDT") -> list[int]:
    """Check evaluate() against the backtester at every candle; return the sides found."""
    frame = frame.reset_index(drop=True)
    side, vr = candidate_sides(frame, BacktestConfig.from_settings(s))
    pos = ind.segment_position(frame["timestamp"].to_numpy(np.int64), TF_MS)
    body = ind.body_pct(frame["open"].to_numpy(np.float64), frame["close"].to_numpy(np.float64))
    h, lo, c = (frame[k].to_numpy(np.float64) for k in ("high", "low", "close"))
    ch = ind.chop(h, lo, c, s.chop_period, pos)
    candles = as_candles(frame, symbol)
    limit = s.candle_limit
    for t in range(len(frame)):
        ev: Evaluation
        if t % 2:  # both input forms: arrays and candle messages
            ev = evaluate(window_at(frame, t, limit), s)
        else:
            ev = evaluate(candles[max(0, t - limit + 1) : t + 1], s)
        assert (ev.side or 0) == int(side[t]), t
        assert bits(ev.vol_ratio) == bits(vr[t]), t
        assert bits(ev.body_pct) == bits(body[t]), t
        assert bits(ev.chop) == bits(ch[t]), t
        assert ev.open_time == int(frame["timestamp"].iloc[t])
    return [int(x) for x in side]


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop a few runs of candles (a short gap, a single candle, a long outage)."""
    drop = [*range(300, 303), 700, *range(900, 960)]
    return frame.drop(index=[i for i in drop if i < len(frame)])


@pytest.mark.parametrize("limit", [100, 21])
def test_synthetic_series_with_gaps_matches_the_backtester(limit: int) -> None:
    s = Settings(timeframe=TF, candle_limit=limit)
    found: list[int] = []
    for frame in generate_candles(3, 4, seed=7, timeframe_ms=TF_MS).values():
        found += assert_parity(with_gaps(frame), s)
    assert LONG in found  # the comparison covered real entries
    assert SHORT in found


# Random series: small windows, lax thresholds (entries are frequent), random gaps.
series = st.integers(min_value=1, max_value=45).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-0.03, 0.03), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 0.02), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 1000.0), min_size=n, max_size=n),
        st.lists(st.sampled_from([0, 0, 0, 0, 1, 3]), min_size=n, max_size=n),
    )
)


@hyp_settings(max_examples=80, deadline=None)
@given(
    series,
    st.integers(1, 6),
    st.integers(2, 6),
    st.integers(1, 4),
    st.floats(0.001, 0.01),
    st.floats(0.5, 2.0),
    st.floats(20.0, 100.0),
)
def test_random_series_match_the_backtester(
    data: tuple[list[float], list[float], list[float], list[int]],
    vr_window: int,
    chop_period: int,
    extra: int,
    min_body: float,
    min_vr: float,
    chop_max: float,
) -> None:
    moves, wicks, volumes, gaps = data
    close = 10.0 * np.exp(np.cumsum(np.array(moves)))
    open_ = np.concatenate([[10.0], close[:-1]])
    w = np.array(wicks)
    ts = (np.arange(len(close)) + np.cumsum(gaps)) * TF_MS
    frame = pd.DataFrame(
        {
            "timestamp": ts.astype(np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + w),
            "low": np.minimum(open_, close) * (1 - w),
            "close": close,
            "volume": np.array(volumes),
        }
    )
    s = Settings(
        timeframe=TF,
        vr_window=vr_window,
        chop_period=chop_period,
        candle_limit=max(vr_window, chop_period) + extra,
        min_body_pct=min_body,
        long_vr=min_vr,
        short_vr=min_vr,
        chop_threshold=chop_max,
    )
    assert_parity(frame, s)


def test_a_window_of_one_candle_has_no_entry() -> None:
    c = Candle(
        symbol="X/USDT", timeframe=TF, open_time=0, open=1.0, high=2.0, low=1.0, close=2.0, volume=5
    )
    ev = evaluate([c], Settings(timeframe=TF))
    assert ev.side is None
    assert ev.side_name is None
    assert ev.body_pct == 1.0
    assert math.isnan(ev.vol_ratio)
    assert math.isnan(ev.chop)


def test_an_empty_or_ragged_window_is_refused() -> None:
    empty = np.zeros(0)
    with pytest.raises(
        ValueError, match=r"^a candle window needs at least the candle being evaluated$"
    ):
        CandleWindow(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    one = np.ones(1)
    with pytest.raises(
        ValueError, match=r"^the columns of a candle window must have the same length$"
    ):
        CandleWindow(np.zeros(1, dtype=np.int64), one, one, one, np.ones(2), one)


def test_reason_names_the_thresholds_met() -> None:
    ev = Evaluation(0, 0.0082, 2.1, 43.2, LONG)
    assert ev.side_name == "long"
    s = Settings(timeframe=TF)
    assert entry_reason(ev, s) == "green body 0.82% >= 0.70%, VR 2.10 >= 1.8, CHOP 43.2 < 50"


def test_a_short_reason_names_the_short_threshold() -> None:
    ev = Evaluation(0, 0.0099, 1.62, 38.04, SHORT)
    assert ev.side_name == "short"
    s = Settings(timeframe=TF)
    assert entry_reason(ev, s) == "red body 0.99% >= 0.70%, VR 1.62 >= 1.5, CHOP 38.0 < 50"


def test_the_log_line_shows_the_indicators_rounded() -> None:
    assert describe(Evaluation(0, 0.0082, 2.14, 43.4, LONG)) == ("body=0.82% VR=2.1 CHOP=43")
    # CHOP is NaN until a segment has CHOP_PERIOD candles
    assert describe(Evaluation(0, 0.0, 1.0, math.nan, None)) == ("body=0.00% VR=1.0 CHOP=nan")


def test_many_windows_in_one_pass_equal_each_window_alone() -> None:
    """``evaluate_many`` lays windows end to end: no value may read across two of them, even
    where one window starts exactly one timeframe after the previous one ended (the case a
    gap check alone would join) or repeats it, and whatever their lengths."""
    s = Settings(timeframe=TF, candle_limit=30, vr_window=5, chop_period=4)
    frames = [with_gaps(f).reset_index(drop=True) for f in
              generate_candles(2, 2, seed=3, timeframe_ms=TF_MS).values()]  # fmt: skip
    a, b = frames
    windows = [
        window_at(a, 40, 30),
        window_at(a, 70, 30),  # starts right after the previous one ends
        window_at(b, 70, 30),  # the same times, another symbol
        window_at(b, 70, 30),
        window_at(a, 0, 30),  # one candle
        window_at(b, 3, 30),  # shorter than the indicator windows
        window_at(a, 305, 30),  # across a gap
        window_at(a, 9, 10),
        window_at(a, 12, 3),  # right after, too short for any value: NaN, not the joined one
    ]
    together = evaluate_many(windows, s)
    alone = [evaluate(w, s) for w in windows]
    assert [(e.open_time, e.side, bits(e.body_pct), bits(e.vol_ratio), bits(e.chop))
            for e in together] == [
        (e.open_time, e.side, bits(e.body_pct), bits(e.vol_ratio), bits(e.chop)) for e in alone
    ]  # fmt: skip
    assert not math.isnan(alone[1].chop)  # the joined case has values to get wrong
    assert math.isnan(alone[-1].vol_ratio)
    assert math.isnan(alone[-1].chop)
    assert evaluate_many([], s) == []


def test_a_window_from_rows_has_the_columns_of_its_candles() -> None:
    frame = next(iter(generate_candles(1, 1, seed=5, timeframe_ms=TF_MS).values())).head(7)
    candles = as_candles(frame, "ROW/USDT")
    rows = CandleWindow.from_rows(
        [c.open_time for c in candles],
        [(c.open, c.high, c.low, c.close, c.volume) for c in candles],
    )
    want = CandleWindow.from_candles(candles)
    for name in ("open_time", "open", "high", "low", "close", "volume"):
        got, expected = getattr(rows, name), getattr(want, name)
        assert got.dtype == expected.dtype, name
        assert got.tolist() == expected.tolist(), name
        assert got.flags["C_CONTIGUOUS"], name
