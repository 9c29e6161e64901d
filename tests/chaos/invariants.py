"""The five invariants of a chaos run, checked against the simulator's ledger and Redis.

``collect`` reads one snapshot: the simulator's whole account (``GET /_sim/state``), the
book, every order intent, the streams and the candle-close counters. The ``check_*``
functions are pure over that snapshot and return an ``Invariant``: a verdict, a one-line
figure and the problems found (empty when it holds). ``stop_gaps`` measures, from the
ledger alone, how long each exchange position was open without a live stop of its own.
The meaning of each invariant is in the package docstring (``tests/chaos/__init__.py``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from services.exchange_sim.engine import SPAWNED_ID_PREFIX
from services.exchange_sim.market import exchange_symbol
from shared import keys
from shared.book import Account, BookPosition, ClosedTrade
from shared.schemas import (
    Candle,
    DlqEntry,
    EntrySignal,
    OrderIntent,
    SchemaError,
    decode,
)
from tests.fixtures.stack import Stack

# Streams and the one consumer group that reads each (every message must end acked there).
GROUPS = (
    (keys.STREAM_CANDLES, keys.GROUP_SIGNALS),
    (keys.STREAM_TICKS, keys.GROUP_STATE),
    (keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR),
    (keys.STREAM_EVENTS, keys.GROUP_STATE),
)
CLOSE_EXPECTED_PATTERN = keys.close_expected_key(0).replace(":0:", ":*:")
CLOSE_EVALUATED_PATTERN = keys.close_evaluated_key(0).replace(":0:", ":*:")
REL = 1e-9  # relative tolerance of money comparisons (floats through JSON and ccxt)


def close_enough(a: float, b: float, abs_tol: float = 1e-6) -> bool:
    """Return whether two amounts agree (money and prices, rounded on both sides)."""
    return math.isclose(a, b, rel_tol=REL, abs_tol=abs_tol)


@dataclass
class Injected:
    """A malformed message the harness published: where, its entry id, its payload."""

    stream: str
    entry_id: str
    payload: str


@dataclass
class Snapshot:
    """Everything the invariants look at, read at one moment (the market is still then)."""

    account: dict[str, Any]
    prices: dict[str, float]
    sim_now: int
    positions: dict[str, BookPosition]
    trades: list[ClosedTrade]
    book_account: Account | None
    intents: dict[str, OrderIntent]  # client order id -> intent
    signals: dict[str, EntrySignal]  # entry signal id -> signal
    settled: dict[str, str | None]  # entry signal id -> executor's outcome record
    expected: dict[int, int]  # close ms -> candles market_data published for it
    evaluated: dict[int, int]  # close ms -> symbols a signals worker evaluated
    candles: Counter[tuple[str, int]]  # (symbol, open ms) -> entries on md.candles
    groups: dict[str, dict[str, Any]]  # stream -> its group's XINFO GROUPS row
    stream_ends: dict[str, str]  # stream -> last generated entry id
    dlq: list[tuple[str, DlqEntry | None]]  # (DLQ entry id, entry; None if undecodable)
    injected: list[Injected]
    balance: float  # the account's starting wallet

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Return the exchange's orders, oldest first."""
        return sorted(self.account["orders"].values(), key=lambda o: o["order_id"])

    @property
    def algos(self) -> list[dict[str, Any]]:
        """Return the exchange's algo (stop) orders, oldest first."""
        return sorted(self.account["algo_orders"].values(), key=lambda a: a["algo_id"])


