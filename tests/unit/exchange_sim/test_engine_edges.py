"""The matching engine at its edges: values exactly at a limit, stop ordering, exact fields."""

from __future__ import annotations

import math

import pytest

from services.exchange_sim import engine
from services.exchange_sim.engine import Account, SimError, spec_for

BTC = spec_for("BTCUSDT", 60_000.0)  # price step 0.1, quantity step 0.001
ETH = spec_for("ETHUSDT", 3_000.0)  # price step 0.01, quantity step 0.01
DOGE = spec_for("DOGEUSDT", 0.15)  # price step 0.000001, whole coins
PRICES = {"BTCUSDT": 60_000.0}
POSITION_LIMIT = "Exceeded the maximum allowable position at current leverage."


def fresh(wallet: float = 10_000.0) -> Account:
    return Account(wallet=wallet, fee_rate=0.0005)


def buy(acct: Account, qty: float, price: float = 60_000.0) -> engine.Order:
    return engine.fill_market(acct, BTC, "BUY", qty, price, {"BTCUSDT": price}, 1, "c")


def stop(
    acct: Account,
    side: str,
    trigger: float,
    qty: float = 0.1,
    reduce_only: bool = True,
    cid: str = "s",
    price: float = 60_000.0,
) -> engine.AlgoOrder:
    return engine.place_stop(acct, BTC, side, qty, trigger, price, 2, cid, reduce_only, False)


# --- maintenance margin brackets ---


@pytest.mark.parametrize(
    ("notional", "rate"),
    [
        (0.0, 0.004),
        (50_000.0, 0.004),  # exactly at the first cap: still the first bracket
        (50_000.01, 0.005),
        (250_000.0, 0.005),
        (1_000_000.0, 0.01),
        (5_000_000.0, 0.025),
        (20_000_000.0, 0.05),
        (50_000_000.0, 0.1),
        (1_000_000_000.0, 0.125),  # the last cap
        (2_000_000_000.0, 0.125),  # beyond every cap: the last bracket's rate
    ],
)
def test_maint_rate_bracket_includes_its_cap(notional: float, rate: float) -> None:
    assert engine.maint_rate(notional) == rate


# --- leverage ---


@pytest.mark.parametrize("leverage", [1, 2, 124, 125])
def test_leverage_one_through_125_is_accepted(leverage: int) -> None:
    acct = fresh()
    engine.set_leverage(acct, "BTCUSDT", leverage, 60_000.0)
    assert acct.leverage_of("BTCUSDT") == leverage


@pytest.mark.parametrize("leverage", [0, -1, 126])
def test_leverage_off_1_to_125_is_refused(leverage: int) -> None:
    acct = fresh()
    with pytest.raises(SimError) as e:
        engine.set_leverage(acct, "BTCUSDT", leverage, 60_000.0)
    assert (e.value.code, e.value.msg) == (-4028, f"Leverage {leverage} is not valid")
    assert acct.leverage_of("BTCUSDT") == engine.DEFAULT_LEVERAGE


def test_leverage_is_refused_only_when_the_position_exceeds_its_cap() -> None:
    acct = fresh()
    buy(acct, 1.0, 50_000.0)  # 50 000 notional at 20x
    # A tick higher the position is worth 50 000.1, over the 50 000 cap of 125x.
    with pytest.raises(SimError) as e:
        engine.set_leverage(acct, "BTCUSDT", 125, 50_000.1)
    assert (e.value.code, e.value.msg, e.value.status) == (-2027, POSITION_LIMIT, 400)
    assert str(e.value) == f"-2027 {POSITION_LIMIT}"
    assert acct.leverage_of("BTCUSDT") == 20
    engine.set_leverage(acct, "BTCUSDT", 125, 50_000.0)  # exactly at the cap: allowed
    assert acct.leverage_of("BTCUSDT") == 125


def test_leverage_checks_its_own_symbols_position() -> None:
    acct = fresh()
    buy(acct, 1.0, 50_000.0)
    engine.set_leverage(acct, "ETHUSDT", 125, 50_000.1)  # no ETH position: no limit
    assert (acct.leverage_of("ETHUSDT"), acct.leverage_of("BTCUSDT")) == (125, 20)


