"""The fast engine gives exactly the trades of the naive reference backtester (reference.py)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from services.signals.sizing import MarketLimits
from shared.config import Settings
from shared.synthetic import generate_candles
from tests.integration.backtest.reference import RefResult, reference_backtest

TF = 300_000
# Lower entry thresholds than the defaults, so a few days of data give many trades.
BUSY: dict[str, Any] = {"long_vr": 1.4, "short_vr": 1.2, "min_body_pct": 0.004}


def run_both(
    frames: dict[str, pd.DataFrame],
    s: Settings,
    limits: dict[str, tuple[float, float, float]] | None = None,
    **kw: Any,
) -> tuple[BacktestResult, RefResult]:
    """Run engine and reference on the same candles and settings; assert they agree exactly."""
    cfg = BacktestConfig.from_settings(s, **kw)
    cfg = dataclasses.replace(cfg, limits={k: MarketLimits(*v) for k, v in (limits or {}).items()})
    eng = run_backtest(frames, cfg)
    ref = reference_backtest(frames, s, limits=limits, **kw)
    et = sorted(eng.trades, key=lambda t: (t.entry_time_ms, t.symbol))
    rt = sorted(ref.trades, key=lambda t: (t.entry_time_ms, t.symbol))
    assert len(et) == len(rt)
    for a, b in zip(et, rt, strict=True):
        assert (a.symbol, a.side, a.entry_time_ms, a.exit_time_ms, str(a.exit_reason)) == (
            b.symbol,
            b.side,
            b.entry_time_ms,
            b.exit_time_ms,
            b.exit_reason,
        ), (a, b)
        for x, y in [
            (a.entry_price, b.entry_price),
            (a.exit_price, b.exit_price),
            (a.quantity, b.quantity),
            (a.fees, b.fees),
            (a.pnl, b.pnl),
        ]:
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (a, b)
    assert math.isclose(eng.end_equity, ref.end_equity, rel_tol=1e-9)
    assert eng.step_ms.tolist() == ref.steps
    np.testing.assert_allclose(eng.equity, ref.equity, rtol=1e-9)
    return eng, ref


def drop_rows(frame: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    """Return the frame without rows [start, stop): a gap in the data."""
    return frame.drop(frame.index[start:stop]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        BUSY | {"max_positions": 1},
        BUSY | {"max_positions": 3, "slippage": 0.001, "fee_rate": 0.001},
        BUSY | {"top_n": 2, "coin_rotate_hours": 1},
        BUSY | {"vr_window": 5, "chop_period": 2, "chop_threshold": 60, "max_positions": 2},
    ],
    ids=["defaults", "one-slot", "slippage", "rotation-1h", "short-windows"],
)
def test_engine_matches_reference(seed: int, overrides: dict[str, Any]) -> None:
    frames = generate_candles(5, 4, seed)
    eng, _ = run_both(frames, Settings(**overrides))
    assert eng.trades, "a comparison without trades proves nothing"


def test_rotation_decides_which_symbols_trade() -> None:
    """With TOP_N below the symbol count the universe filters entries, and both agree on it."""
    frames = generate_candles(6, 6, 11)
    narrow, _ = run_both(frames, Settings(**BUSY, top_n=2, coin_rotate_hours=1))
    wide, _ = run_both(frames, Settings(**BUSY, top_n=6, coin_rotate_hours=1))
    assert len({t.symbol for t in narrow.trades}) < len({t.symbol for t in wide.trades})


@pytest.mark.parametrize("seed", [4, 5])
def test_gaps_and_ragged_series(seed: int) -> None:
    """A gap in one symbol, one starting late and one ending early: windows, marks and ends."""
    frames = generate_candles(5, 5, seed)
    names = list(frames)
    frames[names[0]] = drop_rows(frames[names[0]], 600, 630)
    frames[names[1]] = frames[names[1]].iloc[200:].reset_index(drop=True)
    frames[names[2]] = frames[names[2]].iloc[:-400].reset_index(drop=True)
    eng, _ = run_both(frames, Settings(**BUSY, max_positions=3, top_n=4))
    assert eng.trades
    assert len(eng.step_ms) == 5 * 288  # the union of every symbol's closes


@pytest.mark.parametrize("seed", [6, 7])
def test_from_to_range(seed: int) -> None:
    """--from keeps earlier candles as warm-up only; --to cuts the data and closes at the end."""
    frames = generate_candles(4, 5, seed)
    t0 = int(frames[next(iter(frames))]["timestamp"].iloc[0])
    from_ms, to_ms = t0 + 300 * TF, t0 + 1_200 * TF
    eng, _ = run_both(frames, Settings(**BUSY), from_ms=from_ms, to_ms=to_ms)
    assert eng.trades
    assert all(from_ms + TF <= t.entry_time_ms and t.exit_time_ms <= to_ms for t in eng.trades)


def test_symbol_whose_data_ended_leaves_the_universe() -> None:
    """Regression: a symbol with no more data held its universe slot for 24h after its end."""
    frames = generate_candles(2, 4, 3)
    big, small = list(frames)  # BTC trades far more quote volume than ETH
    frames[big] = frames[big].iloc[: 2 * 288].reset_index(drop=True)
    big_end = int(frames[big]["timestamp"].iloc[-1]) + TF
    eng, _ = run_both(frames, Settings(**BUSY, top_n=1))
    assert any(
        t.symbol == small and big_end < t.entry_time_ms < big_end + 86_400_000 for t in eng.trades
    )


def test_symbol_cut_off_before_from_holds_no_universe_slot() -> None:
    """A symbol whose candles all precede --from is warm-up only and not an active market."""
    frames = generate_candles(4, 4, 1)
    big = next(iter(frames))
    t0 = int(frames[big]["timestamp"].iloc[0])
    frames[big] = frames[big].iloc[:480].reset_index(drop=True)
    eng, _ = run_both(frames, Settings(**BUSY, top_n=2), from_ms=t0 + 500 * TF)
    assert eng.trades
    assert big not in eng.symbols


def test_amount_step_and_minimums_with_positions_open() -> None:
    """Regression: sizing with an amount step crashed once equity was a numpy float64."""
    frames = generate_candles(4, 4, 2)
    btc, eth, sol, xrp = frames
    limits = {btc: (0.001, 0.001, 5.0), eth: (0.01, 0.0, 5.0), sol: (1.0, 0.0, 0.0)}
    limits[xrp] = (10.0, 0.0, 9_000.0)  # above margin * LEVERAGE = 8,000: XRP never trades
    eng, _ = run_both(frames, Settings(**BUSY, max_positions=3), limits)
    assert len(eng.trades) > 5
    assert xrp not in {t.symbol for t in eng.trades}
    free, _ = run_both(frames, Settings(**BUSY, max_positions=3))
    assert xrp in {t.symbol for t in free.trades}
    for t in eng.trades:
        step = limits[t.symbol][0]
        assert math.isclose(t.quantity / step, round(t.quantity / step), abs_tol=1e-6)


def on_coarse_grid(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Rescale to ~100, round prices to 0.5 and volumes to whole units: exact ties galore."""
    out = {}
    for sym, fr in frames.items():
        fr = fr.copy()
        scale = 100.0 / float(fr["close"].iloc[0])
        for col in ("open", "close"):
            fr[col] = np.round(fr[col] * scale * 2) / 2
        body_hi, body_lo = fr[["open", "close"]].max(axis=1), fr[["open", "close"]].min(axis=1)
        fr["high"] = np.maximum(np.round(fr["high"] * scale * 2) / 2, body_hi)
        fr["low"] = np.minimum(np.round(fr["low"] * scale * 2) / 2, body_lo)
        fr["volume"] = np.round(fr["volume"] / fr["volume"].mean() * 4)
        out[sym] = fr
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_positions", [1, 2])
def test_exact_thresholds_and_ties_on_a_coarse_grid(seed: int, max_positions: int) -> None:
    """Prices on a 0.5 grid and whole volumes hit vol_ratio, stop and trail levels exactly."""
    s = Settings(
        long_vr=1.5,
        short_vr=1.25,
        min_body_pct=0.005,
        vr_window=4,
        chop_period=2,
        chop_threshold=60,
        max_positions=max_positions,
        top_n=3,
    )
    eng, _ = run_both(on_coarse_grid(generate_candles(4, 4, seed)), s)
    assert len(eng.trades) > 20


def test_progress_is_reported_in_order_and_ends_complete() -> None:
    frames = generate_candles(3, 2, 5)
    calls: list[tuple[int, int]] = []
    result = run_backtest(
        frames, BacktestConfig.from_settings(Settings(**BUSY)), lambda s, n: calls.append((s, n))
    )
    n_steps = len(result.step_ms)
    assert calls[-1] == (n_steps, n_steps)
    assert all(n == n_steps for _, n in calls)
    done = [s for s, _ in calls]
    assert done == sorted(done)
    assert 2 <= len(calls) <= 102  # about every 1 % of the candidates, not every one
