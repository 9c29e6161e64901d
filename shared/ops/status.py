"""``tradebot status``: read the bot's state from Redis into one JSON-ready report.

Reads only: heartbeats, leases, the halt flag, the universe, the book (positions, recent
trades, account), last prices, the market-data clock and the streams' lengths and groups.
Works on an empty Redis (nothing running yet): every part is then empty or None.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared import book, keys
from shared.book import BookPosition, ClosedTrade, Heartbeat, LastPrice
from shared.config import Settings

SINGLE_ACTIVE = ("market_data", "executor", "state")
STREAMS = (
    keys.STREAM_CANDLES,
    keys.STREAM_TICKS,
    keys.STREAM_SIGNALS,
    keys.STREAM_EVENTS,
    keys.STREAM_DLQ,
)
RECENT_TRADES = 10


def position_row(pos: BookPosition, last: LastPrice | None) -> dict[str, Any]:
    """Return one open position as a report row, valued at the last price when known."""
    return {
        "position_id": pos.position_id,
        "symbol": pos.symbol,
        "side": pos.side,
        "quantity": pos.quantity,
        "entry_price": pos.entry_price,
        "entry_time": pos.entry_time,
        "stop_price": pos.stop_price,
        "stop_placed": pos.stop_client_order_id is not None,
        "best_price": pos.best_price,
        "last_price": None if last is None else last.price,
        "last_price_ts": None if last is None else last.ts,
        "unrealized_pnl": None if last is None else pos.unrealized(last.price),
        "exit_requested": pos.exit_requested,
        "adopted": pos.adopted,
    }


def trade_row(trade: ClosedTrade) -> dict[str, Any]:
    """Return one closed trade as a report row."""
    return trade.model_dump()


def service_rows(beats: list[Heartbeat], now_ms: int) -> list[dict[str, Any]]:
    """Return one row per live instance with the age of its last beat in seconds."""
    return [
        {
            "service": b.service,
            "instance": b.instance,
            "pid": b.pid,
            "role": b.role,
            "mode": b.mode,
            "started_ms": b.started_ms,
            "age_s": round(max(now_ms - b.ts, 0) / 1000, 1),
        }
        for b in beats
    ]


def without_active(beats: list[Heartbeat]) -> list[str]:
    """Return the single-active services that have no active instance now."""
    active = {b.service for b in beats if b.role == "active"}
    return [s for s in SINGLE_ACTIVE if s not in active]


def pick_mode(beats: list[Heartbeat], settings: Settings) -> str:
    """Return the mode the running services report (joined if they disagree), else the settings'."""
    modes = sorted({b.mode for b in beats})
    return ",".join(modes) if modes else settings.mode


async def read_leases(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Return each single-active service's lease key, whether it is held and its time left."""
    out = []
    for service in SINGLE_ACTIVE:
        key = keys.lease_key(service)
        ttl: Any = await client.pttl(key)
        held = int(ttl) > 0 or int(ttl) == -1
        out.append({"service": service, "key": key, "held": held, "ttl_ms": max(int(ttl), 0)})
    return out


async def read_halt(client: aioredis.Redis) -> dict[str, Any] | None:
    """Return the halt record ({reason, ts}) or None when trading is not halted."""
    raw: Any = await client.get(keys.HALT)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"reason": raw.decode(errors="replace"), "ts": None}
    return value if isinstance(value, dict) else {"reason": str(value), "ts": None}


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def read_stream(client: aioredis.Redis, stream: str) -> dict[str, Any]:
    """Return a stream's length and, per consumer group, its consumers, pending count and lag."""
    if not await client.exists(stream):
        return {"stream": stream, "length": 0, "groups": []}
    length = int(await client.xlen(stream))
    groups: Any = await client.xinfo_groups(stream)
    rows = [
        {
            "group": _text(g["name"]),
            "consumers": int(g["consumers"]),
            "pending": int(g["pending"]),
            "lag": None if g.get("lag") is None else int(g["lag"]),
        }
        for g in groups
    ]
    return {"stream": stream, "length": length, "groups": rows}


async def collect(client: aioredis.Redis, settings: Settings) -> dict[str, Any]:
    """Read everything ``tradebot status`` shows; return it as one JSON-ready object."""
    now_ms = int(time.time() * 1000)
    beats = await book.read_heartbeats(client)
    positions = await book.read_positions(client)
    prices = await book.read_last_prices(client)
    universe = await book.read_universe(client)
    account = await book.read_account(client)
    trades = await book.read_recent_trades(client, RECENT_TRADES)
    halt = await read_halt(client)
    clock: Any = await client.get(keys.MD_CLOCK)
    streams = [await read_stream(client, s) for s in STREAMS]
    dlq = next(s for s in streams if s["stream"] == keys.STREAM_DLQ)
    ordered = sorted(positions.values(), key=lambda p: (p.entry_time, p.symbol))
    return {
        "now_ms": now_ms,
        "services": service_rows(beats, now_ms),
        "without_active": without_active(beats),
        "leases": await read_leases(client),
        "mode": pick_mode(beats, settings),
        "halted": halt is not None,
        "halt": halt,
        "universe": None
        if universe is None
        else {"symbols": universe.symbols, "rotated_ms": universe.rotated_ms},
        "positions": [position_row(p, prices.get(p.symbol)) for p in ordered],
        "trades": [trade_row(t) for t in trades],
        "account": None if account is None else account.model_dump(),
        "streams": streams,
        "dlq": {"size": dlq["length"]},
        "md_clock_ms": None if clock is None else int(clock),
    }
