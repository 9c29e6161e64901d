"""Every command a user types, given bad input: exit code 2, one line naming what was wrong.

The battery drives ``tradebot`` (every command and subcommand) and the exchange simulator's
command line in-process through the same ``shared.clikit.run`` their console scripts call,
and a few cases through the real scripts. ``test_every_command_is_in_the_battery`` walks the
CLI's command tree, so a command added later without a bad-input case fails the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from services.exchange_sim.__main__ import PROG as SIM_PROG
from services.exchange_sim.__main__ import app as sim_app
from shared.cli import app
from shared.clikit import run, service_args
from shared.redisconn import EmbeddedRedis

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Case:
    """One bad command line: its arguments, extra environment, a fragment of the one line."""

    args: tuple[str, ...]
    says: str
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2

    def __str__(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {' '.join(self.args)}".strip()


@pytest.fixture
def where(tmp_path: Path) -> dict[str, str]:
    """The paths the cases name: a folder, a file, a missing path, bad TOML and CSV files."""
    (tmp_path / "file.txt").write_text("not a folder\n")
    (tmp_path / "five.toml").write_text('LEVERAGE = "five"\n')
    (tmp_path / "big.toml").write_text("leverage = 200\n")
    (tmp_path / "secret.toml").write_text('API_KEY = "k-123"\n')
    (tmp_path / "url.toml").write_text('REDIS_URL = "redis://:pw@127.0.0.1:6379/0"\n')
    (tmp_path / "typo.toml").write_text("LEVRAGE = 2\n")
    (tmp_path / "broken.toml").write_text("LEVERAGE = = 2\n")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "key").write_text("other-key\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "BTC_USDT.csv").write_text("timestamp,open,high,low,close\n1,2,3,4,5\n")
    (tmp_path / "state.json").write_text("{not json")
    return {
        "tmp": str(tmp_path),
        "file": str(tmp_path / "file.txt"),
        "missing": str(tmp_path / "missing.toml"),
        "five": str(tmp_path / "five.toml"),
        "big": str(tmp_path / "big.toml"),
        "secret": str(tmp_path / "secret.toml"),
        "url": str(tmp_path / "url.toml"),
        "typo": str(tmp_path / "typo.toml"),
        "broken": str(tmp_path / "broken.toml"),
        "binary": str(tmp_path / "binary.toml"),
        "key": str(tmp_path / "key"),
        "empty": str(tmp_path / "empty"),
        "badcsv": str(tmp_path / "BTC_USDT.csv"),
        "state": str(tmp_path / "state.json"),
        "out": str(tmp_path / "out"),
    }


SYN = ("--synthetic", "2", "1", "1")
REAL = {"TB_EXCHANGE": "binanceusdm", "TB_API_KEY": "k", "TB_API_SECRET": "s"}

TRADEBOT: list[Case] = [
    # the program itself
    Case(("--bogus",), "tradebot: No such option: --bogus (see 'tradebot -h')"),
    Case(("nosuchcmd",), "No such command 'nosuchcmd'"),
    # settings, through `config` (every command loads them the same way)
    Case(("config", "--config", "{tmp}"), "config error: --config {tmp}: is a folder, not a"),
    Case(("config", "--config", "{missing}"), "--config {missing}: config file not found"),
    Case(("config",), "TB_CONFIG={missing}: config file not found", {"TB_CONFIG": "{missing}"}),
    Case(("config", "--config", "{broken}"), "--config {broken}: not valid TOML"),
    Case(("config", "--config", "{binary}"), "--config {binary}: not a text file"),
    Case(("config", "--config", "{five}"), "{five}: LEVERAGE='five': Input should be a valid"),
    Case(("config", "--config", "{big}"), "{big}: leverage=200 must be between 1 and 125"),
    Case(("config", "--config", "{secret}"), "{secret}: API_KEY holds a secret"),
    Case(("config", "--config", "{url}"), "{url}: REDIS_URL holds a password"),
    Case(("config", "--config", "{typo}"), "unknown setting 'LEVRAGE' (did you mean LEVERAGE?)"),
    Case(("config",), "TB_LEVERGE: unknown setting (did you mean", {"TB_LEVERGE": "2"}),
    Case(("config",), "TB_LEVERAGE=0 must be between 1 and 125", {"TB_LEVERAGE": "0"}),
    Case(("config",), "TB_EXCHANGE='nope' is neither 'sim' nor", {"TB_EXCHANGE": "nope"}),
    Case(("config",), "TB_REDIS_URL must start with redis://", {"TB_REDIS_URL": "notaurl"}),
    Case(("config",), "TB_REDIS_URL has a port", {"TB_REDIS_URL": "redis://h:xx/0"}),
    Case(("config",), "TB_REDIS_URL names no host", {"TB_REDIS_URL": "redis:///0"}),
    Case(
        ("config",), "TB_API_KEY_FILE={missing}: file not found", {"TB_API_KEY_FILE": "{missing}"}
    ),
    Case(("config",), "TB_API_KEY_FILE={tmp}: is a folder", {"TB_API_KEY_FILE": "{tmp}"}),
    Case(("config",), "TB_API_KEY_FILE={empty}: the file is empty", {"TB_API_KEY_FILE": "{empty}"}),
    Case(
        ("config",),
        "TB_API_KEY and TB_API_KEY_FILE are both set",
        {"TB_API_KEY": "k", "TB_API_KEY_FILE": "{key}"},
    ),
    Case(("config",), "trades real money: set TB_LIVE=true", REAL),
    Case(("config",), "TB_LIVE=true needs a real exchange", {"TB_LIVE": "true"}),
    Case(("config", "--leverage", "3"), "No such option: --leverage"),
    Case(("health", "--config", "{tmp}"), "--config {tmp}: is a folder"),
    Case(("health", "--bogus"), "tradebot health: No such option: --bogus"),
    # backtest: every check comes before the work
    Case(("backtest", *SYN, "--out", "{file}"), "--out {file} is a file; give a folder"),
    Case(("backtest", *SYN, "--out", "{file}/sub"), "--out {file}/sub: cannot create the folder"),
    Case(("backtest", *SYN, "--from", "1735689600"), "--from 1735689600 is before 1973"),
    Case(("backtest", *SYN, "--to", "17356896000000000"), "--to 17356896000000000 is after"),
    Case(("backtest", *SYN, "--from", "yesterday"), "--from 'yesterday' is neither ms since"),
    Case(
        ("backtest", *SYN, "--from", "2025-02-01", "--to", "2025-01-01"),
        "--from 2025-02-01 must be before --to 2025-01-01",
    ),
    Case(("backtest", "--synthetic", "0", "1", "1"), "--synthetic 0 1.0 1: need SYMBOLS >= 1"),
    Case(("backtest", "--synthetic", "2", "x", "1"), "Invalid value for '--synthetic'"),
    Case(("backtest", "--synthetic", "2"), "Option '--synthetic' requires 3 arguments"),
    Case(("backtest", "--data", "{missing}"), "{missing}: no such file or folder"),
    Case(("backtest", "--data", "{badcsv}"), "{badcsv}: missing column(s) volume"),
    Case(("backtest",), "no downloaded candles in {tmp}/data/candles/sim/5m: run `tradebot"),
    Case(("backtest", *SYN, "--data", "{tmp}"), "give --data PATH or --synthetic SYMBOLS DAYS"),
    Case(("backtest", *SYN, "--exchange", "sim"), "--exchange names which downloaded candles"),
    Case(("backtest", *SYN, "--equity", "-1"), "--equity -1.0 must be positive"),
    Case(("backtest", *SYN, "--symbols", "NOPE/USDT"), "not in the synthetic data: NOPE/USDT"),
    Case(("backtest", *SYN, "--config", "{tmp}"), "--config {tmp}: is a folder"),
    # download (checks before any request)
    Case(("download", "--top", "0"), "tradebot download: Invalid value for '--top'"),
    Case(("download", "--symbols", "BTCUSDT", "--top", "2"), "give --symbols or --top, not"),
    Case(("download", "--days", "3", "--from", "2025-01-01"), "give --days or --from, not both"),
    Case(("download", "--timeframe", "7m"), "--timeframe '7m' must be one of 1m"),
    Case(("download", "--from", "1735689600"), "--from 1735689600 is before 1973"),
    Case(("download", "--exchange", "nope"), "--exchange 'nope' is neither 'sim' nor a ccxt"),
    Case(("download", "--symbols", " , "), "download error: --symbols is empty"),
    Case(("download", "--days", "0"), "tradebot download: Invalid value for '--days'"),
    Case(("download", "--config", "{tmp}"), "--config {tmp}: is a folder"),
    # up
    Case(("up", "--speed", "0"), "tradebot up: Invalid value for '--speed'"),
    Case(("up", "--workers", "0"), "tradebot up: Invalid value for '--workers'"),
    Case(
        ("up", "--speed", "2", "--dry-run"),
        "--speed 2: only the simulator's market",
        {**REAL, "TB_TESTNET": "true"},
    ),
    Case(("up", "--config", "{tmp}"), "--config {tmp}: is a folder"),
    # the operator commands
    Case(("status", "--config", "{tmp}"), "--config {tmp}: is a folder"),
    Case(("status", "--jsn"), "No such option: --jsn"),
    Case(("halt", "--config", "{tmp}"), "--config {tmp}: is a folder"),
    Case(("resume", "--bogus"), "tradebot resume: No such option: --bogus"),
    Case(("flatten", "--timeout", "-1"), "tradebot flatten: Invalid value for '--timeout'"),
    Case(("dlq", "list", "--limit", "0"), "tradebot dlq list: Invalid value for '--limit'"),
    Case(("dlq", "replay"), "give DLQ entry ids or --all"),
    Case(("dlq", "replay", "--all", "1-0"), "give DLQ entry ids or --all"),
    Case(("dlq", "purge"), "No such command 'purge'"),
    Case(("redis",), "tradebot redis: Missing argument"),
    Case(("redis", "GET", "k", "--config", "{tmp}"), "--config {tmp}: is a folder"),
]

# Mistakes that need the bot's Redis to be told apart (the command's own flags say which).
TRADEBOT_WITH_REDIS: list[Case] = [
    Case(("redis", "XADD", "k", "*", "a", "b"), "XADD changes data: add --write to run it"),
    Case(("redis", "NOSUCHCMD"), "unknown Redis command 'NOSUCHCMD'"),
]

# Not the user's input but the machine's: exit 1, still one line.
TRADEBOT_ENVIRONMENT: list[Case] = [
    Case(("status",), "cannot reach Redis at redis://127.0.0.1:{dead}/0", code=1),
    Case(("up", "--dry-run"), "TB_REDIS_URL: no answer from Redis at redis://127.0.0.1:", code=1),
    Case(
        ("halt",),
        "cannot reach Redis at redis://u:**********@127.0.0.1:{dead}/0",
        {"TB_REDIS_URL": "redis://u:pw-secret@127.0.0.1:{dead}/0"},
        code=1,
    ),
]

SIM: list[Case] = [
    Case(("--replay", "{missing}", "--speed", "0"), "exchange_sim error: {missing}: no such file"),
    Case(("--replay", "{badcsv}"), "exchange_sim error: {badcsv}: missing column(s) volume"),
    Case(("--replay", "{file}"), "{file}: unsupported file type '.txt'"),
    Case(("--speed", "-1"), "Invalid value for '--speed'"),
    Case(("--symbols", "0"), "--symbols 0: give at least 1 symbol"),
    Case(("--symbols", "BTC/USDT"), "--symbols BTC/USDT: a synthetic market takes a count"),
    Case(("--balance", "0"), "--balance 0 must be positive"),
    Case(("--fee-rate", "1"), "--fee-rate 1 must be a fraction in [0, 1)"),
    Case(("--start-ms", "1735689600"), "--start-ms 1735689600 is before 1973"),
    Case(("--log-level", "chatty"), "--log-level 'chatty' must be one of DEBUG"),
    Case(("--timeframe", "7m"), "--timeframe '7m' must be one of 1m"),
    Case(("--faults", "bogus=1"), "--faults bogus=1: unknown fault kind(s) bogus; known: http5xx"),
    Case(("--faults", "drop=x"), "--faults drop=x: bad fault rate 'drop=x'"),
    Case(("--faults", "drop=0.7,reset=0.7"), "rates must sum to at most 1"),
    Case(("--garbage", "bogus=1"), "--garbage bogus=1: unknown garbage kind(s) bogus; known: nan"),
    Case(("--state-file", "{tmp}"), "--state-file {tmp}: Is a directory"),
    Case(("--state-file", "{state}"), "--state-file {state}: not a simulator state file"),
    Case(("--port", "0"), "Invalid value for '--port'"),
    Case((), "Invalid value for '--port' (env var: 'TB_SIM_PORT')", {"TB_SIM_PORT": "http"}),
    Case(("--latency-ms", "-1"), "Invalid value for '--latency-ms'"),
    Case(("--timeout-hold", "-1"), "Invalid value for '--timeout-hold'"),
    Case(("--warmup", "-1"), "Invalid value for '--warmup'"),
    Case(("--bogus",), f"{SIM_PROG}: No such option: --bogus"),
]


def fill(text: str, where: dict[str, str]) -> str:
    return text.format(**where)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No TB_* from outside; run in tmp_path (so nothing lands in the checkout)."""
    for var in list(os.environ):
        if var.upper().startswith("TB_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def check(
    case: Case,
    program: typer.Typer,
    prog: str,
    where: dict[str, str],
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for k, v in case.env.items():
        env.setenv(k, fill(v, where))
    code = run(program, prog, [fill(a, where) for a in case.args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == case.code, (str(case), out, err)
    assert len(lines) == 1, (str(case), err)
    assert fill(case.says, where) in lines[0], (str(case), err)
    assert "Traceback" not in out + err
    if case.code == 2:
        assert out == "", (str(case), out)  # nothing was done


@pytest.mark.parametrize("case", TRADEBOT, ids=str)
def test_tradebot_bad_input_is_one_line_and_exit_2(
    case: Case,
    where: dict[str, str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check(case, app, "tradebot", where, clean_env, capsys)


@pytest.mark.parametrize("case", TRADEBOT_WITH_REDIS, ids=str)
def test_redis_command_mistakes_are_one_line_and_exit_2(
    case: Case,
    redis_server: EmbeddedRedis,
    where: dict[str, str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("TB_REDIS_URL", redis_server.url)
    check(case, app, "tradebot", where, clean_env, capsys)


def dead_port() -> int:
    """Return a port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("case", TRADEBOT_ENVIRONMENT, ids=str)
def test_an_unreachable_redis_is_one_line_and_exit_1(
    case: Case,
    where: dict[str, str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    where = {**where, "dead": str(dead_port())}
    clean_env.setenv("TB_REDIS_URL", f"redis://127.0.0.1:{where['dead']}/0")
    check(case, app, "tradebot", where, clean_env, capsys)
    assert "pw-secret" not in capsys.readouterr().err


@pytest.mark.parametrize("case", SIM, ids=str)
def test_simulator_bad_input_is_one_line_and_exit_2(
    case: Case,
    where: dict[str, str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check(case, sim_app, SIM_PROG, where, clean_env, capsys)


@pytest.mark.parametrize("service", ["market_data", "signals", "executor", "state"])
def test_a_service_takes_no_arguments(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bad:
        service_args(service, ["--bogus"])
    out, err = capsys.readouterr()
    assert (bad.value.code, out) == (2, "")
    assert err == (
        f"python -m services.{service}: takes no arguments, got '--bogus'"
        f" (see 'python -m services.{service} -h')\n"
    )
    with pytest.raises(SystemExit) as helped:
        service_args(service, ["-h"])
    assert helped.value.code == 0
    assert capsys.readouterr().out.startswith(f"Usage: python -m services.{service}\n")
    service_args(service, [])  # no arguments: the service starts


def command_paths(group: typer.Typer) -> set[tuple[str, ...]]:
    """Return every runnable command of the CLI as its words, e.g. ("dlq", "list")."""
    found: set[tuple[str, ...]] = set()

    def walk(cmd: object, path: tuple[str, ...]) -> None:
        subcommands = getattr(cmd, "commands", None)  # a group (Typer's vendored click)
        if subcommands is None:
            found.add(path)
            return
        for name, sub in subcommands.items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(group), ())
    return found


def test_every_command_is_in_the_battery() -> None:
    covered = {c.args for c in TRADEBOT + TRADEBOT_WITH_REDIS}
    paths = command_paths(app)
    missing = {p for p in paths if not any(args[: len(p)] == p for args in covered)}
    assert paths >= {("config",), ("backtest",), ("up",), ("dlq", "list"), ("redis",)}
    assert not missing, f"commands without a bad-input case: {sorted(missing)}"


def script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TB_")}
    return subprocess.run(
        args, capture_output=True, text=True, env=clean | env, cwd=PROJECT, timeout=120
    )


def test_the_installed_scripts_behave_the_same(where: dict[str, str]) -> None:
    """The console script, the simulator module and a service: one line, exit 2, no traceback."""
    sim = (sys.executable, "-m", "services.exchange_sim")
    runs = [
        (script(str(BIN / "tradebot"), "config", "--config", where["tmp"], env={}), "is a folder"),
        (script(*sim, "--replay", where["missing"], env={}), "no such file or folder"),
        (script(sys.executable, "-m", "services.signals", env={"TB_LEVERAGE": "0"}), "LEVERAGE=0"),
    ]
    for proc, says in runs:
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1, proc.stderr
        assert says in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_taken_port_stops_the_simulator_with_one_line(where: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = script(
            sys.executable, "-m", "services.exchange_sim", "--speed", "0", env={
                "TB_SIM_PORT": str(port)},
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"exchange_sim error: --port {port}: 127.0.0.1:{port} is taken (another simulator?)"
    )
