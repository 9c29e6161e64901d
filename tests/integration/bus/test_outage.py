"""Redis outages, for real: the test server is killed (SIGKILL) and started again.

A consumer and a publish ride out an outage shorter than their window, logging each retry
with the stream (and the group and consumer); a longer one ends in one "giving up" error
line and ``BusUnavailable`` (a redis ConnectionError), which ends the service: a signals
worker process then exits with code 1 for its supervisor to restart it (slow: the window is
60 s).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError

from shared import keys
from shared.bus import OUTAGE_S, BusUnavailable, Consumer, publish, publish_many
from shared.redisconn import EmbeddedRedis
from shared.schemas import PriceTick
from tests.fixtures.procs import ROOT, clean_env
from tests.integration.bus.helpers import GROUP, STREAM, eventually, running, tick

NAME = "c-outage"


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Return the bus's log lines of one level."""
    return [r.getMessage() for r in caplog.records if r.name == "shared.bus" and r.levelno == level]


def consumer(
    client: aioredis.Redis, seen: list[int], reconnect_for_s: float
) -> Consumer[PriceTick]:
    async def handle(msg: PriceTick, entry_id: str) -> None:
        seen.append(msg.ts)

    return Consumer(
        client, STREAM, GROUP, NAME, handle, PriceTick, block_ms=100,
        reconnect_for_s=reconnect_for_s,
    )  # fmt: skip


async def test_consumer_rides_out_a_restart_and_names_itself_in_each_warning(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "shared.bus")
    seen: list[int] = []
    async with running(consumer(redis_client, seen, 60.0)) as task:
        await publish(redis_client, STREAM, tick(1))
        await eventually(lambda: seen == [1])
        redis_server.kill()
        await eventually(lambda: len(lines(caplog, logging.WARNING)) >= 2)
        redis_server.start()
        await publish(redis_client, STREAM, tick(2))
        await eventually(lambda: seen == [1, 2])
        assert not task.done()

    warnings = lines(caplog, logging.WARNING)
    retries = [w for w in warnings if "Redis unreachable" in w]
    assert retries, warnings
    for w in retries:
        assert f"consumer {NAME} of {STREAM} (group {GROUP})" in w, w
        assert "retry" in w
        assert "giving up after 60 s" in w
    assert any("Redis reachable again" in w and NAME in w for w in warnings), warnings
    assert not lines(caplog, logging.ERROR)


async def test_consumer_gives_up_with_one_error_line_naming_itself(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "shared.bus")
    task = asyncio.create_task(consumer(redis_client, [], 1.0).run())
    await eventually(lambda: any("consuming" in m for m in lines(caplog, logging.INFO)))
    redis_server.kill()
    await eventually(task.done, 60)

    error = task.exception()
    assert isinstance(error, BusUnavailable)
    assert isinstance(error, ConnectionError)  # what code handling Redis errors catches
    [line] = lines(caplog, logging.ERROR)
    assert line.startswith(f"Bus: consumer {NAME} of {STREAM} (group {GROUP}): giving up after")
    assert "supervisor restarts the service" in line
    last = caplog.records[-1]
    assert last.levelno == logging.ERROR, "the giving-up line is the consumer's last word"


@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
async def test_publish_rides_out_a_restart(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    many: bool,
) -> None:
    caplog.set_level(logging.INFO, "shared.bus")
    await publish(redis_client, STREAM, tick(0))
    redis_server.kill()
    sending: asyncio.Task[Any] = asyncio.create_task(
        publish_many(redis_client, STREAM, [tick(1), tick(2)])
        if many
        else publish(redis_client, STREAM, tick(1))
    )
    await eventually(lambda: len(lines(caplog, logging.WARNING)) >= 1, 30)
    assert not sending.done()
    redis_server.start()
    await asyncio.wait_for(sending, 60)

    rows: Any = await redis_client.xrange(STREAM)
    assert len(rows) >= (3 if many else 2)  # at least once: a retried XADD may land twice
    warnings = lines(caplog, logging.WARNING)
    assert all(f"publish to {STREAM}" in w for w in warnings), warnings
    assert not lines(caplog, logging.ERROR)


@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
async def test_publish_gives_up_with_one_error_line(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    many: bool,
) -> None:
    caplog.set_level(logging.INFO, "shared.bus")
    redis_server.kill()
    sending = (
        publish_many(redis_client, STREAM, [tick(1)], outage_s=0.5)
        if many
        else publish(redis_client, STREAM, tick(1), outage_s=0.5)
    )
    with pytest.raises(BusUnavailable, match=f"publish to {STREAM}: Redis unreachable"):
        await sending
    [line] = lines(caplog, logging.ERROR)
    assert line.startswith(f"Bus: publish to {STREAM}: giving up after")
    assert lines(caplog, logging.WARNING), "each retry is logged"


@pytest.mark.slow
def test_a_signals_worker_gives_up_and_exits_for_its_supervisor(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """As a process: Redis gone for good, the worker logs the giving-up line and exits 1."""
    env = clean_env(
        TB_REDIS_URL=redis_server.url, TB_METRICS_PORT="0", TB_LOG_DIR=str(tmp_path / "logs")
    )
    out = tmp_path / "signals.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.signals"], env=env, cwd=ROOT, stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "consuming" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        redis_server.kill()
        code = proc.wait(OUTAGE_S + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.read_text()
    assert code == 1, log
    where = "consumer signals-"
    giving_up = [line for line in log.splitlines() if ": giving up after" in line]
    assert len(giving_up) == 1, log
    assert where in giving_up[0], giving_up
    assert f"of {keys.STREAM_CANDLES} (group {keys.GROUP_SIGNALS})" in giving_up[0]
    assert " ERROR shared.bus: " in giving_up[0]
    after = log.split(giving_up[0], 1)[1]
    assert "signals: stopped: Redis unreachable for too long" in after
    assert "Traceback" not in after  # one line, not a stack dump
