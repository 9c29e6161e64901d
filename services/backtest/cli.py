"""``tradebot backtest``: replay the strategy over candles and write the report."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from services.backtest.download import load_limits
from services.backtest.engine import BacktestConfig, Progress, run_backtest
from services.backtest.report import iso_utc, write_report
from shared.candles import DataError, find_gaps, load_candles, parse_when
from shared.clikit import os_error_text, tradebot_version
from shared.config import env_name, settings_or_exit
from shared.history import MARKETS_FILE, store_folder
from shared.synthetic import generate_candles

EXIT_BAD_INPUT = 2
PROGRESS_MIN_CANDLES = 2_000_000
MAX_GAP_LINES = 5
MAX_PLAUSIBLE_MS = 100_000_000_000_000
# The settings a backtest's result depends on, recorded in summary.json (not connections).
STRATEGY_SETTINGS = (
    "leverage", "trade_pct", "max_positions", "top_n", "timeframe", "candle_limit",
    "min_body_pct", "long_vr", "short_vr", "vr_window", "chop_period", "chop_threshold",
    "sl_pct", "trail_activate", "trail_stop", "surge_threshold", "surge_trail_stop",
    "fee_rate", "slippage", "coin_rotate_hours", "quote",
)  # fmt: skip  # year 5138: a larger number is µs or ns, not ms


def peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB (the backtest's footprint)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KB


def prepare_out(out: Path) -> None:
    """Create the output folder before any work, or exit 2 naming why it cannot be."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot create the folder ({os_error_text(e)})")
    if not os.access(out, os.W_OK):
        fail(f"--out {out}: the folder is not writable")


