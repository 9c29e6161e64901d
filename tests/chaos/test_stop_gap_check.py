"""Invariant 5's verdict: the target for undisturbed positions, the bound for disrupted ones.

``check_stop_gaps`` is pure over the gaps and the harness's disruption windows, so these
cases pin down what fails it without running the chaos.
"""

from __future__ import annotations

from tests.chaos.invariants import Disruption, Gap, causes_of, check_stop_gaps

TARGET, BOUND = 0.4, 20.0


def gap(start_s: float, wall_s: float, symbol: str = "BTCUSDT") -> Gap:
    return Gap(symbol, f"{symbol}|pid", 0, 1, start_s, wall_s, "stop placed")


KILL = Disruption("executor killed", 100.0, 108.0)


def test_a_gap_is_disrupted_only_by_a_window_it_overlaps() -> None:
    assert causes_of(gap(99.0, 1.5), [KILL]) == ["executor killed"]  # runs into it
    assert causes_of(gap(107.9, 3.0), [KILL]) == ["executor killed"]  # starts inside it
    assert causes_of(gap(95.0, 4.9), [KILL]) == []  # ends before it
    assert causes_of(gap(108.1, 1.0), [KILL]) == []  # starts after it
    both = [KILL, Disruption("faults timeout", 90.0, 101.0)]
    assert causes_of(gap(99.0, 2.0), both) == ["executor killed", "faults timeout"]


def test_undisturbed_gaps_under_the_target_and_disrupted_under_the_bound_hold() -> None:
    inv = check_stop_gaps([gap(10.0, 0.1), gap(101.0, 6.5)], TARGET, BOUND, [KILL])
    assert inv.ok, inv.problems
    assert inv.asserted
    assert "1 positions undisturbed: max 0.100 s" in inv.figure
    assert "1 next to a disruption: max 6.500 s" in inv.figure


def test_an_undisturbed_gap_at_the_target_fails() -> None:
    inv = check_stop_gaps([gap(10.0, TARGET, "ETHUSDT"), gap(101.0, 6.5)], TARGET, BOUND, [KILL])
    assert not inv.ok
    assert len(inv.problems) == 1
    assert inv.problems[0].startswith("ETHUSDT ETHUSDT|pid: 0.400 s without a stop")
    assert "undisturbed" in inv.problems[0]


def test_a_disrupted_gap_at_the_bound_fails_and_names_its_cause() -> None:
    inv = check_stop_gaps([gap(101.0, BOUND)], TARGET, BOUND, [KILL])
    assert not inv.ok
    assert inv.problems == [
        "BTCUSDT BTCUSDT|pid: 20.000 s without a stop (exchange 0..1, until stop placed; "
        "disrupted by executor killed)"
    ]


def test_no_positions_holds() -> None:
    inv = check_stop_gaps([], TARGET, BOUND, [KILL])
    assert inv.ok
    assert inv.figure == "no positions"
