"""``tradebot dlq``: list dead letters, and replay them onto the stream they came from.

A replay XADDs the dead letter's payload back to its origin stream (field ``FIELD``) and
XDELs it from the DLQ in one MULTI/EXEC, so an entry is never both replayed and kept, nor
dropped unreplayed. Consumers are idempotent by natural id, so a replay of something
already handled is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from shared import keys
from shared.schemas import FIELD, DlqEntry, SchemaError, decode

PAGE = 100


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ entry: its id, the decoded entry (None if unreadable) and the raw bytes."""

    id: str
    entry: DlqEntry | None
    raw: bytes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _letter(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    raw = fields.get(FIELD.encode(), fields.get(FIELD, b""))
    raw = raw if isinstance(raw, bytes) else str(raw).encode()
    try:
        entry: DlqEntry | None = decode(raw, DlqEntry)
    except SchemaError:
        entry = None
    return DeadLetter(_text(entry_id), entry, raw)


def shorten(text: str, width: int = 60) -> str:
    """Return the text on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def newest(client: aioredis.Redis, limit: int) -> list[DeadLetter]:
    """Return up to ``limit`` dead letters, newest first."""
    rows: Any = await client.xrevrange(keys.STREAM_DLQ, "+", "-", count=limit)
    return [_letter(i, f) for i, f in rows]


async def all_ids(client: aioredis.Redis) -> list[str]:
    """Return the ids of every dead letter now in the DLQ, oldest first."""
    ids: list[str] = []
    start = "-"
    while True:
        rows: Any = await client.xrange(keys.STREAM_DLQ, start, "+", count=PAGE)
        ids.extend(_text(i) for i, _ in rows)
        if len(rows) < PAGE:
            return ids
        start = "(" + ids[-1]


async def replay_one(client: aioredis.Redis, dlq_id: str) -> tuple[DeadLetter | None, str]:
    """Move one dead letter back to its origin stream; return it and its new id, or a problem.

    Returns ``(None, why)`` when the id is not in the DLQ or its entry cannot be read. The
    DLQ is WATCHed from the read to the MULTI, so two replays of one entry cannot both run.
    """
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.STREAM_DLQ)
                rows: Any = await pipe.xrange(keys.STREAM_DLQ, dlq_id, dlq_id)
                if not rows:
                    return None, "not in the DLQ"
                letter = _letter(*rows[0])
                if letter.entry is None:
                    return None, "not a readable dead letter (left in place)"
                entry = letter.entry
                maxlen = keys.STREAM_MAXLEN.get(entry.stream, keys.DEFAULT_MAXLEN)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.xadd(
                    entry.stream, {FIELD: entry.payload.encode()}, maxlen=maxlen, approximate=True
                )
                pipe.xdel(keys.STREAM_DLQ, dlq_id)
                replies: list[Any] = await pipe.execute()
                return letter, _text(replies[0])
            except WatchError:
                continue  # the DLQ changed meanwhile (a new dead letter): read again
