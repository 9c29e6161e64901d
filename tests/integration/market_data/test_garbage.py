"""Garbage from the exchange: the real market_data against a simulator serving bad answers.

Each garbage kind of the simulator's fault API (``POST /_sim/faults {"garbage": ...}``) is
turned on for a close: market_data must refuse or repair it by its rule, count it in
``tradebot_md_bad_data_total``, log it in one line, and publish nothing invalid. Once the
garbage stops, what was held back is published, each candle once, equal to the exchange's.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.book import read_last_prices
from tests.fixtures.sim import SimHandle
from tests.integration.market_data.conftest import (
    STEPS_PER_CANDLE,
    TF_MS,
    MakeScanner,
    stream_candles,
    stream_ticks,
    window,
)

KLINES = "/fapi/v1/klines"
TICKERS = "/fapi/v1/ticker/24hr"
LOGGER = "services.market_data.service"


def bad_data(call: str, kind: str) -> float:
    """Return tradebot_md_bad_data_total for a call and kind (0 when never counted)."""
    labels = {"call": call, "kind": kind}
    return REGISTRY.get_sample_value("tradebot_md_bad_data_total", labels) or 0


def newest_open(sim: SimHandle) -> int:
    """Return the open time of the newest closed candle at the simulator's clock."""
    now = sim.sim.now_ms()
    return now - now % TF_MS - TF_MS


async def set_garbage(sim: SimHandle, garbage: dict[str, float], paths: list[str]) -> None:
    """Set the simulator's garbage through its control API."""
    body = {"garbage": garbage, "garbage_paths": paths, "seed": 1}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sim.base_url}/_sim/faults", json=body) as r,
    ):
        assert r.status == 200, await r.text()


async def assert_caught_up(
    sim: SimHandle, md: Any, redis_client: aioredis.Redis, published_before: int
) -> None:
    """Check the candles published since ``published_before``: the two newest closes of
    every universe symbol, once each, in order, equal to what the exchange serves."""
    assert md.universe is not None
    newest = newest_open(sim)
    fresh = (await stream_candles(redis_client))[published_before:]
    assert sorted((c.symbol, c.open_time) for c in fresh) == sorted(
        (s, t) for s in md.universe.symbols for t in (newest - TF_MS, newest)
    )
    assert [c.open_time for c in fresh] == sorted(c.open_time for c in fresh)
    for symbol in md.universe.symbols:
        truth = await md.client.ohlcv(symbol, 2, now_ms=sim.sim.now_ms())
        mine = [c for c in fresh if c.symbol == symbol]
        assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in mine] == [
            (r.open_time, r.open, r.high, r.low, r.close, r.volume) for r in truth
        ]
        stored = await window(redis_client, symbol)
        assert [c.open_time for c in stored][-2:] == [newest - TF_MS, newest]


