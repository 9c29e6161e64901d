"""``python -m services.exchange_sim``: serve the Binance USD-M futures simulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from aiohttp import web

from services.exchange_sim.app import make_app, run_clock
from services.exchange_sim.auth import DEFAULT_API_KEY, DEFAULT_API_SECRET
from services.exchange_sim.core import DEFAULT_BALANCE, DEFAULT_FEE_RATE, Simulator
from services.exchange_sim.faults import GARBAGE_KINDS, FaultConfigError, FaultPlan, parse_rates
from services.exchange_sim.market import Market
from shared.candles import load_candles
from shared.config import TIMEFRAME_MS
from shared.log import setup_logging

app = typer.Typer(add_completion=False, help=__doc__)
log = logging.getLogger("exchange_sim")
DEFAULT_SYNTHETIC_SYMBOLS = 16


def build_market(
    replay: Path | None,
    symbols: str,
    seed: int,
    timeframe: str,
    start_ms: int | None,
    warmup: int,
) -> Market:
    """Return the replaying market, or the synthetic one starting ``warmup`` candles back."""
    tf = TIMEFRAME_MS[timeframe]
    count = int(symbols) if symbols.isdigit() else None
    if replay is not None:
        names = None if count is not None or not symbols else symbols.split(",")
        frames = load_candles(replay, [n.strip() for n in names] if names else None)
        if count is not None:
            frames = dict(list(frames.items())[:count])
        return Market.from_frames(frames, None, warmup)
    if symbols and count is None:
        raise typer.BadParameter("a synthetic market takes a count, e.g. --symbols 16")
    if start_ms is None:
        now = int(time.time() * 1000)
        start_ms = now - now % tf - warmup * tf
    return Market.synthetic(count or DEFAULT_SYNTHETIC_SYMBOLS, seed, tf, start_ms, warmup)


@app.command()
def main(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8900,
    api_key: Annotated[
        str, typer.Option(help="the one account's API key (X-MBX-APIKEY)")
    ] = DEFAULT_API_KEY,
    api_secret: Annotated[
        str, typer.Option(help="the account's HMAC-SHA256 secret", show_default=True)
    ] = DEFAULT_API_SECRET,
    balance: Annotated[float, typer.Option(help="starting USDT wallet balance")] = DEFAULT_BALANCE,
    fee_rate: Annotated[float, typer.Option(help="taker fee per fill, fraction of notional")] = (
        DEFAULT_FEE_RATE
    ),
    seed: Annotated[int, typer.Option(help="seed of the synthetic market")] = 42,
    symbols: Annotated[
        str,
        typer.Option(
            help="synthetic: how many perpetuals (default 16); replay: a count or a comma "
            "list like BTC/USDT,ETH/USDT (default all)"
        ),
    ] = "",
    timeframe: Annotated[str, typer.Option(help="synthetic candle timeframe")] = "5m",
    speed: Annotated[
        float, typer.Option(help="simulated seconds per real second; 0 = only POST /_sim/step")
    ] = 1.0,
    replay: Annotated[
        Path | None, typer.Option(help="replay OHLCV CSV/Parquet file or folder (backtest format)")
    ] = None,
    start_ms: Annotated[
        int | None,
        typer.Option(help="synthetic start, ms since epoch (default: now minus the warm-up)"),
    ] = None,
    warmup: Annotated[int, typer.Option(help="candles of closed history at start")] = 300,
    faults: Annotated[
        str,
        typer.Option(
            help="fault rates 'kind=rate,...' with kinds http5xx, http429, http418, timeout, "
            "reset, drop (execute, then drop the answer); 'all=R' splits R evenly "
            "(default: no faults)"
        ),
    ] = "",
    garbage: Annotated[
        str,
        typer.Option(
            help="garbage market data rates 'kind=rate,...' with kinds "
            + ", ".join(GARBAGE_KINDS)
            + "; 'all=R' splits R evenly (default: none)"
        ),
    ] = "",
    fault_seed: Annotated[int, typer.Option(help="seed of the fault draws")] = 0,
    latency_ms: Annotated[int, typer.Option(help="latency added to every /fapi request")] = 0,
    timeout_hold: Annotated[
        float, typer.Option(help="seconds a 'timeout' fault holds the request before hanging up")
    ] = 30.0,
    state_file: Annotated[
        Path | None,
        typer.Option(
            help="JSON file the account is saved to and resumed from (default: none, nothing saved)"
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
    log_dir: Annotated[
        Path | None,
        typer.Option(help="also log to a daily file exchange_sim_YYYY-MM-DD.log here"),
    ] = None,
) -> None:
    """Serve the simulated Binance USD-M futures REST API for one account."""
    setup_logging("exchange_sim", log_dir, log_level)
    if timeframe not in TIMEFRAME_MS:
        raise typer.BadParameter(f"timeframe must be one of {sorted(TIMEFRAME_MS)}")
    try:
        plan = FaultPlan(
            parse_rates(faults),
            latency_ms,
            timeout_hold,
            seed=fault_seed,
            garbage=parse_rates(garbage, GARBAGE_KINDS),
        )
    except FaultConfigError as e:
        raise typer.BadParameter(str(e)) from None
    market = build_market(replay, symbols, seed, timeframe, start_ms, warmup)
    sim = Simulator.create(
        market,
        balance,
        fee_rate,
        state_file,
        api_key=api_key,
        api_secret=api_secret,
        faults=plan,
    )
    if replay is None and start_ms is None:
        sim.advance_to(int(time.time() * 1000))  # the warm-up ends on a candle: catch up
    shown = api_secret if api_secret == DEFAULT_API_SECRET else "(custom, not shown)"
    shown_key = api_key if api_key == DEFAULT_API_KEY else "(custom, not shown)"
    log.info(
        "Exchange simulator on http://%s:%d api-key=%s api-secret=%s symbols=%d %s speed=%g "
        "faults=%s garbage=%s state=%s",
        host,
        port,
        shown_key,
        shown,
        len(sim.specs),
        f"replay={replay}" if replay else f"synthetic seed={seed}",
        speed,
        plan.rates or "none",
        plan.garbage or "none",
        state_file or "none",
    )
    asyncio.run(serve(sim, host, port, speed))


async def serve(sim: Simulator, host: str, port: int, speed: float) -> None:
    """Run the HTTP server (and the market clock when speed > 0) until interrupted."""
    application = make_app(sim)

    async def clock(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_clock(sim, speed), name="market-clock")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    if speed > 0:
        application.cleanup_ctx.append(clock)
    access_log = logging.getLogger("aiohttp.access") if log.isEnabledFor(logging.DEBUG) else None
    runner = web.AppRunner(application, shutdown_timeout=1.0, access_log=access_log)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        sim.save()
        log.info("Exchange simulator stopped; account saved to %s", sim.state_file or "nowhere")


if __name__ == "__main__":
    app()
