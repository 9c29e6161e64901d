"""Exchange client pure parts: client order id guard, closed candles, parsing, ccxt set-up."""

from __future__ import annotations

import logging
from typing import Any

import ccxt.async_support as ccxt
import orjson
import pytest

from shared.config import Settings
from shared.exchange import create_ccxt
from shared.exchange_errors import RETRY_AFTER_ATTR
from shared.exchange_models import (
    OHLCV,
    check_client_order_id,
    closed_candles,
    make_client_order_id,
    parse_balance,
    parse_market,
    parse_order,
    parse_position,
    parse_ticker,
    parse_trade,
    rewrite_api_urls,
)

SIM_URL = "http://127.0.0.1:8911"


@pytest.mark.parametrize(
    "cid", ["a", "tb-0123456789abcdef", "x" * 36, "BTC/USDT:USDT_1.2-3", "A-Z.a:z/0_9"]
)
def test_valid_client_order_ids_pass(cid: str) -> None:
    assert check_client_order_id(cid) == cid


@pytest.mark.parametrize(
    "cid", ["", "x" * 37, "BTC/USDT:USDT|5m|1700000000000|long", "has space", "é"]
)
def test_invalid_client_order_ids_are_refused(cid: str) -> None:
    with pytest.raises(ValueError, match="client order id"):
        check_client_order_id(cid)


def test_make_client_order_id_is_deterministic_valid_and_distinct() -> None:
    signal = "BTC/USDT:USDT|5m|1700000000000|long"
    a = make_client_order_id(signal, "entry")
    assert a == make_client_order_id(signal, "entry")
    assert check_client_order_id(a) == a
    assert a != make_client_order_id(signal, "stop")
    assert a.startswith("tb-")


def test_closed_candles_drop_the_forming_one() -> None:
    tf = 300_000
    rows = [OHLCV(t, 1, 1, 1, 1, 1) for t in (0, tf, 2 * tf)]
    assert [c.open_time for c in closed_candles(rows, tf, 3 * tf)] == [0, tf, 2 * tf]
    assert [c.open_time for c in closed_candles(rows, tf, 3 * tf - 1)] == [0, tf]
    assert closed_candles(rows, tf, tf - 1) == []


def test_rewrite_api_urls_keeps_paths() -> None:
    api = {"fapiPrivate": "https://fapi.binance.com/fapi/v1", "nested": {"x": "https://a.b/c"}}
    out = rewrite_api_urls(api, SIM_URL)
    assert out == {"fapiPrivate": f"{SIM_URL}/fapi/v1", "nested": {"x": f"{SIM_URL}/c"}}


def _sim_exchange() -> Any:
    return create_ccxt(Settings(exchange="sim", sim_host="127.0.0.1", sim_port=8911))


def test_sim_mode_points_every_api_url_at_the_simulator() -> None:
    ex = _sim_exchange()
    urls = [u for u in ex.urls["api"].values() if isinstance(u, str)]
    assert urls
    assert all(u.startswith(SIM_URL + "/") for u in urls)
    assert ex.urls["api"]["fapiPrivateV3"] == f"{SIM_URL}/fapi/v3"
    assert ex.options["fetchCurrencies"] is False


