"""Restart safety: a service killed (-9) at each crash point and restarted leaves no damage.

The bot runs as real processes on a scripted replay stepped one price-event time at a
time (``tests/e2e/scripted.py``): SOL enters long and leaves by its trail, LINK enters
short and is stopped out, AVAX enters long and stays open. One process starts with
TRADEBOT_TEST_CRASH_AT=<point> and SIGKILLs itself the first time it gets there (SOL's
entry or exit); the test checks it died of -9 where the point says, restarts it without
the variable, plays the rest of the script and compares the simulator's account with the
book: no order twice, every open position stopped, the book equal to the exchange, every
trade equal to its fills, and the same trades as an uncrashed run (SOL's entry, abandoned
before it was sent, excepted).

The executor's crash points run twice: on a replay dated in the past, and on one dated a
day ahead of the host clock, as a sped-up simulator runs ahead of it (the executor signs
with the host clock but reads candle times and the server time from the exchange).

A last case keeps the executor down (after entry_filled) until state's reconciliation has
asked for a repair stop: the restarted executor must still leave one stop per position.
"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.crash import CRASH_ENV, POINTS
from shared.order_ids import entry_client_id, exit_client_id, stop_client_id
from shared.schemas import StopCommand, decode
from tests.e2e.scripted import (
    Script,
    check_account,
    settle,
    settled_as,
    shape,
    start_replay,
    step_until,
    write_market,
)
from tests.fixtures.stack import SERVICES, Stack

pytestmark = pytest.mark.slow

SOL = Script("SOL/USDT", 100.0, {0: shape("long"), 1: shape("trail_long")})
LINK = Script("LINK/USDT", 50.0, {2: shape("short"), 3: shape("stop_short")})
AVAX = Script("AVAX/USDT", 20.0, {4: shape("long")})
LENGTH = 7  # scripted candles, 4 price-event times each
STEPS = 4 * LENGTH
AHEAD_MS = 86_400_000

CLOSED = {(SOL.unified, "long", "trail"), (LINK.unified, "short", "stop")}
OPEN = {(AVAX.exchange_id, "long")}
CASES = [pytest.param(p, False, id=p) for p in POINTS] + [
    pytest.param(p, True, id=f"{p}-clock_ahead") for p in POINTS if p != "event_seen"
]


def check_crash_site(stack: Stack, point: str, sol: Script) -> None:
    """Assert the process died exactly where the crash point says."""
    acct = stack.account()
    cids = {o["client_order_id"]: o for o in acct["orders"].values()}
    stops = {a["client_algo_id"]: a for a in acct["algo_orders"].values()}
    intents = {m.decode() for m in stack.redis.smembers(keys.OPEN_INTENTS)}  # type: ignore[union-attr]
    sol_entry = sol.signal_id(0, "long")
    if point == "entry_intent_written":
        assert entry_client_id(sol_entry) in intents
        assert not cids, "an order was sent before the crash"
    elif point == "entry_filled":
        assert cids[entry_client_id(sol_entry)]["status"] == "FILLED"
        assert not stops, "the stop was placed before the crash"
    elif point == "exit_filled":
        assert cids[exit_client_id(sol_entry)]["status"] == "FILLED"
        assert stops[stop_client_id(sol_entry)]["status"] == "NEW"
        assert acct["positions"][sol.exchange_id]["amount"] == 0
    else:  # event_seen: state read SOL's entry fill and died before folding it
        assert cids[entry_client_id(sol_entry)]["status"] == "FILLED"
        assert not stack.positions(), "state folded the fill"
        assert not stack.trades(), "state folded the fill"


@pytest.mark.parametrize(("point", "ahead"), CASES)
def test_restart_at_crash_point_leaves_account_and_book_consistent(
    stack: Stack, tmp_path: Path, point: str, ahead: bool
) -> None:
    scripts = [SOL, LINK, AVAX]
    if ahead:
        scripts = [s.dated(int(time.time() * 1000) + AHEAD_MS) for s in scripts]
    sol = scripts[0]
    start_replay(stack, write_market(tmp_path / "candles", scripts, LENGTH))
    victim = "state" if point == "event_seen" else "executor"
    for name in SERVICES:
        stack.start(name, **({CRASH_ENV: point} if name == victim else {}))
    settle(stack)

    played = step_until(stack, STEPS, dead=victim)
    assert not stack.alive(victim), f"{victim} never reached {point}\n{stack.log_tails()}"
    assert stack.kill(victim) == -signal.SIGKILL
    check_crash_site(stack, point, sol)

    stack.start(victim)
    settle(stack)
    step_until(stack, STEPS - played)

    outcome = check_account(stack)
    closed, still_open = outcome.summary()
    if point == "entry_intent_written":
        assert settled_as(stack, sol.signal_id(0, "long")) == "abandoned"
        assert sol.signal_id(0, "long") not in outcome.entries
        assert closed == CLOSED - {(SOL.unified, "long", "trail")}
    else:
        assert closed == CLOSED
    assert still_open == OPEN
    for name in SERVICES:
        assert stack.alive(name), stack.log_tails()
    assert stack.redis.xlen(keys.STREAM_DLQ) == 0


def state_asked_for_a_stop(stack: Stack, position_id: str) -> bool:
    """Return whether state's reconciliation published a StopCommand for the position."""
    entries: Any = stack.redis.xrange(keys.STREAM_SIGNALS)
    return any(
        isinstance(msg := decode(fields[b"d"]), StopCommand) and msg.position_id == position_id
        for _, fields in entries
    )


def state_saw(stack: Stack, now: int) -> bool:
    """Return whether state handled the price events of exchange time ``now``."""
    raw: Any = stack.redis.get(keys.STATE_TICK_MS)
    return raw is not None and int(raw) == now


def test_executor_down_past_the_stop_grace_leaves_one_stop(stack: Stack, tmp_path: Path) -> None:
    # The entry filled, the executor died before its stop and stays down while the market
    # moves on: state's reconciliation asks for a repair stop; the restarted executor then
    # has its own unfinished stop and the repair to place, and must leave exactly one.
    start_replay(stack, write_market(tmp_path / "candles", [SOL, LINK, AVAX], LENGTH))
    for name in SERVICES:
        stack.start(name, **({CRASH_ENV: "entry_filled"} if name == "executor" else {}))
    settle(stack)
    played = step_until(stack, STEPS, dead="executor")
    assert stack.kill("executor") == -signal.SIGKILL
    check_crash_site(stack, "entry_filled", SOL)

    sol_entry = SOL.signal_id(0, "long")
    for _ in range(2):  # 150 s of exchange time, more than state's STOP_GRACE_MS
        now = int(stack.sim_post("/_sim/step", {"n": 1})["now"])
        stack.wait_for(partial(state_saw, stack, now), 30, "state to see the price")
        played += 1
    stack.wait_for(lambda: state_asked_for_a_stop(stack, sol_entry), 30, "a repair stop")

    stack.start("executor")
    settle(stack)
    step_until(stack, STEPS - played)
    closed, still_open = check_account(stack).summary()
    assert closed == CLOSED
    assert still_open == OPEN
