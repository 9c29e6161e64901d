"""Helpers for the signals worker tests: candle series, market_data's writes, running workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from services.signals.service import run
from shared import keys
from shared.bus import publish
from shared.config import Settings
from shared.redisconn import EmbeddedRedis, redis_from_url
from shared.schemas import Candle, EntrySignal, decode, encode
from shared.service import ServiceContext

TF = "5m"
TF_MS = 300_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a 5m boundary


def make_settings(server: EmbeddedRedis, tmp_path: Path, **overrides: Any) -> Settings:
    """Return settings for a worker on the test server (no metrics port, logs in tmp)."""
    return Settings(
        redis_url=SecretStr(server.url),
        metrics_port=0,
        log_dir=tmp_path / "logs",
        timeframe=TF,
        **overrides,
    )


def trend(
    symbol: str,
    *,
    n: int = 30,
    step: float = 0.003,
    last_move: float = 0.02,
    last_volume: float = 500.0,
    timeframe: str = TF,
    tf_ms: int = TF_MS,
    start: int = T0,
) -> list[Candle]:
    """Return n candles moving ``step`` each (volume 100), the last one ``last_move``.

    With the defaults the last candle is a long (body 2%, VR 5, CHOP about 14); a negative
    step and move make a short; ``last_volume=100`` (VR 1) makes it qualify for nothing.
    """
    out: list[Candle] = []
    price = 100.0
    for i in range(n):
        move, volume = (step, 100.0) if i < n - 1 else (last_move, last_volume)
        o, c = price, price * (1 + move)
        out.append(
            Candle(
                symbol=symbol,
                timeframe=timeframe,
                open_time=start + i * tf_ms,
                open=o,
                high=max(o, c) * 1.001,
                low=min(o, c) * 0.999,
                close=c,
                volume=volume,
            )
        )
        price = c
    return out


async def store(client: aioredis.Redis, candles: list[Candle]) -> None:
    """Keep candles in the symbol's window ZSET, as market_data does."""
    c0 = candles[0]
    key = keys.candles_key(c0.symbol, c0.timeframe)
    await client.zadd(key, {encode(c): c.open_time for c in candles})


async def store_and_publish(client: aioredis.Redis, candles: list[Candle]) -> Candle:
    """Store the window and publish its last candle on md.candles; return that candle."""
    await store(client, candles)
    await publish(client, keys.STREAM_CANDLES, candles[-1])
    return candles[-1]


async def signals(client: aioredis.Redis) -> list[EntrySignal]:
    """Return every entry signal on the signals stream, oldest first."""
    rows: Any = await client.xrange(keys.STREAM_SIGNALS)
    return [decode(fields[b"d"], EntrySignal) for _, fields in rows]


async def evaluated(client: aioredis.Redis, candle: Candle) -> set[str]:
    """Return the symbols marked evaluated for the close time of this candle."""
    members: Any = await client.smembers(keys.close_evaluated_key(candle.open_time + TF_MS))
    return {m.decode() for m in members}


async def pending(client: aioredis.Redis) -> int:
    """Return how many md.candles entries the signals group holds unacked."""
    info: Any = await client.xpending(keys.STREAM_CANDLES, keys.GROUP_SIGNALS)
    return int(info["pending"])


@contextlib.asynccontextmanager
async def workers(settings: Settings, count: int = 1) -> AsyncIterator[list[ServiceContext]]:
    """Run ``count`` worker bodies (own client each, one group) as tasks; stop them after."""
    url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    ctxs = [
        ServiceContext(settings, "signals", f"signals-test-{i}", redis_from_url(url))
        for i in range(count)
    ]
    tasks = [asyncio.create_task(run(ctx)) for ctx in ctxs]
    try:
        yield ctxs
    finally:
        for ctx in ctxs:
            ctx.stop.set()
        try:
            for task in tasks:
                await asyncio.wait_for(task, 30)  # raises if a worker crashed
        finally:
            for ctx in ctxs:
                await ctx.redis.aclose()
