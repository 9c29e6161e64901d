"""Load and validate OHLCV candles from CSV/Parquet files or a folder of one file per symbol.

Returned frames have columns ``timestamp`` (int64 ms, candle open time), ``open``, ``high``,
``low``, ``close``, ``volume`` (float64), sorted by timestamp with a fresh RangeIndex.
Rows in error messages are 1-based data rows (the header is not counted).

What is read, and what is refused rather than guessed:

- Files ``.csv``, ``.csv.gz``, ``.parquet``/``.pq``; freqtrade's ``.feather`` and ``.json``
  (``BTC_USDT_USDT-5m-futures.feather``; its mark, index and funding-rate files are refused,
  naming them); Binance's public kline dumps (``BTCUSDT-5m-2025-01.zip``, with or without a
  header row). A folder holding any other file is refused, naming it, so no symbol is dropped
  silently. Several files of one symbol (monthly dumps) are joined; an overlap is refused.
- Column names in any case (``Open``, ``CLOSE``); the time column may also be called
  ``date``, ``time``, ``datetime`` or ``open_time``.
- Timestamps as ISO 8601 or as a number since the epoch in seconds, milliseconds,
  microseconds or nanoseconds, told apart by size (each unit's dates 1973-5138 do not
  overlap), one unit per file.
- With a timeframe given: every candle on that timeframe's grid (a close-time stamp such as
  Binance's ``close_time``, open + timeframe - 1 ms, is refused, naming it) and a file whose
  candles are another timeframe apart is refused, naming both.
- File names ``BTC_USDT``, ``btc_usdt``, ``BTC-USDT``, ``BTCUSDT`` and freqtrade's
  ``BTC_USDT_USDT-5m-futures`` all name ``BTC/USDT``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".feather", ".json", ".zip")
# A Binance public kline dump (data.binance.vision), one CSV in a zip; older files have no
# header row. open_time is in microseconds from 2025 on.
BINANCE_DUMP_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
# freqtrade's candle types besides trade candles: same symbol, other prices.
FREQTRADE_OTHER_KINDS = ("mark", "index", "premiumindex", "funding_rate")
# Any ms timestamp below this (1973-03-03) is almost surely seconds, not milliseconds.
MIN_PLAUSIBLE_MS = 100_000_000_000
MAX_PLAUSIBLE_MS = 100_000_000_000_000  # year 5138: a larger number is µs or ns, not ms
# Numbers since the epoch by size: each unit's span of 1973-03-03 .. 5138-11-16.
UNITS: tuple[tuple[str, int, int, int], ...] = (
    # name, smallest, one past the largest, divisor to ms (negative: multiplier)
    ("seconds", 10**8, 10**11, -1000),
    ("milliseconds", 10**11, 10**14, 1),
    ("microseconds", 10**14, 10**17, 1000),
    ("nanoseconds", 10**17, 2**63 - 1, 1_000_000),
)
TIME_ALIASES = ("date", "time", "datetime", "open_time")
# Quote currencies recognised at the end of a bare exchange id such as BTCUSDT.
QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR")


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


_FREQTRADE = re.compile(
    r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_[A-Za-z0-9]+)?"
    r"(?:-(?P<tf>\d+[smhdwM])(?:-(?P<kind>[A-Za-z_]+))?)?$"
)
_DUMP = re.compile(r"^(?P<pair>[A-Za-z0-9]+)-(?P<tf>\d+[smhdwM])-\d{4}-\d{2}(?:-\d{2})?$")
_DASHED = re.compile(r"^(?P<base>[A-Za-z0-9]+)-(?P<quote>[A-Za-z]+)$")


def _split_pair(pair: str) -> str | None:
    upper = pair.upper()
    for quote in QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote) and upper.isalnum():
            return f"{upper[: -len(quote)]}/{quote}"
    return None


def parse_name(stem: str) -> tuple[str, str | None]:
    """Return the symbol a file name names, and freqtrade's candle type when it gives one.

    ``BTC_USDT``, ``btc_usdt``, ``BTC-USDT``, ``BTCUSDT``, freqtrade's
    ``BTC_USDT_USDT-5m-futures`` and Binance's dump ``BTCUSDT-5m-2025-01`` all name
    ``BTC/USDT``; a name in none of these forms is kept as it is.
    """
    if m := _FREQTRADE.match(stem):
        kind = m["kind"].lower() if m["kind"] else None
        return f"{m['base']}/{m['quote']}".upper(), kind
    if m := _DUMP.match(stem):
        return _split_pair(m["pair"]) or m["pair"], None
    if m := _DASHED.match(stem):
        return f"{m['base']}/{m['quote']}".upper(), None
    return _split_pair(stem) or stem, None


def symbol_from_stem(stem: str) -> str:
    """Turn a file name (without suffix) into a symbol (see ``parse_name``)."""
    return parse_name(stem)[0]


def file_kind(path: Path) -> str | None:
    """Return which readable kind a file is (".csv", ".csv.gz", ".parquet", ".pq"), or None."""
    name = path.name.lower()
    return next((k for k in SUFFIXES if name.endswith(k)), None)


def file_stem(path: Path) -> str:
    """Return a data file's name without its suffix (``BTC_USDT.csv.gz`` -> ``BTC_USDT``)."""
    kind = file_kind(path)
    return path.name[: -len(kind)] if kind else path.stem


