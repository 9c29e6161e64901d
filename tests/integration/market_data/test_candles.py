"""Closed candles: published once per close, across scans and restarts; windows, gaps, failures."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.exchange_errors import OperationalError
from tests.fixtures.sim import SimHandle
from tests.integration.market_data.conftest import (
    STEPS_PER_CANDLE,
    TF_MS,
    FlakyClient,
    MakeScanner,
    expected,
    stream_candles,
    window,
)


def metric(name: str, **labels: str) -> float:
    """Return a metric sample's value (0 when never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_fresh_start_publishes_only_the_newest_and_fills_the_window(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic)
    before_us = time.time_ns() // 1000
    assert await md.scan()
    after_us = time.time_ns() // 1000
    now = synthetic.sim.now_ms()
    close = now - now % TF_MS
    universe = md.universe
    assert universe is not None
    assert len(universe.symbols) == 4
    published = await stream_candles(redis_client)
    assert sorted(c.symbol for c in published) == sorted(universe.symbols)
    assert {c.open_time for c in published} == {close - TF_MS}
    assert {c.timeframe for c in published} == {"5m"}
    for symbol in universe.symbols:
        stored = await window(redis_client, symbol)
        assert len(stored) == 10
        assert [b.open_time - a.open_time for a, b in itertools.pairwise(stored)] == [TF_MS] * 9
        assert stored[-1].open_time == close - TF_MS
        assert stored[-1] in published
    last: Any = await redis_client.hgetall(keys.LAST_CANDLE)
    assert {k.decode(): int(v) for k, v in last.items()} == dict.fromkeys(
        universe.symbols, close - TF_MS
    )
    assert await expected(redis_client, close) == 4
    assert await redis_client.ttl(keys.close_expected_key(close)) > 86_000
    assert int(await redis_client.get(keys.MD_CLOCK) or 0) == now
    published_us = int(await redis_client.get(keys.close_published_key(close)) or 0)
    assert before_us <= published_us <= after_us  # the wall clock when it was published
    assert await redis_client.ttl(keys.close_published_key(close)) > 86_000


async def test_each_close_is_published_once_across_scans_and_restarts(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic)
    assert await md.scan()
    assert await md.scan()  # same close: nothing new
    assert len(await stream_candles(redis_client)) == 4
    synthetic.sim.step(2)  # half a candle: no close yet
    assert await md.scan()
    assert len(await stream_candles(redis_client)) == 4
    synthetic.sim.step(2)
    assert await md.scan()
    assert await md.scan()
    assert len(await stream_candles(redis_client)) == 8

    restarted = await make_scanner(synthetic)  # new process state, same Redis
    assert await restarted.scan()
    assert len(await stream_candles(redis_client)) == 8
    for _ in range(2):
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await restarted.scan()
        assert await restarted.scan()

    published = await stream_candles(redis_client)
    ids = Counter((c.symbol, c.open_time) for c in published)
    assert len(published) == 16
    assert max(ids.values()) == 1
    by_symbol: dict[str, list[int]] = {}
    for c in published:
        by_symbol.setdefault(c.symbol, []).append(c.open_time)
    for opens in by_symbol.values():
        assert [b - a for a, b in itertools.pairwise(opens)] == [TF_MS] * 3
    opens_in_order = [c.open_time for c in published]
    assert opens_in_order == sorted(opens_in_order)  # closes go out in time order
    now = synthetic.sim.now_ms()
    for k in range(4):
        assert await expected(redis_client, now - now % TF_MS - k * TF_MS) == 4


async def test_window_is_kept_to_the_newest_candle_limit_and_matches_the_exchange(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic, candle_limit=8)
    assert await md.scan()
    for _ in range(5):
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
    assert md.universe is not None
    symbol = md.universe.symbols[0]
    stored = await window(redis_client, symbol)
    fresh = await md.client.ohlcv(symbol, 8, now_ms=synthetic.sim.now_ms())
    assert len(stored) == 8
    assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in stored] == [
        (r.open_time, r.open, r.high, r.low, r.close, r.volume) for r in fresh
    ]


