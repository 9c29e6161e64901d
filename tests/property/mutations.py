"""Hypothesis strategies: valid stream messages of every kind, and garbage made from them.

``valid_messages(kind)`` builds valid messages of one kind. ``mutated(base)`` gives the
bytes of a stream entry's ``d`` field made from a valid message: the message itself, or
one mutation of it: a field set to a value of the wrong type, NaN/inf/negative/huge
numbers, odd unicode, a field missing or extra, a wrong kind or version, duplicate keys,
truncated JSON, flipped or inserted bytes, invalid UTF-8, a JSON value that is not an
object, random bytes. ``entry_fields(payloads)`` wraps a payload as a stream entry's
fields (sometimes without ``d``, or with extra fields).

Whether a payload is valid is decided by ``shared.schemas.decode`` (tests/property/
test_decode.py checks that decision itself: only ``SchemaError``, and the typed and
untyped decoders agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import orjson
from hypothesis import strategies as st

from shared.schemas import (
    FIELD,
    KINDS,
    Candle,
    DlqEntry,
    EntrySignal,
    ExitReason,
    ExitSignal,
    Message,
    OrderEvent,
    OrderIntent,
    PositionEvent,
    PriceTick,
    Side,
    StopCommand,
    encode,
    entry_signal_id,
    exit_signal_id,
    stop_command_id,
)


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is (NaN, Infinity, a giant number, deep nesting...)."""

    text: bytes


def dumps(obj: Any) -> bytes:
    """Return JSON for ``obj``, writing every ``Raw`` value (at any depth) as its literal."""
    raws: list[bytes] = []

    def swap(value: Any) -> Any:
        big = isinstance(value, int) and not -(2**63) <= value < 2**64
        if big:  # orjson writes 64-bit integers only
            value = Raw(str(value).encode())
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    out = orjson.dumps(swap(obj))
    for i, text in enumerate(raws):
        out = out.replace(f'"@@raw{i}@@"'.encode(), text, 1)
    return out


# --- valid messages ------------------------------------------------------------------------

prices = st.floats(min_value=1e-8, max_value=1e12, allow_nan=False, allow_infinity=False)
amounts = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
times = st.integers(min_value=0, max_value=2**53)
names = st.text(min_size=1, max_size=24)
sides = st.sampled_from(get_args(Side))
order_sides = st.sampled_from(["buy", "sell"])
exit_reasons = st.sampled_from(get_args(ExitReason))


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    low, a, b, high = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
    o, c = (a, b) if draw(st.booleans()) else (b, a)
    return Candle(
        symbol=draw(names), timeframe=draw(st.sampled_from(["5m", "1m", "1h"])),
        open_time=draw(times), open=o, high=high, low=low, close=c, volume=draw(amounts),
    )  # fmt: skip


@st.composite
def entry_signals(draw: st.DrawFn) -> EntrySignal:
    symbol, side, t = draw(names), draw(sides), draw(times)
    return EntrySignal(
        id=entry_signal_id(symbol, "5m", t, side), symbol=symbol, timeframe="5m",
        candle_open_time=t, side=side, price=draw(prices), body_pct=draw(amounts),
        vol_ratio=draw(amounts), chop=draw(st.floats(0, 100)), reason=draw(st.text()),
        ts=draw(times),
    )  # fmt: skip


@st.composite
def exit_signals(draw: st.DrawFn) -> ExitSignal:
    pos, reason = draw(names), draw(exit_reasons)
    return ExitSignal(
        id=exit_signal_id(pos, reason), position_id=pos, symbol=draw(names), side=draw(sides),
        reason=reason, price=draw(prices), best_price=draw(prices), ts=draw(times),
    )  # fmt: skip


