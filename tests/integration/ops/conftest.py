"""A sync client and the CLI environment for the operator commands, on the private server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from shared.redisconn import EmbeddedRedis


@pytest.fixture
def sync_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """Return a plain client to the private server (the CLI runs its own event loop)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cli_env(redis_server: EmbeddedRedis) -> dict[str, str]:
    """Return the environment that points the tradebot CLI at the private server."""
    return {"TB_REDIS_URL": redis_server.url}
