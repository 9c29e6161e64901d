"""The simulator's aiohttp application: middlewares (faults, errors), market data, control API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.exchange_sim import payloads, trade_routes
from services.exchange_sim.core import SIM_KEY, Simulator, sim_of
from services.exchange_sim.engine import SimError
from services.exchange_sim.faults import FaultConfigError
from shared.config import TIMEFRAME_MS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_429 = (
    '{"code":-1003,"msg":"Too many requests; current limit of IP(127.0.0.1) request weight '
    'per minute is 2400. Please use WebSocket Streams for live updates to avoid polling the API."}'
)
BODY_418 = (
    '{"code":-1003,"msg":"Way too many requests; IP(127.0.0.1) banned until %d. '
    'Please use WebSocket Streams for live updates to avoid bans."}'
)


def binance_error(e: SimError) -> web.Response:
    """Return Binance's error body ``{"code": -N, "msg": ...}`` with its HTTP status."""
    return web.json_response({"code": e.code, "msg": e.msg}, status=e.status)


def abort(request: web.Request) -> None:
    """Close the client's connection without an answer."""
    if request.transport is not None:
        request.transport.abort()


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add latency and inject the drawn fault; ``drop`` executes the request, then hangs up."""
    plan = sim_of(request).faults
    if not plan.applies(request.path):
        return await handler(request)
    if plan.latency_ms:
        await asyncio.sleep(plan.latency_ms / 1000)
    kind = plan.draw()
    if kind == "http5xx":
        return web.Response(status=plan.status_5xx(), text="Service Unavailable")
    if kind == "http429":
        return web.Response(
            status=429, text=BODY_429, content_type="application/json", headers={"Retry-After": "1"}
        )
    if kind == "http418":
        until = int(time.time() * 1000) + 60_000
        return web.Response(status=418, text=BODY_418 % until, content_type="application/json")
    if kind == "timeout":
        await asyncio.sleep(plan.timeout_hold_s)
    if kind in ("timeout", "reset"):
        abort(request)
        return web.Response(status=499)
    response = await handler(request)
    if kind == "drop":
        abort(request)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a refused request with Binance's error JSON."""
    try:
        return await handler(request)
    except SimError as e:
        return binance_error(e)


def _int(q: Any, name: str, default: int | None = None) -> int | None:
    """Read an integer parameter; a malformed one is Binance's -1100."""
    value = q.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SimError(-1100, f"Illegal characters found in parameter '{name}'.") from None


async def ping(request: web.Request) -> web.Response:
    """GET /fapi/v1/ping."""
    return web.json_response({})


async def server_time(request: web.Request) -> web.Response:
    """GET /fapi/v1/time: the simulated clock."""
    return web.json_response({"serverTime": sim_of(request).now_ms()})


async def exchange_info(request: web.Request) -> web.Response:
    """GET /fapi/v1/exchangeInfo."""
    sim = sim_of(request)
    return web.json_response(payloads.exchange_info(sim.specs, sim.now_ms()))


async def klines(request: web.Request) -> web.Response:
    """GET /fapi/v1/klines: closed candles and the forming one, oldest first."""
    sim, q = sim_of(request), request.query
    spec = sim.spec(q.get("symbol"))
    interval = TIMEFRAME_MS.get(q.get("interval", ""))
    if interval is None:
        raise SimError(-1120, "Invalid interval.")
    limit = min(_int(q, "limit", 500) or 500, 1500)
    try:
        rows = sim.feed.klines(
            spec.symbol, interval, _int(q, "startTime"), _int(q, "endTime"), limit
        )
    except ValueError:
        raise SimError(-1120, "Invalid interval.") from None
    return web.json_response([payloads.kline_row(k, interval, spec) for k in rows])


async def ticker_24h(request: web.Request) -> web.Response:
    """GET /fapi/v1/ticker/24hr: one symbol (object) or all (list)."""
    sim, symbol = sim_of(request), request.query.get("symbol")
    if symbol is not None:
        spec = sim.spec(symbol)
        return web.json_response(payloads.ticker_24h(spec, sim.feed.ticker_24h(symbol)))
    return web.json_response(
        [payloads.ticker_24h(sp, sim.feed.ticker_24h(s)) for s, sp in sim.specs.items()]
    )


async def ticker_price(request: web.Request) -> web.Response:
    """GET /fapi/v1/ticker/price (and /fapi/v2/ticker/price)."""
    sim, symbol = sim_of(request), request.query.get("symbol")
    now = sim.now_ms()

    def one(s: str) -> dict[str, Any]:
        spec = sim.specs[s]
        return {
            "symbol": s,
            "price": payloads.fixed(sim.feed.price(s), spec.price_precision),
            "time": now,
        }

    if symbol is not None:
        return web.json_response(one(sim.spec(symbol).symbol))
    return web.json_response([one(s) for s in sim.specs])


