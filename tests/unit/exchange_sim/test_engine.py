"""The matching engine alone: fills, fees, PnL, margin, limits, stops, margin type."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.exchange_sim import engine
from services.exchange_sim.engine import Account, SimError, spec_for

BTC = spec_for("BTCUSDT", 60_000.0)
PRICES = {"BTCUSDT": 60_000.0}


def fresh(wallet: float = 10_000.0) -> Account:
    return Account(wallet=wallet, fee_rate=0.0005)


def buy(acct: Account, qty: float, price: float = 60_000.0) -> engine.Order:
    return engine.fill_market(acct, BTC, "BUY", qty, price, {"BTCUSDT": price}, 1, "c")


def sell(
    acct: Account, qty: float, price: float = 60_000.0, reduce_only: bool = False
) -> engine.Order:
    return engine.fill_market(
        acct, BTC, "SELL", qty, price, {"BTCUSDT": price}, 1, "c", reduce_only=reduce_only
    )


def test_spec_for_derives_ticks_from_price() -> None:
    assert (BTC.price_precision, BTC.quantity_precision) == (1, 3)
    doge = spec_for("DOGEUSDT", 0.15)
    assert (doge.base, doge.price_precision, doge.quantity_precision) == ("DOGE", 6, 0)


def test_average_entry_and_realized_pnl() -> None:
    acct = fresh()
    buy(acct, 0.1, 60_000.0)
    buy(acct, 0.1, 62_000.0)
    assert acct.position("BTCUSDT").entry_price == pytest.approx(61_000.0)
    sell(acct, 0.1, 63_000.0)
    assert acct.trades[-1].realized_pnl == pytest.approx(200.0)
    assert acct.position("BTCUSDT").amount == pytest.approx(0.1)
    fees = 0.0005 * (6_000 + 6_200 + 6_300)
    assert acct.wallet == pytest.approx(10_000 + 200 - fees)


def test_flip_closes_then_opens_at_the_fill_price() -> None:
    acct = fresh()
    buy(acct, 0.1)
    sell(acct, 0.3, 59_000.0)
    pos = acct.position("BTCUSDT")
    assert pos.amount == -0.2
    assert pos.entry_price == pytest.approx(59_000.0)
    assert acct.trades[-1].realized_pnl == pytest.approx(-100.0)


def test_reduce_only_is_capped_and_refused_when_it_would_open() -> None:
    acct = fresh()
    with pytest.raises(SimError) as e:
        sell(acct, 0.1, reduce_only=True)
    assert e.value.code == -2022
    buy(acct, 0.1)
    order = sell(acct, 0.5, reduce_only=True)
    assert order.executed_qty == pytest.approx(0.1)
    assert acct.position("BTCUSDT").amount == 0


def test_insufficient_margin_and_position_limit() -> None:
    acct = fresh(1_000.0)
    with pytest.raises(SimError) as e:
        buy(acct, 0.4)  # 24 000 / 20 = 1 200 > 1 000
    assert (e.value.code, acct.orders) == (-2019, {})
    rich = fresh(10_000_000.0)
    rich.leverage["BTCUSDT"] = 125
    with pytest.raises(SimError) as e:
        buy(rich, 1.0)  # 60 000 > the 50 000 cap at 125x
    assert e.value.code == -2027


def test_the_margin_check_counts_the_fee() -> None:
    # 0.1 BTC at 60 000 = 6 000 notional: 300 margin at 20x, plus a 3 fee (0.05 %).
    with pytest.raises(SimError) as e:
        buy(fresh(302.99), 0.1)  # the margin alone would fit, not with the fee
    assert e.value.code == -2019
    acct = fresh(303.0)
    buy(acct, 0.1)  # margin and fee exactly
    assert acct.position("BTCUSDT").amount == pytest.approx(0.1)
    assert acct.wallet == pytest.approx(300.0)


@pytest.mark.parametrize(
    ("qty", "code"), [(0.0, -4003), (0.0005, -1111), (0.0001, -1111), (20_000.0, -1013)]
)
def test_bad_quantities(qty: float, code: int) -> None:
    with pytest.raises(SimError) as e:
        buy(fresh(1e12), qty)
    assert e.value.code == code


def test_stop_triggers_once_at_trigger_and_refuses_immediate_trigger() -> None:
    acct = fresh()
    buy(acct, 0.1)
    with pytest.raises(SimError) as e:
        engine.place_stop(acct, BTC, "SELL", 0.1, 60_000.0, 60_000.0, 2, "s", True, False)
    assert e.value.code == -2021
    algo = engine.place_stop(acct, BTC, "SELL", 0.1, 58_800.0, 60_000.0, 2, "s", True, False)
    assert engine.trigger_stops(acct, BTC, 58_800.1, PRICES, 3) == []
    fired = engine.trigger_stops(acct, BTC, 57_000.0, PRICES, 4)
    assert fired == [algo]
    assert (algo.status, algo.actual_price, algo.trigger_time) == ("FINISHED", 58_800.0, 4)
    spawned = acct.orders[algo.actual_order_id]
    assert spawned.orig_type == "STOP_MARKET"
    assert spawned.client_order_id != "s"  # a new order, found through actualOrderId
    assert engine.trigger_stops(acct, BTC, 50_000.0, PRICES, 5) == []


@pytest.mark.parametrize(
    ("side", "trigger", "misses", "hits"),
    [
        # A long's SELL stop below the price: fires at its trigger or lower, not a tick above.
        ("SELL", 58_800.0, [58_800.1, 60_000.0], [58_800.0, 58_799.9, 50_000.0]),
        # A short's BUY stop above the price: fires at its trigger or higher, not a tick below.
        ("BUY", 61_200.0, [61_199.9, 60_000.0, 50_000.0], [61_200.0, 61_200.1, 70_000.0]),
    ],
)
def test_a_stop_fires_exactly_when_the_price_reaches_its_trigger(
    side: str, trigger: float, misses: list[float], hits: list[float]
) -> None:
    for hit in hits:
        acct = fresh()
        (sell if side == "BUY" else buy)(acct, 0.1)
        algo = engine.place_stop(acct, BTC, side, 0.1, trigger, 60_000.0, 2, "s", True, False)
        for miss in misses:
            assert engine.trigger_stops(acct, BTC, miss, PRICES, 3) == [], (side, miss)
            assert algo.status == "NEW"
        assert engine.trigger_stops(acct, BTC, hit, PRICES, 4) == [algo], (side, hit)
        assert (algo.status, algo.actual_price) == ("FINISHED", trigger)  # filled at the trigger
        assert acct.position("BTCUSDT").amount == 0


def test_close_position_stop_closes_whatever_is_open() -> None:
    acct = fresh()
    buy(acct, 0.2)
    engine.place_stop(acct, BTC, "SELL", 0.0, 59_000.0, 60_000.0, 2, "s", False, True)
    engine.trigger_stops(acct, BTC, 58_000.0, PRICES, 3)
    assert acct.position("BTCUSDT").amount == 0


def test_close_position_stop_closes_a_position_below_min_notional() -> None:
    acct = fresh()
    buy(acct, 0.1)
    sell(acct, 0.099, reduce_only=True)  # 0.001 BTC left: 1 USDT at 1 000, under MIN_NOTIONAL
    algo = engine.place_stop(acct, BTC, "SELL", 0.0, 1_000.0, 60_000.0, 2, "s", False, True)
    engine.trigger_stops(acct, BTC, 900.0, {"BTCUSDT": 900.0}, 3)
    assert (algo.status, acct.position("BTCUSDT").amount) == ("FINISHED", 0)


def test_margin_type_rules() -> None:
    acct = fresh()
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    with pytest.raises(SimError) as e:
        engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    assert e.value.code == -4046
    buy(acct, 0.1)
    assert acct.position("BTCUSDT").isolated_wallet == pytest.approx(300.0)
    with pytest.raises(SimError) as e:
        engine.set_margin_type(acct, "BTCUSDT", "CROSSED")
    assert e.value.code == -4048
    assert acct.available_balance(PRICES) == pytest.approx(acct.wallet - 300.0)


def test_margin_type_refuses_open_stops_of_its_symbol_only() -> None:
    acct = fresh()
    with pytest.raises(SimError) as e:
        engine.set_margin_type(acct, "BTCUSDT", "CROSS")
    assert e.value.code == -1116
    buy(acct, 0.1)
    algo = engine.place_stop(acct, BTC, "SELL", 0.1, 58_800.0, 60_000.0, 2, "s", True, False)
    sell(acct, 0.1, reduce_only=True)  # flat again, the stop still open
    with pytest.raises(SimError) as e:
        engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    assert e.value.code == -4047
    engine.set_margin_type(acct, "ETHUSDT", "ISOLATED")  # another symbol's stop: no matter
    engine.cancel_algo(acct, algo, 3)
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")  # a cancelled stop: no matter either
    assert acct.margin_type_of("BTCUSDT") == "ISOLATED"


def test_state_round_trips_through_dict() -> None:
    acct = fresh()
    buy(acct, 0.1)
    engine.place_stop(acct, BTC, "SELL", 0.1, 59_000.0, 60_000.0, 2, "s", True, False)
    again = Account.from_dict(acct.to_dict())
    assert again == acct


@settings(max_examples=40, deadline=None)
@given(
    qty=st.integers(1, 300).map(lambda n: n / 1000),
    entry=st.floats(10_000, 100_000),
    exit_=st.floats(10_000, 100_000),
)
def test_round_trip_pnl_is_price_move_minus_two_fees(
    qty: float, entry: float, exit_: float
) -> None:
    acct = fresh(1e9)
    entry, exit_ = round(entry, 1), round(exit_, 1)
    buy(acct, qty, entry)
    sell(acct, qty, exit_)
    expected = qty * (exit_ - entry) - 0.0005 * qty * (entry + exit_)
    assert acct.wallet - 1e9 == pytest.approx(expected, abs=1e-6)
    assert acct.open_positions() == {}


# Binance's own code and text for each refusal (what a client logs and ccxt maps by code).
BINANCE_ERRORS = {
    "off_tick": (-4014, "Price not increased by tick size."),
    "zero_trigger": (-4014, "Price not increased by tick size."),
    "duplicate_id": (-4116, "ClientOrderId is duplicated."),
    "immediate": (-2021, "Order would immediately trigger."),
    "cancel_ended": (-2011, "Unknown order sent."),
    "margin_type_name": (-1116, "Invalid marginType."),
    "margin_type_same": (-4046, "No need to change margin type."),
    "margin_type_position": (-4048, "Margin type cannot be changed if there exists position."),
    "margin_type_orders": (-4047, "Margin type cannot be changed if there exists open orders."),
}


@pytest.mark.parametrize("case", sorted(BINANCE_ERRORS))
def test_refusals_carry_binances_code_and_text(case: str) -> None:
    acct = fresh()
    buy(acct, 0.1)

    def stop(trigger: float, cid: str = "s") -> engine.AlgoOrder:
        return engine.place_stop(acct, BTC, "SELL", 0.1, trigger, 60_000.0, 2, cid, True, False)

    def open_stop_then_flat() -> None:
        stop(58_800.0)
        sell(acct, 0.1, reduce_only=True)
        engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")

    actions: dict[str, Callable[[], object]] = {
        "off_tick": lambda: stop(58_800.05),
        "zero_trigger": lambda: stop(0.0),
        "duplicate_id": lambda: (stop(58_800.0), stop(58_700.0)),
        "immediate": lambda: stop(60_100.0),
        "cancel_ended": lambda: engine.cancel_algo(
            acct, engine.cancel_algo(acct, stop(58_800.0), 3), 4
        ),
        "margin_type_name": lambda: engine.set_margin_type(acct, "BTCUSDT", "cross"),
        "margin_type_same": lambda: engine.set_margin_type(acct, "BTCUSDT", "CROSSED"),
        "margin_type_position": lambda: engine.set_margin_type(acct, "BTCUSDT", "ISOLATED"),
        "margin_type_orders": open_stop_then_flat,
    }  # fmt: skip
    with pytest.raises(SimError) as e:
        actions[case]()
    assert (e.value.code, e.value.msg) == BINANCE_ERRORS[case]
