"""How every tradebot command line behaves: ``-h``, plain help, and one line per mistake.

Each command line (``tradebot`` and the exchange simulator's) is a Typer app made by
:func:`new_app` and started by :func:`run`. A usage mistake (an unknown option, a value of the
wrong type, one outside its range) is one line on stderr naming what was wrong and where to
read the help, with exit code 2; the commands' own checks print one line the same way.
"""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import typer

EXIT_USAGE = 2
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


def tradebot_version() -> str:
    """Return the installed tradebot version ("unknown" when run from an uninstalled tree)."""
    try:
        return package_version("tradebot")
    except PackageNotFoundError:
        return "unknown"


def service_args(service: str, argv: list[str] | None = None) -> None:
    """Check a service's command line: it takes no options (settings are TB_* variables).

    ``-h`` prints what the service is and how it is configured (exit 0); anything else is
    one line and exit 2, so ``python -m services.executor --bogus`` never starts a service.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return
    prog = f"python -m services.{service}"
    if args[0] in CONTEXT_SETTINGS["help_option_names"]:
        about = (
            f"Run the {service} service until SIGTERM. It takes no options: every setting is a"
            " TB_* environment variable or a key of the TOML file named by TB_CONFIG"
            " (`tradebot config` lists them). `tradebot up` starts it for you."
        )
        typer.echo(
            f"Usage: {prog}\n\n"
            + textwrap.fill(about, 78, initial_indent="  ", subsequent_indent="  ")
        )
        raise SystemExit(0)
    typer.echo(f"{prog}: takes no arguments, got {' '.join(args)!r} (see '{prog} -h')", err=True)
    raise SystemExit(EXIT_USAGE)


def os_error_text(err: OSError) -> str:
    """Return an OS error as people read it ("Permission denied"), without errno or repr."""
    return err.strerror or str(err)


def new_app(**kwargs: Any) -> typer.Typer:
    """Return a Typer app with the project's conventions: -h, plain help, no completion."""
    return typer.Typer(
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings=CONTEXT_SETTINGS,
        **kwargs,
    )


def error_line(err: typer.TyperException, prog: str) -> str:
    """Return the one line printed for a command-line mistake: command, what, where help is."""
    ctx = getattr(err, "ctx", None)  # usage errors carry the command they happened in
    where = ctx.command_path if ctx is not None else prog
    text = " ".join(err.format_message().split())
    if getattr(err, "exit_code", 1) == EXIT_USAGE:
        return f"{where}: {text} (see '{where} -h')"
    return f"{where}: {text}"


def run(app: typer.Typer, prog: str, argv: list[str] | None = None) -> int:
    """Run a command line and return its exit code; a usage mistake is one line and code 2."""
    try:
        code = app(args=argv, prog_name=prog, standalone_mode=False)
    except typer.TyperException as e:  # Typer's (vendored) click errors all derive from it
        if type(e).__name__ == "NoArgsIsHelpError":  # no command given: the help, not an error
            typer.echo(e.format_message())
            return EXIT_USAGE
        typer.echo(error_line(e, prog), err=True)
        return int(getattr(e, "exit_code", 1))
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except SystemExit as e:  # a command's own exit (exit_bad_config, sys.exit)
        if isinstance(e.code, str):
            typer.echo(e.code, err=True)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code if isinstance(code, int) else 0
