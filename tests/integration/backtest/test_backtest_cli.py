"""``tradebot backtest`` end to end on small hand-built files with hand-computed trades."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from shared.cli import app

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a multiple of every rotation period used here
TF = 300_000
CONFIG = """
VR_WINDOW = 2
CHOP_PERIOD = 2
CANDLE_LIMIT = 10
CHOP_THRESHOLD = 100
FEE_RATE = 0.001
TRADE_PCT = 0.5
LEVERAGE = 2
"""
Candle = tuple[float, float, float, float, float]


def quiet(price: float, volume: float = 1.0) -> Candle:
    """A doji with tiny wicks: never an entry (body 0)."""
    return (price, price * 1.001, price * 0.999, price, volume)


def iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def write_symbol(folder: Path, symbol: str, candles: list[Candle], skip: int = 0) -> None:
    """Write one symbol's candles; candles after index 2 are shifted by `skip` missing ones."""
    rows = ["timestamp,open,high,low,close,volume"]
    for i, (o, h, lo, c, v) in enumerate(candles):
        t = T0 + (i + (skip if i > 2 else 0)) * TF
        rows.append(f"{t},{o},{h},{lo},{c},{v}")
    (folder / f"{symbol.replace('/', '_')}.csv").write_text("\n".join(rows) + "\n")


def run(tmp_path: Path, extra_config: str = "", *args: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    config = tmp_path / "bt.toml"
    config.write_text(CONFIG + extra_config)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--data",
            str(tmp_path / "data"),
            "--config",
            str(config),
            "--out",
            str(out),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("trades.csv", "summary.json", "equity.png", "report.html"):
        assert (out / name).stat().st_size > 0
    trades = pd.read_csv(out / "trades.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert trades["pnl"].sum() == pytest.approx(summary["end_equity"] - summary["start_equity"])
    return trades, summary


def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def assert_trade(row: pd.Series, **expected: object) -> None:
    for key, value in expected.items():
        if isinstance(value, float):
            assert row[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert row[key] == value, key


LONG_SIGNAL: Candle = (99.0, 100.0, 99.0, 100.0, 10.0)  # body 1/99, vol_ratio 10


def test_long_trails_out(tmp_path: Path) -> None:
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL]
    # green: best 103 arms the trail (>= 102), level 103 * 0.995 = 102.485 > close? no: 102.8
    candles.append((100.0, 103.0, 100.0, 102.8, 1.0))
    # red: open, high, then low 102.0 <= 102.485 -> trail exit at 102.0
    candles += [(102.8, 102.9, 102.0, 102.2, 1.0), quiet(102.2), quiet(102.2)]
    write_symbol(data_dir(tmp_path), "A/USDT", candles)
    trades, summary = run(tmp_path, "MAX_POSITIONS = 1\n")
    assert len(trades) == 1
    # qty = 10000 * 0.5 / 1 * 2 / 100 = 100; fees = 0.001 * (100 + 102) * 100
    assert_trade(
        trades.iloc[0], symbol="A/USDT", side="long", entry_time=iso(T0 + 4 * TF),
        entry_price=100.0, exit_time=iso(T0 + 6 * TF), exit_price=102.0, quantity=100.0,
        fees=20.2, pnl=179.8, exit_reason="trail",
    )  # fmt: skip
    assert summary["end_equity"] == pytest.approx(10_179.8)


def test_short_stops_out_at_the_stop_price(tmp_path: Path) -> None:
    candles = [quiet(101), quiet(101), quiet(101), (101.0, 101.0, 100.0, 100.0, 10.0)]
    # green path: open 100, low 99.5, high 102.5 >= stop 102 -> filled at 102
    candles += [(100.0, 102.5, 99.5, 101.0, 1.0), quiet(101), quiet(101)]
    write_symbol(data_dir(tmp_path), "B/USDT", candles)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 1\n")
    assert len(trades) == 1
    assert_trade(
        trades.iloc[0], side="short", entry_price=100.0, exit_time=iso(T0 + 5 * TF),
        exit_price=102.0, quantity=100.0, fees=20.2, pnl=-220.2, exit_reason="stop",
    )  # fmt: skip


def test_surge_tightens_the_trail(tmp_path: Path) -> None:
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL]
    # best 105 >= 104 (surge): level 105 * 0.9975 = 104.7375; close 104.8 stays in
    candles.append((100.0, 105.0, 100.0, 104.8, 1.0))
    # low 104.5 exits under the tight trail (the normal one, 104.475, would not)
    candles += [(104.8, 104.85, 104.5, 104.6, 1.0), quiet(104.6), quiet(104.6)]
    write_symbol(data_dir(tmp_path), "C/USDT", candles)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 1\n")
    assert len(trades) == 1
    assert_trade(
        trades.iloc[0], exit_time=iso(T0 + 6 * TF), exit_price=104.5, fees=20.45,
        pnl=429.55, exit_reason="trail",
    )  # fmt: skip


def test_slot_conflict_and_a_slot_freed_in_the_candle(tmp_path: Path) -> None:
    folder = data_dir(tmp_path)
    # both signal at candle 3; B has the higher vol_ratio (20 vs 10) and takes the one slot
    a = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100)]
    b = [quiet(100), quiet(100), quiet(100), (99.0, 100.0, 99.0, 100.0, 20.0), quiet(100)]
    # candle 5: B stops out at 98; A signals at the same close and gets the freed slot
    b += [(100.0, 100.1, 97.5, 97.6, 1.0), quiet(97.6), quiet(97.6)]
    a += [(99.0, 100.0, 99.0, 100.0, 20.0), quiet(100), quiet(100)]
    write_symbol(folder, "A/USDT", a)
    write_symbol(folder, "B/USDT", b)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 1\n")
    assert trades["symbol"].tolist() == ["B/USDT", "A/USDT"]
    assert_trade(trades.iloc[0], exit_time=iso(T0 + 6 * TF), exit_reason="stop", pnl=-219.8)
    # equity after B = 9780.2 -> qty = 9780.2 * 0.5 * 2 / 100; closed at the end at 100
    assert_trade(
        trades.iloc[1], entry_time=iso(T0 + 6 * TF), quantity=97.802,
        exit_time=iso(T0 + 8 * TF), exit_reason="end", pnl=-0.002 * 100 * 97.802,
    )  # fmt: skip