@dataclass
class Invariant:
    """One invariant's verdict, its figure and what broke it."""

    name: str
    ok: bool
    figure: str
    problems: list[str] = field(default_factory=list)
    asserted: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-able data (problems cut to the first 20)."""
        return {
            "name": self.name,
            "ok": self.ok,
            "asserted": self.asserted,
            "figure": self.figure,
            "problems": self.problems[:20],
            "problem_count": len(self.problems),
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scan_values(r: redis.Redis, pattern: str) -> dict[str, bytes]:
    names: list[Any] = list(r.scan_iter(match=pattern, count=1000))
    if not names:
        return {}
    values: list[Any] = r.mget(names)
    return {_text(n): v for n, v in zip(names, values, strict=True) if v is not None}


def collect(stack: Stack, injected: list[Injected], balance: float) -> Snapshot:
    """Read the snapshot the invariants check (simulator first, then Redis)."""
    state = stack.sim_get("/_sim/state")
    if state is None:
        raise OSError("the simulator does not answer /_sim/state")
    r = stack.redis
    intents = {
        k.removeprefix(keys.order_intent_key("")): decode(v, OrderIntent)
        for k, v in _scan_values(r, keys.order_intent_key("*")).items()
    }
    signals: dict[str, EntrySignal] = {}
    entries: Any = r.xrange(keys.STREAM_SIGNALS)
    for _, fields in entries:
        try:
            msg = decode(fields.get(b"d", b""))
        except SchemaError:
            continue  # one of the malformed messages
        if isinstance(msg, EntrySignal):
            signals[msg.id] = msg
    done: list[Any] = (
        r.mget([keys.signal_done_key(s) for s in signals]) if signals else []
    )  # fmt: skip
    settled = {s: None if v is None else _text(v) for s, v in zip(signals, done, strict=True)}
    raw_expected = _scan_values(r, CLOSE_EXPECTED_PATTERN)
    expected = {int(k.split(":")[2]): int(v) for k, v in raw_expected.items()}
    evaluated: dict[int, int] = {}
    for name in r.scan_iter(match=CLOSE_EVALUATED_PATTERN, count=1000):
        n: Any = r.scard(name)
        evaluated[int(_text(name).split(":")[2])] = int(n)
    candles: Counter[tuple[str, int]] = Counter()
    raw_candles: Any = r.xrange(keys.STREAM_CANDLES)
    for _, fields in raw_candles:
        try:
            c = decode(fields.get(b"d", b""), Candle)
        except SchemaError:
            continue
        candles[(c.symbol, c.open_time)] += 1
    groups: dict[str, dict[str, Any]] = {}
    ends: dict[str, str] = {}
    for stream, group in GROUPS:
        rows: Any = r.xinfo_groups(stream)
        for row in rows:
            if _text(row["name"]) == group:
                groups[stream] = row
        info: Any = r.xinfo_stream(stream)
        ends[stream] = _text(info["last-generated-id"])
    dlq: list[tuple[str, DlqEntry | None]] = []
    raw_dlq: Any = r.xrange(keys.STREAM_DLQ)
    for entry_id, fields in raw_dlq:
        try:
            dlq.append((_text(entry_id), decode(fields.get(b"d", b""), DlqEntry)))
        except SchemaError:
            dlq.append((_text(entry_id), None))
    raw_account: Any = r.get(keys.BOOK_ACCOUNT)
    return Snapshot(
        account=dict(state["account"]),
        prices={k: float(v) for k, v in state["prices"].items()},
        sim_now=int(state["now"]),
        positions=stack.positions(),
        trades=stack.trades(),
        book_account=None if raw_account is None else Account.load(raw_account),
        intents=intents,
        signals=signals,
        settled=settled,
        expected=expected,
        evaluated=evaluated,
        candles=candles,
        groups=groups,
        stream_ends=ends,
        dlq=dlq,
        injected=list(injected),
        balance=balance,
    )


# --- the exchange's position episodes, from its fills -------------------------------------


@dataclass
class Episode:
    """One exchange position from the fill that opened it to the fill that made it flat."""

    symbol: str
    side: str  # long / short
    fills: list[dict[str, Any]]
    closed: bool = False

    @property
    def open_ms(self) -> int:
        """Return the exchange time of the opening fill."""
        return int(self.fills[0]["time"])

    @property
    def close_ms(self) -> int | None:
        """Return the exchange time of the fill that closed it (None while open)."""
        return int(self.fills[-1]["time"]) if self.closed else None


def episodes(account: dict[str, Any]) -> tuple[list[Episode], list[str]]:
    """Return the account's positions, opening to flat, from its fills; and any flips found."""
    found: list[Episode] = []
    flips: list[str] = []
    amount: dict[str, float] = defaultdict(float)
    current: dict[str, Episode] = {}
    for t in sorted(account["trades"], key=lambda t: t["trade_id"]):
        sym = t["symbol"]
        signed = t["qty"] if t["side"] == "BUY" else -t["qty"]
        before = amount[sym]
        after = before + signed
        if abs(after) < 1e-9:
            after = 0.0
        if before == 0.0:
            current[sym] = Episode(sym, "long" if signed > 0 else "short", [t])
            found.append(current[sym])
        else:
            current[sym].fills.append(t)
            if after != 0.0 and (after > 0) != (before > 0):
                flips.append(f"{sym}: fill {t['trade_id']} flipped {before:g} to {after:g}")
        if after == 0.0 and sym in current:
            current.pop(sym).closed = True
        amount[sym] = after
    return found, flips


