"""The supervisor behind ``tradebot up``: circus with restart logging, one instance per data dir.

Each process is a circus watcher. When one exits while the bot is running, the ``after_reap``
hook logs why (``tradebot up: executor exited with code 3 (lease lost); restarting``) to the
terminal and to ``LOG_DIR/up_YYYY-MM-DD.log``; circus then starts it again, and its flapping
plugin holds a process back that keeps dying. Ctrl-C, SIGTERM and SIGHUP (the terminal
closed; circus would reload on it) stop every child. An exclusive ``flock`` on
``DATA_DIR/tradebot.lock``, held for the supervisor's life and released by the kernel when
it dies, refuses a second supervisor on the same data.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import EXIT_BAD_CONFIG

log = logging.getLogger("tradebot up")

LOCK_NAME = "tradebot.lock"
EXIT_LEASE_LOST = 3  # shared.service.EXIT_LEASE_LOST (not imported: it pulls in the bus)
EXIT_MEANING = {
    1: "error, see its log",
    EXIT_BAD_CONFIG: "invalid settings",
    EXIT_LEASE_LOST: "lease lost",
}
# A process that dies 3 times within 10 s is held back 5 s before the next try.
FLAPPING = {"attempts": 3, "window": 10, "retry_in": 5, "max_retry": -1}


@dataclass(frozen=True)
class Process:
    """One supervised process: a name, a command line and extra environment."""

    name: str
    cmd: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: tuple[str, int, str] | None = None  # (host, port, setting) it listens on


class LockHeld(Exception):
    """Another supervisor holds the lock on this data directory."""


def take_lock(data_dir: Path) -> int:
    """Lock ``data_dir/tradebot.lock`` for this process's life; raise LockHeld if it is taken.

    Returns the file descriptor, which must stay open (closing it releases the lock).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(f"another `tradebot up` (pid {holder}) is running on {data_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def exit_reason(code: int | None) -> str:
    """Return how a process ended, in words: exit code and meaning, or the killing signal."""
    if code is None:
        return "ended (exit code unknown)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    meaning = EXIT_MEANING.get(code)
    return f"exited with code {code}" + (f" ({meaning})" if meaning else "")


def after_reap(watcher: Any, arbiter: Any, hook_name: str, **info: Any) -> bool:
    """Log each process exit: a restart while running, a plain stop while shutting down."""
    reason = exit_reason(info.get("exit_code"))
    if arbiter._stopping or watcher.is_stopping() or watcher.is_stopped():
        log.info("%s %s (stopping)", watcher.name, reason)
    else:
        log.warning("%s %s; restarting", watcher.name, reason)
    return True


def after_spawn(watcher: Any, arbiter: Any, hook_name: str, **info: Any) -> bool:
    """Log each process start with its pid (a restart shows as a new pid)."""
    log.info("%s started (pid %s)", watcher.name, info.get("pid"))
    return True


def watcher_config(proc: Process) -> dict[str, Any]:
    """Return the circus watcher of one process: inherited env, output to our stdout, hooks."""
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
        "hooks": {"after_reap": (after_reap, True), "after_spawn": (after_spawn, True)},
    }


class _DropConflicts(logging.Filter):
    """Drop circus's "arbiter is already running a command" errors logged while it stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        from circus.exc import ConflictError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConflictError)


class OrderedStop:
    """Stop the services first, then the simulator, then the rest (Redis): each needs the next.

    Circus stops every watcher at once, so the services would lose Redis while they shut down
    (leases not released, heartbeats left, shutdown stalled until SIGKILL). A second stop
    signal skips the order.
    """

    def __init__(self, arbiter: Any, first: list[list[str]]) -> None:
        self.arbiter = arbiter
        self.first = first
        self.requested = False

    def request(self) -> None:
        """Start stopping (from a signal handler); a second request stops everything now."""
        again = self.requested
        self.requested = True
        self.arbiter.loop.add_callback(self._stop_all if again else self._run)

    async def _retry(self, command: Any) -> None:
        from circus.exc import ConflictError

        while True:
            try:
                await command()
                return
            except ConflictError:  # a periodic circus command is running: wait for it
                await asyncio.sleep(0.1)

    async def _run(self) -> None:
        log.info("stopping: services first, then the simulator, then Redis")
        for names in self.first:
            group = [w for w in self.arbiter.watchers if w.name in names]
            if group:
                await self._retry(
                    lambda g=group: self.arbiter.stop_watchers(
                        watcher_iter_func=lambda reverse=False: g
                    )
                )
        await self._stop_all()

    async def _stop_all(self) -> None:
        await self._retry(self.arbiter.stop)


def run_supervised(
    procs: list[Process], control_dir: Path, stop_first: list[list[str]] | None = None
) -> None:
    """Run the processes under circus until a stop signal, restarting any that die.

    ``stop_first`` lists groups of process names stopped in turn before the others.
    """
    from circus import get_arbiter

    control_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("circus").setLevel(logging.WARNING)
    logging.getLogger("tornado.application").addFilter(_DropConflicts())
    arbiter = get_arbiter(
        [watcher_config(p) for p in procs],
        controller=f"ipc://{control_dir / 'circus.ctl'}",
        pubsub_endpoint=f"ipc://{control_dir / 'circus.pub'}",
        check_delay=1.0,
        loglevel="WARNING",
        plugins=[{"use": "circus.plugins.flapping.Flapping", **FLAPPING}],
    )
    stop = OrderedStop(arbiter, stop_first or [])
    handler = arbiter.ctrl.sys_hdl
    # Ctrl-C, SIGTERM, SIGQUIT and SIGHUP (the terminal closed; circus would reload) all stop.
    for name in ("handle_int", "handle_term", "handle_quit", "handle_hup"):
        setattr(handler, name, stop.request)
    try:
        arbiter.start()
    finally:
        arbiter.stop()
