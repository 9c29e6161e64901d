"""ExchangeClient logic without a network: retry policy, clock re-sync, idempotent placement.

The exchange is a hand-written stub with ccxt's method names and ccxt's exceptions; the
client's sleep and clock are fake (sleeping advances the clock), so no test waits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt.async_support as ccxt
import pytest

from shared.exchange import HISTORY_MAX_WINDOWS, WEEK_MS, ExchangeClient, Tuning
from shared.exchange_errors import (
    RETRY_AFTER_ATTR,
    AuthError,
    BackoffPolicy,
    InsufficientMargin,
    OrderRejected,
    OutcomeUnknown,
    SendRefused,
    TemporaryError,
)
from shared.schemas import OrderIntent

SYMBOL = "BTC/USDT:USDT"
SECRET = "stub-secret-value"


@dataclass(frozen=True)
class Intent:
    """A minimal order intent (the shape of shared.schemas.OrderIntent)."""

    client_order_id: str
    symbol: str = SYMBOL
    side: str = "buy"
    type: str = "market"
    quantity: float = 0.01
    stop_price: float | None = None
    reduce_only: bool = False


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Fault = Callable[[], BaseException | None]


class StubExchange:
    """Just enough of ccxt's binanceusdm: orders by client id, scripted failures."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {"timeDifference": 0}
        self.orders: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.sends = 0
        self.lookups = 0
        self.syncs = 0
        self.balance_calls = 0
        self.send_faults: list[str] = []  # per send: "", "drop", "timeout", "insufficient", ...
        self.lookup_faults: list[str] = []
        self.balance_faults: list[BaseException] = []
        self.late: list[dict[str, Any]] = []  # orders that appear on the next lookup
        self.sent_params: list[dict[str, Any]] = []
        self.on_lookup: Callable[[], None] | None = None  # e.g. another copy places the id
        self.open_reads = 0  # after an "ack" send: lookups that still show the order NEW

    def milliseconds(self) -> int:
        return 0

    async def load_time_difference(self) -> int:
        self.syncs += 1
        self.options["timeDifference"] = 5
        return 5

    async def fetch_balance(self) -> dict[str, Any]:
        self.balance_calls += 1
        if self.balance_faults:
            raise self.balance_faults.pop(0)
        return {"USDT": {"free": 1.0, "used": 0.0, "total": 1.0}, "info": {}}

    def _new_order(self, cid: str, amount: float) -> dict[str, Any]:
        self.created += 1
        order = {
            "id": str(self.created),
            "clientOrderId": cid,
            "symbol": SYMBOL,
            "side": "buy",
            "type": "market",
            "status": "closed",
            "amount": amount,
            "filled": amount,
            "average": 100.0,
        }
        self.orders[cid] = order
        return order

    async def create_order(
        self, symbol: str, type: str, side: str, amount: float, price: Any, params: dict[str, Any]
    ) -> dict[str, Any]:
        self.sends += 1
        self.sent_params.append(dict(params))
        fault = self.send_faults.pop(0) if self.send_faults else ""
        cid = params["clientOrderId"]
        if fault == "insufficient":
            raise ccxt.InsufficientFunds('binanceusdm {"code":-2019}')
        if fault == "auth":
            raise ccxt.AuthenticationError(f"binanceusdm -2015 key {SECRET}")
        if fault == "timeout":
            raise ccxt.RequestTimeout("binanceusdm POST http://sim/fapi/v1/order?signature=ab")
        if fault == "rate":
            err = ccxt.DDoSProtection("binanceusdm 429")
            setattr(err, RETRY_AFTER_ATTR, 2.0)
            raise err
        if fault == "clock":
            raise ccxt.InvalidNonce("binanceusdm -1021")
        if fault == "duplicate":  # an open order holds the id, invisible to lookups
            raise ccxt.InvalidOrder(
                'binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}'
            )
        if fault == "late":  # queued inside the exchange: missing at the next lookup
            self.late.append({"cid": cid, "amount": amount, "visible_at": self.lookups + 2})
            raise ccxt.RequestTimeout("binanceusdm timeout")
        order = self._new_order(cid, amount)
        if fault == "ack":  # Binance under load: answered NEW, the fill lands just after
            return {**order, "status": "open", "filled": 0.0, "average": None}
        if fault == "drop":
            raise ccxt.ExchangeNotAvailable("binanceusdm connection reset")
        return order

    async def fetch_order(self, id: Any, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        self.lookups += 1
        fault = self.lookup_faults.pop(0) if self.lookup_faults else ""
        if fault == "timeout":
            raise ccxt.RequestTimeout("binanceusdm lookup timeout")
        if self.on_lookup is not None:
            self.on_lookup()
        for pending in [p for p in self.late if p["visible_at"] <= self.lookups]:
            self._new_order(pending["cid"], pending["amount"])
            self.late.remove(pending)
        cid = params.get("origClientOrderId") or params.get("clientAlgoId")
        if cid not in self.orders:
            raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
        if self.open_reads > 0:
            self.open_reads -= 1
            return {**self.orders[cid], "status": "open", "filled": 0.0, "average": None}
        return self.orders[cid]


def make_client(
    stub: StubExchange, fake: FakeTime, *, attempts: int = 4, recv_window_ms: int = 1000
) -> ExchangeClient:
    tuning = Tuning(
        backoff=BackoffPolicy(attempts=attempts, initial=0.1, maximum=1.0),
        recv_window_ms=recv_window_ms,
        settle_slack_ms=100,
        settle_poll_ms=200,
        send_attempts=attempts,
    )
    return ExchangeClient(
        stub, tuning=tuning, secrets=[SECRET], sleep=fake.sleep, rand=lambda: 0.5, clock=fake.clock
    )


@pytest.fixture
def stub() -> StubExchange:
    return StubExchange()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


async def test_network_errors_are_retried_with_growing_backoff(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.balance_faults = [ccxt.RequestTimeout("t"), ccxt.ExchangeNotAvailable("502")]
    balance = await make_client(stub, fake).balance()
    assert balance.wallet == 1.0
    assert stub.balance_calls == 3
    assert len(fake.sleeps) == 2
    assert fake.sleeps[1] > fake.sleeps[0]


async def test_retries_run_out_into_temporary_error_with_the_cause(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.balance_faults = [ccxt.RequestTimeout(f"t{i}") for i in range(10)]
    with pytest.raises(TemporaryError) as info:
        await make_client(stub, fake, attempts=3).balance()
    assert stub.balance_calls == 3
    assert isinstance(info.value.__cause__, ccxt.RequestTimeout)


@pytest.mark.parametrize(
    ("err", "ours"),
    [
        (ccxt.InsufficientFunds("-2019"), InsufficientMargin),
        (ccxt.InvalidOrder("-2022"), OrderRejected),
        (ccxt.AuthenticationError("-1022"), AuthError),
    ],
)
async def test_business_errors_are_not_retried(
    stub: StubExchange, fake: FakeTime, err: BaseException, ours: type[Exception]
) -> None:
    stub.balance_faults = [err]
    with pytest.raises(ours) as info:
        await make_client(stub, fake).balance()
    assert stub.balance_calls == 1
    assert info.value.__cause__ is err
    assert fake.sleeps == []


async def test_clock_rejection_resyncs_then_succeeds(stub: StubExchange, fake: FakeTime) -> None:
    stub.balance_faults = [ccxt.InvalidNonce("-1021")]
    await make_client(stub, fake).balance()
    assert stub.syncs == 1
    assert stub.balance_calls == 2
    assert stub.options["timeDifference"] == 5


async def test_rate_limit_honours_retry_after(stub: StubExchange, fake: FakeTime) -> None:
    err = ccxt.DDoSProtection("429")
    setattr(err, RETRY_AFTER_ATTR, 7.0)
    stub.balance_faults = [err]
    await make_client(stub, fake).balance()
    assert fake.sleeps[0] >= 7.0


async def test_order_is_sent_once_when_all_goes_well(stub: StubExchange, fake: FakeTime) -> None:
    order = await make_client(stub, fake).place_order(Intent("tb-1"))
    assert (order.client_order_id, order.status, stub.created, stub.sends) == (
        "tb-1",
        "closed",
        1,
        1,
    )


async def test_dropped_answer_after_execution_is_found_not_resent(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["drop"]
    order = await make_client(stub, fake).place_order(Intent("tb-2"))
    assert order.client_order_id == "tb-2"
    assert (stub.created, stub.sends) == (1, 1)


async def test_filled_order_id_is_never_placed_again(stub: StubExchange, fake: FakeTime) -> None:
    client = make_client(stub, fake)
    first = await client.place_order(Intent("tb-3"))
    again = await client.place_order(Intent("tb-3"))
    assert again.id == first.id
    assert (stub.created, stub.sends) == (1, 1)


async def test_not_found_after_timeout_waits_out_the_recv_window(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["timeout"]
    start = fake.now
    order = await make_client(stub, fake, recv_window_ms=1000).place_order(Intent("tb-4"))
    assert order.client_order_id == "tb-4"
    assert (stub.created, stub.sends) == (1, 2)
    assert fake.now - start >= 1.1  # recvWindow + slack passed before the resend


async def test_order_that_lands_late_is_found_not_duplicated(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["late"]
    stub.lookup_faults = ["", "", "timeout"]  # not found, then a failed lookup, then found
    order = await make_client(stub, fake).place_order(Intent("tb-5"))
    assert order.client_order_id == "tb-5"
    assert (stub.created, stub.sends) == (1, 1)


async def test_failed_lookup_gives_outcome_unknown_without_resend(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["timeout"]
    stub.lookup_faults = [""] + ["timeout"] * 20
    with pytest.raises(OutcomeUnknown) as info:
        await make_client(stub, fake, attempts=3).place_order(Intent("tb-6"))
    assert (info.value.call, info.value.client_order_id) == ("place_order", "tb-6")
    assert stub.sends == 1
    # What the executor escalates names the failed send and the failed lookup.
    assert str(info.value) == (
        "place tb-6: send failed (RequestTimeout: binanceusdm POST "
        "http://sim/fapi/v1/order?…) and the lookup failed too (RequestTimeout: "
        "binanceusdm lookup timeout); reconcile before resending"
    )


async def test_insufficient_margin_is_raised_at_once(stub: StubExchange, fake: FakeTime) -> None:
    stub.send_faults = ["insufficient"]
    with pytest.raises(InsufficientMargin):
        await make_client(stub, fake).place_order(Intent("tb-7"))
    assert (stub.sends, stub.created) == (1, 0)


async def test_clock_rejected_send_is_resent_after_resync(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["clock"]
    await make_client(stub, fake).place_order(Intent("tb-8"))
    assert (stub.syncs, stub.sends, stub.created) == (1, 2, 1)


async def test_sends_that_never_execute_run_out_into_temporary_error(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["rate"] * 10
    with pytest.raises(TemporaryError):
        await make_client(stub, fake, attempts=3).place_order(Intent("tb-9"))
    assert (stub.sends, stub.created) == (3, 0)
    assert all(s >= 2.0 for s in fake.sleeps if s > 0.25)


async def test_error_messages_carry_no_secret(stub: StubExchange, fake: FakeTime) -> None:
    stub.send_faults = ["auth"]
    with pytest.raises(AuthError) as info:
        await make_client(stub, fake).place_order(Intent("tb-10"))
    assert SECRET not in str(info.value)


async def test_bad_client_order_id_is_refused_before_any_request(
    stub: StubExchange, fake: FakeTime
) -> None:
    with pytest.raises(ValueError, match="client order id"):
        await make_client(stub, fake).place_order(Intent("BTC|5m|1|long"))
    assert stub.lookups == stub.sends == 0


class CandleStub:
    """Klines whose newest candle closes while the klines request is in flight."""

    TF = 300_000

    def __init__(self) -> None:
        self.now = 10 * self.TF - 1  # the candle opened at 9*TF is still forming
        self.options: dict[str, Any] = {"timeDifference": 0}

    async def fetch_time(self) -> int:
        return self.now

    async def fetch_ohlcv(self, symbol: str, tf: str, since: Any, limit: int) -> list[list[float]]:
        self.now += 2  # the forming candle closes before the answer arrives
        return [[t * self.TF, 1.0, 2.0, 0.5, 1.5, 10.0] for t in range(10 - limit, 10)]


async def test_ohlcv_judges_closure_by_the_time_before_the_request(fake: FakeTime) -> None:
    stub = CandleStub()
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    candles = await client.ohlcv(SYMBOL, 3)
    assert [c.open_time // CandleStub.TF for c in candles] == [6, 7, 8]


async def test_the_executor_intent_schema_is_accepted(stub: StubExchange, fake: FakeTime) -> None:
    intent = OrderIntent(
        client_order_id="tb-schema",
        signal_id="BTC/USDT:USDT|5m|1700000000000|long",
        symbol=SYMBOL,
        side="buy",
        purpose="entry",
        type="market",
        quantity=0.01,
        ts=1,
    )
    order = await make_client(stub, fake).place_order(intent)
    assert (order.client_order_id, stub.created) == ("tb-schema", 1)


class TradeHistoryStub:
    """userTrades as Binance pages them: from startTime, oldest first, ``limit`` rows."""

    def __init__(self, times: list[int], now: int = 1_000) -> None:
        self.options: dict[str, Any] = {"timeDifference": 0}
        self.trades: list[dict[str, Any]] = [
            {"id": str(i), "order": "7", "symbol": SYMBOL, "side": "buy", "timestamp": t}
            for i, t in enumerate(times, start=1)
        ]
        self.now = now
        self.windows: list[tuple[int, int | None]] = []  # (startTime, endTime) asked

    async def fetch_time(self) -> int:
        return self.now

    async def fetch_my_trades(
        self, symbol: str, since: int, limit: int, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        until = params.get("until")
        self.windows.append((since, until))
        # Binance: at most 7 days between startTime and endTime; no endTime, 7 days on.
        if until is not None and until - since >= WEEK_MS:
            raise ccxt.BadRequest('binanceusdm {"code":-1127,"msg":"More than 7 days."}')
        last = since + WEEK_MS - 1 if until is None else until
        return [t for t in self.trades if since <= t["timestamp"] <= last][:limit]


async def test_trade_history_keeps_fills_that_share_a_millisecond_across_pages(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.exchange.HISTORY_PAGE", 3)
    # One order's fills at 20 ms straddle the first page; the page after 20 ms must not skip id 4.
    stub = TradeHistoryStub([10, 20, 20, 20, 30])
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    trades = await client.trade_history(SYMBOL, 0)
    assert [t.id for t in trades] == ["1", "2", "3", "4", "5"]


async def test_history_is_read_one_week_window_at_a_time_up_to_now(fake: FakeTime) -> None:
    # Fills at each window's first and last millisecond, over three weeks.
    times = [0, WEEK_MS - 1, WEEK_MS, 2 * WEEK_MS - 1, 2 * WEEK_MS, 2 * WEEK_MS + 10]
    stub = TradeHistoryStub(times, now=2 * WEEK_MS + 5)
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    trades = await client.trade_history(SYMBOL, 0)
    assert [t.timestamp for t in trades] == times  # the fill after "now" too: last is open
    assert stub.windows == [(0, WEEK_MS - 1), (WEEK_MS, 2 * WEEK_MS - 1), (2 * WEEK_MS, None)]


async def test_history_since_now_still_asks_once(fake: FakeTime) -> None:
    stub = TradeHistoryStub([5_000], now=5_000)
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    assert [t.timestamp for t in await client.trade_history(SYMBOL, 5_000)] == [5_000]
    assert stub.windows == [(5_000, None)]


async def test_a_full_page_goes_on_from_its_last_millisecond(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.exchange.HISTORY_PAGE", 2)
    times = [10, 20, 30, WEEK_MS + 1]
    stub = TradeHistoryStub(times, now=WEEK_MS + 100)
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    assert [t.timestamp for t in await client.trade_history(SYMBOL, 0)] == times
    # A full page goes on from its last row's millisecond, for 7 days from there.
    w = WEEK_MS
    assert stub.windows == [(0, w - 1), (20, w + 19), (30, w + 29), (w + 1, None)]


async def test_a_full_page_in_one_millisecond_steps_past_it(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("shared.exchange.HISTORY_PAGE", 2)
    stub = TradeHistoryStub([7, 7, 7, 9], now=100)
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    trades = await client.trade_history(SYMBOL, 7)
    assert [t.id for t in trades] == ["1", "2", "4"]  # the third row at 7 ms is missed
    assert stub.windows == [(7, None), (8, None)]
    assert "trade_history: over 2 rows at 7 ms, some may be missed" in caplog.text


async def test_history_reaches_back_at_most_the_window_limit(fake: FakeTime) -> None:
    now = HISTORY_MAX_WINDOWS * WEEK_MS + 1_000
    stub = TradeHistoryStub([1_000], now=now)
    client = ExchangeClient(stub, tuning=Tuning(), sleep=fake.sleep, clock=fake.clock)
    assert len(await client.trade_history(SYMBOL, 1_000)) == 1  # exactly the limit: read
    assert len(stub.windows) == HISTORY_MAX_WINDOWS + 1
    with pytest.raises(ValueError, match=r"trade_history: since_ms is more than 60 weeks ago"):
        await client.trade_history(SYMBOL, 999)


async def test_duplicate_id_that_the_lookup_cannot_see_is_an_unknown_outcome(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["duplicate"]
    with pytest.raises(OutcomeUnknown) as info:
        await make_client(stub, fake).place_order(
            Intent("tb-held", type="stop_market", stop_price=1.0)
        )
    assert info.value.client_order_id == "tb-held"
    assert stub.sends == 1


async def test_market_order_answered_new_is_read_again_until_filled(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["ack"]
    order = await make_client(stub, fake).place_order(Intent("tb-ack"))
    assert (order.status, order.filled, order.average) == ("closed", 0.01, 100.0)
    assert (stub.sends, stub.created, stub.lookups) == (1, 1, 2)  # lookup, send, re-read


async def test_an_order_still_new_is_read_again_every_poll_until_filled(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults, stub.open_reads = ["ack"], 3  # NEW at the send and 3 reads after
    order = await make_client(stub, fake).place_order(Intent("tb-ack3"))
    assert (order.status, order.filled) == ("closed", 0.01)
    assert stub.lookups == 1 + 4  # the first lookup, then 3 reads NEW and the filled one
    assert fake.sleeps == [0.2] * 4  # settle_poll_ms between reads


async def test_an_order_new_past_a_recv_window_is_returned_as_it_stands(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults, stub.open_reads = ["ack"], 1_000
    order = await make_client(stub, fake).place_order(Intent("tb-ack-long"))
    assert (order.status, order.filled, order.client_order_id) == ("open", 0.0, "tb-ack-long")
    # Read again while the clock is before send + recvWindow (1000 ms) + slack (100 ms).
    assert fake.sleeps == [0.2] * 6
    assert fake.now == pytest.approx(1000.0 + 1.2)
    assert stub.lookups == 1 + 6


async def test_a_fill_that_cannot_be_read_returns_the_order_as_answered(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.send_faults = ["ack"]
    client = make_client(stub, fake, attempts=2)
    stub.lookup_faults = ["", "timeout", "timeout"]  # the first lookup answers; re-reads fail
    order = await client.place_order(Intent("tb-ack-blind"))
    assert (order.status, order.filled) == ("open", 0.0)  # it exists, as answered
    assert (stub.sends, stub.lookups) == (1, 3)


async def test_a_fill_not_visible_yet_is_read_again(stub: StubExchange, fake: FakeTime) -> None:
    stub.send_faults = ["ack"]
    client = make_client(stub, fake)
    original = stub.fetch_order
    hidden = iter([False, True, False])  # the first lookup, then one re-read finds nothing

    async def sometimes_missing(id: Any, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        if next(hidden, False):
            stub.lookups += 1
            raise ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
        return await original(id, symbol, params)

    stub.fetch_order = sometimes_missing  # type: ignore[method-assign]
    order = await client.place_order(Intent("tb-ack-hidden"))
    assert (order.status, order.filled) == ("closed", 0.01)
    assert stub.lookups == 3


async def test_a_stop_order_is_not_waited_on(stub: StubExchange, fake: FakeTime) -> None:
    stub.send_faults = ["ack"]  # answered NEW: a stop rests so until it triggers
    stub.open_reads = 1_000
    order = await make_client(stub, fake).place_order(
        Intent("tb-stop-new", type="stop_market", stop_price=90.0, reduce_only=True)
    )
    assert order.client_order_id == "tb-stop-new"
    assert (stub.sends, stub.lookups, fake.sleeps) == (1, 1, [])


async def test_guard_that_says_no_sends_nothing(stub: StubExchange, fake: FakeTime) -> None:
    with pytest.raises(SendRefused):
        await make_client(stub, fake).place_order(Intent("tb-g1"), guard=lambda: False)
    assert stub.sends == 0


async def test_guard_is_checked_again_before_a_resend(stub: StubExchange, fake: FakeTime) -> None:
    answers = iter([True, False])
    stub.send_faults = ["clock"]  # -1021: provably not placed, normally resent at once
    with pytest.raises(SendRefused):
        await make_client(stub, fake).place_order(Intent("tb-g2"), guard=lambda: next(answers))
    assert (stub.sends, stub.created) == (1, 0)


async def test_every_send_pins_the_signed_timestamp_to_the_guard_check(
    stub: StubExchange, fake: FakeTime
) -> None:
    stub.options["timeDifference"] = -250  # exchange clock 250 ms ahead of ours
    await make_client(stub, fake).place_order(Intent("tb-g3"))
    assert stub.sent_params[0]["timestamp"] == 250  # milliseconds() 0 minus the offset


async def test_a_resend_is_preceded_by_a_lookup(stub: StubExchange, fake: FakeTime) -> None:
    client = make_client(stub, fake)
    stub.send_faults = ["clock"]
    lookups: list[int] = []

    def another_copy_places_it() -> None:
        lookups.append(stub.lookups)
        if len(lookups) == 2:  # after the first lookup and the failed send
            stub._new_order("tb-g4", 0.01)

    stub.on_lookup = another_copy_places_it
    order = await client.place_order(Intent("tb-g4"))
    assert order.client_order_id == "tb-g4"
    assert (stub.sends, stub.created) == (1, 1)  # found before the resend: not sent twice
