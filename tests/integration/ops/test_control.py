"""``tradebot halt``, ``resume`` and ``flatten`` against a real Redis; a stub plays the executor."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from shared import keys
from shared.cli import app
from shared.schemas import ExitSignal, decode, exit_signal_id
from tests.integration.ops.book_fill import BTC_LONG, ETH_SHORT, fill_book


def invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.output


def exits_published(client: redis.Redis) -> list[ExitSignal]:
    rows: Any = client.xrange(keys.STREAM_SIGNALS)
    return [decode(fields[b"d"], ExitSignal) for _, fields in rows]


def test_halt_then_resume(cli_env: dict[str, str], sync_client: redis.Redis) -> None:
    code, out = invoke(cli_env, "halt", "--reason", "exchange maintenance")
    assert code == 0, out
    assert "Trading halted (reason: exchange maintenance)" in out
    halt = json.loads(sync_client.get(keys.HALT) or b"null")
    assert halt["reason"] == "exchange maintenance"
    assert isinstance(halt["ts"], int)

    code, out = invoke(cli_env, "resume")
    assert code == 0, out
    assert "Trading resumed (was halted, reason: exchange maintenance)" in out
    assert not sync_client.exists(keys.HALT)

    code, out = invoke(cli_env, "resume")
    assert code == 0, out
    assert "Trading was not halted; nothing changed." in out


def test_flatten_asks_first_and_does_nothing_when_declined(
    cli_env: dict[str, str], sync_client: redis.Redis
) -> None:
    fill_book(sync_client, [BTC_LONG, ETH_SHORT])
    code, out = invoke(cli_env, "flatten", stdin="n\n")
    assert code == 1, out
    assert "BTC/USDT:USDT long 0.01 @ 60000" in out
    assert "Close them all at market and halt new entries?" in out
    assert not sync_client.exists(keys.HALT)
    assert sync_client.xlen(keys.STREAM_SIGNALS) == 0


def test_flatten_reports_positions_left_when_nothing_closes_them(
    cli_env: dict[str, str], sync_client: redis.Redis
) -> None:
    fill_book(sync_client, [BTC_LONG, ETH_SHORT])
    code, out = invoke(cli_env, "flatten", "--timeout", "0.5", stdin="y\n")
    assert code == 1, out
    assert json.loads(sync_client.get(keys.HALT) or b"null")["reason"] == "flatten"
    exits = exits_published(sync_client)
    assert sorted(e.position_id for e in exits) == sorted(
        [BTC_LONG.position_id, ETH_SHORT.position_id]
    )
    btc = next(e for e in exits if e.symbol == BTC_LONG.symbol)
    assert btc.id == exit_signal_id(BTC_LONG.position_id, "manual")
    assert (btc.side, btc.reason, btc.price, btc.best_price) == (
        "long",
        "manual",
        61_000.0,
        60_000.0,
    )
    assert "2 position(s) still open after 0.5s" in out
    assert "Trading stays halted until `tradebot resume`" in out


@pytest.fixture
def executor_stub(sync_client: redis.Redis) -> Iterator[None]:
    """Play executor and state: remove from the book each position a manual exit names."""
    stop = threading.Event()
    reader = redis.Redis(connection_pool=sync_client.connection_pool)

    def run() -> None:
        last = "0"
        while not stop.is_set():
            batches: Any = reader.xread({keys.STREAM_SIGNALS: last}, block=100)
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    reader.hdel(keys.BOOK_POSITIONS, decode(fields[b"d"], ExitSignal).position_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_flatten_returns_once_the_book_is_empty(
    cli_env: dict[str, str], sync_client: redis.Redis, executor_stub: None
) -> None:
    fill_book(sync_client, [BTC_LONG, ETH_SHORT])
    code, out = invoke(cli_env, "flatten", "--yes", "--timeout", "60")
    assert code == 0, out
    assert "All 2 position(s) closed. Trading stays halted until `tradebot resume`." in out
    assert not sync_client.hlen(keys.BOOK_POSITIONS)
    assert len(exits_published(sync_client)) == 2
    assert sync_client.exists(keys.HALT)


def test_flatten_with_no_position_still_halts(
    cli_env: dict[str, str], sync_client: redis.Redis
) -> None:
    code, out = invoke(cli_env, "flatten")
    assert code == 0, out
    assert "No open positions." in out
    assert "Nothing to close. Trading stays halted" in out
    assert sync_client.exists(keys.HALT)