async def premium_index(request: web.Request) -> web.Response:
    """GET /fapi/v1/premiumIndex: mark = index = last price, zero funding."""
    sim, symbol = sim_of(request), request.query.get("symbol")
    now = sim.now_ms()

    def one(s: str) -> dict[str, Any]:
        p = payloads.fixed(sim.feed.price(s), sim.specs[s].price_precision)
        return {
            "symbol": s,
            "markPrice": p,
            "indexPrice": p,
            "estimatedSettlePrice": p,
            "lastFundingRate": "0.00000000",
            "interestRate": "0.00000000",
            "nextFundingTime": now - now % 28_800_000 + 28_800_000,
            "time": now,
        }

    if symbol is not None:
        return web.json_response(one(sim.spec(symbol).symbol))
    return web.json_response([one(s) for s in sim.specs])


async def control_step(request: web.Request) -> web.Response:
    """POST /_sim/step {"n": N}: play N price events; return them and the stops they fired."""
    sim = sim_of(request)
    body = await request.json() if request.can_read_body else {}
    before = len(sim.triggered)
    events = sim.step(int(body.get("n", 1)))
    fired = [payloads.algo_order(a, sim.specs[a.symbol]) for a in sim.triggered[before:]]
    return web.json_response({"now": sim.now_ms(), "events": events, "triggered": fired})


async def control_path(request: web.Request) -> web.Response:
    """POST /_sim/path {"symbol": S, "prices": [...]}: the symbol's next price events."""
    sim = sim_of(request)
    body = await request.json()
    set_path = getattr(sim.feed, "set_path", None)
    if set_path is None:
        raise SimError(-1000, "This market does not take price paths.")
    set_path(sim.spec(body.get("symbol")).symbol, [float(p) for p in body["prices"]])
    return web.json_response({"ok": True})


async def control_faults(request: web.Request) -> web.Response:
    """GET or POST /_sim/faults: read, or set {"rates", "seed", "latency_ms", "timeout_hold_s"}."""
    plan = sim_of(request).faults
    if request.method == "POST":
        body = await request.json()
        try:
            plan.configure(dict(body.get("rates", plan.rates)), body.get("seed"))
        except FaultConfigError as e:
            return web.json_response({"error": str(e)}, status=400)
        plan.latency_ms = int(body.get("latency_ms", plan.latency_ms))
        plan.timeout_hold_s = float(body.get("timeout_hold_s", plan.timeout_hold_s))
        if body.get("reset_counts"):
            plan.counts.clear()
    return web.json_response(plan.snapshot())


async def control_state(request: web.Request) -> web.Response:
    """GET /_sim/state: clock, prices and the whole account."""
    sim = sim_of(request)
    return web.json_response(
        {"now": sim.now_ms(), "prices": sim.prices(), "account": sim.account.to_dict()}
    )


async def run_clock(sim: Simulator, speed: float, tick_s: float = 0.1) -> None:
    """Move the market clock at ``speed`` times real time, from where it stands now."""
    wall0, sim0 = time.monotonic(), sim.now_ms()
    while True:
        await asyncio.sleep(tick_s)
        sim.advance_to(sim0 + int((time.monotonic() - wall0) * 1000 * speed))


def make_app(sim: Simulator) -> web.Application:
    """Return the aiohttp application serving one simulator."""
    app = web.Application(middlewares=[fault_middleware, error_middleware])
    app[SIM_KEY] = sim
    r = app.router
    r.add_get("/fapi/v1/ping", ping)
    r.add_get("/fapi/v1/time", server_time)
    r.add_get("/fapi/v1/exchangeInfo", exchange_info)
    r.add_get("/fapi/v1/klines", klines)
    r.add_get("/fapi/v1/ticker/24hr", ticker_24h)
    r.add_get("/fapi/v1/ticker/price", ticker_price)
    r.add_get("/fapi/v2/ticker/price", ticker_price)
    r.add_get("/fapi/v1/premiumIndex", premium_index)
    r.add_post("/_sim/step", control_step)
    r.add_post("/_sim/path", control_path)
    r.add_get("/_sim/faults", control_faults)
    r.add_post("/_sim/faults", control_faults)
    r.add_get("/_sim/state", control_state)
    trade_routes.add_routes(app)
    return app
