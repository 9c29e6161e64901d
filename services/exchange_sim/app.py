"""The simulator's aiohttp application: middlewares (faults, garbage, errors), market data,
control API.

Every refused request is answered with Binance's error JSON ``{"code": -N, "msg": ...}`` and
Binance's HTTP status: a ``SimError`` raised anywhere, aiohttp's own 404/405/413 (-5000 /
-1101), and, for a bug, 500 with -1000 (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from services.exchange_sim import garbage, payloads, trade_routes
from services.exchange_sim.core import SIM_KEY, Simulator, sim_of
from services.exchange_sim.engine import SimError
from services.exchange_sim.faults import FaultConfigError
from services.exchange_sim.params import Params, ascii_text, integer, invalid, mandatory, need
from services.exchange_sim.params import parse as parse_params
from shared.config import TIMEFRAME_MS

log = logging.getLogger("exchange_sim")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_429 = (
    '{"code":-1003,"msg":"Too many requests; current limit of IP(127.0.0.1) request weight '
    'per minute is 2400. Please use WebSocket Streams for live updates to avoid polling the API."}'
)
BODY_418 = (
    '{"code":-1003,"msg":"Way too many requests; IP(127.0.0.1) banned until %d. '
    'Please use WebSocket Streams for live updates to avoid bans."}'
)
UNKNOWN_ERROR = "An unknown error occured while processing the request."
MAX_STEPS = 100_000  # events one POST /_sim/step may play


def binance_error(e: SimError) -> web.Response:
    """Return Binance's error body ``{"code": -N, "msg": ...}`` with its HTTP status."""
    return web.json_response({"code": e.code, "msg": e.msg}, status=e.status)


def http_error(request: web.Request, e: web.HTTPException) -> SimError:
    """Return the Binance error for an aiohttp HTTP error (unknown path, method, size)."""
    if e.status in (404, 405):
        return SimError(-5000, f"Path {request.path}, Method {request.method} is invalid", e.status)
    if e.status == 413:
        return SimError(-1101, "Too many parameters sent for this endpoint.", 413)
    return SimError(-1000, UNKNOWN_ERROR, e.status if e.status >= 400 else 500)


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
    if kind is not None:
        plan.record(sim_of(request).now_ms(), request.method, request.path, kind)
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
async def garbage_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve a market data answer corrupted by the drawn garbage kind (see ``garbage``)."""
    sim = sim_of(request)
    applicable = garbage.applicable(request.method, request.path)
    kind = sim.faults.draw_garbage(applicable, request.path) if applicable else None
    if kind == "html_200":
        return web.Response(status=200, text=garbage.HTML_PAGE, content_type="text/html")
    if kind == "html_5xx":
        status = 502 if sim.faults.status_5xx() < 503 else 503
        return web.Response(status=status, text=garbage.HTML_PAGE, content_type="text/html")
    response = await handler(request)
    if kind is None or not isinstance(response, web.Response) or response.status != 200:
        return response
    payload = json.loads(response.text or "null")
    return web.json_response(garbage.corrupt(request.path, kind, payload, sim.now_ms()))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every refused request with Binance's error JSON, whatever refused it."""
    try:
        return await handler(request)
    except SimError as e:
        return binance_error(e)
    except web.HTTPException as e:
        return binance_error(http_error(request, e))
    except Exception:
        log.exception("Request %s %s failed", request.method, request.path)
        return binance_error(SimError(-1000, UNKNOWN_ERROR, 500))


def query_of(request: web.Request) -> Params:
    """Return the query parameters as Binance reads them (ASCII only, no duplicates)."""
    return parse_params(ascii_text(request.rel_url.raw_query_string.encode()))


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
    sim, q = sim_of(request), query_of(request)
    spec = sim.spec(need(q, "symbol"))
    interval = TIMEFRAME_MS.get(need(q, "interval"))
    if interval is None:
        raise SimError(-1120, "Invalid interval.")
    limit = min(integer(q, "limit") or 500, 1500)
    start, end = integer(q, "startTime"), integer(q, "endTime")
    try:
        rows = sim.feed.klines(spec.symbol, interval, start, end, limit)
    except ValueError:
        raise SimError(-1120, "Invalid interval.") from None
    return web.json_response([payloads.kline_row(k, interval, spec) for k in rows])


