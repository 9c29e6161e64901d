"""The ``tradebot`` command line: config, up, backtest and the operator commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.config import ConfigError, exit_bad_config, load_settings

app = typer.Typer(
    help="tradebot: a crypto futures trading bot that stays correct under failure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also TB_CONFIG); env TB_* wins over it."),
]


@app.command()
def config(config_file: ConfigOption = None) -> None:
    """Print the effective settings, secrets masked; exit 2 if any setting is invalid."""
    try:
        settings = load_settings(config_file)
    except ConfigError as e:
        exit_bad_config(e)
    values = settings.masked()
    width = max(len(k) for k in values)
    for name, text in values.items():
        typer.echo(f"{name.ljust(width)}  {text}")


@app.command()
def health(
    exchange_sim: Annotated[
        bool, typer.Option("--exchange-sim", help="Check the simulator instead of a service.")
    ] = False,
    config_file: ConfigOption = None,
) -> None:
    """Container health check: exit 0 if the service here beats (or the simulator answers)."""
    from shared.ops.health import service_problem, sim_problem

    try:
        settings = load_settings(config_file)
    except ConfigError as e:
        exit_bad_config(e)
    problem = sim_problem(settings) if exchange_sim else service_problem(settings)
    if problem is not None:
        typer.echo(f"unhealthy: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo("healthy")


def _register_subcommands() -> None:
    from services.backtest.cli import register as register_backtest
    from shared.ops.commands import register as register_ops
    from shared.up import register as register_up

    register_backtest(app)
    register_up(app)
    register_ops(app)


_register_subcommands()


if __name__ == "__main__":
    app()