def _read_table(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file, turning any parse failure into a DataError; column
    names come back stripped and lower-case, the time column named ``timestamp``."""
    kind = file_kind(path)
    if kind is None:
        suffix = "".join(path.suffixes[-2:]) or path.name
        raise DataError(
            path,
            f"unsupported file type {suffix!r} (use .csv, .csv.gz, .parquet, .feather, .json"
            " or a Binance .zip dump)",
        )
    try:
        if kind in (".csv", ".csv.gz"):
            table = pd.read_csv(path, skip_blank_lines=False)
        elif kind == ".zip":
            table = _read_dump(path)
        elif kind == ".feather":
            table = pd.read_feather(path)
        elif kind == ".json":
            table = _read_freqtrade_json(path)
        else:
            table = pd.read_parquet(path)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except Exception as e:
        raise DataError(path, f"does not parse: {type(e).__name__}: {e}".strip()) from e
    names = [str(c).strip().lower() for c in table.columns]
    if "timestamp" not in names:
        alias = next((a for a in TIME_ALIASES if a in names), None)
        if alias is not None:
            names[names.index(alias)] = "timestamp"
    twice = sorted({n for n in names if n in COLUMNS and names.count(n) > 1})
    if twice:
        raise DataError(
            path, f"column(s) {', '.join(twice)} given twice (names are read in any case)"
        )
    table.columns = pd.Index(names)
    return table


def parse_when(text: str | None, option: str) -> int | None:
    """Parse a time option (``--from``) given as ms since epoch or ISO 8601 (UTC unless an
    offset is given); raise ValueError naming the option when it is neither, or when a number
    is plausible only as another unit (seconds: 1735689600)."""
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        ms = int(text)
        if abs(ms) < MIN_PLAUSIBLE_MS:
            raise ValueError(
                f"{option} {text} is before 1973 as milliseconds: if it is seconds, give "
                f"{ms * 1000} (ms) or an ISO date"
            )
        if abs(ms) >= MAX_PLAUSIBLE_MS:
            raise ValueError(
                f"{option} {text} is after 5138 as milliseconds: give ms or an ISO date"
            )
        return ms
    try:
        ts = pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise ValueError(f"{option} {text!r} is neither ms since epoch nor ISO 8601") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _read_dump(path: Path) -> pd.DataFrame:
    """Read a Binance kline dump: a zipped CSV, with a header row or (older files) without."""
    table = pd.read_csv(path, compression="zip", header=None, dtype=str)
    if table.empty:
        return table
    if not str(table.iloc[0, 0]).strip().lstrip("-").isdigit():  # a header row
        table = table.iloc[1:].reset_index(drop=True)
    if table.shape[1] != len(BINANCE_DUMP_COLUMNS):
        raise DataError(
            path,
            f"{table.shape[1]} columns, not the {len(BINANCE_DUMP_COLUMNS)} of a Binance dump",
        )
    table.columns = pd.Index(BINANCE_DUMP_COLUMNS)
    return table


def _read_freqtrade_json(path: Path) -> pd.DataFrame:
    """Read freqtrade's JSON candles: a list of [ms, open, high, low, close, volume]."""
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 6 for r in rows):
        raise DataError(
            path, "not freqtrade candles (a list of [ms, open, high, low, close, volume])"
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


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
            raise DataError(path, "timestamp is not a whole number", _first_bad(bad, rows))
        ms: np.ndarray = _to_ms(col.to_numpy(dtype=np.int64), path, rows)
    else:
        text = col.astype("string").str.strip()
        digits = text.str.fullmatch(r"-?\d+").fillna(False).to_numpy(dtype=bool)
        if digits.all():
            ms = _to_ms(text.astype("int64").to_numpy(dtype=np.int64), path, rows)
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
            path, f"timestamp {int(ms[small][0])} is before 1973", _first_bad(small, rows)
        )
    return ms


def _unit(value: int) -> tuple[str, int] | None:
    return next(((n, d) for n, lo, hi, d in UNITS if lo <= abs(value) < hi), None)


def _to_ms(numbers: np.ndarray, path: Path, rows: np.ndarray) -> np.ndarray:
    """Turn numbers since the epoch into ms: the unit is told by the first row's size (see
    UNITS) and every other row must be in the same unit."""
    if not len(numbers):
        return numbers.astype(np.int64)
    first = int(numbers[0])
    unit = _unit(first)
    if unit is None:
        raise DataError(
            path, f"timestamp {first} is not a time since the epoch (before 1973)", int(rows[0])
        )
    name, divisor = unit
    lo, hi = next((lo, hi) for n, lo, hi, _ in UNITS if n == name)
    other = (np.abs(numbers) < lo) | (np.abs(numbers) >= hi)
    if other.any():
        value = int(numbers[other][0])
        theirs = _unit(value)
        raise DataError(
            path,
            f"timestamp {value} is in {theirs[0] if theirs else 'no known unit'}, "
            f"the first row's in {name}: one unit per file",
            _first_bad(other, rows),
        )
    if divisor < 0:
        return numbers.astype(np.int64) * -divisor
    part = numbers % divisor != 0
    if part.any():
        raise DataError(
            path,
            f"timestamp {int(numbers[part][0])} ({name}) is not a whole millisecond",
            _first_bad(part, rows),
        )
    return numbers.astype(np.int64) // divisor


