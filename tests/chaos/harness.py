"""The chaos harness: the whole bot as processes, broken on a seeded schedule, then checked.

``Chaos(workdir, ChaosConfig(...)).run()`` starts a Redis-compatible server with AOF
(fsync always), the simulator on a synthetic market sped up ``speed`` times, two copies
of market_data, state and executor (the lease makes one of each active) and ``workers``
signals workers, all through ``tests.fixtures.stack.Stack``. For ``chaos_s`` seconds it
plays a schedule drawn up front from the seed (``schedule``): SIGKILLs of service
processes (mostly the active copy), SIGSTOP/SIGCONT pauses longer than the lease TTL
(services, Redis, the simulator), SIGKILLs of Redis restarted on the same AOF directory and
port, simulator restarts (SIGKILL or SIGTERM; it resumes its account from its state file),
fault phases set through the simulator's ``/_sim/faults`` and a few malformed stream
messages. A supervisor loop restarts every process that ends, as circus or compose would.

Then it stops breaking things, restarts the simulator once more at a tenth of real time
(the market then stands still for the settle), waits with a deadline until the bot is idle and
the invariants hold (``tests.chaos.invariants``), checks them once more, and returns the
summary (``Summary.as_dict``; ``format_summary`` prints it). The package docstring says how
to run it and what each invariant means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import keys
from shared.book import Account
from shared.exchange_ccxt import Tuning
from shared.redisconn import EmbeddedRedis, server_binary
from tests.chaos.invariants import (
    CLOSE_EVALUATED_PATTERN,
    CLOSE_EXPECTED_PATTERN,
    Disruption,
    Gap,
    Injected,
    Invariant,
    Snapshot,
    causes_of,
    check_messages,
    check_orders,
    check_positions,
    check_stop_gaps,
    check_trades,
    collect,
    episodes,
    stop_gaps,
)
from tests.e2e.scripted import check_account
from tests.fixtures.stack import SERVICES, Stack

TF_MS = 300_000  # the synthetic market's 5m candles
WARMUP = 300  # candles of history the simulator starts with
BALANCE = 10_000.0  # the simulator's starting wallet (its default)
SIM, REDIS = "exchange_sim", "redis"
SINGLE_ACTIVE = ("market_data", "state", "executor")
CLOCK_MARGIN_MS = 60_000  # a restarted simulator's clock starts this much past the estimate
# The settle's market: a tenth of real time, so its first price event (a quarter candle
# later) comes 750 s after the restart: the market stands still while the bot settles.
SETTLE_SPEED = 0.1
# After a disruption ends (a process or server back), the time to get going again: the
# supervisor's restart delay (up to 1 s), a Python process's start on two busy cores, a
# client's reconnect backoff. Part of each disruption's window (invariant 5).
RECOVER_S = 3.0

# Fault phases: kind rates for /_sim/faults; "latency" adds a delay to every request instead.
PHASES: dict[str, dict[str, float]] = {
    "calm": {},
    "mixed": dict(http5xx=0.01, http429=0.01, http418=0.005, timeout=0.005, reset=0.01, drop=0.01),
    "http5xx": {"http5xx": 0.2},
    "rate_limited": {"http429": 0.1, "http418": 0.02},
    "timeout": {"timeout": 0.03},
    "reset": {"reset": 0.1},
    "drop": {"drop": 0.1},
    "latency": {},
}
PHASE_WEIGHTS = {"calm": 3, "mixed": 3, "http5xx": 1, "rate_limited": 1, "timeout": 1,
                 "reset": 1, "drop": 2, "latency": 1}  # fmt: skip
PAUSE_WEIGHTS = {"executor": 3, "state": 3, "market_data": 3, "signals": 1, REDIS: 1, SIM: 1}

# Malformed messages: each fails to decode as any model, so its one consumer group must
# dead-letter it (reason "decode"). None as the field name: the entry has no "d" field.
MALFORMED: tuple[tuple[str | None, str], ...] = (
    ("d", "not json at all"),
    ("d", '{"kind":"candle","v":1,"symbol":"BTC/USDT:USDT"}'),
    ("d", '{"kind":"no_such_kind","v":1}'),
    ("d", '{"kind":"tick","v":99,"symbol":"BTC/USDT:USDT","price":1.0,"ts":1}'),
    (None, "an entry without the d field"),
    # Schema-valid, but dated 2100: the fifth message (i = 5), so it lands on md.ticks.
    ("d", '{"kind":"tick","v":1,"symbol":"BTC/USDT:USDT","price":1.0,"ts":4102444800000}'),
    ("d", '{"kind":"tick","v":1,"symbol":"BTC/USDT:USDT","price":-1.0,"ts":1}'),
)
MALFORMED_STREAMS = (keys.STREAM_CANDLES, keys.STREAM_TICKS, keys.STREAM_SIGNALS,
                     keys.STREAM_EVENTS)  # fmt: skip


# On top of the test timings of tests/fixtures/stack.py (lease 3 s, recvWindow 1 s, scans
# every 0.2 s, reconcile every 5 s): a looser entry rule on more symbols and more slots, so
# that a few minutes of a x300 market give dozens of positions to break things around.
CHAOS_ENV: tuple[tuple[str, str], ...] = (
    ("TB_TOP_N", "12"),
    ("TB_MAX_POSITIONS", "5"),
    ("TB_MIN_BODY_PCT", "0.004"),
    ("TB_LONG_VR", "1.2"),
    ("TB_SHORT_VR", "1.2"),
    ("TB_CHOP_THRESHOLD", "60"),
    # Four candles (4 s at x300) instead of one: entries outlive a takeover's fence wait.
    ("TB_SIGNAL_MAX_AGE_MS", "1200000"),
)


@dataclass(frozen=True)
class ChaosConfig:
    """How long and how hard to break the bot; every draw comes from ``seed``."""

    chaos_s: float = 180.0
    seed: int = 1
    speed: float = 300.0  # simulated seconds per real second
    workers: int = 2  # signals workers
    market_seed: int = 42
    kill_every_s: tuple[float, float] = (2.0, 6.0)
    active_share: float = 0.75  # share of single-active kills aimed at the active copy
    pause_every_s: tuple[float, float] = (8.0, 20.0)
    pause_ttls: tuple[float, float] = (1.3, 2.0)  # pause length, in lease TTLs
    redis_kill_every_s: tuple[float, float] = (25.0, 50.0)
    redis_down_s: tuple[float, float] = (0.3, 2.0)
    sim_restart_every_s: tuple[float, float] = (30.0, 60.0)
    fault_phase_s: tuple[float, float] = (4.0, 12.0)
    latency_ms: tuple[int, int] = (300, 1500)
    timeout_hold_s: float = 11.0  # past the client's 10 s HTTP timeout
    malformed: int = 8
    restart_delay_s: tuple[float, float] = (0.2, 1.0)
    start_timeout_s: float = 180.0
    settle_timeout_s: float = 300.0
    env: tuple[tuple[str, str], ...] = CHAOS_ENV  # TB_ settings for every service


@dataclass(frozen=True)
class Action:
    """One scheduled act of chaos, ``at`` seconds after the chaos began."""

    at: float
    kind: str  # kill, pause, redis_kill, sim_restart, faults, malformed
    target: str = ""  # service, phase or stream
    role: str = ""  # kill/pause: active, standby or a worker index; sim_restart: kill, term
    length: float = 0.0  # pause and outage length, phase length (s)
    seed: int = 0  # fault phase: draw seed; malformed: which payload
    latency_ms: int = 0


def _times(rng: random.Random, every: tuple[float, float], until: float) -> Iterator[float]:
    t = rng.uniform(*every)
    while t < until:
        yield t
        t += rng.uniform(*every)


def schedule(cfg: ChaosConfig, lease_ttl_s: float) -> list[Action]:
    """Return the whole chaos schedule of a run, drawn from the seed (one RNG per kind)."""

    def rng(kind: str) -> random.Random:
        return random.Random(f"{cfg.seed}/{kind}")

    out: list[Action] = []
    r = rng("kill")
    for t in _times(r, cfg.kill_every_s, cfg.chaos_s):
        service = r.choice(SERVICES)
        if service in SINGLE_ACTIVE:
            role = "active" if r.random() < cfg.active_share else "standby"
        else:
            role = str(r.randrange(cfg.workers))
        out.append(Action(t, "kill", service, role))
    r = rng("pause")
    targets, weights = zip(*PAUSE_WEIGHTS.items(), strict=True)
    for t in _times(r, cfg.pause_every_s, cfg.chaos_s):
        target = r.choices(targets, weights)[0]
        role = "active" if r.random() < 0.8 else "standby"
        if target == "signals":
            role = str(r.randrange(cfg.workers))
        out.append(Action(t, "pause", target, role, lease_ttl_s * r.uniform(*cfg.pause_ttls)))
    r = rng("redis")
    for t in _times(r, cfg.redis_kill_every_s, cfg.chaos_s):
        out.append(Action(t, "redis_kill", REDIS, length=r.uniform(*cfg.redis_down_s)))
    r = rng("sim")
    for t in _times(r, cfg.sim_restart_every_s, cfg.chaos_s):
        out.append(Action(t, "sim_restart", SIM, r.choice(("kill", "term"))))
    r = rng("faults")
    names, phase_weights = zip(*PHASE_WEIGHTS.items(), strict=True)
    t = 0.0
    while t < cfg.chaos_s:
        name = r.choices(names, phase_weights)[0]
        length = r.uniform(*cfg.fault_phase_s)
        latency = r.randint(*cfg.latency_ms) if name == "latency" else 0
        out.append(Action(t, "faults", name, length=length, seed=r.randrange(2**31),
                          latency_ms=latency))  # fmt: skip
        t += length
    r = rng("malformed")
    for i in range(cfg.malformed):
        at = r.uniform(0.05, 0.9) * cfg.chaos_s
        out.append(Action(at, "malformed", MALFORMED_STREAMS[i % len(MALFORMED_STREAMS)],
                          seed=i % len(MALFORMED)))  # fmt: skip
    return sorted(out, key=lambda a: (a.at, a.kind))


@dataclass
class Incarnation:
    """One simulator process: its clock at start, the monotonic time it answered, its speed."""

    clock_ms: int
    wall_s: float
    speed: float


@dataclass
class Summary:
    """What a run did and found; ``as_dict`` is the JSON the README quotes."""

    config: dict[str, Any]
    durations: dict[str, float] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    kills_of_active: Counter[str] = field(default_factory=Counter)
    pauses: Counter[str] = field(default_factory=Counter)
    redis_restarts: int = 0
    sim_restarts: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    fault_phases: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    exits: list[dict[str, Any]] = field(default_factory=list)
    takeovers: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    unknown_outcomes: int = 0  # order flows the executor left to its resume loop
    order_request_faults: int = 0  # faults the simulator injected on order requests
    trades: int = 0
    open_positions: int = 0
    settled: bool = False
    settle_note: str = ""
    account_check: str = ""
    invariants: list[Invariant] = field(default_factory=list)
    stop_gap: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        """Return whether every asserted invariant and the account check held."""
        return (
            self.settled
            and self.account_check == "PASS"
            and all(i.ok for i in self.invariants if i.asserted)
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-able data."""
        return {
            "ok": self.ok,
            "config": self.config,
            "durations_s": {k: round(v, 1) for k, v in self.durations.items()},
            "kills": dict(sorted(self.kills.items())),
            "kills_of_active_copy": dict(sorted(self.kills_of_active.items())),
            "pauses": dict(sorted(self.pauses.items())),
            "redis_restarts": self.redis_restarts,
            "sim_restarts": self.sim_restarts,
            "faults": dict(sorted(self.faults.items())),
            "fault_phases": dict(sorted(self.fault_phases.items())),
            "malformed_messages": self.malformed,
            "skipped_actions": dict(sorted(self.skipped.items())),
            "process_exits_not_caused_by_the_harness": self.exits,
            "takeovers": self.takeovers,
            "orders": self.orders,
            "unknown_outcomes": self.unknown_outcomes,
            "order_request_faults": self.order_request_faults,
            "trades": self.trades,
            "open_positions": self.open_positions,
            "settled": self.settled,
            "settle_note": self.settle_note,
            "account_check": self.account_check,
            "invariants": [i.as_dict() for i in self.invariants],
            "stop_gap": self.stop_gap,
            "workdir": self.workdir,
        }


