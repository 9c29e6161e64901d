"""``tradebot up``: run the whole bot locally under one supervisor (circus), paper mode by default.

Starts the embedded Valkey server (AOF in DATA_DIR) unless TB_REDIS_URL names a running
server, the exchange simulator when TB_EXCHANGE=sim, and every service that is built. Each
process is restarted if it dies; Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.config import ConfigError, Settings, exit_bad_config, load_settings
from shared.redisconn import EmbeddedRedis

SERVICES = ("market_data", "signals", "executor", "state")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Process:
    """One supervised process: a name, a command line and extra environment."""

    name: str
    cmd: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: tuple[str, int, str] | None = None  # (host, port, setting) it listens on


def port_taken(host: str, port: int) -> bool:
    """Return whether something already listens on host:port (bind as the servers do)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(procs: list[Process]) -> list[str]:
    """Return a line for each process whose port is already in use (it could not start)."""
    return [
        f"port {p.port[1]} for {p.name} is already in use (set {p.port[2]} to move it)"
        for p in procs
        if p.port is not None and port_taken(p.port[0], p.port[1])
    ]


def plan_processes(settings: Settings) -> tuple[list[Process], list[str]]:
    """Decide what to run for these settings; return the processes and the names not built yet."""
    data_dir = settings.data_dir.resolve()
    env: dict[str, str] = {}
    procs: list[Process] = []
    if settings.redis_url is None:
        server = EmbeddedRedis(data_dir / "redis", settings.embedded_redis_port)
        command = server.command()
        listen = ("127.0.0.1", server.port, "TB_EMBEDDED_REDIS_PORT")
        procs.append(Process("redis", command[0], command[1:], port=listen))
        env["TB_REDIS_URL"] = server.url
    if settings.exchange == "sim":
        procs.append(
            Process(
                "exchange_sim",
                sys.executable,
                [
                    "-m", "services.exchange_sim",
                    "--host", settings.sim_host,
                    "--port", str(settings.sim_port),
                    "--state-file", str(data_dir / "exchange_sim.json"),
                    "--fee-rate", str(settings.fee_rate),
                    "--timeframe", settings.timeframe,
                ],
                port=(settings.sim_host, settings.sim_port, "TB_SIM_PORT"),
            )
        )  # fmt: skip
    missing: list[str] = []
    for offset, name in enumerate(SERVICES, start=1):
        if (PROJECT_ROOT / "services" / name / "__main__.py").exists():
            port = settings.metrics_port + offset if settings.metrics_port else 0
            procs.append(
                Process(
                    name,
                    sys.executable,
                    ["-m", f"services.{name}"],
                    {"TB_METRICS_PORT": str(port)},
                    port=("0.0.0.0", port, "TB_METRICS_PORT") if port else None,
                )
            )
        else:
            missing.append(name)
    return [Process(p.name, p.cmd, p.args, env | p.env, p.port) for p in procs], missing


def _watcher(proc: Process) -> dict[str, Any]:
    return {
        "name": proc.name,
        "cmd": proc.cmd,
        "args": proc.args,
        "working_dir": str(Path.cwd()),
        "copy_env": True,
        "env": proc.env,
        "stdout_stream": {"class": "StdoutStream"},
        "stderr_stream": {"class": "StdoutStream"},
        "respawn": True,
        "graceful_timeout": 10,
    }


def run_supervised(procs: list[Process], control_dir: Path) -> None:
    """Run the processes under circus until interrupted, restarting any that die."""
    from circus import get_arbiter

    control_dir.mkdir(parents=True, exist_ok=True)
    arbiter = get_arbiter(
        [_watcher(p) for p in procs],
        controller=f"ipc://{control_dir / 'circus.ctl'}",
        pubsub_endpoint=f"ipc://{control_dir / 'circus.pub'}",
        check_delay=1.0,
        loglevel="WARNING",
        # A process that dies 3 times within 10 s is held back 5 s before the next try.
        plugins=[
            {
                "use": "circus.plugins.flapping.Flapping",
                "attempts": 3,
                "window": 10,
                "retry_in": 5,
                "max_retry": -1,
            }
        ],
    )
    try:
        arbiter.start()
    finally:
        arbiter.stop()


def register(app: typer.Typer) -> None:
    """Add the up command to the tradebot CLI."""

    @app.command()
    def up(
        config_file: Annotated[
            Path | None, typer.Option("--config", help="TOML settings file (also TB_CONFIG).")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print what would run, then exit.")
        ] = False,
    ) -> None:
        """Start the bot locally: embedded Redis, exchange simulator and the built services."""
        try:
            settings = load_settings(config_file)
        except ConfigError as e:
            exit_bad_config(e)
        procs, missing = plan_processes(settings)
        mode = "paper (local exchange simulator)" if settings.exchange == "sim" else "LIVE"
        typer.echo(
            f"tradebot up: mode={mode}, logs in {settings.log_dir}/, data in {settings.data_dir}/"
        )
        for p in procs:
            typer.echo(f"  start {p.name:<13} {p.cmd} {' '.join(p.args)}")
        if missing:
            typer.echo(f"  not built yet, not started: {', '.join(missing)}")
        if settings.exchange == "sim":
            typer.echo(f"  simulator API: http://{settings.sim_host}:{settings.sim_port}")
        if dry_run:
            return
        # A server that cannot bind exits at once and circus would restart it forever,
        # silently, while the services talk to whatever holds the port: refuse instead.
        taken = taken_ports(procs)
        if taken:
            for line in taken:
                typer.echo(f"tradebot up: {line}", err=True)
            typer.echo(
                "tradebot up: nothing started. Is another tradebot up running, or are the"
                " children of one that was killed (SIGKILL) still there?",
                err=True,
            )
            raise typer.Exit(1)
        (settings.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        typer.echo("Press Ctrl-C to stop.")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        run_supervised(procs, settings.data_dir.resolve() / "run")
