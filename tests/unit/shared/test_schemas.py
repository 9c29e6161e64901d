"""Message schemas: every kind round-trips through the codec; bad input is rejected by name."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any, get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.schemas import (
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
    SchemaError,
    Side,
    StopCommand,
    decode,
    encode,
    entry_candle_open_ms,
    entry_signal_id,
    exit_signal_id,
    stop_command_id,
)

prices = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)
volumes = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
times = st.integers(min_value=0, max_value=2**53)
names = st.text(min_size=1, max_size=20)
sides = st.sampled_from(get_args(Side))
exit_reasons = st.sampled_from(get_args(ExitReason))


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    ohlc = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
    low, a, b, high = ohlc
    o, c = (a, b) if draw(st.booleans()) else (b, a)
    return Candle(
        symbol=draw(names), timeframe="5m", open_time=draw(times),
        open=o, high=high, low=low, close=c, volume=draw(volumes),
    )  # fmt: skip


@st.composite
def entries(draw: st.DrawFn) -> EntrySignal:
    symbol, side, t = draw(names), draw(sides), draw(times)
    return EntrySignal(
        id=entry_signal_id(symbol, "5m", t, side), symbol=symbol, timeframe="5m",
        candle_open_time=t, side=side, price=draw(prices), body_pct=draw(volumes),
        vol_ratio=draw(volumes), chop=draw(st.floats(0, 100)), reason=draw(st.text()),
        ts=draw(times),
    )  # fmt: skip


@st.composite
def exits(draw: st.DrawFn) -> ExitSignal:
    pos, reason = draw(names), draw(exit_reasons)
    return ExitSignal(
        id=exit_signal_id(pos, reason), position_id=pos, symbol=draw(names), side=draw(sides),
        reason=reason, price=draw(prices), best_price=draw(prices), ts=draw(times),
    )  # fmt: skip


@st.composite
def stop_commands(draw: st.DrawFn) -> StopCommand:
    pos, seq = draw(names), draw(st.integers(0, 50))
    return StopCommand(
        id=stop_command_id(pos, seq), position_id=pos, symbol=draw(names), side=draw(sides),
        quantity=draw(prices), stop_price=draw(prices), seq=seq, reason=draw(st.text()),
        ts=draw(times),
    )  # fmt: skip


messages = st.one_of(
    candles(),
    stop_commands(),
    entries(),
    exits(),
    st.builds(PriceTick, symbol=names, price=prices, ts=times),
    st.builds(
        OrderIntent, client_order_id=names, signal_id=names, symbol=names,
        side=st.sampled_from(["buy", "sell"]), purpose=st.sampled_from(["entry", "stop", "exit"]),
        type=st.sampled_from(["market", "stop_market"]), quantity=prices,
        stop_price=st.none() | prices, reduce_only=st.booleans(), ts=times,
    ),
    st.builds(
        OrderEvent, event=st.sampled_from(["submitted", "filled", "rejected"]),
        client_order_id=names, exchange_order_id=st.none() | names, signal_id=names,
        symbol=names, side=st.sampled_from(["buy", "sell"]), purpose=st.just("entry"),
        quantity=prices, price=st.none() | prices, fee=volumes, error=st.none() | st.text(),
        position_id=st.none() | names, reason=st.none() | exit_reasons, ts=times,
    ),
    st.builds(
        PositionEvent, event=st.sampled_from(["opened", "closed"]), position_id=names,
        symbol=names, side=sides, quantity=prices, entry_price=prices,
        stop_price=st.none() | prices, pnl=st.none() | st.floats(-1e9, 1e9), ts=times,
    ),
    st.builds(
        DlqEntry, stream=names, group=names, entry_id=names,
        reason=st.sampled_from(["decode", "invalid", "handler", "deliveries"]), error=st.text(),
        deliveries=st.integers(0, 100), payload=st.text(), ts=times,
    ),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert decode(data, type(msg)) == msg


def test_every_kind_is_covered() -> None:
    assert set(KINDS) == {
        "candle", "tick", "entry", "exit", "stop", "intent", "order", "position", "dlq"
    }  # fmt: skip


def test_order_event_v1_still_decodes() -> None:
    v1 = (
        b'{"v":1,"kind":"order","event":"filled","client_order_id":"c","signal_id":"s",'
        b'"symbol":"BTC/USDT","side":"buy","purpose":"entry","quantity":1.0,"ts":1}'
    )
    msg = decode(v1, OrderEvent)
    assert (msg.v, msg.position_id, msg.reason) == (1, None, None)
    assert OrderEvent.model_validate(msg.model_dump() | {"v": 2}).v == 2


def test_order_intent_v1_still_decodes_with_no_stops_to_cancel() -> None:
    v1 = (
        b'{"v":1,"kind":"intent","client_order_id":"c","signal_id":"s","symbol":"BTC/USDT",'
        b'"side":"sell","purpose":"exit","type":"market","quantity":1.0,"reduce_only":true,'
        b'"ts":1}'
    )  # as an executor before v2 wrote it
    msg = decode(v1, OrderIntent)
    assert (msg.v, msg.cancels) == (1, [])
    assert decode(
        encode(msg.model_copy(update={"v": 2, "cancels": ["s1"]})), OrderIntent
    ).cancels == ["s1"]


def test_stop_command_id_must_be_deterministic() -> None:
    good = StopCommand(
        id=stop_command_id("p", 1), position_id="p", symbol="BTC/USDT", side="long",
        quantity=1, stop_price=98, seq=1, ts=1,
    )  # fmt: skip
    with pytest.raises(SchemaError, match="id must be"):
        decode(encode(good).replace(b'"id":"', b'"id":"x'), StopCommand)


def good_candle() -> dict[str, Any]:
    c = Candle(symbol="BTC/USDT", timeframe="5m", open_time=0, open=10, high=12, low=9, close=11,
               volume=5)  # fmt: skip
    return c.model_dump()


def test_entry_signal_id_matches_strategy() -> None:
    assert entry_signal_id("SIREN/USDT", "5m", 1_700_000_000_000, "long") == (
        "SIREN/USDT|5m|1700000000000|long"
    )
    assert entry_signal_id("BTC/USDT", "5m", 1_700_000_000_000, "short") == (
        "BTC/USDT|5m|1700000000000|short"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"v": 2}, "v", "unsupported schema version 2"),
        ({"v": True}, "v", "unsupported schema version"),
        ({"close": -1.0}, "close", "greater than 0"),
        ({"open": 0.0}, "open", "greater than 0"),
        ({"volume": -0.5}, "volume", "greater than or equal to 0"),
        ({"volume": None}, "volume", "valid number"),
        ({"open": "10"}, "open", "valid number"),
        ({"kind": "nope"}, "kind", "unknown message kind"),
        ({"extra": 1}, "extra", "Extra inputs"),
        ({"high": 9.5}, "", "high/low must enclose"),
    ],
)
def test_bad_fields_are_rejected_by_name(change: dict[str, Any], field: str, words: str) -> None:
    data = orjson.dumps(good_candle() | change)
    with pytest.raises(SchemaError, match=words) as err:
        decode(data)
    assert err.value.field == field
    if field != "kind":
        with pytest.raises(SchemaError, match=words):
            decode(data, Candle)


@pytest.mark.parametrize("model", [None, Candle])
@pytest.mark.parametrize("field", ["low", "v", "kind"])
def test_missing_field_is_named(model: type[Candle] | None, field: str) -> None:
    obj = good_candle()
    del obj[field]
    with pytest.raises(SchemaError, match=field) as err:
        decode(orjson.dumps(obj), model) if model else decode(orjson.dumps(obj))
    assert err.value.field == field


@settings(max_examples=100, deadline=None)
@given(messages, st.sampled_from([math.nan, math.inf, -math.inf]))
def test_no_float_field_of_any_message_takes_a_non_finite_value(msg: Message, bad: float) -> None:
    # Straight to the schema (a JSON parser may refuse NaN before the schema sees it).
    fields = msg.model_dump()
    floats = [name for name, value in fields.items() if isinstance(value, float)]
    for name in floats:
        with pytest.raises(ValueError, match="finite"):
            type(msg).model_validate({**fields, name: bad})


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_prices_are_rejected(literal: bytes) -> None:
    data = encode(PriceTick(symbol="X", price=1.5, ts=1)).replace(b"1.5", literal)
    with pytest.raises(SchemaError):
        decode(data)
    with pytest.raises(SchemaError):
        decode(data, PriceTick)


def test_non_finite_values_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="finite"):
        PriceTick(symbol="X", price=float("inf"), ts=1)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'"x"', b"{}"])
def test_garbage_is_a_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError):
        decode(data)


def test_decode_as_base_accepts_any_kind() -> None:
    tick = PriceTick(symbol="X", price=1.0, ts=1)
    assert decode(encode(tick), Message) == tick


def test_decode_checks_expected_kind() -> None:
    data = encode(PriceTick(symbol="X", price=1.0, ts=1))
    with pytest.raises(SchemaError, match="expected Candle"):
        decode(data, Candle)


def test_signal_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="id must be"):
        EntrySignal(
            id="wrong", symbol="X", timeframe="5m", candle_open_time=0, side="long", price=1.0,
            body_pct=0.01, vol_ratio=2.0, chop=40.0, ts=0,
        )  # fmt: skip


def _error(data: bytes, model: type[Message] | None = None) -> tuple[str, str]:
    with pytest.raises(SchemaError) as err:
        decode(data, model) if model else decode(data)
    return str(err.value), err.value.field


def _candle_without(field: str) -> bytes:
    obj = good_candle()
    del obj[field]
    return orjson.dumps(obj)


# The whole text an operator reads in a dead letter's error, and the field it names.
@pytest.mark.parametrize(
    ("data", "model", "message", "field"),
    [
        (b"[1, 2]", None, "expected a JSON object, got list", ""),
        (b'"x"', Candle, "expected a JSON object, got str", ""),
        (orjson.dumps(good_candle() | {"v": 2}), None,
         "Candle.v: unsupported schema version 2 (1..1)", "v"),
        (orjson.dumps(good_candle() | {"close": -1.0}), Candle,
         "Candle.close: Input should be greater than 0 (got -1.0)", "close"),
        (orjson.dumps(good_candle() | {"open": "10"}), None,
         "Candle.open: Input should be a valid number (got '10')", "open"),
        (orjson.dumps(good_candle() | {"stop": 1}), None,
         "Candle.stop: Extra inputs are not permitted (got 1)", "stop"),
        # the input of a missing field is the whole object: not repeated in the message
        (_candle_without("low"), None, "Candle.low: Field required", "low"),
        (_candle_without("low"), Candle, "Candle.low: Field required", "low"),
        # a rule over several fields names the model alone
        (orjson.dumps(good_candle() | {"high": 9.5}), Candle,
         "Candle: Value error, high/low must enclose open and close", ""),
        (encode(PriceTick(symbol="X", price=1.0, ts=1)), Candle,
         "kind: expected Candle, got 'tick'", "kind"),
        (orjson.dumps(good_candle() | {"kind": "nope"}), None,
         "kind: unknown message kind 'nope'", "kind"),
    ],
)  # fmt: skip
def test_each_error_is_one_exact_line(
    data: bytes, model: type[Message] | None, message: str, field: str
) -> None:
    assert _error(data, model) == (message, field)


def test_unreadable_json_says_so_and_names_no_field() -> None:
    message, field = _error(b"{")
    assert message.startswith("not valid JSON: ")
    assert "line 1 column 2" in message
    assert field == ""


def test_an_encoded_message_holds_only_its_own_bytes() -> None:
    """orjson hands back its whole write buffer (about 4 KB from 3.12 on); encode returns
    bytes of the message's size, or 50,000 stored candles would hold 200 MB."""
    candle = Candle(symbol="ABC/USDT:USDT", timeframe="1m", open_time=1_735_689_600_000,
                    open=1.2345, high=1.3, low=1.2, close=1.25, volume=12_345.6)  # fmt: skip
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode(candle) for _ in range(1000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept[0]) < 200
    assert held < 1000 * 400  # each about its length (under 200) plus the object header


def test_an_entry_signal_id_gives_back_its_candle_open_time() -> None:
    sid = entry_signal_id("SOL/USDT:USDT", "5m", 1_735_689_600_000, "short")
    assert entry_candle_open_ms(sid) == 1_735_689_600_000
