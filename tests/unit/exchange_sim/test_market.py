"""The simulated market: event timing and order, candle closure, klines, 24h ticker, replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.exchange_sim.feed import MarketFeed
from services.exchange_sim.market import DEFAULT_WARMUP, Market, exchange_symbol
from services.signals.path import candle_price_path
from shared.synthetic import DEFAULT_START_MS, generate_candles

TF = 300_000
Q = TF // 4
T0 = 1_700_000_100_000 - 1_700_000_100_000 % TF


def frame(rows: list[tuple[float, float, float, float, float]], start: int = T0) -> pd.DataFrame:
    """Build an OHLCV frame of consecutive candles from (o, h, l, c, v) rows."""
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"])
    df.insert(0, "timestamp", np.arange(len(rows), dtype=np.int64) * TF + start)
    return df


FLAT = (100.0, 100.5, 99.5, 100.0, 10.0)
GREEN = (100.0, 103.0, 98.0, 102.0, 40.0)
RED = (102.0, 104.0, 97.0, 99.0, 80.0)


@pytest.fixture
def replay() -> Market:
    """Two flat warm-up candles, then a green and a red candle."""
    return Market.from_frames({"BTC/USDT": frame([FLAT, FLAT, GREEN, RED])}, TF, warmup=2)


def test_market_satisfies_the_exchange_feed_protocol(replay: Market) -> None:
    feed: MarketFeed = replay
    assert feed.symbols() == ["BTCUSDT"]
    assert exchange_symbol("ETH/USDT:USDT") == "ETHUSDT"


def test_four_events_per_candle_in_path_order_and_time(replay: Market) -> None:
    assert replay.now_ms() == T0 + 2 * TF
    seen = []
    for _ in range(8):
        events = replay.step()
        assert len(events) == 1
        seen.append((replay.now_ms(), events[0][1]))
    assert [t for t, _ in seen] == [T0 + 2 * TF + Q * k for k in range(1, 9)]
    assert [p for _, p in seen[:4]] == [100.0, 98.0, 103.0, 102.0]  # green: o, l, h, c
    assert [p for _, p in seen[4:]] == [102.0, 104.0, 97.0, 99.0]  # red: o, h, l, c
    assert tuple(p for _, p in seen[:4]) == candle_price_path(*GREEN[:4])


def test_candle_closes_exactly_when_its_close_event_is_played(replay: Market) -> None:
    green_open = T0 + 2 * TF
    for played in range(1, 5):
        replay.step()
        last = replay.klines("BTCUSDT")[-1]
        assert last.open_time == green_open
        closed = last.open_time + TF <= replay.now_ms()
        assert closed == (played == 4)
    assert replay.klines("BTCUSDT")[-1] == (green_open, *GREEN)


def test_forming_candle_is_served_as_partial_ohlcv(replay: Market) -> None:
    start = replay.now_ms()
    assert replay.klines("BTCUSDT")[-1].open_time == start - TF  # no event of it yet
    expected = [
        (100.0, 100.0, 100.0, 100.0, 10.0),
        (100.0, 100.0, 98.0, 98.0, 20.0),
        (100.0, 103.0, 98.0, 103.0, 30.0),
    ]
    for want in expected:
        replay.step()
        assert replay.klines("BTCUSDT", TF, None, None, 500)[-1][1:] == want
        assert replay.price("BTC/USDT") == want[3]


def test_klines_bounds_and_limit() -> None:
    market = Market.from_frames({"ETHUSDT": frame([FLAT] * 10)}, TF, warmup=8)
    assert [k.open_time for k in market.klines("ETHUSDT", limit=3)] == [
        T0 + 5 * TF,
        T0 + 6 * TF,
        T0 + 7 * TF,
    ]
    assert [k.open_time for k in market.klines("ETHUSDT", start_ms=T0 + TF, limit=2)] == [
        T0 + TF,
        T0 + 2 * TF,
    ]
    assert len(market.klines("ETHUSDT", start_ms=T0, end_ms=T0 + 2 * TF)) == 3
    assert market.klines("ETHUSDT", end_ms=T0 - 1) == []
    with pytest.raises(ValueError, match="interval"):
        market.klines("ETHUSDT", interval_ms=60_000)
    with pytest.raises(ValueError, match="interval"):
        market.klines("ETHUSDT", interval_ms=7 * TF)
    with pytest.raises(KeyError, match="XRP"):
        market.price("XRPUSDT")
    with pytest.raises(ValueError, match="twice"):
        Market.from_frames({"ETHUSDT": frame([FLAT]), "ETH/USDT": frame([FLAT])}, TF)
    with pytest.raises(ValueError, match="aligned"):
        Market.from_frames({"ETHUSDT": frame([FLAT], start=T0 + 1)}, TF)


def test_klines_of_a_longer_interval_are_aggregated_with_the_forming_one_partial() -> None:
    rows = [FLAT, GREEN, RED, FLAT, GREEN, RED, GREEN]
    market = Market.from_frames({"BTCUSDT": frame(rows, start=T0 - T0 % (3 * TF))}, TF, warmup=6)
    market.step()
    got = market.klines("BTCUSDT", 3 * TF, None, None, 10)
    base = T0 - T0 % (3 * TF)
    assert got == [
        (base, 100.0, 104.0, 97.0, 99.0, 130.0),
        (base + 3 * TF, 100.0, 104.0, 97.0, 99.0, 130.0),
        (base + 6 * TF, 100.0, 100.0, 100.0, 100.0, 10.0),
    ]
    assert market.klines("BTCUSDT", 3 * TF, None, None, 1) == got[-1:]
    assert market.klines("BTCUSDT", 3 * TF, base + 1, None, 1) == got[1:2]
    assert market.klines("BTCUSDT", 3 * TF, None, base + 3 * TF, 5) == got[:2]


def test_replay_from_csv_plays_to_the_end_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT.csv"
    frame([FLAT, GREEN, RED, FLAT, GREEN]).to_csv(path, index=False)
    market = Market.from_files(path, warmup=3)
    assert market.timeframe_ms == TF
    assert market.symbols() == ["BTCUSDT"]
    events = []
    while not market.finished:
        events += market.step()
    assert [p for _, p in events] == [*candle_price_path(*FLAT[:4]), *candle_price_path(*GREEN[:4])]
    end = T0 + 5 * TF
    assert market.now_ms() == end
    assert market.step() == []
    assert market.advance_to(end + 10 * TF) == []
    assert market.now_ms() == end
    assert market.klines("BTCUSDT")[-1] == (T0 + 4 * TF, *GREEN)


def test_replay_steps_over_a_gap_in_all_symbols() -> None:
    frames = {"BTC/USDT": pd.concat([frame([FLAT]), frame([GREEN], start=T0 + 10 * TF)])}
    market = Market.from_frames(frames, TF, warmup=1)
    assert market.now_ms() == T0 + TF
    assert market.step() == [("BTCUSDT", 100.0)]
    assert market.now_ms() == T0 + 10 * TF + Q


def test_symbols_play_together_at_each_event_time() -> None:
    frames = {"BTC/USDT": frame([FLAT, GREEN]), "ETH/USDT": frame([FLAT, RED])}
    market = Market.from_frames(frames, TF, warmup=1)
    assert market.step() == [("BTCUSDT", 100.0), ("ETHUSDT", 102.0)]
    assert market.step() == [("BTCUSDT", 98.0), ("ETHUSDT", 104.0)]


def test_advance_to_plays_the_same_events_as_stepping() -> None:
    a = Market.synthetic(3, seed=4)
    b = Market.synthetic(3, seed=4)
    stepped = []
    for _ in range(4 * 12):
        stepped += a.step()
    assert b.advance_to(a.now_ms()) == stepped
    assert len(stepped) == 3 * 4 * 12
    assert b.advance_to(a.now_ms() - TF) == []
    assert b.now_ms() == a.now_ms()


def test_synthetic_market_has_history_at_start_and_continues_the_generator() -> None:
    market = Market.synthetic(2, seed=9)
    start = DEFAULT_START_MS + DEFAULT_WARMUP * TF
    assert market.now_ms() == start
    assert market.symbols() == ["BTCUSDT", "ETHUSDT"]
    history = market.klines("BTCUSDT", limit=150)
    assert len(history) == 150
    assert all(k.open_time + TF <= start for k in history)
    assert not market.finished

    later = DEFAULT_START_MS + 9 * 86_400_000  # past the first 7-day chunk
    events = market.advance_to(later)
    assert len(events) == 2 * 4 * (later - start) // TF
    reference = generate_candles(2, 10, seed=9)["ETH/USDT"]
    got = market.klines("ETH/USDT", limit=1000)
    want = reference[reference["timestamp"] < later].tail(1000)
    assert [k.open_time for k in got] == want["timestamp"].tolist()
    np.testing.assert_array_equal(np.array([k[1:] for k in got]), want.iloc[:, 1:].to_numpy())
    assert market.price("ETHUSDT") == want["close"].iloc[-1]


def test_ticker_24h_sums_the_candles_closed_in_the_last_day() -> None:
    market = Market.synthetic(1, seed=2)
    day = generate_candles(1, 2, seed=2)["BTC/USDT"]
    now = market.now_ms()
    window = day[(day["timestamp"] + TF > now - 86_400_000) & (day["timestamp"] + TF <= now)]
    assert len(window) == 288
    ticker = market.ticker_24h("BTCUSDT")
    assert ticker.quote_volume == pytest.approx((window["close"] * window["volume"]).sum())
    assert ticker.volume == pytest.approx(window["volume"].sum())
    assert ticker.open == window["open"].iloc[0]
    assert ticker.high == window["high"].max()
    assert ticker.low == window["low"].min()
    assert ticker.last == market.price("BTCUSDT") == window["close"].iloc[-1]
    assert ticker.open_time == window["timestamp"].iloc[0]
    assert ticker.close_time == now

    market.step()  # the forming candle's open event adds a quarter of its volume
    forming = day[day["timestamp"] == now].iloc[0]
    moved = market.ticker_24h("BTCUSDT")
    assert moved.volume == pytest.approx(ticker.volume + forming["volume"] / 4)
    assert moved.open_time == ticker.open_time


@settings(max_examples=10, deadline=None)
@given(jumps=st.lists(st.integers(1, 3 * TF), min_size=1, max_size=12))
def test_advancing_in_any_increments_plays_every_event_once_in_order(jumps: list[int]) -> None:
    stepped, jumped = Market.synthetic(2, seed=1), Market.synthetic(2, seed=1)
    played = []
    for jump in jumps:
        played += jumped.advance_to(jumped.now_ms() + jump)
    expected = []
    while stepped.now_ms() + Q <= jumped.now_ms():
        expected += stepped.step()
    assert played == expected
    assert stepped.price("BTCUSDT") == jumped.price("BTCUSDT")
    assert stepped.klines("ETHUSDT", limit=3)[:-1] == jumped.klines("ETHUSDT", limit=3)[:-1]
