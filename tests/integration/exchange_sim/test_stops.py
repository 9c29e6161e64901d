"""Stops trigger where the price path crosses them and fill at the trigger; PnL by hand."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import pandas as pd
import pytest

from services.exchange_sim.app import run_clock
from services.exchange_sim.market import Market
from tests.fixtures.sim import SimHandle, running_sim

FEE = 0.0005
BTC = "BTC/USDT:USDT"


async def test_long_stop_on_scripted_path(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    await ex.create_order(BTC, "market", "buy", 0.1)
    stop = await ex.create_order(
        BTC,
        "market",
        "sell",
        0.1,
        params={"stopPrice": 58_800.0, "reduceOnly": True, "clientOrderId": "sl"},
    )
    sim.set_path("BTCUSDT", [59_500.0, 58_900.0, 58_700.0, 59_000.0])
    sim.step(2)
    assert (await ex.fetch_order(stop["id"], BTC, params={"trigger": True}))["status"] == "open"
    sim.step(1)  # 58 700 crosses 58 800

    done = await ex.fetch_order(stop["id"], BTC, params={"trigger": True})
    assert done["status"] == "closed"
    assert done["info"]["algoStatus"] == "FINISHED"
    fill = await ex.fetch_order(done["info"]["actualOrderId"], BTC)
    assert (fill["status"], fill["average"], fill["info"]["origType"]) == (
        "closed",
        58_800.0,
        "STOP_MARKET",
    )
    assert fill["clientOrderId"] != "sl"  # Binance's algo service places a new order
    trades = await ex.fetch_my_trades(BTC)
    assert trades[-1]["price"] == 58_800.0
    assert float(trades[-1]["info"]["realizedPnl"]) == pytest.approx(-120.0)
    assert await ex.fetch_positions([BTC]) == []
    fees = FEE * 0.1 * (60_000.0 + 58_800.0)
    balance = await ex.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000.0 - 120.0 - fees)
    sim.step(1)
    assert len(sim.account.trades) == 2, "a finished stop never fires again"


async def test_short_stop_triggers_on_a_rise(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    eth = "ETH/USDT:USDT"
    await ex.create_order(eth, "market", "sell", 1.0)
    await ex.create_order(
        eth, "market", "buy", 1.0, params={"stopPrice": 3_060.0, "reduceOnly": True}
    )
    sim.set_path("ETHUSDT", [3_050.0, 3_061.0])
    sim.step(2)
    trades = await ex.fetch_my_trades(eth)
    assert [(t["side"], t["price"]) for t in trades] == [("sell", 3_000.0), ("buy", 3_060.0)]
    assert float(trades[-1]["info"]["realizedPnl"]) == pytest.approx(-60.0)


async def test_stop_with_position_gone_expires_without_a_fill(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    await ex.create_order(BTC, "market", "buy", 0.01)
    stop = await ex.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59_000.0, "reduceOnly": True}
    )
    await ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    sim.set_path("BTCUSDT", [58_000.0])
    sim.step()
    gone = await ex.fetch_order(stop["id"], BTC, params={"trigger": True})
    assert gone["info"]["algoStatus"] == "EXPIRED"
    assert len(sim.account.trades) == 2


def replay_frame() -> pd.DataFrame:
    """Three 5m candles; the third is green with its low (96) under a 2% stop from 100."""
    t0 = 1_735_689_600_000
    rows = [
        (t0, 100.0, 101.0, 99.0, 100.5, 1000.0),
        (t0 + 300_000, 100.5, 101.0, 99.5, 100.0, 1000.0),
        (t0 + 600_000, 100.0, 103.0, 96.0, 102.0, 3000.0),
    ]
    return pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])


async def test_stop_on_replayed_candles_fires_at_the_low_event() -> None:
    market = Market.from_frames({"SOL/USDT": replay_frame()}, 300_000, warmup=2)
    async with running_sim(feed=market) as sim:
        ex = sim.make_ccxt()
        await ex.load_markets()
        sol = "SOL/USDT:USDT"
        entry = await ex.create_order(sol, "market", "buy", 10)
        assert entry["average"] == 100.0  # the close of the candle before
        await ex.create_order(
            sol, "market", "sell", 10, params={"stopPrice": 98.0, "reduceOnly": True}
        )
        assert sim.step(1) == [("SOLUSDT", 100.0)]  # open
        assert sim.account.algo_orders[max(sim.account.algo_orders)].status == "NEW"
        assert sim.step(1) == [("SOLUSDT", 96.0)]  # low first: a green candle
        trades = await ex.fetch_my_trades(sol)
        assert [(t["side"], t["price"]) for t in trades] == [("buy", 100.0), ("sell", 98.0)]
        assert sum(float(t["info"]["realizedPnl"]) for t in trades) == pytest.approx(-20.0)
        balance = await ex.fetch_balance()
        assert balance["USDT"]["total"] == pytest.approx(10_000 - 20 - FEE * (1000 + 980))


async def test_stop_on_synthetic_path_fires_at_the_first_crossing() -> None:
    market = Market.synthetic(2, seed=11, warmup=30)
    async with running_sim(feed=market) as sim:
        ex = sim.make_ccxt()
        await ex.load_markets()
        entry = (await ex.create_order(BTC, "market", "buy", 0.01))["average"]
        trigger = math.floor(entry * 0.997 * 10) / 10
        await ex.create_order(
            BTC, "market", "sell", 0.01, params={"stopPrice": trigger, "reduceOnly": True}
        )
        crossed = None
        for i in range(4000):
            btc = [p for s, p in sim.step(1) if s == "BTCUSDT"]
            fired = bool(sim.sim.triggered)
            if any(p <= trigger for p in btc):
                crossed = i
                assert fired
                break
            assert not fired, "the stop fired before the path crossed it"
        assert crossed is not None, "the synthetic path never fell 0.3% in 4000 events"
        trades = await ex.fetch_my_trades(BTC)
        assert trades[-1]["price"] == trigger
        realized = 0.01 * (trigger - entry)
        assert float(trades[-1]["info"]["realizedPnl"]) == pytest.approx(realized)
        fees = FEE * 0.01 * (entry + trigger)
        balance = await ex.fetch_balance()
        assert balance["USDT"]["total"] == pytest.approx(10_000 + realized - fees)


async def test_speed_clock_plays_the_market_and_fires_stops() -> None:
    market = Market.from_frames({"SOL/USDT": replay_frame()}, 300_000, warmup=2)
    async with running_sim(feed=market) as sim:
        ex = sim.make_ccxt()
        await ex.load_markets()
        sol = "SOL/USDT:USDT"
        await ex.create_order(sol, "market", "buy", 10)
        await ex.create_order(
            sol, "market", "sell", 10, params={"stopPrice": 98.0, "reduceOnly": True}
        )
        clock = asyncio.create_task(run_clock(sim.sim, speed=3000.0, tick_s=0.01))
        try:
            deadline = time.monotonic() + 30
            for _ in range(100_000):
                if sim.sim.triggered or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
        assert [a.actual_price for a in sim.sim.triggered] == [98.0]
        assert sim.sim.now_ms() > market.first_ms + 2 * 300_000
