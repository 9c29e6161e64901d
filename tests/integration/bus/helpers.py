"""Helpers for the bus tests: poll-with-deadline, a running consumer, stream inspection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

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


class Link:
    """A TCP relay to a real server that can instead drop (close at once) or hang (accept,
    never answer) new connections, and hold every reply ``reply_delay_s`` (a slow link);
    counts the connections it accepts."""

    def __init__(self, port: int, reply_delay_s: float = 0.0) -> None:
        self.port = port
        self.reply_delay_s = reply_delay_s
        self.mode: Literal["pass", "drop", "hang"] = "pass"
        self.accepted = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float = 0.0
    ) -> None:
        try:
            while data := await src.read(65536):
                if delay_s:
                    await asyncio.sleep(delay_s)  # the injected latency, not a wait for anything
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            if self.mode == "drop":
                return
            if self.mode == "hang":
                while await reader.read(65536):  # swallow the commands; the client times out
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer, self.reply_delay_s)
            )
        except ConnectionError:
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        """Yield the relay's port while it listens."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
