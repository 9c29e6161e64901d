"""market_data edge cases: held-back candles given up, refills, failure streaks, commits, ticks."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.exchange_sim.market import Market
from services.market_data.candles import fmt_ms
from services.market_data.service import MarketData
from shared import keys
from shared.book import Universe
from shared.exchange import ExchangeClient
from shared.exchange_errors import UnreadableAnswer
from shared.exchange_models import OHLCV, MarketInfo, Ticker
from shared.schemas import Candle
from tests.fixtures.metrics import sample
from tests.fixtures.sim import SimHandle, running_sim
from tests.integration.market_data.conftest import (
    STEPS_PER_CANDLE,
    TF_MS,
    FlakyClient,
    MakeScanner,
    stream_candles,
    stream_ticks,
    window,
)
from tests.integration.market_data.test_garbage import KLINES, LOGGER, bad_data, set_garbage

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, the first candle of a replayed market
WARMUP = 20  # replayed candles already closed when the simulator starts
AAA, BBB = "AAA/USDT:USDT", "BBB/USDT:USDT"


def replay(holes: Sequence[int] = (), bad: Mapping[str, Sequence[int]] | None = None) -> Market:
    """Return a flat market of AAA and BBB (40 candles from T0): AAA lacks the candles at
    indexes ``holes``; the candles at ``bad[name]`` have their high below their open."""
    frames = {}
    for name in ("AAAUSDT", "BBBUSDT"):
        rows = [
            (T0 + i * TF_MS, 100.0, 98.0 if i in (bad or {}).get(name, ()) else 101.0, 99.0)
            for i in range(40)
            if not (name == "AAAUSDT" and i in holes)
        ]
        frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low"])
        frames[name] = frame.assign(close=100.0, volume=10.0)
    return Market.from_frames(frames, TF_MS, warmup=WARMUP)


async def scan_at_close(sim: SimHandle, md: MarketData, index: int) -> None:
    """Move the exchange clock to the close of replayed candle ``index - 1`` and scan."""
    sim.sim.advance_to(T0 + index * TF_MS)
    assert await md.scan()


async def opens_of(client: aioredis.Redis, symbol: str) -> list[int]:
    """Return the replay indexes of a symbol's published candles, in stream order."""
    return [(c.open_time - T0) // TF_MS for c in await stream_candles(client) if c.symbol == symbol]


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    """Return the logged messages starting with ``start``."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


class SpyClient(FlakyClient):
    """A real client that records the candles and tickers asked (the simulator keeps no log
    of requests) and can step the exchange clock while a kline request is in flight (the
    simulator's clock only moves when a test moves it). It can also serve the newest candle
    off the timeframe's grid (the simulator serves candles on the grid), and fail as
    the client does when its retries met only unreadable answers (ccxt reads the
    simulator's HTML page as an empty market list, or as klines at times 1, 2, ...)."""

    def __init__(self, inner: ExchangeClient) -> None:
        super().__init__(inner)
        self.asked: list[tuple[str, int]] = []
        self.in_flight_step: SimHandle | None = None
        self.markets_unreadable = False
        self.ohlcv_unreadable = False
        self.off_grid = False
        self.tickers_asked = 0

    async def markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        if self.markets_unreadable:
            raise UnreadableAnswer("load_markets: unreadable answer", "load_markets")
        return await super().markets(reload)

    async def tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]:
        self.tickers_asked += 1
        return await super().tickers(symbols)

    async def ohlcv(
        self, symbol: str, limit: int, *, timeframe: str | None = None, now_ms: int | None = None
    ) -> list[OHLCV]:
        self.asked.append((symbol, limit))
        if self.ohlcv_unreadable:
            raise UnreadableAnswer("ohlcv: unreadable answer", "ohlcv")
        if self.in_flight_step is not None:
            self.in_flight_step.step(STEPS_PER_CANDLE)
            self.in_flight_step = None
        rows = await super().ohlcv(symbol, limit, timeframe=timeframe, now_ms=now_ms)
        if self.off_grid:
            r = rows[-1]
            rows[-1] = OHLCV(r.open_time + 1, r.open, r.high, r.low, r.close, r.volume)
        return rows


async def spied(make_scanner: MakeScanner, sim: SimHandle, **overrides: object) -> MarketData:
    """Return a scanner whose client is a SpyClient (``md.client``)."""
    return await make_scanner(sim, wrap=SpyClient, **overrides)


def spy(md: MarketData) -> SpyClient:
    """Return a spied scanner's client."""
    assert isinstance(md.client, SpyClient)
    return md.client


# --- held-back candles ---------------------------------------------------------------------


async def test_a_candle_the_exchange_lacks_is_waited_for_three_closes_then_a_gap(
    redis_client: aioredis.Redis, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running_sim(feed=replay(holes=[22])) as sim:
        md = await make_scanner(sim, top_n=2)
        assert await md.scan()
        for index in (21, 22, 23, 24, 25):  # the candle at 22 closes at 23, but never comes
            await scan_at_close(sim, md, index)
        assert await opens_of(redis_client, AAA) == [19, 20, 21]
        waits = [m.split("(closes waited: ")[1] for m in messages(caplog, f"Candles: {AAA} ")]
        assert waits == ["1 of 3)", "2 of 3)", "3 of 3)"]
        gaps = sample("tradebot_md_candle_gaps_total", symbol=AAA)

        await scan_at_close(sim, md, 26)  # waited three closes: given up, the rest published
        assert await opens_of(redis_client, AAA) == [19, 20, 21, 23, 24, 25]
        assert await opens_of(redis_client, BBB) == list(range(19, 26))
        assert sample("tradebot_md_candle_gaps_total", symbol=AAA) == gaps + 1
        hole = T0 + 22 * TF_MS
        assert f"Candles: {AAA} gave up waiting for the candle at {fmt_ms(hole)}" in caplog.text
        assert f"Candles: {AAA} gap of 1 candles before {fmt_ms(hole + TF_MS)}" in caplog.text


async def test_a_wait_for_a_new_candle_counts_its_closes_from_one(
    synthetic: SimHandle, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    md = await make_scanner(synthetic, top_n=1)
    assert await md.scan()
    await set_garbage(synthetic, {"missing": 1.0}, [KLINES])  # each close's newest is missing
    for _ in range(3):
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
    assert md.universe is not None
    [symbol] = md.universe.symbols
    # The symbol's lines only: the INFO summaries ("Candles: close ...") are captured too
    # when an earlier test left the loggers at INFO.
    lines = messages(caplog, f"Candles: {symbol} ")
    assert len(lines) == 3
    assert all(line.endswith("(closes waited: 1 of 3)") for line in lines), lines


async def test_refused_candles_are_reported_with_how_many_more(
    make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"AAAUSDT": [14, 16], "BBBUSDT": [15]}
    async with running_sim(feed=replay(bad=bad)) as sim:
        md = await make_scanner(sim, top_n=2)
        refused = bad_data("ohlcv", "bad_value")
        assert await md.scan()
    assert bad_data("ohlcv", "bad_value") == refused + 3
    [aaa] = messages(caplog, f"Candles: {AAA} ")
    [bbb] = messages(caplog, f"Candles: {BBB} ")
    assert aaa.startswith(f"Candles: {AAA} candle at {fmt_ms(T0 + 14 * TF_MS)} refused (")
    assert aaa.endswith(") (and 1 more), not published")
    assert bbb.startswith(f"Candles: {BBB} candle at {fmt_ms(T0 + 15 * TF_MS)} refused (")
    assert bbb.endswith("open and close), not published")


async def test_a_refill_after_a_missed_close_is_logged_and_a_normal_close_is_not(
    synthetic: SimHandle, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    md = await make_scanner(synthetic, top_n=1)
    assert await md.scan()
    assert md.universe is not None
    [symbol] = md.universe.symbols
    missed = synthetic.sim.now_ms()  # the close whose candle is not fetched in time
    synthetic.sim.step(2 * STEPS_PER_CANDLE)
    assert await md.scan()
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    assert messages(caplog, f"Candles: {symbol} refilled") == [
        f"Candles: {symbol} refilled 1 candles missed since {fmt_ms(missed)}"
    ]


# --- what is fetched ---------------------------------------------------------------------


async def test_only_the_candles_missed_since_the_last_published_one_are_fetched(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    md = await spied(make_scanner, synthetic, top_n=2)
    assert await md.scan()
    assert md.universe is not None
    assert sorted(spy(md).asked) == [(s, 10) for s in sorted(md.universe.symbols)]
    spy(md).asked.clear()
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    assert sorted(spy(md).asked) == [(s, 2) for s in sorted(md.universe.symbols)]  # + overlap

    restarted = await spied(make_scanner, synthetic, top_n=2)
    assert await restarted.scan()  # same close: everything is published already
    assert spy(restarted).asked == []


async def test_a_candle_closing_while_its_klines_are_in_flight_is_not_stored(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await spied(make_scanner, synthetic, top_n=1)
    assert await md.scan()
    assert md.universe is not None
    [symbol] = md.universe.symbols
    now = synthetic.sim.now_ms()
    synthetic.sim.step(STEPS_PER_CANDLE)
    spy(md).in_flight_step = synthetic  # the next close passes during the request
    assert await md.scan()
    assert [c.open_time for c in await window(redis_client, symbol)][-1] == now
    assert [c.open_time for c in await stream_candles(redis_client)] == [now - TF_MS, now]


async def test_a_scan_without_the_lease_fetches_no_candles(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await spied(make_scanner, synthetic, top_n=2)
    assert await md.scan()
    spy(md).asked.clear()
    ticks = await stream_ticks(redis_client)
    md.may_act = lambda: False  # the lease was lost
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert not await md.scan()
    assert spy(md).asked == []
    assert await stream_ticks(redis_client) == ticks


# --- answers refused whole, failure streaks ------------------------------------------------


async def test_a_kline_answer_off_the_grid_is_refused_and_a_streak_skips_the_symbol(
    synthetic: SimHandle, make_scanner: MakeScanner, caplog: pytest.LogCaptureFixture
) -> None:
    md = await spied(make_scanner, synthetic, top_n=1)
    assert await md.scan()
    assert md.universe is not None
    [symbol] = md.universe.symbols
    failures = sample("tradebot_md_symbol_failures_total", symbol=symbol)
    refused = bad_data("ohlcv", "bad_time")

    async def close(off_grid: bool) -> None:
        spy(md).off_grid = off_grid
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()

    for off_grid in [True] * 4 + [False] + [True] * 4:  # a success ends the streak
        await close(off_grid)
    assert sample("tradebot_md_symbols_skipped") == 0.0
    assert sample("tradebot_md_symbol_failures_total", symbol=symbol) == failures + 8
    assert bad_data("ohlcv", "bad_time") == refused + 8
    assert f"Candles: {symbol} failed (answer refused: open time " in caplog.text
    assert "is not on the timeframe's grid; nothing of it used), skipped this close" in (
        caplog.text
    )
    assert "closes in a row" not in caplog.text

    await close(off_grid=True)  # the fifth in a row
    assert sample("tradebot_md_symbols_skipped") == 1.0
    assert f"Candles: {symbol} failed 5 closes in a row; skipped until" in caplog.text


async def test_an_unreadable_kline_answer_is_counted_under_ohlcv(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    md = await spied(make_scanner, synthetic, top_n=2)
    assert await md.scan()
    counted = bad_data("ohlcv", "unreadable")
    spy(md).ohlcv_unreadable = True
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()
    assert bad_data("ohlcv", "unreadable") == counted + 2


# --- the commit ----------------------------------------------------------------------------


async def test_the_window_is_stored_even_when_no_candle_is_published(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    await set_garbage(synthetic, {"high_below_low": 1.0}, [KLINES])  # the newest is refused
    md = await make_scanner(synthetic, top_n=2)
    assert await md.scan()
    assert await stream_candles(redis_client) == []
    assert md.universe is not None
    now = synthetic.sim.now_ms()
    for symbol in md.universe.symbols:
        opens = [c.open_time for c in await window(redis_client, symbol)]
        assert opens == [now - k * TF_MS for k in range(10, 1, -1)]


async def test_a_refilled_symbol_after_up_to_date_ones_gets_its_window(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic, wrap=FlakyClient)
    assert await md.scan()
    assert isinstance(md.client, FlakyClient)
    assert md.universe is not None
    late = md.universe.symbols[-1]
    md.client.failing.add(late)
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await md.scan()  # the others are published, ``late`` failed

    restarted = await make_scanner(synthetic)  # same close: only ``late`` is fetched
    assert await restarted.scan()
    now = synthetic.sim.now_ms()
    assert [c.open_time for c in await window(redis_client, late)][-2:] == [
        now - 2 * TF_MS,
        now - TF_MS,
    ]


async def test_a_commit_refused_by_redis_changes_nothing(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic, top_n=1)
    assert await md.scan()
    assert md.universe is not None
    [symbol] = md.universe.symbols
    before: list[Candle] = await window(redis_client, symbol)
    synthetic.sim.step(STEPS_PER_CANDLE)
    now = synthetic.sim.now_ms()
    await redis_client.config_set("maxmemory", 1)  # Redis is out of memory: writes refused
    try:
        with pytest.raises(RedisError):
            await md.publish_candles(now, now - now % TF_MS)
    finally:
        await redis_client.config_set("maxmemory", 0)
    assert await window(redis_client, symbol) == before
    assert len(await stream_candles(redis_client)) == 1


# --- ticks ---------------------------------------------------------------------------------


async def test_unreadable_positions_still_tick_the_universe(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await redis_client.hset(keys.BOOK_POSITIONS, "x", "not a position")
    md = await make_scanner(synthetic, top_n=2)
    assert await md.scan()
    assert md.universe is not None
    assert [t.symbol for t in await stream_ticks(redis_client)] == md.universe.symbols
    assert "Ticks: open positions unreadable" in caplog.text


async def test_an_empty_market_list_stops_the_scan_before_ticks_and_candles(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    md = await make_scanner(synthetic, top_n=2, coin_rotate_hours=1000)
    assert await md.scan()
    clock = await redis_client.get(keys.MD_CLOCK)
    await set_garbage(synthetic, {"html_200": 1.0}, ["/fapi/v1/exchangeInfo"])
    restarted = await make_scanner(synthetic, top_n=2, coin_rotate_hours=1000)
    synthetic.sim.step(STEPS_PER_CANDLE)
    counted = bad_data("markets", "empty")
    assert not await restarted.scan()
    assert bad_data("markets", "empty") == counted + 1
    assert len(await stream_ticks(redis_client)) == 2
    assert len(await stream_candles(redis_client)) == 2
    assert await redis_client.get(keys.MD_CLOCK) == clock


async def test_an_unreadable_market_list_is_counted_under_markets(
    synthetic: SimHandle, make_scanner: MakeScanner
) -> None:
    md = await spied(make_scanner, synthetic, top_n=2, coin_rotate_hours=1000)
    assert await md.scan()
    spy(md).markets_unreadable = True
    counted = bad_data("markets", "unreadable")
    synthetic.sim.step(1)
    assert not await md.scan()
    assert bad_data("markets", "unreadable") == counted + 1


async def test_a_universe_the_exchange_no_longer_lists_asks_for_no_tickers(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    now = synthetic.sim.now_ms()
    delisted = Universe(symbols=["GONE/USDT:USDT"], rotated_ms=now - now % TF_MS)
    await redis_client.set(keys.UNIVERSE, delisted.dump())
    md = await spied(make_scanner, synthetic, coin_rotate_hours=1000)
    assert await md.scan()
    assert spy(md).tickers_asked == 0
    assert await stream_ticks(redis_client) == []
