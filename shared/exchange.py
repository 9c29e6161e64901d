"""The exchange client: ccxt (async) with retries, clock sync, metrics and idempotent orders.

One ``ExchangeClient`` wraps one ccxt exchange. ``EXCHANGE=sim`` drives ccxt's
``binanceusdm`` against the local simulator (every API URL rewritten to it); any other
value is a ccxt id (``binanceusdm`` for trading; any id works for market data), with
``TESTNET=true`` switching Binance to its demo-trading endpoints.

Order placement is idempotent per client order id; see ``place_order``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import ccxt.async_support as ccxt
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from shared.config import TIMEFRAME_MS, Settings
from shared.exchange_ccxt import Tuning, create_ccxt
from shared.exchange_errors import (
    MAYBE_EXECUTED,
    RETRYABLE,
    UNREADABLE,
    Kind,
    OutcomeUnknown,
    SendRefused,
    TemporaryError,
    UnreadableAnswer,
    classify,
    describe,
    is_retryable,
    translate,
)
from shared.exchange_models import (
    OHLCV,
    Balance,
    MarketInfo,
    Order,
    Position,
    Ticker,
    Trade,
    check_client_order_id,
    closed_candles,
    parse_balance,
    parse_market,
    parse_ohlcv,
    parse_order,
    parse_position,
    parse_ticker,
    parse_trade,
)
from shared.metrics import EXCHANGE_ERRORS, EXCHANGE_LATENCY, EXCHANGE_REQUESTS, EXCHANGE_RETRIES

__all__ = ["ExchangeClient", "OrderRequest", "Tuning", "create_ccxt"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Guard = Callable[[], bool]
WEEK_MS = 7 * 86_400_000
HISTORY_PAGE = 500
OHLCV_MARGIN = 4  # extra klines per request, see ohlcv()
ALGO_HISTORY_PAGE = 100  # allAlgoOrders answers at most 100 rows per request
HISTORY_MAX_WINDOWS = 60  # about 14 months of history per call


class OrderRequest(Protocol):
    """What ``place_order`` needs of an intent (``shared.schemas.OrderIntent`` fits)."""

    @property
    def client_order_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def quantity(self) -> float: ...
    @property
    def stop_price(self) -> float | None: ...
    @property
    def reduce_only(self) -> bool: ...


class ExchangeClient:
    """The services' one way to the exchange: typed results, our errors, metrics per call."""

    def __init__(
        self,
        exchange: Any,
        *,
        quote: str = "USDT",
        timeframe: str = "5m",
        tuning: Tuning | None = None,
        secrets: Sequence[str] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        host_clock: bool = False,
    ) -> None:
        self.ex = exchange
        self.host_clock = host_clock
        self.quote = quote
        self.timeframe = timeframe
        self.tuning = tuning or Tuning()
        self._secrets = tuple(s for s in secrets if s)
        self._sleep = sleep
        self._rand = rand
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, tuning: Tuning | None = None) -> ExchangeClient:
        """Build the client (not yet started) for the configured exchange."""
        secrets = [s.get_secret_value() for s in (settings.api_key, settings.api_secret) if s]
        # ccxt's throttle charges Binance's weights (all tickers: 2 s); the simulator has none.
        tuning = tuning or Tuning(
            recv_window_ms=settings.recv_window_ms, enable_rate_limit=settings.exchange != "sim"
        )
        return cls(
            create_ccxt(settings, tuning),
            quote=settings.quote,
            timeframe=settings.timeframe,
            tuning=tuning,
            secrets=secrets,
            host_clock=settings.exchange == "sim",
        )

    async def start(self) -> None:
        """Sync the clock and load the markets; call once before anything else."""
        await self.sync_clock()
        await self._call("load_markets", lambda: self.ex.load_markets())

    async def start_when_reachable(self, stop: asyncio.Event, retry_s: float = 5.0) -> bool:
        """Start, retrying every ``retry_s`` while the exchange is unreachable (it may still
        be starting: compose starts the simulator alongside); return False if stopped."""
        while not stop.is_set():
            try:
                await self.start()
                return True
            except TemporaryError as e:
                log.warning("Exchange: not reachable at start (%s); retrying in %g s", e, retry_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
        return False

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.ex.close()

    async def __aenter__(self) -> ExchangeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the retry shell ---------------------------------------------------------------

    async def _attempt(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one request, timing and counting it; re-sync the clock after a -1021."""
        EXCHANGE_REQUESTS.labels(call).inc()
        start = time.perf_counter()
        try:
            try:
                result = await fn()
            except UNREADABLE as e:
                # ccxt failed to parse the answer (an HTML page with status 200, a field of
                # the wrong type): the request reached the exchange, its answer is garbage.
                # A BadResponse is "unavailable": reads retry, orders look up before any
                # resend; once the retries run out it becomes an UnreadableAnswer.
                raise ccxt.BadResponse(
                    f"{call}: unreadable answer ({type(e).__name__}: {e})"
                ) from e
        except ccxt.BaseError as e:
            kind = classify(e)
            EXCHANGE_ERRORS.labels(call, kind.value).inc()
            if kind is Kind.CLOCK:
                await self._resync(call)
            raise
        finally:
            EXCHANGE_LATENCY.labels(call).observe(time.perf_counter() - start)
        return result

    def _wait(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        return self.tuning.backoff.wait(state.attempt_number, err, self._rand())

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        if state.args:
            EXCHANGE_RETRIES.labels(state.args[0]).inc()
        if err is not None:
            log.warning(
                "Exchange retry: attempt %d failed: %s", state.attempt_number, self._say(err)
            )

    async def _retrying(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` with retries on network-class errors only; raise ccxt's last error."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.tuning.backoff.attempts),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        return await retrying(self._attempt, call, fn)

    async def _call(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` with retries and translate a final ccxt error into our taxonomy."""
        try:
            return await self._retrying(call, fn)
        except ccxt.BaseError as e:
            raise translate(e, call, self._secrets) from e

    def _say(self, err: BaseException) -> str:
        return describe(err, self._secrets)

    # --- clock -------------------------------------------------------------------------

    async def sync_clock(self) -> int:
        """Measure the offset to the exchange clock (ccxt's timeDifference); return it in ms."""
        offset: int = await self._call("sync_clock", lambda: self.ex.load_time_difference())
        self._sign_with_host_clock()
        log.info("Exchange clock: local minus exchange = %d ms", offset)
        return offset

    def _sign_with_host_clock(self) -> None:
        """Against the simulator, sign with the host clock: it accepts that, and its own
        clock may run sped up or stepped, so no measured offset stays right for long."""
        if self.host_clock:
            self.ex.options["timeDifference"] = 0

    async def _resync(self, call: str) -> None:
        """Re-measure the clock offset after the exchange rejected a timestamp (-1021)."""
        try:
            offset = await self._attempt("sync_clock", lambda: self.ex.load_time_difference())
        except ccxt.BaseError as e:
            log.warning("Exchange clock re-sync after %s failed: %s", call, self._say(e))
            return
        self._sign_with_host_clock()
        log.warning("Exchange clock re-synced after -1021 on %s: offset %s ms", call, offset)

    def exchange_now_ms(self) -> int:
        """Return the time requests are signed with: the exchange's, estimated from the local
        clock and the measured offset (the host clock against the simulator)."""
        return int(self.ex.milliseconds() - int(self.ex.options.get("timeDifference") or 0))

    async def server_time(self) -> int:
        """Return the exchange's clock in ms (one request)."""
        value: Any = await self._call("server_time", lambda: self.ex.fetch_time())
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UnreadableAnswer(f"server_time: unreadable answer {value!r}", "server_time")
        return value

    # --- market data -------------------------------------------------------------------

    async def markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return the active linear perpetuals settled in the quote currency, by symbol.

        ccxt caches the markets after the first load; ``reload=True`` fetches them again
        (listings and delistings, e.g. at universe rotation).
        """
        raw = await self._call("load_markets", lambda: self.ex.load_markets(reload))
        out: dict[str, MarketInfo] = {}
        for m in raw.values():
            if (
                m.get("swap")
                and m.get("linear")
                and m.get("settle") == self.quote
                and m.get("active") is not False
            ):
                info = parse_market(m)
                out[info.symbol] = info
        return out

    async def ohlcv(
        self,
        symbol: str,
        limit: int,
        *,
        timeframe: str | None = None,
        now_ms: int | None = None,
    ) -> list[OHLCV]:
        """Return up to ``limit`` closed candles, oldest first, judged by exchange time.

        ``now_ms`` must be an exchange time read before this call (else one is fetched
        first): a candle that closes while its klines are in flight was still forming when
        they were read, so it is judged by the earlier time and dropped.
        """
        tf = timeframe or self.timeframe
        now = now_ms if now_ms is not None else await self.server_time()
        # A few more rows than asked: candles that close while the request is in flight come
        # back too and are dropped as not closed at now_ms, without pushing a wanted one out.
        rows = await self._call(
            "ohlcv", lambda: self.ex.fetch_ohlcv(symbol, tf, None, limit + OHLCV_MARGIN)
        )
        closed = closed_candles([parse_ohlcv(r) for r in rows], TIMEFRAME_MS[tf], now)
        return closed[-limit:]

    async def ohlcv_from(
        self, symbol: str, timeframe: str, since_ms: int, limit: int, now_ms: int
    ) -> list[OHLCV]:
        """Return up to ``limit`` closed candles opening at or after ``since_ms``, oldest
        first (one page of history; ``now_ms`` is an exchange time read before the call)."""
        rows = await self._call(
            "ohlcv", lambda: self.ex.fetch_ohlcv(symbol, timeframe, since_ms, limit)
        )
        candles = [parse_ohlcv(r) for r in rows]
        return [
            c
            for c in closed_candles(candles, TIMEFRAME_MS[timeframe], now_ms)
            if c.open_time >= since_ms
        ]

    async def tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]:
        """Return last price and 24 h quote volume per symbol (all symbols when None)."""
        arg = list(symbols) if symbols is not None else None
        raw = await self._call("tickers", lambda: self.ex.fetch_tickers(arg))
        return {s: parse_ticker(t) for s, t in raw.items()}

    async def quote_volumes(self) -> dict[str, float]:
        """Return the 24 h quote volume of every linear perpetual in the quote currency."""
        markets = await self.markets()
        tickers = await self.tickers()
        return {
            s: t.quote_volume
            for s, t in tickers.items()
            if s in markets and t.quote_volume is not None
        }

    # --- account -----------------------------------------------------------------------

    async def balance(self) -> Balance:
        """Return the futures wallet: wallet balance, free margin, equity."""
        raw = await self._call("balance", lambda: self.ex.fetch_balance())
        return parse_balance(raw, self.quote)

    async def positions(self, symbols: Sequence[str] | None = None) -> list[Position]:
        """Return the open (non-zero) positions."""
        arg = list(symbols) if symbols is not None else None
        raw = await self._call("positions", lambda: self.ex.fetch_positions(arg))
        return [p for p in (parse_position(r) for r in raw) if p is not None]

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Set the symbol's leverage (idempotent)."""
        await self._call("set_leverage", lambda: self.ex.set_leverage(leverage, symbol))

    async def set_margin_mode(self, symbol: str, mode: str) -> None:
        """Set 'isolated' or 'cross' margin on the symbol; already set is fine."""
        try:
            await self._retrying("set_margin_mode", lambda: self.ex.set_margin_mode(mode, symbol))
        except ccxt.NoChange:
            return
        except ccxt.BaseError as e:
            raise translate(e, "set_margin_mode", self._secrets) from e

    # --- orders ------------------------------------------------------------------------

    def _lookup_params(self, client_order_id: str, stop: bool) -> dict[str, Any]:
        if stop:
            return {"clientAlgoId": client_order_id, "trigger": True}
        return {"origClientOrderId": client_order_id}

    async def _fetch_raw(self, symbol: str, client_order_id: str, stop: bool) -> Any:
        """Return ccxt's order for a client id, or None when the exchange does not know it."""
        call = "fetch_stop" if stop else "fetch_order"
        params = self._lookup_params(client_order_id, stop)
        try:
            return await self._retrying(call, lambda: self.ex.fetch_order(None, symbol, params))
        except ccxt.OrderNotFound:
            return None

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order | None:
        """Return the order with this client id, or None if the exchange has none."""
        return await self._fetch(symbol, client_order_id, stop=False)

    async def fetch_stop_order(self, symbol: str, client_order_id: str) -> Order | None:
        """Return the conditional (stop) order with this client id, or None."""
        return await self._fetch(symbol, client_order_id, stop=True)

    async def _fetch(self, symbol: str, client_order_id: str, *, stop: bool) -> Order | None:
        try:
            raw = await self._fetch_raw(symbol, client_order_id, stop)
        except ccxt.BaseError as e:
            raise translate(e, "fetch_stop" if stop else "fetch_order", self._secrets) from e
        return None if raw is None else parse_order(raw, is_stop=stop)

    async def _settle(
        self, req: OrderRequest, stop: bool, failed_at: float, cause: BaseException
    ) -> Order | None:
        """After an unclear send, return the order if it exists; None once it provably cannot.

        "Not found" right after a timeout is not proof: the request may still be queued
        inside the exchange. Binance refuses to execute a signed request once its timestamp
        is older than recvWindow; the request was signed before the send failed, so only a
        lookup made after ``failed_at + recvWindow`` (plus clock slack) that still finds
        nothing proves the order will never exist.
        """
        t = self.tuning
        deadline = failed_at + (t.recv_window_ms + t.settle_slack_ms) / 1000
        while True:
            try:
                raw = await self._fetch_raw(req.symbol, req.client_order_id, stop)
            except ccxt.BaseError as e:
                raise OutcomeUnknown(
                    f"place {req.client_order_id}: send failed ({self._say(cause)}) and the "
                    f"lookup failed too ({self._say(e)}); reconcile before resending",
                    "place_stop" if stop else "place_order",
                    req.client_order_id,
                ) from e
            if raw is not None:
                return parse_order(raw, is_stop=stop)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            await self._sleep(min(remaining, t.settle_poll_ms / 1000))

    async def _send(self, req: OrderRequest, stop: bool, guard: Guard | None) -> Any:
        """Send once, if the guard allows it, with the request's timestamp pinned to now.

        The guard (e.g. "the lease is still ours") is checked right before the request is
        built, and the signed timestamp is taken at that same moment, with no await in
        between: so any send made under a guard that held at time T is refused by the
        exchange once T + recvWindow has passed, however long this process stalls after
        the check. A new lease holder that waits a recvWindow (plus clock slack) before its
        first send can therefore never see an old holder's order land after its own.
        """
        if guard is not None and not guard():
            raise SendRefused(
                f"place {req.client_order_id}: not sent, this copy may no longer act",
                "place_stop" if stop else "place_order",
            )
        params: dict[str, Any] = {
            "clientOrderId": req.client_order_id,
            "timestamp": self.exchange_now_ms(),
        }
        if req.reduce_only:
            params["reduceOnly"] = True
        if stop:
            params["triggerPrice"] = req.stop_price
        return await self.ex.create_order(
            req.symbol, "market", req.side, req.quantity, None, params
        )

    async def place_order(self, req: OrderRequest, guard: Guard | None = None) -> Order:
        """Place a market or stop-market order at most once per client order id.

        The id is looked up first (a filled order's id is accepted again by Binance, which
        only enforces uniqueness among open orders), and after any send whose outcome is
        unclear (timeout, 5xx, reset) it is looked up again, until found or provably absent,
        before anything is resent; every resend is preceded by one more lookup. ``guard``
        is checked right before every send (see ``_send``): when it says no, SendRefused
        is raised and nothing more is sent. Returns the exchange's order, whatever its status (an
        earlier order under this id, even canceled, is returned as is: one id, one order);
        a market order answered NEW is read again until filled (see ``_filled``).
        Raises OrderRejected / InsufficientMargin (not executed), TemporaryError (not
        executed, retries exhausted), OutcomeUnknown (may exist: reconcile), SendRefused
        (the guard said no: this attempt sent nothing, an earlier one of this call may
        have been sent and was proven absent or is still unclear: reconcile).
        """
        check_client_order_id(req.client_order_id)
        stop = req.type == "stop_market"
        if stop and req.stop_price is None:
            raise ValueError(f"stop order {req.client_order_id} needs a stop_price")
        call = "place_stop" if stop else "place_order"
        existing = await self._fetch(req.symbol, req.client_order_id, stop=stop)
        if existing is not None:
            log.info("Order %s already on the exchange: not resent", req.client_order_id)
            return await self._filled(req, existing)
        last: BaseException | None = None
        attempts = self.tuning.send_attempts
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                # A resend follows a failure that proved nothing was placed, but another
                # copy may have placed the id since: look once more before sending again.
                again = await self._fetch(req.symbol, req.client_order_id, stop=stop)
                if again is not None:
                    log.warning("Order %s found before resending: not resent", req.client_order_id)
                    return await self._filled(req, again)
            try:
                raw = await self._attempt(call, lambda: self._send(req, stop, guard))
            except ccxt.BaseError as e:
                last = e
                kind = classify(e)
                if kind in MAYBE_EXECUTED or kind is Kind.DUPLICATE:
                    found = await self._settle(req, stop, self._clock(), e)
                    if found is not None:
                        log.warning(
                            "Order %s: unclear send (%s), found on the exchange",
                            req.client_order_id,
                            self._say(e),
                        )
                        return await self._filled(req, found)
                    if kind is Kind.DUPLICATE:
                        # -4116: an OPEN order holds this id, yet the lookup cannot see it.
                        raise OutcomeUnknown(
                            f"place {req.client_order_id}: the exchange says an open order "
                            f"holds this id ({self._say(e)}) but the lookup finds none; "
                            "reconcile before resending",
                            call,
                            req.client_order_id,
                        ) from e
                if kind not in RETRYABLE:
                    raise translate(e, call, self._secrets) from e
                log.warning(
                    "Order %s: send %d/%d failed, provably not placed: %s",
                    req.client_order_id,
                    attempt,
                    attempts,
                    self._say(e),
                )
                if attempt < attempts:
                    EXCHANGE_RETRIES.labels(call).inc()
                    await self._sleep(self.tuning.backoff.wait(attempt, e, self._rand()))
            else:
                return await self._filled(req, parse_order(raw, is_stop=stop))
        assert last is not None
        raise TemporaryError(
            f"{call} {req.client_order_id}: not placed after {attempts} sends: {self._say(last)}",
            call,
        ) from last

    async def _filled(self, req: OrderRequest, order: Order) -> Order:
        """Return a placed market order once filled; Binance may answer NEW before the fill.

        A market order's answer (``newOrderRespType=RESULT``) is normally FILLED, but under
        load Binance answers NEW with nothing executed yet. Read it again by client id until
        it is no longer open, for at most a recvWindow plus slack; an order still open then
        (or unreadable) is returned as it stands: it exists either way.
        """
        if order.is_stop or order.status != "open":
            return order
        t = self.tuning
        deadline = self._clock() + (t.recv_window_ms + t.settle_slack_ms) / 1000
        while self._clock() < deadline:
            await self._sleep(t.settle_poll_ms / 1000)
            try:
                raw = await self._fetch_raw(req.symbol, req.client_order_id, stop=False)
            except ccxt.BaseError as e:
                log.warning("Order %s placed; fill not read: %s", req.client_order_id, self._say(e))
                return order
            if raw is not None:
                order = parse_order(raw)
                if order.status != "open":
                    return order
        return order

    async def fetch_order_by_id(self, symbol: str, order_id: str) -> Order | None:
        """Return a plain order by the exchange's id (a triggered stop's market order), or None."""
        try:
            raw = await self._retrying("fetch_order", lambda: self.ex.fetch_order(order_id, symbol))
        except ccxt.OrderNotFound:
            return None
        except ccxt.BaseError as e:
            raise translate(e, "fetch_order", self._secrets) from e
        return parse_order(raw)

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order | None:
        """Cancel an order by client id; return its final state (None if it never existed)."""
        return await self._cancel(symbol, client_order_id, stop=False)

    async def cancel_stop(self, symbol: str, client_order_id: str) -> Order | None:
        """Cancel a stop order by client id; return its final state (it may have triggered)."""
        return await self._cancel(symbol, client_order_id, stop=True)

    async def _cancel(self, symbol: str, client_order_id: str, *, stop: bool) -> Order | None:
        call = "cancel_stop" if stop else "cancel_order"
        params = self._lookup_params(client_order_id, stop)
        try:
            await self._retrying(call, lambda: self.ex.cancel_order(None, symbol, params))
        except (ccxt.OrderNotFound, ccxt.InvalidOrder) as e:
            # Gone already (filled, triggered, canceled by an earlier try): report its state.
            log.info("Cancel %s: %s", client_order_id, self._say(e))
        except ccxt.BaseError as e:
            raise translate(e, call, self._secrets) from e
        return await self._fetch(symbol, client_order_id, stop=stop)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Return the open plain orders (all symbols when None)."""
        raw = await self._call("open_orders", lambda: self.ex.fetch_open_orders(symbol))
        return [parse_order(o) for o in raw]

    async def open_stop_orders(self, symbol: str | None = None) -> list[Order]:
        """Return the open conditional (stop) orders (all symbols when None)."""
        params = {"trigger": True}
        raw = await self._call(
            "open_stops", lambda: self.ex.fetch_open_orders(symbol, None, None, params)
        )
        return [parse_order(o, is_stop=True) for o in raw]

    async def _history(
        self,
        call: str,
        fetch: Callable[..., Awaitable[Any]],
        symbol: str,
        since_ms: int,
        params: dict[str, Any],
        page: int | None = None,
    ) -> list[Any]:
        """Page through a Binance history endpoint in windows of at most 7 days, up to now.

        Binance answers allOrders/userTrades/allAlgoOrders for one 7-day window per request
        (at most ``page`` rows: ask no more than the endpoint's cap, or a capped answer
        looks like the window's last page). A full page continues from the last row's
        millisecond, not the one after: rows sharing it (one order's many fills) may
        straddle the page boundary. Rows read twice are dropped by id.
        """
        page = page or HISTORY_PAGE  # read now, not at import: tests shrink it
        end = await self.server_time()
        if end - since_ms > HISTORY_MAX_WINDOWS * WEEK_MS:
            raise ValueError(f"{call}: since_ms is more than {HISTORY_MAX_WINDOWS} weeks ago")
        rows: list[Any] = []
        seen: set[str] = set()
        start = since_ms
        while start <= end:
            until = start + WEEK_MS - 1
            # The last window stays open-ended so rows newer than ``end`` are not cut off.
            query = {**params, "until": until} if until < end else dict(params)
            batch = await self._call(call, partial(fetch, symbol, start, page, query))
            fresh = [r for r in batch if str(r["id"]) not in seen]
            seen.update(str(r["id"]) for r in fresh)
            rows.extend(fresh)
            if len(batch) < page:
                start = until + 1
                continue
            last = int(batch[-1]["timestamp"])
            if last == start:  # a whole page in one millisecond: step past it
                log.warning("%s: over %d rows at %d ms, some may be missed", call, page, last)
            start = last if last > start else last + 1
        return rows

    async def order_history(self, symbol: str, since_ms: int) -> list[Order]:
        """Return the symbol's plain orders created since ``since_ms``, oldest first."""
        raw = await self._history("order_history", self.ex.fetch_orders, symbol, since_ms, {})
        return [parse_order(o) for o in raw]

    async def stop_order_history(self, symbol: str, since_ms: int) -> list[Order]:
        """Return the symbol's conditional orders created since ``since_ms`` (allAlgoOrders)."""
        raw = await self._history(
            "stop_history",
            self.ex.fetch_orders,
            symbol,
            since_ms,
            {"trigger": True},
            ALGO_HISTORY_PAGE,
        )
        return [parse_order(o, is_stop=True) for o in raw]

    async def trade_history(self, symbol: str, since_ms: int) -> list[Trade]:
        """Return the symbol's fills since ``since_ms``, oldest first."""
        raw = await self._history("trade_history", self.ex.fetch_my_trades, symbol, since_ms, {})
        return [parse_trade(t) for t in raw]
