"""Benchmark: the whole bot at scale (500 symbols, 1m candles, 1 s scan) against the same
bot with 8 symbols, measured in the same run.

Each phase runs what ``tradebot up`` runs, as plain processes (``python -m services.<name>``
with TB_* settings): a private Valkey server (``EmbeddedRedis``, AOF fsync ``always`` as
``up`` has it), the exchange simulator listing ``--listed`` synthetic perpetuals with 1m
candles, market_data, ``--workers`` signals workers, executor and state. Phases:

- baseline: TB_TOP_N=8 (the default universe), run first, ``--baseline-closes`` closes;
- scale: TB_TOP_N=500, ``--closes`` closes.

The baseline is the same services with a tiny universe rather than a bare ``python -c
"import ..."``: it has the same imports, connections, market list (the simulator lists the
same 500 perpetuals in both phases) and start-up, so the difference is what the 500-symbol
universe itself costs, and the noise of the shared machine hits both phases alike.

Time: the simulator's clock runs ``--speed`` times real time (default 6: a 1-minute close
every 10 real seconds), so several closes fit in a short run; the scan interval stays 1 real
second. Candle work per real second is therefore ``--speed`` times what a real 1m market
gives (tick work is not): the CPU % is an upper bound for the candle part.

Measured, from the first close evaluated after start-up (the warm-up fetch is left out) to
the last of the phase's closes evaluated, polling every 0.5 s (closes every 0.05 s):

- per process: CPU seconds (user + sys, /proc/<pid>/stat) and CPU % over that window, peak
  RSS over the whole life (VmHWM of /proc/<pid>/status: start-up included, and whether the
  peak came at start-up or in the window) and RSS at the end, next to the baseline's; for
  reference, the peak RSS of a bare python that only imports the service's module (the
  floor no universe size can go under);
- per consumer group: the max over samples of XINFO GROUPS ``lag + pending``, bounded by one
  scan's worth (the most entries the stream received within any one scan interval);
- per close: candles published on md.candles (must equal the universe and
  ``tb:close:{C}:expected``), and the time from its publication (the entries' id time) to
  ``tb:close:{C}:evaluated`` reaching the expected count, bounded by the scan interval;
- for information: close to published (the simulator's close time mapped to wall time:
  the wait for the next scan plus market_data's klines fetch), and market_data's scan period
  (the gaps between md.ticks batches).

Targets (docs/performance.md): peak RSS under 150 MB per service; each close evaluated within
one scan interval of its publication; no group's lag beyond one scan's worth. Exit code 1
if one is missed, printing by how much. Takes about 100 s.

Run: .venv/bin/python bench/scale.py [--symbols 500] [--closes 5] [--speed 6] [--logs DIR]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import redis
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import keys
from shared.config import SIM_API_KEY, SIM_API_SECRET, TIMEFRAME_MS
from shared.redisconn import EmbeddedRedis, free_port
from shared.schemas import FIELD, Candle, SchemaError, decode

ROOT = Path(__file__).resolve().parents[1]
TARGET_RSS_MB = 150.0
SAMPLE_S = 0.5  # processes and consumer groups
POLL_S = 0.05  # closes: published? all evaluated?
STARTUP_S = 60.0  # longest wait for the first close evaluated
CLK_TCK = os.sysconf("SC_CLK_TCK")
# (stream, group) of every consumer group on the bot's streams.
GROUPS = (
    (keys.STREAM_CANDLES, keys.GROUP_SIGNALS),
    (keys.STREAM_TICKS, keys.GROUP_STATE),
    (keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR),
    (keys.STREAM_EVENTS, keys.GROUP_STATE),
)
SERVICES = ("market_data", "signals", "executor", "state")
INFRA = ("exchange_sim", "redis")  # measured too, not services: no target


def short(stream: str) -> str:
    return stream.removeprefix(keys.PREFIX)


@dataclass
class Proc:
    """A process of the phase: its pid, CPU ticks at the window's start, last readings."""

    name: str
    popen: subprocess.Popen[bytes] | None
    pid: int
    cpu0: float | None = None
    cpu: float = 0.0
    hwm_kb: int = 0
    rss_kb: int = 0
    hwm0_kb: int = 0  # the peak at the window's start (set during start-up)

    def read(self) -> bool:
        """Read CPU seconds and peak RSS from /proc; return False once the process is gone."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        self.cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.hwm_kb = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                self.rss_kb = int(line.split()[1])
        return True


@dataclass
class Close:
    """One candle close as seen on md.candles."""

    close_ms: int
    published_s: float  # id time of its first entry
    candles: int = 0
    expected: int | None = None
    evaluated_s: float | None = None  # when the evaluated set reached the expected count


@dataclass
class Phase:
    """What one phase measured."""

    symbols: int
    procs: dict[str, Proc] = field(default_factory=dict)
    window_s: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)  # wall-clock start, end
    closes: list[Close] = field(default_factory=list)  # in the window
    startup_close: Close | None = None
    lag: dict[tuple[str, str], int] = field(default_factory=dict)  # max lag + pending
    lag_unknown: dict[tuple[str, str], int] = field(default_factory=dict)  # samples, lag nil
    per_scan: dict[str, int] = field(default_factory=dict)  # most entries in one scan
    close_to_publish: list[float] = field(default_factory=list)
    scan_gaps: list[float] = field(default_factory=list)
    log_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # WARNING, ERROR+
    log_samples: list[str] = field(default_factory=list)
    failure: str | None = None


class Stack:
    """Redis, the simulator and the four services of one phase; stops them all on exit."""

    def __init__(self, tmp: Path, args: Args, top_n: int) -> None:
        self.tmp, self.args, self.top_n = tmp, args, top_n
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedRedis(tmp / "redis", free_port())
        self.sim_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.out").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches this script only: it stops them
            )  # fmt: skip

    def start(self) -> None:
        self.server.start()
        a = self.args
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TB_")}
        env |= {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self._spawn(
            "exchange_sim",
            [
                "-m", "services.exchange_sim", "--port", str(self.sim_port),
                "--symbols", str(a.listed), "--timeframe", a.timeframe, "--speed", f"{a.speed:g}",
                "--api-key", SIM_API_KEY, "--api-secret", SIM_API_SECRET,
                "--log-level", "WARNING",
            ],
            env,
        )  # fmt: skip
        env |= {
            "TB_REDIS_URL": self.server.url,
            "TB_EXCHANGE": "sim",
            "TB_SIM_PORT": str(self.sim_port),
            "TB_API_KEY": SIM_API_KEY,
            "TB_API_SECRET": SIM_API_SECRET,
            "TB_TOP_N": str(self.top_n),
            "TB_TIMEFRAME": a.timeframe,
            "TB_SCAN_INTERVAL": f"{a.scan:g}",
            "TB_METRICS_PORT": "0",
            "TB_LOG_DIR": str(self.logs),
            "TB_DATA_DIR": str(self.tmp / "data"),
        }
        deadline = time.monotonic() + 30
        while self.sim_time() is None:  # polling: the simulator answers once its market is built
            if time.monotonic() > deadline or self.procs["exchange_sim"].poll() is not None:
                raise RuntimeError("the simulator did not start\n" + self.log_tail("exchange_sim"))
            time.sleep(0.05)
        names = ["market_data", *(f"signals-{i}" for i in range(1, a.workers + 1))]
        for name in [*names, "executor", "state"]:
            self._spawn(name, ["-m", f"services.{name.split('-')[0]}"], env)

    def sim_time(self) -> int | None:
        """Return the simulator's clock (exchange ms), None when it does not answer."""
        url = f"http://127.0.0.1:{self.sim_port}/fapi/v1/time"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return int(json.loads(r.read())["serverTime"])
        except (OSError, ValueError, KeyError):
            return None

    def clock_map(self) -> tuple[float, int]:
        """Return (wall s, simulator ms) read together: the quickest of five answers."""
        best: tuple[float, float, int] | None = None
        for _ in range(5):
            t0 = time.time()
            ms = self.sim_time()
            t1 = time.time()
            if ms is not None and (best is None or t1 - t0 < best[0]):
                best = (t1 - t0, (t0 + t1) / 2, ms)
        if best is None:
            raise RuntimeError("the simulator does not answer")
        return best[1], best[2]

    def stop(self) -> None:
        """Stop the services, then the simulator (SIGTERM, SIGKILL after 10 s), then Redis."""
        order = [n for n in self.procs if n != "exchange_sim"] + ["exchange_sim"]
        for batch in (order[:-1], order[-1:]):
            live = [self.procs[n] for n in batch if n in self.procs]
            for p in live:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in live:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.server.stop()

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name}\n" + "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Args:
    symbols: int
    listed: int
    closes: int
    baseline_symbols: int
    baseline_closes: int
    timeframe: str
    scan: float
    speed: float
    workers: int


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit (and Ctrl-C into KeyboardInterrupt) while measuring, so
    ``finally`` stops every process."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited off
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def id_seconds(entry_id: bytes) -> float:
    return int(entry_id.split(b"-", 1)[0]) / 1000


