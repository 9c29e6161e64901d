"""Entry risk checks: each rule refuses on its own, in a fixed order; sizes and slot order."""

from __future__ import annotations

import dataclasses

import pytest

from services.executor import orders as o
from services.executor.risk import EntryContext, by_priority, check_entry
from services.signals.rules import StrategyParams
from services.signals.sizing import MarketLimits
from shared.config import Settings
from shared.schemas import EntrySignal, entry_signal_id

S = Settings()
OPEN_MS = 1_700_000_000_000
CLOSE_MS = OPEN_MS + S.timeframe_ms


def signal(symbol: str = "SOL/USDT:USDT", vr: float = 2.0, side: str = "long") -> EntrySignal:
    return EntrySignal(
        id=entry_signal_id(symbol, "5m", OPEN_MS, side),  # type: ignore[arg-type]
        symbol=symbol, timeframe="5m", candle_open_time=OPEN_MS, side=side,  # type: ignore[arg-type]
        price=100.0, body_pct=0.01, vol_ratio=vr, chop=40.0, ts=CLOSE_MS,
    )  # fmt: skip


GOOD = EntryContext(
    now_ms=CLOSE_MS + 1_000,
    halted=False,
    occupied=set(),
    universe={"SOL/USDT:USDT"},
    limits=MarketLimits(amount_step=0.1, min_amount=0.1, min_notional=5.0),
    equity=10_000.0,
    free_margin=10_000.0,
)


def test_a_good_entry_is_sized_from_equity() -> None:
    decision = check_entry(signal(), GOOD, S)
    # margin 10 000 * 0.8 / 3 = 2 666.67; x3 / 100 = 80.0 (step 0.1)
    assert decision.refused is None
    assert decision.quantity == pytest.approx(80.0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"now_ms": CLOSE_MS + S.timeframe_ms + 1}, "stale"),
        ({"halted": True}, "halted"),
        ({"limits": None}, "unknown_symbol"),
        ({"universe": {"BTC/USDT:USDT"}}, "not_in_universe"),
        ({"universe": None}, "not_in_universe"),
        ({"occupied": {"SOL/USDT:USDT"}}, "position_open"),
        ({"occupied": {"A", "B", "C"}}, "no_free_slot"),
        ({"equity": 0.5}, "too_small"),
        ({"free_margin": 100.0}, "insufficient_margin"),
    ],
)
def test_each_rule_refuses_by_name(change: dict[str, object], reason: str) -> None:
    decision = check_entry(signal(), dataclasses.replace(GOOD, **change), S)  # type: ignore[arg-type]
    assert decision.refused == reason
    assert decision.quantity == 0.0
    assert decision.detail


def test_a_signal_exactly_one_timeframe_old_is_still_taken() -> None:
    ctx = dataclasses.replace(GOOD, now_ms=CLOSE_MS + S.timeframe_ms)
    assert check_entry(signal(), ctx, S).refused is None


def test_slot_order_is_vol_ratio_then_symbol() -> None:
    ordered = by_priority([signal("B", 2.0), signal("C", 5.0), signal("A", 2.0)])
    assert [s.symbol for s in ordered] == ["C", "A", "B"]


def test_stop_prices_sit_on_the_tick_grid() -> None:
    p = StrategyParams.from_settings(S)
    assert o.stop_price_for("long", 100.0, p, 0.01) == pytest.approx(98.0)
    assert o.stop_price_for("short", 0.187468, p, 0.0000001) == pytest.approx(0.1912174)
    assert o.round_to_tick(181.09936, 0.001) == pytest.approx(181.099)
    # never tighter than the contract: a long's stop goes down, a short's up
    assert o.stop_price_for("long", 150.0999, p, 0.01) == pytest.approx(147.09)
    assert o.stop_price_for("short", 150.0999, p, 0.01) == pytest.approx(153.11)


def test_intents_close_with_the_opposite_side_reduce_only() -> None:
    stop = o.stop_intent("p", "SOL/USDT:USDT", "short", 3.0, 102.0, 0, 1)
    exit_ = o.exit_intent("p", "SOL/USDT:USDT", "long", 3.0, "p|exit|trail", 1)
    assert (stop.side, stop.reduce_only, stop.type, stop.stop_price) == (
        "buy",
        True,
        "stop_market",
        102.0,
    )
    assert (exit_.side, exit_.reduce_only, exit_.type) == ("sell", True, "market")
    assert o.side_closed_by(stop.side) == "short"
    assert o.side_closed_by(exit_.side) == "long"


def test_every_order_of_a_position_has_its_own_stable_client_id() -> None:
    ids = {
        o.entry_intent("p", "X", "long", 1.0, 1).client_order_id,
        o.exit_intent("p", "X", "long", 1.0, "p|exit|trail", 1).client_order_id,
        o.exit_intent("p", "X", "long", 1.0, "p|exit|manual", 2).client_order_id,
        o.stop_intent("p", "X", "long", 1.0, 1.0, 0, 1).client_order_id,
        o.stop_intent("p", "X", "long", 1.0, 1.0, 1, 1).client_order_id,
    }
    assert len(ids) == 4  # one exit per position, whatever asked for it


