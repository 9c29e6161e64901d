"""`tradebot up` as a new user runs it: embedded Valkey with AOF and the simulator; Ctrl-C stops."""

from __future__ import annotations

import os
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


def _start(workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [TRADEBOT, "up"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise
    return out.decode(errors="replace")


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
    finally:
        out = _stop(proc)
    assert proc.returncode is not None
    assert "tradebot up: mode=paper" in out
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port, socket_timeout=1).ping()

    proc = _start(tmp_path, env)
    try:
        client = redis.Redis(port=redis_port, socket_timeout=2)
        _eventually(lambda: bool(client.ping()), what="the embedded server after restart")
        assert client.get("tb:test:durable") == b"yes"
        client.close()
    finally:
        _stop(proc)


def test_up_refuses_to_start_when_the_redis_port_is_taken(tmp_path: Path) -> None:
    sim_port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        redis_port = int(holder.getsockname()[1])
        env = _env(redis_port, sim_port)
        proc = _start(tmp_path, env)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text
    assert f"port {redis_port} for redis is already in use" in text
    assert "TB_EMBEDDED_REDIS_PORT" in text
    assert "nothing started" in text
    assert not (tmp_path / "data" / "redis" / "appendonlydir").exists()