class Watcher:
    """Polls Redis and /proc during a phase."""

    def __init__(self, client: redis.Redis, phase: Phase, tf_ms: int) -> None:
        self.r, self.phase, self.tf_ms = client, phase, tf_ms
        self.last_id = b"0-0"
        self.seen: dict[int, Close] = {}

    def poll_closes(self) -> None:
        """Read new md.candles entries; check every close not yet all evaluated."""
        while True:
            reply: Any = self.r.xread({keys.STREAM_CANDLES: self.last_id}, count=5000)
            if not reply:
                break
            for entry_id, fields in reply[0][1]:
                self.last_id = entry_id
                try:
                    candle = decode(fields[FIELD.encode()], Candle)
                except (SchemaError, KeyError):
                    continue
                c_ms = candle.open_time + self.tf_ms
                close = self.seen.setdefault(c_ms, Close(c_ms, id_seconds(entry_id)))
                close.candles += 1
        waiting = [c for c in self.seen.values() if c.evaluated_s is None]
        if not waiting:
            return
        pipe = self.r.pipeline(transaction=False)
        for c in waiting:
            pipe.get(keys.close_expected_key(c.close_ms))
            pipe.scard(keys.close_evaluated_key(c.close_ms))
        replies: list[Any] = pipe.execute()
        now = time.time()
        for k, c in enumerate(waiting):
            expected, evaluated = replies[2 * k], int(replies[2 * k + 1])
            if expected is not None:
                c.expected = int(expected)
                if evaluated >= c.expected:
                    c.evaluated_s = now

    def sample_groups(self) -> None:
        for stream, group in GROUPS:
            try:
                infos: Any = self.r.xinfo_groups(stream)
            except redis.ResponseError:  # the stream does not exist yet
                continue
            for g in infos:
                name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                if name != group:
                    continue
                lag = g.get("lag")
                if lag is None:
                    unknown = self.phase.lag_unknown
                    unknown[(stream, group)] = unknown.get((stream, group), 0) + 1
                behind = int(lag or 0) + int(g["pending"])
                prev = self.phase.lag.get((stream, group), 0)
                self.phase.lag[(stream, group)] = max(prev, behind)

    def sample_procs(self) -> str | None:
        """Read every process; return the name of a service that is gone, if any."""
        for p in self.phase.procs.values():
            if not p.read() and p.name not in INFRA:
                return p.name
        return None


