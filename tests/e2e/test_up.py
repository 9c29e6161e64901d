"""`tradebot up` as a new user runs it: embedded Valkey with AOF and the simulator; Ctrl-C stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from shared.redisconn import free_port

pytestmark = pytest.mark.slow

TRADEBOT = str(Path(sys.executable).parent / "tradebot")


def _env(redis_port: int, sim_port: int) -> dict[str, str]:
    """Return this machine's environment without TB_* settings, plus the test's ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
    return env | {
        "TB_EMBEDDED_REDIS_PORT": str(redis_port),
        "TB_SIM_PORT": str(sim_port),
        "TB_METRICS_PORT": "0",
    }


def _eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(workdir: Path, env: dict[str, str], name: str = "up") -> subprocess.Popen[bytes]:
    """Start ``tradebot up`` in workdir, output to workdir/<name>.out (a pipe could fill)."""
    with (workdir / f"{name}.out").open("wb") as out:
        return subprocess.Popen(
            [TRADEBOT, "up"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _output(workdir: Path, name: str = "up") -> str:
    return (workdir / f"{name}.out").read_text(errors="replace")


def _stop(
    proc: subprocess.Popen[bytes], workdir: Path, sig: int = signal.SIGINT, name: str = "up"
) -> str:
    """Stop ``tradebot up`` with a signal; return its output (kill its group if it hangs)."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return _output(workdir, name)


def _up_log(workdir: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted((workdir / "logs").glob("up_*.log"))
    )


def _started_pid(workdir: Path, name: str, after: int = 0) -> int:
    """Return the pid of the latest logged start of a process other than ``after`` (0: none)."""
    pids = [
        int(m) for m in re.findall(rf"tradebot up: {name} started \(pid (\d+)\)", _up_log(workdir))
    ]
    pids = [p for p in pids if p != after]
    return pids[-1] if pids else 0


def _alive(pid: int) -> bool:
    """Return whether a process runs (a zombie waiting for init's reaping does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


EVERY_PROCESS = {"exchange_sim", "market_data", "signals-1", "executor", "state"}


def _all_started(workdir: Path) -> bool:
    """Return whether `tradebot up` has logged the start of every process."""
    return set(re.findall(r"tradebot up: ([\w-]+) started", _up_log(workdir))) >= EVERY_PROCESS


def _every_child_gone(workdir: Path) -> None:
    """Assert that every process `tradebot up` logged as started has ended."""
    pids = [int(m) for m in re.findall(r"started \(pid (\d+)\)", _up_log(workdir))]
    assert _all_started(workdir)
    running = [pid for pid in pids if _alive(pid)]
    assert not running, f"still running after tradebot up ended: {running}"


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_up_runs_embedded_redis_with_aof_and_the_simulator(tmp_path: Path) -> None:
    redis_port, sim_port = free_port(), free_port()
    env = _env(redis_port, sim_port)
    proc = _start(tmp_path, env)
    try:
        client = redis.Redis(port=redis_port, socket_timeout=2)
        _eventually(lambda: bool(client.ping()), what="the embedded server")
        url = f"http://127.0.0.1:{sim_port}/fapi/v1/time"
        _eventually(lambda: urllib.request.urlopen(url, timeout=2).status == 200, what="the sim")
        client.set("tb:test:durable", "yes")
        client.close()
        _eventually(lambda: _all_started(tmp_path), what="every process started")
    finally:
        out = _stop(proc, tmp_path)
    assert proc.returncode == 0, out
    _every_child_gone(tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("tradebot up: mode=paper")
    assert f"logs:   {tmp_path / 'logs'}/<service>_YYYY-MM-DD.log" in lines[1]
    assert "`tradebot status` in another terminal" in lines[2]
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    assert list((tmp_path / "logs").glob("exchange_sim_*.log"))
    assert "stopping: services first, then the simulator, then Redis" in _up_log(tmp_path)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port, socket_timeout=1).ping()

    proc = _start(tmp_path, env)
    try:
        client = redis.Redis(port=redis_port, socket_timeout=2)
        _eventually(lambda: bool(client.ping()), what="the embedded server after restart")
        assert client.get("tb:test:durable") == b"yes"
        client.close()
    finally:
        _stop(proc, tmp_path)


def test_up_refuses_to_start_when_the_redis_port_is_taken(tmp_path: Path) -> None:
    sim_port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        redis_port = int(holder.getsockname()[1])
        env = _env(redis_port, sim_port)
        proc = _start(tmp_path, env)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = _output(tmp_path)
    assert proc.returncode == 1, text
    assert f"port {redis_port} for redis is already in use" in text
    assert "TB_EMBEDDED_REDIS_PORT" in text
    assert "nothing started" in text
    assert not (tmp_path / "data" / "redis" / "appendonlydir").exists()


def test_a_second_up_on_the_same_data_is_refused(tmp_path: Path) -> None:
    redis_port = free_port()
    first = _start(tmp_path, _env(redis_port, free_port()))
    try:
        client = redis.Redis(port=redis_port, socket_timeout=2)
        _eventually(lambda: bool(client.ping()), what="the first embedded server")
        client.close()
        other_redis = free_port()
        second = _start(tmp_path, _env(other_redis, free_port()), name="second")
        try:
            second.wait(timeout=60)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()
        text = _output(tmp_path, "second")
        assert second.returncode == 1, text
        assert f"another `tradebot up` (pid {first.pid}) is running on {tmp_path / 'data'}" in text
        assert "nothing started" in text
        assert _closed(other_redis)
        assert first.poll() is None  # the first one is untouched
    finally:
        _stop(first, tmp_path)


def test_a_killed_process_is_restarted_and_the_restart_logged(tmp_path: Path) -> None:
    sim_port = free_port()
    proc = _start(tmp_path, _env(free_port(), sim_port))
    try:
        _eventually(lambda: bool(_started_pid(tmp_path, "exchange_sim")), what="the simulator")
        victim = _started_pid(tmp_path, "exchange_sim")
        os.kill(victim, signal.SIGKILL)
        line = "tradebot up: exchange_sim was killed by SIGKILL; restarting"
        _eventually(lambda: line in _up_log(tmp_path), what="the restart line in the up log")
        _eventually(
            lambda: bool(_started_pid(tmp_path, "exchange_sim", after=victim)),
            what="the simulator's restart",
        )
        url = f"http://127.0.0.1:{sim_port}/fapi/v1/time"
        _eventually(lambda: urllib.request.urlopen(url, timeout=2).status == 200, what="the sim")
    finally:
        out = _stop(proc, tmp_path)
    assert line in out  # in the terminal too


def test_closing_the_terminal_stops_every_child(tmp_path: Path) -> None:
    redis_port, sim_port = free_port(), free_port()
    proc = _start(tmp_path, _env(redis_port, sim_port))
    try:
        client = redis.Redis(port=redis_port, socket_timeout=2)
        _eventually(lambda: bool(client.ping()), what="the embedded server")
        client.close()
        _eventually(lambda: not _closed(sim_port), what="the simulator")
        _eventually(lambda: _all_started(tmp_path), what="every process started")
    finally:
        _stop(proc, tmp_path, signal.SIGHUP)
    assert proc.returncode == 0
    _every_child_gone(tmp_path)
    assert _closed(redis_port)
    assert _closed(sim_port)
