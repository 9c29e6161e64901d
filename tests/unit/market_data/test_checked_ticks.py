"""Which exchange prices become ticks: only finite prices above zero, each refusal counted."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import REGISTRY

from services.market_data.service import MarketData
from shared.exchange_models import Ticker


def bad(kind: str) -> float:
    return (
        REGISTRY.get_sample_value("tradebot_md_bad_data_total", {"call": "tickers", "kind": kind})
        or 0
    )


def test_only_finite_positive_prices_become_ticks_and_the_rest_are_counted() -> None:
    prices: dict[str, float | None] = {
        "A": 10.0, "B": None, "C": math.nan, "D": 0.0, "E": -1.0, "F": math.inf, "G": 1e-9,
    }  # fmt: skip
    tickers = {s: Ticker(s, p, None, None) for s, p in prices.items()}
    before = {kind: bad(kind) for kind in ("bad_value", "missing")}
    no_self: Any = None  # the check uses nothing of the service
    ticks = MarketData._checked_ticks(no_self, [*prices, "H", "I"], tickers, 1_000)
    assert [(t.symbol, t.price, t.ts) for t in ticks] == [("A", 10.0, 1_000), ("G", 1e-9, 1_000)]
    assert bad("bad_value") == before["bad_value"] + 5  # B to F
    assert bad("missing") == before["missing"] + 2  # H and I are not in the answer