def _order_of(snap: Snapshot) -> dict[int, dict[str, Any]]:
    return {int(o["order_id"]): o for o in snap.account["orders"].values()}


def _position_of_episode(snap: Snapshot, ep: Episode) -> str | None:
    """Return the position id (entry signal id) whose entry order opened an episode."""
    order = _order_of(snap).get(int(ep.fills[0]["order_id"]))
    intent = None if order is None else snap.intents.get(order["client_order_id"])
    return None if intent is None or intent.purpose != "entry" else intent.signal_id


# --- 1. no duplicate orders ------------------------------------------------------------------


def check_orders(snap: Snapshot) -> Invariant:
    """Every exchange order maps to one intent; no client id twice; one entry per signal."""
    problems: list[str] = []
    orders, algos = snap.orders, snap.algos
    plain = [o for o in orders if not o["client_order_id"].startswith(SPAWNED_ID_PREFIX)]
    spawned = [o for o in orders if o["client_order_id"].startswith(SPAWNED_ID_PREFIX)]
    for what, ids in (
        ("client order id", [o["client_order_id"] for o in plain]),
        ("client algo id", [a["client_algo_id"] for a in algos]),
    ):
        problems += [f"{what} {c} used {n} times" for c, n in Counter(ids).items() if n > 1]
    purposes: Counter[str] = Counter()
    entries_of: dict[str, list[int]] = defaultdict(list)
    per_candle: dict[tuple[str, str], list[str]] = defaultdict(list)
    for o in plain:
        intent = snap.intents.get(o["client_order_id"])
        if intent is None:
            problems.append(f"order {o['order_id']} ({o['client_order_id']}) has no intent")
            continue
        purposes[intent.purpose] += 1
        if (
            exchange_symbol(intent.symbol) != o["symbol"]
            or intent.side.upper() != o["side"]
            or intent.purpose == "stop"
            or (intent.purpose == "exit") != bool(o["reduce_only"])
        ):
            problems.append(f"order {o['order_id']} does not match its intent {intent}")
        if intent.purpose == "entry":
            entries_of[intent.signal_id].append(o["order_id"])
            symbol, _, candle, _ = intent.signal_id.split("|")
            per_candle[(symbol, candle)].append(intent.signal_id)
    for a in algos:
        intent = snap.intents.get(a["client_algo_id"])
        if intent is None or intent.purpose != "stop" or intent.stop_price is None:
            problems.append(f"stop {a['algo_id']} ({a['client_algo_id']}) has no stop intent")
        elif exchange_symbol(intent.symbol) != a["symbol"] or intent.side.upper() != a["side"]:
            problems.append(f"stop {a['algo_id']} does not match its intent {intent}")
    problems += [f"signal {s} gave {len(ids)} entry orders" for s, ids in entries_of.items()
                 if len(ids) > 1]  # fmt: skip
    problems += [f"candle {k} gave entries for {v}" for k, v in per_candle.items() if len(v) > 1]
    problems += [f"entry of {s} is not a signal on tb:signals" for s in entries_of
                 if s not in snap.signals]  # fmt: skip
    triggered = Counter(a["actual_order_id"] for a in algos if a["actual_order_id"])
    for o in spawned:
        if triggered[o["order_id"]] != 1:
            problems.append(f"order {o['order_id']} comes from {triggered[o['order_id']]} stops")
    figure = (
        f"{len(orders)} orders ({purposes['entry']} entries, {purposes['exit']} exits, "
        f"{len(spawned)} stop fills) and {len(algos)} stops, each one intent; "
        f"{len(entries_of)} signals entered once each, {len(problems)} problems"
    )
    return Invariant("1. no duplicate orders", not problems, figure, problems)


