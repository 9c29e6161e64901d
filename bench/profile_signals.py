"""Profile one signals worker over a backlog of closed candles (pyinstrument), in process.

The same backlog as ``bench/signals_throughput.py`` (``--symbols`` symbols, ``--closes``
closes each, every window in its ZSET on a private server), consumed by the worker's own
consumer (``services.signals.service.candle_consumer``) polled until the backlog is empty,
under pyinstrument, once the first close has been handled (the steady state of a running
worker, whose windows were decoded at earlier closes). Printed: candles per second (inside
the profiler, so lower than the throughput script's) and the call tree down to the calls
that take at least ``--min-pct`` percent of the time: where a candle's time goes.
docs/performance.md quotes it.

Run: .venv/bin/python bench/profile_signals.py [--symbols 500] [--closes 4] [--html out.html]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from pyinstrument import Profiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from signals_throughput import TF, candles_of, left, load

from services.signals.service import candle_consumer
from shared.config import Settings
from shared.redisconn import EmbeddedRedis, free_port, redis_from_url
from shared.service import ServiceContext


async def profile(symbols: int, closes: int, profiler: Profiler) -> float:
    """Consume the backlog with one in-process worker under the profiler; return candles/s."""
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), free_port(), fsync="everysec")
        server.start()
        client = redis_from_url(server.url)
        try:
            settings = Settings(
                _env_file=None,
                redis_url=server.url,
                timeframe=TF,
                top_n=symbols,
            )
            total = await load(client, candles_of(symbols, closes, settings.candle_limit), closes)
            consumer = candle_consumer(ServiceContext(settings, "signals", "profile", client))
            done = 0
            while done < symbols:  # the first close: every window decoded for the first time
                done += await consumer.poll()
            warm = done
            started = time.perf_counter()
            profiler.start()
            while done < total:
                done += await consumer.poll()
            profiler.stop()
            rate = (done - warm) / (time.perf_counter() - started)
            assert await left(client) == (0, 0), "the backlog was not consumed"
            return rate
        finally:
            await client.aclose()
            server.stop()


def main(
    symbols: Annotated[int, typer.Option(min=1, help="Symbols with a backlog.")] = 500,
    closes: Annotated[int, typer.Option(min=1, help="Closes of each symbol queued.")] = 4,
    min_pct: Annotated[float, typer.Option(help="Hide calls under this share of time.")] = 3.0,
    html: Annotated[Path | None, typer.Option(help="Also write pyinstrument's HTML here.")] = None,
) -> None:
    """Profile one signals worker over a backlog of closed candles."""
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    rate = asyncio.run(profile(symbols, closes, profiler))
    print(f"{symbols} symbols x {closes} closes, one worker in process: {rate:,.0f} candles/s")
    print("(under the profiler; the throughput script measures the worker without it)")
    options = {"filter_threshold": min_pct / 100}
    print(
        profiler.output_text(
            unicode=False, color=False, time="percent_of_total", processor_options=options
        )
    )
    if html is not None:
        html.write_text(profiler.output_html())
        print(f"-> {html}")


if __name__ == "__main__":
    typer.run(main)
