"""A scripted replay market and the account checks shared by the restart, takeover and scale tests.

``write_market`` writes one ``BASE_QUOTE.csv`` per symbol for ``--replay --speed 0``: a quiet
uptrend (0.1 % bodies, flat volume: never an entry) in which chosen candles, counted from
the first one the simulator plays after its warm-up, have a scripted shape: an entry candle
(1 % body, volume x VR), a candle that arms the trail and retraces into a trail exit at its
close, or one that runs through the stop. Each shape's exit happens at one known price
event, so a stepped run is deterministic.

``check_account`` compares the simulator's account with the book and the signals stream:
one order per client id, at most one entry order per entry signal and per candle, every
order explained (an entry of a signal, an exit of a position, the order a stop of a
position triggered), every open exchange position protected by exactly one NEW stop (the
one the book names) and no NEW stop on a flat symbol, the book's open positions equal to
the exchange's, every closed trade equal to its fills.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from services.exchange_sim.market import exchange_symbol
from shared import keys
from shared.book import ClosedTrade
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id
from shared.schemas import EntrySignal, decode
from tests.fixtures.stack import Stack

TF_MS = 300_000
WARMUP = 100  # candles of history the simulator starts with (>= CANDLE_LIMIT)
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z: the replay's first candle
BASE_VOLUME = 1000.0
TAIL = 12  # quiet candles after the script, so the replay never ends under a test
MAX_STOP_SEQ = 8  # stop sequence numbers looked at for one position

# Shapes of a scripted candle, as multiples of its open (open = previous close).
# (close, high, low, volume multiple); green candles play open, low, high, close.
SHAPES: dict[str, tuple[float, float, float, float]] = {
    "quiet": (1.001, 1.001 * 1.0005, 0.9995, 1.0),
    "long": (1.01, 1.01 * 1.001, 0.999, 3.0),  # body 1 %, VR ~3: a long entry
    "short": (0.99, 1.001, 0.99 * 0.999, 3.0),  # a short entry
    "trail_long": (1.015, 1.025, 0.999, 1.0),  # arms the trail at 1.025, exits at 1.015
    "trail_short": (0.985, 1.001, 0.975, 1.0),  # mirror for a short
    "stop_long": (0.975, 1.001, 0.97, 1.0),  # runs through a long's 2 % stop
    "stop_short": (1.025, 1.03, 0.999, 1.0),  # runs through a short's 2 % stop
}


def shape(name: str, volume_multiple: float | None = None) -> tuple[str, float | None]:
    """Return a script entry: a shape, optionally with its own volume multiple (slot order)."""
    assert name in SHAPES, name
    return name, volume_multiple


@dataclass(frozen=True)
class Script:
    """One symbol's scripted candles: start price and shape by candle number after warm-up."""

    symbol: str  # backtest form, e.g. SOL/USDT
    start_price: float
    candles: dict[int, tuple[str, float | None]]
    start_ms: int = START_MS  # open time of the file's first candle

    def dated(self, start_ms: int) -> Script:
        """Return the same script starting at another time (a multiple of the timeframe)."""
        return replace(self, start_ms=start_ms - start_ms % TF_MS)

    @property
    def unified(self) -> str:
        """Return the live (ccxt unified) symbol: SOL/USDT -> SOL/USDT:USDT."""
        return f"{self.symbol}:{self.symbol.split('/')[1]}"

    @property
    def exchange_id(self) -> str:
        """Return the simulator's symbol id: SOLUSDT."""
        return exchange_symbol(self.symbol)

    def open_ms(self, k: int) -> int:
        """Return the open time of scripted candle ``k`` (0 = the first one played)."""
        return self.start_ms + (WARMUP + k) * TF_MS

    def signal_id(self, k: int, side: str) -> str:
        """Return the entry signal id of scripted candle ``k``."""
        return f"{self.unified}|5m|{self.open_ms(k)}|{side}"


def decimals(price: float) -> int:
    """Return decimals for prices that sit on the simulator's tick (about 5 significant digits)."""
    return min(max(5 - math.floor(math.log10(price)), 1), 7)


def frame_of(script: Script, length: int) -> pd.DataFrame:
    """Return the candles of one symbol: WARMUP + ``length`` + TAIL, scripted where asked."""
    rows = []
    price = script.start_price
    places = decimals(script.start_price * 1.5)
    for i in range(WARMUP + length + TAIL):
        name, vm = script.candles.get(i - WARMUP, ("quiet", None))
        close, high, low, volume = SHAPES[name]
        o = round(price, places)
        c = round(o * close, places)
        h = max(round(o * high, places), o, c)
        lo = min(round(o * low, places), o, c)
        rows.append((script.start_ms + i * TF_MS, o, h, lo, c, round(BASE_VOLUME * (vm or volume))))
        price = c
    return pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])


