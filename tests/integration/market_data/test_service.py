"""The service: its loop under ``run``, and ``python -m services.market_data`` as a process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from services.market_data.service import run
from shared import keys
from shared.book import read_heartbeats
from shared.redisconn import EmbeddedRedis
from shared.service import ServiceContext
from tests.fixtures.procs import ROOT, clean_env
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.market_data.conftest import (
    STEPS_PER_CANDLE,
    TF_MS,
    md_settings,
    stream_candles,
)


async def wait_until_clock(client: aioredis.Redis, ms: int) -> None:
    """Wait until market data caught up with exchange time ``ms`` (30 s at most)."""

    async def caught_up() -> bool:
        return int(await client.get(keys.MD_CLOCK) or 0) >= ms

    await eventually(caught_up, within=30.0)


async def test_run_scans_until_stopped(
    synthetic: SimHandle,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    settings = md_settings(synthetic, redis_server.url, tmp_path, top_n=3)
    ctx = ServiceContext(settings, "market_data", "market_data-test", redis_client)
    task = asyncio.create_task(run(ctx))
    await wait_until_clock(redis_client, synthetic.sim.now_ms())
    for _ in range(2):
        synthetic.sim.step(STEPS_PER_CANDLE)
        await wait_until_clock(redis_client, synthetic.sim.now_ms())
    ctx.stop.set()
    await asyncio.wait_for(task, 10)
    published = await stream_candles(redis_client)
    assert len(published) == 3 * 3
    assert max(Counter((c.symbol, c.open_time) for c in published).values()) == 1


def test_a_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.market_data"],
        cwd=ROOT,
        env=clean_env(TB_TOP_N="0", TB_LOG_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TB_TOP_N=0" in lines[0]


@pytest.mark.slow
async def test_two_processes_one_active_and_the_standby_takes_over(
    synthetic: SimHandle,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    env = clean_env(
        TB_EXCHANGE="sim",
        TB_SIM_HOST="127.0.0.1",
        TB_SIM_PORT=str(urlsplit(synthetic.base_url).port),
        TB_API_KEY=synthetic.api_key,
        TB_API_SECRET=synthetic.api_secret,
        TB_REDIS_URL=redis_server.url,
        TB_TOP_N="3",
        TB_CANDLE_LIMIT="10",
        TB_VR_WINDOW="5",
        TB_CHOP_PERIOD="5",
        TB_SCAN_INTERVAL="0.1",
        TB_METRICS_PORT="0",
        TB_LOG_DIR=str(tmp_path / "logs"),
        TB_LEASE_TTL_MS="1500",
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.market_data",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        await wait_until_clock(redis_client, synthetic.sim.now_ms())
        synthetic.sim.step(STEPS_PER_CANDLE)
        await wait_until_clock(redis_client, synthetic.sim.now_ms())

        async def one_active_one_standby() -> bool:
            roles = sorted(b.role for b in await read_heartbeats(redis_client))
            return roles == ["active", "standby"]

        await eventually(one_active_one_standby)  # heartbeats are written every 2 s
        beats = await read_heartbeats(redis_client)
        active = [b.pid for b in beats if b.role == "active"]
        assert len(active) == 1
        first = next(p for p in procs if p.pid == active[0])
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0

        synthetic.sim.step(STEPS_PER_CANDLE)
        await wait_until_clock(redis_client, synthetic.sim.now_ms())
        published = await stream_candles(redis_client)
        assert len(published) == 3 * 3
        assert max(Counter((c.symbol, c.open_time) for c in published).values()) == 1
        now = synthetic.sim.now_ms()
        assert {c.open_time for c in published} == {
            now - now % TF_MS - k * TF_MS for k in (1, 2, 3)
        }
        logs = list((tmp_path / "logs").glob("market_data_*.log"))
        assert logs
        assert "Universe: 3 symbols" in logs[0].read_text()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 30)
