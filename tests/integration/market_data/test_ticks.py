"""Ticks: one per universe and open-position symbol every scan, before the scan's candles."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.book import BookPosition, read_last_prices
from tests.fixtures.sim import SimHandle
from tests.integration.market_data.conftest import MakeScanner, stream_ticks

BTC, ETH, SOL, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"


def position(symbol: str) -> BookPosition:
    """Return an open long position on a symbol."""
    return BookPosition(
        position_id=f"{symbol}|5m|0|long",
        symbol=symbol,
        side="long",
        quantity=1.0,
        entry_price=100.0,
        entry_time=0,
        stop_price=98.0,
        best_price=100.0,
    )


async def test_ticks_cover_the_universe_and_open_positions(
    sim: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(sim, top_n=2, coin_rotate_hours=1000)
    published = REGISTRY.get_sample_value("tradebot_ticks_total") or 0
    assert await md.scan()
    assert REGISTRY.get_sample_value("tradebot_ticks_total") == published + 2
    assert md.universe is not None
    assert md.universe.symbols == [BTC, ETH]
    first = await stream_ticks(redis_client)
    assert [(t.symbol, t.price, t.ts) for t in first] == [
        (BTC, 60_000.0, sim.sim.now_ms()),
        (ETH, 3_000.0, sim.sim.now_ms()),
    ]

    p = position(SOL)
    await redis_client.hset(keys.BOOK_POSITIONS, p.position_id, p.dump())
    sim.set_path("SOLUSDT", [151.5])
    sim.step(1)
    assert await md.scan()
    ticks = (await stream_ticks(redis_client))[2:]
    now = sim.sim.now_ms()
    assert [(t.symbol, t.price, t.ts) for t in ticks] == [
        (BTC, 60_000.0, now),
        (ETH, 3_000.0, now),
        (SOL, 151.5, now),
    ]
    prices = await read_last_prices(redis_client)
    assert {s: (lp.price, lp.ts) for s, lp in prices.items()} == {
        BTC: (60_000.0, now),
        ETH: (3_000.0, now),
        SOL: (151.5, now),
    }
    assert int(await redis_client.get(keys.MD_CLOCK) or 0) == now

    await redis_client.hdel(keys.BOOK_POSITIONS, p.position_id)  # closed: no more SOL ticks
    sim.step(1)
    assert await md.scan()
    assert [t.symbol for t in (await stream_ticks(redis_client))[5:]] == [BTC, ETH]


async def test_an_unlisted_position_symbol_does_not_stop_the_ticks(
    sim: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = position("GONE/USDT:USDT")
    await redis_client.hset(keys.BOOK_POSITIONS, p.position_id, p.dump())
    md = await make_scanner(sim, top_n=1)
    assert await md.scan()
    assert await md.scan()
    assert [t.symbol for t in await stream_ticks(redis_client)] == [BTC, BTC]
    assert caplog.text.count("GONE/USDT:USDT has an open position but is not listed") == 1


async def test_md_now_is_raised_before_the_ticks_and_never_lowered(
    sim: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(sim, top_n=2, coin_rotate_hours=1000)
    assert await md.scan()
    now = sim.sim.now_ms()
    assert int(await redis_client.get(keys.MD_NOW) or 0) == now
    assert all(t.ts <= now for t in await stream_ticks(redis_client))

    await redis_client.set(keys.MD_NOW, now + 3_600_000)  # a newer holder read a later clock
    sim.step(1)
    assert await md.scan()
    assert int(await redis_client.get(keys.MD_NOW) or 0) == now + 3_600_000
