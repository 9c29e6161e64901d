"""Scale: three signals workers on one group, every candle delivered twice, one order per candle.

The bot runs with three signals workers on a scripted replay stepped one price-event time
at a time (``tests/e2e/scripted.py``) while the test republishes every ``md.candles`` entry
a second time (XRANGE, then XADD of the same ``d``) as soon as it appears, the history
included, and at the end every entry once more. The script has more entry signals than
slots (MAX_POSITIONS 3), a trail exit that frees a slot at a close with a new signal, and
a stop exit. Asserted: each entry
signal was evaluated into the stream more than once, yet each candle gave at most one
entry order and each signal id at most one; the entries taken are exactly the ones the
slot rules allow; account and book agree.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.schemas import EntrySignal, decode
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
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.slow

WORKERS = 3
SOL = Script("SOL/USDT", 100.0, {0: shape("long", 5), 1: shape("trail_long")})
LINK = Script("LINK/USDT", 50.0, {0: shape("long", 4), 4: shape("stop_long")})
AVAX = Script("AVAX/USDT", 20.0, {0: shape("long", 3.5)})
DOT = Script("DOT/USDT", 10.0, {0: shape("long", 3), 5: shape("long")})
ATOM = Script("ATOM/USDT", 30.0, {1: shape("short")})
NEAR = Script("NEAR/USDT", 5.0, {3: shape("long")})
SCRIPTS = [SOL, LINK, AVAX, DOT, ATOM, NEAR]
LENGTH = 8

# Close 0: four longs for three slots, by volume ratio: DOT is refused. Close 1: SOL's trail
# exit frees a slot before ATOM's short is decided. Close 3: no slot for NEAR. Close 4:
# LINK is stopped out; close 5: DOT's second long takes the slot.
ENTERED = {
    SOL.signal_id(0, "long"),
    LINK.signal_id(0, "long"),
    AVAX.signal_id(0, "long"),
    ATOM.signal_id(1, "short"),
    DOT.signal_id(5, "long"),
}
REFUSED = {DOT.signal_id(0, "long"), NEAR.signal_id(3, "long")}


class Republisher:
    """Append a second copy of every md.candles entry (not of its own copies) once it appears."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.cursor = "0-0"
        self.copies: set[bytes] = set()

    def __call__(self) -> None:
        r = self.stack.redis
        entries: Any = r.xrange(keys.STREAM_CANDLES, min=f"({self.cursor}", max="+")
        for entry_id, fields in entries:
            self.cursor = entry_id.decode()
            if entry_id not in self.copies:
                self.copies.add(r.xadd(keys.STREAM_CANDLES, {"d": fields[b"d"]}))  # type: ignore[arg-type]


def signal_messages(stack: Stack) -> Counter[str]:
    """Return how many times each entry signal id was published on tb:signals."""
    seen: Counter[str] = Counter()
    entries: Any = stack.redis.xrange(keys.STREAM_SIGNALS)
    for _, fields in entries:
        msg = decode(fields[b"d"])
        if isinstance(msg, EntrySignal):
            seen[msg.id] += 1
    return seen


def test_many_workers_and_redelivered_candles_give_one_order_per_candle(
    stack: Stack, tmp_path: Path
) -> None:
    start_replay(stack, write_market(tmp_path / "candles", SCRIPTS, LENGTH))
    stack.start("market_data")
    for i in range(WORKERS):
        stack.start("signals", name=f"signals{i}")
    stack.start("state")
    stack.start("executor")
    republish = Republisher(stack)
    settle(stack, each_poll=republish)
    step_until(stack, 4 * LENGTH, each_poll=republish)
    history = stack.redis.xlen(keys.STREAM_CANDLES)
    assert len(republish.copies) * 2 == history, "not every candle was delivered twice"
    orders_before = stack.account()["orders"]

    # Late duplicates too: every entry once more, long after its signals were settled.
    late: Any = stack.redis.xrange(keys.STREAM_CANDLES)
    for _, fields in late:
        stack.redis.xadd(keys.STREAM_CANDLES, {"d": fields[b"d"]})
    settle(stack)
    assert stack.account()["orders"] == orders_before, "a late duplicate placed an order"
    published = signal_messages(stack)
    assert set(published) == ENTERED | REFUSED
    assert all(n >= 2 for n in published.values()), f"a duplicate was not evaluated: {published}"
    consumers: Any = stack.redis.xinfo_consumers(keys.STREAM_CANDLES, keys.GROUP_SIGNALS)
    assert len(consumers) == WORKERS

    outcome = check_account(stack)  # one order per client id, at most one entry per candle
    assert set(outcome.entries) == ENTERED
    for sid in REFUSED:
        assert settled_as(stack, sid) == "refused:no_free_slot"
    closed, still_open = outcome.summary()
    assert closed == {(SOL.unified, "long", "trail"), (LINK.unified, "long", "stop")}
    assert still_open == {(AVAX.exchange_id, "long"), (ATOM.exchange_id, "short"),
                          (DOT.exchange_id, "long")}  # fmt: skip
    assert stack.redis.xlen(keys.STREAM_DLQ) == 0