def write_market(folder: Path, scripts: list[Script], length: int) -> Path:
    """Write the replay files of ``scripts`` (``length`` scripted candles each); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        places = decimals(script.start_price * 1.5)
        frame = frame_of(script, length)
        for col in ("open", "high", "low", "close"):
            frame[col] = [f"{x:.{places}f}" for x in frame[col]]
        frame.to_csv(folder / f"{script.symbol.replace('/', '_')}.csv", index=False)
    return folder


def start_replay(stack: Stack, folder: Path) -> int:
    """Start the simulator stepping through ``folder``; return its clock."""
    stack.start_sim("--replay", str(folder), "--speed", "0", "--warmup", str(WARMUP))
    return stack.sim_now()


def _check_alive(stack: Stack, allowed_dead: str | None) -> None:
    """Fail at once, with the logs, when a process other than ``allowed_dead`` has ended."""
    ended = [n for n in stack.procs if n != allowed_dead and not stack.alive(n)]
    if ended:
        pytest.fail(f"{', '.join(ended)} ended unexpectedly\n{stack.log_tails()}")


def step_until(
    stack: Stack,
    steps: int,
    dead: str | None = None,
    timeout: float = 30.0,
    each_poll: Callable[[], None] | None = None,
) -> int:
    """Play up to ``steps`` price-event times, each until the bot is idle; return steps played.

    With ``dead`` set, stop early (and return) once that process has died. ``each_poll``
    runs on every poll while the bot works (to disturb it).
    """
    for played in range(1, steps + 1):
        answer = stack.sim_post("/_sim/step", {"n": 1})
        now = int(answer["now"])
        assert answer["events"], "the replay ended before the script did"

        def idle(now: int = now) -> bool:
            if dead is not None and not stack.alive(dead):
                return True
            _check_alive(stack, dead)
            if each_poll is not None:
                each_poll()
            return stack.idle_at(now)

        stack.wait_for(idle, timeout, f"the bot to settle at {now}")
        if dead is not None and not stack.alive(dead):
            return played
    return steps


def settle(
    stack: Stack, timeout: float = 60.0, each_poll: Callable[[], None] | None = None
) -> None:
    """Wait until the bot is idle at the simulator's current clock."""
    now = stack.sim_now()

    def idle() -> bool:
        _check_alive(stack, None)
        if each_poll is not None:
            each_poll()
        return stack.idle_at(now)

    stack.wait_for(idle, timeout, f"the bot to settle at {now}")


# --- what happened, from the account, the book and the streams -------------------------


def entry_signals(stack: Stack) -> dict[str, EntrySignal]:
    """Return every entry signal on ``tb:signals`` by id (duplicates collapse)."""
    out: dict[str, EntrySignal] = {}
    entries: Any = stack.redis.xrange(keys.STREAM_SIGNALS)
    for _, fields in entries:
        msg = decode(fields[b"d"])
        if isinstance(msg, EntrySignal):
            out[msg.id] = msg
    return out


def settled_as(stack: Stack, record_id: str) -> str | None:
    """Return how the executor settled a signal (its dedupe record), or None."""
    raw: Any = stack.redis.get(keys.signal_done_key(record_id))
    return None if raw is None else raw.decode()


@dataclass
class Outcome:
    """The account checked: entry orders by signal id, open positions, closed trades."""

    entries: dict[str, dict[str, Any]]  # signal id -> the exchange's entry order
    open_positions: dict[str, tuple[str, float]]  # exchange symbol -> (side, size)
    trades: list[ClosedTrade]

    def summary(self) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
        """Return ({(symbol, side, exit reason)} of closed trades, {(symbol, side)} open)."""
        closed = {(t.symbol, str(t.side), str(t.reason)) for t in self.trades}
        return closed, {(s, side) for s, (side, _) in self.open_positions.items()}


def _fills(trades: list[dict[str, Any]], order_id: int) -> tuple[float, float]:
    """Return (quantity, average price) of an order's fills; (0, 0) without any."""
    mine = [t for t in trades if t["order_id"] == order_id]
    qty = sum(t["qty"] for t in mine)
    return qty, (sum(t["qty"] * t["price"] for t in mine) / qty if qty else 0.0)


