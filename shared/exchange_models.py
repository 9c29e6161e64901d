"""Typed results of the exchange client, and the pure rules that build them from ccxt dicts.

Symbols are ccxt unified symbols (``BTC/USDT:USDT``); times are epoch milliseconds;
quantities are in base units (contracts of size 1 on Binance USD-M).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

OrderStatus = Literal["open", "closed", "canceled", "expired", "rejected"]
PositionSide = Literal["long", "short"]

# Binance: newClientOrderId / clientAlgoId must match this (36 characters at most).
CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
CLIENT_ID_PREFIX = "tb-"


def check_client_order_id(client_order_id: str) -> str:
    """Return the id if Binance accepts it as a client order id, else raise ValueError."""
    if not CLIENT_ORDER_ID.match(client_order_id):
        raise ValueError(
            f"client order id {client_order_id!r} must be 1-36 characters of "
            "A-Z a-z 0-9 . : / _ - (derive one with make_client_order_id)"
        )
    return client_order_id


def make_client_order_id(*parts: str) -> str:
    """Return a deterministic Binance-valid client order id for a natural id (signal, purpose)."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return CLIENT_ID_PREFIX + digest[: 36 - len(CLIENT_ID_PREFIX)]


@dataclass(frozen=True)
class MarketInfo:
    """A tradable perpetual with its precision (tick and step sizes) and limits."""

    symbol: str
    id: str
    base: str
    quote: str
    active: bool
    price_tick: float | None
    amount_step: float | None
    min_amount: float | None
    max_amount: float | None
    min_notional: float | None
    min_price: float | None
    max_price: float | None


