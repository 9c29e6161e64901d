"""market_data's I/O shell: the universe, price ticks and closed candles, from the exchange.

Consumes: the exchange (server time, markets, 24 h tickers, klines) through
``shared.exchange.ExchangeClient``, and the book's open positions (``tb:book:positions``).

Produces, every SCAN_INTERVAL: the universe (``tb:universe``, rotated at start and every
COIN_ROTATE_HOURS), one ``PriceTick`` per symbol of the universe and of the open positions
on ``tb:md.ticks`` (and ``tb:md:prices``), then, once per candle close, one ``Candle`` per
universe symbol and closed candle on ``tb:md.candles``, each symbol's recent window
(``tb:candles:{symbol}:{tf}``, the newest CANDLE_LIMIT), the open time of its last
published candle (``tb:md:last_candle``), how many candles each close time got
(``tb:close:{C}:expected``) and finally ``tb:md:clock``, the exchange time caught up to.

What the exchange answers is checked before anything is published (the rules are in
``services.market_data.candles`` and docs/exchange.md, "Garbage from the exchange"): an
answer that cannot be read, a candle or price with invalid values, duplicated, out-of-order
or missing candles are refused or repaired, logged in one line and counted in
``tradebot_md_bad_data_total{call, kind}``; nothing invalid reaches the streams.

After a crash: one scan's candle writes (windows, last-candle records, stream entries,
expected counts) are one MULTI/EXEC, so a close is published entirely or not at all. A
restart resumes from ``tb:md:last_candle``: each closed candle is published exactly once,
the ones missed while down are refilled (up to CANDLE_LIMIT per symbol), and the stored
universe is kept until its next rotation is due. Ticks are plain observations: a crash may
lose or repeat one scan's, and consumers take the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.market_data.candles import (
    HOLE_PATIENCE,
    Plan,
    expected_counts,
    fetch_count,
    fmt_ms,
    last_close_ms,
    plan_candles,
    publish_order,
)
from services.market_data.health import Health
from services.market_data.rotation import (
    choose_universe,
    describe_universe,
    rotate_ms,
    tick_symbols,
    universe_due,
)
from shared import keys
from shared.book import LastPrice, Universe, read_positions, read_universe
from shared.bus import publish_in, publish_many
from shared.config import Settings
from shared.exchange import ExchangeClient
from shared.exchange_errors import UNREADABLE, OrderRejected, TemporaryError, UnreadableAnswer
from shared.exchange_models import OHLCV, MarketInfo, Ticker
from shared.log import error_text
from shared.metrics import (
    BAD_DATA,
    CANDLE_GAPS,
    CANDLES_PUBLISHED,
    SYMBOL_FAILURES,
    SYMBOLS_SKIPPED,
    TICKS_PUBLISHED,
    UNIVERSE_ROTATIONS,
    UNIVERSE_SIZE,
)
from shared.schemas import Candle, PriceTick, SchemaError, encode
from shared.service import ServiceContext

log = logging.getLogger(__name__)
T = TypeVar("T")

FETCH_CONCURRENCY = 4  # symbols whose candles are fetched at once
EXPECTED_TTL_S = 86_400  # life of a close's expected-count key
REDIS_GIVE_UP_S = 60.0  # scans failing on Redis this long end the service (it is restarted)
# A symbol that cannot be fetched: retries ran out, or the exchange refuses the symbol.
SYMBOL_ERRORS = (TemporaryError, OrderRejected)
# Raise tb:md:now to ARGV[1] when that is later: a paused old lease holder cannot lower it.
RAISE_MD_NOW = (
    "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1]) end return 1"
)


class MarketClient(Protocol):
    """The exchange calls market_data makes (``ExchangeClient`` fits; tests wrap it)."""

    async def server_time(self) -> int: ...
    async def markets(self, reload: bool = False) -> dict[str, MarketInfo]: ...
    async def quote_volumes(self) -> dict[str, float]: ...
    async def ohlcv(
        self, symbol: str, limit: int, *, timeframe: str | None = None, now_ms: int | None = None
    ) -> list[OHLCV]: ...
    async def tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]: ...


@dataclass(frozen=True)
class Record:
    """What Redis holds for a symbol: its last published open time and its window size."""

    last_open: int | None
    window_len: int


@dataclass
class SymbolCandles:
    """One symbol's outcome at a close: the window candles to store and those to publish."""

    symbol: str
    window: list[Candle]
    publish: list[Candle]


