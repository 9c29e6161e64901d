"""Engine objects as Binance USD-M JSON payloads (Binance field names and string formats)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.exchange_sim.engine import (
    BRACKETS,
    Account,
    AlgoOrder,
    Order,
    SymbolSpec,
    Trade,
    maint_rate,
    max_notional,
)
from services.exchange_sim.feed import Kline, Ticker24h

ORDER_TYPES = ["MARKET", "STOP_MARKET"]
Json = dict[str, Any]


def fmt(value: float, digits: int = 8) -> str:
    """Format a number as Binance does: a decimal string without exponent."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fixed(value: float, digits: int) -> str:
    """Format with a fixed number of decimals (prices and quantities at market precision)."""
    return f"{value:.{digits}f}"


def exchange_info(specs: Mapping[str, SymbolSpec], now: int) -> Json:
    """Return GET /fapi/v1/exchangeInfo for the simulated perpetuals."""
    return {
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_symbol_info(s) for s in specs.values()],
    }


def _symbol_info(s: SymbolSpec) -> Json:
    """Return one symbol entry of exchangeInfo."""
    tick, step = fixed(s.tick_size, s.price_precision), fixed(s.step_size, s.quantity_precision)
    return {
        "symbol": s.symbol,
        "pair": s.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": s.base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": s.price_precision,
        "quantityPrecision": s.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "10000000",
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": fmt(s.max_qty), "stepSize": step},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": step,
                "maxQty": fmt(s.max_qty),
                "stepSize": step,
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": fmt(s.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        "permissionSets": ["GRID", "COPY"],
    }


def kline_row(k: Kline, interval_ms: int, spec: SymbolSpec) -> list[Any]:
    """Return one kline array: open time, OHLC, volume, close time, quote volume, trades, ..."""
    p, q = spec.price_precision, spec.quantity_precision
    quote = k.volume * (k.open + k.close) / 2
    return [
        k.open_time,
        fixed(k.open, p),
        fixed(k.high, p),
        fixed(k.low, p),
        fixed(k.close, p),
        fixed(k.volume, q),
        k.open_time + interval_ms - 1,
        fmt(quote, 4),
        max(1, int(k.volume)),
        fixed(k.volume / 2, q),
        fmt(quote / 2, 4),
        "0",
    ]


def ticker_24h(spec: SymbolSpec, t: Ticker24h) -> Json:
    """Return one GET /fapi/v1/ticker/24hr entry."""
    p = spec.price_precision
    change = t.last - t.open
    return {
        "symbol": spec.symbol,
        "priceChange": fixed(change, p),
        "priceChangePercent": fixed(100 * change / t.open if t.open else 0.0, 3),
        "weightedAvgPrice": fixed(t.quote_volume / t.volume if t.volume else t.last, p),
        "lastPrice": fixed(t.last, p),
        "lastQty": fixed(spec.step_size, spec.quantity_precision),
        "openPrice": fixed(t.open, p),
        "highPrice": fixed(t.high, p),
        "lowPrice": fixed(t.low, p),
        "volume": fixed(t.volume, spec.quantity_precision),
        "quoteVolume": fmt(t.quote_volume, 2),
        "openTime": t.open_time,
        "closeTime": t.close_time,
        "firstId": 1,
        "lastId": 1,
        "count": 1,
    }


def order(o: Order, spec: SymbolSpec, update_time: int | None = None) -> Json:
    """Return a regular order as GET/POST /fapi/v1/order answer it."""
    p, q = spec.price_precision, spec.quantity_precision
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": "0",
        "avgPrice": fixed(o.avg_price, p),
        "origQty": fixed(o.orig_qty, q),
        "executedQty": fixed(o.executed_qty, q),
        "cumQty": fixed(o.executed_qty, q),
        "cumQuote": fmt(o.executed_qty * o.avg_price, 8),
        "timeInForce": "GTC",
        "type": "MARKET",
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": fixed(o.stop_price, p),
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": o.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "time": o.time,
        "updateTime": o.time if update_time is None else update_time,
    }


def algo_order(a: AlgoOrder, spec: SymbolSpec) -> Json:
    """Return a conditional order as the /fapi/v1/algoOrder endpoints answer it."""
    p, q = spec.price_precision, spec.quantity_precision
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": "STOP_MARKET",
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": fixed(a.quantity, q),
        "algoStatus": a.status,
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id else "",
        "actualPrice": fixed(a.actual_price, p) if a.actual_order_id else "0",
        "triggerPrice": fixed(a.trigger_price, p),
        "price": fixed(0.0, p),
        "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": False,
        "reduceOnly": a.reduce_only,
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0,
    }


def trade(t: Trade, spec: SymbolSpec, maker: bool = False) -> Json:
    """Return one GET /fapi/v1/userTrades entry."""
    p, q = spec.price_precision, spec.quantity_precision
    return {
        "buyer": t.side == "BUY",
        "commission": fmt(t.commission, 8),
        "commissionAsset": "USDT",
        "id": t.trade_id,
        "maker": maker,
        "orderId": t.order_id,
        "price": fixed(t.price, p),
        "qty": fixed(t.qty, q),
        "quoteQty": fmt(t.qty * t.price, 8),
        "realizedPnl": fmt(t.realized_pnl, 8),
        "side": t.side,
        "positionSide": "BOTH",
        "symbol": t.symbol,
        "time": t.time,
    }


