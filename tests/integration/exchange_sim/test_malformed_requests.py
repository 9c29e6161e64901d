"""Every malformed request gets Binance's error JSON with a 4xx status: never a 500, never text.

A table of malformed requests, sent byte for byte over raw HTTP (signed properly where the
case is about a parameter, so the parameter is what gets judged): bad decimals and integers
(NaN, inf, 1e400, negative, fractional, too long), bad booleans and leverage, a bad or
non-ASCII API key or signature, bad recvWindow and timestamp values, undecodable bodies and
unknown charsets, duplicate parameters, unknown paths and methods, an oversized body, and
bad input to the control API. Each must be answered with exactly
``{"code": <negative int>, "msg": <text>}`` as JSON, with the HTTP status and code Binance
uses (one request that is not valid HTTP is refused by the HTTP parser itself). The
parameter cases are then sent again through ccxt's own request methods (its signing, its
error mapping): every one must reach the caller as a non-retryable error, never a
NetworkError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import ccxt.async_support as ccxt

from shared.exchange_errors import RETRYABLE, binance_code, classify
from tests.fixtures.sim import SimHandle
from tests.integration.exchange_sim.rawhttp import Answer, send, signed_params

ORDER = "symbol=BTCUSDT&side=BUY&type=MARKET"
ALGO = "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.01"
FORM = "application/x-www-form-urlencoded"
ILLEGAL = -1100
MANDATORY = -1102
INVALID = -1130
BAD_PATH = -5000

# (method, path) -> ccxt's implicit API method, for replaying parameter cases through ccxt
CCXT_METHODS = {
    ("POST", "/fapi/v1/order"): "fapiPrivatePostOrder",
    ("GET", "/fapi/v1/order"): "fapiPrivateGetOrder",
    ("DELETE", "/fapi/v1/order"): "fapiPrivateDeleteOrder",
    ("POST", "/fapi/v1/algoOrder"): "fapiPrivatePostAlgoOrder",
    ("GET", "/fapi/v1/algoOrder"): "fapiPrivateGetAlgoOrder",
    ("POST", "/fapi/v1/leverage"): "fapiPrivatePostLeverage",
    ("POST", "/fapi/v1/marginType"): "fapiPrivatePostMarginType",
    ("GET", "/fapi/v1/allOrders"): "fapiPrivateGetAllOrders",
    ("GET", "/fapi/v1/userTrades"): "fapiPrivateGetUserTrades",
    ("GET", "/fapi/v1/allAlgoOrders"): "fapiPrivateGetAllAlgoOrders",
    ("GET", "/fapi/v1/klines"): "fapiPublicGetKlines",
    ("GET", "/fapi/v1/ticker/24hr"): "fapiPublicGetTicker24hr",
}


@dataclass(frozen=True)
class Case:
    """One malformed request and the answer Binance gives it."""

    id: str
    method: str
    path: str
    params: str = ""  # raw (percent-encoded) parameters as sent
    status: int = 400
    code: int = ILLEGAL
    signed: bool = False  # add timestamp (unless ``params`` names one) and a valid signature
    key: bytes | None = b"sim-api-key"  # X-MBX-APIKEY of a signed request (None: no header)
    signature: bytes | None = None  # replaces the valid signature (percent-encoded or raw)
    body: bytes | None = None  # the raw body (default: the parameters of a POST)
    headers: tuple[tuple[str, bytes], ...] = ()
    ccxt: bool = False  # replay through ccxt's implicit API (the parameter cases)
    http_layer: bool = False  # refused by aiohttp's HTTP parser, before the application
    extra: dict[str, Any] = field(default_factory=dict)


def order_qty(value: str, code: int = ILLEGAL) -> Case:
    return Case(f"order quantity={value!r}", "POST", "/fapi/v1/order",
                f"{ORDER}&quantity={value}", code=code, signed=True, ccxt=True)  # fmt: skip


def trigger(value: str, code: int = ILLEGAL) -> Case:
    return Case(f"stop triggerPrice={value!r}", "POST", "/fapi/v1/algoOrder",
                f"{ALGO}&reduceOnly=true&triggerPrice={value}", code=code, signed=True,
                ccxt=True)  # fmt: skip


def leverage(value: str, code: int = MANDATORY) -> Case:
    return Case(f"leverage={value!r}", "POST", "/fapi/v1/leverage",
                f"symbol=BTCUSDT&leverage={value}", code=code, signed=True, ccxt=True)  # fmt: skip


def integer(path: str, name: str, value: str, base: str = "symbol=BTCUSDT") -> Case:
    params = f"{base}&{name}={value}" if base else f"{name}={value}"
    return Case(f"{path} {name}={value!r}", "GET", path, params, signed=True, ccxt=True)


def account(params: str, code: int = ILLEGAL, label: str = "", **kw: Any) -> Case:
    return Case(f"account {params!r} {label}".strip(), "GET", "/fapi/v3/account", params,
                code=code, signed=True, **kw)  # fmt: skip


def control(path: str, body: bytes, code: int = INVALID) -> Case:
    return Case(f"{path} {body!r}", "POST", path, code=code, body=body,
                headers=(("Content-Type", b"application/json"),))  # fmt: skip


BAD_DECIMALS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e-3", "-0.01", "abc",
                "%200.01", "0x10", "0.0100000000000000000001", "123456789012345678901"]  # fmt: skip
BAD_INTEGERS = ["nan", "inf", "1e400", "-1", "1.5", "abc", "123456789012345678901234"]
SIG = "0" * 64

CASES: list[Case] = [
    # --- decimals, booleans, enums of an order ----------------------------------------
    *[order_qty(v) for v in BAD_DECIMALS],
    order_qty("", MANDATORY),
    order_qty("0", -4003),
    order_qty("0.0001", -1111),
    # Judged on the text, as Binance does: a float read of it would be within a hair of
    # 0.1 BTC and 59000.1, on the step.
    order_qty("0.0999999999", -1111),
    trigger("59000.0999999", -1111),
    Case("order without quantity", "POST", "/fapi/v1/order", ORDER, code=MANDATORY,
         signed=True, ccxt=True),
    Case("order reduceOnly=maybe", "POST", "/fapi/v1/order",
         f"{ORDER}&quantity=0.01&reduceOnly=maybe", code=INVALID, signed=True, ccxt=True),
    Case("order side=HOLD", "POST", "/fapi/v1/order",
         "symbol=BTCUSDT&side=HOLD&type=MARKET&quantity=0.01", code=-1117, signed=True,
         ccxt=True),
    Case("order type=LIMIT", "POST", "/fapi/v1/order",
         "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01", code=-1116, signed=True,
         ccxt=True),
    Case("order symbol unknown", "POST", "/fapi/v1/order",
         "symbol=FOOUSDT&side=BUY&type=MARKET&quantity=0.01", code=-1121, signed=True,
         ccxt=True),
    Case("order symbol non-ASCII", "POST", "/fapi/v1/order",
         "symbol=BTC%E2%82%ACUSDT&side=BUY&type=MARKET&quantity=0.01", code=-1121,
         signed=True, ccxt=True),
    Case("order without symbol", "POST", "/fapi/v1/order",
         "side=BUY&type=MARKET&quantity=0.01", code=MANDATORY, signed=True, ccxt=True),
    Case("order positionSide=LONG", "POST", "/fapi/v1/order",
         f"{ORDER}&quantity=0.01&positionSide=LONG", code=-4061, signed=True, ccxt=True),
    Case("order client id non-ASCII", "POST", "/fapi/v1/order",
         f"{ORDER}&quantity=0.01&newClientOrderId=%E2%82%AC", code=-4015, signed=True,
         ccxt=True),
    Case("order duplicate symbol", "POST", "/fapi/v1/order",
         f"{ORDER}&quantity=0.01&symbol=ETHUSDT", code=-1101, signed=True),
    # --- stops ---------------------------------------------------------------------------
    *[trigger(v) for v in ["nan", "inf", "1e400", "-1", "abc"]],
    trigger("", MANDATORY),
    trigger("0", -4006),
    Case("stop closePosition=maybe", "POST", "/fapi/v1/algoOrder",
         f"{ALGO}&triggerPrice=59000&closePosition=maybe", code=INVALID, signed=True,
         ccxt=True),
    Case("stop algoType=OCO", "POST", "/fapi/v1/algoOrder",
         "algoType=OCO&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.01"
         "&triggerPrice=59000", code=-1116, signed=True, ccxt=True),
    # --- leverage and margin type ---------------------------------------------------------
    *[leverage(v) for v in ["nan", "inf", "1e400", "5.7", "-1", "abc", ""]],
    leverage("0", -4028),
    leverage("126", -4028),
    Case("marginType=FOO", "POST", "/fapi/v1/marginType", "symbol=BTCUSDT&marginType=FOO",
         code=-1116, signed=True, ccxt=True),
    # --- integer parameters -------------------------------------------------------------
    *[integer("/fapi/v1/allOrders", n, v) for n in ("limit", "startTime", "endTime", "orderId")
      for v in BAD_INTEGERS],
    *[integer("/fapi/v1/userTrades", "fromId", v) for v in ("nan", "-1", "1e400")],
    *[integer("/fapi/v1/allAlgoOrders", "algoId", v) for v in ("inf", "1e400")],
    *[integer("/fapi/v1/order", "orderId", v) for v in ("nan", "1e400")],
    integer("/fapi/v1/algoOrder", "algoId", "inf", base=""),
    Case("delete order orderId=abc", "DELETE", "/fapi/v1/order", "symbol=BTCUSDT&orderId=abc",
         signed=True, ccxt=True),
    Case("order lookup without ids", "GET", "/fapi/v1/order", "symbol=BTCUSDT",
         code=MANDATORY, signed=True, ccxt=True),
    # --- recvWindow and timestamp -----------------------------------------------------------
    *[account(f"recvWindow={v}") for v in ("-1", "nan", "1e400", "abc", "1.5")],
    account("recvWindow=0", INVALID),
    account("recvWindow=60001", -1131),
    *[account(f"timestamp={v}") for v in ("nan", "inf", "-1", "1e400", "abc")],
    account("timestamp=", MANDATORY),
    Case("account without timestamp", "GET", "/fapi/v3/account", "recvWindow=5000",
         code=MANDATORY, signed=True, extra={"no_timestamp": True}),
    # --- API key and signature ----------------------------------------------------------------
    account("", -2014, "no API key", status=401, key=None),
    account("", -2014, "empty API key", status=401, key=b""),
    account("", -2014, "UTF-8 API key", status=401, key=b"sim-api-k\xc3\xa9y"),
    account("", -2014, "latin-1 API key", status=401, key=b"sim-api-key\xff"),
    account("", -2015, "wrong API key", status=401, key=b"someone-else"),
    account("", MANDATORY, "empty signature", signature=b""),
    account("", -1022, "percent-encoded UTF-8 signature", signature=b"%C3%A9" * 64),
    # A raw byte outside ASCII in the request target is not HTTP: aiohttp's parser answers
    # 400 in plain text before the application sees it (Binance's front end answers such
    # requests with its own HTML page).
    account("", -1022, "raw UTF-8 signature", signature=b"\xc3\xa9" * 64, http_layer=True),
    account("", -1022, "non-hex signature", signature=b"zz" * 32),
    account("", -1022, "wrong signature", signature=SIG.encode()),
    account("", -1022, "1000-character signature", signature=b"a" * 1000),
    # --- bodies and charsets --------------------------------------------------------------------
    Case("body charset unknown", "POST", "/fapi/v1/leverage", "symbol=BTCUSDT&leverage=5",
         signed=True, headers=(("Content-Type", f"{FORM}; charset=klingon".encode()),)),
    Case("body charset utf-16 (ASCII body)", "POST", "/fapi/v1/leverage",
         "symbol=BTCUSDT&leverage=5", signed=True,
         headers=(("Content-Type", f"{FORM}; charset=utf-16".encode()),)),
    Case("body not UTF-8", "POST", "/fapi/v1/leverage", "symbol=BTCUSDT&leverage=5\xff",
         signed=True, headers=(("Content-Type", f"{FORM}; charset=utf-8".encode()),)),
    Case("body raw non-ASCII", "POST", "/fapi/v1/leverage", "symbol=BTCUSDT\xe9&leverage=5",
         signed=True),
    # --- public market data -----------------------------------------------------------------
    Case("klines interval=7m", "GET", "/fapi/v1/klines", "symbol=BTCUSDT&interval=7m",
         code=-1120, ccxt=True),
    Case("klines without interval", "GET", "/fapi/v1/klines", "symbol=BTCUSDT",
         code=MANDATORY, ccxt=True),
    Case("klines without symbol", "GET", "/fapi/v1/klines", "interval=5m", code=MANDATORY,
         ccxt=True),
    Case("klines symbol unknown", "GET", "/fapi/v1/klines", "symbol=FOOUSDT&interval=5m",
         code=-1121, ccxt=True),
    *[Case(f"klines {p}", "GET", "/fapi/v1/klines", f"symbol=BTCUSDT&interval=5m&{p}",
           ccxt=True)
      for p in ("limit=-1", "limit=nan", "limit=1e400", "limit=1.5", "startTime=abc",
                "endTime=inf")],
    Case("klines duplicate limit", "GET", "/fapi/v1/klines",
         "symbol=BTCUSDT&interval=5m&limit=5&limit=6", code=-1101),
    Case("ticker/24hr symbol unknown", "GET", "/fapi/v1/ticker/24hr", "symbol=FOO",
         code=-1121, ccxt=True),
    Case("ticker/price symbol NUL", "GET", "/fapi/v1/ticker/price", "symbol=%00", code=-1121),
    Case("premiumIndex symbol lower case", "GET", "/fapi/v1/premiumIndex", "symbol=btcusdt",
         code=-1121),
    # --- paths, methods, size -----------------------------------------------------------------
    Case("unknown path", "GET", "/fapi/v1/nope", status=404, code=BAD_PATH),
    Case("unknown root path", "GET", "/nope", status=404, code=BAD_PATH),
    Case("unknown version", "GET", "/fapi/v9/order", status=404, code=BAD_PATH),
    Case("POST /time", "POST", "/fapi/v1/time", status=405, code=BAD_PATH),
    Case("DELETE /klines", "DELETE", "/fapi/v1/klines", status=405, code=BAD_PATH),
    Case("PUT /order", "PUT", "/fapi/v1/order", status=405, code=BAD_PATH),
    Case("GET /_sim/step", "GET", "/_sim/step", status=405, code=BAD_PATH),
    Case("body of 2 MiB", "POST", "/fapi/v1/order", status=413, code=-1101,
         body=b"a=" + b"1" * (2 * 1024 * 1024), headers=(("Content-Type", FORM.encode()),)),
    # --- the control API ----------------------------------------------------------------------
    control("/_sim/step", b"not json"),
    control("/_sim/step", b"[1]"),
    control("/_sim/step", b'{"n": "abc"}'),
    control("/_sim/step", b'{"n": 1e400}'),
    control("/_sim/step", b'{"n": -1}'),
    control("/_sim/step", b'{"n": 1.5}'),
    control("/_sim/step", b'{"n": 1000001}'),
    control("/_sim/path", b"not json"),
    control("/_sim/path", b"{}", MANDATORY),
    control("/_sim/path", b'{"symbol": "BTCUSDT"}', MANDATORY),
    control("/_sim/path", b'{"symbol": "BTCUSDT", "prices": "x"}'),
    control("/_sim/path", b'{"symbol": "BTCUSDT", "prices": [NaN]}'),
    control("/_sim/path", b'{"symbol": "BTCUSDT", "prices": [-1]}'),
    control("/_sim/path", b'{"symbol": "BTCUSDT", "prices": ["a"]}'),
    control("/_sim/path", b'{"symbol": "FOO", "prices": [1]}', -1121),
    control("/_sim/faults", b"not json"),
    control("/_sim/faults", b'{"rates": "x"}'),
    control("/_sim/faults", b'{"rates": {"drop": "x"}}'),
    control("/_sim/faults", b'{"rates": {"drop": NaN}}'),
    control("/_sim/faults", b'{"rates": {"bogus": 1}}'),
    control("/_sim/faults", b'{"latency_ms": "abc"}'),
    control("/_sim/faults", b'{"latency_ms": -5}'),
    control("/_sim/faults", b'{"timeout_hold_s": "x"}'),
    control("/_sim/faults", b'{"seed": "x"}'),
    control("/_sim/faults", b'{"garbage": {"html_200": 2}}'),
    control("/_sim/faults", b'{"garbage_paths": "/fapi/v1/klines"}'),
    control("/_sim/faults", b'{"garbage_paths": [1]}'),
]  # fmt: skip


def build(case: Case, sim: SimHandle) -> tuple[bytes, dict[str, bytes], bytes]:
    """Return the request target, headers and body of a case."""
    params = case.params.encode("latin-1")
    headers = dict(case.headers)
    if case.signed:
        names = {p.partition("=")[0] for p in case.params.split("&")}
        ts = -1 if "timestamp" in names or case.extra.get("no_timestamp") else None
        signed = signed_params(case.params, sim.api_secret, ts).encode("latin-1")
        if case.signature is not None:
            signed = signed.rpartition(b"&signature=")[0] + b"&signature=" + case.signature
        params = signed
        if case.key is not None:
            headers["X-MBX-APIKEY"] = case.key
    in_body = case.method == "POST" and case.body is None
    body = case.body if case.body is not None else (params if in_body else b"")
    if in_body:
        headers.setdefault("Content-Type", FORM.encode())
    target = case.path.encode() + (b"?" + params if params and not in_body else b"")
    return target, headers, body


def problem(case: Case, answer: Answer) -> str | None:
    """Return what is wrong with the answer to a case, or None when it is Binance's."""
    if case.http_layer:
        return None if answer.status == case.status else f"{answer.status}, expected 400"
    try:
        data = answer.json()
    except ValueError:
        return f"{answer.status} not JSON: {answer.body[:80]!r}"
    if not (isinstance(data, dict) and set(data) == {"code", "msg"}):
        return f"{answer.status} not {{code, msg}}: {data!r:.80}"
    if not (isinstance(data["code"], int) and data["code"] < 0 and isinstance(data["msg"], str)):
        return f"{answer.status} bad code or msg: {data!r:.80}"
    if "application/json" not in answer.headers.get("content-type", ""):
        return f"{answer.status} content type {answer.headers.get('content-type')}"
    if (answer.status, data["code"]) != (case.status, case.code):
        return f"{answer.status} {data!r:.100}, expected {case.status} {case.code}"
    return None