def batches(times_ms: list[int], scan_s: float) -> list[tuple[int, int]]:
    """Return (first id time, entries) of each batch: entries less than a quarter scan apart
    (one scan's ticks, or one close's candles, are written in one pipeline)."""
    out: list[tuple[int, int]] = []
    prev = 0
    for t in times_ms:
        if not out or t - prev > scan_s * 250:
            out.append((t, 0))
        out[-1] = (out[-1][0], out[-1][1] + 1)
        prev = t
    return out


def stream_ids_ms(client: redis.Redis, stream: str, start_s: float, end_s: float) -> list[int]:
    """Return the id times (ms) of a stream's entries within [start, end], oldest first."""
    out: list[int] = []
    lo: bytes | str = str(int(start_s * 1000))
    end = str(int(end_s * 1000))
    while True:
        batch: Any = client.xrange(stream, lo, end, count=10_000)
        if not batch:
            return out
        out += [int(i.split(b"-", 1)[0]) for i, _ in batch]
        lo = b"(" + batch[-1][0]


def count_logs(stack: Stack, phase: Phase) -> None:
    for path in sorted(stack.logs.glob("*.out")):
        warnings = errors = 0
        for line in path.read_text(errors="replace").splitlines():
            if " WARNING " in line:
                warnings += 1
            elif " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                errors += 1
                if len(phase.log_samples) < 6:
                    phase.log_samples.append(f"{path.stem}: {line[:200]}")
        phase.log_counts[path.stem] = (warnings, errors)


