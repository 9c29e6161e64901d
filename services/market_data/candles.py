"""Pure candle bookkeeping: how many candles to fetch, which are new, where the gaps are."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.exchange_models import OHLCV
from shared.schemas import Candle


def last_close_ms(now_ms: int, timeframe_ms: int) -> int:
    """Return the close time of the newest candle closed by exchange time ``now_ms``."""
    return now_ms - now_ms % timeframe_ms


def fmt_ms(ms: int) -> str:
    """Return an exchange time as ``2025-01-02T03:05Z`` for log lines."""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ms / 1000))


def fetch_count(
    last_open: int | None, window_len: int, last_close: int, timeframe_ms: int, limit: int
) -> int:
    """Return how many closed candles to fetch for a symbol at ``last_close`` (0 = none).

    Without a record (or with a window shorter than ``limit``, e.g. after CANDLE_LIMIT
    grew) the whole window is fetched; otherwise only the candles missed since the last
    published one, plus one of overlap, at most ``limit``: a gap after downtime is refilled.
    """
    if last_open is None or window_len < limit:
        return limit
    newest_open = last_close - timeframe_ms
    missed = (newest_open - last_open) // timeframe_ms
    if missed <= 0:
        return 0
    return min(missed + 1, limit)


def new_rows(rows: Sequence[OHLCV], last_open: int | None, timeframe_ms: int) -> list[OHLCV]:
    """Return the fetched rows to publish: newer than the last published one.

    With no record (a fresh start) only the newest closed candle is new; the older ones
    only fill the window.
    """
    if not rows:
        return []
    floor = last_open if last_open is not None else rows[-1].open_time - timeframe_ms
    return [r for r in rows if r.open_time > floor]


@dataclass(frozen=True)
class Gap:
    """Missing candles right before ``open_time`` (``missing`` of them)."""

    open_time: int
    missing: int


def gaps_before(rows: Sequence[OHLCV], last_open: int | None, timeframe_ms: int) -> list[Gap]:
    """Return the gaps before new rows: a row more than one timeframe after its predecessor.

    The predecessor of the first row is the last published candle (none on a fresh start).
    """
    gaps: list[Gap] = []
    prev = last_open
    for r in rows:
        if prev is not None and r.open_time - prev > timeframe_ms:
            gaps.append(Gap(r.open_time, (r.open_time - prev) // timeframe_ms - 1))
        prev = r.open_time
    return gaps


def to_candle(symbol: str, timeframe: str, row: OHLCV) -> Candle:
    """Build the Candle message of a row; raise ValueError when the values are not valid."""
    return Candle(
        symbol=symbol,
        timeframe=timeframe,
        open_time=row.open_time,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
    )


def expected_counts(candles: Iterable[Candle], timeframe_ms: int) -> dict[int, int]:
    """Return, per close time, how many of these candles close then."""
    counts: dict[int, int] = {}
    for c in candles:
        close = c.open_time + timeframe_ms
        counts[close] = counts.get(close, 0) + 1
    return counts


def publish_order(candles: Iterable[Candle]) -> list[Candle]:
    """Return candles in the order they go on the stream: by open time, then symbol."""
    return sorted(candles, key=lambda c: (c.open_time, c.symbol))
