"""``tradebot health``: healthy while a service beats, unhealthy with one line otherwise;
the start counter and the stream gauges every service serves."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from shared import keys, streamstats
from shared.config import Settings
from shared.metrics import (
    HEARTBEAT_TS,
    STREAM_GROUP_LAG,
    STREAM_GROUP_PENDING,
    STREAM_LENGTH,
    serve_metrics,
)
from shared.ops.health import service_problem, sim_problem
from shared.redisconn import EmbeddedRedis, free_port
from tests.fixtures.procs import ROOT
from tests.fixtures.sim import SimHandle
from tests.fixtures.stack import Stack


def test_a_beating_service_is_healthy_and_a_stale_one_is_not() -> None:
    port = free_port()
    settings = Settings(metrics_port=port)
    assert service_problem(settings) is not None  # nothing listens yet
    assert "no metrics at" in (service_problem(settings) or "")
    serve_metrics(port)
    HEARTBEAT_TS.labels("health-test").set(time.time())
    assert service_problem(settings) is None
    stale = service_problem(settings, now=time.time() + 60)
    assert stale is not None
    assert "last heartbeat" in stale


async def test_the_simulator_check_pings_it(sim: SimHandle) -> None:
    port = urlsplit(sim.base_url).port
    assert port is not None  # the simulator runs in this event loop: check from a thread
    assert await asyncio.to_thread(sim_problem, Settings(sim_port=port)) is None
    assert await asyncio.to_thread(sim_problem, Settings(sim_port=free_port())) is not None


def starts(port: int) -> float:
    """Return tradebot_service_starts_total as the process on ``port`` serves it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tradebot_service_starts_total":
                return sample.value
    raise AssertionError("tradebot_service_starts_total not served")


def test_health_command_follows_a_real_service_process(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    port = free_port()
    stack = Stack(tmp_path, redis_server.url, TB_METRICS_PORT=str(port))

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", "health"],
            env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    down = health()
    assert down.returncode == 1
    assert down.stderr.startswith("unhealthy: no metrics at")
    try:
        stack.start("signals")
        stack.wait_for(lambda: health().returncode == 0, 60, "the signals worker to be healthy")
        assert health().stdout.strip() == "healthy"
        assert starts(port) == 1
        stack.kill("signals", signal.SIGTERM)
        assert health().returncode == 1
        stack.start("signals", name="signals-again")  # a restart at the same address
        stack.wait_for(lambda: health().returncode == 0, 60, "the restarted worker")
        assert starts(port) == 2  # counted in Redis: the restart shows as +1
    finally:
        stack.stop_all()


@pytest.mark.usefixtures("redis_server")
async def test_stream_gauges_show_length_lag_and_pending(redis_client: aioredis.Redis) -> None:
    stream = keys.STREAM_SIGNALS
    await redis_client.xgroup_create(stream, "g", id="0", mkstream=True)
    for i in range(3):
        await redis_client.xadd(stream, {"d": str(i)})
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=1)
    await streamstats.sample(redis_client)
    assert STREAM_LENGTH.labels(stream)._value.get() == 3
    assert STREAM_GROUP_LAG.labels(stream, "g")._value.get() == 2
    assert STREAM_GROUP_PENDING.labels(stream, "g")._value.get() == 1
    assert STREAM_LENGTH.labels(keys.STREAM_DLQ)._value.get() == 0  # not created yet: 0
