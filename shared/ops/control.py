"""``tradebot halt``, ``resume`` and ``flatten``: steer the executor through Redis, never orders.

Only the executor sends orders. Halting sets ``keys.HALT`` (JSON {reason, ts}); the executor
opens no new entries while it exists and still manages exits. Flattening halts, then asks
for a market exit of every open book position by publishing a manual ``ExitSignal`` on the
signals stream (the executor closes it reduce-only and cancels its stop; state removes it
from the book), then watches the book until it is empty or a deadline passes. The exit ids
are deterministic, so running flatten twice asks for each exit once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis

from shared import book, keys
from shared.book import BookPosition, LastPrice
from shared.bus import publish_many
from shared.schemas import ExitSignal, exit_signal_id

FLATTEN_REASON = "flatten"
POLL_S = 0.5


def now_ms() -> int:
    """Return the wall clock in ms."""
    return int(time.time() * 1000)


async def halt(client: aioredis.Redis, reason: str) -> None:
    """Stop new entries: set the halt record (replacing any earlier one)."""
    await client.set(keys.HALT, orjson.dumps({"reason": reason, "ts": now_ms()}))


async def resume(client: aioredis.Redis) -> bool:
    """Allow new entries again; return whether trading was halted."""
    return bool(await client.delete(keys.HALT))


def manual_exit(pos: BookPosition, last: LastPrice | None, ts: int) -> ExitSignal:
    """Return the manual exit signal of one open position, priced at the last price or entry."""
    return ExitSignal(
        id=exit_signal_id(pos.position_id, "manual"),
        position_id=pos.position_id,
        symbol=pos.symbol,
        side=pos.side,
        reason="manual",
        price=last.price if last is not None else pos.entry_price,
        best_price=pos.best_price,
        ts=ts,
    )


async def request_exits(client: aioredis.Redis, positions: list[BookPosition]) -> list[ExitSignal]:
    """Publish one manual exit signal per position on the signals stream; return them."""
    if not positions:
        return []
    prices = await book.read_last_prices(client)
    ts = now_ms()
    exits = [manual_exit(p, prices.get(p.symbol), ts) for p in positions]
    await publish_many(client, keys.STREAM_SIGNALS, exits)
    return exits


async def close_all(
    client: aioredis.Redis,
    timeout_s: float,
    on_change: Callable[[dict[str, BookPosition]], None],
) -> tuple[int, dict[str, BookPosition]]:
    """Ask for the exit of every open position until the book is empty or ``timeout_s`` passed.

    A position that appears meanwhile (an entry already in flight when the halt was set) gets
    its exit too. ``on_change`` is called with the open positions whenever their set changes.
    Returns how many exits were requested and the positions still open.
    """
    deadline = time.monotonic() + timeout_s
    requested: set[str] = set()
    seen: set[str] | None = None
    while True:
        positions = await book.read_positions(client)
        new = [p for pid, p in positions.items() if pid not in requested]
        await request_exits(client, new)
        requested.update(p.position_id for p in new)
        if seen is None or set(positions) != seen:
            seen = set(positions)
            on_change(positions)
        if not positions or time.monotonic() >= deadline:
            return len(requested), positions
        await asyncio.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
