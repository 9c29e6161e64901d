"""ExchangeClient edges without a network: what errors and logs say, which lookups are made.

The stubs extend the ones in test_exchange_client.py (ccxt's method names and exceptions,
a fake clock that only moves when the client sleeps), recording what each request asked
for, so a lookup made with the wrong symbol or the plain endpoint for a stop shows up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import ccxt.async_support as ccxt
import pytest

from shared.config import Settings
from shared.exchange import WEEK_MS, ExchangeClient, Tuning
from shared.exchange_errors import (
    RETRY_AFTER_ATTR,
    AuthError,
    BackoffPolicy,
    ExchangeFailure,
    InsufficientMargin,
    OrderRejected,
    OutcomeUnknown,
    SendRefused,
    TemporaryError,
    UnreadableAnswer,
)
from tests.fixtures.metrics import sample
from tests.unit.shared.test_exchange_client import (
    SECRET,
    SYMBOL,
    CandleStub,
    FakeTime,
    Intent,
    StubExchange,
    TradeHistoryStub,
    fake,
    make_client,
)

__all__ = ["fake"]  # the fixture, used by name

REDACTED = "**********"
REQUESTS = "tradebot_exchange_requests_total"
LATENCY = "tradebot_exchange_request_duration_seconds"
PLAIN = "tb-plain"


class RecordingStub(StubExchange):
    """The order stub, also recording every lookup and cancel, and raising scripted errors."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[Any, str, dict[str, Any]]] = []  # (id, symbol, params)
        self.canceled: list[tuple[Any, str, dict[str, Any]]] = []
        self.send_errors: list[BaseException] = []  # raised by the next sends, nothing placed
        self.call_errors: list[BaseException] = []  # raised by lookups, cancels, margin mode
        self.now_ms = 0

    def milliseconds(self) -> int:
        return self.now_ms

    async def create_order(
        self, symbol: str, type: str, side: str, amount: float, price: Any, params: dict[str, Any]
    ) -> dict[str, Any]:
        if self.send_errors:
            self.sends += 1
            self.sent_params.append(dict(params))
            raise self.send_errors.pop(0)
        return await super().create_order(symbol, type, side, amount, price, params)

    async def fetch_order(self, id: Any, symbol: str, params: Any = None) -> dict[str, Any]:
        self.asked.append((id, symbol, dict(params or {})))
        if self.call_errors:
            raise self.call_errors.pop(0)
        return await super().fetch_order(id, symbol, params or {})

    async def cancel_order(self, id: Any, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        self.canceled.append((id, symbol, dict(params)))
        if self.call_errors:
            raise self.call_errors.pop(0)
        cid = str(params.get("origClientOrderId") or params.get("clientAlgoId"))
        self.orders[cid] = {**self.orders[cid], "status": "canceled"}
        return self.orders[cid]

    async def set_margin_mode(self, mode: str, symbol: str) -> None:
        if self.call_errors:
            raise self.call_errors.pop(0)


@pytest.fixture
def stub() -> RecordingStub:
    return RecordingStub()


def plain_lookup(cid: str) -> tuple[None, str, dict[str, Any]]:
    return (None, SYMBOL, {"origClientOrderId": cid})


def stop_lookup(cid: str) -> tuple[None, str, dict[str, Any]]:
    return (None, SYMBOL, {"clientAlgoId": cid, "trigger": True})


def rate_limited() -> BaseException:
    err: BaseException = ccxt.DDoSProtection(f"binanceusdm 429 key {SECRET}")
    setattr(err, RETRY_AFTER_ATTR, 2.0)
    return err


# --- what a failed placement says ------------------------------------------------------


async def test_sends_refused_for_rate_limits_say_why_wait_and_count_only_real_retries(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """Three rate-limited sends: the operator's message names the order, the sends and the
    last cause (the key blanked out); each send is first waited out as maybe-executed (a
    recvWindow plus slack, polled), then the server's Retry-After is honoured before the next
    send, and nothing is waited or counted as a retry after the last one."""
    stub.send_errors = [rate_limited() for _ in range(3)]
    retries = sample("tradebot_exchange_retries_total", call="place_order")
    with pytest.raises(TemporaryError) as info:
        await make_client(stub, fake, attempts=3).place_order(Intent("tb-rate"))
    assert info.value.call == "place_order"
    assert str(info.value) == (
        f"place_order tb-rate: not placed after 3 sends: DDoSProtection: binanceusdm 429 key "
        f"{REDACTED}"
    )
    assert (stub.sends, stub.created) == (3, 0)
    settle = [0.2] * 5 + [0.1]  # polls until recvWindow (1 s) + slack (0.1 s) has passed
    assert fake.sleeps == pytest.approx([*settle, 2.0, *settle, 2.0, *settle])
    assert sample("tradebot_exchange_retries_total", call="place_order") == retries + 2


async def test_a_duplicate_id_nobody_can_see_names_the_stop_and_the_answer(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """-4116 with no order found: the error says an open order holds the id, under place_stop."""
    stub.send_faults = ["duplicate"]
    with pytest.raises(OutcomeUnknown) as info:
        await make_client(stub, fake).place_order(
            Intent("tb-dup", type="stop_market", stop_price=1.0)
        )
    assert (info.value.call, info.value.client_order_id) == ("place_stop", "tb-dup")
    assert str(info.value) == (
        "place tb-dup: the exchange says an open order holds this id (InvalidOrder: "
        'binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}) but the lookup '
        "finds none; reconcile before resending"
    )


@pytest.mark.parametrize(
    ("intent", "call"),
    [
        (Intent("tb-poor-1"), "place_order"),
        (Intent("tb-poor-2", type="stop_market", stop_price=90.0), "place_stop"),
    ],
)
async def test_a_refused_send_is_named_by_its_call(
    stub: RecordingStub, fake: FakeTime, intent: Intent, call: str
) -> None:
    stub.send_faults = ["insufficient"]
    with pytest.raises(InsufficientMargin) as info:
        await make_client(stub, fake).place_order(intent)
    assert info.value.call == call
    assert str(info.value).startswith(f"{call}: InsufficientFunds: ")


async def test_a_stop_without_a_price_is_refused_by_name_before_any_request(
    stub: RecordingStub, fake: FakeTime
) -> None:
    with pytest.raises(ValueError, match=r"^stop order tb-nostop needs a stop_price$"):
        await make_client(stub, fake).place_order(Intent("tb-nostop", type="stop_market"))
    assert stub.lookups == stub.sends == 0


async def test_a_plain_order_the_guard_refuses_is_named_as_such(
    stub: RecordingStub, fake: FakeTime
) -> None:
    with pytest.raises(SendRefused) as info:
        await make_client(stub, fake).place_order(Intent("tb-fenced"), guard=lambda: False)
    assert info.value.call == "place_order"
    assert str(info.value) == "place tb-fenced: not sent, this copy may no longer act"
    assert stub.sends == 0


async def test_signed_with_the_host_clock_exactly_when_no_offset_is_measured(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """Against the simulator the offset is 0: the request is signed at the host's millisecond."""
    stub.now_ms = 1_700_000_000_000
    client = make_client(stub, fake)
    assert client.exchange_now_ms() == 1_700_000_000_000
    del stub.options["timeDifference"]  # never measured
    assert client.exchange_now_ms() == 1_700_000_000_000
    await client.place_order(Intent("tb-now"))
    assert stub.sent_params[0]["timestamp"] == 1_700_000_000_000


# --- an order found still NEW is read again, by its own id ---------------------------------


async def test_an_order_found_new_before_any_send_is_read_until_filled(
    stub: RecordingStub, fake: FakeTime
) -> None:
    stub._new_order(PLAIN, 0.01)  # an earlier call placed it; Binance still shows it NEW
    stub.open_reads = 1
    order = await make_client(stub, fake).place_order(Intent(PLAIN))
    assert (order.status, order.filled, stub.sends) == ("closed", 0.01, 0)
    assert stub.asked == [plain_lookup(PLAIN)] * 2


async def test_an_order_found_new_before_a_resend_is_read_until_filled(
    stub: RecordingStub, fake: FakeTime
) -> None:
    stub.send_faults = ["clock"]  # -1021: not placed, resent after a lookup

    def another_copy_places_it() -> None:
        if stub.lookups == 2:
            stub._new_order(PLAIN, 0.01)
            stub.open_reads = 1

    stub.on_lookup = another_copy_places_it
    order = await make_client(stub, fake).place_order(Intent(PLAIN))
    assert (order.status, order.filled, stub.sends) == ("closed", 0.01, 1)
    assert stub.asked == [plain_lookup(PLAIN)] * 3


async def test_an_order_found_new_after_a_lost_answer_is_read_until_filled(
    stub: RecordingStub, fake: FakeTime
) -> None:
    stub.send_faults, stub.open_reads = ["drop"], 1  # executed, answer lost; then seen NEW
    order = await make_client(stub, fake).place_order(Intent(PLAIN))
    assert (order.status, order.filled, stub.sends) == ("closed", 0.01, 1)
    assert stub.asked == [plain_lookup(PLAIN)] * 3


async def test_a_stop_found_before_a_resend_is_looked_up_as_a_stop(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """A stop lives on the algo endpoint: looked up there, or a resend would double it."""
    stub.send_faults = ["clock"]
    cid = "tb-stop-again"

    def another_copy_places_it() -> None:
        if stub.lookups == 2:
            stub._new_order(cid, 0.01)

    stub.on_lookup = another_copy_places_it
    order = await make_client(stub, fake).place_order(
        Intent(cid, type="stop_market", stop_price=90.0)
    )
    assert order.is_stop is True
    assert (order.client_order_id, stub.sends) == (cid, 1)
    assert stub.asked == [stop_lookup(cid)] * 2


@pytest.mark.parametrize(
    ("slack_ms", "reads"),
    [
        (0, 4),  # recvWindow 1 s, polls every 0.25 s: the read at exactly 1 s is not made
        (1, 5),  # 1.001 s: the read at 1 s is still inside the window
    ],
)
async def test_a_new_market_order_is_read_again_for_a_recv_window_plus_slack(
    stub: RecordingStub, fake: FakeTime, slack_ms: int, reads: int
) -> None:
    stub.send_faults, stub.open_reads = ["ack"], 1_000
    tuning = Tuning(recv_window_ms=1_000, settle_slack_ms=slack_ms, settle_poll_ms=250)
    client = ExchangeClient(stub, tuning=tuning, sleep=fake.sleep, clock=fake.clock)
    order = await client.place_order(Intent(PLAIN))
    assert order.status == "open"  # still NEW: returned as it stands
    assert fake.sleeps == [0.25] * reads
    assert stub.asked == [plain_lookup(PLAIN)] * (1 + reads)


# --- lookups and cancels return what they were asked for ---------------------------------


async def test_lookups_and_cancels_read_plain_orders_as_plain_and_stops_as_stops(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """A stop read back as a plain order (or the reverse) would be reconciled as the wrong kind."""
    client = make_client(stub, fake)
    stub._new_order(PLAIN, 0.01)
    stub._new_order("tb-stop", 0.01)
    plain = await client.fetch_order(SYMBOL, PLAIN)
    stop = await client.fetch_stop_order(SYMBOL, "tb-stop")
    assert plain is not None
    assert stop is not None
    assert (plain.is_stop, stop.is_stop) == (False, True)
    canceled = await client.cancel_order(SYMBOL, PLAIN)
    canceled_stop = await client.cancel_stop(SYMBOL, "tb-stop")
    assert canceled is not None
    assert canceled_stop is not None
    assert (canceled.status, canceled.is_stop) == ("canceled", False)
    assert (canceled_stop.status, canceled_stop.is_stop) == ("canceled", True)
    assert stub.canceled == [plain_lookup(PLAIN), stop_lookup("tb-stop")]
    assert stub.asked == [plain_lookup(PLAIN), stop_lookup("tb-stop")] * 2


@pytest.mark.parametrize(
    ("call", "send"),
    [
        ("fetch_order", lambda c: c.fetch_order(SYMBOL, PLAIN)),
        ("fetch_stop", lambda c: c.fetch_stop_order(SYMBOL, PLAIN)),
        ("fetch_order", lambda c: c.fetch_order_by_id(SYMBOL, "12")),
        ("cancel_order", lambda c: c.cancel_order(SYMBOL, PLAIN)),
        ("set_margin_mode", lambda c: c.set_margin_mode(SYMBOL, "isolated")),
    ],
)
async def test_a_failed_call_names_itself_and_never_the_key(
    stub: RecordingStub, fake: FakeTime, call: str, send: Any
) -> None:
    """Error text goes to logs and alerts: the key must be blanked in every call's error."""
    stub.call_errors = [ccxt.AuthenticationError(f"binanceusdm -2015 key {SECRET}")]
    with pytest.raises(AuthError) as info:
        await send(make_client(stub, fake))
    assert info.value.call == call
    assert str(info.value) == f"{call}: AuthenticationError: binanceusdm -2015 key {REDACTED}"


# --- retries and the clock ----------------------------------------------------------------


async def test_each_retry_is_logged_with_its_cause_and_a_resync_is_counted_as_sync_clock(
    stub: RecordingStub, fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator sees why a call was retried; the re-sync after -1021 is its own request."""
    caplog.set_level(logging.WARNING, logger="shared.exchange")
    stub.balance_faults = [ccxt.RequestTimeout(f"slow {SECRET}"), ccxt.InvalidNonce("-1021")]
    syncs = sample("tradebot_exchange_requests_total", call="sync_clock")
    await make_client(stub, fake).balance()
    assert f"Exchange retry: attempt 1 failed: RequestTimeout: slow {REDACTED}" in caplog.text
    assert "Exchange retry: attempt 2 failed: InvalidNonce: -1021" in caplog.text
    assert SECRET not in caplog.text
    assert (stub.syncs, stub.balance_calls) == (1, 3)
    assert sample("tradebot_exchange_requests_total", call="sync_clock") == syncs + 1


async def test_start_retries_every_five_seconds_by_default(
    stub: RecordingStub, fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    """Compose starts the simulator alongside: the default wait between start attempts."""
    stop = asyncio.Event()

    async def unreachable() -> int:
        stop.set()  # the service is told to stop while the start is failing
        raise ccxt.RequestTimeout("binanceusdm connect timeout")

    stub.load_time_difference = unreachable  # type: ignore[method-assign]
    assert await make_client(stub, fake).start_when_reachable(stop) is False
    assert "; retrying in 5 s" in caplog.text


# --- market data, open orders, history ----------------------------------------------------

ETH = "ETH/USDT:USDT"
BTC_DELIVERY = "BTC/USDT:USDT-250328"


def market(symbol: str, **over: Any) -> dict[str, Any]:
    base = symbol.split("/")[0]
    m: dict[str, Any] = {
        "id": symbol.replace("/", "").split(":")[0],
        "symbol": symbol,
        "base": base,
        "quote": "USDT",
        "settle": "USDT",
        "swap": True,
        "linear": True,
        "active": True,
        "precision": {"price": 0.1, "amount": 0.001},
        "limits": {"amount": {"min": 0.001}, "cost": {"min": 5.0}},
        "info": {},
    }
    return {**m, **over}


class ReadStub:
    """Markets, tickers, open orders and algo history, recording what each request asked."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {"timeDifference": 0}
        self.reloads: list[bool] = []
        self.ticker_args: list[Any] = []
        self.open_args: list[Any] = []
        self.time_reads = 0
        self.markets = {
            m["symbol"]: m
            for m in [
                market(SYMBOL),
                market(ETH, active=None),  # ccxt leaves active unset when unknown: tradable
                market("SOL/USDT:USDT", active=False),  # delisted
                market("XRP/USDC:USDC", settle="USDC"),
                market("BTC/USD:BTC", settle="BTC", linear=False),  # inverse
                market(BTC_DELIVERY, swap=False, future=True),  # dated future
            ]
        }
        self.orders = [
            {"id": "1", "clientOrderId": "tb-btc", "symbol": SYMBOL, "status": "open"},
            {"id": "2", "clientOrderId": "tb-eth", "symbol": ETH, "status": "open"},
        ]

    async def load_markets(self, reload: bool = False) -> dict[str, Any]:
        self.reloads.append(reload)
        return self.markets

    async def fetch_tickers(self, symbols: Any = None) -> dict[str, Any]:
        self.ticker_args.append(symbols)
        volumes = {SYMBOL: 5e9, ETH: None, BTC_DELIVERY: 1e6, "SOL/USDT:USDT": 2e6}
        return {
            s: {"symbol": s, "last": 1.0, "quoteVolume": v}
            for s, v in volumes.items()
            if symbols is None or s in symbols
        }

    async def fetch_open_orders(
        self, symbol: Any = None, since: Any = None, limit: Any = None, params: Any = None
    ) -> list[dict[str, Any]]:
        self.open_args.append(symbol)
        return [o for o in self.orders if symbol is None or o["symbol"] == symbol]

    async def fetch_time(self) -> int:
        self.time_reads += 1
        return 1_000

    async def fetch_orders(
        self, symbol: str, since: int, limit: int, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [{**self.orders[0], "id": "9", "timestamp": since, "triggerPrice": 50.0}]


@pytest.fixture
def reads() -> ReadStub:
    return ReadStub()


def read_client(stub: Any, fake: FakeTime) -> ExchangeClient:
    return ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)


async def test_markets_are_the_active_linear_perpetuals_in_the_quote_currency(
    reads: ReadStub, fake: FakeTime
) -> None:
    """Dated futures, inverse or USDC contracts and delisted symbols never enter the universe;
    ccxt's cached markets serve a plain call, and only a reload asks the exchange again."""
    client = read_client(reads, fake)
    assert set(await client.markets()) == {SYMBOL, ETH}
    assert set(await client.markets(reload=True)) == {SYMBOL, ETH}
    assert reads.reloads == [False, True]
    # Volumes only for those markets, and only where the exchange gave one.
    assert await client.quote_volumes() == {SYMBOL: 5e9}


async def test_tickers_and_open_orders_ask_for_the_symbols_given(
    reads: ReadStub, fake: FakeTime
) -> None:
    client = read_client(reads, fake)
    assert set(await client.tickers([SYMBOL])) == {SYMBOL}
    assert len(await client.tickers()) == 4
    assert reads.ticker_args == [[SYMBOL], None]
    only = await client.open_orders(ETH)
    assert [(o.client_order_id, o.symbol, o.is_stop) for o in only] == [("tb-eth", ETH, False)]
    assert len(await client.open_orders()) == 2
    assert reads.open_args == [ETH, None]


async def test_stop_history_rows_are_stops(reads: ReadStub, fake: FakeTime) -> None:
    history = await read_client(reads, fake).stop_order_history(SYMBOL, 500)
    assert [(o.client_order_id, o.is_stop, o.stop_price) for o in history] == [
        ("tb-btc", True, 50.0)
    ]


async def test_ohlcv_with_a_time_given_judges_by_it_without_asking_the_exchange(
    fake: FakeTime,
) -> None:
    """A caller that read exchange time before saves a request, and the candle that closed
    after that read is still dropped as forming."""
    stub = CandleStub()
    reads = 0
    original = stub.fetch_time

    async def counted() -> int:
        nonlocal reads
        reads += 1
        return await original()

    stub.fetch_time = counted  # type: ignore[method-assign]
    client = read_client(stub, fake)
    candles = await client.ohlcv(SYMBOL, 3, now_ms=9 * CandleStub.TF - 1)
    assert [c.open_time // CandleStub.TF for c in candles] == [5, 6, 7]
    assert reads == 0


async def test_the_last_window_stays_open_when_it_ends_exactly_now(fake: FakeTime) -> None:
    """A window ending at the exchange's now is the last one: no end time, so a row dated
    after the clock read is not cut off."""
    stub = TradeHistoryStub([0, WEEK_MS - 1], now=WEEK_MS - 1)
    trades = await read_client(stub, fake).trade_history(SYMBOL, 0)
    assert [t.timestamp for t in trades] == [0, WEEK_MS - 1]
    assert stub.windows == [(0, None)]


async def test_a_full_page_goes_on_from_its_newest_row_not_an_earlier_one(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going on from an earlier row re-reads rows and costs requests (weight) for nothing."""
    monkeypatch.setattr("shared.exchange.HISTORY_PAGE", 3)
    stub = TradeHistoryStub([10, 20, 30, 40], now=100)
    trades = await read_client(stub, fake).trade_history(SYMBOL, 0)
    assert [t.timestamp for t in trades] == [10, 20, 30, 40]
    assert stub.windows == [(0, None), (30, None)]


async def test_business_errors_of_lookups_are_rejections_not_retried(
    stub: RecordingStub, fake: FakeTime
) -> None:
    """An unknown symbol is refused at once: asking again would only meet the same answer."""
    stub.call_errors = [ccxt.BadSymbol("binanceusdm NOPE")]
    with pytest.raises(OrderRejected):
        await make_client(stub, fake).fetch_stop_order(SYMBOL, PLAIN)
    assert len(stub.asked) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"send_attempts": 0},
        {"timeout_ms": 0},
        {"recv_window_ms": -1},
        {"settle_slack_ms": -1},
        {"settle_poll_ms": 0},
    ],
)
def test_tuning_refuses_knobs_that_would_send_nothing_or_never_wait(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^Tuning needs "):
        dataclasses.replace(Tuning(), **bad)


# --- the exchange's clock, and the client built from settings ------------------------------


class TimeStub:
    """An exchange whose time endpoint answers ``value``."""

    def __init__(self, value: Any) -> None:
        self.options: dict[str, Any] = {"timeDifference": 0}
        self.value = value

    async def fetch_time(self) -> Any:
        return self.value


@pytest.mark.parametrize("value", [0, -5, True, 1.5, "1700000000000", None])
async def test_an_exchange_time_that_is_not_a_positive_integer_is_unreadable(
    value: Any, fake: FakeTime
) -> None:
    """Every signed request and stale-data check hangs on this clock: garbage is refused."""
    client = ExchangeClient(TimeStub(value), tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(UnreadableAnswer) as err:
        await client.server_time()
    assert str(err.value) == f"server_time: unreadable answer {value!r}"
    assert err.value.call == "server_time"


async def test_any_positive_integer_is_an_exchange_time(fake: FakeTime) -> None:
    client = ExchangeClient(TimeStub(1), tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    assert await client.server_time() == 1


@pytest.mark.parametrize(("exchange", "throttled"), [("sim", False), ("binanceusdm", True)])
async def test_the_client_takes_its_settings(exchange: str, throttled: bool) -> None:
    """recvWindow, quote, timeframe and the secrets to redact come from the settings; ccxt's
    own throttle is on against a real exchange (Binance's weights), off on the simulator."""
    settings = Settings(
        exchange=exchange, recv_window_ms=7_000, timeframe="15m", testnet=exchange != "sim",
        quote="USDC",
        api_key="key-of-the-test", api_secret="secret-of-the-test",
    )  # fmt: skip
    client = ExchangeClient.from_settings(settings)
    try:
        assert (client.tuning.recv_window_ms, client.tuning.enable_rate_limit) == (7_000, throttled)
        assert (client.quote, client.timeframe) == ("USDC", "15m")
        assert client._say(RuntimeError("key-of-the-test secret-of-the-test")) == (
            f"RuntimeError: {REDACTED} {REDACTED}"
        )
        assert client.host_clock is (exchange == "sim")
    finally:
        await client.close()


class AccountStub:
    """The clock, markets and balance endpoints; the balance answers what it is told to."""

    def __init__(self, balance: BaseException | None = None) -> None:
        self.options: dict[str, Any] = {"timeDifference": 0}
        self.balance_error = balance
        self.calls: list[str] = []

    async def load_time_difference(self) -> int:
        self.calls.append("time")
        return 0

    async def load_markets(self, reload: bool = False) -> dict[str, Any]:
        self.calls.append("markets")
        return {SYMBOL: market(SYMBOL)}

    async def fetch_balance(self) -> dict[str, Any]:
        self.calls.append("balance")
        if self.balance_error is not None:
            error, self.balance_error = self.balance_error, None
            raise error
        return {"USDT": {"free": 1.0, "used": 0.0, "total": 1.0}, "info": {}}


def account_client(stub: AccountStub, fake: FakeTime) -> ExchangeClient:
    tuning = Tuning(backoff=BackoffPolicy(attempts=1, initial=0.0, maximum=0.0))
    return ExchangeClient(stub, tuning=tuning, secrets=[SECRET], sleep=fake.sleep, clock=fake.clock)


async def test_start_syncs_the_clock_then_loads_markets_each_counted_by_name(
    fake: FakeTime,
) -> None:
    stub = AccountStub()
    before = {c: sample(REQUESTS, call=c) for c in ("sync_clock", "load_markets")}
    await account_client(stub, fake).start()
    assert stub.calls == ["time", "markets"]
    assert {c: sample(REQUESTS, call=c) - n for c, n in before.items()} == {
        "sync_clock": 1,
        "load_markets": 1,
    }


async def test_an_answer_that_cannot_be_read_names_the_call_and_what_broke(
    fake: FakeTime,
) -> None:
    client = account_client(AccountStub(KeyError("USDT")), fake)
    with pytest.raises(UnreadableAnswer) as err:
        await client.balance()
    assert "balance: unreadable answer (KeyError: 'USDT')" in str(err.value)


async def test_a_refused_read_is_translated_with_the_key_redacted(fake: FakeTime) -> None:
    client = account_client(AccountStub(ccxt.AuthenticationError(f"-2015 key {SECRET}")), fake)
    with pytest.raises(AuthError) as err:
        await client.balance()
    assert SECRET not in str(err.value)
    assert REDACTED in str(err.value)


async def test_a_clock_rejection_resyncs_and_says_which_call_it_hit(
    fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    stub = AccountStub(ccxt.InvalidNonce("binanceusdm -1021"))
    with pytest.raises(ExchangeFailure):
        await account_client(stub, fake).balance()
    assert stub.calls == ["balance", "time"]
    assert "Exchange clock re-synced after -1021 on balance" in caplog.text


async def test_a_request_is_timed_by_its_own_duration(fake: FakeTime) -> None:
    """The latency histogram gets the request's duration: never more than the time the test
    measured around it."""
    count = sample(LATENCY + "_count", call="balance")
    total = sample(LATENCY + "_sum", call="balance")
    started = time.perf_counter()
    await account_client(AccountStub(), fake).balance()
    elapsed = time.perf_counter() - started
    assert sample(LATENCY + "_count", call="balance") == count + 1
    assert 0 <= sample(LATENCY + "_sum", call="balance") - total <= elapsed
