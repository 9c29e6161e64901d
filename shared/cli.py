"""The ``tradebot`` command line: config, up, backtest and the operator commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.clikit import new_app, run, tradebot_version
from shared.config import ConfigError, exit_bad_config, load_settings

app = new_app(
    help="tradebot: a crypto futures trading bot that stays correct under failure.",
    no_args_is_help=True,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tradebot {tradebot_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """tradebot: a crypto futures trading bot that stays correct under failure."""


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also TB_CONFIG); env TB_* wins over it."),
]


@app.command(short_help="Print every setting and where it came from (secrets masked).")
def config(config_file: ConfigOption = None) -> None:
    """Print every setting, where it came from, secrets masked; exit 2 if one is invalid."""
    try:
        settings = load_settings(config_file)
    except ConfigError as e:
        exit_bad_config(e)
    values = settings.masked()
    name_w = max(len(k) for k in values)
    text_w = min(40, max(len(v) for v in values.values()))
    for field, (name, text) in zip(type(settings).model_fields, values.items(), strict=True):
        typer.echo(f"{name.ljust(name_w)}  {text.ljust(text_w)}  ({settings.source(field)})")


@app.command(short_help="Container health check: exit 0 when healthy.")
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
    from services.backtest.download import register as register_download
    from shared.ops.commands import register as register_ops
    from shared.up import register as register_up

    register_download(app)
    register_backtest(app)
    register_up(app)
    register_ops(app)


_register_subcommands()


def main() -> None:
    """The ``tradebot`` console script."""
    sys.exit(run(app, "tradebot"))


if __name__ == "__main__":
    main()
