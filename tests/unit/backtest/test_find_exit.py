"""The engine's vectorized exit scan is the same as folding the rule over each price event."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.backtest.engine import find_exit
from services.signals.rules import LONG, SHORT, ExitReason, StrategyParams, on_price, open_position
from shared.config import Settings

P = StrategyParams.from_settings(Settings())


def fold(paths: list[float], side: int, entry: float) -> tuple[int, ExitReason, float] | None:
    pos = open_position(side, entry, P)
    for j, price in enumerate(paths):
        d = on_price(pos, price, P)
        if d.reason is not None:
            assert d.price is not None
            return j, d.reason, d.price
        pos = d.position
    return None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-0.015, 0.015), min_size=1, max_size=300),
    st.sampled_from([LONG, SHORT]),
)
def test_find_exit_matches_event_by_event_rule(moves: list[float], side: int) -> None:
    entry = 100.0
    paths = (entry * np.cumprod(1 + np.array(moves))).tolist()
    arr = np.array(paths, dtype=np.float64)
    got = find_exit(arr, 0, side, entry, open_position(side, entry, P).stop, P)
    assert got == fold(paths, side, entry)


def test_find_exit_starts_at_the_given_event() -> None:
    arr = np.array([50.0, 50.0, 100.0, 101.0], dtype=np.float64)
    assert find_exit(arr, 2, LONG, 100.0, 98.0, P) is None
    assert find_exit(arr, 0, LONG, 100.0, 98.0, P) == (0, ExitReason.STOP, 98.0)
