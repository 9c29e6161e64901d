"""Every endpoint the bot uses, through the real ccxt binanceusdm client over HTTP."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from tests.fixtures.sim import SimHandle

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


async def test_load_markets_gives_precision_and_limits(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    markets = await ex.load_markets()
    assert set(markets) == {
        "BTC/USDT:USDT",
        "ETH/USDT:USDT",
        "SOL/USDT:USDT",
        "XRP/USDT:USDT",
        "DOGE/USDT:USDT",
    }
    m = markets[BTC]
    assert (m["type"], m["linear"], m["settle"], m["active"]) == ("swap", True, "USDT", True)
    assert m["precision"]["amount"] == 0.001
    assert m["precision"]["price"] == 0.1
    assert m["limits"]["amount"]["min"] == 0.001
    assert m["limits"]["cost"]["min"] == 5.0
    assert markets["DOGE/USDT:USDT"]["precision"]["amount"] == 1.0


async def test_time_candles_tickers(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    sim.set_path("ETHUSDT", [3010.0, 2990.0, 3020.0, 3005.0, 3030.0])
    sim.step(5)
    assert await ex.fetch_time() == sim.sim.now_ms()
    candles = await ex.fetch_ohlcv(ETH, "5m", limit=10)
    assert candles, "klines served"
    assert all(c[0] % 300_000 == 0 for c in candles)
    assert max(c[2] for c in candles) == 3030.0
    assert min(c[3] for c in candles) == 2990.0
    assert candles[-1][4] == 3030.0
    ticker = await ex.fetch_ticker(ETH)
    assert ticker["last"] == 3030.0
    assert ticker["quoteVolume"] > 0
    funding = await ex.fetch_funding_rate(BTC)  # GET /fapi/v1/premiumIndex
    assert (funding["markPrice"], funding["fundingRate"]) == (60_000.0, 0.0)
    tickers = await ex.fetch_tickers()
    assert BTC in tickers
    assert tickers[BTC]["last"] == 60_000.0


async def test_market_order_position_balance_history(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    order = await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "e-1"})
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, 60_000.0)
    assert order["clientOrderId"] == "e-1"

    by_id = await ex.fetch_order(order["id"], BTC)
    by_client = await ex.fetch_order(None, BTC, params={"clientOrderId": "e-1"})
    assert by_id["id"] == by_client["id"] == order["id"]

    positions = await ex.fetch_positions([BTC])
    assert len(positions) == 1
    pos = positions[0]
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.01, 60_000.0)

    sim.set_path("BTCUSDT", [61_000.0])
    sim.step()
    positions = await ex.fetch_positions([BTC])
    assert positions[0]["unrealizedPnl"] == pytest.approx(10.0)

    balance = await ex.fetch_balance()
    fee = 0.0005 * 600.0
    assert balance["USDT"]["total"] == pytest.approx(10_000 - fee + 10.0)
    assert balance["USDT"]["used"] == pytest.approx(610.0 / 20)

    await ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    trades = await ex.fetch_my_trades(BTC)
    assert [t["side"] for t in trades] == ["buy", "sell"]
    assert trades[1]["fee"]["cost"] == pytest.approx(0.0005 * 610.0)
    assert float(trades[1]["info"]["realizedPnl"]) == pytest.approx(10.0)
    orders = await ex.fetch_orders(BTC)
    assert [o["status"] for o in orders] == ["closed", "closed"]
    assert await ex.fetch_open_orders(BTC) == []
    assert await ex.fetch_positions([BTC]) == []


async def test_filled_client_id_can_be_reused(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    first = await ex.create_order(ETH, "market", "buy", 0.1, params={"clientOrderId": "same"})
    second = await ex.create_order(ETH, "market", "buy", 0.1, params={"clientOrderId": "same"})
    assert first["id"] != second["id"]
    latest = await ex.fetch_order(None, ETH, params={"clientOrderId": "same"})
    assert latest["id"] == second["id"]


async def test_stop_market_via_algo_order_open_fetch_cancel(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    await ex.create_order(BTC, "market", "buy", 0.01)
    stop = await ex.create_order(
        BTC,
        "market",
        "sell",
        0.01,
        params={"stopPrice": 58_800.0, "reduceOnly": True, "clientOrderId": "sl-1"},
    )
    assert (stop["status"], stop["triggerPrice"], stop["reduceOnly"]) == ("open", 58_800.0, True)
    assert "algoId" in stop["info"]

    opened = await ex.fetch_open_orders(BTC, params={"trigger": True})
    assert [o["clientOrderId"] for o in opened] == ["sl-1"]
    fetched = await ex.fetch_order(None, BTC, params={"clientOrderId": "sl-1", "trigger": True})
    assert fetched["id"] == stop["id"]
    with pytest.raises(ccxt.InvalidOrder):  # -4116: a client id is unique among open orders
        await ex.create_order(
            BTC,
            "market",
            "sell",
            0.01,
            params={"stopPrice": 58_000.0, "reduceOnly": True, "clientOrderId": "sl-1"},
        )

    await ex.cancel_order(stop["id"], BTC, params={"trigger": True})
    gone = await ex.fetch_order(stop["id"], BTC, params={"trigger": True})
    assert gone["status"] == "canceled"
    assert await ex.fetch_open_orders(BTC, params={"trigger": True}) == []
    history = await ex.fetch_orders(BTC, params={"trigger": True})
    assert [o["status"] for o in history] == ["canceled"]
    with pytest.raises(ccxt.OrderNotFound):
        await ex.cancel_order(stop["id"], BTC, params={"trigger": True})


async def test_leverage_and_margin_mode(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    answer = await ex.set_leverage(3, BTC)
    assert answer["leverage"] == 3
    await ex.set_margin_mode("isolated", BTC)
    assert sim.account.margin_type_of("BTCUSDT") == "ISOLATED"
    with pytest.raises(ccxt.MarginModeAlreadySet):
        await ex.set_margin_mode("isolated", BTC)
    await ex.create_order(BTC, "market", "buy", 0.01)
    pos = (await ex.fetch_positions([BTC]))[0]
    assert pos["marginMode"] == "isolated"
    assert pos["initialMargin"] == pytest.approx(200.0)
    with pytest.raises(ccxt.ExchangeError):  # -4048: not with an open position
        await ex.set_margin_mode("cross", BTC)
    with pytest.raises(ccxt.BadRequest):
        await ex.set_leverage(200, BTC)


async def test_insufficient_margin_is_insufficient_funds(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    await ex.set_leverage(3, BTC)
    with pytest.raises(ccxt.InsufficientFunds):
        await ex.create_order(BTC, "market", "buy", 0.6)  # 36 000 notional / 3 > 10 000
    assert sim.account.orders == {}


async def test_order_rules_give_invalid_order(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    with pytest.raises(ccxt.InvalidOrder):  # -2022: nothing to reduce
        await ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder):  # -4164: below the minimum notional
        await ex.create_order("DOGE/USDT:USDT", "market", "buy", 10)
    await ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.OrderImmediatelyFillable):  # -2021: stop above the price
        await ex.create_order(
            BTC, "market", "sell", 0.01, params={"stopPrice": 60_500.0, "reduceOnly": True}
        )


async def test_auth_failures_map_to_ccxt_exceptions(sim: SimHandle) -> None:
    wrong_secret = sim.make_ccxt()
    wrong_secret.secret = "not-the-secret"
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await wrong_secret.fetch_balance()

    wrong_key = sim.make_ccxt()
    wrong_key.apiKey = "someone-else"
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await wrong_key.fetch_balance()

    skewed = sim.make_ccxt()
    skewed.options["timeDifference"] = 3_600_000  # our clock an hour behind both clocks
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        await skewed.fetch_balance()
    await skewed.load_time_difference()  # re-sync against GET /fapi/v1/time
    balance = await skewed.fetch_balance()
    assert balance["USDT"]["total"] == 10_000.0
