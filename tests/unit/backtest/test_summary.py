"""summary.json's numbers, each worked out by hand from a small equity curve and trade list."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.backtest.engine import BacktestResult, Trade
from services.backtest.report import (
    TRADE_COLUMNS,
    YEAR_MS,
    drawdown_pct,
    iso_utc,
    per_symbol,
    summarize,
    write_report,
)
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
    assert f"{s['max_drawdown_pct']:.2f}" == "0.00"  # not "-0.00"


def test_a_break_even_trade_is_not_a_win_and_a_small_gain_is() -> None:
    s = summarize(result([1_000.0, 1_000.5, 999.5], [0.0, 0.5, -1.0]), TF_MS, 1.0)
    assert (s["wins"], s["win_rate"]) == (1, pytest.approx(1 / 3))


def test_profit_factor_of_small_amounts() -> None:
    # Gains and losses under one unit count in full: 0.25 gained, 0.5 lost.
    s = summarize(result([1_000.0, 1_000.25, 999.75], [0.0, 0.25, -0.5]), TF_MS, 1.0)
    assert s["profit_factor"] == pytest.approx(0.5)


def test_sharpe_of_two_returns() -> None:
    # Equity 1000 -> 1100 -> 1320: returns 10 % and 20 %, mean 15 %, spread 5 %.
    s = summarize(result([1_100.0, 1_320.0], []), TF_MS, 1.0)
    assert s["sharpe"] == pytest.approx(0.15 / 0.05 * math.sqrt(YEAR_MS / TF_MS))


def test_a_blown_account_divides_by_zero_quietly() -> None:
    # Equity 1000 -> 0 -> 100: the return from 0 is infinite and left out; numpy must not
    # warn (the suite turns warnings into errors).
    s = summarize(result([0.0, 100.0], [-1_000.0, 100.0]), TF_MS, 1.0)
    assert s["max_drawdown_pct"] == pytest.approx(100.0)
    assert s["sharpe"] == 0.0  # one finite return: no spread
    # 0 -> 0 is 0/0 (NaN): left out too, quietly.
    s = summarize(result([0.0, 0.0, 100.0], [-1_000.0, 100.0]), TF_MS, 1.0)
    assert s["sharpe"] == 0.0


def test_no_step_at_all() -> None:
    empty = BacktestResult(
        trades=[], step_ms=np.array([], dtype=np.int64), equity=np.array([], dtype=np.float64),
        start_equity=1_000.0, end_equity=1_000.0, candles=0, symbols=[],
    )  # fmt: skip
    s = summarize(empty, TF_MS, 0.0)
    assert (s["trades"], s["wins"], s["win_rate"], s["sharpe"]) == (0, 0, 0.0, 0.0)
    assert s["max_drawdown_pct"] == 0.0
    assert [f"{s[k]:.2f}" for k in ("max_drawdown_pct", "return_pct", "total_pnl")] == ["0.00"] * 3


def test_drawdown_from_a_zero_start_is_zero_until_there_is_a_peak() -> None:
    dd = drawdown_pct(np.array([0.0, -5.0, 0.0, 0.5, 0.25, 0.5]))
    assert dd.tolist() == [0.0, 0.0, 0.0, 0.0, -50.0, 0.0]


def test_per_symbol_counts_trades_wins_and_pnl() -> None:
    trades = pd.DataFrame({"symbol": ["A", "B", "A", "A"], "pnl": [1.0, 2.0, -1.0, 0.0]})
    table = per_symbol(trades)
    assert table.to_dict("records") == [
        {"symbol": "A", "trades": 3, "wins": 1, "win_rate": pytest.approx(1 / 3), "pnl": 0.0},
        {"symbol": "B", "trades": 1, "wins": 1, "win_rate": 1.0, "pnl": 2.0},
    ]
    empty = per_symbol(pd.DataFrame({"symbol": [], "pnl": []}))
    assert list(empty.columns) == ["symbol", "trades", "wins", "win_rate", "pnl"]
    assert empty.empty


def test_trade_times_are_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert iso_utc(0) == "1970-01-01T00:00:00Z"
        assert iso_utc(1_700_000_000_123) == "2023-11-14T22:13:20Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_write_report_makes_its_folder_and_writes_plain_files(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "first"  # neither exists yet
    run = result([1_100.0, 990.0], [60.0, -20.0])
    summary = write_report(run, out, TF_MS, 1.5)
    write_report(run, out, TF_MS, 1.5)  # again into the same folder: overwritten
    assert sorted(p.name for p in out.iterdir()) == [
        "equity.png", "report.html", "summary.json", "trades.csv",
    ]  # fmt: skip
    text = (out / "summary.json").read_text()
    assert text == json.dumps(summary, indent=2) + "\n"
    assert text.startswith('{\n  "trades": 2,\n')
    header, first, _ = (out / "trades.csv").read_text().splitlines()
    assert header == ",".join(TRADE_COLUMNS)  # no index column
    assert first.split(",")[:3] == ["BTC/USDT", "long", "1970-01-01T00:00:00Z"]
    assert (out / "equity.png").read_bytes().startswith(b"\x89PNG")


def test_the_chart_envelope_keeps_every_spike_in_few_points() -> None:
    from services.backtest.report import envelope

    values = np.full(1_000_000, 100.0)
    values[123_457] = 250.0  # one spike
    values[876_543] = 20.0  # one dip
    idx, low, high = envelope(values, 2_000)
    assert len(idx) == len(low) == len(high) == 2_000
    assert (high.max(), low.min()) == (250.0, 20.0)
    assert idx[0] == 0
    assert np.all(np.diff(idx) > 0)
    small = np.array([1.0, 2.0, 3.0])
    assert [a.tolist() for a in envelope(small, 2_000)] == [[0, 1, 2], [1, 2, 3], [1, 2, 3]]


def test_a_log_axis_only_when_equity_spans_a_decade() -> None:
    from services.backtest.report import log_scale

    assert not log_scale(np.array([1_000.0, 5_000.0, 9_999.0]))
    assert log_scale(np.array([1_000.0, 10_000.0]))
    assert log_scale(np.array([10_000.0, 900.0]))  # a blown account too
    assert not log_scale(np.array([1_000.0, 0.0, 20_000.0]))  # zero cannot go on a log axis
    assert not log_scale(np.array([]))


def test_figures_for_people_sign_only_the_return() -> None:
    from services.backtest.report import for_people

    shown = dict(
        for_people(
            {
                "return_pct": 12.345,
                "max_drawdown_pct": 6.7,
                "total_pnl": -1234.5,
                "start_equity": 10_000.0,
                "win_rate": 0.25,
                "profit_factor": None,
                "trades": 1234,
                "peak_rss_mb": 321.5,
            }
        )
    )
    assert shown == {
        "Return": "+12.35 %",
        "Max drawdown": "6.70 %",
        "Total PnL": "-1,234.50",
        "Start equity": "10,000.00",
        "Trades": "1,234",
        "Win rate": "25.00 %",
        "Profit factor": "none lost",
        "Peak memory": "322 MB",
    }


def test_a_blown_account_below_one_dollar_still_gets_a_log_axis() -> None:
    from services.backtest.report import log_scale

    assert log_scale(np.array([1_000.0, 0.5]))


def test_peak_memory_is_recorded_to_a_tenth_of_a_mb(tmp_path: Path) -> None:
    summary = write_report(result([1_000.0, 990.0], [-10.0]), tmp_path, TF_MS, 1.0, None, 123.456)
    assert summary["peak_rss_mb"] == 123.5
    assert json.loads((tmp_path / "summary.json").read_text())["peak_rss_mb"] == 123.5
    assert "inputs" not in summary  # none given: none recorded