def run_phase(args: Args, top_n: int, closes: int, keep: Path | None) -> Phase:
    """Run one stack until ``closes`` closes after the first are evaluated; return figures."""
    phase = Phase(top_n)
    tf_ms = TIMEFRAME_MS[args.timeframe]
    period_s = tf_ms / 1000 / args.speed
    with tempfile.TemporaryDirectory(prefix="tb-scale-") as tmp:
        stack = Stack(Path(tmp), args, top_n)
        client: redis.Redis | None = None
        try:
            stack.start()
            assert stack.server.proc is not None
            for name, popen in stack.procs.items():
                phase.procs[name] = Proc(name, popen, popen.pid)
            phase.procs["redis"] = Proc("redis", None, stack.server.proc.pid)
            wall0, sim0 = stack.clock_map()
            client = redis.Redis.from_url(stack.server.url, socket_timeout=5)
            measure(client, stack, phase, closes, tf_ms, period_s)
            end_s = phase.window[1]
            start_s = phase.window[0]
            for stream, _ in GROUPS:
                found = batches(stream_ids_ms(client, stream, start_s, end_s), args.scan)
                phase.per_scan[stream] = max((n for _, n in found), default=0)
                if stream == keys.STREAM_TICKS:
                    starts = [t for t, _ in found]
                    phase.scan_gaps = [(b - a) / 1000 for a, b in itertools.pairwise(starts)]
            for c in phase.closes:
                close_wall = wall0 + (c.close_ms - sim0) / 1000 / args.speed
                phase.close_to_publish.append(c.published_s - close_wall)
        finally:
            if client is not None:
                client.close()
            for p in phase.procs.values():  # the peaks up to the end
                p.read()
            stack.stop()
            count_logs(stack, phase)
            if keep is not None:
                dest = keep / f"{top_n}-symbols"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(stack.logs, dest)
    return phase


def measure(
    client: redis.Redis, stack: Stack, phase: Phase, closes: int, tf_ms: int, period_s: float
) -> None:
    """Poll until the first close is evaluated (start-up), then ``closes`` more."""
    watcher = Watcher(client, phase, tf_ms)
    deadline = time.monotonic() + STARTUP_S
    next_sample = time.monotonic()
    first: Close | None = None
    started = 0.0
    while True:
        now = time.monotonic()
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            watcher.poll_closes()
        done = sorted(
            (c for c in watcher.seen.values() if c.evaluated_s is not None),
            key=lambda c: c.close_ms,
        )
        if first is None and done:
            first, started = done[0], time.monotonic()
            phase.startup_close = first
            for p in phase.procs.values():
                p.read()
                p.cpu0, p.hwm0_kb = p.cpu, p.hwm_kb
            phase.window = (time.time(), 0.0)
            deadline = now + (closes + 1) * period_s + 30
        if now >= next_sample:
            next_sample += SAMPLE_S
            gone = watcher.sample_procs()
            if gone is not None:
                phase.failure = f"{gone} exited\n" + stack.log_tail(gone)
                return
            if first is not None:
                watcher.sample_groups()
        later = [c for c in done if first is not None and c.close_ms > first.close_ms]
        if len(later) >= closes:
            break
        if now > deadline:
            what = "the first close evaluated" if first is None else f"{closes} closes evaluated"
            tails = "\n".join(stack.log_tail(n, 5) for n in stack.procs)
            phase.failure = f"timed out waiting for {what}\n{tails}"
            break
        time.sleep(POLL_S)
    for p in phase.procs.values():
        p.read()
    phase.window_s = time.monotonic() - started
    phase.window = (phase.window[0], time.time())
    assert first is not None or phase.failure is not None
    phase.closes = sorted(
        (c for c in watcher.seen.values() if first is not None and c.close_ms > first.close_ms),
        key=lambda c: c.close_ms,
    )


def mb(kb: int) -> float:
    return kb / 1024