async def test_downtime_is_refilled_and_a_long_one_is_counted_as_a_gap(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    md = await make_scanner(synthetic)
    assert await md.scan()
    start = synthetic.sim.now_ms()
    synthetic.sim.step(3 * STEPS_PER_CANDLE)  # down for three closes

    restarted = await make_scanner(synthetic)
    assert await restarted.scan()
    published = await stream_candles(redis_client)
    assert len(published) == 4 + 3 * 4
    for k in range(1, 4):
        assert await expected(redis_client, start + k * TF_MS) == 4
    assert restarted.universe is not None
    symbol = restarted.universe.symbols[0]
    assert [c.open_time for c in published if c.symbol == symbol] == [
        start - TF_MS + k * TF_MS for k in range(4)
    ]
    stored = await window(redis_client, symbol)
    assert [b.open_time - a.open_time for a, b in itertools.pairwise(stored)] == [TF_MS] * 9

    gaps_before = metric("tradebot_md_candle_gaps_total", symbol=symbol)
    synthetic.sim.step(15 * STEPS_PER_CANDLE)  # longer than CANDLE_LIMIT (10) closes
    caplog.set_level(logging.INFO, logger="services.market_data.service")
    again = await make_scanner(synthetic)
    assert await again.scan()
    mine = [c.open_time for c in await stream_candles(redis_client) if c.symbol == symbol]
    assert len(mine) == 4 + 10  # the newest CANDLE_LIMIT were refilled
    assert mine[4] - mine[3] == 6 * TF_MS  # five candles could not be fetched any more
    assert metric("tradebot_md_candle_gaps_total", symbol=symbol) == gaps_before + 1
    assert f"Candles: {symbol} gap of 5 candles before" in caplog.text


async def test_a_failing_symbol_is_skipped_without_stalling_the_others(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky: list[FlakyClient] = []

    def wrap(client: object) -> FlakyClient:
        assert not flaky
        flaky.append(FlakyClient(client))  # type: ignore[arg-type]
        return flaky[0]

    caplog.set_level(logging.INFO, logger="services.market_data.service")
    md = await make_scanner(synthetic, wrap=wrap)
    assert await md.scan()  # rotation + first close, all symbols fine
    assert md.universe is not None
    bad, *good = md.universe.symbols
    flaky[0].failing.add(bad)
    failures = metric("tradebot_md_symbol_failures_total", symbol=bad)
    first_published: dict[int, Any] = {}

    for n in range(1, 6):
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
        now = synthetic.sim.now_ms()
        close = now - now % TF_MS
        published = await stream_candles(redis_client)
        assert sorted(c.symbol for c in published if c.open_time == close - TF_MS) == sorted(good)
        assert await expected(redis_client, close) == 3
        assert metric("tradebot_md_symbol_failures_total", symbol=bad) == failures + n
        first_published[close] = await redis_client.get(keys.close_published_key(close))
    assert f"Candles: {bad} failed (TemporaryError: ohlcv: RequestTimeout" in caplog.text
    assert "skipped this close" in caplog.text
    assert metric("tradebot_md_symbols_skipped") == 1.0

    flaky[0].failing.clear()
    synthetic.sim.step(STEPS_PER_CANDLE)  # still sitting out: not even tried
    assert await md.scan()
    assert metric("tradebot_md_symbol_failures_total", symbol=bad) == failures + 5
    now = synthetic.sim.now_ms()
    latest = [
        c for c in await stream_candles(redis_client) if c.open_time == now - now % TF_MS - TF_MS
    ]
    assert bad not in {c.symbol for c in latest}
    assert len(latest) == 3

    for _ in range(10):  # tried again later: refilled, and its closes' counts grow
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
        if metric("tradebot_md_symbols_skipped") == 0.0:
            break
    assert metric("tradebot_md_symbols_skipped") == 0.0
    mine = [c.open_time for c in await stream_candles(redis_client) if c.symbol == bad]
    now = synthetic.sim.now_ms()
    assert mine[-1] == now - now % TF_MS - TF_MS
    assert [b - a for a, b in itertools.pairwise(mine[1:])] == [TF_MS] * (len(mine) - 2)
    assert await expected(redis_client, mine[1] + TF_MS) == 4  # refilled into its close
    refilled = mine[1] + TF_MS  # its publication time is still the first one's
    assert await redis_client.get(keys.close_published_key(refilled)) == first_published[refilled]


async def test_a_bad_candle_is_refused_and_not_published(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky: list[FlakyClient] = []

    def wrap(client: object) -> FlakyClient:
        flaky.append(FlakyClient(client))  # type: ignore[arg-type]
        return flaky[0]

    md = await make_scanner(synthetic, wrap=wrap)
    assert await md.scan()
    assert md.universe is not None
    bad = md.universe.symbols[1]
    flaky[0].corrupt.add(bad)
    failures = metric("tradebot_md_symbol_failures_total", symbol=bad)
    caplog.set_level(logging.INFO, logger="services.market_data.service")
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    now = synthetic.sim.now_ms()
    newest = now - now % TF_MS - TF_MS
    published = await stream_candles(redis_client)
    assert sorted(c.symbol for c in published if c.open_time == newest) == sorted(
        s for s in md.universe.symbols if s != bad
    )
    assert newest not in [c.open_time for c in await window(redis_client, bad)]
    assert metric("tradebot_md_symbol_failures_total", symbol=bad) == failures + 1
    assert f"Candles: {bad} candle at " in caplog.text
    assert "refused (high/low must enclose open and close" in caplog.text.replace(
        "Value error, ", ""
    )


async def test_exchange_outage_waits_and_an_operational_error_ends_the_scan(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    flaky: list[FlakyClient] = []

    def wrap(client: object) -> FlakyClient:
        flaky.append(FlakyClient(client))  # type: ignore[arg-type]
        return flaky[0]

    md = await make_scanner(synthetic, wrap=wrap)
    assert await md.scan()
    clock = int(await redis_client.get(keys.MD_CLOCK) or 0)
    synthetic.sim.step(STEPS_PER_CANDLE)
    flaky[0].clock_down = True
    assert not await md.scan()  # try again next scan; nothing published meanwhile
    assert int(await redis_client.get(keys.MD_CLOCK) or 0) == clock
    assert len(await stream_candles(redis_client)) == 4
    flaky[0].clock_down = False
    assert await md.scan()
    assert len(await stream_candles(redis_client)) == 8

    assert md.universe is not None
    flaky[0].broken.add(md.universe.symbols[2])
    synthetic.sim.step(STEPS_PER_CANDLE)
    with pytest.raises(OperationalError, match="unexpected reply"):
        await md.scan()
    assert len(await stream_candles(redis_client)) == 8  # nothing half-published