def format_summary(s: dict[str, Any]) -> str:
    """Return the summary as the text ``python -m tests.chaos.run`` prints."""
    d = s["durations_s"]
    faults = s["faults"]
    lines = [
        f"chaos run: {'PASS' if s['ok'] else 'FAIL'} (seed {s['config']['seed']}, market x"
        f"{s['config']['speed']:g}, {s['config']['workers']} signals workers)",
        f"  run length      {d.get('run', 0):.0f} s: chaos {d.get('chaos', 0):.0f} s, "
        f"settle {d.get('settle', 0):.0f} s",
        f"  kills           {sum(s['kills'].values())}: {s['kills']} "
        f"(of the active copy: {s['kills_of_active_copy']})",
        f"  pauses          {sum(s['pauses'].values())}: {s['pauses']}",
        f"  Redis restarts  {s['redis_restarts']}    simulator restarts {s['sim_restarts']}",
        f"  faults          {sum(v for k, v in faults.items() if k != 'requests')} of "
        f"{faults.get('requests', 0)} requests: "
        f"{ {k: v for k, v in faults.items() if k != 'requests'} }",
        f"  fault phases    {s['fault_phases']}",
        f"  malformed msgs  {s['malformed_messages']}",
        f"  takeovers       {s['takeovers']}",
        f"  other exits     {len(s['process_exits_not_caused_by_the_harness'])}: "
        f"{Counter(str(e['code']) for e in s['process_exits_not_caused_by_the_harness'])}",
        f"  orders          {s['orders']}",
        f"  unknown outcome {s['unknown_outcomes']} order flows (of {s['order_request_faults']} "
        "faults on order requests)",
        f"  trades          {s['trades']} closed, {s['open_positions']} open at the end",
        f"  settled         {s['settled']} {s['settle_note']}",
        f"  account check   {s['account_check']} (tests/e2e/scripted.py check_account)",
    ]
    for inv in s["invariants"]:
        verdict = "PASS" if inv["ok"] else "FAIL"
        if not inv["asserted"]:
            verdict += " (reported, not asserted)"
        lines.append(f"  {inv['name']}: {verdict}")
        lines.append(f"      {inv['figure']}")
        lines += [f"      - {p}" for p in inv["problems"][:10]]
    if s["workdir"]:
        lines.append(f"  logs and data   {s['workdir']}")
    return "\n".join(lines)


