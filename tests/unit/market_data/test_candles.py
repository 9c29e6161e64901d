"""Pure candle rules: fetch counts, new candles, gaps, validation, expected counts."""

from __future__ import annotations

import math

import pytest

from services.market_data.candles import (
    Gap,
    expected_counts,
    fetch_count,
    fmt_ms,
    gaps_before,
    last_close_ms,
    new_rows,
    publish_order,
    to_candle,
)
from shared.exchange_models import OHLCV

TF = 300_000
T0 = 1_735_779_600_000  # 2025-01-02T01:00Z


def row(open_time: int, price: float = 100.0) -> OHLCV:
    """Return a plain candle at one price."""
    return OHLCV(open_time, price, price * 1.01, price * 0.99, price, 5.0)


def rows(*opens: int) -> list[OHLCV]:
    """Return plain candles at these open times."""
    return [row(t) for t in opens]


def test_last_close_is_the_boundary_at_or_before_now() -> None:
    assert last_close_ms(T0, TF) == T0
    assert last_close_ms(T0 + 1, TF) == T0
    assert last_close_ms(T0 + TF - 1, TF) == T0
    assert fmt_ms(T0) == "2025-01-02T01:00Z"


@pytest.mark.parametrize(
    ("last_open", "window_len", "want"),
    [
        (None, 0, 10),  # no record: the whole window
        (T0 - TF, 3, 10),  # window shorter than CANDLE_LIMIT: fill it
        (T0 - TF, 10, 0),  # newest closed candle already published
        (T0 - 2 * TF, 10, 2),  # one missed close: it plus one of overlap
        (T0 - 4 * TF, 10, 4),  # downtime of three closes
        (T0 - 50 * TF, 10, 10),  # longer than the window: at most CANDLE_LIMIT
        (T0 + TF, 10, 0),  # record ahead of the clock: nothing to fetch
    ],
)
def test_fetch_count(last_open: int | None, window_len: int, want: int) -> None:
    assert fetch_count(last_open, window_len, T0, TF, 10) == want


def test_new_rows_after_the_record_and_only_the_newest_on_a_fresh_start() -> None:
    fetched = rows(T0 - 3 * TF, T0 - 2 * TF, T0 - TF)
    assert new_rows(fetched, None, TF) == fetched[-1:]
    assert new_rows(fetched, T0 - 3 * TF, TF) == fetched[1:]
    assert new_rows(fetched, T0 - TF, TF) == []
    assert new_rows([], None, TF) == []


def test_gaps_before_new_rows() -> None:
    assert gaps_before(rows(T0 - 2 * TF, T0 - TF), T0 - 3 * TF, TF) == []
    assert gaps_before(rows(T0 - TF), T0 - 4 * TF, TF) == [Gap(T0 - TF, 2)]
    assert gaps_before(rows(T0 - 5 * TF, T0 - TF), None, TF) == [Gap(T0 - TF, 3)]
    assert gaps_before(rows(T0 - TF), None, TF) == []


def test_to_candle_carries_the_row() -> None:
    c = to_candle("BTC/USDT:USDT", "5m", OHLCV(T0, 10.0, 12.0, 9.0, 11.0, 3.5))
    assert (c.symbol, c.timeframe, c.open_time) == ("BTC/USDT:USDT", "5m", T0)
    assert (c.open, c.high, c.low, c.close, c.volume) == (10.0, 12.0, 9.0, 11.0, 3.5)


@pytest.mark.parametrize(
    "bad",
    [
        OHLCV(T0, 10.0, 9.0, 11.0, 10.0, 1.0),  # high < low
        OHLCV(T0, 0.0, 12.0, 9.0, 11.0, 1.0),  # price <= 0
        OHLCV(T0, 10.0, math.nan, 9.0, 11.0, 1.0),  # NaN
        OHLCV(T0, 10.0, 12.0, 9.0, 11.0, -1.0),  # negative volume
    ],
)
def test_to_candle_refuses_bad_values(bad: OHLCV) -> None:
    with pytest.raises(ValueError, match="Candle"):
        to_candle("BTC/USDT:USDT", "5m", bad)


def test_expected_counts_and_publish_order() -> None:
    a = [to_candle("B", "5m", row(T0 - TF)), to_candle("B", "5m", row(T0 - 2 * TF))]
    b = [to_candle("A", "5m", row(T0 - TF))]
    assert expected_counts(a + b, TF) == {T0: 2, T0 - TF: 1}
    ordered = publish_order(a + b)
    assert [(c.open_time, c.symbol) for c in ordered] == [
        (T0 - 2 * TF, "B"),
        (T0 - TF, "A"),
        (T0 - TF, "B"),
    ]
