"""The shell every service runs in: logging, metrics, signals, heartbeat, lease, exit codes.

A service is an ``async def body(ctx)`` that runs until ``ctx.stop`` is set. ``run_service``
gives it a Redis client, a heartbeat key (``tradebot status`` reads it) and, for the
single-active services, the lease: the body starts only once the lease is held (a second
copy waits as a hot standby) and the process ends as soon as the lease is lost, so that
its supervisor restarts it as a standby. An unexpected exception is logged with its
traceback and ends the process with exit code 1; SIGTERM or SIGINT end it cleanly (0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys, streamstats
from shared.book import Heartbeat
from shared.bus import BusUnavailable
from shared.config import Settings
from shared.lease import Lease
from shared.log import error_text, setup_logging
from shared.metrics import HEARTBEAT_TS, SERVICE_RESTARTS, SERVICE_UP, serve_metrics
from shared.redisconn import connect

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
EXIT_LEASE_LOST = 3

Role = Literal["active", "standby", "worker"]


@dataclass
class ServiceContext:
    """What a service body gets: settings, Redis, its names, the stop event, its lease."""

    settings: Settings
    service: str
    instance: str
    redis: aioredis.Redis
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lease: Lease | None = None
    role: Role = "worker"
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    role_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_role(self, role: Role) -> None:
        """Change the role and have the heartbeat say so at once (tradebot status, tests)."""
        self.role = role
        self.role_changed.set()

    def may_act(self) -> bool:
        """Return whether this instance may act now: not stopping and (if leased) lease held."""
        if self.stop.is_set():
            return False
        return self.lease is None or self.lease.held()


Body = Callable[[ServiceContext], Coroutine[Any, Any, None]]


def instance_name(service: str) -> str:
    """Return a name unique to this process: service, host and pid."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}"


async def _heartbeat(ctx: ServiceContext) -> None:
    """Refresh this instance's heartbeat key (expiring after three missed beats)."""
    key = keys.heartbeat_key(ctx.service, ctx.instance)
    while True:
        beat = Heartbeat(
            service=ctx.service,
            instance=ctx.instance,
            pid=os.getpid(),
            role=ctx.role,
            mode=ctx.settings.mode,
            started_ms=ctx.started_ms,
            ts=int(time.time() * 1000),
        )
        try:
            await ctx.redis.set(key, beat.dump(), px=int(HEARTBEAT_S * 3000))
        except RedisError as e:
            log.warning("Heartbeat: not written: %s", error_text(e))
        else:
            HEARTBEAT_TS.labels(ctx.service).set(beat.ts / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.role_changed.wait(), HEARTBEAT_S)
        ctx.role_changed.clear()


async def _run(ctx: ServiceContext, body: Body, single_active: bool) -> int:
    """Run the body (under the lease when single-active); return the process exit code."""
    beat = asyncio.create_task(_heartbeat(ctx), name=f"heartbeat-{ctx.service}")
    stats = asyncio.create_task(streamstats.sample_forever(ctx.redis), name="stream-gauges")
    try:
        if not single_active:
            await body(ctx)
            return 0
        ctx.lease = Lease(ctx.redis, ctx.service, ctx.settings.lease_ttl_ms)
        ctx.set_role("standby")
        log.info("%s: waiting for the lease (hot standby while another is active)", ctx.service)
        async with ctx.lease.hold(ctx.stop) as lost:
            if ctx.stop.is_set():
                return 0
            ctx.set_role("active")
            log.info("%s: lease acquired, active", ctx.service)
            work = asyncio.create_task(body(ctx), name=f"{ctx.service}-body")
            watch = asyncio.create_task(lost.wait(), name=f"{ctx.service}-lease-watch")
            done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                watch.cancel()
                work.result()
                return 0
            ctx.stop.set()
            log.error("%s: lease lost; stopping so that a standby can take over", ctx.service)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return EXIT_LEASE_LOST
    finally:
        beat.cancel()
        stats.cancel()
        await asyncio.gather(beat, stats, return_exceptions=True)
        with contextlib.suppress(RedisError):
            await ctx.redis.delete(keys.heartbeat_key(ctx.service, ctx.instance))


async def _count_start(ctx: ServiceContext) -> None:
    """Count this start in Redis and serve the total: a fresh process would read 1 again, so
    a restart at the same address could not show as an increase of a local counter."""
    try:
        starts = int(await ctx.redis.incr(keys.starts_key(ctx.service)))
    except RedisError as e:
        log.warning("%s: start not counted (Redis: %s)", ctx.service, error_text(e))
        return
    SERVICE_RESTARTS.labels(ctx.service).inc(starts)


async def serve(service: str, settings: Settings, body: Body, *, single_active: bool) -> int:
    """Connect, install signal handlers and run the body; return the exit code."""
    ctx = ServiceContext(settings, service, instance_name(service), connect(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ctx.stop.set)
    await _count_start(ctx)
    SERVICE_UP.labels(service).set(1)
    try:
        return await _run(ctx, body, single_active)
    finally:
        SERVICE_UP.labels(service).set(0)
        await ctx.redis.aclose()


def service_main(service: str, settings: Settings, body: Body, *, single_active: bool) -> None:
    """Run a service process to its end: logs, metrics port, then exit with the body's code."""
    setup_logging(service, settings.log_dir, settings.log_level, settings.secrets())
    serve_metrics(settings.metrics_port)
    log.info(
        "%s: starting (pid %d, mode %s, exchange %s)",
        service,
        os.getpid(),
        settings.mode,
        settings.exchange,
    )
    try:
        code = asyncio.run(serve(service, settings, body, single_active=single_active))
    except BusUnavailable as e:  # the bus logged its retries and why it gave up
        log.error("%s: stopped: Redis unreachable for too long (%s)", service, error_text(e))
        raise SystemExit(1) from None
    except Exception:
        log.exception("%s: stopped by an unexpected error", service)
        raise SystemExit(1) from None
    log.info("%s: stopped (exit %d)", service, code)
    raise SystemExit(code)
