"""Fixtures for market_data: settings for a simulator, a synthetic market, scanner factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from services.exchange_sim.market import Market
from services.market_data.service import MarketClient, MarketData
from shared import keys
from shared.config import Settings
from shared.exchange import ExchangeClient, Tuning
from shared.exchange_errors import BackoffPolicy, OperationalError, TemporaryError
from shared.exchange_models import OHLCV, MarketInfo, Ticker
from shared.redisconn import EmbeddedRedis
from shared.schemas import Candle, PriceTick, decode
from tests.fixtures.sim import SimHandle, running_sim

TF_MS = 300_000
STEPS_PER_CANDLE = 4  # the synthetic market plays four price events per 5m candle
QUICK = Tuning(
    backoff=BackoffPolicy(attempts=3, initial=0.01, maximum=0.05),
    timeout_ms=5_000,
    enable_rate_limit=False,
)


def md_settings(sim: SimHandle, redis_url: str, log_dir: Path, **overrides: Any) -> Settings:
    """Return settings for market_data against a simulator and a Redis server."""
    values: dict[str, Any] = {
        "exchange": "sim",
        "sim_host": "127.0.0.1",
        "sim_port": urlsplit(sim.base_url).port,
        "api_key": SecretStr(sim.api_key),
        "api_secret": SecretStr(sim.api_secret),
        "redis_url": SecretStr(redis_url),
        "top_n": 4,
        "candle_limit": 10,
        "vr_window": 5,
        "chop_period": 5,
        "scan_interval": 0.05,
        "metrics_port": 0,
        "log_dir": log_dir,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def synthetic() -> AsyncIterator[SimHandle]:
    """Yield a simulator over a 6-symbol synthetic market (clock moved by ``sim.step``)."""
    async with running_sim(feed=Market.synthetic(6, seed=3)) as handle:
        yield handle


MakeScanner = Callable[..., Awaitable[MarketData]]


@pytest.fixture
async def make_scanner(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[MakeScanner]:
    """Yield a factory of MarketData instances (fresh process state, same Redis)."""
    clients: list[ExchangeClient] = []

    async def make(
        sim: SimHandle,
        wrap: Callable[[ExchangeClient], MarketClient] | None = None,
        **overrides: Any,
    ) -> MarketData:
        settings = md_settings(sim, redis_server.url, tmp_path, **overrides)
        client = ExchangeClient.from_settings(settings, QUICK)
        clients.append(client)
        await client.start()
        return MarketData(settings, redis_client, wrap(client) if wrap else client)

    yield make
    for client in clients:
        await client.close()


class FlakyClient:
    """Wrap a real client to fail where a test says.

    ``ohlcv`` of the ``failing`` symbols raises TemporaryError, of the ``broken`` ones
    OperationalError; the rows of the ``corrupt`` symbols come back with their newest
    candle's high below its low; ``clock_down`` makes ``server_time`` raise TemporaryError.
    """

    def __init__(self, inner: ExchangeClient) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.broken: set[str] = set()
        self.corrupt: set[str] = set()
        self.clock_down = False

    async def server_time(self) -> int:
        if self.clock_down:
            raise TemporaryError("server_time: ExchangeNotAvailable: 503 (retries exhausted)")
        return await self.inner.server_time()

    async def markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return await self.inner.markets(reload)

    async def quote_volumes(self) -> dict[str, float]:
        return await self.inner.quote_volumes()

    async def tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]:
        return await self.inner.tickers(symbols)

    async def ohlcv(
        self, symbol: str, limit: int, *, timeframe: str | None = None, now_ms: int | None = None
    ) -> list[OHLCV]:
        if symbol in self.failing:
            raise TemporaryError("ohlcv: RequestTimeout: timed out (retries exhausted)", "ohlcv")
        if symbol in self.broken:
            raise OperationalError("ohlcv: ExchangeError: unexpected reply", "ohlcv")
        rows = await self.inner.ohlcv(symbol, limit, timeframe=timeframe, now_ms=now_ms)
        if symbol in self.corrupt and rows:
            r = rows[-1]
            rows[-1] = OHLCV(r.open_time, r.open, r.low * 0.9, r.high * 1.1, r.close, r.volume)
        return rows


async def stream_candles(client: aioredis.Redis) -> list[Candle]:
    """Return every candle message on md.candles, in stream order."""
    entries: Any = await client.xrange(keys.STREAM_CANDLES)
    return [decode(fields[b"d"], Candle) for _, fields in entries]


async def stream_ticks(client: aioredis.Redis) -> list[PriceTick]:
    """Return every tick message on md.ticks, in stream order."""
    entries: Any = await client.xrange(keys.STREAM_TICKS)
    return [decode(fields[b"d"], PriceTick) for _, fields in entries]


async def window(client: aioredis.Redis, symbol: str, timeframe: str = "5m") -> list[Candle]:
    """Return a symbol's stored window, oldest first, checking score = open time."""
    raw: Any = await client.zrange(keys.candles_key(symbol, timeframe), 0, -1, withscores=True)
    out = [decode(member, Candle) for member, _ in raw]
    assert [int(score) for _, score in raw] == [c.open_time for c in out]
    return out


async def expected(client: aioredis.Redis, close_ms: int) -> int | None:
    """Return the expected-count of a close time, or None when unset."""
    raw = await client.get(keys.close_expected_key(close_ms))
    return None if raw is None else int(raw)
