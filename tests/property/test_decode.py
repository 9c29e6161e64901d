"""Fuzzing the decoder: whatever the bytes, ``decode`` returns a valid message or raises
``SchemaError`` (the one error the bus treats as a decode failure), and the typed and
untyped decoders agree on what is valid.

Payloads start from valid messages of every kind and are mutated (tests/property/
mutations.py). A message that decodes must satisfy its model's rules again, encode, and
decode back to itself, so a consumer never holds a message it could not publish on.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.schemas import KINDS, Message, SchemaError, decode, encode
from tests.property.mutations import dumps as raw_dumps
from tests.property.mutations import json_values, mutated, payloads, valid_messages

EXAMPLES = 250


def outcome(data: bytes, model: type[Message] | None) -> Message | SchemaError:
    """Return what decode gives: the message or its SchemaError (anything else fails the test)."""
    try:
        return decode(data) if model is None else decode(data, model)
    except SchemaError as e:
        error = e
    assert str(error), "a SchemaError must say what is wrong"
    assert isinstance(error.field, str)
    return error


def check_sound(msg: Message, model: type[Message]) -> None:
    """A decoded message obeys its model, encodes, and round-trips through the codec."""
    assert isinstance(msg, model)
    assert type(msg).model_validate(msg.model_dump()) == msg
    data = encode(msg)
    assert decode(data, type(msg)) == msg
    assert decode(data) == msg
    for value in msg.model_dump().values():
        if isinstance(value, float):
            assert math.isfinite(value)


def check_payload(data: bytes) -> None:
    """Decode ``data`` untyped, as every kind and as Message; all answers must agree."""
    untyped = outcome(data, None)
    if not isinstance(untyped, SchemaError):
        check_sound(untyped, Message)
    assert type(outcome(data, Message)) is type(untyped)
    for model in KINDS.values():
        typed = outcome(data, model)
        if isinstance(untyped, model):
            assert typed == untyped, f"typed decode as {model.__name__} disagrees: {typed!r}"
        else:
            assert isinstance(typed, SchemaError), (
                f"decode as {model.__name__} accepted what the untyped decoder refused "
                f"({untyped}): {typed!r}"
            )


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_mutated_messages_decode_or_raise_schema_error(kind: str, data: st.DataObject) -> None:
    check_payload(data.draw(payloads(kind), label="payload"))


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_valid_messages_decode_as_themselves(kind: str, data: st.DataObject) -> None:
    msg = data.draw(valid_messages(kind))
    check_sound(decode(encode(msg), type(msg)), type(msg))
    assert decode(encode(msg)) == msg


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=300) | json_values.map(raw_dumps))
def test_random_bytes_and_json_values(data: bytes) -> None:
    check_payload(data)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(KINDS)).flatmap(valid_messages).flatmap(mutated))
def test_payloads_of_every_kind_against_every_model(data: bytes) -> None:
    check_payload(data)