@st.composite
def stop_commands(draw: st.DrawFn) -> StopCommand:
    pos, seq = draw(names), draw(st.integers(0, 1000))
    return StopCommand(
        id=stop_command_id(pos, seq), position_id=pos, symbol=draw(names), side=draw(sides),
        quantity=draw(prices), stop_price=draw(prices), seq=seq, reason=draw(st.text()),
        ts=draw(times),
    )  # fmt: skip


VALID: dict[str, st.SearchStrategy[Message]] = {
    "candle": candles(),
    "tick": st.builds(PriceTick, symbol=names, price=prices, ts=times),
    "entry": entry_signals(),
    "exit": exit_signals(),
    "stop": stop_commands(),
    "intent": st.builds(
        OrderIntent, client_order_id=names, signal_id=names, symbol=names, side=order_sides,
        purpose=st.sampled_from(["entry", "stop", "exit"]),
        type=st.sampled_from(["market", "stop_market"]), quantity=prices,
        stop_price=st.none() | prices, reduce_only=st.booleans(), ts=times,
    ),
    "order": st.builds(
        OrderEvent, v=st.sampled_from([1, 2]),
        event=st.sampled_from(
            ["submitted", "filled", "rejected", "canceled", "stop_placed", "stop_filled"]
        ),
        client_order_id=names, exchange_order_id=st.none() | names, signal_id=names,
        symbol=names, side=order_sides, purpose=st.sampled_from(["entry", "stop", "exit"]),
        quantity=prices, price=st.none() | prices, fee=amounts, error=st.none() | st.text(),
        position_id=st.none() | names, reason=st.none() | exit_reasons, ts=times,
    ),
    "position": st.builds(
        PositionEvent,
        event=st.sampled_from(["opened", "best_price", "closed", "reconciled", "adopted"]),
        position_id=names, symbol=names, side=sides, quantity=prices, entry_price=prices,
        stop_price=st.none() | prices, best_price=st.none() | prices,
        exit_price=st.none() | prices, exit_reason=st.none() | exit_reasons, fees=amounts,
        pnl=st.none() | st.floats(-1e12, 1e12), ts=times,
    ),
    "dlq": st.builds(
        DlqEntry, stream=names, group=names, entry_id=names,
        reason=st.sampled_from(["decode", "handler", "deliveries"]), error=st.text(),
        deliveries=st.integers(0, 100), payload=st.text(), ts=times,
    ),
}  # fmt: skip
assert set(VALID) == set(KINDS), "every message kind needs a generator"


def valid_messages(kind: str) -> st.SearchStrategy[Message]:
    """Return valid messages of one kind (see shared.schemas.KINDS)."""
    return VALID[kind]


# --- odd values ------------------------------------------------------------------------------

RAW_LITERALS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"1e999", b"-1e999", b"1E400",
    b"0.1e-400", b"-0", b"-0.0", b"18446744073709551616", b"-9223372036854775809",
    b"1" * 400, b"1." + b"5" * 400, b"0x10", b"01", b"+1", b".5", b"1.", b"true ", b"null",
    b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\\uffff"', b'"a\\"b"',
    b"[" * 2000 + b"]" * 2000, b'{"a":' * 600 + b"1" + b"}" * 600, b"[1,]", b"{}",
]  # fmt: skip
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1,
    0.0, -0.0, 5e-324, 1e-320, 1e308, -1e308, 1.7976931348623157e308, 1.5, -1.5, 0.999999,
    "", " ", "x", "0", "1", "1.5", "-1", "NaN", "inf", "1e999", "true", "null", "long",
    "buy", "5m", "candle", "💥", "\u0000", "\u202e", "\ufeff", "Ω≈ç√", "a" * 5000,
    "tb:*", "\r\n", [], [1], [None], {}, {"a": 1}, {"kind": "candle"},
]  # fmt: skip
FLOAT_SPECIALS = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


def _float(x: float) -> Any:
    return Raw(FLOAT_SPECIALS[str(x)]) if str(x) in FLOAT_SPECIALS else x


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats().map(_float),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
odd_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.sampled_from(RAW_LITERALS).map(Raw),
    json_values,
    st.integers(),  # beyond 64 bits too
)


