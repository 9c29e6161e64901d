"""Faults the chaos run found, each pinned down by a small deterministic test.

- An entry signal queued while its candle close was being decided was deleted unseen: the
  executor's ``finish_batch`` dropped the whole close, so the signal, already acked on
  tb:signals, was never settled (invariant 4 of the chaos run: "entry signal ... never
  settled by the executor"; under chaos a reclaimed signal of a killed executor arrives
  just so).
"""

from __future__ import annotations

import pytest

from shared import keys
from shared.schemas import EntrySignal
from tests.integration.executor.conftest import ETH, SOL, MakeHarness, make_executor

__all__ = ["make_executor"]  # the fixture, imported for the tests below


async def test_an_entry_queued_while_its_close_is_decided_is_not_lost(
    make_executor: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_executor()
    await h.set_universe(SOL, ETH)
    first, late = await h.signal(SOL, vr=3.0), await h.signal(ETH, vr=2.0)
    await h.executor.handle(first, "1-0")
    [(close_ms, _)] = await h.executor.journal.batches()
    enter = h.executor.enter

    async def enter_while_late_arrives(signal: EntrySignal, now: int) -> None:
        await enter(signal, now)
        await h.executor.handle(late, "2-0")  # the consumer queues it meanwhile

    monkeypatch.setattr(h.executor, "enter", enter_while_late_arrives)
    await h.executor.allot(close_ms)
    assert [s.id for s in await h.executor.journal.batch(close_ms)] == [late.id]
    assert [c for c, _ in await h.executor.journal.batches()] == [close_ms]

    monkeypatch.setattr(h.executor, "enter", enter)
    await h.executor.allot(close_ms)  # the next round decides it
    assert await h.executor.journal.settled(first.id) == "filled"
    assert await h.executor.journal.settled(late.id) == "filled"
    assert await h.redis.zcard(keys.ENTRY_BATCHES) == 0
