"""The signals worker against a real server: signals, evaluated sets, DLQ, several workers."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.signals.evaluate import CandleWindow, evaluate
from services.signals.service import BATCH, CandleEvaluator, candle_consumer
from shared import keys
from shared.bus import publish
from shared.redisconn import EmbeddedRedis, redis_from_url
from shared.schemas import PriceTick, encode, entry_signal_id
from shared.service import ServiceContext
from tests.fixtures.metrics import sample
from tests.integration.bus.helpers import dlq_entries, eventually
from tests.integration.signals.helpers import (
    TF,
    TF_MS,
    evaluated,
    make_settings,
    pending,
    signals,
    store,
    store_and_publish,
    trend,
    workers,
)


def candles_evaluated() -> float:
    """Return the process-wide count of evaluated candles (tests compare differences)."""
    return sample("tradebot_evaluations_total")


async def test_long_short_and_no_entry_at_one_close(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="signals")
    settings = make_settings(redis_server, tmp_path)
    up = trend("SIREN/USDT:USDT")
    down = trend("DOWN/USDT:USDT", step=-0.003, last_move=-0.02)
    flat = trend("QUIET/USDT:USDT", last_volume=100.0)  # VR 1: no entry
    assert [evaluate(s, settings).side_name for s in (up, down, flat)] == ["long", "short", None]
    for series in (up, down, flat):
        await store_and_publish(redis_client, series)
    last = up[-1]

    async with workers(settings):
        await eventually(lambda: _has(redis_client, last, 3))
        await eventually(lambda: _none_pending(redis_client))

    got = {s.symbol: s for s in await signals(redis_client)}
    assert set(got) == {"SIREN/USDT:USDT", "DOWN/USDT:USDT"}
    long_ = got["SIREN/USDT:USDT"]
    assert long_.id == entry_signal_id("SIREN/USDT:USDT", TF, last.open_time, "long")
    assert long_.side == "long"
    assert long_.candle_open_time == last.open_time
    assert long_.price == last.close
    ev = evaluate(up, settings)
    assert (long_.body_pct, long_.vol_ratio, long_.chop) == (ev.body_pct, ev.vol_ratio, ev.chop)
    assert long_.reason.startswith("green body 2.00%")
    assert got["DOWN/USDT:USDT"].id == entry_signal_id(
        "DOWN/USDT:USDT", TF, last.open_time, "short"
    )
    key = keys.close_evaluated_key(last.open_time + TF_MS)
    assert 0 < await redis_client.ttl(key) <= 86_400
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Signal:")]
    assert any(
        re.fullmatch(r"Signal: LONG SIREN/USDT:USDT body=2\.00% VR=5\.0 CHOP=\d+", m) for m in lines
    ), lines


async def test_window_without_the_candle_and_bad_stored_members(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path)
    series = trend("LATE/USDT:USDT")
    await store(redis_client, series[:-1])  # market_data published before storing it
    key = keys.candles_key("LATE/USDT:USDT", TF)
    await redis_client.zadd(key, {b"garbage": series[5].open_time})
    # A newer stored candle must not enter the window of an older one.
    newer = trend("LATE/USDT:USDT", n=1, last_move=-0.05, start=series[-1].open_time + TF_MS)
    await store(redis_client, newer)
    await publish(redis_client, keys.STREAM_CANDLES, series[-1])

    async with workers(settings):
        await eventually(lambda: _has(redis_client, series[-1], 1))

    [sig] = await signals(redis_client)
    assert sig.id == entry_signal_id("LATE/USDT:USDT", TF, series[-1].open_time, "long")
    assert sig.vol_ratio == evaluate(series, settings).vol_ratio


async def test_other_timeframe_ignored_and_malformed_entries_dead_lettered(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path)
    minute = trend("MIN/USDT:USDT", timeframe="1m", tf_ms=60_000)
    await store_and_publish(redis_client, minute)  # would be a long on 1m
    await redis_client.xadd(keys.STREAM_CANDLES, {b"d": b"{not json"})
    await publish(redis_client, keys.STREAM_CANDLES, PriceTick(symbol="X", price=1.0, ts=1))
    good = await store_and_publish(redis_client, trend("NEXT/USDT:USDT"))

    async with workers(settings) as [ctx]:
        await eventually(lambda: _has(redis_client, good, 1))
        await eventually(lambda: _none_pending(redis_client))
        assert not ctx.stop.is_set()

    assert [s.symbol for s in await signals(redis_client)] == ["NEXT/USDT:USDT"]
    dead = await dlq_entries(redis_client)
    assert [(d.stream, d.group, d.reason) for d in dead] == [
        (keys.STREAM_CANDLES, keys.GROUP_SIGNALS, "decode")
    ] * 2
    assert not await redis_client.exists(keys.close_evaluated_key(minute[-1].open_time + 60_000))


async def test_three_workers_evaluate_each_candle_once_and_one_id_per_candle(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path)
    series = [
        s
        for i in range(6)
        for s in (
            trend(f"S{i}UP/USDT:USDT"),
            trend(f"S{i}DOWN/USDT:USDT", step=-0.003, last_move=-0.02),
            trend(f"S{i}NONE/USDT:USDT", last_volume=100.0),
        )
    ]
    lasts = [await store_and_publish(redis_client, s) for s in series]
    expected_ids = {
        entry_signal_id(c.symbol, TF, c.open_time, side)
        for s, c in zip(series, lasts, strict=True)
        if (side := evaluate(s, settings).side_name) is not None
    }
    assert len(expected_ids) == 12
    before = candles_evaluated()

    async with workers(settings, 3):
        await eventually(lambda: _has(redis_client, lasts[0], len(series)))
        await eventually(lambda: _none_pending(redis_client))
        assert candles_evaluated() - before == len(series)  # each candle handled once
        first = await signals(redis_client)
        assert sorted(s.id for s in first) == sorted(expected_ids)

        for c in lasts:  # market_data publishes every candle a second time
            await publish(redis_client, keys.STREAM_CANDLES, c)
        await eventually(lambda: candles_evaluated() - before == 2 * len(series))
        await eventually(lambda: _none_pending(redis_client))

    every = await signals(redis_client)
    ids_per_candle: dict[tuple[str, int], set[str]] = {}
    for s in every:
        ids_per_candle.setdefault((s.symbol, s.candle_open_time), set()).add(s.id)
    assert all(len(ids) == 1 for ids in ids_per_candle.values())
    assert {s.id for s in every} == expected_ids
    assert len(every) <= 2 * len(expected_ids)
    assert await evaluated(redis_client, lasts[0]) == {c.symbol for c in lasts}
    consumers: Any = await redis_client.xinfo_consumers(keys.STREAM_CANDLES, keys.GROUP_SIGNALS)
    assert len(consumers) == 3


async def _has(client: aioredis.Redis, candle: Any, count: int) -> bool:
    return len(await evaluated(client, candle)) >= count


async def _none_pending(client: aioredis.Redis) -> bool:
    return await pending(client) == 0


async def test_an_overflowing_volume_ratio_is_still_a_signal(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path)
    series = trend("TINY/USDT:USDT")
    series = [c.model_copy(update={"volume": 5e-324}) for c in series[:-1]] + series[-1:]
    assert evaluate(series, settings).vol_ratio == float("inf")  # as the backtest computes it
    last = await store_and_publish(redis_client, series)
    async with workers(settings):
        await eventually(lambda: _has(redis_client, last, 1))
    [signal] = await signals(redis_client)
    assert (signal.side, signal.vol_ratio) == ("long", sys.float_info.max)


async def test_the_window_skips_foreign_members_and_keeps_the_rest(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_server, tmp_path)
    series = trend("WIN/USDT:USDT")
    await store(redis_client, series)
    key = keys.candles_key("WIN/USDT:USDT", TF)
    oldest = series[0].open_time
    # At the oldest end of the window: another symbol's candle and a message of another
    # kind. Each is skipped alone: every candle after them stays in the window.
    [other] = trend("OTHER/USDT:USDT", n=1, start=oldest - TF_MS)
    tick = PriceTick(symbol="WIN/USDT:USDT", price=1.0, ts=1)
    await redis_client.zadd(key, {encode(other): oldest - TF_MS, encode(tick): oldest - 2 * TF_MS})
    with caplog.at_level(logging.WARNING, logger="signals"):
        [window] = await CandleEvaluator(redis_client, settings).load_windows([series[-1]])
    assert columns(window) == columns(CandleWindow.from_candles(series))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"Candle: {key} skipped a bad stored candle: kind: expected Candle, got 'tick'",
        f"Candle: {key} skipped a stored candle of OTHER/USDT:USDT",
    ]


def columns(w: CandleWindow) -> list[list[float]]:
    """Return a window's columns as lists, to compare windows by value."""
    return [list(c) for c in (w.open_time, w.open, w.high, w.low, w.close, w.volume)]


