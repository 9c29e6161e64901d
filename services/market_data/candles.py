"""Pure candle bookkeeping: how many candles to fetch, which to trust, store and publish.

The rules for what the exchange answers (``plan_candles``), per symbol and close:

1. The answer must list open times on the timeframe's grid, strictly increasing. An
   identical candle listed twice is dropped (repaired); two different candles at one open
   time, a candle listed out of order, or an open time off the grid make the whole answer
   untrusted: nothing of it is stored or published, and it is fetched again next close.
2. A candle whose values are not valid (a price that is not a finite number > 0, a volume
   that is not finite or is negative, a high below the open, close or low, a low above the
   open or close) is refused: not stored, not published.
3. New candles are published in open-time order without holes: publishing stops at the
   first new candle that is missing from an answer that should hold it, or refused; the
   ones after it wait, and all are fetched again next close. Only a candle still missing
   or refused after ``HOLE_PATIENCE`` closes is given up (counted as a gap), so a candle
   the exchange really does not have cannot stall a symbol for good. Candles older than
   what the fetch could reach (downtime longer than CANDLE_LIMIT closes) are a gap.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from shared.exchange_models import OHLCV
from shared.schemas import Candle

HOLE_PATIENCE = 3  # closes a missing or refused new candle is waited for before a gap


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


@dataclass(frozen=True)
class Gap:
    """Missing candles right before ``open_time`` (``missing`` of them)."""

    open_time: int
    missing: int


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


def why_refused(e: ValueError) -> str:
    """Return what was wrong with a refused candle: its first failed rule and field."""
    if isinstance(e, ValidationError):
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(e)


@dataclass
class Plan:
    """What one symbol's fetched candles come to at a close (see the module's rules)."""

    window: list[Candle] = field(default_factory=list)  # valid candles to store, by open time
    publish: list[Candle] = field(default_factory=list)  # new candles to publish, in order
    refused: list[tuple[int, str]] = field(default_factory=list)  # (open time, why)
    duplicates: int = 0  # identical candles listed twice, dropped
    problem: tuple[str, str] | None = None  # (kind, why) when the whole answer is untrusted
    waiting_for: int | None = None  # the new candle publishing stopped at
    missing: list[int] = field(default_factory=list)  # new candles absent from the answer
    given_up: list[int] = field(default_factory=list)  # candles waited for too long: gaps
    gap: Gap | None = None  # candles older than the fetch could reach


def answer_problem(rows: Sequence[OHLCV], timeframe_ms: int) -> tuple[str, str] | None:
    """Return (kind, why) when an answer's open times cannot be trusted (rule 1), else None."""
    for r in rows:
        if r.open_time % timeframe_ms:
            return "bad_time", f"open time {r.open_time} is not on the timeframe's grid"
    for a, b in itertools.pairwise(rows):
        if b.open_time == a.open_time and b != a:
            return "duplicate", f"two different candles at {fmt_ms(a.open_time)}"
        if b.open_time < a.open_time:
            after = f"candle at {fmt_ms(b.open_time)} listed after {fmt_ms(a.open_time)}"
            return "out_of_order", after
    return None


def plan_candles(
    symbol: str,
    timeframe: str,
    timeframe_ms: int,
    rows: Sequence[OHLCV],
    last_open: int | None,
    last_close: int,
    fetched: int,
    give_up: Collection[int] = (),
) -> Plan:
    """Sort out the ``fetched`` newest closed candles asked at ``last_close`` (module rules).

    ``last_open`` is the open time of the symbol's last published candle (None on a fresh
    start: then only the newest closed candle is new); ``give_up`` are open times waited
    for long enough, to publish past.
    """
    plan = Plan(problem=answer_problem(rows, timeframe_ms))
    if plan.problem is not None:
        return plan
    by_open: dict[int, Candle] = {}
    listed: set[int] = set()
    for r in rows:
        if r.open_time in listed:
            plan.duplicates += 1
            continue
        listed.add(r.open_time)
        try:
            by_open[r.open_time] = to_candle(symbol, timeframe, r)
        except ValueError as e:
            plan.refused.append((r.open_time, why_refused(e)))
    plan.window = sorted(by_open.values(), key=lambda c: c.open_time)
    newest = last_close - timeframe_ms
    if last_open is None:
        first = newest
    else:
        first = last_open + timeframe_ms
        reach = last_close - fetched * timeframe_ms  # the oldest open time the fetch asked for
        if first < reach:
            plan.gap = Gap(reach, (reach - first) // timeframe_ms)
            first = reach
    for t in range(first, newest + 1, timeframe_ms):
        if t in by_open:
            plan.publish.append(by_open[t])
        elif t in give_up:
            plan.given_up.append(t)
        else:
            plan.waiting_for = t
            if t not in listed:
                plan.missing.append(t)
            break
    return plan


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
