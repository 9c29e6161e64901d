"""Binance request signing checks: API key header, HMAC-SHA256 signature, timestamp window.

Binance signs ``totalParams``: the raw query string followed by the raw body, without the
``signature`` parameter. A request passes the time check when
``timestamp < server_time + 1000`` and ``server_time - timestamp <= recvWindow``.
The simulator accepts a timestamp that passes against either its simulated clock or the
host's wall clock, because a stepped or sped-up market clock would otherwise reject every
client that signs with its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from services.exchange_sim.engine import SimError
from shared.config import SIM_API_KEY, SIM_API_SECRET

DEFAULT_API_KEY = SIM_API_KEY
DEFAULT_API_SECRET = SIM_API_SECRET
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


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


def verify(
    api_key_header: str | None,
    raw_query: str,
    raw_body: str,
    api_key: str,
    api_secret: str,
    clocks_ms: tuple[int, ...],
) -> dict[str, str]:
    """Check key, signature and timestamp; return the request's parameters or raise SimError."""
    if not api_key_header:
        raise SimError(-2014, "API-key format invalid.", 401)
    if not hmac.compare_digest(api_key_header, api_key):
        raise SimError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    query, sig_q = split_signature(raw_query)
    body, sig_b = split_signature(raw_body)
    signature = sig_q or sig_b
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    if "timestamp" not in params:
        raise SimError(
            -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        )
    if signature is None:
        raise SimError(
            -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
        )
    if not hmac.compare_digest(sign(query + body, api_secret), signature.lower()):
        raise SimError(-1022, "Signature for this request is not valid.")
    try:
        timestamp = int(params["timestamp"])
        recv_window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW))
    except ValueError:
        raise SimError(-1100, "Illegal characters found in parameter 'timestamp'.") from None
    if recv_window > MAX_RECV_WINDOW:
        raise SimError(-1131, "recvWindow must be less than 60000")
    if not any(timestamp < now + 1000 and now - timestamp <= recv_window for now in clocks_ms):
        if all(timestamp >= now + 1000 for now in clocks_ms):
            raise SimError(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        raise SimError(-1021, "Timestamp for this request is outside of the recvWindow.")
    return params
