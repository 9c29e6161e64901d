"""``python -m services.exchange_sim``: serve the Binance USD-M futures simulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from aiohttp import web

from services.exchange_sim.app import make_app, run_clock
from services.exchange_sim.auth import DEFAULT_API_KEY, DEFAULT_API_SECRET
from services.exchange_sim.core import DEFAULT_BALANCE, DEFAULT_FEE_RATE, Simulator
from services.exchange_sim.faults import (
    GARBAGE_KINDS,
    KINDS,
    FaultConfigError,
    FaultPlan,
    checked_rates,
    parse_rates,
)
from services.exchange_sim.market import Market
from shared.candles import MIN_PLAUSIBLE_MS, DataError, load_candles
from shared.clikit import new_app, os_error_text, run
from shared.config import TIMEFRAME_MS
from shared.log import setup_logging

PROG = "python -m services.exchange_sim"
app = new_app(help=__doc__)
log = logging.getLogger("exchange_sim")
DEFAULT_SYNTHETIC_SYMBOLS = 16
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def fail(message: str) -> typer.Exit:
    """Print one error line to stderr; return the exit (code 2) for the caller to raise."""
    typer.echo(f"exchange_sim error: {message}", err=True)
    return typer.Exit(2)


def check_options(
    symbols: str, balance: float, fee_rate: float, start_ms: int | None, log_level: str
) -> None:
    """Refuse option values no simulator can run with, naming the option (exit 2)."""
    if symbols.strip().isdigit() and int(symbols) < 1:
        raise fail(f"--symbols {symbols}: give at least 1 symbol (a count, or a comma list)")
    if not balance > 0:
        raise fail(f"--balance {balance:g} must be positive")
    if not 0 <= fee_rate < 1:
        raise fail(f"--fee-rate {fee_rate:g} must be a fraction in [0, 1)")
    if start_ms is not None and abs(start_ms) < MIN_PLAUSIBLE_MS:
        raise fail(
            f"--start-ms {start_ms} is before 1973: that looks like seconds, not milliseconds"
        )
    if log_level.upper() not in LOG_LEVELS:
        raise fail(f"--log-level {log_level!r} must be one of {', '.join(LOG_LEVELS)}")


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
        raise fail(f"--symbols {symbols}: a synthetic market takes a count, e.g. --symbols 16")
    if start_ms is None:
        now = int(time.time() * 1000)
        start_ms = now - now % tf - warmup * tf
    return Market.synthetic(count or DEFAULT_SYNTHETIC_SYMBOLS, seed, tf, start_ms, warmup)


@app.command()
def main(
    host: Annotated[
        str, typer.Option(envvar="TB_SIM_HOST", help="address to listen on")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, envvar="TB_SIM_PORT", help="TCP port")
    ] = 8900,
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
        float,
        typer.Option(min=0, help="simulated seconds per real second; 0 = only POST /_sim/step"),
    ] = 1.0,
    replay: Annotated[
        Path | None, typer.Option(help="replay OHLCV CSV/Parquet file or folder (backtest format)")
    ] = None,
    start_ms: Annotated[
        int | None,
        typer.Option(help="synthetic start, ms since epoch (default: now minus the warm-up)"),
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="candles of closed history at start")] = 300,
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
    latency_ms: Annotated[
        int, typer.Option(min=0, help="latency added to every /fapi request")
    ] = 0,
    timeout_hold: Annotated[
        float,
        typer.Option(min=0, help="seconds a 'timeout' fault holds the request before hanging up"),
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
    check_options(symbols, balance, fee_rate, start_ms, log_level)
    if timeframe not in TIMEFRAME_MS:
        raise fail(f"--timeframe {timeframe!r} must be one of {', '.join(TIMEFRAME_MS)}")
    rates: dict[str, dict[str, float]] = {}
    for option, text, kinds, what in (
        ("--faults", faults, KINDS, "fault"),
        ("--garbage", garbage, GARBAGE_KINDS, "garbage"),
    ):
        try:
            rates[option] = checked_rates(parse_rates(text, kinds), kinds, what)
        except FaultConfigError as e:
            raise fail(f"{option} {text}: {e}") from None
    plan = FaultPlan(
        rates["--faults"], latency_ms, timeout_hold, seed=fault_seed, garbage=rates["--garbage"]
    )
    try:
        market = build_market(replay, symbols, seed, timeframe, start_ms, warmup)
    except DataError as e:  # names the file (and row) already
        raise fail(str(e)) from None
    except ValueError as e:  # the market's own rules (no candles, misaligned, a name twice)
        raise fail(f"--replay {replay}: {e}") from None
    try:
        sim = Simulator.create(
            market,
            balance,
            fee_rate,
            state_file,
            api_key=api_key,
            api_secret=api_secret,
            faults=plan,
        )
    except OSError as e:
        raise fail(f"--state-file {state_file}: {os_error_text(e)}") from None
    except ValueError as e:
        raise fail(f"--state-file {state_file}: {e}") from None
    setup_logging("exchange_sim", log_dir, log_level.upper())
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
    try:
        asyncio.run(serve(sim, host, port, speed))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise fail(f"--port {port}: {host}:{port} is taken (another simulator?)") from None
        raise fail(f"--host {host} --port {port}: cannot listen ({os_error_text(e)})") from None


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
    sys.exit(run(app, PROG))
