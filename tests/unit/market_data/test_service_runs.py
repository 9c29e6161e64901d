"""Pure parts of the service: runs of consecutive open times, the log of prices not ticked."""

from __future__ import annotations

from typing import Any

import pytest

from services.market_data.service import MarketData, _runs
from shared.exchange_models import Ticker


def test_runs_split_open_times_at_each_hole() -> None:
    assert _runs([], 5) == []
    assert _runs([10], 5) == [(10, 10)]
    assert _runs([10, 15, 20, 30, 35, 50], 5) == [(10, 20), (30, 35), (50, 50)]


def test_a_symbol_missing_from_the_ticker_answer_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_self: Any = None  # the check uses nothing of the service
    tickers = {"A": Ticker("A", 0.0, None, None)}
    assert MarketData._checked_ticks(no_self, ["A", "B"], tickers, 1_000) == []
    assert "Ticks: no tick for 2 symbols this scan (A price 0.0, B not in the answer)" in (
        caplog.text
    )
