"""``tradebot download`` against the simulator over HTTP with the real ccxt client.

Paging across the exchange's 1,500-candle limit, the incremental top-up, a gap inside the
file filled, injected faults retried, a run killed mid-way and resumed; every time the
store's file is whole, on the grid and equal to what the exchange serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from services.backtest.download import run_download
from services.exchange_sim.market import Market
from shared.candles import load_candles
from shared.cli import app
from shared.config import Settings
from shared.history import PAGE_LIMIT, Fetched, read_stored, store_folder, write_atomic
from shared.metrics import EXCHANGE_REQUESTS
from tests.fixtures.sim import SimHandle, running_sim
from tests.integration.exchange.conftest import FAST

TF_MS = 300_000
STEPS_PER_CANDLE = 4  # the synthetic market plays four price events per 5m candle
HISTORY = 2_000  # closed candles the simulator serves: more than one page
PROJECT = Path(__file__).resolve().parents[3]


def settings_for(sim: SimHandle, data_dir: Path) -> Settings:
    host, port = sim.base_url.removeprefix("http://").split(":")
    return Settings(exchange="sim", sim_host=host, sim_port=int(port), data_dir=data_dir)


def served(sim: SimHandle, symbol_id: str, start: int, end: int) -> np.ndarray:
    """Return the open times the simulator has closed in [start, end)."""
    rows = sim.sim.feed.klines(symbol_id, TF_MS, start, end - 1, 100_000)
    now = sim.sim.now_ms()
    return np.array([k.open_time for k in rows if k.open_time + TF_MS <= now], dtype=np.int64)


async def download(sim: SimHandle, data_dir: Path, days: float) -> list[Fetched]:
    settings = settings_for(sim, data_dir)
    return await run_download(settings, ["BTCUSDT"], None, days, None, None, "5m", False, FAST)


@pytest.fixture
async def market() -> AsyncIterator[SimHandle]:
    async with running_sim(feed=Market.synthetic(3, seed=5, warmup=HISTORY)) as handle:
        yield handle


async def test_pages_across_the_limit_then_tops_up_only_the_new_candles(
    market: SimHandle, tmp_path: Path
) -> None:
    asked = EXCHANGE_REQUESTS.labels("ohlcv")._value.get()
    [first] = await download(market, tmp_path, days=6.5)  # 1,872 candles: two pages of 1,000
    assert EXCHANGE_REQUESTS.labels("ohlcv")._value.get() == asked + 2  # counted as klines
    wanted = int(6.5 * 288)
    assert (first.new, first.total, first.requests) == (wanted, wanted, 2)
    assert wanted > PAGE_LIMIT
    path = store_folder(tmp_path, "sim", "5m") / "BTC_USDT.parquet"
    assert first.path == path
    frame = load_candles(path, timeframe_ms=TF_MS)["BTC/USDT"]  # the loader's rules hold
    ts = frame["timestamp"].to_numpy()
    assert np.array_equal(ts, served(market, "BTCUSDT", int(ts[0]), int(ts[-1]) + TF_MS))
    assert ts[-1] + 2 * TF_MS > market.sim.now_ms()  # up to the last closed candle

    market.step(3 * STEPS_PER_CANDLE)  # three more candles close
    [again] = await download(market, tmp_path, days=6.5)
    assert (again.new, again.requests) == (3, 1)
    assert again.total == wanted + 3  # the head that left the span is kept


async def test_a_gap_inside_the_file_is_filled(market: SimHandle, tmp_path: Path) -> None:
    [first] = await download(market, tmp_path, days=2)
    stored = read_stored(first.path)
    holed = stored.drop(index=range(100, 140)).reset_index(drop=True)
    write_atomic(first.path, holed)
    [again] = await download(market, tmp_path, days=2)
    assert (again.new, again.total, again.requests) == (40, first.total, 1)
    assert read_stored(first.path).equals(stored)


async def test_faults_are_retried_and_the_file_is_the_same(
    market: SimHandle, tmp_path: Path
) -> None:
    [clean] = await download(market, tmp_path / "clean", days=6.5)
    market.set_faults({"http5xx": 0.3, "reset": 0.1}, seed=7)
    [faulty] = await download(market, tmp_path / "faulty", days=6.5)
    assert market.sim.faults.counts["requests"] > 0
    assert read_stored(faulty.path).equals(read_stored(clean.path))


async def test_a_killed_download_resumes_with_a_whole_file(tmp_path: Path) -> None:
    pages = 6
    feed = Market.synthetic(1, seed=9, timeframe_ms=60_000, warmup=pages * PAGE_LIMIT + 10)
    async with running_sim(feed=feed) as sim:
        sim.set_faults({}, latency_ms=150)  # slow answers: the kill lands between pages
        host, port = sim.base_url.removeprefix("http://").split(":")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TB_")}
        env |= {"TB_SIM_HOST": host, "TB_SIM_PORT": port, "TB_DATA_DIR": str(tmp_path)}
        args = ["-m", "shared.cli", "download", "--symbols", "BTCUSDT", "--timeframe", "1m"]
        days = ["--days", str(pages * PAGE_LIMIT / 1440)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, *days, cwd=PROJECT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        path = store_folder(tmp_path, "sim", "1m") / "BTC_USDT.parquet"
        deadline = asyncio.get_running_loop().time() + 60
        while not path.exists():
            assert asyncio.get_running_loop().time() < deadline, "no page written"
            await asyncio.sleep(0.02)
        proc.kill()
        await proc.wait()
        partial = read_stored(path)  # whole: a page or more, never part of one
        assert 0 < len(partial) < pages * PAGE_LIMIT
        assert len(partial) % PAGE_LIMIT == 0
        sim.set_faults({})
        done = await run_download(
            settings_for(sim, tmp_path), ["BTCUSDT"], None, pages * PAGE_LIMIT / 1440,
            None, None, "1m", False, FAST,
        )  # fmt: skip
    [resumed] = done
    assert resumed.total == pages * PAGE_LIMIT
    assert resumed.new == pages * PAGE_LIMIT - len(partial)
    frame = load_candles(path, timeframe_ms=60_000)["BTC/USDT"]
    assert np.all(np.diff(frame["timestamp"].to_numpy()) == 60_000)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no leftovers


async def test_the_backtest_reads_the_store_and_sizes_with_the_market_rules(
    market: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(market, tmp_path / "data")
    done = await run_download(settings, None, 3, 6.5, None, None, "5m", False, FAST)
    assert len(done) == 3
    monkeypatch.setenv("TB_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "bt"
    result = CliRunner().invoke(app, ["backtest", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rules = json.loads((tmp_path / "data/candles/sim/markets.json").read_text())
    assert summary["inputs"]["market_rules"] == str(tmp_path / "data/candles/sim/markets.json")
    assert sorted(summary["inputs"]["symbols"]) == sorted(rules)
    trades = pd.read_csv(out / "trades.csv")
    assert len(trades) > 0
    for t in trades.itertuples():
        step = rules[t.symbol]["amount_step"]
        assert t.quantity >= rules[t.symbol]["min_amount"]
        assert abs(t.quantity / step - round(t.quantity / step)) < 1e-6, (t.symbol, t.quantity)
