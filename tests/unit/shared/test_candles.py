"""load_candles: formats, symbols, and one clear error per kind of bad row."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from shared.candles import DataError, find_gaps, infer_timeframe_ms, load_candles

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TF = 300_000
HEADER = "timestamp,open,high,low,close,volume\n"


def write(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def good_rows(n: int = 3) -> list[str]:
    return [f"{T0 + i * TF},100,101,99,100.5,10" for i in range(n)]


def test_csv_with_ms_timestamps(tmp_path: Path) -> None:
    frames = load_candles(write(tmp_path / "BTC_USDT.csv", good_rows()))
    frame = frames["BTC/USDT"]
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert frame["timestamp"].dtype == "int64"
    assert frame["close"].dtype == "float64"
    assert frame["timestamp"].tolist() == [T0, T0 + TF, T0 + 2 * TF]


def test_iso_timestamps_are_utc(tmp_path: Path) -> None:
    rows = ["2024-01-01T00:00:00Z,1,2,0.5,1.5,1", "2024-01-01T01:05:00+01:00,1,2,0.5,1.5,1"]
    frame = load_candles(write(tmp_path / "X_USDT.csv", rows))["X/USDT"]
    assert frame["timestamp"].tolist() == [T0, T0 + TF]


def test_parquet_with_symbol_column(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "timestamp": [T0, T0, T0 + TF],
            "open": [1.0, 2.0, 1.0],
            "high": [1.0, 2.0, 1.0],
            "low": [1.0, 2.0, 1.0],
            "close": [1.0, 2.0, 1.0],
            "volume": [1.0, 2.0, 1.0],
            "symbol": ["A/USDT", "B/USDT", "A/USDT"],
        }
    )
    df.to_parquet(tmp_path / "all.parquet")
    frames = load_candles(tmp_path / "all.parquet")
    assert sorted(frames) == ["A/USDT", "B/USDT"]
    assert len(frames["A/USDT"]) == 2
    assert list(load_candles(tmp_path / "all.parquet", ["B/USDT"])) == ["B/USDT"]


def test_folder_of_files(tmp_path: Path) -> None:
    write(tmp_path / "BTC_USDT.csv", good_rows())
    write(tmp_path / "ETH_USDT.csv", good_rows())
    assert list(load_candles(tmp_path)) == ["BTC/USDT", "ETH/USDT"]


def test_unknown_symbol_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not in the data: DOGE/USDT"):
        load_candles(write(tmp_path / "BTC_USDT.csv", good_rows()), ["DOGE/USDT"])


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (good_rows(), "timestamp,open,high,low,close\n", "missing column(s) volume"),
        ([f"{T0},100,101,99,100,1", f"{T0},100,101,99,100,1"], HEADER, "row 2: duplicate"),
        ([f"{T0 + TF},100,101,99,100,1", f"{T0},100,101,99,100,1"], HEADER, "row 2: timestamps"),
        ([f"{T0},100,101,99,100,1", f"{T0 + TF},100,101,99,,1"], HEADER, "row 2: close is NaN"),
        ([f"{T0},100,101,99,100,1", f"{T0 + TF},0,101,99,100,1"], HEADER, "row 2: open is zero"),
        ([f"{T0},-1,101,99,100,1"], HEADER, "row 1: open is zero or negative"),
        ([f"{T0},100,99,101,100,1"], HEADER, "row 1: high is below low"),
        ([f"{T0},100,101,99,102,1"], HEADER, "row 1: open or close is outside"),
        ([f"{T0},100,101,99,100,-1"], HEADER, "row 1: volume is negative"),
        (["yesterday,100,101,99,100,1"], HEADER, "row 1: timestamp 'yesterday'"),
        (["99999999,100,101,99,100,1"], HEADER, "row 1: timestamp 99999999 is not a time since"),
        (
            [f"{T0},100,101,99,100,1", f"{(T0 + TF) * 1000},100,101,99,100,1"],
            HEADER,
            f"row 2: timestamp {(T0 + TF) * 1000} is in microseconds, the first row's in milli",
        ),
        ([f"{T0 * 1000 + 1},100,101,99,100,1"], HEADER, "(microseconds) is not a whole milli"),
        ([f"{T0},100,101,99,100,1", ",,,,,"], HEADER, "row 2: row is empty"),
    ],
)
def test_bad_rows(tmp_path: Path, rows: list[str], header: str, message: str) -> None:
    path = write(tmp_path / "BTC_USDT.csv", rows, header)
    with pytest.raises(DataError) as err:
        load_candles(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_file_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError, match="does not parse"):
        load_candles(path)


def test_spacing_off_the_timeframe_is_an_error(tmp_path: Path) -> None:
    rows = [f"{T0},100,101,99,100,1", f"{T0 + 60_000},100,101,99,100,1"]
    with pytest.raises(DataError, match="row 2: candles are 1m apart, but the timeframe is 5m"):
        load_candles(write(tmp_path / "BTC_USDT.csv", rows), timeframe_ms=TF)


def test_gaps_are_found_not_fatal(tmp_path: Path) -> None:
    rows = [f"{T0},100,101,99,100,1", f"{T0 + 3 * TF},100,101,99,100,1"]
    frames = load_candles(write(tmp_path / "BTC_USDT.csv", rows), timeframe_ms=TF)
    gaps = find_gaps(frames, TF)
    assert [(g.symbol, g.after_ms, g.missing) for g in gaps] == [("BTC/USDT", T0, 2)]
    assert infer_timeframe_ms(frames) == 3 * TF


@pytest.mark.parametrize(
    ("scale", "unit"),
    [(0.001, "seconds"), (1, "milliseconds"), (1000, "microseconds"), (1_000_000, "nanos")],
)
def test_numbers_since_the_epoch_in_any_unit_are_read_as_ms(
    tmp_path: Path, scale: float, unit: str
) -> None:
    rows = [f"{int((T0 + i * TF) * scale)},100,101,99,100.5,10" for i in range(3)]
    frame = load_candles(write(tmp_path / "BTC_USDT.csv", rows), timeframe_ms=TF)["BTC/USDT"]
    assert frame["timestamp"].tolist() == [T0, T0 + TF, T0 + 2 * TF], unit


def test_column_names_in_any_case_and_a_date_column(tmp_path: Path) -> None:
    header = "Date,Open,HIGH,low,Close,Volume\n"
    rows = [
        "2024-01-01 00:00:00+00:00,100,101,99,100.5,10",
        f"{'2024-01-01 00:05:00+00:00'},1,2,1,1,1",
    ]
    frame = load_candles(write(tmp_path / "BTC_USDT.csv", rows, header))["BTC/USDT"]
    assert frame["timestamp"].tolist() == [T0, T0 + TF]
    assert frame["high"].tolist() == [101.0, 2.0]


def test_a_column_given_twice_in_two_cases_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "BTC_USDT.csv", good_rows(), "timestamp,open,high,low,close,volume,Close\n"
    )
    with pytest.raises(DataError, match="column\\(s\\) close given twice"):
        load_candles(path)


@pytest.mark.parametrize(
    "stem",
    [
        "BTC_USDT",
        "btc_usdt",
        "BTC-USDT",
        "BTCUSDT",
        "btcusdt",
        "BTC_USDT_USDT-5m-futures",
        "BTCUSDT-5m-2025-01",
    ],
)
def test_common_file_names_map_to_one_symbol(tmp_path: Path, stem: str) -> None:
    assert list(load_candles(write(tmp_path / f"{stem}.csv", good_rows()))) == ["BTC/USDT"]


def test_gzipped_csv_is_read_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    pd.read_csv(write(tmp_path / "x.csv", good_rows())).to_csv(
        tmp_path / "ETH_USDT.csv.gz", index=False
    )
    (tmp_path / "x.csv").rename(tmp_path / "BTC_USDT.csv")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    frames = load_candles(tmp_path, timeframe_ms=TF)
    assert list(frames) == ["BTC/USDT", "ETH/USDT"]
    assert frames["ETH/USDT"].equals(frames["BTC/USDT"])


def test_a_folder_with_other_files_is_refused_naming_them(tmp_path: Path) -> None:
    write(tmp_path / "BTC_USDT.csv", good_rows())
    (tmp_path / "ETH_USDT.xlsx").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("my data")
    with pytest.raises(DataError) as err:
        load_candles(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: holds what is not candle data: ETH_USDT.xlsx, notes.txt (only .csv,"
        " .csv.gz, .parquet, freqtrade's .feather/.json and Binance's .zip dumps; move the rest"
        " out, so no symbol is left out unnoticed)"
    )


def freqtrade_frame(n: int = 3) -> pd.DataFrame:
    """Candles as freqtrade stores them: a tz-aware ``date`` column, then OHLCV."""
    return pd.DataFrame(
        {
            "date": pd.to_datetime([T0 + i * TF for i in range(n)], unit="ms", utc=True),
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 10.0,
        }
    )


def test_freqtrade_feather_and_json_are_read(tmp_path: Path) -> None:
    freqtrade_frame().to_feather(tmp_path / "BTC_USDT_USDT-5m-futures.feather")
    rows = [[T0 + i * TF, 100, 101, 99, 100.5, 10] for i in range(3)]
    (tmp_path / "ETH_USDT_USDT-5m-futures.json").write_text(json.dumps(rows))
    frames = load_candles(tmp_path, timeframe_ms=TF)
    assert list(frames) == ["BTC/USDT", "ETH/USDT"]
    assert frames["BTC/USDT"].equals(frames["ETH/USDT"])
    assert frames["BTC/USDT"]["timestamp"].tolist() == [T0, T0 + TF, T0 + 2 * TF]


def test_freqtrade_mark_and_funding_files_are_refused(tmp_path: Path) -> None:
    freqtrade_frame().to_feather(tmp_path / "BTC_USDT_USDT-5m-futures.feather")
    freqtrade_frame().to_feather(tmp_path / "BTC_USDT_USDT-1h-funding_rate.feather")
    with pytest.raises(DataError, match="a freqtrade funding_rate file, not trade candles"):
        load_candles(tmp_path)


def dump(path: Path, start: int, n: int, scale: int, header: bool) -> Path:
    """Write a Binance kline dump: a zip holding one CSV, open_time in ms or (2025+) us."""
    rows = [
        f"{(start + i * TF) * scale},100,101,99,100.5,10,{(start + (i + 1) * TF - 1) * scale},"
        "1000,5,4,400,0"
        for i in range(n)
    ]
    head = "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    head += "taker_buy_volume,taker_buy_quote_volume,ignore\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.with_suffix(".csv").name, (head if header else "") + "\n".join(rows))
    return path


def test_binance_monthly_dumps_in_ms_and_us_are_joined(tmp_path: Path) -> None:
    dump(tmp_path / "BTCUSDT-5m-2024-12.zip", T0, 3, 1, header=False)  # older: no header, ms
    dump(tmp_path / "BTCUSDT-5m-2025-01.zip", T0 + 3 * TF, 3, 1000, header=True)  # 2025: us
    frame = load_candles(tmp_path, timeframe_ms=TF)["BTC/USDT"]
    assert frame["timestamp"].tolist() == [T0 + i * TF for i in range(6)]
    assert frame["close"].tolist() == [100.5] * 6


def test_overlapping_files_of_one_symbol_are_refused(tmp_path: Path) -> None:
    dump(tmp_path / "BTCUSDT-5m-2024-12.zip", T0, 3, 1, header=True)
    later = dump(tmp_path / "BTCUSDT-5m-2025-01.zip", T0 + 2 * TF, 3, 1, header=True)
    with pytest.raises(DataError) as err:
        load_candles(tmp_path, timeframe_ms=TF)
    assert str(err.value) == (
        f"{later}: overlaps BTCUSDT-5m-2024-12.zip: the same symbol's candles twice"
    )


def test_close_time_stamps_are_refused_as_such(tmp_path: Path) -> None:
    rows = [f"{T0 + i * TF + TF - 1},100,101,99,100.5,10" for i in range(3)]  # Binance close_time
    with pytest.raises(DataError) as err:
        load_candles(write(tmp_path / "BTC_USDT.csv", rows), timeframe_ms=TF)
    assert f"row 1: timestamp {T0 + TF - 1} is not on the 5m grid" in str(err.value)
    assert "looks like a close time (open + 5m - 1 ms" in str(err.value)
    shifted = [f"{T0 + i * TF + 60_000},100,101,99,100.5,10" for i in range(3)]  # off by 1m
    with pytest.raises(DataError) as err:
        load_candles(write(tmp_path / "BTC_USDT.csv", shifted), timeframe_ms=TF)
    assert "is not on the 5m grid (candles open at multiples of 5m)" in str(err.value)
    assert "close time" not in str(err.value)


def test_a_file_of_another_timeframe_is_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "BTC_USDT.csv", good_rows(5))
    hourly = [f"{T0 + i * 12 * TF},100,101,99,100.5,10" for i in range(5)]
    path = write(tmp_path / "ETH_USDT.csv", hourly)
    with pytest.raises(DataError) as err:
        load_candles(tmp_path, timeframe_ms=TF)
    assert str(err.value).startswith(
        f"{path}: candles are 1h apart, but the timeframe is 5m (TB_TIMEFRAME)"
    )
