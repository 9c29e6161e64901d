"""Signed USD-M endpoints: account, positions, leverage, orders, algo orders, trades."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from services.exchange_sim import engine, payloads
from services.exchange_sim.auth import verify
from services.exchange_sim.core import Simulator, sim_of
from services.exchange_sim.engine import AlgoOrder, Order, SimError
from services.exchange_sim.params import (
    INTEGER,
    Params,
    boolean,
    decimal,
    integer,
    invalid,
    mandatory,
    need,
)

SignedHandler = Callable[[Simulator, Params], Any]
T = TypeVar("T")
WORKING_TYPES = ("CONTRACT_PRICE", "MARK_PRICE")
CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def signed(fn: SignedHandler, mutates: bool = False) -> Callable[[web.Request], Awaitable[Any]]:
    """Wrap a handler: verify key, signature and timestamp, answer JSON, persist if it mutates."""

    async def handler(request: web.Request) -> web.Response:
        sim = sim_of(request)
        body = await request.read() if request.can_read_body else b""
        params = verify(
            request.headers.get("X-MBX-APIKEY"),
            request.rel_url.raw_query_string,
            body,
            request.charset,
            sim.api_key,
            sim.api_secret,
            sim.clocks(),
        )
        result = fn(sim, params)
        if mutates:
            sim.save()
        return web.json_response(result)

    return handler


def side_of(params: Params) -> str:
    """Return BUY or SELL; anything else is -1117."""
    side = need(params, "side")
    if side not in (engine.BUY, engine.SELL):
        raise SimError(-1117, "Invalid side.")
    return side


def client_id(params: Params, name: str, sim: Simulator) -> str:
    """Return the client id sent, or a generated one; malformed ids are -4015."""
    value = params.get(name) or f"sim{sim.account.next_id + 1}"
    if not CLIENT_ID.match(value):
        raise SimError(-4015, "Client order id is not valid.")
    return value


def window(
    items: Sequence[T],
    time_of: Callable[[T], int],
    id_of: Callable[[T], int],
    params: Params,
    id_param: str,
    default_limit: int = 500,
    max_limit: int = 1000,
) -> list[T]:
    """Select history as Binance does: by id or time range, oldest first, at most ``limit``."""
    limit = min(integer(params, "limit") or default_limit, max_limit)
    start, end = integer(params, "startTime"), integer(params, "endTime")
    from_id = integer(params, id_param)
    rows = sorted(items, key=id_of)
    if from_id is not None:
        return [r for r in rows if id_of(r) >= from_id][:limit]
    rows = [
        r
        for r in rows
        if (start is None or time_of(r) >= start) and (end is None or time_of(r) <= end)
    ]
    return rows[:limit] if start is not None else rows[-limit:]


def find_order(sim: Simulator, p: Params) -> Order:
    """Return the order named by orderId or origClientOrderId (the latest with that id)."""
    symbol = sim.spec(need(p, "symbol")).symbol
    order_id, cid = integer(p, "orderId"), p.get("origClientOrderId")
    if order_id is None and not cid:
        raise SimError(-1102, "Either orderId or origClientOrderId must be sent.")
    matches = [
        o
        for o in sim.account.orders.values()
        if o.symbol == symbol
        and (o.order_id == order_id if order_id is not None else o.client_order_id == cid)
    ]
    if not matches:
        raise SimError(-2013, "Order does not exist.")
    return max(matches, key=lambda o: o.order_id)


def find_algo(sim: Simulator, p: Params) -> AlgoOrder:
    """Return the algo order named by algoId or clientAlgoId (the latest with that id)."""
    algo_id, cid = integer(p, "algoId"), p.get("clientAlgoId")
    if algo_id is None and not cid:
        raise SimError(-1102, "Either algoId or clientAlgoId must be sent.")
    matches = [
        a
        for a in sim.account.algo_orders.values()
        if (a.algo_id == algo_id if algo_id is not None else a.client_algo_id == cid)
    ]
    if not matches:
        raise SimError(-2013, "Order does not exist.")
    return max(matches, key=lambda a: a.algo_id)


def post_order(sim: Simulator, p: Params) -> Any:
    """POST /fapi/v1/order: market orders only; conditional types belong to the algo endpoint."""
    spec = sim.spec(need(p, "symbol"))
    side, otype = side_of(p), need(p, "type")
    if otype in (
        "STOP_MARKET",
        "TAKE_PROFIT_MARKET",
        "STOP",
        "TAKE_PROFIT",
        "TRAILING_STOP_MARKET",
    ):
        raise SimError(
            -4120,
            "Order type not supported for this endpoint. "
            "Please use the Algo Order API endpoints instead.",
        )
    if otype != "MARKET":
        raise SimError(-1116, "Invalid orderType.")
    if p.get("positionSide", "BOTH") != "BOTH":
        raise SimError(-4061, "Order's position side does not match user's setting.")
    cid = client_id(p, "newClientOrderId", sim)
    quantity = decimal(p, "quantity", spec.quantity_precision)
    reduce_only = boolean(p, "reduceOnly")
    order = engine.fill_market(
        sim.account,
        spec,
        side,
        quantity,
        sim.feed.price(spec.symbol),
        sim.prices(),
        sim.now_ms(),
        cid,
        reduce_only=reduce_only,
    )
    return payloads.order(order, spec)


def get_order(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/order."""
    order = find_order(sim, p)
    return payloads.order(order, sim.specs[order.symbol])