def _raise_for(ex: Any, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    text = orjson.dumps(body).decode()
    url = f"{SIM_URL}/fapi/v1/order"
    ex.handle_errors(status, "Bad", url, "POST", headers, text, body, {}, "")


def test_sim_mode_maps_futures_error_codes() -> None:
    ex = _sim_exchange()
    with pytest.raises(ccxt.InsufficientFunds):
        _raise_for(ex, 400, {"code": -2019, "msg": "Margin is insufficient."}, {})
    with pytest.raises(ccxt.InvalidOrder):
        _raise_for(ex, 400, {"code": -2022, "msg": "ReduceOnly Order is rejected."}, {})
    with pytest.raises(ccxt.InvalidNonce):
        _raise_for(ex, 400, {"code": -1021, "msg": "Timestamp outside of the recvWindow."}, {})


def test_without_the_futures_table_a_local_url_loses_the_mapping() -> None:
    """The reason create_ccxt merges the table: plain ccxt at a local URL gives ExchangeError."""
    ex = ccxt.binanceusdm()
    with pytest.raises(ccxt.ExchangeError) as info:
        _raise_for(ex, 400, {"code": -2019, "msg": "Margin is insufficient."}, {})
    assert not isinstance(info.value, ccxt.InsufficientFunds)


def test_rate_limit_errors_carry_retry_after() -> None:
    ex = _sim_exchange()
    with pytest.raises(ccxt.DDoSProtection) as info:
        _raise_for(ex, 429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": "3"})
    assert getattr(info.value, RETRY_AFTER_ATTR) == 3.0


def test_testnet_uses_binance_demo_trading() -> None:
    settings = Settings(exchange="binanceusdm", testnet=True, api_key="k", api_secret="s")
    ex = create_ccxt(settings)
    assert ex.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com/")
    assert ex.apiKey == "k"


def test_unknown_exchange_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="nosuchexchange"):  # the settings refuse it first
        Settings(exchange="nosuchexchange", api_key="k", api_secret="s", live=True)
    settings = Settings.model_construct(exchange="nosuchexchange")  # as if they had not
    with pytest.raises(ValueError, match="nosuchexchange"):
        create_ccxt(settings)


RAW_SYMBOL = {
    "symbol": "BTCUSDT",
    "pair": "BTCUSDT",
    "contractType": "PERPETUAL",
    "status": "TRADING",
    "baseAsset": "BTC",
    "quoteAsset": "USDT",
    "marginAsset": "USDT",
    "pricePrecision": 2,
    "quantityPrecision": 3,
    "orderTypes": ["MARKET", "STOP_MARKET"],
    "filters": [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.10",
            "maxPrice": "1000000",
            "tickSize": "0.10",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "5"},
    ],
}


def test_parse_market_reads_ccxt_precision_and_limits() -> None:
    m = parse_market(_sim_exchange().parse_market(RAW_SYMBOL))
    assert m.symbol == "BTC/USDT:USDT"
    assert m.id == "BTCUSDT"
    assert (m.price_tick, m.amount_step) == (0.1, 0.001)
    assert (m.min_amount, m.max_amount, m.min_notional) == (0.001, 1000.0, 5.0)


def test_parse_balance_prefers_the_account_fields() -> None:
    # Values that differ from one another, so each field shows where it was read from.
    asset = {"asset": "USDT", "walletBalance": "1005", "unrealizedProfit": "-20",
             "marginBalance": "983"}  # fmt: skip
    raw = {"USDT": {"free": 900.0, "used": 100.0, "total": 1000.0}, "info": {"assets": [asset]}}
    b = parse_balance(raw, "USDT")
    assert (b.currency, b.wallet, b.free, b.used) == ("USDT", 1005, 900, 100)
    assert (b.equity, b.unrealized_pnl) == (983, -20)
    no_margin = parse_balance(raw | {"info": {"assets": [asset | {"marginBalance": None}]}}, "USDT")
    assert no_margin.equity == 1005 - 20  # wallet plus the open PnL
    bare = parse_balance({"USDT": {"free": 900.0, "used": 100.0, "total": 1000.0}}, "USDT")
    assert (bare.wallet, bare.equity, bare.unrealized_pnl) == (1000, 1000, 0)  # ccxt's total


def test_a_binance_stop_order_reads_whole_through_ccxt() -> None:
    ex = _with_btc_market()
    raw = {  # GET /fapi/v1/order of the market order a triggered stop became
        "orderId": 25851813, "symbol": "BTCUSDT", "status": "FILLED",
        "clientOrderId": "tb-abc", "price": "0", "avgPrice": "58790.10", "origQty": "0.010",
        "executedQty": "0.010", "cumQuote": "587.901", "timeInForce": "GTC",
        "type": "MARKET", "reduceOnly": True, "closePosition": False, "side": "SELL",
        "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "origType": "MARKET", "time": 1720736417660, "updateTime": 1720736417661,
    }  # fmt: skip
    order = parse_order(ex.parse_order(raw, ex.markets["BTC/USDT:USDT"]))
    assert (order.id, order.client_order_id, order.symbol) == (
        "25851813",
        "tb-abc",
        "BTC/USDT:USDT",
    )
    assert (order.side, order.type, order.status) == ("sell", "market", "closed")
    assert (order.amount, order.filled, order.average) == (0.01, 0.01, 58790.1)
    assert (order.reduce_only, order.timestamp, order.is_stop) == (True, 1720736417660, False)
    assert order.triggered_order_id is None


