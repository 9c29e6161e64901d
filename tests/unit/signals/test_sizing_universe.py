"""Position sizing with step and minimums; universe ranking and rotation times."""

from __future__ import annotations

import numpy as np
import pytest

from services.signals.sizing import MarketLimits, position_quantity, round_down_to_step
from services.signals.universe import rank_universe, rotation_due


def test_quantity_is_margin_times_leverage_over_price() -> None:
    # margin = 10000 * 0.8 / 3; quantity = margin * 3 / 100 = 80
    assert position_quantity(10_000, 100.0, 0.8, 3, 3) == 80.0


def test_leverage_and_max_positions_each_play_their_own_part() -> None:
    # margin = 10000 * 0.5 / 4 = 1250; quantity = 1250 * 5 / 100 = 62.5 (swapped: 40)
    assert position_quantity(10_000, 100.0, 0.5, 4, 5) == 62.5
    assert position_quantity(10_000, 100.0, 0.5, 5, 4) == 40.0


def test_quantity_rounds_down_to_amount_step() -> None:
    q = position_quantity(10_000, 30.0, 0.8, 3, 3, MarketLimits(amount_step=0.1))
    assert q == 266.6  # 266.666... rounded down, not to nearest


def test_round_down_is_exact_in_decimal() -> None:
    assert round_down_to_step(0.3, 0.1) == 0.3
    assert round_down_to_step(0.29999, 0.1) == 0.2
    assert round_down_to_step(7.0, 1.0) == 7.0


def test_round_down_accepts_numpy_floats() -> None:
    """Regression: repr(np.float64) is 'np.float64(...)', which Decimal rejected."""
    assert round_down_to_step(np.float64(0.3), np.float64(0.1)) == 0.3
    q = position_quantity(np.float64(10_000), 30.0, 0.8, 3, 3, MarketLimits(amount_step=0.1))
    assert q == 266.6


def test_minimum_amount_is_inclusive() -> None:
    assert position_quantity(10_000, 100.0, 0.8, 3, 3, MarketLimits(min_amount=80.0)) == 80.0
    assert position_quantity(10_000, 100.0, 0.8, 3, 3, MarketLimits(min_amount=80.001)) == 0.0


def test_minimum_notional_is_inclusive() -> None:
    assert position_quantity(10_000, 100.0, 0.8, 3, 3, MarketLimits(min_notional=8000.0)) == 80.0
    assert position_quantity(10_000, 100.0, 0.8, 3, 3, MarketLimits(min_notional=8000.01)) == 0.0


def test_no_order_without_equity() -> None:
    assert position_quantity(0.0, 100.0, 0.8, 3, 3) == 0.0
    assert position_quantity(-5.0, 100.0, 0.8, 3, 3) == 0.0


def test_universe_ranks_by_volume_then_name() -> None:
    vols = {"ETH/USDT": 5.0, "BTC/USDT": 9.0, "ADA/USDT": 5.0, "XRP/USDT": 1.0}
    assert rank_universe(vols, 3) == ["BTC/USDT", "ADA/USDT", "ETH/USDT"]


def test_rotation_at_start_and_on_crossing_a_multiple() -> None:
    h3 = 3 * 3_600_000
    assert rotation_due(None, 5, h3)
    assert rotation_due(h3 - 1, h3, h3)  # close exactly on the multiple
    assert not rotation_due(h3, h3 + 300_000, h3)
    assert rotation_due(h3 - 1, 2 * h3 + 1, h3)


def test_no_order_without_a_positive_price() -> None:
    assert position_quantity(10_000, 0.0, 0.8, 3, 3) == 0.0
    assert position_quantity(10_000, -1.0, 0.8, 3, 3) == 0.0


def test_no_order_when_the_quantity_overflows() -> None:
    # 10 000 * 0.8 / 3 * 3 / 1e-320 = 8e323, beyond the largest float: infinite, not an order
    assert position_quantity(10_000, 1e-320, 0.8, 3, 3) == 0.0


def test_a_step_of_zero_leaves_the_amount_as_it_is() -> None:
    assert round_down_to_step(0.123456789, 0.0) == 0.123456789
    assert position_quantity(10_000, 30.0, 0.8, 3, 3) == 8_000 / 30


def test_an_account_worth_less_than_one_dollar_still_trades() -> None:
    # margin 0.9 * 0.8 / 3 = 0.24; x3 / 0.1 = 7.2
    assert position_quantity(0.9, 0.1, 0.8, 3, 3) == pytest.approx(7.2)