def test_sim_error_text_is_code_then_message() -> None:
    err = SimError(-2019, "Margin is insufficient.")
    assert str(err) == "-2019 Margin is insufficient."
    assert (err.code, err.msg, err.status) == (-2019, "Margin is insufficient.", 400)


# --- placing stops ---


def test_stop_fields_as_placed() -> None:
    acct = fresh()
    algo = stop(acct, "SELL", 58_800.0)
    assert algo.working_type == "CONTRACT_PRICE"  # Binance's default workingType
    assert (algo.create_time, algo.update_time, algo.trigger_time) == (2, 2, 0)
    assert (algo.quantity, algo.trigger_price, algo.status) == (0.1, 58_800.0, "NEW")
    mark = engine.place_stop(
        acct, BTC, "SELL", 0.1, 58_700.0, 60_000.0, 5, "m", True, False, "MARK_PRICE"
    )
    assert (mark.working_type, mark.create_time, mark.update_time) == ("MARK_PRICE", 5, 5)


@pytest.mark.parametrize("qty", [0.0, 0.1, 1.0])
def test_close_position_stop_carries_no_quantity(qty: float) -> None:
    acct = fresh()
    algo = engine.place_stop(acct, BTC, "SELL", qty, 58_800.0, 60_000.0, 2, "s", False, True)
    assert (algo.quantity, algo.close_position) == (0.0, True)


def test_stop_trigger_below_one_is_accepted() -> None:
    acct = fresh()
    algo = engine.place_stop(acct, DOGE, "SELL", 100.0, 0.14, 0.15, 2, "d", True, False)
    assert algo.trigger_price == 0.14
    up = engine.place_stop(acct, DOGE, "BUY", 100.0, 1.0, 0.15, 2, "u", True, False)
    assert up.trigger_price == 1.0


def test_buy_stop_at_the_price_would_trigger_at_once() -> None:
    acct = fresh()
    with pytest.raises(SimError) as e:
        stop(acct, "BUY", 60_000.0)
    assert (e.value.code, e.value.msg) == (-2021, "Order would immediately trigger.")
    assert acct.algo_orders == {}
    assert stop(acct, "BUY", 60_000.1).status == "NEW"  # a tick above: fine


# --- triggering stops ---


def test_spawned_order_has_its_own_client_id_and_the_stop_price() -> None:
    acct = fresh()
    buy(acct, 0.1)
    algo = stop(acct, "SELL", 58_800.0)
    engine.trigger_stops(acct, BTC, 57_000.0, {"BTCUSDT": 57_000.0}, 4)
    spawned = acct.orders[algo.actual_order_id]
    assert spawned.client_order_id == f"sim-algo-{algo.algo_id}"
    assert (spawned.stop_price, spawned.avg_price, spawned.orig_type) == (
        58_800.0,
        58_800.0,
        "STOP_MARKET",
    )
    assert (spawned.reduce_only, spawned.time, spawned.executed_qty) == (True, 4, 0.1)


def test_a_missed_stop_or_another_symbols_stop_does_not_stop_the_scan() -> None:
    acct = fresh()
    buy(acct, 0.2)
    low = stop(acct, "SELL", 58_000.0, cid="low")
    eth = engine.place_stop(acct, ETH, "SELL", 1.0, 2_900.0, 3_000.0, 2, "e", True, False)
    high = stop(acct, "SELL", 59_000.0, cid="high")
    assert low.algo_id < eth.algo_id < high.algo_id
    # 58 500 misses the lower stop (placed first) and reaches the higher one.
    assert engine.trigger_stops(acct, BTC, 58_500.0, {"BTCUSDT": 58_500.0}, 3) == [high]
    assert (low.status, eth.status, high.status) == ("NEW", "NEW", "FINISHED")
    assert acct.position("BTCUSDT").amount == pytest.approx(0.1)
    assert engine.trigger_stops(acct, BTC, 57_000.0, {"BTCUSDT": 57_000.0}, 4) == [low]
    assert (low.status, low.actual_price, eth.status) == ("FINISHED", 58_000.0, "NEW")


