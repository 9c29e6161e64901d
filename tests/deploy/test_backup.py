"""The README's Redis backup and restore, done with the same tar commands on a real server.

Compose keeps Redis's files (AOF, fsync always) in the ``redis-data`` volume; the README
says: stop the stack, ``tar czf`` the volume's content, and to restore, empty the volume,
``tar xzf`` the archive into it and start. This runs exactly that against redis-server
(the volume being a directory) and reads the bot's records back through its own readers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared import book, keys
from shared.book import BookPosition
from shared.bus import publish
from shared.redisconn import EmbeddedRedis, redis_from_url, server_binary
from shared.schemas import PriceTick

POSITION = BookPosition(
    position_id="sig-1", symbol="BTC/USDT:USDT", side="long", quantity=0.01,
    entry_price=60_000.0, entry_time=1, stop_price=58_800.0, best_price=60_000.0,
)  # fmt: skip


def tar(*args: str) -> None:
    """Run tar as the README does (a plain function: the test's loop has nothing to do)."""
    subprocess.run(["tar", *args], check=True, timeout=60)


@pytest.mark.skipif(shutil.which("tar") is None, reason="tar is not installed")
async def test_a_volume_archived_while_stopped_restores_the_book_and_streams(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "redis-data"
    server = EmbeddedRedis(volume, binary=server_binary(prefer_path=True))
    server.start()
    client: aioredis.Redis = redis_from_url(server.url)
    try:
        await client.hset(keys.BOOK_POSITIONS, POSITION.position_id, POSITION.dump())
        tick = PriceTick(symbol=POSITION.symbol, price=60_500.0, ts=2)
        await publish(client, keys.STREAM_TICKS, tick)
    finally:
        await client.aclose()
    server.stop()  # `docker compose stop`: SIGTERM, the files are at rest

    archive = tmp_path / "redis-backup.tgz"
    tar("czf", str(archive), "-C", str(volume), ".")

    restored = tmp_path / "new-volume"  # an empty volume, as after `rm -rf /data/*`
    restored.mkdir()
    tar("xzf", str(archive), "-C", str(restored))
    again = EmbeddedRedis(restored, binary=server_binary(prefer_path=True))
    again.start()
    client = redis_from_url(again.url)
    try:
        assert await book.read_positions(client) == {POSITION.position_id: POSITION}
        entries: Any = await client.xrange(keys.STREAM_TICKS)
        assert len(entries) == 1
        assert b"60500" in b"".join(entries[0][1].values())
    finally:
        await client.aclose()
        again.stop()