class Chaos:
    """One chaos run over a private work directory (logs, AOF, the simulator's account)."""

    def __init__(
        self,
        workdir: Path,
        config: ChaosConfig,
        redis_server: EmbeddedRedis | None = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.cfg = config
        self.dir = workdir
        self.say = say
        self.own_redis = redis_server is None
        self.redis = redis_server or EmbeddedRedis(
            workdir / "redis", binary=server_binary(prefer_path=True), fsync="always"
        )
        self.stack = Stack(workdir, self.redis.url, **dict(config.env))
        self.ttl_s = int(self.stack.env["TB_LEASE_TTL_MS"]) / 1000
        self.scan_s = float(self.stack.env["TB_SCAN_INTERVAL"])
        tuning = Tuning()
        # A new executor's fence (and the wait before a timed-out send is resent):
        # recvWindow plus the clock slack; a takeover is a lease TTL and then that fence.
        fence_s = (int(self.stack.env["TB_RECV_WINDOW_MS"]) + tuning.settle_slack_ms) / 1000
        self.takeover_s = self.ttl_s + fence_s
        self.resend_s = tuning.timeout_ms / 1000 + fence_s  # a send that timed out, resent
        # How long a fault injected on an order request can hold up an order flow: a timeout
        # is waited out, then the order looked up after a recvWindow; a lost answer, reset
        # or 5xx is looked up within a recvWindow; a 429/418 is backed off (about 1 to 4 s).
        self.fault_cost_s = {"timeout": self.resend_s, "drop": fence_s, "reset": fence_s,
                             "http5xx": fence_s, "http429": 4.0, "http418": 4.0}  # fmt: skip
        self.fault_cursor = 0  # the running simulator's last fault event read
        self.disruptions: list[Disruption] = []
        self.down_since: dict[str, float] = {}  # Redis, the simulator: when they went down
        self.service_of: dict[str, str] = {}
        self.down: dict[str, float] = {}  # process -> monotonic time to start it again
        self.paused: dict[str, float] = {}  # process -> monotonic time to resume it
        self.ending: set[str] = set()  # processes ended by the harness (an expected exit)
        self.redis_due: float | None = None  # monotonic time to start Redis again
        self.incarnations: list[Incarnation] = []
        self.market_start_ms = 0
        self.phase = Action(0.0, "faults", "calm")
        self.counts_seen: Counter[str] = Counter()  # the running simulator's fault counters
        self.injected: list[Injected] = []
        self.rng = random.Random(f"{config.seed}/supervisor")
        self.summary = Summary(config={
            "seed": config.seed, "speed": config.speed, "workers": config.workers,
            "chaos_s": config.chaos_s, "market_seed": config.market_seed,
            "lease_ttl_s": self.ttl_s, "scan_interval_s": self.scan_s,
            "takeover_s": self.takeover_s, "timed_out_send_s": self.resend_s,
        }, workdir=str(workdir))  # fmt: skip
        self.journal = (workdir / "chaos.log").open("a")
        self.t0 = time.monotonic()
        self.first_close = 0
        self.settle_clock = 0
        self.snapshot: Snapshot | None = None  # the one the settle found consistent

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> Summary:
        """Start the bot, break it for ``chaos_s``, let it settle, check it; always clean up."""
        try:
            self.start()
            began = time.monotonic()
            self.inject()
            self.summary.durations["chaos"] = time.monotonic() - began
            began = time.monotonic()
            self.settle()
            self.summary.durations["settle"] = time.monotonic() - began
            self.check()
        finally:
            self.summary.durations["run"] = time.monotonic() - self.t0
            self.stop()
        return self.summary

    def disrupt(self, cause: str, start: float, end: float) -> None:
        """Record a disruption of the stop path, ``RECOVER_S`` added to its end."""
        self.disruptions.append(Disruption(cause, start, end + RECOVER_S))

    def note(self, what: str) -> None:
        """Record what the harness did (chaos.log in the work directory, and ``say``)."""
        line = f"{time.monotonic() - self.t0:8.2f} {what}"
        self.journal.write(line + "\n")
        self.journal.flush()
        self.say(line)

    def start(self) -> None:
        """Start Redis, the simulator and every service copy; wait until the bot trades data."""
        if self.own_redis:
            self.redis.start()
        now = int(time.time() * 1000)
        self.market_start_ms = now - now % TF_MS - WARMUP * TF_MS
        self.start_sim(self.market_start_ms + WARMUP * TF_MS, self.cfg.speed)
        for service in SERVICES:
            copies = self.cfg.workers if service == "signals" else 2
            for i in range(copies):
                name = service if i == 0 else f"{service}{i + 1}"
                self.service_of[name] = service
                self.stack.start(service, name)
        self.note("started: simulator, " + ", ".join(self.service_of))
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not start\n{self.stack.log_tails()}")
            time.sleep(0.2)
        expected: Any = self.stack.redis.keys(CLOSE_EXPECTED_PATTERN)
        self.first_close = min(int(k.decode().split(":")[2]) for k in expected)
        self.note("ready: one active copy each, candles published and evaluated")

    def ready(self) -> bool:
        """Return whether each single-active service is active and the pipeline has run."""
        try:
            for service in SINGLE_ACTIVE:
                if sorted(h.role for h in self.stack.heartbeats(service)) != ["active", "standby"]:
                    return False
            evaluated: Any = self.stack.redis.keys(CLOSE_EVALUATED_PATTERN)
            return bool(evaluated) and self.stack.redis.get(keys.STATE_TICK_MS) is not None
        except (redis.RedisError, ValueError):
            return False

    def stop(self) -> None:
        """Resume anything paused, stop every process and (if ours) Redis."""
        for name in list(self.paused):
            self.resume(name)
        if self.redis.proc is None:
            with contextlib.suppress(RuntimeError):
                self.redis.start()
        self.stack.stop_all()
        if self.own_redis:
            self.redis.stop()
        self.journal.close()

    # --- the simulator -----------------------------------------------------------------------

    def sim_clock(self) -> int:
        """Return the simulator's clock as the current incarnation's start and speed give it."""
        inc = self.incarnations[-1]
        return inc.clock_ms + int((time.monotonic() - inc.wall_s) * 1000 * inc.speed)

    def to_wall(self, exchange_ms: int) -> float:
        """Map an exchange time to monotonic seconds through the simulator's incarnations."""
        inc = self.incarnations[0]
        for candidate in self.incarnations:
            if candidate.clock_ms <= exchange_ms:
                inc = candidate
        return inc.wall_s + (exchange_ms - inc.clock_ms) / 1000 / inc.speed

    def start_sim(self, clock_ms: int, speed: float) -> None:
        """Start the simulator with its clock at ``clock_ms`` (a candle boundary)."""
        warmup = (clock_ms - self.market_start_ms) // TF_MS
        self.stack.start_sim(
            "--speed", f"{speed:g}", "--seed", str(self.cfg.market_seed),
            "--start-ms", str(self.market_start_ms), "--warmup", str(warmup),
        )  # fmt: skip
        self.incarnations.append(Incarnation(clock_ms, time.monotonic(), speed))
        self.fault_cursor = 0
        if SIM in self.down_since:
            self.disrupt("simulator down", self.down_since.pop(SIM), time.monotonic())
        self.counts_seen = Counter()
        self.apply_faults()

    def next_clock(self) -> int:
        """Return where a restarted simulator's clock starts: past the estimate, on a boundary."""
        est = self.sim_clock() + CLOCK_MARGIN_MS
        return -(-est // TF_MS) * TF_MS

    def sim_up(self) -> bool:
        """Return whether the simulator runs and is not paused."""
        return SIM not in self.down and SIM not in self.paused and self.stack.alive(SIM)

    def apply_faults(self) -> None:
        """Set the current fault phase on the simulator (when it is up)."""
        if not self.sim_up():
            return
        body = {
            "rates": PHASES[self.phase.target],
            "seed": self.phase.seed,
            "latency_ms": self.phase.latency_ms,
            "timeout_hold_s": self.cfg.timeout_hold_s,
        }
        with contextlib.suppress(OSError):
            self.stack.sim_post("/_sim/faults", body)

    def read_fault_counts(self) -> None:
        """Remember the running simulator's fault counters and the faults injected on order
        requests (both die with its process): each of those is a disruption of the stop path."""
        if not self.sim_up():
            return
        answer = self.stack.sim_get(f"/_sim/faults?events_after={self.fault_cursor}")
        if answer is not None:
            counts = Counter({k: int(v) for k, v in answer["counts"].items()})
            self.summary.faults.update(counts - self.counts_seen)
            self.counts_seen = counts
            for e in answer["events"]:
                self.fault_cursor = max(self.fault_cursor, int(e["n"]))
                if "order" in e["path"].lower():
                    at = self.to_wall(int(e["ms"]))
                    self.disrupt(f"{e['kind']} on an order request", at,
                                 at + self.fault_cost_s[e["kind"]])  # fmt: skip

    # --- Redis -------------------------------------------------------------------------------

    def redis_up(self) -> bool:
        """Return whether Redis runs and is not paused."""
        return self.redis.proc is not None and REDIS not in self.paused

    def start_redis(self) -> None:
        """Start Redis again on its AOF directory and port (retried next tick if it fails)."""
        try:
            self.redis.start()
        except RuntimeError as e:
            self.note(f"redis: start failed, retrying: {e}")
            self.redis_due = time.monotonic() + 0.5
            return
        self.redis_due = None
        self.disrupt("redis down", self.down_since.pop(REDIS, time.monotonic()), time.monotonic())
        self.summary.redis_restarts += 1
        self.note("redis: started again on the same AOF")

    # --- supervision ---------------------------------------------------------------------------

    def pid_of(self, name: str) -> int | None:
        """Return the pid of a process (Redis included), None when it is not running."""
        if name == REDIS:
            return None if self.redis.proc is None else self.redis.proc.pid
        proc = self.stack.procs.get(name)
        return None if proc is None or proc.poll() is not None else proc.pid

    def resume(self, name: str) -> None:
        """SIGCONT a paused process."""
        self.paused.pop(name, None)
        pid = self.pid_of(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.note(f"resume {name}")

    def tick(self) -> None:
        """Resume due pauses, start Redis when due, restart every process that has ended."""
        now = time.monotonic()
        for name, due in list(self.paused.items()):
            if now >= due:
                self.resume(name)
        if self.redis.proc is None and self.redis_due is not None and now >= self.redis_due:
            self.start_redis()
        for name, proc in list(self.stack.procs.items()):
            if name in self.down:
                continue
            code = proc.poll()
            if code is None:
                continue
            self.paused.pop(name, None)
            if name == SIM:
                self.down_since.setdefault(SIM, now)
            if name in self.ending:
                self.ending.discard(name)
            else:
                self.summary.exits.append({
                    "process": name, "code": code, "at_s": round(now - self.t0, 1)
                })  # fmt: skip
                self.note(f"{name} exited by itself with code {code}")
            self.down[name] = now + self.rng.uniform(*self.cfg.restart_delay_s)
        for name, due in list(self.down.items()):
            if now >= due:
                self.restart(name)

    def restart(self, name: str) -> None:
        """Start an ended process again under its name (the simulator where its clock was)."""
        if name == SIM:
            clock = self.next_clock()
            try:
                self.start_sim(clock, self.cfg.speed)
            except pytest.fail.Exception:
                self.note("simulator did not answer after its start; killing and retrying")
                self.ending.add(SIM)
                self.stack.kill(SIM)
                return
            self.down.pop(name)
            self.note(f"restart {SIM} at exchange time {clock}")
            return
        self.down.pop(name)
        self.stack.start(self.service_of[name], name)
        self.note(f"restart {name}")

    # --- the chaos -----------------------------------------------------------------------------

    def inject(self) -> None:
        """Play the schedule for ``chaos_s`` seconds, supervising between actions."""
        queue = schedule(self.cfg, self.ttl_s)
        self.note(f"chaos: {len(queue)} actions over {self.cfg.chaos_s:g} s")
        began = time.monotonic()
        last_counts = began
        while (now := time.monotonic() - began) < self.cfg.chaos_s:
            self.tick()
            if time.monotonic() - last_counts > 5:
                self.read_fault_counts()
                last_counts = time.monotonic()
            while queue and queue[0].at <= now:
                action = queue.pop(0)
                if not self.act(action) and action.at + 1 < self.cfg.chaos_s:
                    queue.append(dataclasses.replace(action, at=action.at + 1))
                    queue.sort(key=lambda a: a.at)
            time.sleep(0.05)  # the schedule's tick

    def act(self, a: Action) -> bool:
        """Do one action; return False to try it again a second later."""
        if a.kind == "faults":
            self.phase = a
            self.summary.fault_phases[a.target] += 1
            self.apply_faults()
            if a.latency_ms:  # every request slower: the whole phase (faults: their events)
                now = time.monotonic()
                self.disrupt("latency", now, now + a.length + a.latency_ms / 1000)
            self.note(f"faults: {a.target} {PHASES[a.target]} latency {a.latency_ms} ms")
            return True
        if a.kind == "malformed":
            return self.inject_malformed(a)
        if a.kind == "redis_kill":
            if self.redis.proc is None:
                self.summary.skipped["redis_kill"] += 1
                return True
            self.paused.pop(REDIS, None)
            self.redis.kill()
            self.down_since[REDIS] = time.monotonic()
            self.redis_due = time.monotonic() + a.length
            self.note(f"SIGKILL redis, down for {a.length:.1f} s")
            return True
        if a.kind == "sim_restart":
            if not self.sim_up():
                self.summary.skipped["sim_restart"] += 1
                return True
            self.read_fault_counts()
            self.ending.add(SIM)
            self.down_since[SIM] = time.monotonic()
            self.stack.kill(SIM, signal.SIGKILL if a.role == "kill" else signal.SIGTERM)
            self.summary.sim_restarts += 1
            self.note(f"{'SIGKILL' if a.role == 'kill' else 'SIGTERM'} {SIM} (restarted)")
            return True
        name = self.victim(a)
        if name is None:
            self.summary.skipped[a.kind] += 1
            return True
        if a.kind == "kill":
            active = self.is_active(name)
            self.ending.add(name)
            self.stack.kill(name)
            if a.target == "executor" and (active or not self.redis_up()):  # (can't tell)
                now = time.monotonic()
                self.disrupt("executor killed", now, now + self.takeover_s)
            self.summary.kills[a.target] += 1
            if active:
                self.summary.kills_of_active[a.target] += 1
            self.note(f"SIGKILL {name} ({'active' if active else a.role})")
        else:
            pid = self.pid_of(name)
            if pid is None:
                self.summary.skipped[a.kind] += 1
                return True
            executor = a.target == "executor" and (self.is_active(name) or not self.redis_up())
            os.kill(pid, signal.SIGSTOP)
            now = time.monotonic()
            self.paused[name] = now + a.length
            if name in (REDIS, SIM):
                self.disrupt(f"{'redis' if name == REDIS else 'simulator'} paused", now,
                             now + a.length)  # fmt: skip
            elif executor:
                self.disrupt("executor paused", now, now + max(a.length, self.takeover_s))
            self.summary.pauses[a.target] += 1
            self.note(f"SIGSTOP {name} ({a.role}) for {a.length:.1f} s")
        return True

    def is_active(self, name: str) -> bool:
        """Return whether a process is its service's active copy (by its heartbeat)."""
        pid = self.pid_of(name)
        if pid is None or not self.redis_up():
            return False
        try:
            return pid in self.stack.active_pids(self.service_of[name])
        except (redis.RedisError, ValueError):
            return False

    def victim(self, a: Action) -> str | None:
        """Return the process an action hits: the copy its role names, running and not paused."""
        if a.target in (REDIS, SIM):
            up = self.redis_up() if a.target == REDIS else self.sim_up()
            return a.target if up else None
        copies = [n for n, s in self.service_of.items() if s == a.target]
        running = [n for n in copies if n not in self.down and n not in self.paused
                   and self.pid_of(n) is not None]  # fmt: skip
        if not running:
            return None
        if a.target == "signals":
            name = copies[int(a.role) % len(copies)]
            return name if name in running else running[0]
        active = [n for n in running if self.is_active(n)]
        if a.role == "active":
            return active[0] if active else running[0]
        standby = [n for n in running if n not in active]
        return standby[0] if standby else running[0]

    def inject_malformed(self, a: Action) -> bool:
        """Publish one malformed message; False while Redis is unavailable."""
        if not self.redis_up():
            return False
        field_name, payload = MALFORMED[a.seed]
        fields: dict[Any, Any] = {field_name or "x": payload}
        try:
            entry_id: Any = self.stack.redis.xadd(a.target, fields)
        except redis.RedisError:
            return False
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        self.injected.append(Injected(a.target, text, payload))
        self.summary.malformed += 1
        self.note(f"malformed message {a.seed} on {a.target} as {text}")
        return True

    # --- settle and check ----------------------------------------------------------------------

    def settle(self) -> None:
        """Stop breaking things; still the market; wait until the bot is idle and consistent."""
        self.note("settle: resuming paused processes, faults off")
        for name in list(self.paused):
            self.resume(name)
        if self.redis.proc is None:
            self.redis_due = time.monotonic()
        self.phase = Action(0.0, "faults", "calm")
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while not self.sim_up() or self.redis.proc is None:
            self.down = dict.fromkeys(self.down, 0.0)
            self.tick()
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator or Redis did not come back for the settle")
            time.sleep(0.1)
        self.read_fault_counts()
        self.down_since[SIM] = time.monotonic()
        self.stack.kill(SIM, signal.SIGTERM)
        self.settle_clock = self.next_clock()
        self.start_sim(self.settle_clock, SETTLE_SPEED)
        self.note(f"settle: market still from exchange time {self.settle_clock}")
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        why = ""
        while time.monotonic() < deadline:
            self.down = dict.fromkeys(self.down, 0.0)
            self.tick()
            done, why = self.settled()
            if done:
                self.summary.settled = True
                self.note("settle: idle and consistent")
                return
            time.sleep(0.5)
        self.summary.settle_note = f"(not within {self.cfg.settle_timeout_s:g} s: {why})"
        self.note(f"settle: gave up: {why}")

    def settled(self) -> tuple[bool, str]:
        """Return whether the bot is idle at the still market and the invariants hold."""
        try:
            for name in self.stack.procs:
                if not self.stack.alive(name):
                    return False, f"{name} is not running"
            for service in SINGLE_ACTIVE:
                live = {self.pid_of(n) for n, s in self.service_of.items() if s == service}
                if len(self.stack.active_pids(service) & live) != 1:
                    return False, f"{service} has no single active copy"
            r = self.stack.redis
            for key in (keys.MD_CLOCK, keys.STATE_TICK_MS):
                raw: Any = r.get(key)
                if raw is None or int(raw) < self.settle_clock:
                    return False, f"{key} is behind the still market"
            if r.scard(keys.OPEN_INTENTS) or r.zcard(keys.ENTRY_BATCHES):
                return False, "orders or entry batches in flight"
            raw_account: Any = r.get(keys.BOOK_ACCOUNT)
            if raw_account is None or Account.load(raw_account).ts < self.settle_clock:
                return False, "the book's account is older than the still market"
            snap = collect(self.stack, self.injected, BALANCE)
            for inv in self.invariants(snap):
                if not inv.ok and inv.asserted:
                    return False, f"{inv.name}: {inv.problems[:3]}"
            self.drop_dead_signals(snap)
            check_account(self.stack)
            self.snapshot = snap
        except AssertionError as e:
            return False, f"check_account: {str(e).splitlines()[0]}"
        except (OSError, redis.RedisError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"
        return True, ""

    def drop_dead_signals(self, snap: Snapshot) -> None:
        """Delete the malformed messages on tb:signals once they are in the DLQ.

        check_account (tests/e2e/scripted.py) decodes every entry of tb:signals; the
        executor's group acked these when it dead-lettered them, so deleting them changes
        nothing for the bot.
        """
        dead = {(d.stream, d.entry_id) for _, d in snap.dlq if d is not None}
        ids = [i.entry_id for i in self.injected
               if i.stream == keys.STREAM_SIGNALS and (i.stream, i.entry_id) in dead]  # fmt: skip
        if ids:
            self.stack.redis.xdel(keys.STREAM_SIGNALS, *ids)

    def invariants(self, snap: Snapshot) -> list[Invariant]:
        """Return invariants 1-4 over a snapshot."""
        last_close = self.settle_clock - self.settle_clock % TF_MS
        return [
            check_orders(snap),
            check_positions(snap),
            check_trades(snap),
            check_messages(snap, self.first_close, last_close),
        ]

    def check(self) -> None:
        """Check every invariant on the settled bot and fill in the summary's figures."""
        s = self.summary
        self.read_fault_counts()
        snap = self.snapshot or collect(self.stack, self.injected, BALANCE)
        s.invariants = self.invariants(snap)
        target, bound = 2 * self.scan_s, self.takeover_s + self.resend_s + RECOVER_S
        gaps = stop_gaps(snap, self.to_wall)
        s.invariants.append(check_stop_gaps(gaps, target, bound, self.disruptions))
        s.stop_gap = self.stop_gap_figures(gaps, target, bound)
        try:
            self.drop_dead_signals(snap)
            check_account(self.stack)
            s.account_check = "PASS"
        except (AssertionError, ValueError, KeyError) as e:
            s.account_check = f"FAIL: {type(e).__name__}: {(str(e) or '?').splitlines()[0]}"
        eps, _ = episodes(snap.account)
        spawned = sum(o["client_order_id"].startswith("sim-algo-") for o in snap.orders)
        purposes = Counter(
            i.purpose for o in snap.orders if (i := snap.intents.get(o["client_order_id"]))
        )
        s.orders = {
            "total": len(snap.orders), "entries": purposes["entry"], "exits": purposes["exit"],
            "stop_fills": spawned, "stops_placed": len(snap.algos),
        }  # fmt: skip
        s.unknown_outcomes = sum(
            self.stack.log(n).count("outcome unknown")
            for n, service in self.service_of.items() if service == "executor"
        )  # fmt: skip
        s.order_request_faults = sum(
            d.cause.endswith("on an order request") for d in self.disruptions
        )
        s.trades = len(snap.trades)
        s.open_positions = sum(not e.closed for e in eps)
        s.takeovers = self.takeovers()

    def stop_gap_figures(self, gaps: list[Gap], target: float, bound: float) -> dict[str, Any]:
        """Return invariant 5's figures: undisturbed and disrupted gaps, the worst in detail."""
        causes = [causes_of(g, self.disruptions) for g in gaps]
        calm = [g.wall_s for g, c in zip(gaps, causes, strict=True) if not c]
        hit = [g.wall_s for g, c in zip(gaps, causes, strict=True) if c]
        worst = max(zip(gaps, causes, strict=True), key=lambda gc: gc[0].wall_s, default=None)
        return {
            "target_s": target, "bound_s": bound, "positions": len(gaps),
            "undisturbed": {"positions": len(calm), "max_s": round(max(calm, default=0), 3)},
            "disrupted": {"positions": len(hit), "max_s": round(max(hit, default=0), 3)},
            "over_target": sum(w >= target for w in calm + hit),
            "over_target_by_cause": dict(sorted(Counter(
                c for g, cs in zip(gaps, causes, strict=True) if g.wall_s >= target
                for c in cs or ["none"]
            ).items())),
            "disruptions": dict(sorted(Counter(d.cause for d in self.disruptions).items())),
            "worst": None if worst is None else {
                "symbol": worst[0].symbol, "position_id": worst[0].position_id,
                "wall_s": round(worst[0].wall_s, 3), "causes": worst[1],
                "exchange_ms": [worst[0].start_ms, worst[0].end_ms], "until": worst[0].closed_by,
                "run_s": round(worst[0].wall_start_s - self.t0, 1),
                "harness_nearby": self.nearby(worst[0].wall_start_s, worst[0].wall_s),
            },
        }  # fmt: skip

    def nearby(self, wall_s: float, length: float) -> list[str]:
        """Return the harness's journal lines from 5 s before a moment to its end."""
        lo, hi = wall_s - self.t0 - 5, wall_s - self.t0 + length + 1
        lines = (self.dir / "chaos.log").read_text().splitlines()
        return [ln.strip() for ln in lines if lo <= float(ln.split()[0]) <= hi][:20]

    def takeovers(self) -> dict[str, int]:
        """Return, per single-active service, how often a copy took the lease after the first."""
        out: dict[str, int] = {}
        for service in SINGLE_ACTIVE:
            names = [n for n, s in self.service_of.items() if s == service]
            acquired = sum(
                self.stack.log(n).count(f"{service}: lease acquired, active") for n in names
            )
            out[service] = max(acquired - 1, 0)
        return out
