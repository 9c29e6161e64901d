"""The four-event candle path: green goes low first, red goes high first."""

from __future__ import annotations

import numpy as np

from services.signals.path import candle_price_path, candle_price_paths


def test_green_goes_open_low_high_close() -> None:
    assert candle_price_path(10, 12, 9, 11) == (10, 9, 12, 11)


def test_doji_counts_as_green() -> None:
    assert candle_price_path(10, 12, 9, 10) == (10, 9, 12, 10)


def test_red_goes_open_high_low_close() -> None:
    assert candle_price_path(11, 12, 9, 10) == (11, 12, 9, 10)


def test_vectorized_path_matches_scalar() -> None:
    o, h, lo, c = (
        np.array(x, dtype=np.float64) for x in ([10, 11, 10], [12, 12, 12], [9, 9, 9], [11, 10, 10])
    )
    rows = candle_price_paths(o, h, lo, c)
    for i in range(3):
        assert tuple(rows[i]) == candle_price_path(o[i], h[i], lo[i], c[i])
