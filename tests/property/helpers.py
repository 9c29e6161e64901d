"""Feeding fuzzed entries to a real ``Consumer`` on a real Redis, and checking what it did.

``feed`` appends the entries, polls the consumer until its group has nothing left to read
or acknowledge, and returns a ``Fed`` with the bus metrics' changes and the dead letters.
``Fed.check`` asserts the bus contract for garbage: every entry that does not decode
(per ``shared.schemas.decode``, the oracle) is dead-lettered once with reason ``decode``
and its payload, counted in ``tradebot_dlq_messages_total{stream, reason="decode"}``; every
entry that decodes reached the handler and was acked (or, if the handler raised,
dead-lettered with reason ``handler``), and the acked and handler-error counters agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import keys
from shared.bus import Consumer, ensure_group
from shared.schemas import FIELD, DlqEntry, Message, SchemaError, decode

_FIELD = FIELD.encode()


def text(value: Any) -> str:
    """Return a Redis reply value (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def valid(fields: dict[bytes, bytes], model: type[Message]) -> Message | None:
    """Return the message a consumer of ``model`` gets from an entry, or None if it is garbage."""
    raw = fields.get(_FIELD)
    if raw is None:
        return None
    try:
        return decode(raw, model)
    except SchemaError:
        return None


def metric(name: str, **labels: str) -> float:
    """Return a counter's value in this process's registry (0 if never incremented)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bus_counters(stream: str, group: str) -> dict[str, float]:
    """Return the bus counters of one stream and group."""
    return {
        "decode": metric("tradebot_dlq_messages_total", stream=stream, reason="decode"),
        "handler": metric("tradebot_dlq_messages_total", stream=stream, reason="handler"),
        "acked": metric("tradebot_bus_acked_total", stream=stream, group=group),
        "errors": metric("tradebot_bus_handler_errors_total", stream=stream, group=group),
    }


async def reset(client: aioredis.Redis, stream: str, group: str) -> None:
    """Empty the server and create the consumer group again (one fuzz example each)."""
    await client.flushall()
    await ensure_group(client, stream, group)


async def group_done(client: aioredis.Redis, stream: str, group: str) -> bool:
    """Return whether the group has read every entry and acknowledged all it read."""
    groups: Any = await client.xinfo_groups(stream)
    for g in groups:
        if text(g["name"]) == group:
            return not g["pending"] and not g.get("lag")
    return False


@dataclass
class Fed:
    """What one batch of entries did: their ids and fields, counters before and after."""

    stream: str
    group: str
    model: type[Message]
    entries: list[tuple[str, dict[bytes, bytes]]]
    before: dict[str, float]
    after: dict[str, float] = field(default_factory=dict)
    dead: dict[str, DlqEntry] = field(default_factory=dict)
    produced: int = 0  # entries the handlers themselves added to the stream (state: events)

    def messages(self) -> list[Message]:
        """Return the entries that decode, in order (what the handler was given)."""
        return [m for _, f in self.entries if (m := valid(f, self.model)) is not None]

    def check(self) -> None:
        """Assert the bus contract: garbage dead-lettered and counted, the rest handled."""
        invalid = handler_failed = 0
        for entry_id, fields in self.entries:
            letter = self.dead.get(entry_id)
            if valid(fields, self.model) is None:
                invalid += 1
                assert letter is not None, f"garbage entry {entry_id} {fields!r} not dead-lettered"
                raw = fields.get(_FIELD)
                payload = raw if raw is not None else repr(fields).encode()
                assert (letter.reason, letter.stream, letter.group) == (
                    "decode", self.stream, self.group,
                )  # fmt: skip
                assert letter.payload == payload.decode(errors="replace")
                assert letter.error
            elif letter is not None:
                assert letter.reason == "handler", letter
                handler_failed += 1
        assert len(self.dead) == invalid + handler_failed, self.dead  # none of the produced
        delta = {k: self.after[k] - self.before[k] for k in self.before}
        assert delta["decode"] == invalid, delta
        assert delta["handler"] == handler_failed, delta
        assert delta["errors"] == handler_failed, delta
        handled = len(self.entries) - invalid - handler_failed + self.produced
        assert delta["acked"] == handled, delta

    def handler_failures(self) -> list[DlqEntry]:
        """Return the dead letters of entries that decoded but whose handler raised."""
        return [d for d in self.dead.values() if d.reason == "handler"]


async def feed(
    client: aioredis.Redis,
    consumer: Consumer[Any],
    entries: list[dict[bytes, bytes]],
    within: float = 20.0,
) -> Fed:
    """Append entries to the consumer's stream and poll until its group is done with them."""
    stream, group = consumer.stream, consumer.group
    fed = Fed(stream, group, consumer.model, [], bus_counters(stream, group))
    for fields in entries:
        fed.entries.append((text(await client.xadd(stream, fields)), fields))  # type: ignore[arg-type]
    deadline = time.monotonic() + within
    while not await group_done(client, stream, group):
        assert time.monotonic() < deadline, f"{stream}/{group} not done within {within}s"
        await consumer.poll()
    fed.after = bus_counters(stream, group)
    fed.produced = int(await client.xlen(stream)) - len(entries)
    rows: Any = await client.xrange(keys.STREAM_DLQ)
    for _, f in rows:
        letter = decode(f[_FIELD], DlqEntry)
        if letter.stream == stream:
            fed.dead[letter.entry_id] = letter
    return fed


def fuzz_consumer(
    client: aioredis.Redis, stream: str, group: str, handler: Any, model: type[Message]
) -> Consumer[Any]:
    """Return a consumer as the services build it, but dead-lettering at the first failure."""
    return Consumer(
        client, stream, group, "fuzz", handler, model,
        count=100, block_ms=10, reclaim_idle_ms=3_600_000, max_deliveries=1,
    )  # fmt: skip
