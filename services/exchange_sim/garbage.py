"""Garbage market data: answers corrupted the ways a broken exchange, cache or proxy does.

Pure functions over the JSON an endpoint answers. Kinds (``faults.GARBAGE_KINDS``):

- ``nan_price``, ``zero_price``, ``negative_price``: klines: the newest closed candle's close
  is ``"NaN"`` / its low is ``"0"`` / its low is negative; tickers and premiumIndex: every
  price of the answer (``lastPrice``, ``price``, ``markPrice``, ``indexPrice``) is so.
- ``high_below_low``: the newest closed candle's high is below its low.
- ``duplicate``: the newest closed candle is listed twice.
- ``out_of_order``: the newest closed candle is listed before its predecessor.
- ``missing``: the newest closed candle is left out.
- ``html_200``, ``html_5xx``: an HTML error page instead of JSON, with status 200 or
  502/503 (served by the middleware; the request is not executed).

"The newest closed candle" is the last row whose close time is before the exchange clock:
the candle a bot publishes at this close.
"""

from __future__ import annotations

import copy
from typing import Any

PRICE_KINDS = ("nan_price", "zero_price", "negative_price")
CANDLE_KINDS = ("high_below_low", "duplicate", "out_of_order", "missing")
HTML_KINDS = ("html_200", "html_5xx")
KLINES = "/fapi/v1/klines"
PRICE_PATHS = frozenset(
    {
        "/fapi/v1/ticker/24hr",
        "/fapi/v1/ticker/price",
        "/fapi/v2/ticker/price",
        "/fapi/v1/premiumIndex",
    }
)
HTML_ONLY_PATHS = frozenset({"/fapi/v1/time", "/fapi/v1/exchangeInfo"})
PRICE_FIELDS = ("lastPrice", "price", "markPrice", "indexPrice")
HTML_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def applicable(method: str, path: str) -> tuple[str, ...]:
    """Return the garbage kinds that can hit a request (none but market data GETs)."""
    if method != "GET":
        return ()
    if path == KLINES:
        return PRICE_KINDS + CANDLE_KINDS + HTML_KINDS
    if path in PRICE_PATHS:
        return PRICE_KINDS + HTML_KINDS
    if path in HTML_ONLY_PATHS:
        return HTML_KINDS
    return ()


def _bad_price(kind: str, value: str) -> str:
    """Return the corrupted text of one price."""
    if kind == "nan_price":
        return "NaN"
    if kind == "zero_price":
        return "0"
    return value if value.startswith("-") else "-" + value


def corrupt_klines(rows: list[list[Any]], kind: str, now_ms: int) -> list[list[Any]]:
    """Return kline rows with the newest closed one corrupted (unchanged if none closed)."""
    out = copy.deepcopy(rows)
    closed = [i for i, r in enumerate(out) if int(r[6]) < now_ms]
    if not closed:
        return out
    i = closed[-1]
    row = out[i]
    if kind == "nan_price":
        row[4] = _bad_price(kind, row[4])
    elif kind in ("zero_price", "negative_price"):
        row[3] = _bad_price(kind, row[3])
    elif kind == "high_below_low":
        if float(row[2]) != float(row[3]):
            row[2], row[3] = row[3], row[2]
        else:  # a flat candle: put the high just below the low
            decimals = len(row[3].partition(".")[2])
            row[2] = f"{float(row[3]) * 0.99:.{decimals}f}"
    elif kind == "duplicate":
        out.insert(i + 1, copy.deepcopy(row))
    elif kind == "out_of_order" and len(out) > 1:
        j = i - 1 if i > 0 else i + 1
        out[i], out[j] = out[j], out[i]
    elif kind == "missing":
        del out[i]
    return out


def corrupt_prices(payload: Any, kind: str) -> Any:
    """Return a ticker / price / premiumIndex answer (object or list) with every price bad."""
    out = copy.deepcopy(payload)
    for entry in out if isinstance(out, list) else [out]:
        for name in PRICE_FIELDS:
            if isinstance(entry.get(name), str):
                entry[name] = _bad_price(kind, entry[name])
    return out


def corrupt(path: str, kind: str, payload: Any, now_ms: int) -> Any:
    """Return an endpoint's JSON answer corrupted by ``kind`` (HTML kinds are not JSON)."""
    if path == KLINES:
        return corrupt_klines(payload, kind, now_ms)
    if kind in PRICE_KINDS:
        return corrupt_prices(payload, kind)
    return payload
