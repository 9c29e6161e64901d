"""The simulator's matching engine: one USDT-margined account, its positions, orders and fills.

Pure: no I/O, no clock reads. Prices and the time are passed in by the caller.
One-way position mode (positionSide BOTH). Market orders fill at the current price; a
STOP_MARKET algo order triggers when a price event reaches its trigger and fills at the
trigger price (the docs/strategy.md model, also on gaps). Liquidation and funding are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

BUY, SELL = "BUY", "SELL"
MAX_LEVERAGE = 125
SPAWNED_ID_PREFIX = "sim-algo-"  # client id of the market order a triggered stop places
DEFAULT_LEVERAGE = 20
# (notional cap, highest leverage allowed below it, maintenance margin rate): the bracket table.
BRACKETS: tuple[tuple[float, int, float], ...] = (
    (50_000.0, 125, 0.004),
    (250_000.0, 50, 0.005),
    (1_000_000.0, 20, 0.01),
    (5_000_000.0, 10, 0.025),
    (20_000_000.0, 5, 0.05),
    (50_000_000.0, 2, 0.1),
    (1_000_000_000.0, 1, 0.125),
)


class SimError(Exception):
    """A request Binance would refuse, with its error code, message and HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status = code, msg, status


@dataclass(frozen=True)
class SymbolSpec:
    """Trading rules of one USDT perpetual (the exchangeInfo filters)."""

    symbol: str
    base: str
    price_precision: int
    quantity_precision: int
    min_notional: float = 5.0

    @property
    def tick_size(self) -> float:
        """Return the price step."""
        return 10.0**-self.price_precision

    @property
    def step_size(self) -> float:
        """Return the quantity step (also the minimum quantity)."""
        return 10.0**-self.quantity_precision

    @property
    def max_qty(self) -> float:
        """Return the largest quantity of one order."""
        return 1_000_000.0 if self.quantity_precision == 0 else 10_000.0


def spec_for(symbol: str, price: float) -> SymbolSpec:
    """Derive a plausible tick and lot size from a symbol's price (about 5 significant digits)."""
    magnitude = math.floor(math.log10(price))
    base = symbol.removesuffix("USDT")
    return SymbolSpec(symbol, base, min(max(5 - magnitude, 1), 7), min(max(magnitude - 1, 0), 3))


def on_step(value: float, precision: int) -> bool:
    """Tell whether a value is a whole number of steps of 10**-precision."""
    scaled = value * 10**precision
    return bool(abs(scaled - round(scaled)) < 1e-6)


@dataclass
class Position:
    """A one-way position: signed amount, average entry, isolated margin when isolated."""

    amount: float = 0.0
    entry_price: float = 0.0
    isolated_wallet: float = 0.0
    update_time: int = 0


@dataclass
class Order:
    """A regular order; the simulator only has market orders, so each is FILLED at once."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    orig_type: str
    orig_qty: float
    executed_qty: float
    avg_price: float
    reduce_only: bool
    close_position: bool
    stop_price: float
    time: int
    status: str = "FILLED"


@dataclass
class AlgoOrder:
    """A conditional (STOP_MARKET) order placed through the algo endpoint."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    quantity: float
    trigger_price: float
    reduce_only: bool
    close_position: bool
    working_type: str
    create_time: int
    update_time: int
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: int = 0
    actual_price: float = 0.0


@dataclass
class Trade:
    """One fill of an order (the simulator fills each order in one trade)."""

    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: float
    qty: float
    commission: float
    realized_pnl: float
    time: int


@dataclass
class Account:
    """The whole account: wallet, per-symbol settings, positions, orders, algo orders, trades."""

    wallet: float
    fee_rate: float
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    algo_orders: dict[int, AlgoOrder] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    next_id: int = 1_000_001

    def to_dict(self) -> dict[str, Any]:
        """Return the state as plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Account:
        """Rebuild an account saved by ``to_dict``."""
        return cls(
            wallet=data["wallet"],
            fee_rate=data["fee_rate"],
            leverage=dict(data["leverage"]),
            margin_type=dict(data["margin_type"]),
            positions={k: Position(**v) for k, v in data["positions"].items()},
            orders={int(k): Order(**v) for k, v in data["orders"].items()},
            algo_orders={int(k): AlgoOrder(**v) for k, v in data["algo_orders"].items()},
            trades=[Trade(**t) for t in data["trades"]],
            next_id=data["next_id"],
        )

    def new_id(self) -> int:
        """Return the next order, algo or trade id (one increasing sequence)."""
        self.next_id += 1
        return self.next_id

    def leverage_of(self, symbol: str) -> int:
        """Return the symbol's leverage setting."""
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def margin_type_of(self, symbol: str) -> str:
        """Return CROSSED or ISOLATED."""
        return self.margin_type.get(symbol, "CROSSED")

    def position(self, symbol: str) -> Position:
        """Return the symbol's position (a flat one when none is open)."""
        return self.positions.get(symbol) or Position()

    def open_positions(self) -> dict[str, Position]:
        """Return the positions with a non-zero amount."""
        return {s: p for s, p in self.positions.items() if p.amount != 0}

    def unrealized(self, symbol: str, price: float) -> float:
        """Return the position's unrealised PnL at a price."""
        p = self.position(symbol)
        return p.amount * (price - p.entry_price)

    def initial_margin(self, symbol: str, price: float) -> float:
        """Return the position's initial margin: |notional| / leverage."""
        return abs(self.position(symbol).amount) * price / self.leverage_of(symbol)

    def available_balance(self, prices: Mapping[str, float]) -> float:
        """Return cross wallet + cross unrealised PnL - cross initial margin."""
        avail = self.wallet
        for s, p in self.open_positions().items():
            if self.margin_type_of(s) == "ISOLATED":
                avail -= p.isolated_wallet
            else:
                avail += self.unrealized(s, prices[s]) - self.initial_margin(s, prices[s])
        return avail


