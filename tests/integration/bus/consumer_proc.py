"""A consumer in its own process, for the reclaim test: records what it handles, hangs on one.

Usage: ``python -m tests.integration.bus.consumer_proc URL NAME HANG_ON_TS``. The handler adds
each message's symbol to ``test:handled:NAME``; on the message with ``ts == HANG_ON_TS`` it
sets ``test:hanging`` and never returns, so the batch stays pending until the process dies.
"""

from __future__ import annotations

import asyncio
import sys

from shared.bus import Consumer
from shared.redisconn import redis_from_url
from shared.schemas import PriceTick
from tests.integration.bus.helpers import GROUP, STREAM


async def main(url: str, name: str, hang_on: int) -> None:
    """Consume the test stream until killed."""
    client = redis_from_url(url)

    async def handle(msg: PriceTick, entry_id: str) -> None:
        await client.sadd(f"test:handled:{name}", msg.symbol)
        if msg.ts == hang_on:
            await client.set("test:hanging", name)
            await asyncio.Event().wait()

    consumer = Consumer(client, STREAM, GROUP, name, handle, PriceTick, count=50, block_ms=200)
    await consumer.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
