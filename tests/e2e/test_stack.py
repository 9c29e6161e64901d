"""The whole bot on a synthetic market: it trades, and book, exchange and trade list agree."""

from __future__ import annotations

import pytest

from tests.fixtures.stack import SERVICES, Stack

pytestmark = pytest.mark.slow


def test_stack_opens_and_closes_positions_and_everything_agrees(stack: Stack) -> None:
    stack.start_sim("--speed", "300", "--seed", "42")
    for name in SERVICES:
        stack.start(name)
    trades = stack.wait_for(lambda: len(stack.trades()) >= 2, 120, "two closed trades")
    assert trades
    for name in SERVICES:
        assert stack.alive(name), stack.log_tails()
