"""Failures over real HTTP: credentials, clock skew, insufficient margin, injected faults."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import aiohttp
import ccxt.async_support as ccxt
import pytest
from prometheus_client import REGISTRY

from shared.exchange import ExchangeClient
from shared.exchange_errors import (
    AuthError,
    InsufficientMargin,
    OutcomeUnknown,
    SendRefused,
    TemporaryError,
)
from shared.exchange_models import make_client_order_id
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.exchange.conftest import CHAOS, CHAOS_TIMEOUT_HOLD_S, FAST, MakeClient
from tests.integration.exchange.intents import Intent, place_until_settled

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
HOUR_MS = 3_600_000
FAULT_KINDS = ("http5xx", "http429", "http418", "timeout", "reset", "drop")
TWENTY_PCT = dict.fromkeys(FAULT_KINDS, 0.2 / len(FAULT_KINDS))  # every kind, 20% in all


def calls(call: str, kind: str) -> float:
    """Return the exchange error counter for one call and error kind."""
    value = REGISTRY.get_sample_value(
        "tradebot_exchange_errors_total", {"call": call, "kind": kind}
    )
    return value or 0.0


async def test_bad_signature_is_an_authentication_error(
    sim: SimHandle, make_client: MakeClient
) -> None:
    raw = sim.make_ccxt()
    raw.secret = "not-the-secret"
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await raw.fetch_balance()
    client = await make_client(secret="not-the-secret-either")
    with pytest.raises(AuthError, match="-1022") as info:
        await client.balance()
    assert isinstance(info.value.__cause__, ccxt.AuthenticationError)
    assert "not-the-secret-either" not in str(info.value)


async def test_wrong_key_is_an_authentication_error(
    sim: SimHandle, make_client: MakeClient
) -> None:
    raw = sim.make_ccxt()
    raw.apiKey = "wrong-key"
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await raw.fetch_balance()
    client = await make_client(api_key="wrong-key-2")
    before = calls("balance", "auth")
    with pytest.raises(AuthError, match="-2015"):
        await client.balance()
    assert calls("balance", "auth") == before + 1  # refused once, not retried
    assert "wrong-key-2" not in str(client.ex.last_http_response or "")


async def test_clock_skew_is_invalid_nonce_and_resync_recovers(
    sim: SimHandle, client: ExchangeClient
) -> None:
    raw = sim.make_ccxt()
    await raw.load_time_difference()
    raw.options["timeDifference"] -= HOUR_MS  # our clock runs an hour ahead
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        await raw.fetch_balance()

    good = client.ex.options["timeDifference"]
    client.ex.options["timeDifference"] = good + HOUR_MS  # an hour behind this time
    before = calls("balance", "clock")
    balance = await client.balance()
    assert balance.wallet == pytest.approx(10_000.0)
    assert calls("balance", "clock") >= before + 1
    assert abs(client.ex.options["timeDifference"] - good) < 60_000


async def test_simulated_time_jumps_are_absorbed_by_resync(
    sim: SimHandle, client: ExchangeClient
) -> None:
    client.host_clock = False  # sign with the exchange's clock, as against Binance
    await client.sync_clock()
    offset = client.ex.options["timeDifference"]
    before = calls("balance", "clock")
    sim.step(40)  # 50 simulated minutes pass in no time: the measured offset goes stale
    assert (await client.balance()).wallet == pytest.approx(10_000.0)
    assert calls("balance", "clock") >= before + 1  # a -1021, then the re-synced retry
    assert offset - client.ex.options["timeDifference"] == pytest.approx(40 * 75_000, abs=2_000)


async def test_against_the_simulator_requests_are_signed_with_the_host_clock(
    sim: SimHandle, client: ExchangeClient
) -> None:
    assert client.ex.options["timeDifference"] == 0
    before = calls("balance", "clock")
    sim.step(40)  # a sped-up or stepped market: no -1021, nothing to re-sync
    assert (await client.balance()).wallet == pytest.approx(10_000.0)
    assert calls("balance", "clock") == before


async def test_insufficient_margin_is_ours_and_not_retried(
    sim: SimHandle, client: ExchangeClient
) -> None:
    before = calls("place_order", "insufficient_margin")
    with pytest.raises(InsufficientMargin, match="-2019"):
        await client.place_order(Intent("tb-too-big", BTC, "buy", 5.0))
    assert calls("place_order", "insufficient_margin") == before + 1
    assert sim.account.orders == {}


@pytest.mark.slow
async def test_200_intents_under_20pct_faults_give_exactly_200_orders(
    sim: SimHandle, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Every fault kind at 20% in total (drop-after-execute among them): no loss, no dupes."""
    client = await make_client(tuning=CHAOS)
    caplog.set_level(logging.WARNING, logger="shared.exchange")
    sim.set_faults(TWENTY_PCT, seed=7, timeout_hold_s=CHAOS_TIMEOUT_HOLD_S)
    intents = [
        Intent(make_client_order_id("chaos", str(i)), BTC, "buy" if i % 2 == 0 else "sell", 0.002)
        for i in range(200)
    ]
    gate = asyncio.Semaphore(16)

    async def place(intent: Intent) -> str:
        async with gate:
            order = await place_until_settled(client, intent)
            return str(order.client_order_id)

    placed = await asyncio.gather(*(place(i) for i in intents))
    sim.set_faults({})

    assert sorted(placed) == sorted(i.client_order_id for i in intents)
    on_exchange = Counter(o.client_order_id for o in sim.account.orders.values())
    assert len(on_exchange) == 200
    assert set(on_exchange) == {i.client_order_id for i in intents}
    assert max(on_exchange.values()) == 1
    counts = sim.sim.faults.counts
    assert all(counts[kind] > 0 for kind in FAULT_KINDS), dict(counts)
    recovered = [r for r in caplog.records if "found on the exchange" in r.getMessage()]
    assert recovered, "no dropped-after-execute order was recovered by lookup"