# --- 2. every position in the book with its one stop -----------------------------------------


def check_positions(snap: Snapshot) -> Invariant:
    """Exchange positions = book positions, each with exactly one live stop at the book's price."""
    problems: list[str] = []
    live = {s: p for s, p in snap.account["positions"].items() if p["amount"] != 0}
    book: dict[str, BookPosition] = {}
    for held in snap.positions.values():
        sym = exchange_symbol(held.symbol)
        if sym in book:
            problems.append(f"two book positions on {sym}")
        book[sym] = held
        if held.adopted:
            problems.append(f"{sym} had to be adopted by reconciliation ({held.position_id})")
    new_stops = [a for a in snap.algos if a["status"] == "NEW"]
    for sym, p in sorted(live.items()):
        side = "long" if p["amount"] > 0 else "short"
        pos = book.get(sym)
        if pos is None:
            problems.append(f"exchange position {sym} {p['amount']:g} is not in the book")
            continue
        if pos.side != side or not close_enough(pos.quantity, abs(p["amount"]), 1e-9):
            problems.append(f"{sym}: book {pos.side} {pos.quantity:g}, exchange {p['amount']:g}")
        closing = "SELL" if side == "long" else "BUY"
        mine = [
            a for a in new_stops
            if a["symbol"] == sym and a["side"] == closing
            and (a["reduce_only"] or a["close_position"])
        ]  # fmt: skip
        if len(mine) != 1:
            problems.append(f"{sym} {side} has {len(mine)} live stops")
            continue
        stop = mine[0]
        if stop["client_algo_id"] != pos.stop_client_order_id:
            problems.append(f"{sym}: live stop {stop['client_algo_id']} is not the book's "
                            f"{pos.stop_client_order_id}")  # fmt: skip
        if not close_enough(stop["trigger_price"], pos.stop_price, 1e-9):
            problems.append(f"{sym}: stop at {stop['trigger_price']:g}, book {pos.stop_price:g}")
        if not stop["close_position"] and stop["quantity"] < abs(p["amount"]) - 1e-9:
            problems.append(f"{sym}: stop covers {stop['quantity']:g} of {abs(p['amount']):g}")
    problems += [f"book position {s} ({pos.position_id}) is not on the exchange"
                 for s, pos in book.items() if s not in live]  # fmt: skip
    flat = sorted({a["symbol"] for a in new_stops} - set(live))
    problems += [f"live stop on {s}, which has no position" for s in flat]
    figure = (
        f"{len(live)} exchange positions, {len(book)} in the book, "
        f"{len(new_stops)} live stops; {len(problems)} problems"
    )
    return Invariant("2. every position booked with one stop", not problems, figure, problems)


# --- 3. every closed position a trade with the exchange's numbers; equity --------------------


