"""The records services keep in Redis beside the streams: universe, book, account, heartbeats.

The state service is the single writer of the book (positions, closed trades, account);
market_data writes the universe and the last prices; every service writes its heartbeat.
Everyone else only reads them, through the functions here. Each record is a frozen
pydantic model stored as JSON; ``load`` raises ``SchemaError`` naming the bad field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys
from shared.schemas import ExitReason, SchemaError, Side, side_sign

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """Base of the stored records: immutable, no unknown fields, finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def dump(self) -> bytes:
        """Return the record as JSON bytes."""
        return orjson.dumps(self.model_dump())

    @classmethod
    def load(cls: type[R], raw: bytes | str) -> R:
        """Parse a stored record; raise SchemaError naming the field when it is not valid."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            raise SchemaError(f"{cls.__name__}.{field}: {first['msg']}", field) from None


class Universe(Record):
    """The active universe: TOP_N symbols by 24 h quote volume, chosen at ``rotated_ms``."""

    symbols: list[str]
    rotated_ms: int  # exchange time of the rotation
    quote_volumes: dict[str, float] = Field(default_factory=dict)


class LastPrice(Record):
    """The latest price market_data saw for a symbol, with its exchange time."""

    price: float
    ts: int


class BookPosition(Record):
    """An open position in the book; ``position_id`` is its entry signal id (or ``adopted|..``)."""

    position_id: str
    symbol: str
    side: Side
    quantity: Annotated[float, Field(gt=0)]
    entry_price: Annotated[float, Field(gt=0)]
    entry_time: int
    entry_fee: float = 0.0
    stop_price: float
    stop_client_order_id: str | None = None  # None until the executor reports it placed
    stop_seq: int = 0
    best_price: float
    exit_requested: ExitReason | None = None  # an exit signal was sent for this reason
    exit_requested_ms: int | None = None
    adopted: bool = False

    def unrealized(self, price: float) -> float:
        """Return the open PnL at ``price`` (fees not included)."""
        return side_sign(self.side) * (price - self.entry_price) * self.quantity


class ClosedTrade(Record):
    """A finished trade: times are the fills' exchange times, PnL net of both fees."""

    position_id: str
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    entry_time: int
    exit_price: float
    exit_time: int
    fees: float
    pnl: float
    reason: ExitReason


class Account(Record):
    """The futures wallet as state last read it from the exchange."""

    wallet: float
    equity: float
    unrealized_pnl: float
    ts: int


class Heartbeat(Record):
    """A running instance's sign of life, refreshed every few seconds with an expiry."""

    service: str
    instance: str
    pid: int
    role: Literal["active", "standby", "worker"]
    mode: str
    started_ms: int
    ts: int


def _decode_all(model: type[R], raw: dict[Any, Any]) -> dict[str, R]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): model.load(v) for k, v in raw.items()}


async def read_positions(client: aioredis.Redis) -> dict[str, BookPosition]:
    """Return the open positions of the book by position id."""
    return _decode_all(BookPosition, await client.hgetall(keys.BOOK_POSITIONS))


async def read_recent_trades(client: aioredis.Redis, n: int = 20) -> list[ClosedTrade]:
    """Return the ``n`` most recently closed trades, newest first."""
    ids: Any = await client.zrevrange(keys.BOOK_TRADE_LOG, 0, n - 1)
    if not ids:
        return []
    raw = await client.hmget(keys.BOOK_TRADES, ids)
    return [ClosedTrade.load(r) for r in raw if r is not None]


async def read_all_trades(client: aioredis.Redis) -> list[ClosedTrade]:
    """Return every closed trade, oldest exit first."""
    trades = _decode_all(ClosedTrade, await client.hgetall(keys.BOOK_TRADES)).values()
    return sorted(trades, key=lambda t: (t.exit_time, t.symbol))


async def read_universe(client: aioredis.Redis) -> Universe | None:
    """Return the active universe, or None before market_data chose one."""
    raw = await client.get(keys.UNIVERSE)
    return None if raw is None else Universe.load(raw)


async def read_last_prices(client: aioredis.Redis) -> dict[str, LastPrice]:
    """Return the latest price per symbol."""
    return _decode_all(LastPrice, await client.hgetall(keys.LAST_PRICES))


async def read_account(client: aioredis.Redis) -> Account | None:
    """Return the account as state last read it, or None before the first read."""
    raw = await client.get(keys.BOOK_ACCOUNT)
    return None if raw is None else Account.load(raw)


async def read_heartbeats(client: aioredis.Redis) -> list[Heartbeat]:
    """Return the heartbeats of every live instance, by service then instance."""
    names = [k async for k in client.scan_iter(match=keys.HEARTBEAT_PATTERN, count=100)]
    if not names:
        return []
    raw = await client.mget(names)
    beats = [Heartbeat.load(r) for r in raw if r is not None]
    return sorted(beats, key=lambda h: (h.service, h.instance))


async def is_halted(client: aioredis.Redis) -> bool:
    """Return whether new entries are halted (``tradebot halt``)."""
    return bool(await client.exists(keys.HALT))