@pytest.mark.slow
async def test_stop_intents_under_faults_give_one_algo_order_each(
    sim: SimHandle, make_client: MakeClient
) -> None:
    """Reduce-only stop-market intents (algo orders) get the same at-most-once guarantee."""
    client = await make_client(tuning=CHAOS)
    await client.place_order(Intent("tb-eth-entry", ETH, "buy", 1.0))
    sim.set_faults(TWENTY_PCT, seed=11, timeout_hold_s=CHAOS_TIMEOUT_HOLD_S)
    intents = [
        Intent(
            make_client_order_id("stop", str(i)), ETH, "sell", 0.01, "stop_market", 2_500.0, True
        )
        for i in range(40)
    ]
    gate = asyncio.Semaphore(8)

    async def place(intent: Intent) -> str:
        async with gate:
            order = await place_until_settled(client, intent)
            assert order.is_stop
            return str(order.client_order_id)

    placed = await asyncio.gather(*(place(i) for i in intents))
    counts = dict(sim.sim.faults.counts)
    sim.set_faults({})
    assert sorted(placed) == sorted(i.client_order_id for i in intents)
    on_exchange = Counter(a.client_algo_id for a in sim.account.algo_orders.values())
    assert set(on_exchange) == {i.client_order_id for i in intents}
    assert max(on_exchange.values()) == 1
    assert counts.get("drop", 0) > 0, counts
    assert len(await client.open_stop_orders(ETH)) == 40


async def test_retries_are_counted_per_call(sim: SimHandle, client: ExchangeClient) -> None:
    def retries() -> float:
        value = REGISTRY.get_sample_value("tradebot_exchange_retries_total", {"call": "balance"})
        return value or 0.0

    def errors() -> float:  # a 5xx reads as unavailable, a 504 as a timeout
        return calls("balance", "unavailable") + calls("balance", "timeout")

    before, errors_before = retries(), errors()
    sim.set_faults({"http5xx": 1.0})
    with pytest.raises(TemporaryError):
        await client.balance()
    sim.set_faults({})
    attempts = FAST.backoff.attempts
    assert retries() == before + attempts - 1  # every attempt but the first is a retry
    assert errors() == errors_before + attempts


async def test_an_html_page_with_status_200_is_an_unavailable_exchange(
    sim: SimHandle, client: ExchangeClient
) -> None:
    """ccxt cannot parse it (TypeError inside ccxt): a TemporaryError, never a crash."""

    async def garbage(kinds: dict[str, float]) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{sim.base_url}/_sim/faults", json={"garbage": kinds}) as r,
        ):
            assert r.status == 200, await r.text()

    before = calls("tickers", "unavailable")
    await garbage({"html_200": 1.0})
    try:
        with pytest.raises(TemporaryError, match="unreadable answer"):
            await client.server_time()
        with pytest.raises(TemporaryError):
            await client.tickers([BTC])
    finally:
        await garbage({})
    assert calls("tickers", "unavailable") > before
    assert await client.server_time() > 0


