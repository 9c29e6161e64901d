"""Benchmark: one market order through ExchangeClient against bare ccxt, on the simulator.

The simulator runs as its own process (as in production, where the exchange is elsewhere),
so the two cores are split between the exchange and the client. Three ways to place the
same order (BTC/USDT:USDT, 0.001, a buy then a reduce-only sell, so the account stays flat),
measured in alternating blocks in the same run:

- ``ccxt send``: ``create_order`` alone, the floor;
- ``ccxt lookup+send``: ``fetch_order`` by client id (answered "not found"), then
  ``create_order``: the same two requests the client makes;
- ``ExchangeClient``: ``place_order``: the lookup, the send, retries armed, metrics, the
  result parsed into our types.

The last ratio, client over lookup+send, is the client's own cost per order.

Run: .venv/bin/python bench/exchange_client.py [--orders N]
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import SIM_API_KEY, SIM_API_SECRET, Settings
from shared.exchange import ExchangeClient, Tuning, create_ccxt
from shared.exchange_models import make_client_order_id
from shared.redisconn import free_port

SYMBOL = "BTC/USDT:USDT"
QTY = 0.001
BLOCK = 20  # orders per block; the three ways alternate block by block


@dataclass(frozen=True)
class Req:
    """An order request as ExchangeClient.place_order takes it."""

    client_order_id: str
    symbol: str
    side: str
    quantity: float
    type: str = "market"
    stop_price: float | None = None
    reduce_only: bool = False


def summary(name: str, seconds: list[float]) -> str:
    s = sorted(seconds)
    p50 = statistics.median(s) * 1000
    p99 = s[max(0, int(len(s) * 0.99) - 1)] * 1000
    return f"{name:<20} {p50:7.2f} ms p50  {p99:7.2f} ms p99  ({len(s)} orders)"


async def wait_until_up(settings: Settings, deadline_s: float = 30.0) -> None:
    ex = create_ccxt(settings, Tuning(enable_rate_limit=False))
    try:
        end = time.monotonic() + deadline_s
        while True:
            try:
                await ex.fetch_time()
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await ex.close()


async def run(orders: int, port: int) -> dict[str, list[float]]:
    settings = Settings(
        exchange="sim", sim_port=port, api_key=SIM_API_KEY, api_secret=SIM_API_SECRET
    )
    await wait_until_up(settings)
    tuning = Tuning(enable_rate_limit=False)
    bare = create_ccxt(settings, tuning)
    client = ExchangeClient.from_settings(settings, tuning)
    await client.start()
    await bare.load_markets()
    n = 0

    def next_id() -> tuple[str, str, bool]:
        nonlocal n
        n += 1
        side, reduce = ("buy", False) if n % 2 else ("sell", True)
        return make_client_order_id("bench", str(time.time_ns()), str(n)), side, reduce

    async def ccxt_send() -> None:
        cid, side, reduce = next_id()
        params: dict[str, Any] = {"clientOrderId": cid, **({"reduceOnly": True} if reduce else {})}
        await bare.create_order(SYMBOL, "market", side, QTY, None, params)

    async def ccxt_lookup_send() -> None:
        cid, side, reduce = next_id()
        with contextlib.suppress(Exception):  # "order does not exist": the normal answer
            await bare.fetch_order(None, SYMBOL, {"origClientOrderId": cid})
        params: dict[str, Any] = {"clientOrderId": cid, **({"reduceOnly": True} if reduce else {})}
        await bare.create_order(SYMBOL, "market", side, QTY, None, params)

    async def through_client() -> None:
        cid, side, reduce = next_id()
        await client.place_order(Req(cid, SYMBOL, side, QTY, reduce_only=reduce))

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "ccxt send": ccxt_send,
        "ccxt lookup+send": ccxt_lookup_send,
        "ExchangeClient": through_client,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for way in ways.values():  # warm up: connections, caches
            for _ in range(4):
                await way()
        while min(len(t) for t in times.values()) < orders:
            for name, way in ways.items():
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    await way()
                    times[name].append(time.perf_counter() - start)
    finally:
        await client.close()
        await bare.close()
    return times


def main(
    orders: Annotated[int, typer.Option(min=BLOCK, help="Orders per way.")] = 200,
) -> None:
    """Time an order through ExchangeClient against bare ccxt on the simulator."""
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "services.exchange_sim", "--port", str(port), "--speed", "0",
         "--log-level", "WARNING"],
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        times = asyncio.run(run(orders, port))
    finally:
        sim.terminate()
        sim.wait(10)
    med = {name: statistics.median(t) for name, t in times.items()}
    print("One market order on the simulator (its own process), alternating blocks:")
    for name, t in times.items():
        print("  " + summary(name, t))
    to_send = med["ExchangeClient"] / med["ccxt send"]
    print(
        f"  ratio ExchangeClient / ccxt send         {to_send:5.2f}x"
        "  (the client looks the id up before sending: two requests)"
    )
    print(
        f"  ratio ExchangeClient / ccxt lookup+send  "
        f"{med['ExchangeClient'] / med['ccxt lookup+send']:5.2f}x  (the client's own cost)"
    )


if __name__ == "__main__":
    typer.run(main)
