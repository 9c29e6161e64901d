"""Pure candle rules: fetch counts, which candles to trust, store and publish, expected counts."""

from __future__ import annotations

import math

import pytest

from services.market_data.candles import (
    Gap,
    Plan,
    expected_counts,
    fetch_count,
    fmt_ms,
    last_close_ms,
    plan_candles,
    publish_order,
    to_candle,
    why_refused,
)
from shared.exchange_models import OHLCV, parse_ohlcv
from shared.schemas import Candle

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


def plan(
    fetched: list[OHLCV], last_open: int | None, count: int = 10, give_up: set[int] | None = None
) -> Plan:
    """Plan BTC's candles fetched at close T0 (``count`` asked)."""
    return plan_candles("BTC", "5m", TF, fetched, last_open, T0, count, give_up or set())


def opens(candles: list[Candle]) -> list[int]:
    return [c.open_time for c in candles]


def test_a_fresh_start_publishes_only_the_newest_and_stores_all() -> None:
    p = plan(rows(T0 - 3 * TF, T0 - 2 * TF, T0 - TF), None)
    assert opens(p.publish) == [T0 - TF]
    assert opens(p.window) == [T0 - 3 * TF, T0 - 2 * TF, T0 - TF]
    assert (p.problem, p.waiting_for, p.missing, p.refused, p.gap) == (None, None, [], [], None)


def test_new_candles_after_the_record_are_published_in_order() -> None:
    fetched = rows(T0 - 4 * TF, T0 - 3 * TF, T0 - 2 * TF, T0 - TF)
    assert opens(plan(fetched, T0 - 4 * TF, 4).publish) == [T0 - 3 * TF, T0 - 2 * TF, T0 - TF]
    assert plan(fetched, T0 - TF, 0).publish == []


def test_candles_beyond_the_fetch_are_a_gap() -> None:
    p = plan(rows(T0 - 2 * TF, T0 - TF), T0 - 6 * TF, count=2)
    assert p.gap == Gap(T0 - 2 * TF, 3)
    assert p.gap is not None
    assert isinstance(p.gap.missing, int)  # a count of candles
    assert opens(p.publish) == [T0 - 2 * TF, T0 - TF]
    reached = plan(rows(T0 - 2 * TF, T0 - TF), T0 - 3 * TF, count=2)  # just within reach
    assert reached.gap is None
    assert opens(reached.publish) == [T0 - 2 * TF, T0 - TF]


def test_a_missing_candle_stops_publishing_until_it_comes() -> None:
    p = plan(rows(T0 - 4 * TF, T0 - 2 * TF, T0 - TF), T0 - 4 * TF, count=4)
    assert p.publish == []
    assert (p.waiting_for, p.missing) == (T0 - 3 * TF, [T0 - 3 * TF])
    assert opens(p.window) == [T0 - 4 * TF, T0 - 2 * TF, T0 - TF]  # stored all the same
    again = plan(rows(T0 - 4 * TF, T0 - 3 * TF, T0 - 2 * TF, T0 - TF), T0 - 4 * TF, count=4)
    assert opens(again.publish) == [T0 - 3 * TF, T0 - 2 * TF, T0 - TF]
    given_up = plan(rows(T0 - 4 * TF, T0 - 2 * TF, T0 - TF), T0 - 4 * TF, 4, {T0 - 3 * TF})
    assert opens(given_up.publish) == [T0 - 2 * TF, T0 - TF]
    assert given_up.given_up == [T0 - 3 * TF]


def test_a_missing_newest_candle_is_waited_for() -> None:
    p = plan(rows(T0 - 3 * TF, T0 - 2 * TF), T0 - 3 * TF, count=3)
    assert opens(p.publish) == [T0 - 2 * TF]
    assert (p.waiting_for, p.missing) == (T0 - TF, [T0 - TF])


def test_a_refused_candle_is_not_stored_and_publishing_waits_for_it() -> None:
    bad = OHLCV(T0 - 2 * TF, 100.0, 99.0, 101.0, 100.0, 5.0)  # high below low
    p = plan([row(T0 - 3 * TF), bad, row(T0 - TF)], T0 - 3 * TF, count=3)
    assert p.publish == []
    assert p.waiting_for == T0 - 2 * TF
    assert p.missing == []
    assert [t for t, _ in p.refused] == [T0 - 2 * TF]
    assert p.refused[0][1] == "high/low must enclose open and close"
    assert opens(p.window) == [T0 - 3 * TF, T0 - TF]


def test_an_identical_duplicate_is_dropped() -> None:
    p = plan(rows(T0 - 3 * TF, T0 - 2 * TF, T0 - TF, T0 - TF), T0 - 2 * TF, count=3)
    assert p.duplicates == 1
    assert opens(p.publish) == [T0 - TF]
    assert opens(p.window) == [T0 - 3 * TF, T0 - 2 * TF, T0 - TF]
    twice = plan(rows(T0 - 3 * TF, T0 - 3 * TF, T0 - 2 * TF, T0 - 2 * TF, T0 - TF), None)
    assert twice.duplicates == 2  # each counted, and the rows after them still read
    assert opens(twice.window) == [T0 - 3 * TF, T0 - 2 * TF, T0 - TF]


@pytest.mark.parametrize(
    ("fetched", "kind"),
    [
        ([row(T0 - 2 * TF), row(T0 - TF), row(T0 - TF, 101.0)], "duplicate"),
        (rows(T0 - 3 * TF, T0 - TF, T0 - 2 * TF), "out_of_order"),
        (rows(T0 - 2 * TF, T0 - TF + 1), "bad_time"),
        ([OHLCV(1, math.nan, math.nan, math.nan, math.nan, math.nan)], "bad_time"),
    ],
)
def test_an_answer_that_cannot_be_trusted_is_not_used_at_all(
    fetched: list[OHLCV], kind: str
) -> None:
    p = plan(fetched, T0 - 3 * TF, count=3)
    assert p.problem is not None
    assert p.problem[0] == kind
    assert p.problem[1]  # and says why
    assert (p.window, p.publish) == ([], [])


def test_an_answer_out_of_order_names_both_candles() -> None:
    p = plan(rows(T0 - 3 * TF, T0 - TF, T0 - 2 * TF), T0 - 3 * TF, count=3)
    assert p.problem == (
        "out_of_order",
        f"candle at {fmt_ms(T0 - 2 * TF)} listed after {fmt_ms(T0 - TF)}",
    )


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


def test_a_value_ccxt_could_not_read_is_nan_not_zero() -> None:
    r = parse_ohlcv([T0, "1", "2", "0.5", "1.5", None])
    assert math.isnan(r.volume)
    with pytest.raises(ValueError, match="volume"):
        to_candle("BTC/USDT:USDT", "5m", r)


def test_a_refused_candle_names_its_field_and_rule() -> None:
    bad = OHLCV(T0 - TF, 100.0, 101.0, 99.0, -1.0, 5.0)  # a negative close
    p = plan([bad], T0 - 2 * TF, count=1)
    assert p.refused == [(T0 - TF, "close: Input should be greater than 0")]
    assert why_refused(ValueError("not a number")) == "not a number"
