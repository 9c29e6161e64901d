"""Benchmark: raw redis-py pipelined XADD + XREADGROUP/XACK against the same traffic via the bus.

Both sides run a producer (batches pipelined in one round trip) and a consumer group reader
(COUNT = batch, ack per batch) concurrently on their own connections to a private server,
with fixed-size messages. Throughput is messages handled and acked per second, latency is
publish-to-handler time. Each side runs ``rounds`` times, alternating; the best round counts.
Exit code 1 if the bus reaches less than ``--min-ratio`` of raw throughput.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
import typer

from shared import keys
from shared.bus import Consumer, publish_many
from shared.redisconn import EmbeddedRedis, redis_from_url
from shared.schemas import FIELD, Candle, encode

STREAM = keys.STREAM_CANDLES
GROUP = "bench"


@dataclass
class Result:
    """One round's throughput (messages per second) and latencies (seconds)."""

    rate: float
    latencies: list[float]

    def describe(self) -> str:
        """Return a one-line summary."""
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000
        return f"{self.rate:>10,.0f} msg/s   latency p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"


def sample_message(size: int) -> Candle:
    """Return a closed candle whose encoding is exactly ``size`` bytes (symbol padded)."""

    def build(pad: int) -> Candle:
        return Candle(
            symbol="BTC/USDT" + "X" * pad, timeframe="5m", open_time=1_700_000_000_000,
            open=43210.5, high=43300.1, low=43150.2, close=43280.7, volume=1234.567,
        )  # fmt: skip

    pad = size - len(encode(build(0)))
    if pad < 0:
        raise ValueError(f"messages cannot be smaller than {size - pad} bytes")
    return build(pad)


async def _reset(client: aioredis.Redis) -> None:
    await client.delete(STREAM)
    await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)


async def run_raw(url: str, msgs: list[Candle], batch: int) -> Result:
    """Move pre-encoded messages with plain pipelined XADD, XREADGROUP and XACK."""
    prod, cons = redis_from_url(url), redis_from_url(url)
    await _reset(prod)
    payloads = [encode(m) for m in msgs]
    sent: list[float] = []
    latencies: list[float] = []
    field = FIELD.encode()

    async def produce() -> None:
        for i in range(0, len(payloads), batch):
            pipe = prod.pipeline(transaction=False)
            chunk = payloads[i : i + batch]
            for p in chunk:
                pipe.xadd(STREAM, {field: p})
            sent.extend([time.perf_counter()] * len(chunk))
            await pipe.execute()
            await asyncio.sleep(0)

    async def consume() -> None:
        while len(latencies) < len(payloads):
            reply: Any = await cons.xreadgroup(GROUP, "c", {STREAM: ">"}, count=batch, block=1000)
            if not reply:
                continue
            entries = reply[0][1]
            now = time.perf_counter()
            for _ in entries:
                latencies.append(now - sent[len(latencies)])
            await cons.xack(STREAM, GROUP, *(e[0] for e in entries))

    start = time.perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - start
    await prod.aclose()
    await cons.aclose()
    return Result(len(msgs) / elapsed, latencies)


async def run_bus(url: str, msgs: list[Candle], batch: int) -> Result:
    """Move the same messages with ``publish_many`` and a bus ``Consumer``."""
    prod, cons = redis_from_url(url), redis_from_url(url)
    await _reset(prod)
    sent: list[float] = []
    latencies: list[float] = []
    stop = asyncio.Event()

    async def handle(msg: Candle, entry_id: str) -> None:
        latencies.append(time.perf_counter() - sent[len(latencies)])
        if len(latencies) == len(msgs):
            stop.set()

    consumer = Consumer(cons, STREAM, GROUP, "c", handle, Candle, count=batch, block_ms=1000)

    async def produce() -> None:
        for i in range(0, len(msgs), batch):
            chunk = msgs[i : i + batch]
            sent.extend([time.perf_counter()] * len(chunk))
            await publish_many(prod, STREAM, chunk)
            await asyncio.sleep(0)

    start = time.perf_counter()
    await asyncio.gather(produce(), consumer.run(stop))
    elapsed = time.perf_counter() - start
    await prod.aclose()
    await cons.aclose()
    return Result(len(msgs) / elapsed, latencies)


async def bench(messages: int, batch: int, size: int, rounds: int) -> tuple[Result, Result]:
    """Run both sides ``rounds`` times against a private server; return the best of each."""
    msgs = [sample_message(size)] * messages
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        raw: list[Result] = []
        bus: list[Result] = []
        for _ in range(rounds):
            raw.append(await run_raw(server.url, msgs, batch))
            bus.append(await run_bus(server.url, msgs, batch))
    return max(raw, key=lambda r: r.rate), max(bus, key=lambda r: r.rate)


def main(
    messages: Annotated[int, typer.Option(help="messages per round")] = 50_000,
    batch: Annotated[int, typer.Option(help="messages per pipeline and per read")] = 100,
    size: Annotated[int, typer.Option(help="encoded message size in bytes")] = 200,
    rounds: Annotated[int, typer.Option(help="rounds per side; the best counts")] = 3,
    min_ratio: Annotated[float, typer.Option(help="fail below this bus/raw ratio")] = 0.7,
) -> None:
    """Print raw and bus throughput and latency and their ratio."""
    raw, bus = asyncio.run(bench(messages, batch, size, rounds))
    ratio = bus.rate / raw.rate
    typer.echo(f"{messages} messages of {size} bytes, batches of {batch}, best of {rounds}")
    typer.echo(f"raw redis-py  {raw.describe()}")
    typer.echo(f"bus           {bus.describe()}")
    typer.echo(f"ratio bus/raw {ratio:.2f} (acceptance >= {min_ratio})")
    if ratio < min_ratio:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
