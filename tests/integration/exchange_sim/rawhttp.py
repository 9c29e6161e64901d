"""Raw HTTP/1.1 requests to the simulator, byte for byte as written (no client normalising).

``send`` writes one request on a fresh connection (``Connection: close``) and reads the whole
answer; ``signed_params`` appends a timestamp and Binance's HMAC-SHA256 signature to a raw
parameter string, as a Binance client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (lower-case names) and the raw body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """Return the body parsed as JSON (raises ValueError if it is not JSON)."""
        return json.loads(self.body)


def now_ms() -> int:
    """Return the host's wall clock in ms."""
    return int(time.time() * 1000)


def signature(payload: bytes, secret: str) -> str:
    """Return the hex HMAC-SHA256 of the raw bytes a Binance client signs."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def signed_params(params: str, secret: str, timestamp: int | None = None) -> str:
    """Return ``params&timestamp=T&signature=S`` (no timestamp added when ``timestamp`` < 0).

    The parameters are signed as the latin-1 bytes sent (one byte per character).
    """
    ts = now_ms() if timestamp is None else timestamp
    full = params if ts < 0 else "&".join(p for p in (params, f"timestamp={ts}") if p)
    return f"{full}&signature={signature(full.encode('latin-1'), secret)}"


def _dechunk(body: bytes) -> bytes:
    """Decode a chunked transfer-encoded body."""
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


async def send(
    base_url: str,
    method: str,
    target: bytes | str,
    *,
    headers: Mapping[str, bytes | str] | None = None,
    body: bytes | str = b"",
    read_s: float = 10.0,
) -> Answer:
    """Send one request exactly as given and return the answer."""
    url = urlsplit(base_url)
    assert url.hostname is not None
    assert url.port is not None
    raw_target = target.encode() if isinstance(target, str) else target
    raw_body = body.encode() if isinstance(body, str) else body
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: " + url.netloc.encode()]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    lines += [b"Connection: close", b"Content-Length: " + str(len(raw_body)).encode()]
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):  # answered (413) before the whole body
            writer.write(raw_body)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), read_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return Answer(int(status_line.split()[1]), parsed, payload)
