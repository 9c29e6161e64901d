"""``tradebot download``: fill the local candle store from an exchange's public klines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from services.backtest.report import iso_utc
from services.signals.sizing import MarketLimits
from shared.candles import DataError, parse_when
from shared.config import TIMEFRAME_MS, Settings, settings_or_exit
from shared.exchange_models import MarketInfo
from shared.history import (
    DAY_MS,
    Fetched,
    Progress,
    download_symbol,
    resolve_symbols,
    save_markets,
    store_file,
    store_folder,
)

if TYPE_CHECKING:  # ccxt is heavy: loaded only when a download runs, not for every command
    from shared.exchange import Tuning

EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one error line to stderr and exit (2: bad input, 1: the exchange failed us)."""
    typer.echo(f"download error: {message}", err=True)
    raise typer.Exit(code)


def load_limits(path: Path) -> dict[str, MarketLimits]:
    """Return the order limits saved in a markets.json, by ``BASE/QUOTE`` (the candle files'
    symbols); raise DataError naming the file if it cannot be read."""
    try:
        saved = json.loads(path.read_text())
        return {
            name: MarketLimits(
                amount_step=m.get("amount_step") or 0.0,
                min_amount=m.get("min_amount") or 0.0,
                min_notional=m.get("min_notional") or 0.0,
                max_amount=m.get("max_amount") or 0.0,
            )
            for name, m in saved.items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise DataError(path, f"unreadable market rules ({type(e).__name__}: {e})") from None


def source_settings(settings: Settings, exchange: str | None) -> Settings:
    """Return the settings to build a public client for ``exchange`` (no keys needed)."""
    if exchange is None or exchange == settings.exchange:
        return settings
    import ccxt

    if exchange != "sim" and exchange not in ccxt.exchanges:
        fail(f"--exchange {exchange!r} is neither 'sim' nor a ccxt exchange id (e.g. binanceusdm)")
    # Public klines need no keys and risk no money: the live/testnet rules do not apply.
    return settings.model_copy(
        update={"exchange": exchange, "testnet": False, "api_key": None, "api_secret": None}
    )


def span(
    days: float | None, from_ms: int | None, to_ms: int | None, now_ms: int, tf_ms: int
) -> tuple[int, int]:
    """Return [start, end) of candle open times: the last ``days`` up to the last closed
    candle, or --from/--to (--to defaults to the last closed candle)."""
    last_open_end = now_ms - now_ms % tf_ms  # the forming candle opens here: excluded
    end = last_open_end if to_ms is None else min(to_ms, last_open_end)
    start = from_ms if from_ms is not None else end - int((days or 30.0) * DAY_MS)
    if start >= end:
        fail(f"nothing to download: the span {iso_utc(start)} .. {iso_utc(end)} is empty")
    return start, end


@contextmanager
def bars(enabled: bool) -> Iterator[Callable[[str], Progress | None]]:
    """Yield a factory of per-symbol progress callbacks: rich bars on a terminal, or none."""
    if not enabled:
        yield lambda _name: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), transient=False
    ) as shown:

        def make(name: str) -> Progress:
            task = shown.add_task(name, total=None)

            def update(done: int, total: int) -> None:
                shown.update(task, completed=done, total=total)

            return update

        yield make


async def run_download(
    settings: Settings,
    names: list[str] | None,
    top: int | None,
    days: float | None,
    from_ms: int | None,
    to_ms: int | None,
    timeframe: str,
    show_bars: bool,
    tuning: Tuning | None = None,
) -> list[Fetched]:
    """Download every chosen symbol's missing candles into the store; return what was done."""
    from shared.exchange import ExchangeClient

    client = ExchangeClient.from_settings(settings, tuning)
    try:
        await client.start()
        markets = await client.markets()
        chosen: list[MarketInfo]
        if names:
            try:
                chosen = resolve_symbols(names, markets)
            except ValueError as e:
                fail(f"--symbols: {e}")
        else:
            volumes = await client.quote_volumes()
            ranked = sorted(volumes, key=lambda s: volumes[s], reverse=True)
            chosen = [markets[s] for s in ranked[: top or settings.top_n] if s in markets]
        now = await client.server_time()
        start, end = span(days, from_ms, to_ms, now, TIMEFRAME_MS[timeframe])
        folder = store_folder(settings.data_dir.resolve(), settings.exchange, timeframe)
        save_markets(folder.parent, chosen)
        done: list[Fetched] = []
        with bars(show_bars) as make:
            for m in chosen:
                done.append(
                    await download_symbol(
                        client, m, timeframe, start, end, store_file(folder, m), now, make(m.symbol)
                    )
                )
        return done
    finally:
        await client.close()


