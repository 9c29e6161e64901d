"""Each bad input to ``tradebot backtest`` gives one clear line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app

T0 = 1_704_067_200_000
TF = 300_000
HEADER = "timestamp,open,high,low,close,volume"


def csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "BTC_USDT.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def ok_row(i: int) -> str:
    return f"{T0 + i * TF},100,101,99,100,1"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["backtest", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("rows", "header", "problem"),
    [
        ([ok_row(0)], "timestamp,open,high,low,close", "missing column(s) volume"),
        ([ok_row(1), ok_row(0)], HEADER, "row 2: timestamps are not sorted ascending"),
        ([ok_row(0), ok_row(0)], HEADER, "row 2: duplicate timestamp"),
        ([ok_row(0), f"{T0 + TF},100,101,99,nan,1"], HEADER, "row 2: close is NaN"),
        ([f"{T0},0,101,99,100,1"], HEADER, "row 1: open is zero or negative"),
        ([f"{T0},100,101,-99,100,1"], HEADER, "row 1: low is zero or negative"),
        ([f"{T0},100,99,101,100,1"], HEADER, "row 1: high is below low"),
        (["not-a-time,100,101,99,100,1"], HEADER, "row 1: timestamp 'not-a-time'"),
        (
            [ok_row(0), f"{T0 + 60_000},100,101,99,100,1"],
            HEADER,
            "row 2: candles are 1m apart, but the timeframe is 5m",
        ),
    ],
)
def test_bad_file_names_file_row_and_problem(
    tmp_path: Path, rows: list[str], header: str, problem: str
) -> None:
    path = csv(tmp_path, rows, header)
    code, output = invoke("--data", str(path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert output.startswith(f"backtest error: {path}: {problem}")
    assert len(output.strip().splitlines()) == 1


def test_unparseable_file(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT.parquet"
    path.write_bytes(b"garbage")
    code, output = invoke("--data", str(path))
    assert code == 2
    assert f"backtest error: {path}: does not parse" in output


def test_missing_path(tmp_path: Path) -> None:
    code, output = invoke("--data", str(tmp_path / "nope.csv"))
    assert (code, output.strip()) == (
        2,
        f"backtest error: {tmp_path / 'nope.csv'}: no such file or folder",
    )


def test_without_a_source_it_reads_the_downloads_and_says_when_there_are_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TB_DATA_DIR", str(tmp_path / "data"))
    code, output = invoke("--out", str(tmp_path / "o"))
    assert code == 2
    assert f"no downloaded candles in {tmp_path / 'data/candles/sim/5m'}" in output


def test_from_must_precede_to(tmp_path: Path) -> None:
    path = csv(tmp_path, [ok_row(0), ok_row(1)])
    code, output = invoke("--data", str(path), "--from", "2024-01-02", "--to", "2024-01-01")
    assert code == 2
    assert "--from 2024-01-02 must be before --to 2024-01-01" in output


def test_range_without_candles(tmp_path: Path) -> None:
    path = csv(tmp_path, [ok_row(0), ok_row(1)])
    code, output = invoke("--data", str(path), "--from", "2030-01-01", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "no candles in the selected time range" in output


def test_unknown_symbol(tmp_path: Path) -> None:
    path = csv(tmp_path, [ok_row(0)])
    code, output = invoke("--data", str(path), "--symbols", "ETH/USDT")
    assert code == 2
    assert "symbol(s) not in the data: ETH/USDT" in output


def test_bad_setting_in_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("TRAIL_STOP = 0.5\n")
    code, output = invoke("--synthetic", "1", "1", "1", "--config", str(config))
    assert code == 2
    assert "TRAIL_STOP" in output


def test_real_process_exit_code(tmp_path: Path) -> None:
    path = csv(tmp_path, [f"{T0},100,99,101,100,1"])
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "backtest", "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"backtest error: {path}: row 1: high is below low"
