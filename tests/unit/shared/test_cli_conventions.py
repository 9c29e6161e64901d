"""The conventions every command line shares: -h, --version, plain help, one-line mistakes."""

from __future__ import annotations

import pytest

from shared.cli import app
from shared.clikit import run, tradebot_version


def test_version_and_short_help_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app, "tradebot", ["--version"]) == 0
    assert capsys.readouterr().out == f"tradebot {tradebot_version()}\n"
    assert tradebot_version() != "unknown"  # the package is installed (make install)
    assert run(app, "tradebot", ["-h"]) == 0
    assert run(app, "tradebot", ["backtest", "-h"]) == 0
    out = capsys.readouterr().out
    assert "-h, --help" in out
    assert "--synthetic SYMBOLS DAYS SEED" in out
    assert "<bool>" not in out  # flags show no type
    assert "<int,float,int>" not in out


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app, "tradebot", []) == 2
    out, err = capsys.readouterr()
    assert out.startswith("Usage: tradebot [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in out
    assert err == ""


def test_a_subcommand_group_without_its_command_prints_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(app, "tradebot", ["dlq"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("Usage: tradebot dlq [OPTIONS] COMMAND [ARGS]...")
    assert "replay" in out