@pytest.mark.parametrize(
    ("intent", "call"),
    [
        (Intent("tb-unknown-1", "BTC/USDT:USDT", "buy", 0.01), "place_order"),
        (Intent("tb-unknown-2", "BTC/USDT:USDT", "sell", 0.01, "stop_market", 50_000.0, True),
         "place_stop"),
    ],
)  # fmt: skip
async def test_a_send_and_its_lookup_both_failing_is_an_unknown_outcome(
    sim: SimHandle, client: ExchangeClient, intent: Intent, call: str
) -> None:
    def fail_from_now_on() -> bool:  # the guard runs right before the send
        sim.set_faults({"http5xx": 1.0})
        return True

    try:
        with pytest.raises(OutcomeUnknown) as err:
            await client.place_order(intent, guard=fail_from_now_on)
    finally:
        sim.set_faults({})
    assert (err.value.call, err.value.client_order_id) == (call, intent.client_order_id)
    message = str(err.value)
    assert message.startswith(f"place {intent.client_order_id}: send failed (")
    assert "lookup failed too (" in message
    assert message.endswith("; reconcile before resending")


async def test_a_send_the_guard_refuses_names_the_order_and_is_not_sent(
    sim: SimHandle, client: ExchangeClient
) -> None:
    stop = Intent("tb-refused-1", "BTC/USDT:USDT", "sell", 0.01, "stop_market", 50_000.0, True)
    with pytest.raises(SendRefused) as err:
        await client.place_order(stop, guard=lambda: False)
    assert err.value.call == "place_stop"
    assert str(err.value) == "place tb-refused-1: not sent, this copy may no longer act"
    assert sim.account.algo_orders == {}


@pytest.mark.parametrize(
    ("intent", "endpoint"),
    [
        (Intent("tb-lost-1", BTC, "buy", 0.01), "order"),
        (Intent("tb-lost-2", BTC, "sell", 0.01, "stop_market", 50_000.0, True), "algoOrder"),
    ],
)  # fmt: skip
async def test_an_answer_lost_after_execution_is_found_by_its_own_lookup(
    sim: SimHandle,
    client: ExchangeClient,
    intent: Intent,
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The send executes and the connection drops before the answer: the lookup that follows
    (the algo endpoint's for a stop) finds the order, and nothing is sent again."""
    if intent.type == "stop_market":
        await client.place_order(Intent("tb-lost-entry", BTC, "buy", 0.01))
    sign = client.ex.sign
    seen: list[str] = []

    def drop_that_send_only(
        path: str, api: object = "public", method: str = "GET", *a: object
    ) -> object:
        if method == "POST" and path == endpoint:
            sim.set_faults({"drop": 1.0})  # this request executes, its answer is lost
        else:
            sim.set_faults({})
        seen.append(f"{method} {path}")
        return sign(path, api, method, *a)

    client.ex.sign = drop_that_send_only
    order = await client.place_order(intent)
    sim.set_faults({})
    assert order.client_order_id == intent.client_order_id
    assert order.is_stop is (intent.type == "stop_market")
    assert seen.count(f"POST {endpoint}") == 1
    # Found by the lookup right after the lost answer, not only by the one before a resend.
    assert f"Order {intent.client_order_id}: unclear send (" in caplog.text
    assert "found before resending" not in caplog.text
    if order.is_stop:
        ids = [a.client_algo_id for a in sim.account.algo_orders.values()]
    else:
        ids = [o.client_order_id for o in sim.account.orders.values()]
    assert ids == [intent.client_order_id]


async def test_start_waits_for_an_exchange_not_reachable_yet(
    sim: SimHandle, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A service started alongside the simulator retries the start until it answers."""
    sim.set_faults({"reset": 1.0})  # every connection closed before an answer
    client = await make_client(start=False)
    stop = asyncio.Event()
    started = asyncio.create_task(client.start_when_reachable(stop, retry_s=0.05))
    await eventually(lambda: caplog.text.count("Exchange: not reachable at start (") >= 2)
    assert not started.done()
    sim.set_faults({})
    assert await asyncio.wait_for(started, 30) is True
    assert "; retrying in 0.05 s" in caplog.text
    assert BTC in await client.markets()  # started: markets loaded


async def test_start_gives_up_when_the_service_stops(
    sim: SimHandle, make_client: MakeClient
) -> None:
    sim.set_faults({"reset": 1.0})
    client = await make_client(start=False)
    stop = asyncio.Event()
    started = asyncio.create_task(client.start_when_reachable(stop, retry_s=30))
    try:
        await eventually(lambda: sim.sim.faults.counts["reset"] > 0)
        stop.set()  # while it waits 30 s to retry: it returns at once
        assert await asyncio.wait_for(started, 10) is False
    finally:
        sim.set_faults({})
    stopped = asyncio.Event()
    stopped.set()
    assert await client.start_when_reachable(stopped) is False  # stopped before: no try