def test_equal_vol_ratio_goes_by_symbol_name(tmp_path: Path) -> None:
    folder = data_dir(tmp_path)
    same = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100)]
    write_symbol(folder, "ZZZ/USDT", same)
    write_symbol(folder, "AAA/USDT", same)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 1\n")
    assert trades["symbol"].tolist() == ["AAA/USDT"]


def test_rotation_keeps_managing_a_position_that_left_the_universe(tmp_path: Path) -> None:
    folder = data_dir(tmp_path)
    a = [quiet(1000.0) for _ in range(24)]
    a[3] = (990.0, 1000.0, 990.0, 1000.0, 10.0)  # entered: A is the universe at the start
    a[20] = (1000.0, 1000.0, 970.0, 975.0, 1.0)  # stop 980 hit after A left the universe
    a[21:] = [quiet(975.0)] * 3
    b = [quiet(100.0) for _ in range(24)]
    b[3] = LONG_SIGNAL  # rejected: B is not in the universe yet
    b[6] = quiet(100.0, 1000.0)  # B's 24h quote volume overtakes A's before 01:00
    b[16] = LONG_SIGNAL  # taken: the 01:00 rotation made B the universe
    write_symbol(folder, "A/USDT", a)
    write_symbol(folder, "B/USDT", b)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 2\nTOP_N = 1\nCOIN_ROTATE_HOURS = 1\n")
    assert trades["symbol"].tolist() == ["A/USDT", "B/USDT"]
    # A: qty = 10000 * 0.5 / 2 * 2 / 1000 = 5, stop at 980, fees 5 + 4.9
    assert_trade(
        trades.iloc[0], entry_time=iso(T0 + 4 * TF), exit_time=iso(T0 + 21 * TF),
        exit_price=980.0, quantity=5.0, pnl=-109.9, exit_reason="stop",
    )  # fmt: skip
    # B: equity 9995 (A's entry fee paid, A marked flat) -> qty 49.975, closed at the end
    assert_trade(
        trades.iloc[1], entry_time=iso(T0 + 17 * TF), exit_time=iso(T0 + 24 * TF),
        quantity=49.975, pnl=-9.995, exit_reason="end",
    )  # fmt: skip