# --- mutations -------------------------------------------------------------------------------


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    try:
        return _float(value * factor)
    except OverflowError:
        return Raw(b"1e999")


@st.composite
def _field_mutation(draw: st.DrawFn, base: Message) -> bytes:
    obj: dict[str, Any] = dict(base.model_dump())
    fields = sorted(obj)
    how = draw(
        st.sampled_from(["set", "set", "set", "drop", "extra", "kind", "v", "scale", "dup", "many"])
    )
    if how == "set":
        obj[draw(st.sampled_from(fields))] = draw(odd_values)
    elif how == "drop":
        del obj[draw(st.sampled_from(fields))]
    elif how == "extra":
        obj[draw(st.text(max_size=12).filter(lambda k: k not in obj))] = draw(odd_values)
    elif how == "kind":
        obj["kind"] = draw(
            st.sampled_from(sorted(KINDS)) | st.sampled_from(["", "Candle", "CANDLE", "x"])
            | odd_values
        )  # fmt: skip
    elif how == "v":
        obj["v"] = draw(st.sampled_from([0, 2, 3, -1, 99, "1", 1.0, True, None, 2**64, [1]]))
    elif how == "scale":
        name = draw(st.sampled_from(fields))
        obj[name] = _scale(obj[name], draw(st.sampled_from([-1.0, 0.0, 1e300, 1e-300, 10.0])))
    elif how == "many":
        for name in draw(st.lists(st.sampled_from(fields), min_size=2, max_size=5, unique=True)):
            obj[name] = draw(odd_values)
    else:  # a key given twice, the second time with another value
        name = draw(st.sampled_from(fields))
        again = dumps({name: draw(odd_values)})[1:-1]
        data = dumps(obj)
        return data[:-1] + b"," + again + b"}"
    return dumps(obj)


@st.composite
def _byte_mutation(draw: st.DrawFn, base: Message) -> bytes:
    data = encode(base)
    how = draw(st.sampled_from(["truncate", "flip", "insert", "wrap", "utf8", "repr"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    if how == "wrap":
        before, after = draw(
            st.sampled_from(
                [(b" ", b""), (b"\xef\xbb\xbf", b""), (b"", b"x"), (b"", b"\n"), (b"[", b"]"),
                 (b"", b"}"), (b"\x00", b""), (b"", data)]
            )
        )  # fmt: skip
        return before + data + after
    if how == "utf8":  # a byte sequence that is not UTF-8 inside the first string value
        i = data.index(b'":"') + 3 if b'":"' in data else 1
        return data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + (
            data[i:]
        )  # fmt: skip
    return repr(base.model_dump()).encode()  # Python's repr, not JSON


def mutated(base: Message) -> st.SearchStrategy[bytes]:
    """Return payloads made from ``base``: itself, or one mutation of it (mostly invalid)."""
    return st.one_of(
        st.just(encode(base)),
        _field_mutation(base),
        _field_mutation(base),
        _byte_mutation(base),
        json_values.map(dumps),
        st.binary(max_size=64),
    )


def payloads(kind: str) -> st.SearchStrategy[bytes]:
    """Return payloads made from random valid messages of one kind."""
    return valid_messages(kind).flatmap(mutated)


def entry_fields(payload: st.SearchStrategy[bytes]) -> st.SearchStrategy[dict[bytes, bytes]]:
    """Return a stream entry's fields: mostly ``{d: payload}``, sometimes without ``d``."""
    key = FIELD.encode()
    return st.one_of(
        payload.map(lambda p: {key: p}),
        payload.map(lambda p: {key: p}),
        payload.map(lambda p: {key: p}),
        payload.map(lambda p: {key: p, b"extra": b"1"}),
        payload.map(lambda p: {key.upper(): p}),
        st.just({b"x": b""}),
    )
