"""``tradebot status`` reads heartbeats, leases, the book and the streams from Redis."""

from __future__ import annotations

import json

import pytest
import redis
from typer.testing import CliRunner

from shared import keys
from shared.cli import app
from tests.integration.ops.book_fill import (
    BTC_LONG,
    ETH_SHORT,
    T0,
    TRADE,
    fill_book,
    write_beat,
)


def status(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["status", *args], env=env)
    return result.exit_code, result.output


def test_status_of_an_empty_redis(cli_env: dict[str, str]) -> None:
    code, out = status(cli_env, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["services"] == []
    assert report["without_active"] == ["market_data", "executor", "state"]
    assert report["mode"] == "paper"  # from the settings: nothing runs
    assert report["halted"] is False
    assert report["universe"] is None
    assert report["positions"] == []
    assert report["trades"] == []
    assert report["account"] is None
    assert report["dlq"] == {"size": 0}
    assert [s["length"] for s in report["streams"]] == [0, 0, 0, 0, 0]

    code, out = status(cli_env)
    assert code == 0, out
    assert "services: none running" in out
    assert "open positions: none" in out


def test_status_reports_the_book_services_and_streams(
    cli_env: dict[str, str], sync_client: redis.Redis
) -> None:
    fill_book(sync_client, [BTC_LONG, ETH_SHORT])
    write_beat(sync_client, "executor", "executor-a", "active", mode="testnet")
    write_beat(sync_client, "executor", "executor-b", "standby", mode="testnet")
    write_beat(sync_client, "signals", "signals-1", "worker", mode="testnet")
    sync_client.set(keys.lease_key("executor"), "token", px=10_000)
    sync_client.set(keys.HALT, json.dumps({"reason": "maintenance", "ts": 1}))
    for i in range(5):
        sync_client.xadd(keys.STREAM_SIGNALS, {"d": f"m{i}"})
    sync_client.xgroup_create(keys.STREAM_SIGNALS, keys.GROUP_EXECUTOR, id="0")
    sync_client.xreadgroup(keys.GROUP_EXECUTOR, "c1", {keys.STREAM_SIGNALS: ">"}, count=2)
    sync_client.xadd(keys.STREAM_DLQ, {"d": "x"})

    code, out = status(cli_env, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert [(s["service"], s["instance"], s["role"]) for s in report["services"]] == [
        ("executor", "executor-a", "active"),
        ("executor", "executor-b", "standby"),
        ("signals", "signals-1", "worker"),
    ]
    assert all(0 <= s["age_s"] < 60 for s in report["services"])
    assert report["without_active"] == ["market_data", "state"]
    leases = {x["service"]: x for x in report["leases"]}
    assert leases["executor"]["held"]
    assert leases["executor"]["key"] == "tb:lease:executor"
    assert not leases["state"]["held"]
    assert report["mode"] == "testnet"  # the services' word beats the settings'
    assert report["halted"] is True
    assert report["halt"]["reason"] == "maintenance"
    assert report["universe"]["symbols"] == [BTC_LONG.symbol, ETH_SHORT.symbol]

    btc, eth = report["positions"]
    assert (btc["symbol"], btc["side"], btc["last_price"]) == (BTC_LONG.symbol, "long", 61_000.0)
    assert btc["unrealized_pnl"] == pytest.approx(0.01 * (61_000 - 60_000))
    assert eth["unrealized_pnl"] == pytest.approx(-1 * (2_900 - 3_000) * 0.5)
    assert eth["stop_price"] == ETH_SHORT.stop_price
    assert eth["exit_requested"] is None

    [trade] = report["trades"]
    assert (trade["symbol"], trade["pnl"], trade["reason"]) == (TRADE.symbol, 5.8, "trail")
    assert report["account"]["equity"] == 1_060.0
    assert report["md_clock_ms"] == T0 + 600_000
    signals = next(s for s in report["streams"] if s["stream"] == keys.STREAM_SIGNALS)
    assert signals["length"] == 5
    assert signals["groups"] == [{"group": "executor", "consumers": 1, "pending": 2, "lag": 3}]
    assert report["dlq"] == {"size": 1}

    code, out = status(cli_env)
    assert code == 0, out
    for text in (
        "HALTED",
        "maintenance",
        "no active instance: market_data, state",
        "BTC/USDT:USDT",
    ):
        assert text in out
    assert "+10.00" in out
    assert "+50.00" in out
    assert "equity 1,060.00" in out