def max_notional(leverage: int) -> float:
    """Return the largest position notional the bracket table allows at a leverage."""
    cap = 0.0
    for notional_cap, max_lev, _ in BRACKETS:
        if leverage <= max_lev:
            cap = notional_cap
    return cap


def maint_rate(notional: float) -> float:
    """Return the maintenance margin rate of the bracket a notional falls in."""
    for notional_cap, _, rate in BRACKETS:
        if notional <= notional_cap:
            return rate
    return BRACKETS[-1][2]


def check_quantity(spec: SymbolSpec, qty: float) -> None:
    """Refuse a quantity that is not positive, off the lot step, or out of LOT_SIZE bounds."""
    if qty <= 0:
        raise SimError(-4003, "Quantity less than or equal to zero.")
    if not on_step(qty, spec.quantity_precision):
        raise SimError(-1111, "Precision is over the maximum defined for this asset.")
    if qty < spec.step_size - 1e-12 or qty > spec.max_qty:
        raise SimError(-1013, "Filter failure: LOT_SIZE")


def fill_market(
    acct: Account,
    spec: SymbolSpec,
    side: str,
    qty: float,
    price: float,
    prices: Mapping[str, float],
    now: int,
    client_order_id: str,
    reduce_only: bool = False,
    orig_type: str = "MARKET",
    stop_price: float = 0.0,
    close_position: bool = False,
) -> Order:
    """Fill a market order at ``price``: margin and limit checks, fee, position update, trade."""
    symbol = spec.symbol
    price = round(price, spec.price_precision)
    pos = acct.position(symbol)
    sign = 1 if side == BUY else -1
    reducing = pos.amount * sign < 0
    if close_position:
        if not reducing:
            raise SimError(-2022, "ReduceOnly Order is rejected.")
        qty = abs(pos.amount)
    check_quantity(spec, qty)
    if reduce_only:
        if not reducing:
            raise SimError(-2022, "ReduceOnly Order is rejected.")
        qty = min(qty, abs(pos.amount))
    closing = min(qty, abs(pos.amount)) if reducing else 0.0
    opening = round(qty - closing, spec.quantity_precision)
    notional = qty * price
    if not (reduce_only or close_position) and notional < spec.min_notional:
        raise SimError(
            -4164,
            f"Order's notional must be no smaller than {spec.min_notional:g} "
            "(unless you choose reduce only).",
        )
    lev = acct.leverage_of(symbol)
    fee = notional * acct.fee_rate
    if opening > 0:
        new_notional = (abs(pos.amount) - closing + opening) * price
        if new_notional > max_notional(lev):
            raise SimError(-2027, "Exceeded the maximum allowable position at current leverage.")
        released = closing * price / lev if acct.margin_type_of(symbol) == "CROSSED" else 0.0
        if opening * price / lev + fee > acct.available_balance(prices) + released:
            raise SimError(-2019, "Margin is insufficient.")
    realized = sign * -1 * closing * (price - pos.entry_price) if closing else 0.0
    new_pos = _apply(pos, sign, closing, opening, price, acct.margin_type_of(symbol), lev)
    new_pos.amount = round(new_pos.amount, spec.quantity_precision)
    new_pos.update_time = now
    acct.positions[symbol] = new_pos
    acct.wallet += realized - fee
    order = Order(
        acct.new_id(),
        client_order_id,
        symbol,
        side,
        orig_type,
        qty,
        qty,
        price,
        reduce_only,
        close_position,
        stop_price,
        now,
    )
    acct.orders[order.order_id] = order
    acct.trades.append(
        Trade(acct.new_id(), order.order_id, symbol, side, price, qty, fee, realized, now)
    )
    return order