def fail(message: str) -> NoReturn:
    """Print one error line to stderr and exit with code 2."""
    typer.echo(f"backtest error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def parse_time(text: str | None, option: str) -> int | None:
    """Parse --from/--to (ms since epoch or ISO 8601); exit 2 with one line if it is neither."""
    try:
        return parse_when(text, option)
    except ValueError as e:
        fail(str(e))


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """Yield a progress callback drawing a rich bar on a terminal, or None."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=True) as bar:
        task = bar.add_task("backtest", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def register(app: typer.Typer) -> None:
    """Add the backtest command to the tradebot CLI."""

    @app.command(short_help="Replay the strategy over candles and write the report.")
    def backtest(
        data: Annotated[
            Path | None,
            typer.Option(
                "--data", help="CSV/Parquet file or folder (default: the downloaded candles)."
            ),
        ] = None,
        synthetic: Annotated[
            tuple[int, float, int] | None,
            typer.Option(
                "--synthetic",
                metavar="SYMBOLS DAYS SEED",
                help="Generated market data: how many symbols, days, and the random seed.",
            ),
        ] = None,
        equity: Annotated[float, typer.Option("--equity", help="Start equity.")] = 10_000.0,
        from_: Annotated[
            str | None, typer.Option("--from", help="First candle open time (ISO/ms).")
        ] = None,
        to: Annotated[
            str | None, typer.Option("--to", help="Candles opening before this (ISO/ms).")
        ] = None,
        symbols: Annotated[
            str | None, typer.Option("--symbols", help="Comma-separated, e.g. BTC/USDT,ETH/USDT.")
        ] = None,
        config_file: Annotated[
            Path | None, typer.Option("--config", help="TOML settings file; TB_* env wins.")
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/backtest"),
        exchange: Annotated[
            str | None,
            typer.Option(
                "--exchange",
                metavar="ID",
                help="Whose downloaded candles to read when neither --data nor --synthetic is"
                " given (default TB_EXCHANGE).",
            ),
        ] = None,
    ) -> None:
        """Replay the strategy; write trades.csv, summary.json, equity.png and report.html."""
        settings = settings_or_exit(config_file)
        if data is not None and synthetic is not None:
            fail("give --data PATH or --synthetic SYMBOLS DAYS SEED, not both")
        if data is None and synthetic is None:  # the local store, as `tradebot download` fills it
            data = store_folder(
                settings.data_dir.resolve(), exchange or settings.exchange, settings.timeframe
            )
            if not data.is_dir():
                fail(
                    f"no downloaded candles in {data}: run `tradebot download` first, or give"
                    " --data PATH or --synthetic SYMBOLS DAYS SEED"
                )
        elif exchange is not None:
            fail(
                "--exchange names which downloaded candles to read: not with --data or --synthetic"
            )
        if not equity > 0:
            fail(f"--equity {equity} must be positive")
        from_ms = parse_time(from_, "--from")
        to_ms = parse_time(to, "--to")
        if from_ms is not None and to_ms is not None and from_ms >= to_ms:
            fail(f"--from {from_} must be before --to {to}")
        wanted = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
        tf = settings.timeframe_ms
        if data is not None:
            try:
                frames = load_candles(data, wanted, timeframe_ms=tf)
            except DataError as e:
                fail(str(e))
        else:
            assert synthetic is not None
            n, days, seed = synthetic
            if n < 1 or days <= 0:
                fail(f"--synthetic {n} {days} {seed}: need SYMBOLS >= 1 and DAYS > 0")
            frames = generate_candles(n, days, seed, timeframe_ms=tf)
            if wanted is not None:
                missing = [s for s in wanted if s not in frames]
                if missing:
                    fail(f"symbol(s) not in the synthetic data: {', '.join(missing)}")
                frames = {s: frames[s] for s in sorted(wanted)}
        gaps = find_gaps(frames, tf)
        for g in gaps[:MAX_GAP_LINES]:
            typer.echo(
                f"warning: {g.symbol}: {g.missing} candle(s) missing after "
                f"{iso_utc(g.after_ms)}; indicator windows restart",
                err=True,
            )
        if len(gaps) > MAX_GAP_LINES:
            typer.echo(f"warning: {len(gaps) - MAX_GAP_LINES} more gap(s)", err=True)
        prepare_out(out)
        cfg = BacktestConfig.from_settings(settings, equity, from_ms, to_ms)
        # Market rules saved beside a candle folder (tradebot download writes them): the
        # backtest then sizes as the exchange would, no lot below its minimum.
        rules = data.parent / MARKETS_FILE if data is not None and data.is_dir() else None
        if rules is not None and rules.exists():
            try:
                cfg = dataclasses.replace(cfg, limits=load_limits(rules))
            except DataError as e:
                fail(str(e))
        else:
            rules = None
        total = sum(len(f) for f in frames.values())
        started = time.perf_counter()
        show = sys.stderr.isatty() and total >= PROGRESS_MIN_CANDLES
        try:
            with progress_bar(show) as progress:
                result = run_backtest(frames, cfg, progress)
        except ValueError as e:
            fail(str(e))
        firsts = [int(f["timestamp"].iloc[0]) for f in frames.values() if len(f)]
        lasts = [int(f["timestamp"].iloc[-1]) for f in frames.values() if len(f)]
        inputs = {
            "data": str(data.resolve()) if data is not None else "synthetic",
            "synthetic": list(synthetic) if synthetic is not None else None,
            "symbols": sorted(frames),
            "first_candle": iso_utc(min(firsts)) if firsts else None,
            "last_candle": iso_utc(max(lasts)) if lasts else None,
            "from": iso_utc(from_ms) if from_ms is not None else None,
            "to": iso_utc(to_ms) if to_ms is not None else None,
            "equity": equity,
            "market_rules": str(rules) if rules is not None else None,
            "tradebot_version": tradebot_version(),
            "settings": {env_name(name): getattr(settings, name) for name in STRATEGY_SETTINGS},
        }
        elapsed = time.perf_counter() - started
        summary = write_report(result, out, tf, elapsed, inputs, peak_rss_mb())
        typer.echo(
            f"{summary['trades']} trades, return {summary['return_pct']:.2f}%, "
            f"max drawdown {summary['max_drawdown_pct']:.2f}%, "
            f"{summary['candles']} candles in {summary['elapsed_s']:.2f}s, "
            f"peak memory {summary['peak_rss_mb']:.0f} MB -> {out}"
        )
