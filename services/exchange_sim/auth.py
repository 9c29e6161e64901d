"""Binance request signing checks: API key header, HMAC-SHA256 signature, timestamp window.

Binance signs ``totalParams``: the raw query string followed by the raw body, without the
``signature`` parameter. A request passes the time check when
``timestamp < server_time + 1000`` and ``server_time - timestamp <= recvWindow``
(recvWindow 1..60000 ms, default 5000), server_time being Binance's clock, which runs in
real time.

The simulator has two clocks: the host's wall clock, and the market clock (``GET /time``)
that may be frozen, stepped or sped up. recvWindow is about real time (how long a request
was on its way or held), so each timestamp is judged against the clock it was read from:

- A timestamp within ``HOST_BAND_MS`` (60 s + 1 s) of the host clock was signed with the
  host clock (what the bot does against the simulator) and is judged against the host
  clock alone. However the market clock moves, a request held longer than its recvWindow
  is refused (-1021).
- Any other timestamp was signed with the market clock (a client that measured its offset
  from ``GET /time``, as against Binance) and is judged against the market clock. A market
  clock that stands still cannot age a request, so such a timestamp is accepted only while
  the market clock has moved within the request's recvWindow (real time): on a stepped
  market, within recvWindow after a step.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import re
from dataclasses import dataclass

from services.exchange_sim import params as P
from services.exchange_sim.engine import SimError
from shared.config import SIM_API_KEY, SIM_API_SECRET

DEFAULT_API_KEY = SIM_API_KEY
DEFAULT_API_SECRET = SIM_API_SECRET
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
AHEAD_MS = 1000  # a timestamp this far ahead of the server clock is refused
HOST_BAND_MS = MAX_RECV_WINDOW + AHEAD_MS
SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")
BAD_KEY = SimError(-2014, "API-key format invalid.", 401)
BAD_SIGNATURE = SimError(-1022, "Signature for this request is not valid.")
OUTSIDE = SimError(-1021, "Timestamp for this request is outside of the recvWindow.")
AHEAD = SimError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


@dataclass(frozen=True)
class Clocks:
    """What a timestamp is judged against: the host clock, the market clock, and the host
    time at which the market clock last changed (all in ms)."""

    host_ms: int
    market_ms: int
    market_moved_ms: int


def sign(payload: str, secret: str) -> str:
    """Return the hex HMAC-SHA256 of a payload, as Binance clients compute it."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(raw: str) -> tuple[str, str | None]:
    """Return the raw parameter string without its ``signature`` item, and the signature."""
    kept, signature = [], None
    for item in raw.split("&") if raw else []:
        if item.startswith("signature="):
            signature = item.removeprefix("signature=")
        else:
            kept.append(item)
    return "&".join(kept), signature


def body_text(raw: bytes, charset: str | None) -> str:
    """Return a form body as text: it must be ASCII, and read the same in its declared
    charset (an unknown charset, or one in which the bytes mean other text, is -1100)."""
    text = P.ascii_text(raw)
    if charset is not None:
        try:
            declared = codecs.lookup(charset).decode(raw)[0]
        except (LookupError, ValueError):
            declared = None
        if declared != text:
            raise SimError(-1100, "Illegal characters found in a parameter.")
    return text


def check_key(header: str | None, api_key: str) -> None:
    """Refuse a missing or malformed API key (-2014) and a wrong one (-2015)."""
    if not header or not (header.isascii() and header.isprintable()):
        raise BAD_KEY
    if not hmac.compare_digest(header.encode(), api_key.encode()):
        raise SimError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def check_time(timestamp: int, recv_window: int, clocks: Clocks) -> None:
    """Refuse a timestamp outside recvWindow of the clock it was signed with (see above)."""
    if abs(timestamp - clocks.host_ms) <= HOST_BAND_MS:
        now = clocks.host_ms
    else:
        now = clocks.market_ms
        if clocks.host_ms - clocks.market_moved_ms > recv_window:
            raise OUTSIDE  # a standing market clock: the request's age is unknown
    if timestamp >= now + AHEAD_MS:
        raise AHEAD
    if now - timestamp > recv_window:
        raise OUTSIDE


def verify(
    api_key_header: str | None,
    raw_query: str,
    raw_body: bytes,
    charset: str | None,
    api_key: str,
    api_secret: str,
    clocks: Clocks,
) -> P.Params:
    """Check key, signature and timestamp; return the request's parameters or raise SimError."""
    check_key(api_key_header, api_key)
    if not raw_query.isascii():
        raise SimError(-1100, "Illegal characters found in a parameter.")
    query, sig_q = split_signature(raw_query)
    body, sig_b = split_signature(body_text(raw_body, charset))
    signature = sig_q or sig_b
    params = P.parse(query, body)
    P.need(params, "timestamp")
    if not signature:
        raise P.mandatory("signature")
    if not SIGNATURE.match(signature):
        raise BAD_SIGNATURE
    if not hmac.compare_digest(sign(query + body, api_secret), signature.lower()):
        raise BAD_SIGNATURE
    timestamp = P.integer(params, "timestamp")
    assert timestamp is not None
    recv_window = P.integer(params, "recvWindow")
    if recv_window is None:
        recv_window = DEFAULT_RECV_WINDOW
    if recv_window == 0:
        raise P.invalid("recvWindow")
    if recv_window > MAX_RECV_WINDOW:
        raise SimError(-1131, "recvWindow must be less than 60000")
    check_time(timestamp, recv_window, clocks)
    return params
