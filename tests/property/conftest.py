"""Fixtures of the property tests: an executor started against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.executor.service import Executor
from shared.exchange import ExchangeClient
from shared.redisconn import EmbeddedRedis
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.exchange.conftest import FAST
from tests.integration.executor.conftest import stack_settings


@pytest.fixture
async def executor(
    sim: SimHandle, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[Executor]:
    """Yield an executor on the test's Redis, started against the simulator."""
    s = stack_settings(sim, redis_server.url, tmp_path)
    client = ExchangeClient.from_settings(s, FAST)
    await client.start()
    try:
        ctx = ServiceContext(s, "executor", "executor-fuzz", redis_client)
        yield Executor(ctx, client, await client.markets())
    finally:
        await client.close()