def _apply(
    pos: Position, sign: int, closing: float, opening: float, price: float, mtype: str, lev: int
) -> Position:
    """Return the position after closing then opening amounts at a price."""
    amount, entry, iso = pos.amount, pos.entry_price, pos.isolated_wallet
    if closing:
        iso -= iso * closing / abs(amount)
        amount += sign * closing
        if abs(amount) < 1e-12:
            amount, entry, iso = 0.0, 0.0, 0.0
    if opening:
        new_amount = amount + sign * opening
        entry = (abs(amount) * entry + opening * price) / abs(new_amount)
        amount = new_amount
        if mtype == "ISOLATED":
            iso += opening * price / lev
    return Position(amount, entry, iso)


def place_stop(
    acct: Account,
    spec: SymbolSpec,
    side: str,
    qty: float,
    trigger: float,
    price: float,
    now: int,
    client_algo_id: str,
    reduce_only: bool,
    close_position: bool,
    working_type: str = "CONTRACT_PRICE",
) -> AlgoOrder:
    """Accept a STOP_MARKET algo order; refuse one that would trigger at once (-2021)."""
    if not on_step(trigger, spec.price_precision) or trigger <= 0:
        raise SimError(-4014, "Price not increased by tick size.")
    if not close_position:
        check_quantity(spec, qty)
    if any(
        a.client_algo_id == client_algo_id and a.status == "NEW" for a in acct.algo_orders.values()
    ):
        raise SimError(-4116, "ClientOrderId is duplicated.")
    if (side == SELL and price <= trigger) or (side == BUY and price >= trigger):
        raise SimError(-2021, "Order would immediately trigger.")
    algo = AlgoOrder(
        acct.new_id(),
        client_algo_id,
        spec.symbol,
        side,
        0.0 if close_position else qty,
        trigger,
        reduce_only,
        close_position,
        working_type,
        now,
        now,
    )
    acct.algo_orders[algo.algo_id] = algo
    return algo


def cancel_algo(acct: Account, algo: AlgoOrder, now: int) -> AlgoOrder:
    """Cancel an open algo order; one that already triggered or ended is unknown (-2011)."""
    if algo.status != "NEW":
        raise SimError(-2011, "Unknown order sent.")
    algo.status, algo.update_time = "CANCELED", now
    return algo


def trigger_stops(
    acct: Account,
    spec: SymbolSpec,
    price: float,
    prices: Mapping[str, float],
    now: int,
) -> list[AlgoOrder]:
    """Trigger the symbol's open stops that a price event reaches; fill each at its trigger.

    A stop whose reduce-only fill is impossible (the position is gone) ends EXPIRED, as does
    one whose fill the margin check refuses (status REJECTED); neither leaves an order.
    The market order a stop spawns gets its own client id, not the stop's ``clientAlgoId``
    (Binance's algo service places a new order); find it through ``actualOrderId``.
    """
    fired: list[AlgoOrder] = []
    for algo in sorted(acct.algo_orders.values(), key=lambda a: a.algo_id):
        if algo.symbol != spec.symbol or algo.status != "NEW":
            continue
        hit = price <= algo.trigger_price if algo.side == SELL else price >= algo.trigger_price
        if not hit:
            continue
        algo.trigger_time = algo.update_time = now
        try:
            order = fill_market(
                acct,
                spec,
                algo.side,
                algo.quantity,
                algo.trigger_price,
                {**prices, spec.symbol: algo.trigger_price},
                now,
                f"{SPAWNED_ID_PREFIX}{algo.algo_id}",
                reduce_only=algo.reduce_only,
                orig_type="STOP_MARKET",
                stop_price=algo.trigger_price,
                close_position=algo.close_position,
            )
        except SimError as e:
            algo.status = "EXPIRED" if e.code == -2022 else "REJECTED"
        else:
            algo.status, algo.actual_order_id, algo.actual_price = (
                "FINISHED",
                order.order_id,
                order.avg_price,
            )
        fired.append(algo)
    return fired


def set_leverage(acct: Account, symbol: str, leverage: int, price: float) -> None:
    """Change a symbol's leverage; refuse values off 1..125 or too high for the position."""
    if not 1 <= leverage <= MAX_LEVERAGE:
        raise SimError(-4028, f"Leverage {leverage} is not valid")
    if abs(acct.position(symbol).amount) * price > max_notional(leverage):
        raise SimError(-2027, "Exceeded the maximum allowable position at current leverage.")
    acct.leverage[symbol] = leverage


def set_margin_type(acct: Account, symbol: str, margin_type: str) -> None:
    """Switch CROSSED/ISOLATED; Binance refuses with an open position or open orders."""
    if margin_type not in ("CROSSED", "ISOLATED"):
        raise SimError(-1116, "Invalid marginType.")
    if acct.margin_type_of(symbol) == margin_type:
        raise SimError(-4046, "No need to change margin type.")
    if acct.position(symbol).amount != 0:
        raise SimError(-4048, "Margin type cannot be changed if there exists position.")
    if any(a.symbol == symbol and a.status == "NEW" for a in acct.algo_orders.values()):
        raise SimError(-4047, "Margin type cannot be changed if there exists open orders.")
    acct.margin_type[symbol] = margin_type
