"""Universe rules: ranking with ties, rotation timing, tick symbols."""

from __future__ import annotations

import pytest

from services.market_data.rotation import (
    choose_universe,
    describe_universe,
    rotate_ms,
    tick_symbols,
    universe_due,
)
from shared.book import Universe

H = 3_600_000
T0 = 1_735_779_600_000  # 2025-01-02T01:00Z


def test_choose_universe_ranks_by_volume_then_name() -> None:
    volumes = {"SOL": 5.0, "ETH": 9.0, "ADA": 5.0, "BTC": 9.0, "XRP": 1.0}
    u = choose_universe(volumes, 4, T0)
    assert u.symbols == ["BTC", "ETH", "ADA", "SOL"]
    assert u.rotated_ms == T0
    assert u.quote_volumes == {"BTC": 9.0, "ETH": 9.0, "ADA": 5.0, "SOL": 5.0}
    assert choose_universe(volumes, 10, T0).symbols == ["BTC", "ETH", "ADA", "SOL", "XRP"]
    assert describe_universe(choose_universe(volumes, 2, T0)) == "BTC ETH"


@pytest.mark.parametrize(
    ("rotated", "close", "due"),
    [
        (None, T0, True),  # at start
        (T0, T0, False),  # same close
        (T0, T0 + H, False),  # 02:00: inside the 00:00-03:00 period
        (T0, T0 + 2 * H, True),  # 03:00 crosses a multiple of 3 h
        (T0 + 2 * H, T0 + 4 * H, False),
        (T0, T0 + 30 * H, True),  # long downtime
        (T0 + H, T0, True),  # stored rotation from the future: the clock went back
    ],
)
def test_universe_due(rotated: int | None, close: int, due: bool) -> None:
    prev = None if rotated is None else Universe(symbols=["BTC"], rotated_ms=rotated)
    assert universe_due(prev, close, rotate_ms(3)) is due


def test_rotate_ms() -> None:
    assert rotate_ms(3) == 3 * H
    assert rotate_ms(0.25) == 900_000


def test_tick_symbols_are_the_universe_then_open_positions_outside_it() -> None:
    assert tick_symbols(["BTC", "ETH"], ["SOL", "ETH", "ADA", "SOL"]) == [
        "BTC",
        "ETH",
        "ADA",
        "SOL",
    ]
    assert tick_symbols([], ["SOL"]) == ["SOL"]
    assert tick_symbols(["BTC"], []) == ["BTC"]
