"""The active universe: the TOP_N symbols by 24-hour quote volume, ties broken by symbol name."""

from __future__ import annotations

from collections.abc import Mapping


def rank_universe(quote_volume_24h: Mapping[str, float], top_n: int) -> list[str]:
    """Return the top_n symbols by descending 24h quote volume, then ascending symbol name."""
    ranked = sorted(quote_volume_24h.items(), key=lambda kv: (-kv[1], kv[0]))
    return [symbol for symbol, _ in ranked[:top_n]]


def rotation_due(prev_close_ms: int | None, close_ms: int, rotate_ms: int) -> bool:
    """Return whether the universe rotates at this close: at the first step, or when the close
    crosses a multiple of COIN_ROTATE_HOURS since the Unix epoch (prev < k * period <= close)."""
    if prev_close_ms is None:
        return True
    return close_ms // rotate_ms > prev_close_ms // rotate_ms