def test_a_cancelled_stop_first_does_not_stop_the_scan() -> None:
    acct = fresh()
    buy(acct, 0.1)
    engine.cancel_algo(acct, stop(acct, "SELL", 59_000.0, cid="a"), 3)
    live = stop(acct, "SELL", 58_000.0, cid="b")
    assert engine.trigger_stops(acct, BTC, 57_000.0, {"BTCUSDT": 57_000.0}, 4) == [live]
    assert live.status == "FINISHED"


def test_two_stops_hit_at_once_fire_in_algo_id_order() -> None:
    acct = fresh()
    buy(acct, 0.1)
    first = stop(acct, "SELL", 59_000.0, cid="first")
    second = stop(acct, "SELL", 58_000.0, cid="second")
    # Saved and loaded state may list the stops in any order; they still fire by algo id.
    data = acct.to_dict()
    data["algo_orders"] = dict(reversed(list(data["algo_orders"].items())))
    loaded = Account.from_dict(data)
    fired = engine.trigger_stops(loaded, BTC, 57_000.0, {"BTCUSDT": 57_000.0}, 4)
    assert [a.algo_id for a in fired] == [first.algo_id, second.algo_id]
    one, two = fired
    # The first closes the whole long at its trigger; the second finds nothing to reduce.
    assert (one.status, one.actual_price, two.status, two.actual_order_id) == (
        "FINISHED",
        59_000.0,
        "EXPIRED",
        0,
    )
    assert loaded.trades[-1].realized_pnl == pytest.approx(-100.0)
    assert loaded.position("BTCUSDT").amount == 0


def test_a_triggered_stop_checks_margin_at_its_trigger_price() -> None:
    acct = fresh(553.0)
    buy(acct, 0.1)  # wallet 550 after the 3 USDT fee
    algo = stop(acct, "BUY", 61_000.0, reduce_only=False)
    # At 61 000: 550 + 100 unrealised - 305 margin = 345 available >= 305 + 3.05 fee.
    # At the stale 60 000 the caller passes it would be 250: too little.
    fired = engine.trigger_stops(acct, BTC, 61_000.0, {"BTCUSDT": 60_000.0}, 3)
    assert fired == [algo]
    assert (algo.status, algo.actual_price) == ("FINISHED", 61_000.0)
    pos = acct.position("BTCUSDT")
    assert pos.amount == 0.2
    assert pos.entry_price == pytest.approx(60_500.0)
    assert acct.wallet == pytest.approx(546.95)


def test_a_stop_whose_fill_lacks_margin_ends_rejected() -> None:
    acct = fresh(400.0)
    buy(acct, 0.1)  # wallet 397: at 61 000, 192 available < 308.05 needed
    algo = stop(acct, "BUY", 61_000.0, reduce_only=False)
    fired = engine.trigger_stops(acct, BTC, 61_000.0, {"BTCUSDT": 61_000.0}, 3)
    assert fired == [algo]
    assert (algo.status, algo.actual_order_id, algo.trigger_time, algo.update_time) == (
        "REJECTED",
        0,
        3,
        3,
    )
    assert len(acct.orders) == 1  # only the opening buy
    assert acct.position("BTCUSDT").amount == 0.1


# --- state ---


def test_settings_round_trip_through_dict() -> None:
    acct = fresh()
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    engine.set_leverage(acct, "BTCUSDT", 10, 60_000.0)
    buy(acct, 0.1)
    again = Account.from_dict(acct.to_dict())
    assert again.margin_type_of("BTCUSDT") == "ISOLATED"
    assert again.leverage_of("BTCUSDT") == 10
    assert again.position("BTCUSDT").isolated_wallet == pytest.approx(600.0)
    assert again == acct


# --- fills and positions ---


def test_a_plain_market_order_has_type_market_and_no_stop_price() -> None:
    acct = fresh()
    order = buy(acct, 0.1)
    assert (order.orig_type, order.stop_price, order.status) == ("MARKET", 0.0, "FILLED")


