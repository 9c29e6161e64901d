"""Signature and timestamp checks as Binance does them; seeded, validated fault plans."""

from __future__ import annotations

import pytest

from services.exchange_sim.auth import sign, verify
from services.exchange_sim.engine import SimError
from services.exchange_sim.faults import KINDS, FaultConfigError, FaultPlan, parse_rates

KEY, SECRET = "k", "s"
NOW = 1_700_000_000_000


def signed(params: str, secret: str = SECRET) -> str:
    return f"{params}&signature={sign(params, secret)}"


def check(query: str = "", body: str = "", key: str | None = KEY, now: int = NOW) -> dict[str, str]:
    return verify(key, query, body, KEY, SECRET, (now,))


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


def test_either_clock_accepts_a_timestamp() -> None:
    q = signed(f"timestamp={NOW}")
    assert verify(KEY, q, "", KEY, SECRET, (NOW - 10**9, NOW + 200))


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
    with pytest.raises(FaultConfigError):
        parse_rates("drop=lots")
    assert parse_rates("drop=0.1, http429=0.05") == {"drop": 0.1, "http429": 0.05}
    assert parse_rates("all=0.6") == pytest.approx(dict.fromkeys(KINDS, 0.1))
