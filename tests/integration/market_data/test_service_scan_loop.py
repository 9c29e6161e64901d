"""market_data's edges: universe rotation and resume, unreadable answers, the lease, the loop."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.market_data import service
from services.market_data.service import MarketData
from shared import keys
from shared.book import read_universe
from shared.exchange import ExchangeClient
from shared.exchange_errors import UnreadableAnswer
from shared.exchange_models import OHLCV, MarketInfo, Ticker
from tests.fixtures.metrics import sample
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.market_data.conftest import (
    STEPS_PER_CANDLE,
    TF_MS,
    FlakyClient,
    MakeScanner,
    stream_candles,
    stream_ticks,
    window,
)
from tests.integration.market_data.test_garbage import LOGGER, TICKERS, bad_data

EXCHANGE_INFO = "/fapi/v1/exchangeInfo"


def set_garbage(sim: SimHandle, kind: str | None, path: str = "") -> None:
    """Serve every answer of ``path`` corrupted by ``kind`` (None: stop the garbage)."""
    sim.sim.faults.configure({}, 1, {kind: 1.0} if kind else {}, [path] if path else [])


def ingested(symbol: str) -> float:
    """Return tradebot_candles_ingested_total of a symbol."""
    return sample("tradebot_candles_ingested_total", symbol=symbol)


def last_close(sim: SimHandle) -> int:
    """Return the newest candle close time at the simulator's clock."""
    now = sim.sim.now_ms()
    return now - now % TF_MS


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    """Return the logged messages starting with ``start``."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


class Rigged:
    """Wrap a real client to serve what the simulator cannot (each case says why)."""

    def __init__(self, inner: ExchangeClient, sim: SimHandle) -> None:
        self.inner, self.sim = inner, sim
        self.markets_error: Exception | None = None  # raised by markets(reload=True)
        self.unparsable: set[str] = set()  # ohlcv of these raises our parser's ValueError
        self.volumes: dict[str, float] = {}  # replace these 24 h quote volumes
        self.step_after_tickers = 0  # sim steps played right after the next tickers call
        self.clock_reads = 0

    async def server_time(self) -> int:
        self.clock_reads += 1
        return await self.inner.server_time()

    async def markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        if reload and self.markets_error is not None:
            raise self.markets_error
        return await self.inner.markets(reload)

    async def quote_volumes(self) -> dict[str, float]:
        return {**(await self.inner.quote_volumes()), **self.volumes}

    async def tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]:
        out = await self.inner.tickers(symbols)
        self.sim.step(self.step_after_tickers)
        self.step_after_tickers = 0
        return out

    async def ohlcv(
        self, symbol: str, limit: int, *, timeframe: str | None = None, now_ms: int | None = None
    ) -> list[OHLCV]:
        if symbol in self.unparsable:
            raise ValueError("could not convert string to float: 'abc'")
        return await self.inner.ohlcv(symbol, limit, timeframe=timeframe, now_ms=now_ms)


async def rigged(
    sim: SimHandle, make_scanner: MakeScanner, **overrides: Any
) -> tuple[MarketData, Rigged]:
    """Return a new scanner over a Rigged client, and the client."""
    box: list[Rigged] = []

    def wrap(inner: ExchangeClient) -> Rigged:
        box.append(Rigged(inner, sim))
        return box[0]

    md = await make_scanner(sim, wrap, **overrides)
    return md, box[0]


class ScriptedLease:
    """A ``may_act`` answering from a script, one answer per call (too many calls fail)."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)

    def __call__(self) -> bool:
        return self.answers.pop(0)


# --- the universe ----------------------------------------------------------------------


async def test_before_its_first_scan_an_instance_has_no_universe_and_publishes_no_candles(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic)
    assert md.universe is None
    now = synthetic.sim.now_ms()
    assert not await md.publish_candles(now, last_close(synthetic))
    assert await stream_candles(redis_client) == []