def test_ids_are_one_sequence_stepping_by_one() -> None:
    acct = fresh()
    assert acct.next_id == 1_000_001
    order = buy(acct, 0.1)
    algo = stop(acct, "SELL", 58_800.0)
    assert (order.order_id, acct.trades[0].trade_id, algo.algo_id) == (
        1_000_002,
        1_000_003,
        1_000_004,
    )


def test_a_full_close_leaves_no_entry_price_or_margin() -> None:
    for mtype in ("CROSSED", "ISOLATED"):
        acct = fresh()
        if mtype == "ISOLATED":
            engine.set_margin_type(acct, "BTCUSDT", mtype)
        buy(acct, 0.1)
        engine.fill_market(acct, BTC, "SELL", 0.1, 61_000.0, {"BTCUSDT": 61_000.0}, 2, "c")
        pos = acct.position("BTCUSDT")
        assert (pos.amount, pos.entry_price, pos.isolated_wallet, pos.update_time) == (
            0.0,
            0.0,
            0.0,
            2,
        ), mtype


def test_isolated_margin_adds_up_and_shrinks_in_proportion() -> None:
    acct = fresh()
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    buy(acct, 0.1, 60_000.0)  # 300 margin at 20x
    buy(acct, 0.1, 62_000.0)  # + 310
    assert acct.position("BTCUSDT").isolated_wallet == pytest.approx(610.0)
    # Closing a quarter of the 0.2 long frees a quarter of the margin.
    engine.fill_market(acct, BTC, "SELL", 0.05, 61_000.0, {"BTCUSDT": 61_000.0}, 2, "c")
    pos = acct.position("BTCUSDT")
    assert pos.amount == pytest.approx(0.15)
    assert pos.isolated_wallet == pytest.approx(457.5)
    assert pos.entry_price == pytest.approx(61_000.0)


def test_one_lot_step_left_stays_open_however_small_the_step() -> None:
    tiny = engine.SymbolSpec("TINYUSDT", "TINY", 1, 12, min_notional=0.0)
    acct = fresh()
    acct.positions["TINYUSDT"] = engine.Position(2e-12, 60_000.0)
    engine.fill_market(
        acct, tiny, "SELL", 1e-12, 60_000.0, {"TINYUSDT": 60_000.0}, 2, "c", reduce_only=True
    )
    pos = acct.position("TINYUSDT")
    assert (pos.amount, pos.entry_price) == (1e-12, 60_000.0)


def test_close_position_with_nothing_to_close_is_refused() -> None:
    acct = fresh()
    for holding in (0.0, 0.1):  # flat, then long: a closePosition BUY reduces neither
        if holding:
            buy(acct, holding)
        with pytest.raises(SimError) as e:
            engine.fill_market(acct, BTC, "BUY", 0.0, 60_000.0, PRICES, 2, "c", close_position=True)
        assert (e.value.code, e.value.msg) == (-2022, "ReduceOnly Order is rejected.")
    assert len(acct.orders) == 1


def test_a_close_position_stop_with_no_position_expires() -> None:
    acct = fresh()
    algo = engine.place_stop(acct, BTC, "SELL", 0.0, 59_000.0, 60_000.0, 2, "s", False, True)
    assert engine.trigger_stops(acct, BTC, 58_000.0, {"BTCUSDT": 58_000.0}, 3) == [algo]
    assert (algo.status, algo.actual_order_id, acct.orders) == ("EXPIRED", 0, {})


@pytest.mark.parametrize(
    ("leverage", "cap"),
    [
        (1, 1_000_000_000.0),
        (2, 50_000_000.0),
        (3, 20_000_000.0),
        (20, 1_000_000.0),
        (21, 250_000.0),
        (50, 250_000.0),
        (51, 50_000.0),
        (125, 50_000.0),
        (126, 0.0),  # no bracket allows more than 125x: nothing may be held
    ],
)
def test_max_notional_per_leverage(leverage: int, cap: float) -> None:
    assert engine.max_notional(leverage) == cap


# --- symbol rules and quantities ---


