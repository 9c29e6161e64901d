"""``python -m services.exchange_sim``: documented options, replay loading, trading alone."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pandas as pd
import pytest
from typer.testing import CliRunner

from services.exchange_sim.__main__ import app, build_market
from shared.redisconn import free_port
from tests.fixtures.sim import make_sim_client

OPTIONS = (
    "--host",
    "--port",
    "--api-key",
    "--api-secret",
    "--balance",
    "--fee-rate",
    "--seed",
    "--symbols",
    "--timeframe",
    "--speed",
    "--replay",
    "--start-ms",
    "--warmup",
    "--faults",
    "--fault-seed",
    "--latency-ms",
    "--timeout-hold",
    "--state-file",
)
ROOT = Path(__file__).resolve().parents[3]


def test_help_documents_every_option() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    # The test runner forces 80 columns; the help wraps there, breaking after a hyphen.
    flat = " ".join(result.output.split()).replace("- ", "-")
    for option in OPTIONS:
        assert option in flat
    assert "[default: sim-api-key]" in flat
    assert "[default: sim-api-secret]" in flat


def write_candles(folder: Path, stem: str, base_price: float) -> None:
    t0 = 1_735_689_600_000
    rows = [
        (t0 + i * 300_000, base_price, base_price * 1.01, base_price * 0.99, base_price, 100.0)
        for i in range(10)
    ]
    frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    frame.to_csv(folder / f"{stem}.csv", index=False)


def test_replay_option_loads_all_a_count_or_named_symbols(tmp_path: Path) -> None:
    write_candles(tmp_path, "ETH_USDT", 3000.0)
    write_candles(tmp_path, "SOL_USDT", 150.0)
    assert build_market(tmp_path, "", 1, "5m", None, 5).symbols() == ["ETHUSDT", "SOLUSDT"]
    assert build_market(tmp_path, "1", 1, "5m", None, 5).symbols() == ["ETHUSDT"]
    assert build_market(tmp_path, "SOL/USDT", 1, "5m", None, 5).symbols() == ["SOLUSDT"]
    synthetic = build_market(None, "3", 1, "5m", 1_735_689_600_000, 5)
    assert synthetic.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


async def wait_until_serving(url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "the simulator exited"
            try:
                async with http.get(f"{url}/fapi/v1/time") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the simulator did not start serving within 60 s")


@pytest.mark.slow
async def test_started_alone_it_serves_and_ccxt_can_trade(tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "state.json"
    with (tmp_path / "sim.log").open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.exchange_sim",
            "--port",
            str(port),
            "--speed",
            "0",
            "--symbols",
            "3",
            "--state-file",
            str(state),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    ex = make_sim_client(url, "sim-api-key", "sim-api-secret")
    try:
        await wait_until_serving(url, proc)
        await ex.load_markets()
        assert sorted(ex.markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"]
        order = await ex.create_order("ETH/USDT:USDT", "market", "buy", 0.1)
        assert order["status"] == "closed"
        positions = await ex.fetch_positions()
        assert [p["symbol"] for p in positions] == ["ETH/USDT:USDT"]
    finally:
        await ex.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    log = (tmp_path / "sim.log").read_text()
    assert "api-key=sim-api-key" in log
    saved = json.loads(state.read_text())["account"]
    assert list(saved["positions"]) == ["ETHUSDT"]


@pytest.mark.slow
async def test_a_custom_key_and_secret_are_not_logged(tmp_path: Path) -> None:
    key, secret = "myOwnSimKey-8d1f", "myOwnSimSecret-42aa"
    port = free_port()
    with (tmp_path / "sim.log").open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.exchange_sim", "--port", str(port), "--speed", "0",
            "--symbols", "2", "--api-key", key, "--api-secret", secret,
            cwd=ROOT, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    log = (tmp_path / "sim.log").read_text()
    assert "api-key=(custom, not shown) api-secret=(custom, not shown)" in log
    assert key not in log
    assert secret not in log