class MarketData:
    """One market_data instance: call ``scan()`` once per SCAN_INTERVAL (``loop`` does)."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        client: MarketClient,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.client = client
        self.may_act = may_act
        self.tf_ms = settings.timeframe_ms
        self.period_ms = rotate_ms(settings.coin_rotate_hours)
        self.universe: Universe | None = None
        self.processed_close: int | None = None  # newest close whose candles were published
        self.health = Health()
        self._loaded = False
        self._unknown: set[str] = set()  # position symbols not listed, already warned about
        self._waits: dict[str, tuple[int, int]] = {}  # symbol: (candle waited for, closes)

    async def _ask(self, call: str, request: Awaitable[T]) -> T:
        """Await an exchange call; an answer that could not be read is an UnreadableAnswer."""
        try:
            return await request
        except UnreadableAnswer:  # the client's retries met an unreadable answer each time
            BAD_DATA.labels(call, "unreadable").inc()
            raise
        except UNREADABLE as e:  # our own parsing of an answer ccxt did read
            BAD_DATA.labels(call, "unreadable").inc()
            raise UnreadableAnswer(
                f"{call}: the exchange's answer could not be read ({error_text(e)})", call
            ) from e

    # --- the scan ----------------------------------------------------------------------

    async def scan(self) -> bool:
        """Run one scan: universe, ticks, then candles when a new close is due.

        Return True when everything due was published and ``tb:md:clock`` advanced; False
        when something is left for the next scan (exchange unreachable, lease not held).
        """
        if not self._loaded:
            await self._load_universe()
        try:
            now = await self._ask("server_time", self.client.server_time())
        except TemporaryError as e:
            log.warning("Scan: exchange clock not read (%s); trying again next scan", e)
            return False
        close = last_close_ms(now, self.tf_ms)
        if universe_due(self.universe, close, self.period_ms):
            await self.rotate(close)
        if not await self.publish_ticks(now):
            return False
        if (self.processed_close is None or close > self.processed_close) and not (
            await self.publish_candles(now, close)
        ):
            return False
        if not self.may_act():
            return False
        await self.redis.set(keys.MD_CLOCK, now)
        return True

    async def _load_universe(self) -> None:
        """Resume the stored universe, so a restart does not rotate mid-period."""
        try:
            self.universe = await read_universe(self.redis)
        except SchemaError as e:
            log.warning("Universe: stored universe unreadable (%s); rotating now", e)
            self.universe = None
        self._loaded = True
        if self.universe is not None:
            UNIVERSE_SIZE.set(len(self.universe.symbols))
            log.info(
                "Universe: resumed %d symbols %s (rotation at %s)",
                len(self.universe.symbols),
                describe_universe(self.universe),
                fmt_ms(self.universe.rotated_ms),
            )

    async def rotate(self, close: int) -> bool:
        """Choose the TOP_N symbols by 24 h quote volume at ``close``; return whether it did."""
        try:
            markets = await self._ask("markets", self.client.markets(reload=True))
            volumes = await self._ask("quote_volumes", self.client.quote_volumes())
        except TemporaryError as e:
            log.warning("Universe: rotation at %s failed (%s); trying again", fmt_ms(close), e)
            return False
        listed = {s: v for s, v in volumes.items() if s in markets}
        bad = sorted(s for s, v in listed.items() if not (math.isfinite(v) and v >= 0))
        if bad:
            BAD_DATA.labels("quote_volumes", "bad_value").inc(len(bad))
            log.warning(
                "Universe: 24 h volume of %d symbols refused (%s), not ranked",
                len(bad),
                ", ".join(f"{s} {listed[s]}" for s in bad[:5]),
            )
            listed = {s: v for s, v in listed.items() if s not in bad}
        if not listed:
            if not markets:
                BAD_DATA.labels("markets", "empty").inc()
            log.warning("Universe: no %s perpetuals listed; trying again", self.settings.quote)
            return False
        chosen = choose_universe(listed, self.settings.top_n, close)
        if not self.may_act():
            return False
        await self.redis.set(keys.UNIVERSE, chosen.dump())
        self.universe = chosen
        UNIVERSE_SIZE.set(len(chosen.symbols))
        UNIVERSE_ROTATIONS.inc()
        log.info(
            "Universe: %d symbols %s (rotation at %s)",
            len(chosen.symbols),
            describe_universe(chosen),
            fmt_ms(close),
        )
        return True

    # --- ticks -------------------------------------------------------------------------

    async def publish_ticks(self, now: int) -> bool:
        """Publish the last price of every universe and open-position symbol; return success."""
        try:
            held = [p.symbol for p in (await read_positions(self.redis)).values()]
        except SchemaError as e:  # the book is state's; a bad record must not stop prices
            log.error("Ticks: open positions unreadable (%s); ticking the universe only", e)
            held = []
        universe = self.universe.symbols if self.universe is not None else []
        wanted = tick_symbols(universe, held)
        if not wanted:
            return True
        try:
            markets = await self._ask("markets", self.client.markets())
            if not markets:  # an unreadable exchangeInfo leaves ccxt with no markets
                BAD_DATA.labels("markets", "empty").inc()
                log.warning("Ticks: the exchange lists no markets; trying again next scan")
                return False
            symbols = [s for s in wanted if s in markets]
            self._warn_unlisted(set(wanted) - set(symbols))
            tickers = await self._ask("tickers", self.client.tickers(symbols)) if symbols else {}
        except SYMBOL_ERRORS as e:
            log.warning("Ticks: tickers not read (%s); trying again next scan", e)
            return False
        ticks = self._checked_ticks(symbols, tickers, now)
        if not self.may_act():
            return False
        if ticks:
            await self.redis.eval(RAISE_MD_NOW, 1, keys.MD_NOW, now)
            await publish_many(self.redis, keys.STREAM_TICKS, ticks)
            prices = {t.symbol: LastPrice(price=t.price, ts=t.ts).dump() for t in ticks}
            await self.redis.hset(keys.LAST_PRICES, mapping=prices)  # type: ignore[arg-type]
            TICKS_PUBLISHED.inc(len(ticks))
        return True

    def _checked_ticks(
        self, symbols: list[str], tickers: dict[str, Ticker], now: int
    ) -> list[PriceTick]:
        """Return a tick per symbol whose last price is a finite number > 0; log and count the
        others (no tick for them this scan: the last one stands)."""
        ticks: list[PriceTick] = []
        refused: list[str] = []
        missing: list[str] = []
        for s in symbols:
            t = tickers.get(s)
            if t is None:
                missing.append(s)
            elif t.last is None or not math.isfinite(t.last) or t.last <= 0:
                refused.append(f"{s} price {t.last}")
            else:
                ticks.append(PriceTick(symbol=s, price=t.last, ts=now))
        if refused:
            BAD_DATA.labels("tickers", "bad_value").inc(len(refused))
        if missing:
            BAD_DATA.labels("tickers", "missing").inc(len(missing))
        if refused or missing:
            log.warning(
                "Ticks: no tick for %d symbols this scan (%s)",
                len(refused) + len(missing),
                ", ".join(refused + [f"{s} not in the answer" for s in missing]),
            )
        return ticks

    def _warn_unlisted(self, unlisted: set[str]) -> None:
        """Warn once about each open-position symbol the exchange does not list."""
        for s in sorted(unlisted - self._unknown):
            log.warning("Ticks: %s has an open position but is not listed; no ticks for it", s)
        self._unknown = unlisted

    # --- candles -----------------------------------------------------------------------

    async def publish_candles(self, now: int, close: int) -> bool:
        """Fetch and publish the closed candles of every universe symbol; return success.

        A symbol that fails is logged, counted and skipped this close (the next close
        refills it); failing FAILS_BEFORE_SKIP closes in a row, it sits out a while.
        """
        if self.universe is None or not self.universe.symbols:
            return False
        symbols = self.universe.symbols
        active = [s for s in symbols if not self.health.skipped(s, close)]
        records = await self._records(active)
        sem = asyncio.Semaphore(FETCH_CONCURRENCY)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._fetch(s, records[s], now, close, sem)) for s in active
                ]
        except BaseExceptionGroup as group:  # an OperationalError: the service must end
            raise group.exceptions[0] from None
        fetched = [r for t in tasks if (r := t.result()) is not None]
        SYMBOLS_SKIPPED.set(self.health.skipped_count(symbols, close))
        published = [c for f in fetched for c in f.publish]
        if not self.may_act():
            return False
        await self._commit(fetched, published)
        for candle in published:
            CANDLES_PUBLISHED.labels(candle.symbol).inc()
        self.processed_close = close
        log.info(
            "Candles: close %s published %d for %d/%d symbols (%d failed, %d skipped)",
            fmt_ms(close),
            len(published),
            len(fetched),
            len(symbols),
            len(active) - len(fetched),
            len(symbols) - len(active),
        )
        return True

    async def _records(self, symbols: list[str]) -> dict[str, Record]:
        """Read each symbol's last published open time and window size in one round trip."""
        if not symbols:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.LAST_CANDLE, symbols)
        for s in symbols:
            pipe.zcard(keys.candles_key(s, self.settings.timeframe))
        replies: list[Any] = await pipe.execute()
        lasts, sizes = replies[0], replies[1:]
        return {
            s: Record(None if raw is None else int(raw), int(n))
            for s, raw, n in zip(symbols, lasts, sizes, strict=True)
        }

    async def _fetch(
        self, symbol: str, record: Record, now: int, close: int, sem: asyncio.Semaphore
    ) -> SymbolCandles | None:
        """Fetch one symbol's candles and sort them out; None when the symbol failed."""
        limit = self.settings.candle_limit
        count = fetch_count(record.last_open, record.window_len, close, self.tf_ms, limit)
        rows: list[OHLCV] = []
        if count > 0:
            try:
                async with sem:
                    rows = await self._ask("ohlcv", self.client.ohlcv(symbol, count, now_ms=now))
            except SYMBOL_ERRORS as e:
                self._symbol_failed(symbol, close, error_text(e))
                return None
        plan = plan_candles(
            symbol,
            self.settings.timeframe,
            self.tf_ms,
            rows,
            record.last_open,
            close,
            count,
            self._give_up(symbol),
        )
        if plan.problem is not None:
            kind, why = plan.problem
            BAD_DATA.labels("ohlcv", kind).inc()
            self._symbol_failed(symbol, close, f"answer refused: {why}; nothing of it used")
            return None
        self.health.succeeded(symbol)
        self._report(symbol, plan, record.last_open)
        return SymbolCandles(symbol, plan.window, plan.publish)

    def _give_up(self, symbol: str) -> set[int]:
        """Return the candle the symbol waited for HOLE_PATIENCE closes already, if any."""
        waited = self._waits.get(symbol)
        return {waited[0]} if waited is not None and waited[1] >= HOLE_PATIENCE else set()

    def _report(self, symbol: str, plan: Plan, last_open: int | None) -> None:
        """Count and log (in one line) what was wrong with a symbol's candles; track waits."""
        if plan.waiting_for is None:
            self._waits.pop(symbol, None)
        else:
            t, closes = self._waits.get(symbol, (plan.waiting_for, 0))
            self._waits[symbol] = (plan.waiting_for, closes + 1 if t == plan.waiting_for else 1)
        gaps = [(plan.gap.open_time, plan.gap.missing)] if plan.gap is not None else []
        for t in plan.given_up:
            log.warning("Candles: %s gave up waiting for the candle at %s", symbol, fmt_ms(t))
            gaps.append((t + self.tf_ms, 1))
        for before, missing in gaps:
            CANDLE_GAPS.labels(symbol).inc()
            log.warning("Candles: %s gap of %d candles before %s", symbol, missing, fmt_ms(before))
        if last_open is not None and len(plan.publish) > 1:
            log.info(
                "Candles: %s refilled %d candles missed since %s",
                symbol,
                len(plan.publish) - 1,
                fmt_ms(last_open + self.tf_ms),
            )
        parts: list[str] = []
        if plan.refused:
            t, why = plan.refused[0]
            more = f" (and {len(plan.refused) - 1} more)" if len(plan.refused) > 1 else ""
            parts.append(f"candle at {fmt_ms(t)} refused ({why}){more}, not published")
            BAD_DATA.labels("ohlcv", "bad_value").inc(len(plan.refused))
        if plan.duplicates:
            parts.append(f"{plan.duplicates} duplicated candles dropped")
            BAD_DATA.labels("ohlcv", "duplicate").inc(plan.duplicates)
        if plan.missing:
            parts.append(f"candle at {fmt_ms(plan.missing[0])} missing from the answer")
            BAD_DATA.labels("ohlcv", "missing").inc(len(plan.missing))
        if plan.waiting_for is not None:
            parts.append(
                f"publishing waits for the candle at {fmt_ms(plan.waiting_for)} "
                f"(closes waited: {self._waits[symbol][1]} of {HOLE_PATIENCE})"
            )
        if plan.refused or plan.missing or plan.duplicates:
            SYMBOL_FAILURES.labels(symbol).inc()
            log.error("Candles: %s %s", symbol, "; ".join(parts))

    def _symbol_failed(self, symbol: str, close: int, why: str) -> None:
        """Log and count a symbol's failed close; skip it a while after too many in a row."""
        SYMBOL_FAILURES.labels(symbol).inc()
        log.warning("Candles: %s failed (%s), skipped this close", symbol, why)
        if self.health.failed(symbol, close, self.tf_ms):
            h = self.health.symbols[symbol]
            log.error(
                "Candles: %s failed %d closes in a row; skipped until %s",
                symbol,
                h.failures,
                fmt_ms(h.skip_until),
            )

    async def _commit(self, fetched: list[SymbolCandles], published: list[Candle]) -> None:
        """Write windows, last-candle records, stream entries and expected counts atomically."""
        if not published and not any(f.window for f in fetched):
            return
        counts = expected_counts(published, self.tf_ms)
        closes = sorted(counts)
        prior: list[Any] = (
            await self.redis.mget([keys.close_expected_key(c) for c in closes]) if closes else []
        )
        limit = self.settings.candle_limit
        pipe = self.redis.pipeline(transaction=True)
        for f in fetched:
            if not f.window:
                continue
            key = keys.candles_key(f.symbol, self.settings.timeframe)
            # The exchange's candles replace the window's at their open times; a candle the
            # answer lacked or that was refused keeps what the window held.
            for run_start, run_end in _runs([c.open_time for c in f.window], self.tf_ms):
                pipe.zremrangebyscore(key, run_start, run_end)
            pipe.zadd(key, {encode(c): c.open_time for c in f.window})
            pipe.zremrangebyrank(key, 0, -(limit + 1))
        last = {f.symbol: max(c.open_time for c in f.publish) for f in fetched if f.publish}
        if last:
            pipe.hset(keys.LAST_CANDLE, mapping=last)  # type: ignore[arg-type]
        for c in publish_order(published):
            publish_in(pipe, keys.STREAM_CANDLES, c)
        # Earlier scans may have published candles of the same close (a symbol that failed
        # then and is refilled now): the count covers them too. market_data is the only
        # writer (single active), so the read above cannot go stale before EXEC.
        published_us = time.time_ns() // 1000  # the executor's latency metric starts here
        for close_ms, before in zip(closes, prior, strict=True):
            total = counts[close_ms] + (int(before) if before is not None else 0)
            pipe.set(keys.close_expected_key(close_ms), total, ex=EXPECTED_TTL_S)
            pipe.set(keys.close_published_key(close_ms), published_us, ex=EXPECTED_TTL_S, nx=True)
        await pipe.execute()

    # --- the loop ----------------------------------------------------------------------

    async def loop(self, stop: asyncio.Event) -> None:
        """Scan every SCAN_INTERVAL seconds until ``stop`` is set.

        A Redis failure skips the scan (the next one redoes it); failing for longer than
        REDIS_GIVE_UP_S, it is raised so the service ends and is restarted.
        """
        clock = asyncio.get_running_loop().time
        failing_since: float | None = None
        while not stop.is_set():
            started = clock()
            try:
                await self.scan()
                failing_since = None
            except RedisError as e:
                failing_since = started if failing_since is None else failing_since
                if started - failing_since > REDIS_GIVE_UP_S:
                    raise
                log.warning("Scan: Redis failed (%s); trying again next scan", error_text(e))
            wait = max(0.0, self.settings.scan_interval - (clock() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


def _runs(opens: Sequence[int], timeframe_ms: int) -> list[tuple[int, int]]:
    """Return (first, last) of each run of consecutive open times (sorted input)."""
    runs: list[tuple[int, int]] = []
    for t in opens:
        if runs and t - runs[-1][1] == timeframe_ms:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


async def run(ctx: ServiceContext) -> None:
    # pragma: no mutate block (service wiring: the end-to-end and chaos tests run it)
    """Run market_data until ``ctx.stop`` is set (the service body, under the lease)."""
    client = ExchangeClient.from_settings(ctx.settings)
    try:
        if not await client.start_when_reachable(ctx.stop, ctx.settings.scan_interval):
            return
        md = MarketData(ctx.settings, ctx.redis, client, ctx.may_act)
        await md.loop(ctx.stop)
    finally:
        await client.close()