def position_risk(acct: Account, spec: SymbolSpec, price: float, now: int) -> Json:
    """Return one GET /fapi/v3/positionRisk entry (v3 has no leverage/marginType fields)."""
    pos = acct.position(spec.symbol)
    notional = pos.amount * price
    upnl = acct.unrealized(spec.symbol, price)
    im = acct.initial_margin(spec.symbol, price)
    iso = acct.margin_type_of(spec.symbol) == "ISOLATED"
    return {
        "symbol": spec.symbol,
        "positionSide": "BOTH",
        "positionAmt": fixed(pos.amount, spec.quantity_precision),
        "entryPrice": fmt(pos.entry_price, 8),
        "breakEvenPrice": fmt(pos.entry_price * (1 + 2 * acct.fee_rate * _sgn(pos.amount)), 8),
        "markPrice": fmt(price, 8),
        "unRealizedProfit": fmt(upnl, 8),
        "liquidationPrice": "0",
        "isolatedMargin": fmt(pos.isolated_wallet + upnl if iso else 0.0, 8),
        "notional": fmt(notional, 8),
        "marginAsset": "USDT",
        "isolatedWallet": fmt(pos.isolated_wallet if iso else 0.0, 8),
        "initialMargin": fmt(im, 8),
        "maintMargin": fmt(abs(notional) * maint_rate(abs(notional)), 8),
        "positionInitialMargin": fmt(im, 8),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": pos.update_time,
    }


def _sgn(x: float) -> int:
    """Return the sign of x as -1, 0 or 1."""
    return (x > 0) - (x < 0)


def account(
    acct: Account, specs: Mapping[str, SymbolSpec], prices: Mapping[str, float], now: int
) -> Json:
    """Return GET /fapi/v3/account: totals, the USDT asset and the open positions."""
    opened = acct.open_positions()
    upnl = sum(acct.unrealized(s, prices[s]) for s in opened)
    im = sum(acct.initial_margin(s, prices[s]) for s in opened)
    iso_wallet = sum(p.isolated_wallet for p in opened.values())
    cross_upnl = sum(
        acct.unrealized(s, prices[s]) for s in opened if acct.margin_type_of(s) == "CROSSED"
    )
    mm = sum(
        abs(p.amount) * prices[s] * maint_rate(abs(p.amount) * prices[s]) for s, p in opened.items()
    )
    avail = acct.available_balance(prices)
    totals = {
        "totalInitialMargin": fmt(im),
        "totalMaintMargin": fmt(mm),
        "totalWalletBalance": fmt(acct.wallet),
        "totalUnrealizedProfit": fmt(upnl),
        "totalMarginBalance": fmt(acct.wallet + upnl),
        "totalPositionInitialMargin": fmt(im),
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": fmt(acct.wallet - iso_wallet),
        "totalCrossUnPnl": fmt(cross_upnl),
        "availableBalance": fmt(avail),
        "maxWithdrawAmount": fmt(max(avail, 0.0)),
    }
    asset = {
        "asset": "USDT",
        "walletBalance": fmt(acct.wallet),
        "unrealizedProfit": fmt(upnl),
        "marginBalance": fmt(acct.wallet + upnl),
        "maintMargin": fmt(mm),
        "initialMargin": fmt(im),
        "positionInitialMargin": fmt(im),
        "openOrderInitialMargin": "0",
        "crossWalletBalance": fmt(acct.wallet - iso_wallet),
        "crossUnPnl": fmt(cross_upnl),
        "availableBalance": fmt(avail),
        "maxWithdrawAmount": fmt(max(avail, 0.0)),
        "updateTime": now,
    }
    positions = []
    for s in sorted(opened):
        risk = position_risk(acct, specs[s], prices[s], now)
        risk["unrealizedProfit"] = risk["unRealizedProfit"]
        positions.append({k: v for k, v in risk.items() if k in _ACCOUNT_POSITION_KEYS})
    return {**totals, "assets": [asset], "positions": positions}


_ACCOUNT_POSITION_KEYS = {
    "symbol",
    "positionSide",
    "positionAmt",
    "unrealizedProfit",
    "isolatedMargin",
    "notional",
    "isolatedWallet",
    "initialMargin",
    "maintMargin",
    "updateTime",
}


def leverage_bracket(symbol: str) -> Json:
    """Return one GET /fapi/v1/leverageBracket entry from the bracket table."""
    brackets, floor, cum = [], 0.0, 0.0
    for i, (cap, lev, rate) in enumerate(BRACKETS, start=1):
        brackets.append(
            {
                "bracket": i,
                "initialLeverage": lev,
                "notionalCap": cap,
                "notionalFloor": floor,
                "maintMarginRatio": rate,
                "cum": cum,
            }
        )
        next_rate = BRACKETS[i][2] if i < len(BRACKETS) else rate
        cum += cap * (next_rate - rate)
        floor = cap
    return {"symbol": symbol, "brackets": brackets}


def leverage_answer(symbol: str, leverage: int) -> Json:
    """Return the POST /fapi/v1/leverage answer."""
    return {"leverage": leverage, "maxNotionalValue": fmt(max_notional(leverage)), "symbol": symbol}
