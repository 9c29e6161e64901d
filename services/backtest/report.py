"""Write a backtest's outputs: trades.csv, summary.json, equity.png and report.html."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.backtest.engine import BacktestResult, Trade

TRADE_COLUMNS = (
    "symbol",
    "side",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "quantity",
    "fees",
    "pnl",
    "exit_reason",
)
YEAR_MS = 365 * 86_400_000


def iso_utc(ms: int) -> str:
    """Format ms since epoch as ISO 8601 UTC with a Z suffix."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trades_frame(trades: list[Trade]) -> pd.DataFrame:
    """Return the trade list as the trades.csv table."""
    rows = [
        (
            t.symbol,
            "long" if t.side > 0 else "short",
            iso_utc(t.entry_time_ms),
            t.entry_price,
            iso_utc(t.exit_time_ms),
            t.exit_price,
            t.quantity,
            t.fees,
            t.pnl,
            t.exit_reason.value,
        )
        for t in trades
    ]
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))


def drawdown_pct(equity: np.ndarray) -> np.ndarray:
    """Return the drawdown from the running peak, in percent (0 or negative)."""
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (equity / peak - 1.0) * 100.0, 0.0)


def summarize(result: BacktestResult, timeframe_ms: int, elapsed_s: float) -> dict[str, Any]:
    """Return the summary.json fields.

    sharpe = mean / std of per-step equity returns * sqrt(steps per year), 0 when flat;
    profit_factor = gross profit / gross loss, null when there is no losing trade.
    """
    pnl = np.array([t.pnl for t in result.trades])
    wins = int((pnl > 0).sum())
    curve = np.concatenate([[result.start_equity], result.equity])
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.diff(curve) / curve[:-1]
    rets = rets[np.isfinite(rets)]
    std = float(rets.std()) if len(rets) > 1 else 0.0
    sharpe = float(rets.mean()) / std * math.sqrt(YEAR_MS / timeframe_ms) if std > 0 else 0.0
    loss = float(-pnl[pnl < 0].sum())
    gain = float(pnl[pnl > 0].sum())
    return {
        "trades": len(result.trades),
        "wins": wins,
        "win_rate": wins / len(pnl) if len(pnl) else 0.0,
        "total_pnl": float(pnl.sum()),
        "return_pct": (result.end_equity / result.start_equity - 1.0) * 100.0,
        "max_drawdown_pct": float(0.0 - drawdown_pct(curve).min()),  # 0.0, never -0.0
        "sharpe": sharpe,
        "profit_factor": gain / loss if loss > 0 else None,
        "start_equity": result.start_equity,
        "end_equity": result.end_equity,
        "candles": result.candles,
        "symbols": len(result.symbols),
        "elapsed_s": elapsed_s,
    }


# A 10-inch chart at 100 dpi is 1,000 pixels wide: more points than twice that cannot show.
CHART_POINTS = 2_000


def envelope(
    values: np.ndarray, buckets: int = CHART_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (index of each bucket's first point, bucket min, bucket max): ``values`` cut
    into at most ``buckets`` runs, so a chart draws every spike and dip in a few thousand
    points instead of millions."""
    n = len(values)
    if n <= buckets:
        idx = np.arange(n)
        return idx, values, values
    starts = np.linspace(0, n, buckets, endpoint=False).astype(np.int64)
    return starts, np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)


def log_scale(equity: np.ndarray) -> bool:
    """Return whether equity spans a decade or more (then a log axis keeps it readable)."""
    return bool(len(equity) and equity.min() > 0 and equity.max() >= 10 * equity.min())


def equity_png(result: BacktestResult) -> bytes:
    # pragma: no mutate block (presentation: a chart and HTML, no figure of the summary)
    """Draw the equity curve with the drawdown below it and return PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    idx, low, high = envelope(result.equity)
    times = pd.to_datetime(result.step_ms[idx], unit="ms", utc=True)
    fig, (ax_eq, ax_dd) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_eq.fill_between(times, low, high, color="tab:blue", linewidth=1.0)
    ax_eq.plot(times, high, linewidth=1.0, color="tab:blue")
    if log_scale(result.equity):
        ax_eq.set_yscale("log")
    ax_eq.set_ylabel("equity (log scale)" if log_scale(result.equity) else "equity")
    ax_eq.set_title("Equity")
    ax_eq.grid(alpha=0.3)
    _, dd_low, _ = envelope(drawdown_pct(result.equity))
    ax_dd.fill_between(times, dd_low, 0, color="tab:red", alpha=0.4, linewidth=0)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)
    # Concise date labels, or the default ones run together (matplotlib.dates is untyped).
    dates = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax_dd.xaxis.set_major_locator(dates)
    ax_dd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(dates))  # type: ignore[no-untyped-call]
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _table(frame: pd.DataFrame) -> str:
    # pragma: no mutate block (presentation: a chart and HTML, no figure of the summary)
    """Render a frame as a plain HTML table with escaped cells."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    # pragma: no mutate block (presentation: a chart and HTML, no figure of the summary)
    """Format one table cell: floats to 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def per_symbol(trades: pd.DataFrame) -> pd.DataFrame:
    """Return trades, wins, win rate and PnL per symbol."""
    if trades.empty:
        return pd.DataFrame(columns=["symbol", "trades", "wins", "win_rate", "pnl"])
    g = trades.groupby("symbol")["pnl"]
    out = pd.DataFrame(
        {"trades": g.size(), "wins": g.apply(lambda s: int((s > 0).sum())), "pnl": g.sum()}
    )
    out["win_rate"] = out["wins"] / out["trades"]
    return out.reset_index()[["symbol", "trades", "wins", "win_rate", "pnl"]]


