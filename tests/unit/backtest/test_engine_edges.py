"""The engine at its edges, each on a few hand-made candles: the 24h universe window, markets
listed or ending inside the data, a single warm-up candle, progress reports, column dtypes.

Every series is made of two kinds of 6h candle, and VR_WINDOW and CHOP_PERIOD are both 2, so
whether a candle is an entry can be checked by hand (other parameters are the defaults):

- Q, a quiet doji: open = close = 100, high 100.1, low 99.9, volume 1 unless said otherwise.
  A doji is never an entry (the close must differ from the open).
- S, a long signal: open 100, high 101.1, low 99.9, close 101, volume 10. body 1 / 100 = 0.01
  >= 0.007; vol_ratio 10 / mean(the two volumes before) = 10 after two Q of volume 1 (5 after
  volume 2), >= 1.8; chop over the Q before it and S: TR 0.2 (a Q after a Q) + 1.2 over the
  range 101.1 - 99.9 = 1.2, 100 * log10(1.4 / 1.2) / log10(2) = 22.2 < 50. The earliest S that
  can enter is a symbol's third candle (chop needs CHOP_PERIOD + 1 candles).

A long filled at 101 has its stop at 98.98 and arms its trail at 103.02; a Q (low 99.9, high
100.1) reaches neither, so every position here is held to its symbol's last close (reason END).
Size = equity * 0.8 * 3 / MAX_POSITIONS / 101; fees are 0.0005 of the notional.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.backtest.engine import (
    BacktestConfig,
    BacktestResult,
    candidate_sides,
    run_backtest,
)
from services.signals.rules import ExitReason, StrategyParams
from shared.config import Settings

TF = 6 * 3_600_000  # 6h candles: four of them make 24h
DAY = 86_400_000
T0 = 19_676 * DAY  # 2023-11-15 00:00 UTC, a multiple of the day: rotations at T0 + k days

Row = tuple[float, float, float, float, float]


def q(volume: float = 1.0) -> Row:
    return (100.0, 100.1, 99.9, 100.0, volume)


def s(volume: float = 10.0) -> Row:
    return (100.0, 101.1, 99.9, 101.0, volume)


def candles(first: int, rows: list[Row]) -> pd.DataFrame:
    """Return candles first, first + 1, ... (candle k opens at T0 + k * TF)."""
    o, h, lo, c, v = (list(col) for col in zip(*rows, strict=True))
    ts = [T0 + (first + k) * TF for k in range(len(rows))]
    return pd.DataFrame(
        {"timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}
    ).astype({"timestamp": np.int64})


def close_of(k: int) -> int:
    """Return the close time of candle k (its open plus one timeframe)."""
    return T0 + (k + 1) * TF


BASE = BacktestConfig(
    params=StrategyParams.from_settings(Settings()),
    leverage=3,
    trade_pct=0.8,
    max_positions=3,
    top_n=8,
    vr_window=2,
    chop_period=2,
    timeframe_ms=TF,
    rotate_ms=DAY,
)


def config(**kw: Any) -> BacktestConfig:
    return dataclasses.replace(BASE, **kw)


def entries(result: BacktestResult) -> list[tuple[str, int]]:
    return [(t.symbol, t.entry_time_ms) for t in result.trades]


def test_the_24h_volume_ignores_the_candle_that_closed_exactly_24h_before() -> None:
    """The universe window is (T - 24h, T]: a candle closing exactly 24h before the rotation is
    out. Otherwise yesterday's burst of volume would pick today's markets.

    TOP_N 1; rotations at the closes T0 + 24h (candle 3) and T0 + 48h (candle 7). AAA had a
    burst of volume 50 in candle 3, which closes exactly 24h before T0 + 48h. At T0 + 48h the
    window holds candles 4..7: AAA 3 * 100 * 1 + 101 * 10 = 1,310, BBB 3 * 100 * 2 + 1,010 =
    1,610, so BBB is the universe and only BBB enters on the signal both have at candle 7.
    Counting candle 3 would give AAA 6,310 against BBB's 1,810.
    """
    frames = {
        "AAA/USDT": candles(0, [q(), q(), q(), q(50.0), q(), q(), q(), s()]),
        "BBB/USDT": candles(0, [q(2.0)] * 7 + [s()]),
    }
    result = run_backtest(frames, config(top_n=1))
    assert entries(result) == [("BBB/USDT", close_of(7))]


def test_a_market_holds_no_universe_slot_before_its_first_candle() -> None:
    """A market listed after a rotation is not in that rotation's universe, even with a slot
    free; it joins at the first rotation that sees a candle of it. Its signals before that are
    not traded: the universe must be made of markets that were trading.

    TOP_N 2 and only ZZZ trading at the rotation at T0 + 24h (close of candle 3). AAA lists at
    candle 4 and signals at candles 6 and 9. The signal at candle 6 (T0 + 42h) is refused;
    the rotation at T0 + 48h sees AAA's candles 4..7, so the signal at candle 9 (T0 + 60h)
    enters, and the position ends at AAA's last close, candle 11.
    """
    frames = {
        "ZZZ/USDT": candles(0, [q()] * 12),
        "AAA/USDT": candles(4, [q(), q(), s(), q(), q(), s(), q(), q()]),
    }
    result = run_backtest(frames, config(top_n=2))
    assert entries(result) == [("AAA/USDT", close_of(9))]
    assert result.trades[0].exit_time_ms == close_of(11)


def test_a_new_market_counts_every_candle_since_its_listing() -> None:
    """A market listed within the last 24h is ranked on all its candles, its first included,
    exactly: an exact tie with an older market is broken by name, as for any tie.

    TOP_N 1. ZZZ trades from candle 0, AAA from candle 4; from candle 4 on both have the same
    candles, with a signal at candle 7. At the rotation at T0 + 48h the window holds candles
    4..7 of both: 3 * 100 + 101 * 10 = 1,310 each, AAA's being all its candles. The tie goes
    to AAA by name, so AAA enters and ZZZ does not.
    """
    frames = {
        "ZZZ/USDT": candles(0, [q()] * 7 + [s(), q()]),
        "AAA/USDT": candles(4, [q(), q(), q(), s(), q()]),
    }
    result = run_backtest(frames, config(top_n=1))
    assert entries(result) == [("AAA/USDT", close_of(7))]


def test_an_entry_at_a_markets_last_close_frees_its_slot_at_the_next_close() -> None:
    """A position entered at its market's very last close is closed at that close (fees only)
    but holds its slot while the other entries of that close are decided; at the next close
    the slot is free. A market listed on the very last candle changes nothing.

    MAX_POSITIONS 1. At candle 2 XXX (vol_ratio 10) and WWW (vol_ratio 10 / 2 = 5) signal;
    XXX goes first and its data ends there: 24,000 / 101 units, notional 24,000, fees 12 + 12,
    PnL -24, and WWW finds the slot taken. At candle 3 YYY signals and enters with equity
    10,000 - 24 = 9,976: 9,976 * 0.8 * 3 / 101 units, held to its last close (candle 5, 100):
    PnL = -1 * qty - 0.0005 * (101 + 100) * qty = -1.1005 * qty. NEW has one candle, candle 5.
    """
    frames = {
        "XXX/USDT": candles(0, [q(), q(), s()]),
        "WWW/USDT": candles(0, [q(2.0), q(2.0), s(), q(), q(), q()]),
        "YYY/USDT": candles(0, [q(), q(), q(), s(), q(), q()]),
        "NEW/USDT": candles(5, [q()]),
    }
    result = run_backtest(frames, config(max_positions=1))
    x, y = result.trades
    assert (x.symbol, x.entry_time_ms, x.exit_time_ms, x.exit_reason) == (
        "XXX/USDT",
        close_of(2),
        close_of(2),
        ExitReason.END,
    )
    assert (x.entry_price, x.exit_price) == (101.0, 101.0)
    assert x.quantity == pytest.approx(24_000 / 101)
    assert x.fees == pytest.approx(24.0)
    assert x.pnl == pytest.approx(-24.0)
    qty = 9_976 * 0.8 * 3 / 101
    assert (y.symbol, y.entry_time_ms, y.exit_time_ms, y.exit_reason) == (
        "YYY/USDT",
        close_of(3),
        close_of(5),
        ExitReason.END,
    )
    assert y.quantity == pytest.approx(qty)
    assert y.exit_price == 100.0
    assert y.pnl == pytest.approx(-1.1005 * qty)
    assert result.step_ms.tolist() == [close_of(k) for k in range(6)]
    assert result.equity[2] == pytest.approx(9_976.0)
    assert result.end_equity == pytest.approx(9_976 - 1.1005 * qty)
    assert result.symbols == ["XXX/USDT", "WWW/USDT", "YYY/USDT", "NEW/USDT"]


def test_a_single_warm_up_candle() -> None:
    """With --from one candle after the start, that first candle only feeds the indicators:
    its close is not a step, and the candles after it are the steps and trade as usual.

    Candles Q Q S Q Q, --from = the open of candle 1, MAX_POSITIONS 1. The steps are the closes
    of candles 1..4. S (candle 2) has vol_ratio 10 from candles 0 and 1, the warm-up candle
    included, and enters 24,000 / 101 units at 101 (entry fee 12); it ends at candle 4's close
    100: gross -24,000 / 101, exit fee 0.0005 * 100 * 24,000 / 101 = 1,200 / 101. Equity per
    step: 10,000; 9,988 (the entry fee); 9,988 - 24,000 / 101 (marked at 100); 9,988 -
    25,200 / 101 (closed, exit fee paid).
    """
    frames = {"AAA/USDT": candles(0, [q(), q(), s(), q(), q()])}
    result = run_backtest(frames, config(max_positions=1, from_ms=T0 + TF))
    assert result.step_ms.tolist() == [close_of(k) for k in (1, 2, 3, 4)]
    assert entries(result) == [("AAA/USDT", close_of(2))]
    assert result.trades[0].exit_time_ms == close_of(4)
    expected = [10_000.0, 9_988.0, 9_988 - 24_000 / 101, 9_988 - 25_200 / 101]
    assert result.equity.tolist() == pytest.approx(expected)
    assert result.candles == 4


@pytest.mark.parametrize("repeats", [3, 1_005])
def test_progress_is_reported_every_hundredth_candidate_entry(repeats: int) -> None:
    """Progress is reported at every hundredth candidate entry (at each one when there are
    fewer than 200), then once complete: a steady bar, not a flood of calls nor a frozen one.

    The candles are Q Q S repeated, so candidate k is candle 3k + 2, at step 3k + 2 (one
    symbol, no --from). 3 candidates: reported at each. 1,005 candidates: 1,005 // 100 = 10,
    so at candidates 0, 10, ..., 1,000 (101 reports).
    """
    frames = {"AAA/USDT": candles(0, [q(), q(), s()] * repeats)}
    calls: list[tuple[int, int]] = []
    run_backtest(frames, BASE, lambda step, n: calls.append((step, n)))
    n = 3 * repeats
    every = max(1, repeats // 100)
    assert calls == [(3 * k + 2, n) for k in range(0, repeats, every)] + [(n, n)]


def test_float32_columns_give_the_same_backtest_as_float64() -> None:
    """Prices stored as float32 (as some Parquet exporters write them) are read as the same
    numbers in float64: every trade and every equity point equals the float64 run. In float32
    arithmetic a position's mark (100 - 101) * qty would be rounded to about 7 digits, moving
    the equity that sizes the next entry. Sides are the integers +1 and -1.

    AAA signals at candle 2 and BBB at candle 3, sized from the equity with AAA marked at 100.
    """
    frames = {
        "AAA/USDT": candles(0, [q(), q(), s(), q(), q(), q()]),
        "BBB/USDT": candles(0, [q(), q(), q(), s(), q(), q()]),
    }
    prices = {c: np.float32 for c in ("open", "high", "low", "close", "volume")}
    as32 = {k: f.astype(prices) for k, f in frames.items()}
    as64 = {k: f.astype({c: np.float64 for c in prices}) for k, f in as32.items()}
    r32, r64 = run_backtest(as32, BASE), run_backtest(as64, BASE)
    assert entries(r64) == [("AAA/USDT", close_of(2)), ("BBB/USDT", close_of(3))]
    assert r32.trades == r64.trades
    assert r32.equity.tobytes() == r64.equity.tobytes()
    assert [(t.side, type(t.side)) for t in r32.trades] == [(1, int), (1, int)]
    side, _ = candidate_sides(as32["AAA/USDT"], BASE)
    assert side.dtype == np.int8
    assert side.tolist() == [0, 0, 1, 0, 0, 0]


def test_a_range_without_candles_is_an_error_saying_so() -> None:
    """--from after the data (or --to before it) leaves nothing to replay: the error says
    exactly that, and the CLI prints it as it is."""
    frames = {"AAA/USDT": candles(0, [q(), q(), s()])}
    message = r"^no candles in the selected time range$"
    with pytest.raises(ValueError, match=message):
        run_backtest(frames, config(from_ms=close_of(2)))
    with pytest.raises(ValueError, match=message):
        run_backtest(frames, config(to_ms=T0))


def test_config_from_settings_keeps_the_account_and_range_it_is_given() -> None:
    """The starting equity, --from and --to passed in are the ones the engine uses (a start of
    2,500 sizes every trade a quarter as large as the default 10,000 would); COIN_ROTATE_HOURS
    1.5 is 5,400,000 ms."""
    cfg = BacktestConfig.from_settings(
        Settings(coin_rotate_hours=1.5, max_positions=2),
        start_equity=2_500.0,
        from_ms=T0,
        to_ms=T0 + DAY,
    )
    assert (cfg.start_equity, cfg.from_ms, cfg.to_ms) == (2_500.0, T0, T0 + DAY)
    assert (cfg.rotate_ms, cfg.max_positions, cfg.timeframe_ms) == (5_400_000, 2, 300_000)
