"""Garbage market data: which answers each kind hits, and what it does to them."""

from __future__ import annotations

from typing import Any

import pytest

from services.exchange_sim.faults import GARBAGE_KINDS
from services.exchange_sim.garbage import (
    CANDLE_KINDS,
    HTML_KINDS,
    PRICE_KINDS,
    applicable,
    corrupt,
    corrupt_klines,
    corrupt_prices,
)

TF = 300_000
T0 = 1_735_779_600_000


def kline(open_time: int, low: str = "99.0", high: str = "101.0") -> list[Any]:
    return [open_time, "100.0", high, low, "100.5", "5.000", open_time + TF - 1, "500", 5]


ROWS = [kline(T0 - 2 * TF), kline(T0 - TF), kline(T0)]  # the last one is forming at T0 + 1


def test_kinds_apply_to_market_data_gets_only() -> None:
    assert set(PRICE_KINDS + CANDLE_KINDS + HTML_KINDS) == set(GARBAGE_KINDS)
    assert set(applicable("GET", "/fapi/v1/klines")) == set(GARBAGE_KINDS)
    assert applicable("GET", "/fapi/v1/ticker/24hr") == PRICE_KINDS + HTML_KINDS
    assert applicable("GET", "/fapi/v1/time") == HTML_KINDS
    assert applicable("POST", "/fapi/v1/order") == ()
    assert applicable("GET", "/fapi/v3/account") == ()


@pytest.mark.parametrize(
    ("kind", "want"),
    [
        ("nan_price", lambda r: r[1][4] == "NaN"),
        ("zero_price", lambda r: r[1][3] == "0"),
        ("negative_price", lambda r: r[1][3] == "-99.0"),
        ("high_below_low", lambda r: float(r[1][2]) < float(r[1][3])),
        ("duplicate", lambda r: [x[0] for x in r] == [T0 - 2 * TF, T0 - TF, T0 - TF, T0]),
        ("out_of_order", lambda r: [x[0] for x in r] == [T0 - TF, T0 - 2 * TF, T0]),
        ("missing", lambda r: [x[0] for x in r] == [T0 - 2 * TF, T0]),
    ],
)
def test_klines_corruption_hits_the_newest_closed_candle(kind: str, want: Any) -> None:
    out = corrupt_klines(ROWS, kind, T0 + 1)
    assert want(out)
    assert [kline(T0 - 2 * TF), kline(T0 - TF), kline(T0)] == ROWS  # the input is untouched


def test_a_flat_candle_still_gets_its_high_below_its_low() -> None:
    out = corrupt_klines([kline(T0 - TF, "100.0", "100.0")], "high_below_low", T0)
    assert float(out[0][2]) < float(out[0][3])


def test_no_closed_candle_nothing_to_corrupt() -> None:
    assert corrupt_klines(ROWS[-1:], "missing", T0 + 1) == ROWS[-1:]


def test_price_corruption_hits_every_price_of_the_answer() -> None:
    tickers = [
        {"symbol": "BTCUSDT", "lastPrice": "60000.0", "quoteVolume": "1"},
        {"symbol": "ETHUSDT", "lastPrice": "3000.0", "quoteVolume": "2"},
    ]
    out = corrupt_prices(tickers, "negative_price")
    assert [t["lastPrice"] for t in out] == ["-60000.0", "-3000.0"]
    assert [t["quoteVolume"] for t in out] == ["1", "2"]
    one = corrupt("/fapi/v1/premiumIndex", "zero_price", {"markPrice": "1", "indexPrice": "1"}, 0)
    assert one == {"markPrice": "0", "indexPrice": "0"}
    assert corrupt("/fapi/v1/ticker/price", "duplicate", {"price": "1"}, 0) == {"price": "1"}
