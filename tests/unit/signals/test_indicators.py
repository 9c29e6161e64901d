"""Indicator values by hand, and vectorized == incremental on random candles."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.signals import indicators as ind
from services.signals.indicators import FloatArray


def arr(*xs: float) -> FloatArray:
    return np.array(xs, dtype=np.float64)


def test_body_pct_is_abs_body_over_open() -> None:
    assert ind.body_pct(arr(100.0, 100.0), arr(101.0, 98.0)).tolist() == [0.01, 0.02]


def test_vol_ratio_baseline_excludes_the_candle_itself() -> None:
    vr = ind.vol_ratio(arr(1, 3, 12, 4), window=2)
    assert math.isnan(vr[0])
    assert math.isnan(vr[1])
    assert vr[2] == 12 / 2  # mean(1, 3)
    assert vr[3] == 4 / 7.5  # mean(3, 12)


def test_vol_ratio_undefined_when_baseline_is_zero() -> None:
    vr = ind.vol_ratio(arr(0, 0, 5), window=2)
    assert math.isnan(vr[2])


def test_true_range_uses_previous_close() -> None:
    tr = ind.true_range(arr(11, 12, 15), arr(9, 10, 14), arr(10, 11, 14.5))
    assert math.isnan(tr[0])
    assert tr[1:].tolist() == [2.0, 4.0]  # max(1, |15-11|, |14-11|) = 4


def test_chop_by_hand() -> None:
    high, low, close = arr(11, 12, 15), arr(9, 10, 14), arr(10, 11, 14.5)
    ch = ind.chop(high, low, close, period=2)
    assert math.isnan(ch[0])
    assert math.isnan(ch[1])
    # sum TR = 2 + 4, range = max(12, 15) - min(10, 14) = 5
    assert ch[2] == 100 * math.log10(6 / 5) / math.log10(2)


def test_chop_undefined_when_range_is_zero() -> None:
    flat = arr(5, 5, 5, 5)
    assert np.isnan(ind.chop(flat, flat, flat, period=2)).all()


def test_windows_restart_after_a_gap() -> None:
    tf = 300_000
    ts = np.array([0, 1, 2, 5, 6, 7], dtype=np.int64) * tf
    pos = ind.segment_position(ts, tf)
    assert pos.tolist() == [0, 1, 2, 0, 1, 2]
    vr = ind.vol_ratio(arr(1, 1, 4, 1, 1, 8), window=2, pos=pos)
    assert vr[2] == 4.0
    assert math.isnan(vr[3])
    assert math.isnan(vr[4])
    assert vr[5] == 8.0
    one = arr(2, 2, 2, 2, 2, 2)
    ch = ind.chop(one + 1, one - 1, one, period=2, pos=pos)
    assert np.isnan(ch[[0, 1, 3, 4]]).all()
    assert not np.isnan(ch[[2, 5]]).any()


candles = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.5, 2.0), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 0.05), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 1000.0), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0]), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(candles, st.integers(2, 6), st.integers(2, 6))
def test_vectorized_equals_incremental(
    data: tuple[list[float], list[float], list[float], list[float]], vr_w: int, chop_n: int
) -> None:
    moves, wicks, volumes, gap_flags = data
    close = np.asarray(100 * np.cumprod(arr(*moves) ** 0.1), dtype=np.float64)
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + arr(*wicks))
    low = np.minimum(open_, close) * (1 - arr(*wicks))
    vol = arr(*volumes)
    ts = (np.arange(len(close)) + np.cumsum(gap_flags).astype(np.int64)) * 60_000
    pos = ind.segment_position(ts.astype(np.int64), 60_000)
    body = ind.body_pct(open_, close)
    vr = ind.vol_ratio(vol, vr_w, pos)
    ch = ind.chop(high, low, close, chop_n, pos)
    window = ind.IndicatorWindow(vr_w, chop_n)
    for t in range(len(close)):
        if pos[t] == 0:
            window.reset()
        got = window.push(open_[t], high[t], low[t], close[t], vol[t])
        for a, b in ((got.body_pct, body[t]), (got.vol_ratio, vr[t]), (got.chop, ch[t])):
            assert (math.isnan(a) and math.isnan(b)) or a == b
