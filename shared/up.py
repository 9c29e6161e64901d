"""``tradebot up``: placeholder until the embedded Redis and simulator land."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the up command to the tradebot CLI."""

    @app.command()
    def up() -> None:
        """Start the bot locally (paper mode)."""
        typer.echo("tradebot up: services are not built yet", err=True)
        raise typer.Exit(1)
