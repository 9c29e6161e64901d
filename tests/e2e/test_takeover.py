"""Takeover: two copies of each single-active service; killing the active one hands over.

Two executors, two state and two market_data processes run on a scripted replay stepped one
price-event time at a time (``tests/e2e/scripted.py``). For each service in turn the test
kills (-9) the copy whose heartbeat says "active", asserts that the other copy's heartbeat
says "active" within 10 s (the lease TTL in tests is 3 s), then plays on into a market move
that only the new copy can handle: an entry order after the executor's takeover, a stop
fill folded into a trade after state's, a new candle's entry after market_data's. At the end
the account and the book agree and no order was placed twice.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import pytest

from shared import keys
from shared.order_ids import entry_client_id
from tests.e2e.scripted import (
    Script,
    check_account,
    settle,
    shape,
    start_replay,
    step_until,
    write_market,
)
from tests.fixtures.stack import SERVICES, Stack

pytestmark = pytest.mark.slow

SOL = Script("SOL/USDT", 100.0, {0: shape("long"), 1: shape("trail_long")})
LINK = Script("LINK/USDT", 50.0, {3: shape("short"), 4: shape("stop_short")})
AVAX = Script("AVAX/USDT", 20.0, {6: shape("long")})
LENGTH = 8
SINGLE_ACTIVE = ("market_data", "state", "executor")
TAKEOVER_S = 10.0


def entry_orders(stack: Stack) -> set[str]:
    """Return the client order ids of the exchange's orders."""
    return {o["client_order_id"] for o in stack.account()["orders"].values()}


def is_active(stack: Stack, service: str) -> bool:
    """Return whether the first copy of ``service`` is its one active instance."""
    return stack.active_pids(service) == {stack.pid(service)}


def has_standby(stack: Stack, service: str) -> bool:
    """Return whether ``service`` runs one active and one standby instance."""
    return sorted(h.role for h in stack.heartbeats(service)) == ["active", "standby"]


def take_over(stack: Stack, service: str) -> str:
    """Kill the active copy of ``service`` (-9); wait until the other is active; return its name."""
    names = (service, f"{service}2")
    active = stack.active_pids(service)
    victim = next(n for n in names if stack.pid(n) in active)
    heir = next(n for n in names if n != victim)
    killed = stack.pid(victim)
    assert stack.kill(victim) == -signal.SIGKILL
    stack.wait_for(
        lambda: stack.active_pids(service) - {killed} == {stack.pid(heir)},
        TAKEOVER_S,
        f"{heir} to take over {service}",
    )
    assert stack.alive(heir)
    del stack.procs[victim]  # ended on purpose: the settle checks may not count it
    return heir


def test_standby_takes_over_each_single_active_service(stack: Stack, tmp_path: Path) -> None:
    start_replay(stack, write_market(tmp_path / "candles", [SOL, LINK, AVAX], LENGTH))
    stack.start("signals")
    for service in SINGLE_ACTIVE:
        stack.start(service)
        stack.wait_for(partial(is_active, stack, service), 30, f"{service} active")
        stack.start(service, name=f"{service}2")
    for service in SINGLE_ACTIVE:
        stack.wait_for(partial(has_standby, stack, service), 30, f"a standby {service}")
    settle(stack)
    step_until(stack, 4 * 2)  # SOL: entry, trail exit
    assert {(t.symbol, t.reason) for t in stack.trades()} == {(SOL.unified, "trail")}

    heir = take_over(stack, "executor")
    step_until(stack, 4 * 2)  # LINK's short entry: sent by the new executor
    assert entry_client_id(LINK.signal_id(3, "short")) in entry_orders(stack)
    assert "Filled: SHORT LINK/USDT:USDT" in stack.log(heir)

    take_over(stack, "state")
    step_until(stack, 4 * 1)  # LINK's stop fills; the new state closes the trade
    assert (LINK.unified, "stop") in {(t.symbol, t.reason) for t in stack.trades()}

    take_over(stack, "market_data")
    step_until(stack, 4 * 3)  # AVAX's entry candle, published by the new market_data
    assert entry_client_id(AVAX.signal_id(6, "long")) in entry_orders(stack)

    outcome = check_account(stack)
    closed, still_open = outcome.summary()
    assert closed == {(SOL.unified, "long", "trail"), (LINK.unified, "short", "stop")}
    assert still_open == {(AVAX.exchange_id, "long")}
    assert stack.redis.xlen(keys.STREAM_DLQ) == 0
    for service in (*SERVICES, "exchange_sim"):
        assert any(stack.alive(n) for n in (service, f"{service}2") if n in stack.procs)