def test_parse_position_skips_flat_and_reads_side() -> None:
    assert parse_position({"symbol": "BTC/USDT:USDT", "contracts": 0}) is None
    p = parse_position(
        {"symbol": "BTC/USDT:USDT", "contracts": 0.5, "info": {"positionAmt": "-0.5"}}
    )
    assert p is not None
    assert (p.side, p.contracts) == ("short", 0.5)


# Binance positionRisk v3 (GET /fapi/v3/positionRisk): it has no leverage field.
RAW_SHORT_POSITION = {
    "symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "-0.030",
    "entryPrice": "60000.0", "breakEvenPrice": "60024.0", "markPrice": "59000.00000000",
    "unRealizedProfit": "30.00000000", "liquidationPrice": "79000.12", "isolatedMargin": "0",
    "notional": "-1770.00000000", "marginAsset": "USDT", "isolatedWallet": "0",
    "initialMargin": "177.00000000", "maintMargin": "7.08", "positionInitialMargin": "177.0",
    "openOrderInitialMargin": "0", "adl": 2, "bidNotional": "0", "askNotional": "0",
    "updateTime": 1720736417660,
}  # fmt: skip
# Binance userTrades (GET /fapi/v1/userTrades).
RAW_TRADE = {
    "buyer": False, "commission": "0.07819010", "commissionAsset": "USDT", "id": 698759,
    "maker": False, "orderId": 25851813, "price": "7819.01", "qty": "0.002",
    "quoteQty": "15.63802", "realizedPnl": "-0.91539999", "side": "SELL",
    "positionSide": "SHORT", "symbol": "BTCUSDT", "time": 1569514978020,
}  # fmt: skip


def _with_btc_market() -> Any:
    ex = _sim_exchange()
    ex.set_markets([ex.parse_market(RAW_SYMBOL)])
    return ex


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_binance_position_reads_whole_through_ccxt(side: str) -> None:
    sign = "" if side == "long" else "-"
    raw = RAW_SHORT_POSITION | {
        "positionAmt": sign + "0.030", "notional": sign + "1770.00000000",
        "unRealizedProfit": ("-" if side == "long" else "") + "30.00000000",
    }  # fmt: skip
    ex = _with_btc_market()
    p = parse_position(ex.parse_position_risk(raw, ex.markets["BTC/USDT:USDT"]))
    assert p is not None
    assert (p.symbol, p.side, p.contracts, p.entry_price) == ("BTC/USDT:USDT", side, 0.03, 60000.0)
    assert (p.mark_price, p.unrealized_pnl) == (59000.0, -30.0 if side == "long" else 30.0)
    assert (p.leverage, p.margin_mode, p.liquidation_price) == (10.0, "cross", 79000.12)


@pytest.mark.parametrize(
    ("fields", "side"),
    [
        ({"side": "long", "info": {}}, "long"),  # ccxt's side wins ...
        ({"side": "short", "info": {"positionAmt": "1"}}, "short"),  # ... even over the amount
        ({"side": None, "info": {"positionAmt": "0.5"}}, "long"),  # without it, the sign
        ({"side": None, "info": {"positionAmt": "-0.5"}}, "short"),
    ],
)
def test_a_position_side_comes_from_ccxt_then_from_the_signed_amount(
    fields: dict[str, Any], side: str
) -> None:
    p = parse_position({"symbol": "BTC/USDT:USDT", "contracts": 0.5} | fields)
    assert p is not None
    assert p.side == side


@pytest.mark.parametrize(
    ("fields", "leverage"),
    [
        ({"leverage": 7, "notional": 100.0, "initialMargin": 50.0}, 7.0),  # given: taken
        ({"notional": -100.0, "initialMargin": 3.0}, 33.333333),  # v3: notional / margin
        ({"notional": 100.0, "initialMargin": 0.0}, None),
        ({"initialMargin": 3.0}, None),
        ({"notional": 100.0}, None),
    ],
)
def test_a_position_leverage_is_read_or_worked_out(
    fields: dict[str, Any], leverage: float | None
) -> None:
    p = parse_position({"symbol": "BTC/USDT:USDT", "contracts": 1.0, "side": "long"} | fields)
    assert p is not None
    assert p.leverage == leverage


