"""``python -m services.signals`` as a process: refuses a bad setting, works, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from shared import keys
from shared.redisconn import EmbeddedRedis
from shared.schemas import Candle
from tests.fixtures.procs import ROOT, clean_env
from tests.integration.bus.helpers import eventually
from tests.integration.signals.helpers import evaluated, signals, store_and_publish, trend


def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.signals"],
        cwd=ROOT,
        env=clean_env(TB_VR_WINDOW="0", TB_LOG_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "TB_VR_WINDOW=0" in lines[0]


async def test_process_publishes_a_signal_and_stops_cleanly_on_sigterm(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    last = await store_and_publish(redis_client, trend("PROC/USDT:USDT"))
    env = clean_env(
        TB_REDIS_URL=redis_server.url,
        TB_METRICS_PORT="0",
        TB_LOG_DIR=str(tmp_path / "logs"),
        TB_TIMEFRAME="5m",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.signals",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(_marked(redis_client, last), within=60)
        assert [s.symbol for s in await signals(redis_client)] == ["PROC/USDT:USDT"]
        # The heartbeat task runs beside the consumer: on a loaded machine its first write
        # can come after the signal.
        await eventually(lambda: _heartbeat(redis_client), within=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("signals_*.log"))
    assert "Signal: LONG PROC/USDT:USDT body=2.00% VR=5.0 CHOP=" in logs
    assert not await redis_client.keys(keys.heartbeat_key("signals", "*"))


def _marked(client: aioredis.Redis, candle: Candle) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return candle.symbol in await evaluated(client, candle)

    return check


async def _heartbeat(client: aioredis.Redis) -> bool:
    return bool(await client.keys(keys.heartbeat_key("signals", "*")))
