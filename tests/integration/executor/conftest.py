"""Fixtures: an Executor in the test's loop, on a private Redis, against the ``sim`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from services.executor.service import Executor
from shared import keys
from shared.book import Universe
from shared.config import Settings
from shared.exchange import ExchangeClient
from shared.redisconn import EmbeddedRedis
from shared.schemas import EntrySignal, entry_signal_id
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.exchange.conftest import FAST

SOL = "SOL/USDT:USDT"
ETH = "ETH/USDT:USDT"


def stack_settings(sim: SimHandle, redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    """Return settings pointing at the sim fixture and the private Redis."""
    url = urlsplit(sim.base_url)
    fields: dict[str, Any] = {
        "exchange": "sim",
        "sim_host": url.hostname,
        "sim_port": url.port,
        "api_key": SecretStr(sim.api_key),
        "api_secret": SecretStr(sim.api_secret),
        "redis_url": SecretStr(redis_url),
        "metrics_port": 0,
        "log_dir": tmp,
        "recv_window_ms": 1_000,
        "entry_wait_ms": 500,
    }
    return Settings(**(fields | overrides))


class Harness:
    """An executor with its context, client and helpers to feed it."""

    def __init__(self, executor: Executor, sim: SimHandle, redis: aioredis.Redis) -> None:
        self.executor = executor
        self.sim = sim
        self.redis = redis

    async def now(self) -> int:
        return await self.executor.client.server_time()

    async def set_universe(self, *symbols: str) -> None:
        universe = Universe(symbols=list(symbols), rotated_ms=await self.now())
        await self.redis.set(keys.UNIVERSE, universe.dump())

    async def signal(
        self, symbol: str = SOL, side: str = "long", vr: float = 2.0, price: float | None = None
    ) -> EntrySignal:
        """Return an entry signal of the candle that closed last on the simulator."""
        now = await self.now()
        tf = self.executor.s.timeframe_ms
        open_ms = now - now % tf - tf
        ex_symbol = symbol.split("/")[0] + "USDT"
        return EntrySignal(
            id=entry_signal_id(symbol, "5m", open_ms, side),  # type: ignore[arg-type]
            symbol=symbol, timeframe="5m", candle_open_time=open_ms,
            side=side,  # type: ignore[arg-type]
            price=price or self.sim.sim.feed.price(ex_symbol), body_pct=0.01, vol_ratio=vr,
            chop=40.0, ts=now,
        )  # fmt: skip

    async def events(self) -> list[Any]:
        from shared.schemas import decode

        rows: Any = await self.redis.xrange(keys.STREAM_EVENTS)
        return [decode(f[b"d"]) for _, f in rows]


MakeHarness = Callable[..., Any]


@pytest.fixture
async def make_executor(
    sim: SimHandle, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[MakeHarness]:
    """Yield a factory of started executors (settings overrides as keywords)."""
    clients: list[ExchangeClient] = []

    async def make(**overrides: Any) -> Harness:
        settings = stack_settings(sim, redis_server.url, tmp_path, **overrides)
        ctx = ServiceContext(settings, "executor", "executor-test", redis_client)
        client = ExchangeClient.from_settings(settings, FAST)
        clients.append(client)
        await client.start()
        return Harness(Executor(ctx, client, await client.markets()), sim, redis_client)

    yield make
    for client in clients:
        await client.close()
