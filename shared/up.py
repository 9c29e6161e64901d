"""``tradebot up``: run the whole bot locally under one supervisor (circus), paper mode by default.

Starts the embedded Valkey server (AOF in DATA_DIR) unless TB_REDIS_URL names a running
server, the exchange simulator when TB_EXCHANGE=sim, and every service that is built (signals
as ``--workers`` processes). Children inherit the environment, so every TB_ setting holds for
them; each writes its own daily log in LOG_DIR. A process that dies is restarted and the
restart is logged; Ctrl-C, SIGTERM or closing the terminal stops them all (shared.ops.supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from shared.config import (
    SIM_API_KEY,
    SIM_API_SECRET,
    ConfigError,
    Settings,
    exit_bad_config,
    load_settings,
    mask_url,
)
from shared.log import error_text, setup_logging
from shared.ops.supervisor import FLAPPING, LockHeld, Process, run_supervised, take_lock
from shared.redisconn import EmbeddedRedis

__all__ = ["Process", "plan_processes", "register", "taken_ports"]

SERVICES = ("market_data", "signals", "executor", "state")
# Metrics port = METRICS_PORT + offset; signals worker i (1..N) gets METRICS_PORT + 3 + i.
METRICS_OFFSET = {"market_data": 1, "executor": 2, "state": 3}
MIN_SCAN_INTERVAL_S = 0.2
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET_ARGS = ("--api-secret",)
INFRA = ("redis", "exchange_sim")
# Days of closed candles the simulator serves from its start: `tradebot download --days 30`
# against it gets them all.
SIM_HISTORY_DAYS = 35  # what the services need: stopped after them

log = logging.getLogger("tradebot up")


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


def external_redis_problem(settings: Settings) -> str | None:
    """Return why the Redis named by TB_REDIS_URL (or the Sentinels) cannot be used, or None
    (also None when ``up`` starts the embedded server itself)."""
    if settings.redis_url is None and not settings.redis_sentinels:
        return None
    from redis.exceptions import RedisError

    from shared.ops.connect import client_for, sentinel_line

    async def ping() -> None:
        client = client_for(settings)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError) as e:
        if settings.redis_sentinels:
            return sentinel_line(settings, e)
        where = mask_url(settings.redis_url.get_secret_value()) if settings.redis_url else ""
        return f"TB_REDIS_URL: no answer from Redis at {where} ({error_text(e)})"
    return None


def scan_interval(settings: Settings, speed: float) -> float:
    """Return the services' scan interval for a market sped up ``speed`` times (>= 0.2 s)."""
    return max(round(settings.scan_interval / speed, 3), MIN_SCAN_INTERVAL_S)


def sim_credentials(settings: Settings) -> tuple[str, str]:
    """Return the simulator account's key and secret: the user's if both set, else the fixed."""
    if settings.api_key is not None and settings.api_secret is not None:
        return settings.api_key.get_secret_value(), settings.api_secret.get_secret_value()
    return SIM_API_KEY, SIM_API_SECRET


def built(name: str) -> bool:
    """Return whether a service package has its ``__main__.py`` (so it can run)."""
    return (PROJECT_ROOT / "services" / name / "__main__.py").exists()


def _service(name: str, module: str, settings: Settings, offset: int) -> Process:
    port = settings.metrics_port + offset if settings.metrics_port else 0
    return Process(
        name,
        sys.executable,
        ["-m", f"services.{module}"],
        {"TB_METRICS_PORT": str(port)},
        port=("0.0.0.0", port, "TB_METRICS_PORT") if port else None,
    )


def plan_processes(
    settings: Settings,
    *,
    speed: float = 1.0,
    workers: int = 2,
    config_file: Path | None = None,
) -> tuple[list[Process], list[str]]:
    """Decide what to run for these settings; return the processes and the names not built yet."""
    data_dir = settings.data_dir.resolve()
    log_dir = settings.log_dir.resolve()
    env = {"TB_DATA_DIR": str(data_dir), "TB_LOG_DIR": str(log_dir)}
    if config_file is not None:
        env["TB_CONFIG"] = str(config_file.resolve())
    procs: list[Process] = []
    if settings.redis_url is None and not settings.redis_sentinels:
        server = EmbeddedRedis(data_dir / "redis", settings.embedded_redis_port)
        command = server.command()
        listen = ("127.0.0.1", server.port, "TB_EMBEDDED_REDIS_PORT")
        procs.append(Process("redis", command[0], command[1:], port=listen))
        env["TB_REDIS_URL"] = server.url
    service_env = {"TB_SCAN_INTERVAL": str(scan_interval(settings, speed))}
    if settings.exchange == "sim":
        key, secret = sim_credentials(settings)
        service_env |= {"TB_API_KEY": key, "TB_API_SECRET": secret}
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
                    "--speed", f"{speed:g}",
                    "--warmup", str(SIM_HISTORY_DAYS * 86_400_000 // settings.timeframe_ms),
                    "--api-key", key,
                    "--api-secret", secret,
                    "--log-dir", str(log_dir),
                ],
                port=(settings.sim_host, settings.sim_port, "TB_SIM_PORT"),
            )
        )  # fmt: skip
    missing = [name for name in SERVICES if not built(name)]
    for name in SERVICES:
        if name in missing:
            continue
        if name == "signals":
            for i in range(1, workers + 1):
                procs.append(_service(f"signals-{i}", "signals", settings, 3 + i))
        else:
            procs.append(_service(name, name, settings, METRICS_OFFSET[name]))
    planned = []
    for p in procs:
        extra = service_env if p.name not in INFRA else {}
        planned.append(Process(p.name, p.cmd, p.args, env | extra | p.env, p.port))
    return planned, missing