def register(app: typer.Typer) -> None:
    """Add the download command to the tradebot CLI."""

    @app.command(short_help="Download closed candles into the local store for backtests.")
    def download(
        symbols: Annotated[
            str | None,
            typer.Option("--symbols", metavar="LIST", help="e.g. BTC/USDT:USDT,ETHUSDT."),
        ] = None,
        top: Annotated[
            int | None,
            typer.Option(
                "--top",
                min=1,
                metavar="N",
                help="The N symbols of most 24 h volume (default TB_TOP_N).",
            ),
        ] = None,
        days: Annotated[
            float | None,
            typer.Option("--days", min=0.001, metavar="D", help="The last D days (default 30)."),
        ] = None,
        from_: Annotated[
            str | None, typer.Option("--from", metavar="TIME", help="First candle (ISO or ms).")
        ] = None,
        to: Annotated[
            str | None, typer.Option("--to", metavar="TIME", help="Candles opening before this.")
        ] = None,
        timeframe: Annotated[
            str | None, typer.Option("--timeframe", metavar="TF", help="Default TB_TIMEFRAME.")
        ] = None,
        exchange: Annotated[
            str | None,
            typer.Option(
                "--exchange",
                metavar="ID",
                help="A ccxt id such as binanceusdm, or sim (default TB_EXCHANGE).",
            ),
        ] = None,
        config_file: Annotated[
            Path | None, typer.Option("--config", metavar="FILE", help="TOML settings file.")
        ] = None,
    ) -> None:
        """Download closed candles (public klines, no keys needed) into
        DATA_DIR/candles/<exchange>/<timeframe>/, fetching only what is missing."""
        settings = settings_or_exit(config_file)
        if symbols is not None and top is not None:
            fail("give --symbols or --top, not both")
        if days is not None and from_ is not None:
            fail("give --days or --from, not both")
        tf = timeframe or settings.timeframe
        if tf not in TIMEFRAME_MS:
            fail(f"--timeframe {tf!r} must be one of {', '.join(TIMEFRAME_MS)}")
        try:
            from_ms, to_ms = parse_when(from_, "--from"), parse_when(to, "--to")
        except ValueError as e:
            fail(str(e))
        names = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
        if symbols is not None and not names:
            fail("--symbols is empty")
        source = source_settings(settings, exchange)
        started = time.perf_counter()
        # The client's retry warnings, as lines of this command (the last one says it all).
        logging.basicConfig(level=logging.WARNING, format="download: %(message)s")
        from shared.exchange_errors import ExchangeFailure

        try:
            done = asyncio.run(
                run_download(
                    source,
                    names,
                    top,
                    days,
                    from_ms,
                    to_ms,
                    tf,
                    sys.stderr.isatty(),
                )
            )
        except ExchangeFailure as e:
            fail(f"the exchange ({source.exchange}) failed: {e}", code=1)
        except DataError as e:
            fail(str(e), code=1)
        for f in done:
            when = (
                f"{iso_utc(f.first_ms)} .. {iso_utc(f.last_ms)}"
                if f.first_ms is not None and f.last_ms is not None
                else "none"
            )
            typer.echo(f"{f.symbol:<18} {f.total:>8,} candles ({f.new:,} new) {when} -> {f.path}")
        typer.echo(
            f"{len(done)} symbol(s), {sum(f.new for f in done):,} new candles in"
            f" {time.perf_counter() - started:.1f}s; now: tradebot backtest"
            + ("" if exchange in (None, settings.exchange) else f" --exchange {exchange}")
        )
