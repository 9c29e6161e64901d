"""Load and validate OHLCV candles from CSV/Parquet files or a folder of one file per symbol.

Returned frames have columns ``timestamp`` (int64 ms, candle open time), ``open``, ``high``,
``low``, ``close``, ``volume`` (float64), sorted by timestamp with a fresh RangeIndex.
Rows in error messages are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
SUFFIXES = (".csv", ".parquet", ".pq")
# Any ms timestamp below this (1973-03-03) is almost surely seconds, not milliseconds.
MIN_PLAUSIBLE_MS = 100_000_000_000


class DataError(ValueError):
    """Candle data is unusable; the message names the file, the row and the problem."""

    def __init__(self, file: Path | str, problem: str, row: int | None = None) -> None:
        self.file = str(file)
        self.row = row
        self.problem = problem
        where = f"{self.file}: row {row}" if row is not None else self.file
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles between two consecutive rows of one symbol."""

    symbol: str
    after_ms: int
    before_ms: int
    missing: int


def symbol_from_stem(stem: str) -> str:
    """Turn a file stem into a symbol: ``BTC_USDT`` -> ``BTC/USDT``; other stems are kept."""
    return stem.replace("_", "/", 1) if "_" in stem else stem


def _read_table(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file, turning any parse failure into a DataError."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(path, f"unsupported file type {suffix!r} (use .csv or .parquet)")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except Exception as e:
        raise DataError(path, f"does not parse: {type(e).__name__}: {e}".strip()) from e


def _first_bad(mask: np.ndarray | pd.Series, rows: np.ndarray) -> int:
    """Return the 1-based data row of the first True in mask."""
    return int(rows[int(np.flatnonzero(np.asarray(mask))[0])])


def _timestamps_ms(col: pd.Series, path: Path, rows: np.ndarray) -> np.ndarray:
    """Parse a timestamp column given as ms since epoch or ISO 8601 (UTC unless offset given)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.to_datetime(col, utc=True)
        if parsed.isna().any():
            raise DataError(path, "timestamp is missing", _first_bad(parsed.isna(), rows))
        return np.asarray(parsed.astype("datetime64[ms, UTC]").astype("int64"), dtype=np.int64)
    if pd.api.types.is_numeric_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            raise DataError(path, "timestamp is not a whole number of ms", _first_bad(bad, rows))
        ms: np.ndarray = values.astype(np.int64)
    else:
        text = col.astype("string").str.strip()
        digits = text.str.fullmatch(r"-?\d+").fillna(False).to_numpy(dtype=bool)
        if digits.all():
            ms = text.astype("int64").to_numpy(dtype=np.int64)
        else:
            parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            bad = parsed.isna().to_numpy(dtype=bool)
            if bad.any():
                row = _first_bad(bad, rows)
                value = text.iloc[int(np.flatnonzero(bad)[0])]
                raise DataError(
                    path, f"timestamp {value!r} is neither ms since epoch nor ISO 8601", row
                )
            ms = np.asarray(parsed.astype("datetime64[ms, UTC]").astype("int64"), dtype=np.int64)
    small = ms < MIN_PLAUSIBLE_MS
    if small.any():
        raise DataError(
            path,
            f"timestamp {int(ms[small][0])} is too small for ms since epoch (seconds?)",
            _first_bad(small, rows),
        )
    return ms


def _validate(
    raw: pd.DataFrame, path: Path, rows: np.ndarray, timeframe_ms: int | None
) -> pd.DataFrame:
    """Check one symbol's rows and return the normalised frame."""
    ts = _timestamps_ms(raw["timestamp"], path, rows)
    out = pd.DataFrame({"timestamp": ts})
    for name in (*PRICE_COLUMNS, "volume"):
        try:
            values = pd.to_numeric(raw[name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        except (TypeError, ValueError) as e:
            raise DataError(path, f"column {name!r} is not numeric") from e
        nan = ~np.isfinite(values)
        if nan.any():
            raise DataError(path, f"{name} is NaN or not a number", _first_bad(nan, rows))
        if name in PRICE_COLUMNS:
            if (values <= 0).any():
                raise DataError(path, f"{name} is zero or negative", _first_bad(values <= 0, rows))
        elif (values < 0).any():
            raise DataError(path, "volume is negative", _first_bad(values < 0, rows))
        out[name] = values
    o, h, lo, c = (out[k].to_numpy() for k in PRICE_COLUMNS)
    if (h < lo).any():
        raise DataError(path, "high is below low", _first_bad(h < lo, rows))
    outside = (np.maximum(o, c) > h) | (np.minimum(o, c) < lo)
    if outside.any():
        raise DataError(path, "open or close is outside [low, high]", _first_bad(outside, rows))
    step = np.diff(ts)
    if (step == 0).any():
        raise DataError(path, "duplicate timestamp", _first_bad(step == 0, rows[1:]))
    if (step < 0).any():
        raise DataError(path, "timestamps are not sorted ascending", _first_bad(step < 0, rows[1:]))
    if timeframe_ms is not None:
        short = step < timeframe_ms
        if short.any():
            raise DataError(
                path,
                f"candles {int(step[short][0])} ms apart, closer than the timeframe "
                f"{timeframe_ms} ms",
                _first_bad(short, rows[1:]),
            )
        off = step % timeframe_ms != 0
        if off.any():
            raise DataError(
                path,
                f"candle spacing {int(step[off][0])} ms is not a multiple of the timeframe",
                _first_bad(off, rows[1:]),
            )
    return out


def _split(
    table: pd.DataFrame, path: Path, symbols: list[str] | None, timeframe_ms: int | None
) -> dict[str, pd.DataFrame]:
    """Validate one file's table, split by its symbol column if any."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    if table.empty:
        raise DataError(path, "no rows")
    rows = np.arange(1, len(table) + 1)
    if "symbol" not in table.columns:
        name = symbol_from_stem(path.stem)
        if symbols is not None and name not in symbols:
            return {}
        return {name: _validate(table, path, rows, timeframe_ms)}
    names = table["symbol"].astype("string")
    if names.isna().any():
        raise DataError(path, "symbol is missing", _first_bad(names.isna(), rows))
    out: dict[str, pd.DataFrame] = {}
    for name in sorted(set(names.tolist())):
        if symbols is not None and name not in symbols:
            continue
        mask = (names == name).to_numpy(dtype=bool)
        part = table.loc[mask].reset_index(drop=True)
        out[name] = _validate(part, path, rows[mask], timeframe_ms)
    return out


def load_candles(
    path: Path,
    symbols: list[str] | None = None,
    *,
    timeframe_ms: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Load candles per symbol from a file or folder; raise DataError on any invalid row.

    With ``timeframe_ms`` given, candles closer than one timeframe (or off the grid) are an
    error; gaps (missing candles) are not an error here: see ``find_gaps``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    out: dict[str, pd.DataFrame] = {}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(path, "folder holds no .csv or .parquet files")
        for file in files:
            for name, frame in _split(_read_table(file), file, symbols, timeframe_ms).items():
                if name in out:
                    raise DataError(file, f"symbol {name} appears in more than one file")
                out[name] = frame
    else:
        out = _split(_read_table(path), path, symbols, timeframe_ms)
    if symbols is not None:
        absent = [s for s in symbols if s not in out]
        if absent:
            raise DataError(path, f"symbol(s) not in the data: {', '.join(absent)}")
    if not out:
        raise DataError(path, "no candles")
    return dict(sorted(out.items()))


def infer_timeframe_ms(frames: dict[str, pd.DataFrame]) -> int:
    """Return the most common spacing between consecutive candles across all symbols."""
    counts: Counter[int] = Counter()
    for frame in frames.values():
        steps, n = np.unique(np.diff(frame["timestamp"].to_numpy()), return_counts=True)
        counts.update(dict(zip(steps.tolist(), n.tolist(), strict=True)))
    if not counts:
        raise DataError("data", "need at least two candles to infer the timeframe")
    return int(counts.most_common(1)[0][0])


def find_gaps(frames: dict[str, pd.DataFrame], timeframe_ms: int) -> list[Gap]:
    """List every place where consecutive candles of a symbol are more than a timeframe apart."""
    gaps: list[Gap] = []
    for symbol, frame in frames.items():
        ts = frame["timestamp"].to_numpy()
        step = np.diff(ts)
        for i in np.flatnonzero(step > timeframe_ms):
            missing = int(step[i] // timeframe_ms) - 1
            gaps.append(Gap(symbol, int(ts[i]), int(ts[i + 1]), missing))
    return gaps
