"""Every ExchangeClient call round-trips through real ccxt and HTTP to the simulator and parses."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from services.exchange_sim import engine
from shared.config import TIMEFRAME_MS
from shared.exchange import ExchangeClient
from shared.exchange_errors import OrderRejected
from shared.exchange_models import make_client_order_id
from tests.fixtures.sim import SimHandle
from tests.integration.exchange.intents import Intent

BTC = "BTC/USDT:USDT"


async def test_markets_carry_precision_and_limits(client: ExchangeClient) -> None:
    markets = await client.markets()
    assert BTC in markets
    btc = markets[BTC]
    assert btc.id == "BTCUSDT"
    assert (btc.base, btc.quote, btc.active) == ("BTC", "USDT", True)
    assert btc.price_tick == pytest.approx(0.1)
    assert btc.amount_step == pytest.approx(0.001)
    assert btc.min_amount == pytest.approx(0.001)
    assert btc.min_notional == pytest.approx(5.0)


async def test_server_time_is_the_simulated_clock(client: ExchangeClient, sim: SimHandle) -> None:
    before = sim.sim.now_ms()
    assert await client.server_time() == before
    sim.step(4)
    assert await client.server_time() == before + 4 * 75_000


async def test_ohlcv_returns_closed_candles_only(client: ExchangeClient, sim: SimHandle) -> None:
    sim.set_path("BTCUSDT", [60_100.0, 60_200.0, 59_900.0, 60_300.0] * 5)
    sim.step(20)  # 25 minutes of simulated time: several closed 5m candles and a forming one
    now = sim.sim.now_ms()
    tf = TIMEFRAME_MS["5m"]
    candles = await client.ohlcv(BTC, 3)
    assert len(candles) == 3
    assert all(c.open_time + tf <= now for c in candles)
    assert candles[-1].open_time + 2 * tf > now  # the newest closed one, not an older one
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
    assert [b.open_time - a.open_time for a, b in itertools.pairwise(candles)] == [
        tf,
        tf,
    ]


async def test_tickers_and_quote_volumes(client: ExchangeClient, sim: SimHandle) -> None:
    sim.set_path("ETHUSDT", [3_010.0, 3_020.0])
    sim.step(2)
    tickers = await client.tickers()
    assert tickers["ETH/USDT:USDT"].last == pytest.approx(3_020.0)
    volumes = await client.quote_volumes()
    assert set(volumes) == {s for s in tickers if s.endswith(":USDT")}
    assert volumes["ETH/USDT:USDT"] > 0


async def test_balance_positions_orders_and_trades(client: ExchangeClient, sim: SimHandle) -> None:
    start = await client.balance()
    assert start.wallet == pytest.approx(10_000.0)
    assert start.equity == pytest.approx(10_000.0)
    await client.set_leverage(BTC, 3)
    await client.set_margin_mode(BTC, "isolated")
    await client.set_margin_mode(BTC, "isolated")  # already set: not an error
    cid = make_client_order_id("sig-1", "entry")
    order = await client.place_order(Intent(cid, BTC, "buy", 0.01))
    assert (order.client_order_id, order.status, order.side) == (cid, "closed", "buy")
    assert order.filled == pytest.approx(0.01)
    assert order.average == pytest.approx(60_000.0)

    positions = await client.positions()
    assert [(p.symbol, p.side) for p in positions] == [(BTC, "long")]
    assert positions[0].contracts == pytest.approx(0.01)
    assert positions[0].entry_price == pytest.approx(60_000.0)
    assert positions[0].leverage == pytest.approx(3)

    fetched = await client.fetch_order(BTC, cid)
    assert fetched is not None
    assert fetched.id == order.id
    assert await client.fetch_order(BTC, "tb-never-sent") is None
    history = await client.order_history(BTC, sim.sim.now_ms() - 3_600_000)
    assert [o.client_order_id for o in history] == [cid]
    trades = await client.trade_history(BTC, sim.sim.now_ms() - 3_600_000)
    assert len(trades) == 1
    assert trades[0].order_id == order.id
    assert trades[0].fee == pytest.approx(0.01 * 60_000 * 0.0005)
    assert await client.open_orders(BTC) == []

    after = await client.balance()
    assert after.wallet == pytest.approx(10_000.0 - trades[0].fee)
    assert after.free < after.wallet  # margin is in use


async def test_stop_order_round_trip_and_trigger(client: ExchangeClient, sim: SimHandle) -> None:
    await client.place_order(Intent("tb-entry", BTC, "buy", 0.01))
    stop = Intent("tb-stop-1", BTC, "sell", 0.01, "stop_market", 58_800.0, True)
    placed = await client.place_order(stop)
    assert placed.is_stop
    assert (placed.client_order_id, placed.status) == ("tb-stop-1", "open")
    assert placed.stop_price == pytest.approx(58_800.0)
    assert placed.reduce_only
    opened = await client.open_stop_orders(BTC)
    assert [o.client_order_id for o in opened] == ["tb-stop-1"]
    assert await client.open_stop_orders() == opened

    sim.set_path("BTCUSDT", [59_500.0, 58_700.0])
    sim.step(2)
    done = await client.fetch_stop_order(BTC, "tb-stop-1")
    assert done is not None
    assert done.status == "closed"
    assert done.triggered_order_id is not None
    assert await client.positions() == []
    assert await client.open_stop_orders(BTC) == []
    history = await client.stop_order_history(BTC, sim.sim.now_ms() - 3_600_000)
    assert [o.client_order_id for o in history] == ["tb-stop-1"]
    # Cancelling a triggered stop reports its final state instead of failing.
    after = await client.cancel_stop(BTC, "tb-stop-1")
    assert after is not None
    assert after.status == "closed"


async def test_cancel_stop(client: ExchangeClient) -> None:
    await client.place_order(Intent("tb-entry-2", BTC, "buy", 0.01))
    await client.place_order(Intent("tb-stop-2", BTC, "sell", 0.01, "stop_market", 55_000.0, True))
    canceled = await client.cancel_stop(BTC, "tb-stop-2")
    assert canceled is not None
    assert canceled.status == "canceled"
    assert await client.open_stop_orders(BTC) == []
    assert await client.cancel_stop(BTC, "tb-no-such-stop") is None


async def test_resent_stop_intent_is_not_placed_twice(
    client: ExchangeClient, sim: SimHandle
) -> None:
    await client.place_order(Intent("tb-entry-3", BTC, "buy", 0.01))
    stop = Intent("tb-stop-3", BTC, "sell", 0.01, "stop_market", 57_000.0, True)
    first = await client.place_order(stop)
    sends = requests("place_stop")
    second = await client.place_order(stop)
    assert second.id == first.id
    assert len(sim.account.algo_orders) == 1
    assert requests("place_stop") == sends  # found by the lookup: not even sent again


async def test_filled_order_id_is_not_reused(client: ExchangeClient, sim: SimHandle) -> None:
    intent = Intent("tb-reuse", BTC, "buy", 0.01)
    first = await client.place_order(intent)
    again = await client.place_order(intent)
    assert again.id == first.id
    assert len(sim.account.orders) == 1


async def test_every_call_is_timed_and_counted(client: ExchangeClient) -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    sent_before = sample("tradebot_exchange_requests_total", {"call": "balance"})
    timed_before = sample("tradebot_exchange_request_duration_seconds_count", {"call": "balance"})
    await client.balance()
    await client.balance()
    assert sample("tradebot_exchange_requests_total", {"call": "balance"}) == sent_before + 2
    assert (
        sample("tradebot_exchange_request_duration_seconds_count", {"call": "balance"})
        == timed_before + 2
    )


async def test_stop_history_pages_past_the_algo_endpoint_cap(
    client: ExchangeClient, sim: SimHandle
) -> None:
    # allAlgoOrders answers at most 100 rows per request: 130 stops in one week need 2 pages.
    spec, now = sim.sim.specs["BTCUSDT"], sim.sim.now_ms()
    for i in range(130):
        t = now - 130 + i
        algo = engine.place_stop(
            sim.account, spec, "SELL", 0.01, 50_000.0, 60_000.0, t, f"tb-h{i}", True, False
        )
        engine.cancel_algo(sim.account, algo, t)
    history = await client.stop_order_history(BTC, now - 3_600_000)
    assert [o.client_order_id for o in history] == [f"tb-h{i}" for i in range(130)]


async def test_trade_history_keeps_fills_that_share_a_millisecond_across_pages(
    client: ExchangeClient, sim: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over real HTTP (userTrades paged by the simulator as Binance does), three rows a page:
    # the fills at t0+20 straddle the first page; the next page must not skip any of them.
    monkeypatch.setattr("shared.exchange.HISTORY_PAGE", 3)
    spec, t0 = sim.sim.specs["BTCUSDT"], sim.sim.now_ms() - 1_000
    prices = {"BTCUSDT": 60_000.0}
    for i, t in enumerate([10, 20, 20, 20, 30]):
        engine.fill_market(sim.account, spec, "BUY", 0.01, 60_000.0, prices, t0 + t, f"tb-p{i}")
    trades = await client.trade_history(BTC, t0)
    assert [t.timestamp - t0 for t in trades] == [10, 20, 20, 20, 30]
    assert len({t.id for t in trades}) == 5


def requests(call: str) -> float:
    return REGISTRY.get_sample_value("tradebot_exchange_requests_total", {"call": call}) or 0.0


async def test_every_call_is_counted_under_its_own_name(
    client: ExchangeClient, sim: SimHandle
) -> None:
    """The per-call request counter is what the dashboard's exchange panels plot."""
    since = sim.sim.now_ms() - 3_600_000
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = list(
        {
            "server_time": lambda: client.server_time(),
            "load_markets": lambda: client.markets(reload=True),
            "ohlcv": lambda: client.ohlcv(BTC, 2),
            "tickers": lambda: client.tickers([BTC]),
            "balance": lambda: client.balance(),
            "positions": lambda: client.positions(),
            "set_leverage": lambda: client.set_leverage(BTC, 3),
            "set_margin_mode": lambda: client.set_margin_mode(BTC, "isolated"),  # no position yet
            "place_order": lambda: client.place_order(Intent("tb-count-1", BTC, "buy", 0.01)),
            "place_stop": lambda: client.place_order(
                Intent("tb-count-2", BTC, "sell", 0.01, "stop_market", 55_000.0, True)
            ),
            "fetch_order": lambda: client.fetch_order(BTC, "tb-count-1"),
            "fetch_stop": lambda: client.fetch_stop_order(BTC, "tb-count-2"),
            "open_orders": lambda: client.open_orders(BTC),
            "open_stops": lambda: client.open_stop_orders(BTC),
            "cancel_stop": lambda: client.cancel_stop(BTC, "tb-count-2"),
            "cancel_order": lambda: client.cancel_order(BTC, "tb-count-1"),
            "order_history": lambda: client.order_history(BTC, since),
            "stop_history": lambda: client.stop_order_history(BTC, since),
            "trade_history": lambda: client.trade_history(BTC, since),
        }.items()
    )

    async def by_exchange_id() -> object:
        order = await client.open_orders(BTC) or await client.order_history(BTC, since)
        return await client.fetch_order_by_id(BTC, order[0].id)

    calls.append(("fetch_order", by_exchange_id))
    for call, request in calls:
        before = requests(call)
        await request()
        assert requests(call) > before, call


