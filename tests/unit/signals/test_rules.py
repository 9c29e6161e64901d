"""Each clause of docs/strategy.md's entry and exit rules, at its exact boundary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from services.signals.rules import (
    LONG,
    SHORT,
    ExitReason,
    OpenPosition,
    StrategyParams,
    entry_fill_price,
    entry_side,
    long_signal,
    on_price,
    open_position,
    stop_price,
    trail_fill_price,
)
from shared.config import Settings

P = StrategyParams.from_settings(Settings())
below = math.nextafter


def long_ok(**kw: float) -> int | None:
    args = {"open_": 100.0, "close": 101.0, "body": 0.01, "vr": 2.0, "chop": 40.0} | kw
    return entry_side(args["open_"], args["close"], args["body"], args["vr"], args["chop"], P)


def short_ok(**kw: float) -> int | None:
    args = {"open_": 101.0, "close": 100.0, "body": 0.01, "vr": 2.0, "chop": 40.0} | kw
    return entry_side(args["open_"], args["close"], args["body"], args["vr"], args["chop"], P)


def test_long_body_threshold_is_inclusive() -> None:
    assert long_ok(body=0.007) == LONG
    assert long_ok(body=below(0.007, 0)) is None


def test_short_body_threshold_is_inclusive() -> None:
    assert short_ok(body=0.007) == SHORT
    assert short_ok(body=below(0.007, 0)) is None


def test_long_needs_close_strictly_above_open() -> None:
    assert long_ok(close=100.0) is None


def test_short_needs_close_strictly_below_open() -> None:
    assert short_ok(close=101.0) is None


def test_long_vol_ratio_is_inclusive_at_long_vr() -> None:
    assert long_ok(vr=1.8) == LONG
    assert long_ok(vr=below(1.8, 0)) is None


def test_short_vol_ratio_is_inclusive_at_short_vr() -> None:
    assert short_ok(vr=1.5) == SHORT
    assert short_ok(vr=below(1.5, 0)) is None
    assert long_ok(vr=1.5) is None  # the short threshold does not open longs


def test_chop_threshold_is_exclusive() -> None:
    assert long_ok(chop=50.0) is None
    assert long_ok(chop=below(50.0, 0)) == LONG
    assert short_ok(chop=50.0) is None
    assert short_ok(chop=below(50.0, 0)) == SHORT


def test_undefined_indicators_never_enter() -> None:
    assert long_ok(vr=math.nan) is None
    assert long_ok(chop=math.nan) is None
    assert short_ok(vr=math.nan) is None


def test_vectorized_entry_is_the_same_rule() -> None:
    o = np.array([100.0, 100.0, 100.0])
    c = np.array([101.0, 101.0, 101.0])
    body = np.array([0.007, 0.007, 0.007])
    got = long_signal(o, c, body, np.array([1.8, 1.8, 2.0]), np.array([40.0, 50.0, np.nan]), P)
    assert got.tolist() == [True, False, False]


def test_entry_fill_and_stop_move_against_the_trader() -> None:
    p = dataclasses.replace(P, slippage=0.001)
    assert entry_fill_price(LONG, 100.0, p) == 100.0 * 1.001
    assert entry_fill_price(SHORT, 100.0, p) == 100.0 * 0.999
    assert trail_fill_price(LONG, 100.0, p) == 100.0 * 0.999
    assert trail_fill_price(SHORT, 100.0, p) == 100.0 * 1.001
    assert stop_price(LONG, 100.0, P) == 100.0 * (1 - 0.02)
    assert stop_price(SHORT, 100.0, P) == 100.0 * (1 + 0.02)


# ---- exits ---------------------------------------------------------------------------------


def test_long_stop_is_inclusive_and_fills_at_the_stop_price() -> None:
    pos = open_position(LONG, 100.0, P)
    hit = on_price(pos, pos.stop, P)
    assert (hit.reason, hit.price) == (ExitReason.STOP, pos.stop)
    assert on_price(pos, math.nextafter(pos.stop, 200), P).reason is None
    assert on_price(pos, 90.0, P).price == pos.stop  # gapped through: still the stop price


def test_short_stop_is_inclusive() -> None:
    pos = open_position(SHORT, 100.0, P)
    assert on_price(pos, pos.stop, P).reason is ExitReason.STOP
    assert on_price(pos, math.nextafter(pos.stop, 0), P).reason is None


def test_stop_is_checked_before_the_trail() -> None:
    # armed trail at best 110 whose level is above the stop: a price at the stop is a stop
    pos = OpenPosition(LONG, 100.0, 98.0, 110.0)
    assert on_price(pos, 97.0, P).reason is ExitReason.STOP


def test_best_updates_before_the_trail_check() -> None:
    pos = open_position(LONG, 100.0, P)
    d = on_price(pos, 103.0, P)
    assert d.reason is None
    assert d.position.best == 103.0
    # a new high never exits: the trail level is measured from the updated best
    assert on_price(d.position, 103.5, P).position.best == 103.5


def test_trail_arms_inclusively_at_trail_activate() -> None:
    entry = 100.0
    armed = OpenPosition(LONG, entry, 98.0, entry * (1 + 0.02))
    level = armed.best * (1 - 0.005)
    assert on_price(armed, level, P).reason is ExitReason.TRAIL
    unarmed = OpenPosition(LONG, entry, 98.0, below(entry * (1 + 0.02), 0))
    assert on_price(unarmed, 99.0, P).reason is None


def test_trail_exit_is_inclusive_at_the_level_and_at_the_event_price() -> None:
    pos = OpenPosition(LONG, 100.0, 98.0, 103.0)
    level = 103.0 * (1 - 0.005)
    d = on_price(pos, level, P)
    assert (d.reason, d.price) == (ExitReason.TRAIL, level)
    assert on_price(pos, math.nextafter(level, 200), P).reason is None


def test_surge_tightens_the_trail_inclusively() -> None:
    entry = 100.0
    surge_best = entry * (1 + 0.04)
    pos = OpenPosition(LONG, entry, 98.0, surge_best)
    tight = surge_best * (1 - 0.0025)
    assert on_price(pos, tight, P).reason is ExitReason.TRAIL
    just_below_surge = below(surge_best, 0)
    pos2 = OpenPosition(LONG, entry, 98.0, just_below_surge)
    assert on_price(pos2, just_below_surge * (1 - 0.0025), P).reason is None
    assert on_price(pos2, just_below_surge * (1 - 0.005), P).reason is ExitReason.TRAIL


def test_short_trail_and_surge_mirror_the_long() -> None:
    entry = 100.0
    pos = OpenPosition(SHORT, entry, 102.0, entry * (1 - 0.02))
    level = pos.best * (1 + 0.005)
    assert on_price(pos, level, P).reason is ExitReason.TRAIL
    assert on_price(pos, math.nextafter(level, 0), P).reason is None
    surged = OpenPosition(SHORT, entry, 102.0, entry * (1 - 0.04))
    assert on_price(surged, surged.best * (1 + 0.0025), P).reason is ExitReason.TRAIL
    d = on_price(open_position(SHORT, entry, P), 97.0, P)
    assert d.reason is None
    assert d.position.best == 97.0
