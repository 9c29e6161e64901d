"""The executor's small pieces of order arithmetic, each against a value worked out by hand."""

from __future__ import annotations

import hashlib

import pytest

from services.executor import orders as o
from shared.exchange_models import CLIENT_ID_PREFIX, MarketInfo
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id


def _cid(text: str) -> str:
    return (
        CLIENT_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()[: 36 - len(CLIENT_ID_PREFIX)]
    )


def test_each_order_of_a_position_has_its_own_derived_id() -> None:
    pid = "BTC/USDT:USDT|5m|1700000000000|long"
    assert entry_client_id(pid) == _cid(pid + "|entry")
    assert exit_client_id(pid) == _cid(pid + "|exit")
    assert stop_client_id(pid) == _cid(pid + "|stop")
    assert stop_client_id(pid, 2) == _cid(pid + "|stop|2")


def test_the_side_an_order_opens_or_closes() -> None:
    assert (o.position_side("buy"), o.position_side("sell")) == ("long", "short")
    assert (o.side_closed_by("sell"), o.side_closed_by("buy")) == ("long", "short")


@pytest.mark.parametrize("tick", [None, 0.0, -0.5])
def test_no_tick_leaves_the_price_alone(tick: float | None) -> None:
    assert o.round_to_tick(101.37, tick) == 101.37


def test_a_price_goes_to_the_nearest_tick() -> None:
    assert o.round_to_tick(101.37, 0.5) == 101.5
    assert o.round_to_tick(101.2, 0.5) == 101.0


def test_the_taker_fee_is_the_rate_of_the_notional_and_never_infinite() -> None:
    assert o.taker_fee(2.0, 100.0, 0.0005) == pytest.approx(0.1)
    assert o.taker_fee(1e300, 1e300, 0.0005) == 0.0  # overflow: no fee rather than inf


def test_missing_market_limits_count_as_none_and_given_ones_pass_through() -> None:
    def market(**limits: float | None) -> MarketInfo:
        fields: dict[str, float | None] = {
            "amount_step": None, "min_amount": None, "max_amount": None, "min_notional": None,
        }  # fmt: skip
        fields |= limits
        return MarketInfo(
            symbol="BTC/USDT:USDT", id="BTCUSDT", base="BTC", quote="USDT", active=True,
            price_tick=0.1, min_price=None, max_price=None, **fields,
        )  # fmt: skip

    none = o.limits_of(market())
    assert (none.amount_step, none.min_amount, none.min_notional, none.max_amount) == (0, 0, 0, 0)
    given = o.limits_of(market(amount_step=0.001, min_amount=0.002, min_notional=5.0,
                               max_amount=120.0))  # fmt: skip
    assert (given.amount_step, given.min_amount, given.min_notional, given.max_amount) == (
        0.001,
        0.002,
        5.0,
        120.0,
    )
