"""summary.json's numbers, each worked out by hand from a small equity curve and trade list."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from services.backtest.engine import BacktestResult, Trade
from services.backtest.report import YEAR_MS, summarize
from services.signals.rules import ExitReason

TF_MS = 300_000  # 5m: 105 120 steps a year


def trade(pnl: float) -> Trade:
    return Trade("BTC/USDT", 1, 0, 100.0, TF_MS, 100.0, 1.0, 0.1, pnl, ExitReason.STOP)


def result(equity: list[float], pnls: list[float]) -> BacktestResult:
    return BacktestResult(
        trades=[trade(p) for p in pnls],
        step_ms=np.arange(1, len(equity) + 1, dtype=np.int64) * TF_MS,
        equity=np.array(equity, dtype=np.float64),
        start_equity=1_000.0,
        end_equity=equity[-1],
        candles=len(equity),
        symbols=["BTC/USDT"],
    )


def test_a_winning_run() -> None:
    # Equity 1000 -> 1100 -> 990 -> 1030; trades +60, -20, -10.
    s = summarize(result([1_100.0, 990.0, 1_030.0], [60.0, -20.0, -10.0]), TF_MS, 1.5)
    assert (s["trades"], s["wins"]) == (3, 1)
    assert s["win_rate"] == pytest.approx(1 / 3)
    assert s["total_pnl"] == pytest.approx(30.0)
    assert s["return_pct"] == pytest.approx(3.0)
    assert s["max_drawdown_pct"] == pytest.approx(10.0)  # 1100 down to 990
    assert s["profit_factor"] == pytest.approx(60.0 / 30.0)  # gross profit / gross loss
    rets = [0.1, -0.1, 40 / 990]
    expected = statistics.fmean(rets) / statistics.pstdev(rets) * math.sqrt(YEAR_MS / TF_MS)
    assert s["sharpe"] == pytest.approx(expected)
    assert s["sharpe"] > 0
    assert (s["start_equity"], s["end_equity"], s["candles"], s["symbols"]) == (1_000, 1_030, 3, 1)


def test_a_losing_run() -> None:
    # Equity 1000 -> 950 -> 960 -> 900; trades -50, +10, -60.
    s = summarize(result([950.0, 960.0, 900.0], [-50.0, 10.0, -60.0]), TF_MS, 1.0)
    assert s["return_pct"] == pytest.approx(-10.0)
    assert s["max_drawdown_pct"] == pytest.approx(10.0)  # 1000 down to 900
    assert s["profit_factor"] == pytest.approx(10.0 / 110.0)
    assert s["sharpe"] < 0


def test_no_losing_trade_and_a_flat_curve() -> None:
    s = summarize(result([1_000.0, 1_000.0], [5.0]), TF_MS, 1.0)
    assert s["profit_factor"] is None  # nothing to divide by
    assert s["sharpe"] == 0.0  # flat: no spread of returns
    assert s["max_drawdown_pct"] == 0.0
