"""``tradebot backtest``: placeholder until the backtester lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the backtest command to the tradebot CLI."""

    @app.command()
    def backtest() -> None:
        """Run the strategy over history (not built yet)."""
        typer.echo("backtest is not built yet", err=True)
        raise typer.Exit(1)