def shown_args(args: list[str]) -> str:
    """Return a command line for printing, shell-quoted, with secret option values masked."""
    out = [shlex.quote(a) for a in args]
    for i, a in enumerate(args[:-1]):
        if a in SECRET_ARGS:
            out[i + 1] = "**********"
    return " ".join(out)


def mode_line(settings: Settings) -> str:
    """Return what money is at stake, as the first line says it: LIVE in capitals and words."""
    if settings.exchange == "sim":
        return "paper (local exchange simulator, no real money)"
    if settings.mode == "testnet":
        return f"TESTNET ({settings.exchange}'s demo endpoints, no real money)"
    return f"LIVE: REAL MONEY on {settings.exchange} (TB_LIVE=true)"


def plan_lines(
    settings: Settings, procs: list[Process], missing: list[str], speed: float
) -> list[str]:
    """Return what ``up`` prints first: mode, where the logs are, how to see status, the plan."""
    paper = settings.exchange == "sim"
    mode = mode_line(settings)
    log_dir, data_dir = settings.log_dir.resolve(), settings.data_dir.resolve()
    lines = [
        f"tradebot up: mode={mode}" + (f", market speed x{speed:g}" if speed != 1 else ""),
        f"  logs:   {log_dir}/<service>_YYYY-MM-DD.log (this supervisor: up_YYYY-MM-DD.log)",
        "  status: run `tradebot status` in another terminal"
        " (also: tradebot halt | resume | flatten | dlq list)",
        f"  data:   {data_dir}/ (lock {data_dir / 'tradebot.lock'})",
    ]
    if speed != 1:
        lines.append(
            f"  speed:  the simulator plays {speed:g} market seconds per second; services scan"
            f" every {scan_interval(settings, speed):g}s (SCAN_INTERVAL {settings.scan_interval:g}s"
            f" / {speed:g}, at least {MIN_SCAN_INTERVAL_S:g}s) to see as many price events per"
            " market minute"
        )
    for p in procs:
        metrics = f"  [metrics :{p.port[1]}]" if p.port and "TB_METRICS_PORT" in p.env else ""
        lines.append(f"  start {p.name:<13} {shown_args([Path(p.cmd).name, *p.args])}{metrics}")
    if missing:
        lines.append(f"  not built yet, not started: {', '.join(missing)}")
    if paper:
        lines.append(f"  simulator API: http://{settings.sim_host}:{settings.sim_port}")
    lines.append(
        f"  restarts: a process that dies is restarted; after {FLAPPING['attempts']} deaths in"
        f" {FLAPPING['window']}s it is held back {FLAPPING['retry_in']}s"
    )
    return lines


def _refuse(lines: list[str]) -> NoReturn:
    for line in lines:
        typer.echo(f"tradebot up: {line}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the up command to the tradebot CLI."""

    @app.command(short_help="Start the bot locally (paper mode by default).")
    def up(
        config_file: Annotated[
            Path | None, typer.Option("--config", help="TOML settings file (also TB_CONFIG).")
        ] = None,
        speed: Annotated[
            float,
            typer.Option(
                "--speed", min=0.001, help="Simulated market seconds per real second (paper only)."
            ),
        ] = 1.0,
        workers: Annotated[
            int, typer.Option("--workers", min=1, help="Signals worker processes.")
        ] = 2,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print what would run, then exit.")
        ] = False,
    ) -> None:
        """Start the bot locally: embedded Redis, exchange simulator and the built services."""
        try:
            settings = load_settings(config_file)
        except ConfigError as e:
            exit_bad_config(e)
        if speed != 1 and settings.exchange != "sim":
            typer.echo(
                f"tradebot up: --speed {speed:g}: only the simulator's market can run faster"
                f" (TB_EXCHANGE={settings.exchange}, not sim)",
                err=True,
            )
            raise typer.Exit(2)
        procs, missing = plan_processes(
            settings, speed=speed, workers=workers, config_file=config_file
        )
        problem = external_redis_problem(settings)
        if problem is not None:
            _refuse([f"{problem}; nothing started (start that server, or unset it)"])
        typer.echo("\n".join(plan_lines(settings, procs, missing, speed)))
        if dry_run:
            return
        try:
            lock = take_lock(settings.data_dir.resolve())
        except LockHeld as e:
            _refuse([f"{e}; nothing started (stop it first, or set TB_DATA_DIR)"])
        # A server that cannot bind exits at once and circus would restart it forever,
        # silently, while the services talk to whatever holds the port: refuse instead.
        taken = taken_ports(procs)
        if taken:
            _refuse(
                [
                    *taken,
                    "nothing started. Is another tradebot up running, or are the"
                    " children of one that was killed (SIGKILL) still there?",
                ]
            )
        setup_logging("up", settings.log_dir, settings.log_level, settings.secrets())
        log.info("starting %s (mode %s)", ", ".join(p.name for p in procs), settings.mode)
        (settings.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        typer.echo("Press Ctrl-C to stop.")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        try:
            order = [[p.name for p in procs if p.name not in INFRA], ["exchange_sim"]]
            run_supervised(procs, settings.data_dir.resolve() / "run", order)
        finally:
            os.close(lock)
