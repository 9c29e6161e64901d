"""Signature and timestamp checks as Binance does them; seeded, validated fault plans."""

from __future__ import annotations

import pytest

from services.exchange_sim.auth import HOST_BAND_MS, Clocks, check_time, sign, verify
from services.exchange_sim.engine import SimError
from services.exchange_sim.faults import (
    GARBAGE_KINDS,
    KINDS,
    FaultConfigError,
    FaultPlan,
    parse_rates,
)

KEY, SECRET = "k", "s"
NOW = 1_700_000_000_000
MARKET = 1_600_000_000_000  # a market clock far from the host clock


def signed(params: str, secret: str = SECRET) -> str:
    return f"{params}&signature={sign(params, secret)}"


def check(
    query: str = "",
    body: str = "",
    key: str | None = KEY,
    now: int = NOW,
    charset: str | None = None,
) -> dict[str, str]:
    return verify(key, query, body.encode(), charset, KEY, SECRET, Clocks(now, MARKET, now))


def code_of(**kw: str | int | None) -> int:
    with pytest.raises(SimError) as e:
        check(**kw)  # type: ignore[arg-type]
    return e.value.code


def test_signature_over_query_or_body_passes() -> None:
    q = f"symbol=BTCUSDT&timestamp={NOW}"
    assert check(query=signed(q))["symbol"] == "BTCUSDT"
    assert check(body=signed(q))["timestamp"] == str(NOW)
    # totalParams = query + body, the signature sent in the body
    both = sign(f"symbol=BTCUSDT&timestamp={NOW}side=BUY", SECRET)
    assert check(query="symbol=BTCUSDT&timestamp=" + str(NOW), body=f"side=BUY&signature={both}")


def test_key_signature_and_clock_errors() -> None:
    q = f"timestamp={NOW}"
    assert code_of(query=signed(q), key=None) == -2014
    assert code_of(query=signed(q), key="other") == -2015
    assert code_of(query=signed(q, "wrong")) == -1022
    assert code_of(query=q) == -1102
    assert code_of(query=signed(f"timestamp={NOW - 5001}")) == -1021
    assert code_of(query=signed(f"timestamp={NOW + 1000}")) == -1021
    assert check(query=signed(f"timestamp={NOW - 9000}&recvWindow=10000"))
    assert code_of(query=signed(f"timestamp={NOW}&recvWindow=70000")) == -1131


def test_parameter_text_is_checked_as_binance_does() -> None:
    q = f"timestamp={NOW}"
    assert code_of(query=signed(f"{q}&recvWindow=-1")) == -1100
    assert code_of(query=signed(f"{q}&recvWindow=0")) == -1130
    assert code_of(query=signed("timestamp=1e12")) == -1100
    assert code_of(query=signed("timestamp=")) == -1102
    assert code_of(query=signed(f"{q}&a=1&a=2")) == -1101
    assert code_of(query=f"{q}&signature=" + "é" * 64) == -1100
    assert code_of(query=f"{q}&signature=" + "zz" * 32) == -1022
    assert code_of(query=signed(q), key="k\udcff") == -2014
    assert code_of(body=signed(q), charset="klingon") == -1100
    assert code_of(body=signed(q), charset="utf-16") == -1100
    assert check(body=signed(q), charset="utf-8")["timestamp"] == str(NOW)


def refusal(timestamp: int, clocks: Clocks, recv_window: int = 5000) -> int | None:
    """Return the code the time check refuses a timestamp with, or None when it passes."""
    try:
        check_time(timestamp, recv_window, clocks)
    except SimError as e:
        return e.code
    return None


def test_a_host_clock_timestamp_is_judged_by_the_host_clock_alone() -> None:
    # The market clock stands exactly where a late request's timestamp is: still refused.
    late = NOW - 5001
    assert refusal(late, Clocks(NOW, late, NOW)) == -1021
    assert refusal(late, Clocks(NOW, late + 3000, NOW - 10**6)) == -1021
    assert refusal(NOW - 5000, Clocks(NOW, MARKET, NOW - 10**6)) is None
    assert refusal(NOW + 999, Clocks(NOW, MARKET, NOW)) is None
    assert refusal(NOW + 1000, Clocks(NOW, NOW + 5000, NOW)) == -1021
    assert refusal(NOW - 9000, Clocks(NOW, MARKET, NOW), recv_window=10_000) is None


def test_a_market_clock_timestamp_needs_a_market_clock_that_moved_within_recv_window() -> None:
    far = NOW + 10 * HOST_BAND_MS  # a market clock a while ahead of the host's
    assert refusal(far - 4000, Clocks(NOW, far, NOW - 100)) is None
    assert refusal(far - 6000, Clocks(NOW, far, NOW - 100)) == -1021
    assert refusal(far + 1000, Clocks(NOW, far, NOW - 100)) == -1021
    # The market clock has not moved for longer than recvWindow: the age is unknown.
    assert refusal(far, Clocks(NOW, far, NOW - 5001)) == -1021
    assert refusal(far, Clocks(NOW, far, NOW - 5001), recv_window=6000) is None


def test_fault_draws_repeat_for_a_seed_and_are_counted() -> None:
    a = FaultPlan({"drop": 0.3, "http5xx": 0.2}, seed=9)
    b = FaultPlan({"drop": 0.3, "http5xx": 0.2}, seed=9)
    draws = [a.draw() for _ in range(200)]
    assert draws == [b.draw() for _ in range(200)]
    assert a.counts["drop"] == draws.count("drop") > 0
    assert a.counts["http5xx"] == draws.count("http5xx") > 0
    assert a.counts["requests"] == 200


def test_fault_config_is_validated() -> None:
    with pytest.raises(FaultConfigError):
        FaultPlan({"nope": 0.1})
    with pytest.raises(FaultConfigError):
        FaultPlan({"drop": 0.7, "reset": 0.7})
    for bad in ("x", float("nan"), float("inf"), -0.1, True, None):
        with pytest.raises(FaultConfigError):
            FaultPlan({"drop": bad})  # type: ignore[dict-item]
    with pytest.raises(FaultConfigError):
        FaultPlan(garbage={"html_200": 2.0})
    plan = FaultPlan({"drop": 0.1}, garbage={"missing": 0.5})
    with pytest.raises(FaultConfigError):
        plan.configure({"drop": 0.2}, garbage={"bogus": 0.1})
    assert (plan.rates, plan.garbage) == ({"drop": 0.1}, {"missing": 0.5})  # unchanged
    with pytest.raises(FaultConfigError):
        parse_rates("drop=lots")
    assert parse_rates("drop=0.1, http429=0.05") == {"drop": 0.1, "http429": 0.05}
    assert parse_rates("all=0.6") == pytest.approx(dict.fromkeys(KINDS, 0.1))
    assert parse_rates("all=0.9", GARBAGE_KINDS) == pytest.approx(dict.fromkeys(GARBAGE_KINDS, 0.1))


def test_garbage_draws_only_applicable_kinds_and_counts_them() -> None:
    plan = FaultPlan(garbage={"missing": 0.5, "html_200": 0.5}, seed=4)
    draws = [plan.draw_garbage(("html_200", "html_5xx")) for _ in range(100)]
    assert set(draws) == {"html_200", None}
    assert plan.counts["html_200"] == draws.count("html_200")
    assert plan.counts["market_answers"] == 100
    assert plan.counts["missing"] == 0