def check_trades(snap: Snapshot) -> Invariant:
    """Each closed exchange position is one book trade with its fills' prices, fees and PnL
    (and the reason ``stop`` exactly when a stop's order closed it); equity and wallet agree."""
    eps, problems = episodes(snap.account)
    closed = [e for e in eps if e.closed]
    trades = {t.position_id: t for t in snap.trades}
    matched: set[str] = set()
    for ep in closed:
        pid = _position_of_episode(snap, ep)
        trade = None if pid is None else trades.get(pid)
        if pid is None or trade is None:
            problems.append(f"{ep.symbol} closed at {ep.close_ms} ({pid}) is no book trade")
            continue
        matched.add(pid)
        first, last = ep.fills[0], ep.fills[-1]
        fees = sum(f["commission"] for f in ep.fills)
        pnl = sum(f["realized_pnl"] for f in ep.fills) - fees
        want = {
            "side": (trade.side, ep.side),
            "quantity": (trade.quantity, first["qty"]),
            "entry_price": (trade.entry_price, first["price"]),
            "exit_price": (trade.exit_price, last["price"]),
            "fees": (trade.fees, fees),
            "pnl": (trade.pnl, pnl),
        }
        for name, (book_v, ex_v) in want.items():
            same = book_v == ex_v if name == "side" else close_enough(float(book_v), float(ex_v))
            if not same:
                problems.append(f"trade {pid}: {name} {book_v} in the book, {ex_v} on the exchange")
        if len(ep.fills) != 2:
            problems.append(f"{pid}: closed by {len(ep.fills) - 1} fills, not one")
        closer = _order_of(snap).get(int(last["order_id"]), {})
        by_stop = str(closer.get("client_order_id", "")).startswith(SPAWNED_ID_PREFIX)
        if by_stop != (trade.reason == "stop"):
            how = "a stop's fill" if by_stop else "a market order"
            problems.append(f"trade {pid}: reason {trade.reason}, closed by {how}")
    problems += [f"book trade {pid} closed no exchange position" for pid in trades
                 if pid not in matched]  # fmt: skip
    wallet = snap.account["wallet"]
    book_wallet = (
        snap.balance + sum(t.pnl for t in snap.trades)
        - sum(p.entry_fee for p in snap.positions.values())
    )  # fmt: skip
    if not close_enough(book_wallet, wallet, 1e-4):
        problems.append(f"wallet from the book's trades {book_wallet:.6f}, exchange {wallet:.6f}")
    equity = wallet + sum(
        p["amount"] * (snap.prices[s] - p["entry_price"])
        for s, p in snap.account["positions"].items()
        if p["amount"] != 0
    )
    book_equity = None if snap.book_account is None else snap.book_account.equity
    if book_equity is None or not close_enough(book_equity, equity, 1e-4):
        problems.append(f"book equity {book_equity}, exchange equity {equity:.6f}")
    figure = (
        f"{len(closed)} closed exchange positions = {len(matched)} of {len(trades)} book "
        f"trades; equity book {book_equity if book_equity is None else round(book_equity, 4)} "
        f"= exchange {equity:.4f}; {len(problems)} problems"
    )
    return Invariant("3. every closed position a trade, equity equal", not problems, figure,
                     problems)  # fmt: skip


# --- 4. no acked message lost; only the malformed ones dead-lettered --------------------------


