"""Every stream message as a versioned pydantic model, and the orjson codec that carries them.

Wire format: one JSON object per stream entry (stored in the entry field ``d``) carrying
``kind`` (which model) and ``v`` (its schema version). ``encode(msg)`` gives the bytes;
``decode(data)`` returns the model named by ``kind``; ``decode(data, Model)`` also checks
that the kind is the expected one. Any bad input raises ``SchemaError`` naming the field.

Invariants enforced on decode and on construction: prices are finite and > 0, volumes and
fees are finite and >= 0, quantities are > 0, no unknown fields, only known versions.
Order sides are the exchange's ``buy``/``sell``; position sides are ``long``/``short``.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, ClassVar, Literal, TypeVar, overload

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

FIELD = "d"  # the one field of a stream entry that holds the encoded message

Side = Literal["long", "short"]
OrderSide = Literal["buy", "sell"]
OrderPurpose = Literal["entry", "stop", "exit"]
OrderType = Literal["market", "stop_market"]
ExitReason = Literal["stop", "trail", "fault", "manual", "end"]
DlqReason = Literal["decode", "invalid", "handler", "deliveries"]

Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Quantity = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Volume = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
# Integers fit a signed 64-bit word: orjson encodes no larger one (and reads a larger one as
# a float), so a bigger value would decode through one path and fail to encode afterwards.
MAX_INT = 2**63 - 1
TimeMs = Annotated[int, Field(ge=0, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Text = Annotated[str, Field(min_length=1)]


class SchemaError(ValueError):
    """A message could not be decoded or validated; ``field`` names the offending field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Message(BaseModel):
    """Base of every stream message: immutable, strict about extra fields and non-finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    # Supported versions are MIN_VERSION..VERSION; a model that changes its shape raises
    # VERSION and the matching bounds on v together.
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1
    v: Annotated[int, Field(ge=1, le=1)] = 1


def side_sign(side: Side) -> int:
    """Return +1 for a long and -1 for a short: the sign of PnL per unit of price rise."""
    return 1 if side == "long" else -1


def entry_signal_id(symbol: str, timeframe: str, candle_open_ms: int, side: Side) -> str:
    """Return the deterministic entry signal id (one id, at most one position)."""
    return f"{symbol}|{timeframe}|{candle_open_ms}|{side}"


def entry_candle_open_ms(signal_id: str) -> int:
    """Return the candle open time (ms) named by an entry_signal_id."""
    return int(signal_id.split("|")[2])


def exit_signal_id(position_id: str, reason: ExitReason) -> str:
    """Return the deterministic id of an exit signal: one exit per position and reason."""
    return f"{position_id}|exit|{reason}"


class Candle(Message):
    """A closed candle of one symbol (published on md.candles once it has closed)."""

    kind: Literal["candle"] = "candle"
    symbol: Text
    timeframe: Text
    open_time: TimeMs
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume

    @model_validator(mode="after")
    def _check_range(self) -> Candle:
        if self.high < max(self.open, self.close, self.low) or self.low > min(
            self.open, self.close
        ):
            raise ValueError("high/low must enclose open and close")
        return self


class PriceTick(Message):
    """A last-price observation of one symbol (md.ticks)."""

    kind: Literal["tick"] = "tick"
    symbol: Text
    price: Price
    ts: TimeMs


class EntrySignal(Message):
    """An entry decided at the close of a candle; ``id`` is ``entry_signal_id(...)``."""

    kind: Literal["entry"] = "entry"
    id: Text
    symbol: Text
    timeframe: Text
    candle_open_time: TimeMs
    side: Side
    price: Price
    body_pct: Volume
    vol_ratio: Volume
    chop: Finite
    reason: str = ""
    ts: TimeMs

    @model_validator(mode="after")
    def _check_id(self) -> EntrySignal:
        want = entry_signal_id(self.symbol, self.timeframe, self.candle_open_time, self.side)
        if self.id != want:
            raise ValueError(f"id must be {want!r}")
        return self


class ExitSignal(Message):
    """A market exit of an open position decided by state; ``id`` is ``exit_signal_id(...)``."""

    kind: Literal["exit"] = "exit"
    id: Text
    position_id: Text
    symbol: Text
    side: Side
    reason: ExitReason
    price: Price
    best_price: Price
    ts: TimeMs

    @model_validator(mode="after")
    def _check_id(self) -> ExitSignal:
        want = exit_signal_id(self.position_id, self.reason)
        if self.id != want:
            raise ValueError(f"id must be {want!r}")
        return self


class OrderIntent(Message):
    """An order the executor is about to send, written to Redis before it is sent.

    v2 adds ``cancels``: for an exit, the client ids of the position's stops to cancel once
    it filled, as the book named them when the exit was written (a restarted executor may
    find the position gone from the book by then); v1 intents still decode.
    """

    VERSION: ClassVar[int] = 2
    v: Annotated[int, Field(ge=1, le=2)] = 2
    kind: Literal["intent"] = "intent"
    client_order_id: Text
    signal_id: Text
    symbol: Text
    side: OrderSide
    purpose: OrderPurpose
    type: OrderType
    quantity: Quantity
    stop_price: Price | None = None
    reduce_only: bool = False
    ts: TimeMs
    cancels: list[Text] = []


class OrderEvent(Message):
    """A fact about an order from the executor (events stream); natural id is ``event_id``.

    v2 adds ``position_id`` (the position the order opens, protects or closes) and
    ``reason`` (why an exit or stop fill closed it); v1 entries still decode.
    """

    VERSION: ClassVar[int] = 2
    v: Annotated[int, Field(ge=1, le=2)] = 2
    kind: Literal["order"] = "order"
    event: Literal["submitted", "filled", "rejected", "canceled", "stop_placed", "stop_filled"]
    client_order_id: Text
    exchange_order_id: str | None = None
    signal_id: Text
    symbol: Text
    side: OrderSide
    purpose: OrderPurpose
    quantity: Quantity
    price: Price | None = None
    fee: Volume = 0.0
    error: str | None = None
    position_id: str | None = None
    reason: ExitReason | None = None
    ts: TimeMs

    @property
    def event_id(self) -> str:
        """Return the natural id that makes handling this event idempotent."""
        return f"{self.client_order_id}|{self.event}"


class PositionEvent(Message):
    """A fact about a position from state or executor (events stream)."""

    kind: Literal["position"] = "position"
    event: Literal["opened", "best_price", "closed", "reconciled", "adopted"]
    position_id: Text
    symbol: Text
    side: Side
    quantity: Quantity
    entry_price: Price
    stop_price: Price | None = None
    best_price: Price | None = None
    exit_price: Price | None = None
    exit_reason: ExitReason | None = None
    fees: Volume = 0.0
    pnl: Finite | None = None
    ts: TimeMs


def stop_command_id(position_id: str, seq: int) -> str:
    """Return the id of a stop command: one protective stop per position and sequence number."""
    return f"{position_id}|stop|{seq}"


class StopCommand(Message):
    """State asks the executor to place a position's protective stop (adopted, or repaired).

    ``seq`` 0 is the stop placed right after the entry; each repair takes the next number,
    and so a new client order id (Binance keeps one id per order forever).
    """

    kind: Literal["stop"] = "stop"
    id: Text
    position_id: Text
    symbol: Text
    side: Side
    quantity: Quantity
    stop_price: Price
    seq: Count
    reason: str = ""
    ts: TimeMs

    @model_validator(mode="after")
    def _check_id(self) -> StopCommand:
        want = stop_command_id(self.position_id, self.seq)
        if self.id != want:
            raise ValueError(f"id must be {want!r}")
        return self


class DlqEntry(Message):
    """A message that could not be handled, copied to the dead-letter stream with its origin."""

    kind: Literal["dlq"] = "dlq"
    stream: Text
    group: Text
    entry_id: Text
    reason: DlqReason
    error: str
    deliveries: Count
    payload: str
    ts: TimeMs


KINDS: dict[str, type[Message]] = {
    m.model_fields["kind"].default: m
    for m in (
        Candle,
        PriceTick,
        EntrySignal,
        ExitSignal,
        StopCommand,
        OrderIntent,
        OrderEvent,
        PositionEvent,
        DlqEntry,
    )
}

M = TypeVar("M", bound=Message)
_WIRE_KEYS = frozenset({"v", "kind"})


def encode(msg: Message) -> bytes:
    """Encode a message as compact JSON bytes (orjson)."""
    # Every field is a flat JSON type (str, int, float, bool, None), so the instance dict is
    # the message; a nested model would make orjson raise (every kind round-trips in tests).
    # orjson (3.12+) hands back its whole write buffer, about 4 KB for a 170-byte candle:
    # joining with b"" copies it to its size. market_data's first scan holds 50,000 encoded
    # candles at once (500 windows), which cost 200 MB of RSS before (docs/performance.md).
    return b"".join((orjson.dumps(msg.__dict__), b""))


def _describe(cls: type[Message], err: ValidationError) -> SchemaError:
    first = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"])
    where = f"{cls.__name__}.{field}" if field else cls.__name__
    got = first.get("input")
    # A whole-message error (a model validator's) has the message as input: not repeated.
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return SchemaError(f"{where}: {first['msg']}{shown}", field)


@overload
def decode(data: bytes | str) -> Message: ...
@overload
def decode(data: bytes | str, model: type[M]) -> M: ...
def decode(data: bytes | str, model: type[Message] | None = None) -> Message:
    """Decode bytes into the message named by its ``kind`` (and check it is ``model`` if given).

    ``model=Message`` accepts any kind, for streams that carry several (signals, events).

    With ``model`` given, valid input takes pydantic's JSON fast path (``v`` and ``kind``
    must have been in the input, not defaulted); anything else is re-examined below to
    name the offending field.
    """
    if model is Message:
        model = None
    if model is not None:
        with contextlib.suppress(ValidationError):
            fast = model.model_validate_json(data)
            if fast.model_fields_set >= _WIRE_KEYS:
                return fast
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SchemaError(f"kind: unknown message kind {kind!r}", "kind")
    if model is not None and cls is not model:
        raise SchemaError(f"kind: expected {model.__name__}, got {kind!r}", "kind")
    version = obj.get("v")
    if type(version) is not int or not cls.MIN_VERSION <= version <= cls.VERSION:
        known = f"{cls.MIN_VERSION}..{cls.VERSION}"
        raise SchemaError(
            f"{cls.__name__}.v: unsupported schema version {version!r} ({known})", "v"
        )
    try:
        msg = cls.model_validate(obj)
    except ValidationError as e:
        raise _describe(cls, e) from None
    if model is not None:  # the JSON fast path rejected what the dict path accepts
        raise SchemaError(f"{model.__name__}: not valid as JSON")
    return msg