def check_frame(frame: pd.DataFrame, source: Path, timeframe_ms: int | None) -> pd.DataFrame:
    """Validate candles from anywhere (an exchange's answer, a file) by the loader's rules;
    raise DataError naming ``source`` and the 1-based row."""
    return _validate(frame, source, np.arange(1, len(frame) + 1), timeframe_ms)


def _validate(
    raw: pd.DataFrame, path: Path, rows: np.ndarray, timeframe_ms: int | None
) -> pd.DataFrame:
    """Check one symbol's rows and return the normalised frame."""
    empty = raw[list(COLUMNS)].isna().all(axis=1).to_numpy(dtype=bool)
    if empty.any():
        raise DataError(path, "row is empty (a blank or all-comma line)", _first_bad(empty, rows))
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
        _check_timeframe(ts, step, path, rows, timeframe_ms)
    return out


def tf_name(ms: int) -> str:
    """Return a spacing as people write timeframes: 300000 -> "5m", 3600000 -> "1h"."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _check_timeframe(
    ts: np.ndarray, step: np.ndarray, path: Path, rows: np.ndarray, timeframe_ms: int
) -> None:
    """Refuse a file of another timeframe (naming both) and a candle off the timeframe's grid
    (naming a close-time stamp as such); on the grid, spacing is a whole number of candles."""
    tf = tf_name(timeframe_ms)
    short = step < timeframe_ms
    if short.any() or (len(step) >= 2 and not (step == timeframe_ms).any()):
        # Closer than a candle, or no two candles adjacent: data of another timeframe.
        where = step[short] if short.any() else step
        raise DataError(
            path,
            f"candles are {tf_name(int(where.min()))} apart, but the timeframe is {tf}"
            " (TB_TIMEFRAME): use data of that timeframe, or set TB_TIMEFRAME to match",
            _first_bad(short, rows[1:]) if short.any() else None,
        )
    off_grid = ts % timeframe_ms != 0
    if off_grid.any():
        value = int(ts[off_grid][0])
        close_stamped = bool(((ts + 1) % timeframe_ms == 0).all())
        hint = (
            f"; it looks like a close time (open + {tf} - 1 ms, as Binance's close_time):"
            " give the open time"
            if close_stamped
            else ""
        )
        raise DataError(
            path,
            f"timestamp {value} is not on the {tf} grid (candles open at multiples of {tf})" + hint,
            _first_bad(off_grid, rows),
        )


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
        name, kind = parse_name(file_stem(path))
        if kind in FREQTRADE_OTHER_KINDS:
            raise DataError(
                path, f"a freqtrade {kind} file, not trade candles: move it out of the folder"
            )
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
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file() and file_kind(p) is not None]
        others = [p.name for p in entries if p not in files]
        if others:
            shown = ", ".join(others[:3]) + (
                f" and {len(others) - 3} more" if len(others) > 3 else ""
            )
            raise DataError(
                path,
                f"holds what is not candle data: {shown} (only .csv, .csv.gz, .parquet, freqtrade's"
                " .feather/.json and Binance's .zip dumps; move the rest out, so no symbol is left"
                " out unnoticed)",
            )
        if not files:
            raise DataError(path, "folder holds no .csv or .parquet files")
        parts: dict[str, list[tuple[Path, pd.DataFrame]]] = {}
        for file in files:
            for name, frame in _split(_read_table(file), file, symbols, timeframe_ms).items():
                parts.setdefault(name, []).append((file, frame))
        out = {name: _join(pieces) for name, pieces in parts.items()}
    else:
        out = _split(_read_table(path), path, symbols, timeframe_ms)
    if symbols is not None:
        absent = [s for s in symbols if s not in out]
        if absent:
            raise DataError(path, f"symbol(s) not in the data: {', '.join(absent)}")
    if not out:
        raise DataError(path, "no candles")
    return dict(sorted(out.items()))


def _join(pieces: list[tuple[Path, pd.DataFrame]]) -> pd.DataFrame:
    """Join one symbol's files (monthly dumps) in time order; refuse two that overlap."""
    if len(pieces) == 1:
        return pieces[0][1]
    ordered = sorted(pieces, key=lambda p: int(p[1]["timestamp"].iloc[0]))
    for (before, a), (after, b) in itertools.pairwise(ordered):
        if int(b["timestamp"].iloc[0]) <= int(a["timestamp"].iloc[-1]):
            raise DataError(after, f"overlaps {before.name}: the same symbol's candles twice")
    return pd.concat([f for _, f in ordered], ignore_index=True)


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