async def test_a_signal_is_stamped_now_and_counted_by_side_and_symbol(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path)
    series = trend("STAMP/USDT:USDT")
    await store(redis_client, series)
    signals_before = sample("tradebot_signals_total", side="long", symbol="STAMP/USDT:USDT")
    seconds_before = sample("tradebot_evaluation_duration_seconds_sum")
    before_ms, started = time.time() * 1000, time.perf_counter()
    await CandleEvaluator(redis_client, settings).handle(series[-1], "0-1")
    after_ms, elapsed = time.time() * 1000, time.perf_counter() - started
    [sig] = await signals(redis_client)
    assert before_ms - 1 <= sig.ts <= after_ms + 1  # the wall clock in ms
    assert sample("tradebot_signals_total", side="long", symbol="STAMP/USDT:USDT") == (
        signals_before + 1
    )
    spent = sample("tradebot_evaluation_duration_seconds_sum") - seconds_before
    assert 0 < spent <= elapsed  # the evaluation's own time, within the call's


def test_the_consumer_reads_small_batches_with_the_configured_redelivery(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, tmp_path, reclaim_idle_ms=7_000, max_deliveries=4)
    ctx = ServiceContext(settings, "signals", "signals-test", redis_from_url(redis_server.url))
    consumer = candle_consumer(ctx)
    assert (consumer.stream, consumer.group, consumer.name) == (
        keys.STREAM_CANDLES, keys.GROUP_SIGNALS, "signals-test"
    )  # fmt: skip
    assert (consumer.count, consumer.reclaim_idle_ms, consumer.max_deliveries) == (BATCH, 7_000, 4)
    # A read's candles go to the batch handler; one by one, to the same evaluator's handle.
    assert consumer.batch_handler is not None
    evaluator = consumer.batch_handler.__self__  # type: ignore[attr-defined]
    assert isinstance(evaluator, CandleEvaluator)
    assert consumer.batch_handler == evaluator.handle_batch
    assert consumer.handler == evaluator.handle


