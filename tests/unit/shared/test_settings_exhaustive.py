"""Every setting, wrong: exit code 2 and one line naming it, and no service starts trading.

The cases are generated from ``Settings.model_fields``: for every field a value of the
wrong type (from its annotation: text for a number, ``maybe`` for a flag, NaN and
infinities for a float...), and for every field whose validator has a range the values
just outside it (``BOUNDS``, which must classify every numeric and validated text field:
``test_every_field_is_classified`` fails on a new one until it is added). Cross-field
rules and missing companions (a real exchange without keys...) are listed in ``RULES``.

Each case runs ``tradebot config`` in-process (the typer app itself) with the variable set
in the environment: exit code 2, nothing on stdout, exactly one line on stderr, starting
with ``config error:`` and naming the variable. A few representative cases run as real
processes: ``tradebot config`` and ``python -m services.<name>`` for each service, which
must also exit 2 with one line, write nothing to Redis and never reach the exchange.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import redis
from typer.testing import CliRunner

from shared.cli import app
from shared.config import HALF_OPEN_FRACTIONS, OPEN_FRACTIONS, Settings, env_name
from shared.redisconn import EmbeddedRedis
from tests.fixtures.procs import ROOT, clean_env

FIELDS = Settings.model_fields


@dataclass(frozen=True)
class Case:
    """Environment variables to set, and the setting the error line must name."""

    env: dict[str, str]
    names: str  # a field name; the line must contain its upper-case form
    why: str = ""

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.env.items())[:80]


def _base_type(annotation: Any) -> Any:
    """Return the annotation without ``| None``."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if get_origin(annotation) is not Literal and len(args) == 1 else annotation


def wrong_type_values(name: str) -> list[str]:
    """Return environment values of the wrong type for a field ([] when any text is valid)."""
    kind = _base_type(FIELDS[name].annotation)
    if kind is bool:
        return ["maybe", "2", ""]
    if kind is int:
        return ["abc", "1.5", "1e3", ""]
    if kind is float:
        return ["abc", "nan", "inf", "-inf", ""]
    if get_origin(kind) is Literal:
        return ["NOPE", str(get_args(kind)[0]).lower() + "x"]
    return []


# field -> values just outside its range (with the rule, docs/strategy.md and config.py)
BOUNDS: dict[str, list[str]] = {
    "leverage": ["0", "126"],
    **{f: ["0", "1", "-0.001", "1.001"] for f in OPEN_FRACTIONS},
    **{f: ["-0.000001", "1"] for f in HALF_OPEN_FRACTIONS},
    **{
        f: ["0", "-1"]
        for f in (
            "max_positions",
            "top_n",
            "vr_window",
            "candle_limit",
            "max_deliveries",
            "reclaim_idle_ms",
            "lease_ttl_ms",
            "entry_wait_ms",
            "recv_window_ms",
        )
    },
    "chop_period": ["1", "0"],
    "chop_threshold": ["0", "100.001", "-1"],
    "long_vr": ["0", "-1"],
    "short_vr": ["0", "-1"],
    "scan_interval": ["0", "-0.1"],
    "coin_rotate_hours": ["0", "-0.1"],
    "reconcile_interval": ["0", "-0.1"],
    "signal_max_age_ms": ["-1"],
    "embedded_redis_port": ["0", "65536"],
    "sim_port": ["0", "65536"],
    "metrics_port": ["-1", "65536"],
    "timeframe": ["7m", "5M", "1M", ""],
    "redis_min_replicas_ack": ["-1"],
    "redis_ack_timeout_ms": ["0", "-1"],
    "redis_sentinels": ["s1", "s1:0", "s1:65536", "s1:26379,", ":26379"],
    "redis_sentinel_master": ["", "two words"],
}
# Settings any value of the right type suits (so no value can be out of range).
FREE = {
    "quote": "a quote currency the exchange does not list leaves the universe empty",
    "sim_host": "any host name",
    "log_dir": "any path (an unwritable one fails at the first log line, not here)",
    "data_dir": "any path",
    "redis_url": "a secret, checked when connecting",
    "redis_password": "a secret, any characters",
    "api_key": "a secret",
    "api_secret": "a secret",
    "testnet": "a flag (wrong type only)",
    "live": "a flag (wrong type only; its rules are in RULES)",
    "log_level": "one of four names (wrong type only)",
    "exchange": "'sim' or a ccxt id: see RULES",
}

