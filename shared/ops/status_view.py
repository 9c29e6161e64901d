"""Render a ``tradebot status`` report as rich tables for people (``--json`` skips this)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared import keys


def when(ms: int | None) -> str:
    """Return an exchange or wall time in ms as UTC ``YYYY-MM-DD HH:MM:SS``, or '-'."""
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def short_when(ms: int | None) -> str:
    """Return a time in ms as UTC ``MM-DD HH:MM`` (table cells), or '-'."""
    return "-" if ms is None else time.strftime("%m-%d %H:%M", time.gmtime(ms / 1000))


def num(value: float | None, digits: int = 6) -> str:
    """Return a number compactly (up to ``digits`` significant digits), or '-'."""
    return "-" if value is None else f"{value:.{digits}g}"


def money(value: float | None) -> str:
    """Return an amount of quote currency with 2 decimals and a sign for PnL, or '-'."""
    return "-" if value is None else f"{value:+,.2f}"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for c in columns:
        table.add_column(c)
    return table


def services_table(report: dict[str, Any]) -> Table:
    """Return the live instances, their roles and the age of their last heartbeat."""
    table = _table("Services", "service", "instance", "role", "mode", "last beat")
    for s in report["services"]:
        table.add_row(s["service"], s["instance"], s["role"], s["mode"], f"{s['age_s']}s ago")
    return table


def positions_table(report: dict[str, Any]) -> Table:
    """Return the open positions valued at the last price."""
    table = _table(
        "Open positions", "symbol", "side", "size", "entry", "stop", "last", "unrealised", "exit"
    )
    for p in report["positions"]:
        table.add_row(
            p["symbol"],
            p["side"],
            num(p["quantity"]),
            num(p["entry_price"]),
            num(p["stop_price"]) + ("" if p["stop_placed"] else " (not placed)"),
            num(p["last_price"]),
            money(p["unrealized_pnl"]),
            p["exit_requested"] or "",
        )
    return table


def trades_table(report: dict[str, Any]) -> Table:
    """Return the most recently closed trades, newest first."""
    table = _table(
        "Recent trades",
        "symbol",
        "side",
        "qty",
        "entry",
        "exit",
        "pnl",
        "reason",
        "opened (UTC)",
        "closed (UTC)",
    )
    for t in report["trades"]:
        table.add_row(
            t["symbol"],
            t["side"],
            num(t["quantity"]),
            num(t["entry_price"]),
            num(t["exit_price"]),
            money(t["pnl"]),
            t["reason"],
            short_when(t["entry_time"]),
            short_when(t["exit_time"]),
        )
    return table


def streams_table(report: dict[str, Any]) -> Table:
    """Return each stream's length and each consumer group's lag and pending count."""
    table = _table("Streams", "stream", "length", "group", "consumers", "lag", "pending")
    for s in report["streams"]:
        if not s["groups"]:
            table.add_row(s["stream"], str(s["length"]), "-", "", "", "")
        for i, g in enumerate(s["groups"]):
            lag = "?" if g["lag"] is None else str(g["lag"])
            first = (s["stream"], str(s["length"])) if i == 0 else ("", "")
            table.add_row(*first, g["group"], str(g["consumers"]), lag, str(g["pending"]))
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Return the one-line facts: mode, halt, leases, universe, account, clock, DLQ."""
    lines = [f"mode: {report['mode']}"]
    halt = report["halt"]
    if halt is None:
        lines.append("trading: running (new entries allowed)")
    else:
        lines.append(
            f"trading: [bold red]HALTED[/] since {when(halt.get('ts'))}"
            f" (reason: {escape(str(halt.get('reason')))}); `tradebot resume` to allow new entries"
        )
    if not report["services"]:
        lines.append("services: none running (start them with `tradebot up`)")
    if report["without_active"]:
        lines.append(f"[yellow]no active instance:[/] {', '.join(report['without_active'])}")
    leases = [
        f"{x['service']} " + (f"held ({x['ttl_ms'] / 1000:.1f}s left)" if x["held"] else "free")
        for x in report["leases"]
    ]
    lines.append(f"leases ({keys.lease_key('<service>')}): " + ", ".join(leases))
    uni = report["universe"]
    lines.append(
        "universe: none chosen yet"
        if uni is None
        else f"universe ({len(uni['symbols'])}, rotated {when(uni['rotated_ms'])}): "
        + ", ".join(uni["symbols"])
    )
    acc = report["account"]
    lines.append(
        "account: not read yet"
        if acc is None
        else f"account: equity {acc['equity']:,.2f}, wallet {acc['wallet']:,.2f},"
        f" unrealised {money(acc['unrealized_pnl'])} (at {when(acc['ts'])})"
    )
    lines.append(f"market data clock: {when(report['md_clock_ms'])}")
    lines.append(f"dead letters: {report['dlq']['size']} (`tradebot dlq list`)")
    return lines


def render(report: dict[str, Any], console: Console) -> None:
    """Print the whole report: summary lines, then the tables that have rows."""
    for line in summary_lines(report):
        console.print(line, highlight=False)
    if report["services"]:
        console.print(services_table(report))
    if report["positions"]:
        console.print(positions_table(report))
    else:
        console.print("open positions: none")
    if report["trades"]:
        console.print(trades_table(report))
    console.print(streams_table(report))
