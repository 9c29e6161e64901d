"""What ``tradebot up`` plans: signals workers, metrics ports, speed, credentials; the lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.config import SIM_API_KEY, SIM_API_SECRET, Settings
from shared.ops.supervisor import LockHeld, exit_reason, take_lock
from shared.up import SERVICES, built, plan_processes, scan_interval

ALL_BUILT = all(built(s) for s in SERVICES)


def args_after(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


@pytest.mark.skipif(not ALL_BUILT, reason="some service is not built yet")
def test_plan_runs_every_service_with_its_own_metrics_port(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", log_dir=tmp_path / "l", metrics_port=9200)
    procs, missing = plan_processes(settings, speed=600, workers=3)
    assert missing == []
    names = [p.name for p in procs]
    assert names == [
        "redis",
        "exchange_sim",
        "market_data",
        "signals-1",
        "signals-2",
        "signals-3",
        "executor",
        "state",
    ]
    services = [p for p in procs if p.name not in ("redis", "exchange_sim")]
    ports = [int(p.env["TB_METRICS_PORT"]) for p in services]
    assert sorted(ports) == list(range(9201, 9207))
    for p in services:
        assert p.env["TB_SCAN_INTERVAL"] == "0.2"  # 10 s / 600, floored at 0.2 s
        assert (p.env["TB_API_KEY"], p.env["TB_API_SECRET"]) == (SIM_API_KEY, SIM_API_SECRET)
        assert p.env["TB_REDIS_URL"] == f"redis://127.0.0.1:{settings.embedded_redis_port}/0"
        assert p.env["TB_LOG_DIR"] == str((tmp_path / "l").resolve())
        assert p.port == ("0.0.0.0", int(p.env["TB_METRICS_PORT"]), "TB_METRICS_PORT")


def test_the_simulator_gets_speed_credentials_and_a_log_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_dir=tmp_path / "logs")
    procs, _ = plan_processes(settings, speed=600)
    [sim] = [p for p in procs if p.name == "exchange_sim"]
    assert args_after(sim.args, "--speed") == "600"
    assert args_after(sim.args, "--api-key") == SIM_API_KEY
    assert args_after(sim.args, "--api-secret") == SIM_API_SECRET
    assert args_after(sim.args, "--log-dir") == str((tmp_path / "logs").resolve())
    assert "TB_API_SECRET" not in sim.env


def test_scan_interval_follows_the_speed_down_to_a_floor() -> None:
    settings = Settings(scan_interval=10)
    assert scan_interval(settings, 1) == 10
    assert scan_interval(settings, 4) == 2.5
    assert scan_interval(settings, 600) == 0.2


def test_metrics_port_0_turns_metrics_off(tmp_path: Path) -> None:
    procs, _ = plan_processes(Settings(data_dir=tmp_path, metrics_port=0), workers=2)
    for p in procs:
        if "TB_METRICS_PORT" in p.env:
            assert p.env["TB_METRICS_PORT"] == "0"
            assert p.port is None


def test_dry_run_prints_where_the_logs_are_first_and_masks_the_secret(tmp_path: Path) -> None:
    env = {"TB_DATA_DIR": str(tmp_path / "data"), "TB_LOG_DIR": str(tmp_path / "logs")}
    result = CliRunner().invoke(app, ["up", "--dry-run", "--speed", "600"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "tradebot up: mode=paper (local exchange simulator, no real money), market speed x600"
    )
    assert lines[1].startswith(f"  logs:   {tmp_path / 'logs'}/<service>_YYYY-MM-DD.log")
    assert "`tradebot status` in another terminal" in lines[2]
    assert "services scan every 0.2s" in result.output
    assert "--api-secret **********" in result.output
    assert SIM_API_SECRET not in result.output
    assert not (tmp_path / "data" / "tradebot.lock").exists()  # a dry run takes no lock


def test_speed_needs_the_simulator() -> None:
    env = {
        "TB_EXCHANGE": "binanceusdm",
        "TB_API_KEY": "k",
        "TB_API_SECRET": "s",
        "TB_TESTNET": "true",
    }
    result = CliRunner().invoke(app, ["up", "--dry-run", "--speed", "2"], env=env)
    assert result.exit_code == 2
    assert "only the simulator's market can run faster" in result.output


def test_the_lock_admits_one_holder(tmp_path: Path) -> None:
    fd = take_lock(tmp_path)
    try:
        with pytest.raises(LockHeld, match=rf"pid {os.getpid()}\) is running on {tmp_path}"):
            take_lock(tmp_path)
    finally:
        os.close(fd)
    os.close(take_lock(tmp_path))  # free again once the holder closed it


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (3, "exited with code 3 (lease lost)"),
        (2, "exited with code 2 (invalid settings)"),
        (0, "exited with code 0"),
        (-9, "was killed by SIGKILL"),
        (None, "ended (exit code unknown)"),
    ],
)
def test_exit_reason_in_words(code: int | None, text: str) -> None:
    assert exit_reason(code) == text


@pytest.mark.parametrize(
    ("env", "first"),
    [
        ({}, "tradebot up: mode=paper (local exchange simulator, no real money)"),
        (
            {"TB_EXCHANGE": "binanceusdm", "TB_TESTNET": "true"},
            "tradebot up: mode=TESTNET (binanceusdm's demo endpoints, no real money)",
        ),
        (
            {"TB_EXCHANGE": "binanceusdm", "TB_LIVE": "true"},
            "tradebot up: mode=LIVE: REAL MONEY on binanceusdm (TB_LIVE=true)",
        ),
    ],
)
def test_the_first_line_says_what_money_is_at_stake(
    tmp_path: Path, env: dict[str, str], first: str
) -> None:
    keys = {"TB_API_KEY": "k", "TB_API_SECRET": "s"} if env else {}
    result = CliRunner().invoke(
        app,
        ["up", "--dry-run"],
        env={"TB_DATA_DIR": str(tmp_path / "d"), "TB_LOG_DIR": str(tmp_path / "l"), **env, **keys},
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == first


def test_start_commands_are_shell_quoted_and_keep_empty_arguments() -> None:
    from shared.up import shown_args

    shown = shown_args(["--save", "", "--dir", "/a b/c", "--api-secret", "s3cr3t"])
    assert shown == "--save '' --dir '/a b/c' --api-secret **********"