def check_messages(snap: Snapshot, first_close: int, last_close: int) -> Invariant:
    """Every published candle evaluated once per close; groups drained; entries settled; DLQ."""
    problems: list[str] = []
    tf = 300_000
    closes = range(first_close, last_close + 1, tf)
    missing = [c for c in closes if snap.expected.get(c, 0) == 0]
    problems += [f"close {c}: no candle published" for c in missing]
    per_close: Counter[int] = Counter()
    for (symbol, open_ms), n in snap.candles.items():
        per_close[open_ms + tf] += 1
        if n > 1:
            problems.append(f"candle {symbol} {open_ms} published {n} times")
    for c, want in sorted(snap.expected.items()):
        got = snap.evaluated.get(c, 0)
        if got != want:
            problems.append(f"close {c}: {want} candles published, {got} evaluated")
        if per_close.get(c, 0) != want:
            problems.append(f"close {c}: count {want}, {per_close.get(c, 0)} on the stream")
    for stream, _ in GROUPS:
        g = snap.groups.get(stream)
        if g is None:
            problems.append(f"{stream}: consumer group missing")
            continue
        lag = g.get("lag")
        at_end = _text(g.get("last-delivered-id", "")) == snap.stream_ends.get(stream)
        if g.get("pending") or not (lag == 0 or at_end):
            problems.append(f"{stream}: pending {g.get('pending')}, lag {lag}")
    unsettled = [s for s, v in snap.settled.items() if v is None]
    problems += [f"entry signal {s} never settled by the executor" for s in unsettled]
    injected = Counter((i.stream, i.entry_id) for i in snap.injected)
    dead: Counter[tuple[str, str]] = Counter()
    for dlq_id, d in snap.dlq:
        if d is None:
            problems.append(f"DLQ entry {dlq_id} does not decode")
            continue
        dead[(d.stream, d.entry_id)] += 1
        if (d.stream, d.entry_id) not in injected:
            problems.append(f"DLQ holds {d.stream} {d.entry_id} ({d.reason}: {d.error})")
    problems += [f"malformed {s} {e} dead-lettered {dead[(s, e)]} times"
                 for s, e in injected if dead[(s, e)] != 1]  # fmt: skip
    outcomes = Counter((v or "unsettled").split(":")[0] for v in snap.settled.values())
    figure = (
        f"{sum(snap.expected.values())} candles over {len(snap.expected)} closes, all "
        f"evaluated: {not any('evaluated' in p for p in problems)}; "
        f"{len(closes) - len(missing)}/{len(closes)} closes of the run published; "
        f"{len(snap.signals)} entry signals settled ({dict(sorted(outcomes.items()))}); "
        f"DLQ {len(snap.dlq)} = {len(injected)} injected; {len(problems)} problems"
    )
    return Invariant("4. no acked message lost, DLQ only the malformed", not problems, figure,
                     problems)  # fmt: skip


# --- 5. the longest time a position was without its stop --------------------------------------


@dataclass
class Gap:
    """A stretch of time an exchange position had no live stop of its own."""

    symbol: str
    position_id: str | None
    start_ms: int  # exchange times
    end_ms: int
    wall_start_s: float  # its start in real (monotonic) seconds
    wall_s: float  # its length in real seconds
    closed_by: str  # what ended it: a stop placed, the position closed, the run ended


@dataclass(frozen=True)
class Disruption:
    """A stretch of real time during which the chaos slowed the stop path down.

    ``cause`` names what: the active executor killed or paused (up to a takeover: lease
    TTL, then the new holder's recvWindow fence), Redis or the simulator down, or a fault
    phase (a timed-out send is resent only after a recvWindow). ``start_s`` and ``end_s``
    are monotonic seconds; ``end_s`` already holds the time to recover from it.
    """

    cause: str
    start_s: float
    end_s: float


def _stop_end(a: dict[str, Any]) -> float:
    if a["status"] == "NEW":
        return math.inf
    if a["status"] == "FINISHED":
        return float(a["trigger_time"] or a["update_time"])
    return float(a["update_time"])


def _uncovered(start: int, end: int, spans: Iterable[tuple[float, float]]) -> list[tuple[int, int]]:
    """Return the parts of [start, end) no span covers."""
    out: list[tuple[int, int]] = []
    at = float(start)
    for lo, hi in sorted(spans):
        if hi <= at:
            continue
        if lo > at:
            out.append((int(at), int(min(lo, end))))
        at = max(at, hi)
        if at >= end:
            break
    if at < end:
        out.append((int(at), end))
    return [(a, b) for a, b in out if b > a]