KEYS = {"TB_API_KEY": "k", "TB_API_SECRET": "s"}
RULES: list[Case] = [
    Case({"TB_TRAIL_STOP": "0.02"}, "trail_stop", "not below TRAIL_ACTIVATE"),
    Case({"TB_TRAIL_ACTIVATE": "0.005"}, "trail_activate", "TRAIL_STOP not below it"),
    Case({"TB_SURGE_TRAIL_STOP": "0.006"}, "surge_trail_stop", "above TRAIL_STOP"),
    Case({"TB_SURGE_THRESHOLD": "0.019"}, "surge_threshold", "below TRAIL_ACTIVATE"),
    Case({"TB_CANDLE_LIMIT": "20"}, "candle_limit", "not above VR_WINDOW"),
    Case({"TB_VR_WINDOW": "100"}, "vr_window", "CANDLE_LIMIT not above it"),
    Case({"TB_CHOP_PERIOD": "100"}, "chop_period", "CANDLE_LIMIT not above it"),
    Case({"TB_LIVE": "true"}, "live", "live on the simulator"),
    Case({"TB_EXCHANGE": "binanceusdm"}, "api_key", "a real exchange without keys"),
    Case({"TB_EXCHANGE": "binanceusdm", "TB_API_KEY": "k"}, "api_secret", "no secret"),
    Case({"TB_EXCHANGE": "binanceusdm", **KEYS}, "live", "neither TB_LIVE nor TB_TESTNET"),
    Case(
        {"TB_EXCHANGE": "binanceusdm", **KEYS, "TB_LIVE": "true", "TB_TESTNET": "true"},
        "testnet",
        "live and testnet",
    ),
    Case(
        {
            "TB_EXCHANGE": "binanceusdm",
            **KEYS,
            "TB_LIVE": "true",
            "TB_REDIS_URL": "redis://redis:6379/0",
        },
        "redis_password",
        "live without a Redis password",
    ),
    Case({"TB_EXCHANGE": "nope", **KEYS, "TB_TESTNET": "true"}, "exchange", "no such exchange"),
    Case({"TB_EXCHANGE": "", **KEYS, "TB_TESTNET": "true"}, "exchange", "empty"),
]
if "redis_sentinels" in FIELDS:
    RULES.append(
        Case(
            {"TB_REDIS_SENTINELS": "s1:26379", "TB_REDIS_URL": "redis://r:6379/0"},
            "redis_sentinels",
            "Sentinels and a URL",
        )
    )


def cases() -> list[Case]:
    """Return every case: wrong types, values just outside ranges, broken rules."""
    out: list[Case] = []
    for name in FIELDS:
        var = env_name(name)
        out += [Case({var: v}, name, "wrong type") for v in wrong_type_values(name)]
        out += [Case({var: v}, name, "out of range") for v in BOUNDS.get(name, [])]
    return out + RULES


def run_config(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run ``tradebot config`` in-process with only ``env`` set; return code, stdout, stderr."""
    for var in list(sys.modules["os"].environ):
        if var.upper().startswith("TB_"):
            monkeypatch.delenv(var)
    result = CliRunner().invoke(app, ["config"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def check_one_line(code: int, stdout: str, stderr: str, case: Case) -> None:
    """Exit 2, nothing on stdout, one stderr line naming the setting."""
    assert code == 2, f"{case.id} ({case.why}): exit {code}\n{stdout}{stderr}"
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"{case.id}: {lines}"
    assert lines[0].startswith("config error: "), lines[0]
    assert case.names.upper() in lines[0], f"{case.id}: the line does not name it: {lines[0]}"


def test_every_field_is_classified() -> None:
    """A new setting must get its bad values here (BOUNDS) or say why it has none (FREE)."""
    unclassified = [n for n in FIELDS if n not in BOUNDS and n not in FREE]
    assert not unclassified, f"add these settings to BOUNDS or FREE: {unclassified}"


def test_the_defaults_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = run_config({}, monkeypatch)
    assert (code, stderr) == (0, "")
    assert len(stdout.splitlines()) == len(FIELDS)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_bad_setting_exits_2_with_one_line_naming_it(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_one_line(*run_config(case.env, monkeypatch), case)


@pytest.mark.parametrize(
    "name", [n for n in BOUNDS if n in FIELDS and n not in ("timeframe",)], ids=str
)
def test_bounds_are_just_outside(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default of every bounded setting is valid: the bounds are not simply everything."""
    default = FIELDS[name].default
    code, _, stderr = run_config({env_name(name): str(default)}, monkeypatch)
    assert code == 0, stderr


# --- as real processes ---------------------------------------------------------------------


@dataclass
class Recorder:
    """A TCP port that accepts nothing: after a run, ``reached()`` says whether anyone dialled."""

    sock: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def reached(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


def run_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=clean_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "case",
    [
        Case({"TB_LEVERAGE": "126"}, "leverage"),
        Case({"TB_SCAN_INTERVAL": "abc"}, "scan_interval"),
        Case({"TB_EXCHANGE": "binanceusdm", **KEYS}, "live"),
    ],
    ids=lambda c: c.id,
)
def test_tradebot_config_process(case: Case) -> None:
    done = run_process(["-m", "shared.cli", "config"], case.env)
    check_one_line(done.returncode, done.stdout, done.stderr, case)


SERVICE_CASES = [
    ("market_data", Case({"TB_SCAN_INTERVAL": "0"}, "scan_interval")),
    ("signals", Case({"TB_TIMEFRAME": "7m"}, "timeframe")),
    ("executor", Case({"TB_LEVERAGE": "abc"}, "leverage")),
    ("executor", Case({"TB_EXCHANGE": "binanceusdm", **KEYS}, "live")),
    ("state", Case({"TB_TRAIL_STOP": "0.03"}, "trail_stop")),
]


@pytest.mark.parametrize(("service", "case"), SERVICE_CASES, ids=lambda x: str(x)[:40])
def test_service_with_a_bad_setting_exits_2_and_does_nothing(
    service: str, case: Case, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    exchange = Recorder()
    env = {
        "TB_REDIS_URL": redis_server.url,
        "TB_SIM_PORT": str(exchange.port),
        "TB_METRICS_PORT": "0",
        "TB_LOG_DIR": str(tmp_path / "logs"),
        **case.env,
    }
    try:
        done = run_process(["-m", f"services.{service}"], env)
        dialled = exchange.reached()
    finally:
        exchange.close()

    check_one_line(done.returncode, done.stdout, done.stderr, case)
    assert not dialled, "the service dialled the exchange"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.dbsize() == 0, "the service wrote to Redis"
    finally:
        client.close()
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
