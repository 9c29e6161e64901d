"""Write the records the services keep (book, prices, universe, heartbeats) into a test Redis."""

from __future__ import annotations

import time

import redis

from shared import keys
from shared.book import (
    Account,
    BookPosition,
    ClosedTrade,
    Heartbeat,
    LastPrice,
    Record,
    Universe,
)
from shared.schemas import entry_signal_id

NOW = int(time.time() * 1000)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def position(symbol: str, side: str, qty: float, entry: float, **extra: object) -> BookPosition:
    """Return an open book position whose id is its entry signal id."""
    fields: dict[str, object] = {
        "position_id": entry_signal_id(symbol, "5m", T0, "long" if side == "long" else "short"),
        "symbol": symbol,
        "side": side,
        "quantity": qty,
        "entry_price": entry,
        "entry_time": T0 + 300_000,
        "stop_price": entry * (0.98 if side == "long" else 1.02),
        "stop_client_order_id": "stop-1",
        "best_price": entry,
    }
    return BookPosition.model_validate(fields | extra)


BTC_LONG = position("BTC/USDT:USDT", "long", 0.01, 60_000.0)
ETH_SHORT = position("ETH/USDT:USDT", "short", 0.5, 3_000.0, best_price=2_950.0)
TRADE = ClosedTrade(
    position_id=entry_signal_id("SOL/USDT:USDT", "5m", T0 - 600_000, "long"),
    symbol="SOL/USDT:USDT",
    side="long",
    quantity=2.0,
    entry_price=100.0,
    entry_time=T0 - 300_000,
    exit_price=103.0,
    exit_time=T0,
    fees=0.2,
    pnl=5.8,
    reason="trail",
)


def _put(client: redis.Redis, key: str, record: Record) -> None:
    client.set(key, record.dump())


def fill_book(client: redis.Redis, positions: list[BookPosition]) -> None:
    """Write open positions, their last prices, one closed trade, the account and universe."""
    for p in positions:
        client.hset(keys.BOOK_POSITIONS, p.position_id, p.dump())
    client.hset(keys.LAST_PRICES, BTC_LONG.symbol, LastPrice(price=61_000.0, ts=NOW).dump())
    client.hset(keys.LAST_PRICES, ETH_SHORT.symbol, LastPrice(price=2_900.0, ts=NOW).dump())
    client.hset(keys.BOOK_TRADES, TRADE.position_id, TRADE.dump())
    client.zadd(keys.BOOK_TRADE_LOG, {TRADE.position_id: TRADE.exit_time})
    _put(
        client,
        keys.BOOK_ACCOUNT,
        Account(wallet=1_000.0, equity=1_060.0, unrealized_pnl=60.0, ts=NOW),
    )
    _put(
        client,
        keys.UNIVERSE,
        Universe(symbols=[BTC_LONG.symbol, ETH_SHORT.symbol], rotated_ms=T0),
    )
    client.set(keys.MD_CLOCK, T0 + 600_000)


def write_beat(
    client: redis.Redis, service: str, instance: str, role: str, mode: str = "paper"
) -> None:
    """Write a live instance's heartbeat, one second old."""
    hb = Heartbeat.model_validate(
        {
            "service": service,
            "instance": instance,
            "pid": 4242,
            "role": role,
            "mode": mode,
            "started_ms": NOW - 60_000,
            "ts": int(time.time() * 1000) - 1_000,
        }
    )
    client.set(keys.heartbeat_key(service, instance), hb.dump(), px=60_000)
