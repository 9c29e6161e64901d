"""The synthetic market: deterministic, valid OHLCV, heterogeneous, entries at a realistic rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.signals import indicators, rules
from services.signals.rules import StrategyParams
from shared.config import Settings
from shared.synthetic import (
    COLUMNS,
    DEFAULT_START_MS,
    SyntheticSeries,
    generate_candles,
    symbol_names,
)

TF = 300_000


def entry_signals(df: pd.DataFrame) -> tuple[int, int]:
    """Count long and short entry signals of docs/strategy.md at default settings."""
    o, h, lo, c, v = (df[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    p = StrategyParams.from_settings(Settings())
    body = indicators.body_pct(o, c)
    vr = indicators.vol_ratio(v, 20)
    chop = indicators.chop(h, lo, c, 14)
    longs = rules.long_signal(o, c, body, vr, chop, p)
    shorts = rules.short_signal(o, c, body, vr, chop, p)
    return int(longs.sum()), int(shorts.sum())


@pytest.fixture(scope="module")
def month() -> dict[str, pd.DataFrame]:
    """Sixteen symbols, 20 days, seed 11."""
    return generate_candles(16, 20, seed=11)


def test_same_seed_same_candles_and_independent_of_n_symbols() -> None:
    a = generate_candles(3, 2, seed=5)
    b = generate_candles(5, 2, seed=5)
    assert list(a) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    for symbol, frame in a.items():
        pd.testing.assert_frame_equal(frame, b[symbol])
    c = generate_candles(3, 2, seed=6)
    assert not np.allclose(a["ETH/USDT"]["close"], c["ETH/USDT"]["close"])


def test_longer_run_extends_without_changing_the_prefix() -> None:
    short = generate_candles(3, 1.5, seed=3)
    long = generate_candles(3, 9, seed=3)
    for symbol, frame in short.items():
        pd.testing.assert_frame_equal(frame, long[symbol].iloc[: len(frame)])


def test_frames_are_valid_gapless_ohlcv(month: dict[str, pd.DataFrame]) -> None:
    for frame in month.values():
        assert tuple(frame.columns) == COLUMNS
        assert frame["timestamp"].dtype == np.int64
        assert all(frame[k].dtype == np.float64 for k in COLUMNS[1:])
        ts = frame["timestamp"].to_numpy()
        assert ts[0] == DEFAULT_START_MS
        assert (np.diff(ts) == TF).all()
        assert len(frame) == 20 * 288
        o, h, lo, c, v = (frame[k].to_numpy() for k in COLUMNS[1:])
        assert (lo > 0).all()
        assert (lo <= np.minimum(o, c)).all()
        assert (np.maximum(o, c) <= h).all()
        assert (v >= 0).all()
        assert np.isfinite(np.stack([o, h, lo, c, v])).all()
        assert np.array_equal(o[1:], c[:-1])


def test_custom_start_and_timeframe() -> None:
    frames = generate_candles(1, 1, seed=1, timeframe_ms=3_600_000, start_ms=3_600_000 * 10)
    frame = frames["BTC/USDT"]
    assert len(frame) == 24
    assert frame["timestamp"].iloc[0] == 36_000_000
    with pytest.raises(ValueError, match="aligned"):
        generate_candles(1, 1, seed=1, start_ms=DEFAULT_START_MS + 1)
    with pytest.raises(ValueError, match="seed"):
        generate_candles(1, 1, seed=-1)


def test_extra_symbols_beyond_the_table_have_unique_names() -> None:
    names = symbol_names(50)
    assert len(set(names)) == 50
    assert all(n.endswith("/USDT") for n in names)
    assert SyntheticSeries(40, seed=1).symbol == names[40]


def test_symbols_differ_in_volatility_and_volume(month: dict[str, pd.DataFrame]) -> None:
    vol = {s: np.diff(np.log(f["close"].to_numpy())).std() for s, f in month.items()}
    quote = {s: float((f["close"] * f["volume"]).sum()) for s, f in month.items()}
    assert max(vol.values()) > 2 * min(vol.values())
    assert max(quote.values()) > 20 * min(quote.values())
    assert vol["BTC/USDT"] < vol["1000PEPE/USDT"]


def test_top_volume_ranking_rotates_over_time(month: dict[str, pd.DataFrame]) -> None:
    daily = pd.DataFrame(
        {
            s: (f["close"] * f["volume"]).to_numpy().reshape(20, 288).sum(axis=1)
            for s, f in month.items()
        }
    )
    top8 = {tuple(sorted(row.nlargest(8).index)) for _, row in daily.iterrows()}
    assert len(top8) > 1


def test_big_candles_come_with_volume_bursts(month: dict[str, pd.DataFrame]) -> None:
    frame = month["ETH/USDT"]
    body = (frame["close"] - frame["open"]).abs() / frame["open"]
    ratio = frame["volume"] / frame["volume"].shift(1).rolling(20).mean()
    big = body > body.quantile(0.99)
    assert ratio[big].median() > 1.6 * ratio.median()
    assert ratio[~big].median() < 1.0


def test_entry_signal_rate_is_realistic(month: dict[str, pd.DataFrame]) -> None:
    """Docs state ~1-5.5 entries per symbol per day at defaults; keep each symbol in a band."""
    rates = {}
    for symbol, frame in month.items():
        longs, shorts = entry_signals(frame)
        assert longs > 0
        assert shorts > 0
        rates[symbol] = (longs + shorts) / 20
    assert min(rates.values()) >= 0.5
    assert max(rates.values()) <= 8
    assert 2.0 <= float(np.mean(list(rates.values()))) <= 4.5


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    index=st.integers(0, 60),
    timeframe_ms=st.sampled_from([60_000, 300_000, 3_600_000, 86_400_000]),
)
def test_any_seed_symbol_and_timeframe_gives_valid_candles(
    seed: int, index: int, timeframe_ms: int
) -> None:
    series = SyntheticSeries(index, seed, timeframe_ms)
    for _ in range(2):
        c = series.next_chunk()
        assert (np.diff(c.timestamp) == timeframe_ms).all()
        assert (c.low > 0).all()
        assert (c.low <= np.minimum(c.open, c.close)).all()
        assert (np.maximum(c.open, c.close) <= c.high).all()
        assert (c.volume >= 0).all()
        assert np.isfinite(c.high).all()
        assert np.isfinite(c.volume).all()