async def ticker_24h(request: web.Request) -> web.Response:
    """GET /fapi/v1/ticker/24hr: one symbol (object) or all (list)."""
    sim, symbol = sim_of(request), query_of(request).get("symbol")
    if symbol is not None:
        spec = sim.spec(symbol)
        return web.json_response(payloads.ticker_24h(spec, sim.feed.ticker_24h(spec.symbol)))
    return web.json_response(
        [payloads.ticker_24h(sp, sim.feed.ticker_24h(s)) for s, sp in sim.specs.items()]
    )


async def ticker_price(request: web.Request) -> web.Response:
    """GET /fapi/v1/ticker/price (and /fapi/v2/ticker/price)."""
    sim, symbol = sim_of(request), query_of(request).get("symbol")
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
    sim, symbol = sim_of(request), query_of(request).get("symbol")
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


# --- the control API (the simulator's own; errors in Binance's form) ----------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    """Return the JSON object a control request sent ({} without a body); else -1130."""
    raw = await request.read() if request.can_read_body else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("body") from None
    if not isinstance(body, dict):
        raise invalid("body")
    return body


def whole(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """Return an integer field of a control request within [low, high]; else -1130."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(name)
    return value


def number(body: Mapping[str, Any], name: str, default: float) -> float:
    """Return a finite number >= 0 of a control request; else -1130."""
    value = body.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise invalid(name)
    return float(value)


async def control_step(request: web.Request) -> web.Response:
    """POST /_sim/step {"n": N}: play N price events; return them and the stops they fired."""
    sim = sim_of(request)
    n = whole(await json_body(request), "n", 1, 0, MAX_STEPS)
    before = len(sim.triggered)
    events = sim.step(n)
    fired = [payloads.algo_order(a, sim.specs[a.symbol]) for a in sim.triggered[before:]]
    return web.json_response({"now": sim.now_ms(), "events": events, "triggered": fired})


async def control_path(request: web.Request) -> web.Response:
    """POST /_sim/path {"symbol": S, "prices": [...]}: the symbol's next price events."""
    sim = sim_of(request)
    body = await json_body(request)
    set_path = getattr(sim.feed, "set_path", None)
    if set_path is None:
        raise SimError(-1000, "This market does not take price paths.")
    symbol = body.get("symbol")
    if not symbol:
        raise mandatory("symbol")
    spec = sim.spec(str(symbol))
    prices = body.get("prices")
    if prices is None:
        raise mandatory("prices")
    if not isinstance(prices, list) or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) and p > 0
        for p in prices
    ):
        raise invalid("prices")
    set_path(spec.symbol, [float(p) for p in prices])
    return web.json_response({"ok": True})


async def control_faults(request: web.Request) -> web.Response:
    """GET or POST /_sim/faults: read, or set {"rates", "garbage", "garbage_paths", "seed",
    "latency_ms", "timeout_hold_s", "reset_counts"}; nothing changes when any is invalid.

    ``GET /_sim/faults?events_after=N`` also returns the injected faults numbered above N
    (``events``: exchange time, method, path, kind; the newest 10,000 are kept).
    """
    plan = sim_of(request).faults
    after = request.query.get("events_after")
    if request.method == "POST":
        body = await json_body(request)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise invalid("seed")
        latency_ms = whole(body, "latency_ms", plan.latency_ms, 0, 600_000)
        hold = number(body, "timeout_hold_s", plan.timeout_hold_s)
        try:
            plan.configure(
                body.get("rates", plan.rates),
                seed,
                body.get("garbage"),
                body.get("garbage_paths"),
            )
        except FaultConfigError as e:
            name = next((n for n in ("garbage paths", "garbage") if n in str(e)), "rates").replace(
                " ", "_"
            )
            raise SimError(-1130, f"Data sent for parameter '{name}' is not valid: {e}") from None
        plan.latency_ms, plan.timeout_hold_s = latency_ms, hold
        if body.get("reset_counts"):
            plan.counts.clear()
    answer = plan.snapshot()
    if after is not None:
        if not after.isdigit():
            raise invalid("events_after")
        answer["events"] = plan.events_after(int(after))
    return web.json_response(answer)


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
    app = web.Application(middlewares=[fault_middleware, garbage_middleware, error_middleware])
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
