"""Helpers for the bus tests: poll-with-deadline, a running consumer, stream inspection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from shared import keys
from shared.bus import Consumer
from shared.schemas import DlqEntry, PriceTick, decode

STREAM = keys.STREAM_TICKS
GROUP = "test"


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 20.0
) -> None:
    """Poll ``check`` until it is true; fail the test if it is not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def text(value: Any) -> str:
    """Return a Redis reply value (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def tick(i: int) -> PriceTick:
    """Return test message number ``i``."""
    return PriceTick(symbol=f"S{i}", price=1.0 + i, ts=i)


@contextlib.asynccontextmanager
async def running(consumer: Consumer[Any]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a consumer in a task for the duration of the block, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def pending_count(client: aioredis.Redis, stream: str = STREAM, group: str = GROUP) -> int:
    """Return how many entries of the group are delivered but not acked."""
    info: Any = await client.xpending(stream, group)
    return int(info["pending"])


async def dlq_entries(client: aioredis.Redis) -> list[DlqEntry]:
    """Return every entry of the dead-letter stream, decoded."""
    rows: Any = await client.xrange(keys.STREAM_DLQ)
    return [decode(fields[b"d"], DlqEntry) for _, fields in rows]
