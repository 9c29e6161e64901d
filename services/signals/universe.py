"""The active universe: the TOP_N symbols by 24-hour quote volume, ties broken by symbol name."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray


def rank_universe(quote_volume_24h: Mapping[str, float], top_n: int) -> list[str]:
    """Return the top_n symbols by descending 24h quote volume, then ascending symbol name."""
    ranked = sorted(quote_volume_24h.items(), key=lambda kv: (-kv[1], kv[0]))
    return [symbol for symbol, _ in ranked[:top_n]]


def rotation_mask(close_ms: NDArray[np.int64], rotate_ms: int) -> NDArray[np.bool_]:
    """Mark the closes where the universe rotates: the first, and every close that crosses a
    multiple of COIN_ROTATE_HOURS since the Unix epoch (prev < k * period <= close)."""
    mask = np.ones(len(close_ms), dtype=bool)
    period = np.asarray(close_ms, dtype=np.int64) // rotate_ms
    mask[1:] = period[1:] > period[:-1]
    return mask


def rotation_due(prev_close_ms: int | None, close_ms: int, rotate_ms: int) -> bool:
    """Return whether the universe rotates at close_ms, given the previous close (None = start)."""
    if prev_close_ms is None:
        return True
    return bool(rotation_mask(np.array([prev_close_ms, close_ms], dtype=np.int64), rotate_ms)[1])