@pytest.mark.parametrize(
    ("price", "price_precision", "quantity_precision"),
    [
        (150_000.0, 1, 3),  # both clamps: at most 3 quantity decimals, at least 1 price decimal
        (60_000.0, 1, 3),
        (3_000.0, 2, 2),
        (100.0, 3, 1),
        (10.0, 4, 0),
        (0.15, 6, 0),
        (0.001234, 7, 0),  # exactly 7 price decimals before the clamp
        (0.00001234, 7, 0),  # at most 7 price decimals
    ],
)
def test_spec_for_precisions(price: float, price_precision: int, quantity_precision: int) -> None:
    spec = spec_for("XUSDT", price)
    assert (spec.price_precision, spec.quantity_precision) == (price_precision, quantity_precision)


QTY_ERRORS = {
    0.0: (-4003, "Quantity less than or equal to zero."),
    -0.1: (-4003, "Quantity less than or equal to zero."),
    0.0005: (-1111, "Precision is over the maximum defined for this asset."),
    10_000.001: (-1013, "Filter failure: LOT_SIZE"),
}


@pytest.mark.parametrize("qty", sorted(QTY_ERRORS))
def test_quantity_refusals_carry_binances_code_and_text(qty: float) -> None:
    with pytest.raises(SimError) as e:
        engine.check_quantity(BTC, qty)
    assert (e.value.code, e.value.msg) == QTY_ERRORS[qty]


def test_quantity_limits_are_inclusive() -> None:
    engine.check_quantity(BTC, 0.001)  # one step: the minimum
    engine.check_quantity(BTC, 10_000.0)  # the maximum
    engine.check_quantity(DOGE, 1.0)
    engine.check_quantity(DOGE, 1_000_000.0)
    with pytest.raises(SimError) as e:
        engine.check_quantity(DOGE, 1_000_001.0)
    assert e.value.code == -1013


def test_a_millionth_of_a_whole_coin_is_over_precision() -> None:
    # 0.000001 DOGE (whole coins only): exactly one millionth off the step is off the step.
    assert not engine.on_step(1e-6, 0)
    with pytest.raises(SimError) as e:
        engine.check_quantity(DOGE, 1e-6)
    assert e.value.code == -1111


def test_a_positive_quantity_of_zero_steps_is_refused() -> None:
    # Within the float tolerance of zero steps, yet positive: never an order of nothing.
    for qty in (1e-10, 1e-12):
        with pytest.raises(SimError) as e:
            engine.check_quantity(BTC, qty)
        assert e.value.code in (-1111, -1013), qty


# --- balances and records ---


def test_isolated_pnl_stays_out_of_the_available_balance() -> None:
    acct = fresh()
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    buy(acct, 0.1)  # wallet 9 997, 300 isolated
    # At 61 000 a cross long would add 100 PnL and hold 305 margin; isolated holds its 300.
    assert acct.available_balance({"BTCUSDT": 61_000.0}) == pytest.approx(9_697.0)
    cross = fresh()
    buy(cross, 0.1)
    assert cross.available_balance({"BTCUSDT": 61_000.0}) == pytest.approx(9_792.0)


def test_each_fill_records_one_trade() -> None:
    acct = fresh()
    buy(acct, 0.2)
    order = engine.fill_market(acct, BTC, "SELL", 0.1, 61_000.0, {"BTCUSDT": 61_000.0}, 7, "x")
    trade = acct.trades[-1]
    fields = (trade.trade_id, trade.order_id, trade.symbol, trade.side, trade.price, trade.qty)
    assert fields == (order.order_id + 1, order.order_id, "BTCUSDT", "SELL", 61_000.0, 0.1)
    assert trade.commission == pytest.approx(3.05)
    assert trade.realized_pnl == pytest.approx(100.0)
    assert trade.time == 7
    assert order.close_position is False
    assert order.reduce_only is False