def report_html(summary: dict[str, Any], trades: pd.DataFrame, png: bytes) -> str:
    # pragma: no mutate block (presentation: a chart and HTML, no figure of the summary)
    """Return a self-contained HTML report (the chart is embedded as a data URI)."""
    shown = for_people(summary)
    rows = pd.DataFrame({"figure": [k for k, _ in shown], "value": [v for _, v in shown]})
    inputs = summary.get("inputs") or {}
    flat = {k: v for k, v in inputs.items() if k != "settings"}
    flat |= {f"setting {k}": v for k, v in (inputs.get("settings") or {}).items()}
    given = pd.DataFrame(
        {
            "input": list(flat),
            "value": [" ".join(map(str, v)) if isinstance(v, list) else v for v in flat.values()],
        }
    )
    chart = base64.b64encode(png).decode("ascii")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tradebot backtest</title>"
        f"<style>{style}</style></head><body><h1>Backtest</h1><h2>Summary</h2>{_table(rows)}"
        + (f"<h2>Inputs</h2>{_table(given)}" if flat else "")
        + f"<h2>Equity</h2><img alt='equity curve' src='data:image/png;base64,{chart}'>"
        f"<h2>Per symbol</h2>{_table(per_symbol(trades))}"
        f"<h2>Trades</h2>{_table(trades)}</body></html>"
    )


def _money(v: float) -> str:
    return f"{v:,.2f}"


def _pct(v: float, signed: bool = False) -> str:
    return f"{v:+.2f} %" if signed else f"{v:.2f} %"


# summary.json key -> (label, formatter) for the report a person reads; the raw numbers stay
# in summary.json.
PEOPLE: dict[str, tuple[str, Any]] = {
    "return_pct": ("Return", lambda v: _pct(v, signed=True)),
    "max_drawdown_pct": ("Max drawdown", _pct),
    "total_pnl": ("Total PnL", lambda v: f"{v:+,.2f}"),
    "start_equity": ("Start equity", _money),
    "end_equity": ("End equity", _money),
    "trades": ("Trades", lambda v: f"{v:,}"),
    "wins": ("Winning trades", lambda v: f"{v:,}"),
    "win_rate": ("Win rate", lambda v: _pct(100 * v)),
    "profit_factor": ("Profit factor", lambda v: "none lost" if v is None else f"{v:.2f}"),
    "sharpe": ("Sharpe (per step, annualised)", lambda v: f"{v:.2f}"),
    "candles": ("Candles", lambda v: f"{v:,}"),
    "symbols": ("Symbols", lambda v: f"{v:,}"),
    "elapsed_s": ("Run time", lambda v: f"{v:.2f} s"),
    "peak_rss_mb": ("Peak memory", lambda v: f"{v:,.0f} MB"),
}


def for_people(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the summary's figures as (label, text): percent, money, counts."""
    return [(label, fmt(summary[key])) for key, (label, fmt) in PEOPLE.items() if key in summary]


def write_report(
    result: BacktestResult,
    out: Path,
    timeframe_ms: int,
    elapsed_s: float,
    inputs: dict[str, Any] | None = None,
    peak_rss_mb: float | None = None,
) -> dict[str, Any]:
    """Write the four outputs into out (created if needed) and return the summary.

    ``inputs`` (what the run was given: data source, symbols, span, settings, version) is
    recorded in summary.json and report.html as it is.
    """
    out.mkdir(parents=True, exist_ok=True)
    trades = trades_frame(result.trades)
    trades.to_csv(out / "trades.csv", index=False)
    summary = summarize(result, timeframe_ms, elapsed_s)
    if peak_rss_mb is not None:
        summary["peak_rss_mb"] = round(peak_rss_mb, 1)
    if inputs is not None:
        summary["inputs"] = inputs
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = equity_png(result)
    (out / "equity.png").write_bytes(png)
    (out / "report.html").write_text(report_html(summary, trades, png))
    return summary