# What the operator reads for each refusal (the refused event and the executor's log line).
@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"now_ms": CLOSE_MS - 600_000}, "not_closed", "candle closes in 600s"),
        ({"now_ms": CLOSE_MS + 900_000}, "stale", "candle closed 900s ago"),
        ({"halted": True}, "halted", "trading is halted (tradebot resume)"),
        ({"limits": None}, "unknown_symbol", "the exchange lists no such market"),
        ({"universe": None}, "not_in_universe", "not in the active universe"),
        ({"occupied": {"SOL/USDT:USDT"}}, "position_open", "a position or entry is open"),
        ({"occupied": {"A", "B", "C"}}, "no_free_slot", "3/3 slots taken"),
        ({"equity": 0.5}, "too_small", "equity 0.50 sizes below the market minimum"),
        (
            {"limits": MarketLimits(amount_step=0.1, max_amount=79.9)},
            "too_large",
            "quantity 80 above the market maximum 79.9",
        ),
        ({"free_margin": 100.0}, "insufficient_margin", "needs 2670.67 margin, 100.00 free"),
    ],
)
def test_each_refusal_says_why_in_words(
    change: dict[str, object], reason: str, detail: str
) -> None:
    decision = check_entry(signal(), dataclasses.replace(GOOD, **change), S)  # type: ignore[arg-type]
    assert (decision.refused, decision.detail, decision.quantity) == (reason, detail, 0.0)


@pytest.mark.parametrize(
    "change",
    [
        {"now_ms": CLOSE_MS - 1_000},  # a second early by another server's clock: accepted
        {"occupied": {"A", "B"}},  # the last free slot
        {"limits": MarketLimits(amount_step=0.1, max_amount=80.0)},  # exactly the maximum
        {"limits": MarketLimits(amount_step=0.1)},  # no maximum
        # margin 80 * 100 / 3 plus the fees of opening and closing at 3x: exactly enough
        {"free_margin": 80 * 100.0 / 3 * (1 + 0.0005 * 3)},
    ],
)
def test_each_limit_is_inclusive(change: dict[str, object]) -> None:
    decision = check_entry(signal(), dataclasses.replace(GOOD, **change), S)  # type: ignore[arg-type]
    assert decision.refused is None
    assert decision.quantity == pytest.approx(80.0)


def test_the_margin_needed_counts_the_fees_at_leverage() -> None:
    # 2 666.67 margin + 2 666.67 * 3 * 0.0005 = 2 670.67: a cent less is refused
    short = dataclasses.replace(GOOD, free_margin=2_670.66)
    assert check_entry(signal(), short, S).refused == "insufficient_margin"
    assert check_entry(signal(), dataclasses.replace(GOOD, free_margin=2_670.67), S).quantity


def test_the_rules_are_checked_in_their_order() -> None:
    """A signal breaking every rule is refused for the first: not_closed before stale ..."""
    every = dataclasses.replace(
        GOOD, halted=True, limits=None, universe=None, occupied={"SOL/USDT:USDT", "A", "B"},
        equity=0.0, free_margin=0.0,
    )  # fmt: skip
    order = ["halted", "unknown_symbol", "not_in_universe", "position_open", "no_free_slot"]
    fixes: list[dict[str, object]] = [
        {"halted": False},
        {"limits": GOOD.limits},
        {"universe": GOOD.universe},
        {"occupied": {"A", "B", "C"}},
        {"occupied": set()},
    ]
    for expected, fix in zip(order, fixes, strict=True):
        assert check_entry(signal(), every, S).refused == expected
        every = dataclasses.replace(every, **fix)  # type: ignore[arg-type]
    assert check_entry(signal(), every, S).refused == "too_small"
    every = dataclasses.replace(every, equity=10_000.0)
    assert check_entry(signal(), every, S).refused == "insufficient_margin"
    early = dataclasses.replace(every, now_ms=CLOSE_MS - 2_000, halted=True)
    assert check_entry(signal(), early, S).refused == "not_closed"
    late = dataclasses.replace(every, now_ms=CLOSE_MS + S.timeframe_ms + 1, halted=True)
    assert check_entry(signal(), late, S).refused == "stale"


def test_an_entry_of_less_than_one_unit_is_taken() -> None:
    # margin 100 * 0.8 / 3 = 26.67; x3 / 100 = 0.8 (step 0.1, notional 80 >= 5)
    decision = check_entry(signal(), dataclasses.replace(GOOD, equity=100.0), S)
    assert decision.refused is None
    assert decision.quantity == pytest.approx(0.8)