def test_a_binance_trade_reads_whole_through_ccxt() -> None:
    ex = _with_btc_market()
    t = parse_trade(ex.parse_trade(RAW_TRADE, ex.markets["BTC/USDT:USDT"]))
    assert (t.id, t.order_id, t.symbol, t.side) == ("698759", "25851813", "BTC/USDT:USDT", "sell")
    assert (t.price, t.amount, t.timestamp) == (7819.01, 0.002, 1569514978020)
    assert (t.fee, t.fee_currency, t.realized_pnl) == (0.0781901, "USDT", -0.91539999)


def test_ccxt_request_dumps_never_reach_the_log() -> None:
    logging.getLogger("ccxt").setLevel(logging.DEBUG)
    _sim_exchange()
    assert logging.getLogger("ccxt.base.exchange").getEffectiveLevel() >= logging.INFO


def test_a_ticker_takes_binances_own_last_price_and_its_time() -> None:
    row = {
        "symbol": "BTC/USDT:USDT", "timestamp": 1_700_000_000_123, "last": 59_000.0,
        "quoteVolume": 1.25e9, "info": {"lastPrice": "60000.50"},
    }  # fmt: skip
    t = parse_ticker(row)
    assert (t.symbol, t.last, t.quote_volume, t.timestamp) == (
        "BTC/USDT:USDT", 60_000.5, 1.25e9, 1_700_000_000_123,
    )  # fmt: skip
    # A zero lastPrice stays zero (ccxt would rebuild an approximate one from the change %).
    assert parse_ticker({**row, "info": {"lastPrice": "0.00"}}).last == 0.0


def test_a_ticker_without_binances_fields_uses_ccxts() -> None:
    t = parse_ticker({"symbol": "ETH/USDT:USDT", "last": 3_000.25, "info": None})
    assert (t.symbol, t.last, t.quote_volume, t.timestamp) == (
        "ETH/USDT:USDT", 3_000.25, None, None,
    )  # fmt: skip
    assert parse_ticker({"symbol": "ETH/USDT:USDT", "last": 3.5, "info": {}}).last == 3.5


def test_a_trade_with_nothing_but_an_id_reads_as_zeros() -> None:
    t = parse_trade({"id": 7})
    assert (t.id, t.order_id, t.price, t.amount, t.fee, t.realized_pnl, t.timestamp) == (
        "7", None, 0.0, 0.0, 0.0, None, 0,
    )  # fmt: skip


def test_a_market_reads_every_limit_and_whether_it_trades() -> None:
    m = {
        "symbol": "SOL/USDT:USDT", "id": "SOLUSDT", "base": "SOL", "quote": "USDT",
        "precision": {"price": 0.01, "amount": 0.1},
        "limits": {
            "amount": {"min": 0.1, "max": 5_000.0},
            "price": {"min": 0.42, "max": 6_857.0},
            "cost": {"min": 5.0},
        },
    }  # fmt: skip
    info = parse_market(m)
    assert (info.active, info.price_tick, info.amount_step) == (True, 0.01, 0.1)
    assert (info.min_amount, info.max_amount, info.min_notional) == (0.1, 5_000.0, 5.0)
    assert (info.min_price, info.max_price) == (0.42, 6_857.0)
    assert not parse_market({**m, "active": False}).active  # delisted or settling
    bare = parse_market({"symbol": "X/USDT:USDT", "id": "XUSDT", "limits": {"price": None}})
    assert (bare.active, bare.min_price, bare.max_price) == (True, None, None)
    assert bare.price_tick is None


def test_a_bad_client_order_id_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="must be 1-36 characters") as err:
        check_client_order_id("has space")
    assert str(err.value) == (
        "client order id 'has space' must be 1-36 characters of "
        "A-Z a-z 0-9 . : / _ - (derive one with make_client_order_id)"
    )


def test_an_empty_number_reads_as_missing() -> None:
    t = parse_ticker({"symbol": "X/USDT:USDT", "last": 1.0, "quoteVolume": "", "info": {}})
    assert t.quote_volume is None