def fmt_times(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"max {max(values):5.2f} s  p50 {statistics.median(values):5.2f} s"


def import_floor(module: str) -> int:
    """Return the peak RSS (kB) of a bare python that imports ``module`` and does nothing."""
    code = (
        f"import {module}, re; "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def report(args: Args, base: Phase, big: Phase, floors: dict[str, int]) -> list[str]:
    """Print the figures; return the targets missed (with by how much)."""
    missed: list[str] = []
    nb, ns = f"{base.symbols} sym", f"{big.symbols} sym"
    print(f"  window: {nb} {base.window_s:5.1f} s ({len(base.closes)} closes), "
          f"{ns} {big.window_s:5.1f} s ({len(big.closes)} closes)")  # fmt: skip
    print(f"  {'':<13} {ns + ':':<38}| {nb + ':':<27}|")
    print(f"  {'process':<13} {'CPU s':>6} {'CPU %':>6} {'peak RSS':>9} {'(when)':>8}"
          f" {'end RSS':>7} | {'CPU s':>6} {'CPU %':>6} {'peak RSS':>9} | {'RSS x':>5}"
          f" | {'imports':>7}")  # fmt: skip
    for name, p in big.procs.items():
        b = base.procs.get(name)
        cpu = p.cpu - (p.cpu0 or 0.0)
        pct = 100 * cpu / big.window_s if big.window_s else 0.0
        when = "start-up" if p.hwm_kb == p.hwm0_kb else "window"
        row = (f"  {name:<13} {cpu:6.2f} {pct:6.1f} {mb(p.hwm_kb):6.1f} MB {when:>8}"
               f" {mb(p.rss_kb):4.0f} MB")  # fmt: skip
        if b is not None:
            bcpu = b.cpu - (b.cpu0 or 0.0)
            bpct = 100 * bcpu / base.window_s if base.window_s else 0.0
            ratio = p.hwm_kb / b.hwm_kb if b.hwm_kb else 0.0
            row += f" | {bcpu:6.2f} {bpct:6.1f} {mb(b.hwm_kb):6.1f} MB | {ratio:4.2f}x"
        floor = floors.get(name.split("-")[0])
        row += f" | {mb(floor):4.0f} MB" if floor else " |       -"
        if name in INFRA:
            row += "  (not a service)"
        elif mb(p.hwm_kb) >= TARGET_RSS_MB:
            row += f"  OVER {TARGET_RSS_MB:.0f} MB"
            missed.append(
                f"{name} peak RSS {mb(p.hwm_kb):.0f} MB is {mb(p.hwm_kb) - TARGET_RSS_MB:.0f} MB "
                f"({mb(p.hwm_kb) / TARGET_RSS_MB:.2f}x) over {TARGET_RSS_MB:.0f} MB"
            )
        print(row)
    print(
        "  (peak RSS = VmHWM over the whole life, 'when' it was reached; imports = peak RSS"
        " of a bare python importing the service's module, no work; CPU over the window)"
    )
    print("  max lag + pending per group over samples, bound: one scan's entries of the stream")
    for stream, group in GROUPS:
        key = (stream, group)
        lag, bound = big.lag.get(key, 0), big.per_scan.get(stream, 0)
        blag, bbound = base.lag.get(key, 0), base.per_scan.get(stream, 0)
        unknown = big.lag_unknown.get(key, 0)
        note = f"  (lag unknown in {unknown} samples)" if unknown else ""
        print(f"    {short(stream) + '/' + group:<22} {ns}: {lag:6,} (bound {bound:6,})"
              f"   {nb}: {blag:4,} (bound {bbound:4,}){note}")  # fmt: skip
        if lag > bound:
            missed.append(
                f"{short(stream)}/{group} lag + pending reached {lag:,}, {lag - bound:,} past "
                f"one scan's {bound:,} ({lag / max(bound, 1):.1f}x)"
            )
    counts = [c.candles for c in big.closes]
    expected = [c.expected for c in big.closes]
    print(f"  closes after start-up: {ns} {len(big.closes)}, candles per close {counts}"
          f" (expected keys {expected});  {nb} {len(base.closes)},"
          f" candles {[c.candles for c in base.closes]}")  # fmt: skip
    if big.startup_close is not None:
        print(f"  start-up close (left out): {big.startup_close.candles} candles")
    bad = [c for c in big.closes if c.candles != big.symbols or c.expected != c.candles]
    if bad:
        missed.append(
            f"{len(bad)} closes without {big.symbols} candles "
            f"({', '.join(f'{c.candles} published / {c.expected} expected' for c in bad[:3])})"
        )
    if len(big.closes) < args.closes:
        missed.append(f"only {len(big.closes)} of {args.closes} closes evaluated")
    evals = [c.evaluated_s - c.published_s for c in big.closes if c.evaluated_s is not None]
    bevals = [c.evaluated_s - c.published_s for c in base.closes if c.evaluated_s is not None]
    print(f"  publish -> all evaluated  {ns}: {fmt_times(evals)}   {nb}: {fmt_times(bevals)}"
          f"   (bound {args.scan:g} s; polled every {POLL_S:g} s)")  # fmt: skip
    if evals and max(evals) >= args.scan:
        missed.append(
            f"a close took {max(evals):.2f} s from publication to all evaluated, "
            f"{max(evals) - args.scan:.2f} s past the {args.scan:g} s scan "
            f"({max(evals) / args.scan:.1f}x)"
        )
    print(f"  info: close -> published  {ns}: {fmt_times(big.close_to_publish)}   "
          f"{nb}: {fmt_times(base.close_to_publish)}   (next scan + klines fetch)")  # fmt: skip
    print(f"  info: market_data scan period  {ns}: {fmt_times(big.scan_gaps)}   "
          f"{nb}: {fmt_times(base.scan_gaps)}   (scan {args.scan:g} s)")  # fmt: skip
    for phase, label in ((base, nb), (big, ns)):
        noisy = {n: we for n, we in phase.log_counts.items() if any(we)}
        shown = ", ".join(f"{n} {w}W/{e}E" for n, (w, e) in noisy.items()) or "none"
        print(f"  log warnings/errors {label}: {shown}")
    for line in big.log_samples:
        print(f"    {line}")
    return missed


def main(
    symbols: Annotated[int, typer.Option(min=1, help="Universe size (TB_TOP_N).")] = 500,
    closes: Annotated[int, typer.Option(min=1, help="Closes measured after start-up.")] = 5,
    baseline_symbols: Annotated[int, typer.Option(min=1, help="Baseline universe.")] = 8,
    baseline_closes: Annotated[int, typer.Option(min=1, help="Baseline closes.")] = 2,
    timeframe: Annotated[str, typer.Option(help="Candle timeframe.")] = "1m",
    scan: Annotated[float, typer.Option(min=0.2, help="Scan interval, real seconds.")] = 1.0,
    speed: Annotated[float, typer.Option(min=1, help="Simulator clock x real time.")] = 6.0,
    workers: Annotated[int, typer.Option(min=1, help="Signals workers (up's default).")] = 2,
    logs: Annotated[Path | None, typer.Option(help="Keep the processes' logs here.")] = None,
) -> None:
    """Run the bot with a large universe and with a tiny one; compare CPU, RSS and lag."""
    if timeframe not in TIMEFRAME_MS:
        raise typer.BadParameter(f"one of {', '.join(TIMEFRAME_MS)}", param_hint="--timeframe")
    args = Args(symbols, max(symbols, baseline_symbols), closes, baseline_symbols,
                baseline_closes, timeframe, scan, speed, workers)  # fmt: skip
    period = TIMEFRAME_MS[timeframe] / 1000 / speed
    print(f"{symbols} symbols, {timeframe} candles, {scan:g} s scan, {workers} signals workers;"
          f" simulator ({args.listed} listed) at {speed:g}x: a close every {period:g} s;"
          f" baseline: the same with {baseline_symbols} symbols, run first")  # fmt: skip
    floors = {name: import_floor(f"services.{name}.service") for name in SERVICES}
    phases: list[Phase] = []
    with sigterm_as_exit():
        for top_n, n in ((baseline_symbols, baseline_closes), (symbols, closes)):
            phases.append(run_phase(args, top_n, n, logs))
            if phases[-1].failure is not None:
                print(f"  {top_n} symbols: FAILED: {phases[-1].failure}")
                raise typer.Exit(1)
    base, big = phases
    missed = report(args, base, big, floors)
    if missed:
        print("  target missed: " + "; ".join(missed) + " (docs/performance.md)")
        raise typer.Exit(1)
    print(f"  targets met (RSS < {TARGET_RSS_MB:.0f} MB per service, every close evaluated"
          f" within {scan:g} s, no lag past one scan)")  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