@pytest.mark.parametrize(
    ("garbage", "kind"),
    [
        ("nan_price", "bad_value"),
        ("zero_price", "bad_value"),
        ("negative_price", "bad_value"),
        ("high_below_low", "bad_value"),
        ("missing", "missing"),
    ],
)
async def test_a_bad_candle_answer_is_held_back_then_published_once_repaired(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    garbage: str,
    kind: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    md = await make_scanner(synthetic)
    assert await md.scan()
    assert md.universe is not None
    symbols = md.universe.symbols
    published = len(await stream_candles(redis_client))
    counted = bad_data("ohlcv", kind)

    await set_garbage(synthetic, {garbage: 1.0}, [KLINES])
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    assert len(await stream_candles(redis_client)) == published  # nothing this close
    for symbol in symbols:
        stored = await window(redis_client, symbol)
        assert newest_open(synthetic) not in [c.open_time for c in stored]
    assert bad_data("ohlcv", kind) == counted + len(symbols)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Candles: ")]
    for symbol in symbols:  # one clear line per symbol
        assert len([m for m in lines if m.startswith(f"Candles: {symbol} ")]) == 1, lines
    assert len(await stream_ticks(redis_client)) == 2 * len(symbols)  # ticks unaffected

    await set_garbage(synthetic, {}, [])
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    await assert_caught_up(synthetic, md, redis_client, published)


@pytest.mark.parametrize("garbage", ["duplicate", "out_of_order"])
async def test_a_duplicated_or_reordered_candle_is_repaired(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    garbage: str,
) -> None:
    md = await make_scanner(synthetic)
    assert await md.scan()
    assert md.universe is not None
    published = len(await stream_candles(redis_client))
    counted = bad_data("ohlcv", "duplicate")
    await set_garbage(synthetic, {garbage: 1.0}, [KLINES])
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    fresh = (await stream_candles(redis_client))[published:]
    assert Counter(c.symbol for c in fresh) == dict.fromkeys(md.universe.symbols, 1)
    assert {c.open_time for c in fresh} == {newest_open(synthetic)}
    for symbol in md.universe.symbols:
        truth = (await md.client.ohlcv(symbol, 1, now_ms=synthetic.sim.now_ms()))[0]
        mine = next(c for c in fresh if c.symbol == symbol)
        assert (mine.open, mine.high, mine.low, mine.close) == (
            truth.open,
            truth.high,
            truth.low,
            truth.close,
        )
    if garbage == "duplicate":  # an identical copy is dropped, counted and logged
        assert bad_data("ohlcv", "duplicate") == counted + len(md.universe.symbols)
        assert "1 duplicated candles dropped" in caplog.text
    # ccxt sorts klines by open time: a reordered answer reaches market_data sorted.


@pytest.mark.parametrize(
    ("garbage", "kind"),
    # ccxt cannot read a ticker answer with "NaN" prices at all (it raises ValueError).
    [("nan_price", "unreadable"), ("zero_price", "bad_value"), ("negative_price", "bad_value")],
)
async def test_a_bad_price_is_no_tick(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    garbage: str,
    kind: str,
) -> None:
    md = await make_scanner(synthetic)
    assert await md.scan()
    assert md.universe is not None
    n = len(md.universe.symbols)
    ticks = await stream_ticks(redis_client)
    prices = await read_last_prices(redis_client)
    published = len(await stream_candles(redis_client))
    counted = bad_data("tickers", kind)

    await set_garbage(synthetic, {garbage: 1.0}, [TICKERS])
    synthetic.sim.step(STEPS_PER_CANDLE)
    if kind == "bad_value":  # each bad price refused; the scan goes on to the candles
        assert await md.scan()
        assert bad_data("tickers", kind) == counted + n
        assert f"Ticks: no tick for {n} symbols this scan" in caplog.text
        assert len(await stream_candles(redis_client)) == published + n
    else:  # the answer is refused; the scan ends there and is done again
        assert not await md.scan()
        assert bad_data("tickers", kind) == counted + 1
        assert "Ticks: tickers not read (tickers: BadResponse: tickers: unreadable" in caplog.text
        assert len(await stream_candles(redis_client)) == published
    assert await stream_ticks(redis_client) == ticks
    assert await read_last_prices(redis_client) == prices


async def test_an_html_page_instead_of_json_is_refused_everywhere(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    md = await make_scanner(synthetic)
    assert await md.scan()
    assert md.universe is not None
    clock = await redis_client.get(keys.MD_CLOCK)
    published = len(await stream_candles(redis_client))
    ticks = len(await stream_ticks(redis_client))

    await set_garbage(synthetic, {"html_200": 1.0}, [])  # every market data answer
    synthetic.sim.step(STEPS_PER_CANDLE)
    counted = bad_data("server_time", "unreadable")
    assert not await md.scan()
    assert bad_data("server_time", "unreadable") == counted + 1
    assert "Scan: exchange clock not read (server_time: unreadable answer" in (caplog.text)
    counted = bad_data("tickers", "unreadable")
    await set_garbage(synthetic, {"html_200": 1.0}, [TICKERS])
    assert not await md.scan()
    assert bad_data("tickers", "unreadable") == counted + 1
    assert "Ticks: tickers not read (tickers: BadResponse: tickers: unreadable answer" in (
        caplog.text
    )
    await set_garbage(synthetic, {"html_200": 1.0}, [KLINES])
    assert await md.scan()  # ticks fine, every symbol's candles refused
    assert len(await stream_ticks(redis_client)) == ticks + len(md.universe.symbols)
    assert len(await stream_candles(redis_client)) == published
    assert await redis_client.get(keys.MD_CLOCK) != clock
    for status_kind in ("html_5xx",):  # a 5xx page is a network failure: retried, then skipped
        await set_garbage(synthetic, {status_kind: 1.0}, [KLINES])
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
        assert len(await stream_candles(redis_client)) == published

    await set_garbage(synthetic, {}, [])
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    fresh = (await stream_candles(redis_client))[published:]
    assert Counter(c.symbol for c in fresh) == dict.fromkeys(md.universe.symbols, 3)


async def test_an_html_market_list_at_rotation_rotates_later(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    await set_garbage(synthetic, {"html_200": 1.0}, ["/fapi/v1/exchangeInfo"])
    md = await make_scanner(synthetic, coin_rotate_hours=1000)
    counted = bad_data("markets", "empty")
    assert not await md.scan()
    assert md.universe is None
    assert bad_data("markets", "empty") > counted
    assert await stream_candles(redis_client) == []
    await set_garbage(synthetic, {}, [])
    assert await md.scan()
    assert md.universe is not None
    assert len(await stream_candles(redis_client)) == len(md.universe.symbols)