def test_a_close_position_stop_spawns_a_close_position_order() -> None:
    acct = fresh()
    buy(acct, 0.2)
    algo = engine.place_stop(acct, BTC, "SELL", 0.0, 59_000.0, 60_000.0, 2, "s", False, True)
    engine.trigger_stops(acct, BTC, 58_000.0, {"BTCUSDT": 58_000.0}, 3)
    spawned = acct.orders[algo.actual_order_id]
    assert (spawned.close_position, spawned.reduce_only) == (True, False)
    assert (spawned.orig_qty, spawned.executed_qty) == (0.2, 0.2)


# --- fill_market's checks at their limits ---


def test_reduce_only_refusal_text() -> None:
    with pytest.raises(SimError) as e:
        engine.fill_market(fresh(), BTC, "SELL", 0.1, 60_000.0, PRICES, 1, "c", reduce_only=True)
    assert (e.value.code, e.value.msg) == (-2022, "ReduceOnly Order is rejected.")


def test_min_notional_is_inclusive() -> None:
    acct = fresh()
    assert buy(acct, 0.001, 5_000.0).executed_qty == 0.001  # 5 USDT exactly
    with pytest.raises(SimError) as e:
        buy(acct, 0.001, 4_999.9)
    assert (e.value.code, e.value.msg) == (
        -4164,
        "Order's notional must be no smaller than 5 (unless you choose reduce only).",
    )


def test_position_limit_is_inclusive_and_counts_the_position_after_the_fill() -> None:
    acct = fresh()
    engine.set_leverage(acct, "BTCUSDT", 125, 50_000.0)
    buy(acct, 1.0, 50_000.0)  # 50 000 exactly: the 125x cap
    with pytest.raises(SimError) as e:
        buy(acct, 0.001, 50_000.0)
    assert (e.value.code, e.value.msg) == (-2027, POSITION_LIMIT)
    # A flip closes the long first: 1.8 sold leaves a 0.8 short (40 000), within the cap.
    engine.fill_market(acct, BTC, "SELL", 1.8, 50_000.0, {"BTCUSDT": 50_000.0}, 2, "c")
    assert acct.position("BTCUSDT").amount == pytest.approx(-0.8)


def test_closing_needs_no_free_margin() -> None:
    acct = fresh(303.0)
    engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    buy(acct, 0.1)  # every USDT left is in the isolated wallet: 0 available
    assert acct.available_balance(PRICES) == pytest.approx(0.0)
    engine.fill_market(acct, BTC, "SELL", 0.1, 60_000.0, PRICES, 2, "c")  # still closes
    assert acct.position("BTCUSDT").amount == 0
    assert acct.wallet == pytest.approx(297.0)


@pytest.mark.parametrize(
    ("isolated", "wallet", "fills"),
    [(False, 310.0, True), (False, 308.0, False), (True, 609.5, True), (True, 608.5, False)],
)
def test_a_flip_needs_the_margin_of_its_new_side(
    isolated: bool, wallet: float, fills: bool
) -> None:
    # Long 0.1 at 60 000 (300 margin, 3 fee): wallet - 303 free; selling 0.2 opens a 0.1
    # short that needs 300 margin + 6 fee. Cross: the 300 the closing part frees counts, so
    # it fills when wallet - 3 >= 306. Isolated (docs/exchange.md): only cross margin freed
    # counts, so the 306 must be free already: wallet - 303 >= 306.
    acct = fresh(wallet)
    if isolated:
        engine.set_margin_type(acct, "BTCUSDT", "ISOLATED")
    buy(acct, 0.1)
    if fills:
        engine.fill_market(acct, BTC, "SELL", 0.2, 60_000.0, PRICES, 2, "c")
        assert acct.position("BTCUSDT").amount == pytest.approx(-0.1)
    else:
        with pytest.raises(SimError) as e:
            engine.fill_market(acct, BTC, "SELL", 0.2, 60_000.0, PRICES, 2, "c")
        assert (e.value.code, e.value.msg) == (-2019, "Margin is insufficient.")


def test_an_opening_fill_realizes_plus_zero() -> None:
    # userTrades prints realizedPnl with fmt: -0.0 would read "-0".
    acct = fresh()
    buy(acct, 0.1)
    assert math.copysign(1.0, acct.trades[-1].realized_pnl) == 1.0