@pytest.mark.parametrize(
    ("call", "send"),
    [
        ("cancel_stop", lambda c: c.cancel_stop("NOPE/USDT:USDT", "tb-x")),
        ("cancel_order", lambda c: c.cancel_order("NOPE/USDT:USDT", "tb-x")),
        ("fetch_stop", lambda c: c.fetch_stop_order("NOPE/USDT:USDT", "tb-x")),
        ("fetch_order", lambda c: c.fetch_order("NOPE/USDT:USDT", "tb-x")),
        ("fetch_order", lambda c: c.fetch_order_by_id("NOPE/USDT:USDT", "12")),
        ("set_margin_mode", lambda c: c.set_margin_mode("NOPE/USDT:USDT", "isolated")),
    ],
)
async def test_a_refused_call_is_named_in_its_error(
    client: ExchangeClient, call: str, send: Callable[[ExchangeClient], Awaitable[object]]
) -> None:
    with pytest.raises(OrderRejected) as err:  # an unknown symbol: refused, not retried
        await send(client)
    assert err.value.call == call
    assert str(err.value).startswith(f"{call}: BadSymbol: ")


async def test_positions_and_open_stops_by_symbol(client: ExchangeClient, sim: SimHandle) -> None:
    eth = "ETH/USDT:USDT"
    sim.set_path("ETHUSDT", [3_000.0] * 3)
    await client.place_order(Intent("tb-sym-1", BTC, "buy", 0.01))
    await client.place_order(Intent("tb-sym-2", eth, "sell", 0.1))
    await client.place_order(Intent("tb-sym-3", BTC, "sell", 0.01, "stop_market", 50_000.0, True))
    await client.place_order(Intent("tb-sym-4", eth, "buy", 0.1, "stop_market", 3_500.0, True))

    both = await client.positions()
    assert sorted((p.symbol, p.side) for p in both) == [(BTC, "long"), (eth, "short")]
    only = await client.positions([eth])
    assert [(p.symbol, p.side, p.contracts) for p in only] == [(eth, "short", 0.1)]

    stops = await client.open_stop_orders()
    assert sorted(str(o.client_order_id) for o in stops) == ["tb-sym-3", "tb-sym-4"]
    assert all(o.is_stop and o.status == "open" for o in stops)
    assert [o.client_order_id for o in await client.open_stop_orders(eth)] == ["tb-sym-4"]