def stop_gaps(snap: Snapshot, to_wall: Callable[[int], float]) -> list[Gap]:
    """Return, per exchange position, its longest stretch without a live stop of its own.

    A position's own stops are the algo orders whose intent names its position id; a stop
    is live from its creation until it is cancelled, expires or fires. ``to_wall`` maps an
    exchange time to real seconds (the simulator's clock runs sped up and restarts ahead).
    """
    eps, _ = episodes(snap.account)
    stops_of: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for a in snap.algos:
        intent = snap.intents.get(a["client_algo_id"])
        if intent is not None:
            stops_of[intent.signal_id].append((float(a["create_time"]), _stop_end(a)))
    gaps: list[Gap] = []
    for ep in eps:
        pid = _position_of_episode(snap, ep)
        end = ep.close_ms if ep.close_ms is not None else snap.sim_now
        holes = _uncovered(ep.open_ms, end, stops_of.get(pid or "", []))
        if not holes:
            gaps.append(Gap(ep.symbol, pid, ep.open_ms, ep.open_ms, to_wall(ep.open_ms), 0.0,
                            "stop placed"))  # fmt: skip
            continue
        worst = max(holes, key=lambda h: to_wall(h[1]) - to_wall(h[0]))
        how = "stop placed"
        if worst[1] == end:
            how = "position closed" if ep.closed else "run ended"
        gaps.append(Gap(ep.symbol, pid, worst[0], worst[1], to_wall(worst[0]),
                        to_wall(worst[1]) - to_wall(worst[0]), how))  # fmt: skip
    return gaps


def causes_of(gap: Gap, disruptions: Iterable[Disruption]) -> list[str]:
    """Return what disrupted the stop path while a gap lasted (empty: nothing did)."""
    lo, hi = gap.wall_start_s, gap.wall_start_s + gap.wall_s
    return sorted({d.cause for d in disruptions if d.start_s <= hi and d.end_s >= lo})


def check_stop_gaps(
    gaps: list[Gap], target_s: float, bound_s: float, disruptions: list[Disruption]
) -> Invariant:
    """Check the longest times without a stop: the target undisturbed, the bound in any case.

    A position whose gap no disruption overlapped must have had its stop within
    ``target_s`` (two scan intervals); any position within ``bound_s`` (a takeover plus
    one timed-out send and its recvWindow, plus time to recover).
    """
    name = "5. longest time without a stop"
    if not gaps:
        return Invariant(name, True, "no positions", [])
    causes = {id(g): causes_of(g, disruptions) for g in gaps}
    calm = [g for g in gaps if not causes[id(g)]]
    hit = [g for g in gaps if causes[id(g)]]
    worst = max(gaps, key=lambda g: g.wall_s)
    over = [g for g in gaps if g.wall_s >= target_s]
    by_cause = Counter(c for g in over for c in causes[id(g)] or ["none"])

    def longest(gs: list[Gap]) -> str:
        return f"{max((g.wall_s for g in gs), default=0.0):.3f} s"

    figure = (
        f"max {worst.wall_s:.3f} s ({worst.symbol}, until {worst.closed_by}); "
        f"{len(calm)} positions undisturbed: max {longest(calm)} (target < {target_s:g} s); "
        f"{len(hit)} next to a disruption: max {longest(hit)} (bound < {bound_s:g} s); "
        f"{len(over)} at or over the target, by cause {dict(sorted(by_cause.items()))}"
    )
    problems = [
        f"{g.symbol} {g.position_id}: {g.wall_s:.3f} s without a stop (exchange "
        f"{g.start_ms}..{g.end_ms}, until {g.closed_by}; "
        f"{'disrupted by ' + ', '.join(causes[id(g)]) if causes[id(g)] else 'undisturbed'})"
        for g in sorted(gaps, key=lambda g: -g.wall_s)
        if g.wall_s >= (bound_s if causes[id(g)] else target_s)
    ]
    return Invariant(name, not problems, figure, problems)