async def test_a_batch_is_recorded_as_its_candles_one_by_one_and_decodes_each_member_once(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Two symbols at two closes, a duplicate and a candle of another timeframe in one
    batch: the same signals and evaluated sets as the candles handled one at a time. A
    stored candle is decoded once per worker: the next close decodes only its new one."""
    settings = make_settings(redis_server, tmp_path, top_n=3, candle_limit=25)
    up = trend("UPB/USDT:USDT", n=31)
    down = trend("DNB/USDT:USDT", step=-0.003, last_move=-0.02)
    minute = trend("MIN/USDT:USDT", timeframe="1m", tf_ms=60_000)
    for series in (up[:-1], down):
        await store(redis_client, series)
    evaluator = CandleEvaluator(redis_client, settings)
    assert evaluator.stored_row.cache_info().maxsize == (3 + 16) * 26
    batch = [up[-2], down[-1], minute[-1], down[-1]]
    counted, seconds = candles_evaluated(), sample("tradebot_evaluation_duration_seconds_sum")
    started = time.perf_counter()
    await evaluator.handle_batch([(c, f"{i}-0") for i, c in enumerate(batch)])
    elapsed = time.perf_counter() - started
    assert candles_evaluated() == counted + 3  # not the 1m candle
    spent = sample("tradebot_evaluation_duration_seconds_sum") - seconds
    assert 0 < spent <= elapsed  # the batch's time, shared among its three candles
    got = [s.id for s in await signals(redis_client)]
    assert got == [entry_signal_id("DNB/USDT:USDT", TF, down[-1].open_time, "short")] * 2
    assert await evaluated(redis_client, down[-1]) == {"UPB/USDT:USDT", "DNB/USDT:USDT"}
    assert not await redis_client.exists(keys.close_evaluated_key(minute[-1].open_time + 60_000))
    await redis_client.delete(keys.STREAM_SIGNALS)
    alone = CandleEvaluator(redis_client, settings)
    for i, c in enumerate(batch):
        await alone.handle(c, f"{i}-0")
    assert [s.id for s in await signals(redis_client)] == got

    await store(redis_client, up[-1:])
    misses = evaluator.stored_row.cache_info().misses
    await evaluator.handle_batch([(up[-1], "9-0")])
    assert evaluator.stored_row.cache_info().misses == misses + 1
    [window] = await evaluator.load_windows([up[-1]])  # CANDLE_LIMIT of the 31 stored
    assert columns(window) == columns(CandleWindow.from_candles(up[-25:]))
    [unstored] = trend("UPB/USDT:USDT", n=1, start=up[-1].open_time + TF_MS)
    [window] = await evaluator.load_windows([unstored])  # not stored yet: the newest 24 + it
    assert columns(window) == columns(CandleWindow.from_candles([*up[-24:], unstored]))
    [long_] = [s for s in await signals(redis_client) if s.symbol == "UPB/USDT:USDT"]
    assert (long_.side, long_.vol_ratio) == ("long", evaluate(up[-25:], settings).vol_ratio)