async def test_every_malformed_request_gets_binances_error_json(sim: SimHandle) -> None:
    sim.set_path("BTCUSDT", [60_000.0] * 3)
    wrong: list[str] = []
    tally = {"5xx": 0, "2xx": 0, "not JSON {code,msg}": 0}
    for case in CASES:
        target, headers, body = build(case, sim)
        answer = await send(sim.base_url, case.method, target, headers=headers, body=body)
        issue = problem(case, answer)
        if answer.status >= 500:
            tally["5xx"] += 1
        elif answer.status < 300:
            tally["2xx"] += 1
        if issue is not None and issue.split()[1] == "not":
            tally["not JSON {code,msg}"] += 1
        if issue is not None:
            wrong.append(f"{case.id}: {issue}")
    summary = ", ".join(f"{n} {k}" for k, n in tally.items())
    assert not wrong, f"{len(wrong)} of {len(CASES)} wrong ({summary}):\n" + "\n".join(wrong)
    assert sim.account.orders == {}
    assert sim.account.algo_orders == {}
    assert len(CASES) >= 150


async def test_ccxt_maps_parameter_errors_to_non_retryable_errors(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    wrong: list[str] = []
    replayed = [c for c in CASES if c.ccxt]
    for case in replayed:
        method = getattr(ex, CCXT_METHODS[(case.method, case.path)])
        try:
            await method(dict(parse_qsl(case.params, keep_blank_values=True)))
        except ccxt.BaseError as err:
            if isinstance(err, ccxt.NetworkError) or classify(err) in RETRYABLE:
                wrong.append(f"{case.id}: retryable {err!r:.120}")
            elif binance_code(err) != str(case.code):
                wrong.append(f"{case.id}: {err!r:.120}, expected {case.code}")
        else:
            wrong.append(f"{case.id}: accepted")
    assert not wrong, f"{len(wrong)} of {len(replayed)} wrong:\n" + "\n".join(wrong)
    assert len(replayed) >= 90


async def test_trailing_zeros_are_not_extra_precision(sim: SimHandle) -> None:
    # BTCUSDT takes 3 quantity and 1 price decimals: "0.010000" and "59000.00" are on them.
    sim.set_path("BTCUSDT", [60_000.0] * 3)
    for path, params in (
        ("/fapi/v1/order", f"{ORDER}&quantity=0.010000"),
        ("/fapi/v1/algoOrder", f"{ALGO}&reduceOnly=true&triggerPrice=59000.00"),
    ):
        case = Case(path, "POST", path, params, signed=True)
        target, headers, body = build(case, sim)
        answer = await send(sim.base_url, "POST", target, headers=headers, body=body)
        assert answer.status == 200, answer.body
    (order,) = sim.account.orders.values()
    (stop,) = sim.account.algo_orders.values()
    assert (order.orig_qty, stop.trigger_price) == (0.01, 59_000.0)