def delete_order(sim: Simulator, p: Params) -> Any:
    """DELETE /fapi/v1/order: every regular order is already filled, so it is -2011."""
    find_order(sim, p)
    raise SimError(-2011, "Unknown order sent.")


def open_orders(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/openOrders: market orders never rest, so none are open."""
    if p.get("symbol"):
        sim.spec(p["symbol"])
    return []


def all_orders(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/allOrders."""
    spec = sim.spec(need(p, "symbol"))
    rows = [o for o in sim.account.orders.values() if o.symbol == spec.symbol]
    picked = window(rows, lambda o: o.time, lambda o: o.order_id, p, "orderId")
    return [payloads.order(o, spec) for o in picked]


def user_trades(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/userTrades."""
    spec = sim.spec(need(p, "symbol"))
    rows = [t for t in sim.account.trades if t.symbol == spec.symbol]
    picked = window(rows, lambda t: t.time, lambda t: t.trade_id, p, "fromId")
    return [payloads.trade(t, spec) for t in picked]


def post_algo(sim: Simulator, p: Params) -> Any:
    """POST /fapi/v1/algoOrder: a CONDITIONAL STOP_MARKET order."""
    if need(p, "algoType") != "CONDITIONAL":
        raise SimError(-1116, "Invalid algoType.")
    spec = sim.spec(need(p, "symbol"))
    side, otype = side_of(p), need(p, "type")
    if otype != "STOP_MARKET":
        raise SimError(-1116, "Invalid orderType.")
    close, reduce_only = boolean(p, "closePosition"), boolean(p, "reduceOnly")
    quantity = 0.0 if close else decimal(p, "quantity", spec.quantity_precision)
    trigger = decimal(p, "triggerPrice", spec.price_precision)
    if trigger <= 0:
        raise SimError(-4006, "Stop price less than zero.")
    working_type = p.get("workingType", "CONTRACT_PRICE")
    if working_type not in WORKING_TYPES:
        raise invalid("workingType")
    algo = engine.place_stop(
        sim.account,
        spec,
        side,
        quantity,
        trigger,
        sim.feed.price(spec.symbol),
        sim.now_ms(),
        client_id(p, "clientAlgoId", sim),
        reduce_only,
        close,
        working_type,
    )
    return payloads.algo_order(algo, spec)


def get_algo(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/algoOrder."""
    algo = find_algo(sim, p)
    return payloads.algo_order(algo, sim.specs[algo.symbol])


def delete_algo(sim: Simulator, p: Params) -> Any:
    """DELETE /fapi/v1/algoOrder."""
    algo = engine.cancel_algo(sim.account, find_algo(sim, p), sim.now_ms())
    return {
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "code": "200",
        "msg": "success",
    }


def open_algo_orders(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/openAlgoOrders."""
    symbol = sim.spec(p["symbol"]).symbol if p.get("symbol") else None
    rows = [
        a
        for a in sorted(sim.account.algo_orders.values(), key=lambda a: a.algo_id)
        if a.status == "NEW" and symbol in (None, a.symbol)
    ]
    return [payloads.algo_order(a, sim.specs[a.symbol]) for a in rows]


def all_algo_orders(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/allAlgoOrders."""
    spec = sim.spec(need(p, "symbol"))
    rows = [a for a in sim.account.algo_orders.values() if a.symbol == spec.symbol]
    picked = window(rows, lambda a: a.create_time, lambda a: a.algo_id, p, "algoId", 100, 100)
    return [payloads.algo_order(a, spec) for a in picked]


def account_v3(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v3/account."""
    return payloads.account(sim.account, sim.specs, sim.prices(), sim.now_ms())


def position_risk(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v3/positionRisk: the open positions (all, or one symbol's)."""
    symbol = sim.spec(p["symbol"]).symbol if p.get("symbol") else None
    return [
        payloads.position_risk(sim.account, sim.specs[s], sim.feed.price(s), sim.now_ms())
        for s in sorted(sim.account.open_positions())
        if symbol in (None, s)
    ]


def leverage_bracket(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/leverageBracket."""
    if p.get("symbol"):
        return [payloads.leverage_bracket(sim.spec(p["symbol"]).symbol)]
    return [payloads.leverage_bracket(s) for s in sim.specs]


def post_leverage(sim: Simulator, p: Params) -> Any:
    """POST /fapi/v1/leverage: an integer; out of 1..125 is -4028 (in the engine)."""
    spec = sim.spec(need(p, "symbol"))
    raw = need(p, "leverage")
    if not INTEGER.match(raw):
        raise mandatory("leverage")  # Binance answers a fractional leverage so
    leverage = int(raw)
    engine.set_leverage(sim.account, spec.symbol, leverage, sim.feed.price(spec.symbol))
    return payloads.leverage_answer(spec.symbol, leverage)


def post_margin_type(sim: Simulator, p: Params) -> Any:
    """POST /fapi/v1/marginType."""
    spec = sim.spec(need(p, "symbol"))
    engine.set_margin_type(sim.account, spec.symbol, need(p, "marginType").upper())
    return {"code": 200, "msg": "success"}


def position_mode(sim: Simulator, p: Params) -> Any:
    """GET /fapi/v1/positionSide/dual: the simulator is one-way only."""
    return {"dualSidePosition": False}


def add_routes(app: web.Application) -> None:
    """Register the signed endpoints."""
    r = app.router
    r.add_get("/fapi/v3/account", signed(account_v3))
    r.add_get("/fapi/v3/positionRisk", signed(position_risk))
    r.add_get("/fapi/v1/leverageBracket", signed(leverage_bracket))
    r.add_get("/fapi/v1/positionSide/dual", signed(position_mode))
    r.add_post("/fapi/v1/leverage", signed(post_leverage, mutates=True))
    r.add_post("/fapi/v1/marginType", signed(post_margin_type, mutates=True))
    r.add_post("/fapi/v1/order", signed(post_order, mutates=True))
    r.add_get("/fapi/v1/order", signed(get_order))
    r.add_delete("/fapi/v1/order", signed(delete_order))
    r.add_get("/fapi/v1/openOrders", signed(open_orders))
    r.add_get("/fapi/v1/allOrders", signed(all_orders))
    r.add_get("/fapi/v1/userTrades", signed(user_trades))
    r.add_post("/fapi/v1/algoOrder", signed(post_algo, mutates=True))
    r.add_get("/fapi/v1/algoOrder", signed(get_algo))
    r.add_delete("/fapi/v1/algoOrder", signed(delete_algo, mutates=True))
    r.add_get("/fapi/v1/openAlgoOrders", signed(open_algo_orders))
    r.add_get("/fapi/v1/allAlgoOrders", signed(all_algo_orders))
