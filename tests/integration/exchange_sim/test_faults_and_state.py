"""Each injected fault reaches ccxt as the right error and is counted; state survives restarts."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt
import pytest

from tests.fixtures.sim import SimHandle, running_sim, start_sim

BTC = "BTC/USDT:USDT"


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("http5xx", ccxt.ExchangeNotAvailable),
        ("http429", ccxt.DDoSProtection),
        ("http418", ccxt.DDoSProtection),
        ("reset", ccxt.NetworkError),
        ("timeout", ccxt.RequestTimeout),
    ],
)
async def test_fault_kind_reaches_ccxt_and_is_counted(
    sim: SimHandle, kind: str, error: type[Exception]
) -> None:
    ex = sim.make_ccxt(timeout=300)
    await ex.load_markets()
    sim.set_faults({kind: 1.0}, seed=3, timeout_hold_s=0.6)
    with pytest.raises(error):
        await ex.create_order(BTC, "market", "buy", 0.01)
    assert sim.sim.faults.counts[kind] == 1
    assert sim.account.orders == {}, "the request was not executed"
    sim.set_faults({})
    await ex.create_order(BTC, "market", "buy", 0.01)
    assert len(sim.account.orders) == 1


async def test_drop_executes_then_hangs_up(sim: SimHandle) -> None:
    ex = sim.make_ccxt()
    await ex.load_markets()
    sim.set_faults({"drop": 1.0})
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "lost-1"})
    assert sim.sim.faults.counts["drop"] == 1
    sim.set_faults({})
    found = await ex.fetch_order(None, BTC, params={"clientOrderId": "lost-1"})
    assert (found["status"], found["filled"]) == ("closed", 0.01)


async def test_fault_draws_are_seeded_and_shared_rates_are_counted(sim: SimHandle) -> None:
    async def run(seed: int) -> list[str]:
        sim.set_faults({"http5xx": 0.3, "http429": 0.2}, seed=seed)
        outcomes = []
        async with aiohttp.ClientSession() as http:
            for _ in range(30):
                async with http.get(f"{sim.base_url}/fapi/v1/time") as r:
                    outcomes.append(str(r.status))
        return outcomes

    first = await run(5)
    counts = dict(sim.sim.faults.counts)
    assert await run(5) == first
    assert counts["requests"] == 30
    assert counts.get("http5xx", 0) + counts.get("http429", 0) == sum(s != "200" for s in first)
    assert 0 < first.count("429") < 30


async def test_injected_faults_are_listed_with_time_and_path(sim: SimHandle) -> None:
    sim.set_faults({"http5xx": 0.5}, seed=5)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(10):
            async with http.get(f"{sim.base_url}/fapi/v1/time") as r:
                statuses.append(r.status)
        async with http.get(f"{sim.base_url}/_sim/faults") as r:
            assert "events" not in await r.json()  # only when asked for
        async with http.get(f"{sim.base_url}/_sim/faults?events_after=0") as r:
            events = (await r.json())["events"]
        async with http.get(f"{sim.base_url}/_sim/faults?events_after=1") as r:
            later = (await r.json())["events"]
        async with http.get(f"{sim.base_url}/_sim/faults?events_after=-1") as r:
            assert (r.status, (await r.json())["code"]) == (400, -1130)
    assert len(events) == sum(s >= 500 for s in statuses) > 1
    assert [e["n"] for e in events] == list(range(1, len(events) + 1))
    assert {(e["method"], e["path"], e["kind"]) for e in events} == {
        ("GET", "/fapi/v1/time", "http5xx")
    }
    assert all(e["ms"] == sim.sim.now_ms() for e in events)  # the clock stands still here
    assert later == events[1:]


async def test_control_endpoint_sets_faults_and_steps(sim: SimHandle) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sim.base_url}/_sim/faults", json={"rates": {"http418": 1.0}, "seed": 1}
        ) as r:
            assert (await r.json())["rates"] == {"http418": 1.0}
        async with http.get(f"{sim.base_url}/fapi/v1/time") as r:
            assert r.status == 418
        async with http.post(f"{sim.base_url}/_sim/faults", json={"rates": {"bogus": 1}}) as r:
            assert r.status == 400
        async with http.post(f"{sim.base_url}/_sim/faults", json={"rates": {}}) as r:
            assert (await r.json())["counts"]["http418"] == 1
        async with http.post(
            f"{sim.base_url}/_sim/path", json={"symbol": "BTCUSDT", "prices": [61_000]}
        ) as r:
            assert r.status == 200
        async with http.post(f"{sim.base_url}/_sim/step", json={"n": 1}) as r:
            assert (await r.json())["events"] == [["BTCUSDT", 61_000.0]]
        async with http.get(f"{sim.base_url}/_sim/state") as r:
            assert (await r.json())["prices"]["BTCUSDT"] == 61_000.0


async def test_account_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    async with running_sim(state_file=state) as sim:
        ex = sim.make_ccxt()
        await ex.load_markets()
        await ex.set_leverage(5, BTC)
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "e-9"})
        stop = await ex.create_order(
            BTC, "market", "sell", 0.01, params={"stopPrice": 59_000.0, "reduceOnly": True}
        )
        wallet = sim.account.wallet
    saved = json.loads(state.read_text())
    assert saved["specs"]["BTCUSDT"]["price_precision"] == 1
    async with running_sim(state_file=state) as again:
        ex = again.make_ccxt()
        await ex.load_markets()
        positions = await ex.fetch_positions([BTC])
        assert (positions[0]["contracts"], positions[0]["entryPrice"]) == (0.01, 60_000.0)
        assert (await ex.fetch_balance())["USDT"]["total"] == pytest.approx(wallet)
        assert (await ex.fetch_order(None, BTC, params={"clientOrderId": "e-9"}))["filled"] == 0.01
        opened = await ex.fetch_open_orders(BTC, params={"trigger": True})
        assert [o["id"] for o in opened] == [stop["id"]]
        assert again.account.leverage_of("BTCUSDT") == 5
        again.set_path("BTCUSDT", [58_000.0])
        again.step()
        assert await ex.fetch_positions([BTC]) == []


async def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    state.write_text('{"account": {"wallet": 1}}')
    with pytest.raises(ValueError, match="not a simulator state file"):
        await start_sim(state_file=state)