@dataclass(frozen=True)
class OHLCV:
    """One candle as the exchange reports it."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class Ticker:
    """Last price and 24 h quote volume of one symbol."""

    symbol: str
    last: float | None
    quote_volume: float | None
    timestamp: int | None


@dataclass(frozen=True)
class Balance:
    """The futures wallet in the quote currency; ``equity`` includes unrealised PnL."""

    currency: str
    wallet: float
    free: float
    used: float
    equity: float
    unrealized_pnl: float


@dataclass(frozen=True)
class Position:
    """An open position (one-way mode): size is positive, the side says which way."""

    symbol: str
    side: PositionSide
    contracts: float
    entry_price: float
    mark_price: float | None
    unrealized_pnl: float | None
    leverage: float | None
    margin_mode: str | None
    liquidation_price: float | None


@dataclass(frozen=True)
class Order:
    """An order or a conditional (stop) order as the exchange knows it."""

    id: str
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    status: str
    amount: float | None
    filled: float
    average: float | None
    stop_price: float | None
    reduce_only: bool
    timestamp: int | None
    is_stop: bool = False
    triggered_order_id: str | None = None


@dataclass(frozen=True)
class Trade:
    """One fill of one of our orders."""

    id: str
    order_id: str | None
    symbol: str
    side: str
    price: float
    amount: float
    fee: float
    fee_currency: str | None
    realized_pnl: float | None
    timestamp: int


def _f(value: Any) -> float | None:
    """Return value as a float, or None when absent or empty."""
    if value is None or value == "":
        return None
    return float(value)


def _f0(value: Any) -> float:
    """Return value as a float, 0.0 when absent."""
    out = _f(value)
    return 0.0 if out is None else out


def parse_market(m: Mapping[str, Any]) -> MarketInfo:
    """Build a MarketInfo from a ccxt market (binanceusdm precision is tick/step sizes)."""
    precision = m.get("precision") or {}
    limits = m.get("limits") or {}
    amount = limits.get("amount") or {}
    price = limits.get("price") or {}
    cost = limits.get("cost") or {}
    return MarketInfo(
        symbol=str(m["symbol"]),
        id=str(m["id"]),
        base=str(m.get("base")),
        quote=str(m.get("quote")),
        active=bool(m.get("active", True)),
        price_tick=_f(precision.get("price")),
        amount_step=_f(precision.get("amount")),
        min_amount=_f(amount.get("min")),
        max_amount=_f(amount.get("max")),
        min_notional=_f(cost.get("min")),
        min_price=_f(price.get("min")),
        max_price=_f(price.get("max")),
    )


def _fnan(value: Any) -> float:
    """Return value as a float, NaN when absent or empty (so a check refuses it)."""
    out = _f(value)
    return math.nan if out is None else out


def parse_ohlcv(row: Sequence[Any]) -> OHLCV:
    """Build an OHLCV from ccxt's ``[ms, o, h, l, c, v]`` row.

    A value the exchange left out or ccxt could not read (None) becomes NaN, never 0: the
    candle is then refused by validation instead of passing as a zero-volume candle.
    """
    values = [_fnan(v) for v in row[1:6]]
    return OHLCV(int(row[0]), *values)


def closed_candles(rows: Sequence[OHLCV], timeframe_ms: int, now_ms: int) -> list[OHLCV]:
    """Keep the candles that have closed by exchange time ``now_ms`` (drops the forming one)."""
    return [c for c in rows if c.open_time + timeframe_ms <= now_ms]


def parse_ticker(t: Mapping[str, Any]) -> Ticker:
    """Build a Ticker from a ccxt ticker.

    The last price is the exchange's own ``lastPrice`` when its answer has one (Binance):
    ccxt rebuilds a zero last price from the open price and the 24 h change percentage,
    a plausible but approximate price; the raw value lets the caller refuse it instead.
    """
    ts = t.get("timestamp")
    info = t.get("info")
    raw_last = info.get("lastPrice") if isinstance(info, Mapping) else None
    return Ticker(
        symbol=str(t["symbol"]),
        last=_f(raw_last) if raw_last is not None else _f(t.get("last")),
        quote_volume=_f(t.get("quoteVolume")),
        timestamp=int(ts) if ts is not None else None,
    )


def parse_balance(b: Mapping[str, Any], currency: str) -> Balance:
    """Build a Balance from a ccxt fetch_balance result (Binance USD-M account v3 info)."""
    entry = b.get(currency) or {}
    info = b.get("info") or {}
    assets = {a.get("asset"): a for a in info.get("assets") or [] if isinstance(a, Mapping)}
    asset = assets.get(currency) or {}
    wallet = _f(asset.get("walletBalance"))
    upnl = _f0(asset.get("unrealizedProfit"))
    equity = _f(asset.get("marginBalance"))
    total = _f0(entry.get("total"))
    return Balance(
        currency=currency,
        wallet=total if wallet is None else wallet,
        free=_f0(entry.get("free")),
        used=_f0(entry.get("used")),
        equity=(total if wallet is None else wallet + upnl) if equity is None else equity,
        unrealized_pnl=upnl,
    )


def _leverage(p: Mapping[str, Any]) -> float | None:
    """Return the position's leverage; Binance's positionRisk v3 omits it: notional / margin."""
    direct = _f(p.get("leverage"))
    if direct is not None:
        return direct
    notional, margin = _f(p.get("notional")), _f(p.get("initialMargin"))
    if notional is None or not margin:
        return None
    return round(abs(notional) / margin, 6)


def parse_position(p: Mapping[str, Any]) -> Position | None:
    """Build a Position from a ccxt position; None when it is flat."""
    contracts = _f0(p.get("contracts"))
    if contracts == 0:
        return None
    side: PositionSide
    if p.get("side") == "long":
        side = "long"
    elif p.get("side") == "short":
        side = "short"
    else:
        side = "long" if _f0((p.get("info") or {}).get("positionAmt")) > 0 else "short"
    return Position(
        symbol=str(p["symbol"]),
        side=side,
        contracts=abs(contracts),
        entry_price=_f0(p.get("entryPrice")),
        mark_price=_f(p.get("markPrice")),
        unrealized_pnl=_f(p.get("unrealizedPnl")),
        leverage=_leverage(p),
        margin_mode=p.get("marginMode"),
        liquidation_price=_f(p.get("liquidationPrice")),
    )


def parse_order(o: Mapping[str, Any], *, is_stop: bool = False) -> Order:
    """Build an Order from a ccxt order (plain or algo/conditional)."""
    info = o.get("info") or {}
    triggered = info.get("actualOrderId") or None
    ts = o.get("timestamp")
    return Order(
        id=str(o.get("id")),
        client_order_id=o.get("clientOrderId"),
        symbol=str(o.get("symbol")),
        side=str(o.get("side")),
        type=str(o.get("type")),
        status=str(o.get("status")),
        amount=_f(o.get("amount")),
        filled=_f0(o.get("filled")),
        average=_f(o.get("average")) or None,
        stop_price=_f(o.get("triggerPrice")),
        reduce_only=bool(o.get("reduceOnly")),
        timestamp=int(ts) if ts is not None else None,
        is_stop=is_stop,
        triggered_order_id=str(triggered) if triggered is not None else None,
    )


def parse_trade(t: Mapping[str, Any]) -> Trade:
    """Build a Trade from a ccxt trade (Binance userTrades)."""
    fee = t.get("fee") or {}
    info = t.get("info") or {}
    return Trade(
        id=str(t.get("id")),
        order_id=t.get("order"),
        symbol=str(t.get("symbol")),
        side=str(t.get("side")),
        price=_f0(t.get("price")),
        amount=_f0(t.get("amount")),
        fee=_f0(fee.get("cost")),
        fee_currency=fee.get("currency"),
        realized_pnl=_f(info.get("realizedPnl")),
        timestamp=int(t.get("timestamp") or 0),
    )


def rewrite_api_urls(api: Any, base_url: str) -> Any:
    """Return ccxt ``urls['api']`` with every URL's scheme and host replaced, paths kept."""
    if isinstance(api, str):
        new = urlsplit(base_url)
        old = urlsplit(api)
        return urlunsplit((new.scheme, new.netloc, old.path, old.query, old.fragment))
    if isinstance(api, Mapping):
        return {k: rewrite_api_urls(v, base_url) for k, v in api.items()}
    return api
