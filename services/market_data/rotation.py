"""Pure universe rules for market_data: when to rotate, what to choose, which symbols to tick."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.signals.universe import rank_universe, rotation_due
from shared.book import Universe

HOUR_MS = 3_600_000


def rotate_ms(coin_rotate_hours: float) -> int:
    """Return COIN_ROTATE_HOURS in milliseconds."""
    return max(1, round(coin_rotate_hours * HOUR_MS))


def universe_due(prev: Universe | None, close_ms: int, period_ms: int) -> bool:
    """Return whether the universe rotates at ``close_ms``.

    At start (no stored universe), then whenever a close crosses a multiple of the period
    since the epoch. A stored rotation newer than the close (the exchange clock went back,
    e.g. a fresh simulator) is stale: rotate.
    """
    if prev is None or prev.rotated_ms > close_ms:
        return True
    return rotation_due(prev.rotated_ms, close_ms, period_ms)


def choose_universe(quote_volumes: Mapping[str, float], top_n: int, close_ms: int) -> Universe:
    """Return the TOP_N symbols by 24 h quote volume (ties by name) chosen at ``close_ms``."""
    symbols = rank_universe(quote_volumes, top_n)
    return Universe(
        symbols=symbols,
        rotated_ms=close_ms,
        quote_volumes={s: float(quote_volumes[s]) for s in symbols},
    )


def tick_symbols(universe: Iterable[str], position_symbols: Iterable[str]) -> list[str]:
    """Return the symbols to tick: the universe, then open positions' symbols outside it."""
    out = list(dict.fromkeys(universe))
    seen = set(out)
    for s in sorted(set(position_symbols) - seen):
        out.append(s)
    return out


def describe_universe(universe: Universe) -> str:
    """Return the symbols of a universe as one space-separated string for the log."""
    return " ".join(universe.symbols)