def test_windows_restart_after_a_gap(tmp_path: Path) -> None:
    # the same signal right after a gap has too little history: no trade, a warning
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100)]
    write_symbol(data_dir(tmp_path), "A/USDT", candles, skip=3)
    config = tmp_path / "bt.toml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--data",
            str(tmp_path / "data"),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "A/USDT: 3 candle(s) missing after 2024-01-01T00:10:00Z" in result.output
    assert pd.read_csv(tmp_path / "o" / "trades.csv").empty


def test_from_and_to_limit_the_run(tmp_path: Path) -> None:
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100), quiet(100)]
    write_symbol(data_dir(tmp_path), "A/USDT", candles)
    trades, summary = run(tmp_path, "", "--from", iso(T0 + 4 * TF), "--to", str(T0 + 6 * TF))
    assert trades.empty  # the signal candle opens before --from: warm-up only
    assert summary["candles"] == 2


def test_synthetic_run_writes_the_four_outputs(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    result = CliRunner().invoke(app, ["backtest", "--synthetic", "3", "2", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trades = pd.read_csv(out / "trades.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["symbols"] == 3
    assert summary["trades"] == len(trades)
    assert trades["pnl"].sum() == pytest.approx(summary["end_equity"] - summary["start_equity"])
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_slippage_moves_entry_and_trail_fills_but_not_the_stop(tmp_path: Path) -> None:
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL]
    candles += [(100.0, 103.0, 100.0, 102.8, 1.0), (102.8, 102.9, 102.0, 102.2, 1.0)]
    write_symbol(data_dir(tmp_path), "A/USDT", candles)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 1\nSLIPPAGE = 0.001\n")
    entry, exit_ = 100.0 * 1.001, 102.0 * 0.999  # sized at the signal close: qty 100
    assert_trade(
        trades.iloc[0], entry_price=entry, exit_price=exit_, quantity=100.0,
        pnl=(exit_ - entry) * 100 - 0.001 * (entry + exit_) * 100, exit_reason="trail",
    )  # fmt: skip


def test_size_compounds_with_unrealised_pnl(tmp_path: Path) -> None:
    folder = data_dir(tmp_path)
    a = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(101), quiet(101)]
    write_symbol(folder, "A/USDT", a)
    b = [quiet(100), quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100)]
    write_symbol(folder, "B/USDT", b)
    trades, _ = run(tmp_path, "MAX_POSITIONS = 2\n")
    # A: qty 10000 * 0.5 / 2 * 2 / 100 = 50, fee 5; at B's entry A is marked at 101:
    # equity = 10000 - 5 + 50 = 10045 -> B qty = 10045 * 0.5 / 2 * 2 / 100 = 50.225
    assert trades["quantity"].tolist() == pytest.approx([50.0, 50.225], rel=1e-12)


def test_the_report_records_its_inputs_and_formats_figures_for_people(tmp_path: Path) -> None:
    candles = [quiet(100), quiet(100), quiet(100), LONG_SIGNAL, quiet(100), quiet(100)]
    write_symbol(data_dir(tmp_path), "A/USDT", candles)
    _, summary = run(tmp_path, "", "--from", iso(T0 + TF))
    inputs = summary["inputs"]
    assert inputs["data"] == str((tmp_path / "data").resolve())
    assert inputs["symbols"] == ["A/USDT"]
    assert (inputs["first_candle"], inputs["last_candle"]) == (iso(T0), iso(T0 + 5 * TF))
    assert (inputs["from"], inputs["to"], inputs["equity"]) == (iso(T0 + TF), None, 10_000.0)
    assert inputs["tradebot_version"] != "unknown"
    assert summary["peak_rss_mb"] > 0  # printed too: the footprint of the run
    settings = inputs["settings"]
    assert (settings["TB_VR_WINDOW"], settings["TB_FEE_RATE"], settings["TB_SL_PCT"]) == (
        2,
        0.001,
        0.02,  # a default is recorded too
    )
    assert "TB_REDIS_URL" not in settings  # connections do not change a backtest
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<td>Start equity</td><td>10,000.00</td>" in page
    assert f"<td>Return</td><td>{summary['return_pct']:+.2f} %</td>" in page
    assert "<td>setting TB_VR_WINDOW</td><td>2</td>" in page