async def test_an_unreadable_stored_universe_is_rotated_once_the_exchange_lists_markets(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await redis_client.set(keys.UNIVERSE, "{not json")
    md = await make_scanner(synthetic)
    set_garbage(synthetic, "html_200", EXCHANGE_INFO)  # the exchange lists nothing
    assert not await md.scan()
    assert md.universe is None
    assert messages(caplog, "Universe: stored universe unreadable")
    assert await stream_ticks(redis_client) == []
    assert await stream_candles(redis_client) == []

    set_garbage(synthetic, None)
    assert await md.scan()
    assert md.universe is not None
    assert await read_universe(redis_client) == md.universe


async def test_a_restart_resumes_the_stored_universe_once_not_every_scan(
    synthetic: SimHandle, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert await (await make_scanner(synthetic)).scan()
    restarted = await make_scanner(synthetic)
    assert await restarted.scan()
    assert await restarted.scan()
    assert len(messages(caplog, "Universe: resumed 4 symbols")) == 1


async def test_refused_volumes_are_counted_and_the_other_symbols_ranked(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    # The simulator's garbage corrupts prices, never a 24 h volume: the client serves them.
    md, client = await rigged(synthetic, make_scanner, top_n=6)
    symbols = sorted(await client.inner.quote_volumes())
    assert len(symbols) == 6
    nan, negative, idle = symbols[:3]
    client.volumes = {nan: math.nan, negative: -5.0, idle: 0.0}  # no trade in 24 h is fine
    counted = bad_data("quote_volumes", "bad_value")
    assert await md.scan()
    stored = await read_universe(redis_client)
    assert stored is not None
    assert sorted(stored.symbols) == sorted(set(symbols) - {nan, negative})
    assert stored.symbols[-1] == idle
    assert bad_data("quote_volumes", "bad_value") == counted + 2


async def test_rotate_reports_whether_it_rotated(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic)
    close = last_close(synthetic)
    assert await md.rotate(close)
    stored = await read_universe(redis_client)

    synthetic.set_faults({"http5xx": 1.0})  # unreachable
    assert not await md.rotate(close + TF_MS)
    synthetic.set_faults({})
    set_garbage(synthetic, "html_200", EXCHANGE_INFO)  # lists nothing
    assert not await md.rotate(close + TF_MS)
    set_garbage(synthetic, None)
    lost = MarketData(md.settings, redis_client, md.client, may_act=lambda: False)
    assert not await lost.rotate(close + TF_MS)
    assert await read_universe(redis_client) == stored


async def test_unreadable_market_list_and_volumes_are_counted_under_their_call(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    # ccxt reads an HTML market list as no markets at all: the client raises the case.
    md, client = await rigged(synthetic, make_scanner)
    client.markets_error = UnreadableAnswer("load_markets: unreadable answer", "load_markets")
    counted = bad_data("markets", "unreadable")
    assert not await md.scan()
    assert bad_data("markets", "unreadable") == counted + 1

    client.markets_error = None
    set_garbage(synthetic, "html_200", TICKERS)
    counted = bad_data("quote_volumes", "unreadable")
    assert not await md.scan()
    assert bad_data("quote_volumes", "unreadable") == counted + 1


# --- candles ---------------------------------------------------------------------------


async def test_an_answer_our_parsing_cannot_read_is_counted_and_named_in_the_log(
    synthetic: SimHandle, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    # ccxt turns unreadable klines values into None, which we read as NaN; a value our own
    # parsing refuses takes a reply the simulator cannot serve, so the client raises it.
    md, client = await rigged(synthetic, make_scanner)
    assert await md.scan()
    assert md.universe is not None
    symbol = md.universe.symbols[0]
    client.unparsable = {symbol}
    counted = bad_data("ohlcv", "unreadable")
    synthetic.step(STEPS_PER_CANDLE)
    assert await md.scan()
    assert bad_data("ohlcv", "unreadable") == counted + 1
    assert messages(caplog, f"Candles: {symbol} failed") == [
        f"Candles: {symbol} failed (UnreadableAnswer: ohlcv: the exchange's answer could not"
        " be read (ValueError: could not convert string to float: 'abc')), skipped this close"
    ]


async def test_published_candles_are_counted_per_symbol(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    md = await make_scanner(synthetic)
    symbols = await md.client.markets()
    before = {s: ingested(s) for s in symbols}
    assert await md.scan()
    assert md.universe is not None
    universe = md.universe.symbols
    assert {s: ingested(s) - before[s] for s in symbols} == {
        s: 1.0 if s in universe else 0.0 for s in symbols
    }


async def test_a_failing_symbol_is_tried_once_per_close_not_every_scan(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    flaky: list[FlakyClient] = []

    def wrap(inner: ExchangeClient) -> FlakyClient:
        flaky.append(FlakyClient(inner))
        return flaky[0]

    md = await make_scanner(synthetic, wrap)
    assert await md.scan()
    assert md.universe is not None
    symbol = md.universe.symbols[0]
    flaky[0].failing = {symbol}
    synthetic.step(STEPS_PER_CANDLE)
    failures = sample("tradebot_md_symbol_failures_total", symbol=symbol)
    for _ in range(3):
        assert await md.scan()
    assert sample("tradebot_md_symbol_failures_total", symbol=symbol) == failures + 1


async def test_a_candle_closing_mid_scan_waits_for_the_next_close(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    # The simulator's clock moves only when the test steps it: the client steps it between
    # the scan's clock read and its candle fetches.
    md, client = await rigged(synthetic, make_scanner)
    close = last_close(synthetic)
    client.step_after_tickers = STEPS_PER_CANDLE
    assert await md.scan()
    assert last_close(synthetic) == close + TF_MS
    published = await stream_candles(redis_client)
    assert {c.open_time for c in published} == {close - TF_MS}
    for symbol in {c.symbol for c in published}:
        assert (await window(redis_client, symbol))[-1].open_time == close - TF_MS


# --- the lease -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        (True, True, True, False),  # lost after the candles: the clock stays
        (True, True, False, True),  # lost at the candles, held again after: the clock stays
    ],
)
async def test_a_lease_lost_during_the_scan_keeps_the_clock_and_reports_it(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    answers: tuple[bool, ...],
) -> None:
    # may_act is asked at the rotation, the ticks, the candles and the clock, in that order.
    md = await make_scanner(synthetic)
    lease = ScriptedLease(*answers)
    scanner = MarketData(md.settings, redis_client, md.client, may_act=lease)
    assert not await scanner.scan()
    assert await redis_client.get(keys.MD_CLOCK) is None


# --- the loop --------------------------------------------------------------------------


async def break_redis_reads(client: aioredis.Redis) -> None:
    """Make the scan's read of the open positions fail (WRONGTYPE, a RedisError)."""
    await client.set(keys.BOOK_POSITIONS, "not a hash")


async def test_the_loop_rides_out_redis_failures_before_and_after_a_good_scan(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    md = await make_scanner(synthetic)
    stop = asyncio.Event()

    def redis_failures() -> int:
        return len(messages(caplog, "Scan: Redis failed (ResponseError: WRONGTYPE"))

    async def clock_at(ms: int) -> bool:
        return int(await redis_client.get(keys.MD_CLOCK) or 0) == ms

    await break_redis_reads(redis_client)
    task = asyncio.create_task(md.loop(stop))
    try:
        await eventually(lambda: redis_failures() >= 1, within=10)
        await redis_client.delete(keys.BOOK_POSITIONS)
        await eventually(lambda: clock_at(synthetic.sim.now_ms()), within=10)
        failed = redis_failures()
        await break_redis_reads(redis_client)
        await eventually(lambda: redis_failures() > failed, within=10)
        await redis_client.delete(keys.BOOK_POSITIONS)
        synthetic.step(STEPS_PER_CANDLE)
        await eventually(lambda: clock_at(synthetic.sim.now_ms()), within=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_redis_failing_past_the_give_up_time_ends_the_loop(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Waiting out the real 60 s is too long for a test: give up after any failing time.
    monkeypatch.setattr(service, "REDIS_GIVE_UP_S", 0.0)
    md = await make_scanner(synthetic)
    await break_redis_reads(redis_client)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(md.loop(asyncio.Event()), 10)
    # the first failure is retried; the second, later, ends the loop
    assert len(messages(caplog, "Scan: Redis failed")) == 1


async def test_scans_are_spaced_by_the_scan_interval(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md, client = await rigged(synthetic, make_scanner, scan_interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(md.loop(stop))
    try:

        async def scanned() -> bool:
            return await redis_client.get(keys.MD_CLOCK) is not None

        await eventually(scanned, within=10)
        assert await stream_ticks(redis_client)
        assert client.clock_reads == 1  # the next scan is an hour away
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
