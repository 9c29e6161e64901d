"""Candle history: the local store, and filling it from an exchange's public klines.

The store is one Parquet file per exchange, timeframe and symbol, in the loader's format
(``shared.candles``): ``DATA_DIR/candles/<exchange>/<timeframe>/<BASE>_<QUOTE>.parquet``,
with the exchange's market rules (tick, lot step, minimum amount and notional) beside them
in ``DATA_DIR/candles/<exchange>/markets.json``. ``tradebot backtest`` reads it by default.

A download asks only for what the file lacks (the head, the tail and any gap inside), one
page of at most ``PAGE_LIMIT`` candles at a time through ``ExchangeClient`` (its retries and
rate limits), and replaces the file after each page by an atomic rename: an interrupted
run leaves a whole file with every page written so far, and the next run goes on from there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from shared.candles import COLUMNS, DataError, check_frame
from shared.config import TIMEFRAME_MS
from shared.exchange_models import MarketInfo

if TYPE_CHECKING:  # ccxt is heavy: imported by whoever builds the client
    from shared.exchange import ExchangeClient

STORE_DIR = "candles"
MARKETS_FILE = "markets.json"
PAGE_LIMIT = 1000  # ccxt asks Binance for at most 1,000 klines (the API allows 1,500)
DAY_MS = 86_400_000


def store_folder(data_dir: Path, exchange: str, timeframe: str) -> Path:
    """Return the folder holding one exchange's candles at one timeframe."""
    return data_dir / STORE_DIR / exchange / timeframe


def store_file(folder: Path, market: MarketInfo) -> Path:
    """Return a market's file in a store folder (``BTC_USDT.parquet``: the loader's name)."""
    return folder / f"{market.base}_{market.quote}.parquet"


def read_stored(path: Path) -> pd.DataFrame:
    """Return a stored file's candles (an empty frame if there is none yet)."""
    if not path.exists():
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c == "timestamp" else "float64") for c in COLUMNS}
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as e:
        raise DataError(
            path, f"unreadable ({type(e).__name__}): delete it and download again"
        ) from e
    return frame[list(COLUMNS)]


def write_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Replace ``path`` with ``frame`` so that a reader (or a crash) sees the old file or the
    new one, never part of one: written beside it under a hidden name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    frame.to_parquet(part, index=False)
    with part.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, path)


def missing_ranges(
    have: np.ndarray, start_ms: int, end_ms: int, tf_ms: int
) -> list[tuple[int, int]]:
    """Return the half-open ranges [a, b) of candle open times in [start_ms, end_ms) on the
    timeframe's grid that ``have`` lacks: the head, the tail and every gap inside."""
    first = -(-start_ms // tf_ms) * tf_ms
    grid = np.arange(first, end_ms, tf_ms, dtype=np.int64)
    absent = grid[~np.isin(grid, have)]
    if not len(absent):
        return []
    breaks = np.flatnonzero(np.diff(absent) != tf_ms)
    starts = np.concatenate([[absent[0]], absent[breaks + 1]])
    ends = np.concatenate([absent[breaks], [absent[-1]]]) + tf_ms
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class Fetched:
    """What a download did for one symbol."""

    symbol: str
    path: Path
    new: int  # candles added to the file
    total: int  # candles in the file now
    first_ms: int | None
    last_ms: int | None
    requests: int


Progress = Callable[[int, int], None]  # (candles done, candles asked for)


async def download_symbol(
    client: ExchangeClient,
    market: MarketInfo,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    path: Path,
    now_ms: int,
    progress: Progress | None = None,
) -> Fetched:
    """Fill ``path`` with the closed candles of [start_ms, end_ms) it lacks, page by page."""
    tf_ms = TIMEFRAME_MS[timeframe]
    stored = read_stored(path)
    ranges = missing_ranges(stored["timestamp"].to_numpy(np.int64), start_ms, end_ms, tf_ms)
    wanted = sum((b - a) // tf_ms for a, b in ranges)
    done = new = requests = 0
    for a, b in ranges:
        since = a
        while since < b:
            page = await client.ohlcv_from(market.symbol, timeframe, since, PAGE_LIMIT, now_ms)
            requests += 1
            rows = [c for c in page if c.open_time < b]
            if rows:
                got = pd.DataFrame(
                    [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in rows],
                    columns=list(COLUMNS),
                )
                got = check_frame(got, Path(f"{market.symbol} from the exchange"), None)
                stored = (
                    pd.concat([stored, got])
                    .drop_duplicates("timestamp", keep="last")
                    .sort_values("timestamp", ignore_index=True)
                )
                write_atomic(path, stored)
                new += len(got)
            done += (min(b, page[-1].open_time + tf_ms) - since) // tf_ms if page else 0
            if progress is not None:
                progress(min(done, wanted), wanted)
            if not page or page[-1].open_time + tf_ms <= since:
                break  # nothing from `since` on: before the listing, or after the last close
            since = page[-1].open_time + tf_ms
    ts = stored["timestamp"]
    return Fetched(
        market.symbol,
        path,
        new,
        len(stored),
        int(ts.iloc[0]) if len(ts) else None,
        int(ts.iloc[-1]) if len(ts) else None,
        requests,
    )


def save_markets(folder: Path, markets: Sequence[MarketInfo]) -> Path:
    """Merge the markets' rules into the exchange's markets.json (atomically); return it."""
    path = folder / MARKETS_FILE
    known: dict[str, dict[str, object]] = {}
    if path.exists():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            known = {}  # rewritten whole below
    for m in markets:
        known[f"{m.base}/{m.quote}"] = asdict(m)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{MARKETS_FILE}.part"
    part.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    os.replace(part, path)
    return path


def resolve_symbols(names: Sequence[str], markets: dict[str, MarketInfo]) -> list[MarketInfo]:
    """Return the markets named as ``BTC/USDT:USDT``, ``BTC/USDT`` or ``BTCUSDT``; raise
    ValueError naming every name that matches no market."""
    by_name: dict[str, MarketInfo] = {}
    for m in markets.values():
        for alias in (m.symbol, f"{m.base}/{m.quote}", m.id, f"{m.base}{m.quote}"):
            by_name.setdefault(alias.upper(), m)
    unknown = [n for n in names if n.strip().upper() not in by_name]
    if unknown:
        raise ValueError(f"not a market of the exchange: {', '.join(unknown)}")
    return list(
        {by_name[n.strip().upper()].symbol: by_name[n.strip().upper()] for n in names}.values()
    )