def check_account(stack: Stack) -> Outcome:
    """Assert the account, the book and the signals agree (see the module doc); return them."""
    acct = stack.account()
    book_positions = stack.positions()
    book_trades = stack.trades()
    signals = entry_signals(stack)
    orders: list[dict[str, Any]] = list(acct["orders"].values())
    algos: list[dict[str, Any]] = list(acct["algo_orders"].values())
    fills: list[dict[str, Any]] = acct["trades"]
    context = stack.log_tails()

    # One order per client order id, one stop per client algo id.
    dup = {c: n for c, n in Counter(o["client_order_id"] for o in orders).items() if n > 1}
    assert not dup, f"client order ids used twice: {dup}\n{context}"
    dup = {c: n for c, n in Counter(a["client_algo_id"] for a in algos).items() if n > 1}
    assert not dup, f"client algo ids used twice: {dup}"

    # Every order is explained: an entry of a known signal, an exit of a known position, or
    # the market order a stop triggered; at most one entry order per candle.
    by_entry_cid = {entry_client_id(sid): sid for sid in signals}
    position_ids = set(signals) | {p.position_id for p in book_positions.values()}
    by_exit_cid = {exit_client_id(pid): pid for pid in position_ids}
    triggered = {a["actual_order_id"] for a in algos if a["actual_order_id"]}
    entries: dict[str, dict[str, Any]] = {}
    per_candle: dict[tuple[str, int], list[str]] = defaultdict(list)
    for o in orders:
        cid = o["client_order_id"]
        if cid in by_entry_cid:
            sid = by_entry_cid[cid]
            entries[sid] = o
            sig = signals[sid]
            per_candle[(sig.symbol, sig.candle_open_time)].append(sid)
        else:
            assert cid in by_exit_cid or o["order_id"] in triggered, (
                f"order {o['order_id']} ({cid}) belongs to no signal, position or stop"
            )
    twice = {k: v for k, v in per_candle.items() if len(v) > 1}
    assert not twice, f"candles with more than one entry order: {twice}"
    stop_cids = {
        stop_client_id(pid, seq): pid for pid in position_ids for seq in range(MAX_STOP_SEQ)
    }
    for a in algos:
        assert a["client_algo_id"] in stop_cids, f"stop {a['client_algo_id']} of no position"

    # Every open exchange position has a NEW reduce-only stop; no NEW stop on a flat symbol.
    open_ex = {s: p for s, p in acct["positions"].items() if p["amount"] != 0}
    new_stops = [a for a in algos if a["status"] == "NEW"]
    for sym, p in open_ex.items():
        closing_side = "SELL" if p["amount"] > 0 else "BUY"
        mine = [
            a for a in new_stops
            if a["symbol"] == sym and a["side"] == closing_side
            and (a["reduce_only"] or a["close_position"])
        ]  # fmt: skip
        assert len(mine) == 1, f"open position {sym} {p['amount']} has {len(mine)} open stops"
    flat = {a["symbol"] for a in new_stops} - set(open_ex)
    assert not flat, f"open stops on symbols without a position: {flat}\n{context}"

    # The book's open positions are the exchange's.
    exchange_open = {
        s: ("long" if p["amount"] > 0 else "short", abs(p["amount"])) for s, p in open_ex.items()
    }
    book_open = {exchange_symbol(p.symbol): (p.side, p.quantity) for p in book_positions.values()}
    assert len(book_open) == len(book_positions), "two book positions on one symbol"
    same = book_open.keys() == exchange_open.keys() and all(
        book_open[s][0] == side and book_open[s][1] == pytest.approx(size)
        for s, (side, size) in exchange_open.items()
    )
    assert same, f"book {book_open} != exchange {exchange_open}\n{context}"
    assert not any(p.adopted for p in book_positions.values()), "a position had to be adopted"
    stop_of = {a["symbol"]: a["client_algo_id"] for a in new_stops}
    for pos in book_positions.values():
        assert pos.stop_client_order_id == stop_of[exchange_symbol(pos.symbol)], pos

    # Every closed trade is its fills: entry order, then our exit order or its stop's order.
    algo_by_cid = {a["client_algo_id"]: a for a in algos}
    for t in book_trades:
        entry = entries.get(t.position_id)
        assert entry is not None, f"trade {t.position_id} has no entry order"
        qty, price = _fills(fills, entry["order_id"])
        assert (qty, price) == pytest.approx((t.quantity, t.entry_price)), t
        closing: list[tuple[float, float]] = []
        exit_order = next(
            (o for o in orders if o["client_order_id"] == exit_client_id(t.position_id)), None
        )
        if exit_order is not None:
            closing.append(_fills(fills, exit_order["order_id"]))
        for seq in range(MAX_STOP_SEQ):
            stop = algo_by_cid.get(stop_client_id(t.position_id, seq))
            if stop is not None and stop["actual_order_id"]:
                closing.append(_fills(fills, stop["actual_order_id"]))
        closing = [c for c in closing if c[0] > 0]
        assert len(closing) == 1, f"trade {t.position_id} closed by {len(closing)} fills"
        assert closing[0] == pytest.approx((t.quantity, t.exit_price)), t
        by_our_exit = exit_order is not None and _fills(fills, exit_order["order_id"])[0] > 0
        assert (t.reason == "stop") != by_our_exit, t
    return Outcome(entries, exchange_open, book_trades)
