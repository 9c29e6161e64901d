"""The pure parts of the operator commands: PnL, missing actives, mode, exit signals, DLQ text."""

from __future__ import annotations

import pytest

from shared.book import BookPosition, Heartbeat, LastPrice
from shared.config import Settings
from shared.ops.control import manual_exit
from shared.ops.dlq import shorten
from shared.ops.status import pick_mode, position_row, without_active
from shared.schemas import ExitSignal, encode


def pos(side: str, entry: float = 100.0, qty: float = 2.0) -> BookPosition:
    return BookPosition.model_validate(
        {
            "position_id": f"X/USDT:USDT|5m|0|{side}",
            "symbol": "X/USDT:USDT",
            "side": side,
            "quantity": qty,
            "entry_price": entry,
            "entry_time": 0,
            "stop_price": 98.0,
            "best_price": 104.0,
        }
    )


def beat(service: str, role: str, mode: str = "paper") -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "service": service,
            "instance": f"{service}-1",
            "pid": 1,
            "role": role,
            "mode": mode,
            "started_ms": 0,
            "ts": 0,
        }
    )


def test_unrealized_pnl_is_signed_by_side() -> None:
    assert pos("long").unrealized(103.0) == pytest.approx(6.0)
    assert pos("short").unrealized(103.0) == pytest.approx(-6.0)
    assert pos("short").unrealized(95.0) == pytest.approx(10.0)


def test_position_row_without_a_last_price_has_no_pnl() -> None:
    row = position_row(pos("long"), None)
    assert row["last_price"] is None
    assert row["unrealized_pnl"] is None
    assert position_row(pos("long"), LastPrice(price=101.0, ts=1))["unrealized_pnl"] == 2.0


def test_without_active_lists_single_active_services_lacking_an_active_copy() -> None:
    beats = [beat("executor", "standby"), beat("state", "active"), beat("signals", "worker")]
    assert without_active(beats) == ["market_data", "executor"]
    assert without_active([]) == ["market_data", "executor", "state"]


def test_mode_comes_from_the_services_else_the_settings() -> None:
    settings = Settings()
    assert pick_mode([], settings) == "paper"
    assert pick_mode([beat("state", "active", "live")], settings) == "live"
    mixed = [beat("state", "active", "live"), beat("executor", "active", "paper")]
    assert pick_mode(mixed, settings) == "live,paper"


def test_manual_exit_is_priced_at_the_last_price_or_the_entry() -> None:
    p = pos("short")
    at_last = manual_exit(p, LastPrice(price=97.5, ts=5), ts=10)
    assert at_last.id == "X/USDT:USDT|5m|0|short|exit|manual"
    assert (at_last.price, at_last.best_price, at_last.side, at_last.ts) == (
        97.5,
        104.0,
        "short",
        10,
    )
    assert manual_exit(p, None, ts=10).price == 100.0
    assert isinstance(at_last, ExitSignal)
    assert encode(at_last)  # a valid wire message


def test_shorten_keeps_one_line() -> None:
    assert shorten("a\n  b") == "a b"
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
