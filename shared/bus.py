"""The bus: publish messages to Redis Streams and consume them through consumer groups.

Delivery is at least once. A consumer acks an entry only after its handler returned, so
handlers must be idempotent by the message's natural id (signal id, client order id...):
that is the caller's job. An entry whose handler raised stays pending and is retried when
it has been idle ``reclaim_idle_ms`` (XAUTOCLAIM, which also takes over entries of dead
consumers and counts deliveries). An entry that cannot be decoded, whose handler failed
on its ``max_deliveries``-th delivery, or that was delivered more often than that without
an ack (it keeps killing its consumer) is copied to the dead-letter stream and acked, in
one transaction. A failed entry is retried after later entries, so order is not kept
across failures.

A consumer may also take a batch handler: it gets every entry of one read that decoded
(``[(message, entry_id), ...]``) at once, so it can share round trips among them; if it
raises, the same entries go through the per-entry handler one by one, so a failure is
still counted, retried and dead-lettered per entry.

Redis outages: every bus operation that talks to Redis on its own (a consumer's poll,
``publish``, ``publish_many``) rides out a connection failure for ``outage_s`` seconds
(``OUTAGE_S``, 60 s), retrying with capped exponential backoff and logging each retry with
the stream (and group and consumer); after that it logs one "giving up" error and raises
``BusUnavailable``, which ends the service so that its supervisor restarts it. See
docs/bus.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from shared import keys
from shared.log import error_text
from shared.metrics import (
    BUS_ACKED,
    BUS_BATCH_FALLBACKS,
    BUS_HANDLER_ERRORS,
    BUS_PUBLISHED,
    BUS_RECLAIMED,
    BUS_TRIMMED,
    DLQ_MESSAGES,
)
from shared.schemas import FIELD, DlqEntry, DlqReason, Message, SchemaError, decode, encode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Handler = Callable[[M, str], Awaitable[None]]
BatchHandler = Callable[[list[tuple[M, str]]], Awaitable[None]]
Entry = tuple[bytes, dict[bytes, bytes] | None]

_FIELD = FIELD.encode()

# How long a consumer or a publish rides out a Redis outage before it gives up (a restart
# of an AOF server, a Sentinel failover and a network blip all fit well inside it).
OUTAGE_S = 60.0
RETRY_FIRST_S = 0.1  # backoff between retries: doubles from this...
RETRY_MAX_S = 2.0  # ...up to this


class Invalid(ValueError):
    """Raised by a handler for a message that decodes but cannot be true: dead-lettered at once.

    Reason ``invalid``, with the exception's text as the error; no redelivery (a second look
    finds the same message).
    """


class BusUnavailable(ConnectionError):
    """Redis stayed unreachable for a whole outage window: the service should end.

    A subclass of redis-py's ConnectionError, so code that handles Redis errors (market_data's
    scan loop, the operator commands) handles it as before.
    """


async def ride_out(what: str, step: Callable[[], Awaitable[T]], outage_s: float) -> T:
    """Run ``step``; on a Redis connection error retry it with capped exponential backoff.

    Each retry is logged as a warning naming ``what`` (stream, group, consumer); once
    ``outage_s`` seconds have passed since the first failure, one error line says the bus
    gives up and ``BusUnavailable`` is raised. ``BusUnavailable`` from a nested call is not
    retried again.
    """
    failed_at: float | None = None
    attempt = 0
    while True:
        try:
            result = await step()
        except BusUnavailable:
            raise
        except (ConnectionError, TimeoutError) as e:
            now = time.monotonic()
            failed_at = now if failed_at is None else failed_at
            attempt += 1
            down = now - failed_at
            if down >= outage_s:
                log.error(
                    "Bus: %s: giving up after %.1f s of Redis errors (%d attempts): %s; "
                    "ending so that the supervisor restarts the service",
                    what, down, attempt, error_text(e),
                )  # fmt: skip
                raise BusUnavailable(
                    f"{what}: Redis unreachable for {down:.1f} s: {error_text(e)}"
                ) from e
            wait = min(RETRY_FIRST_S * 2 ** (attempt - 1), RETRY_MAX_S, outage_s - down)
            log.warning(
                "Bus: %s: Redis unreachable (%s); retry %d in %.1f s (giving up after %g s)",
                what, error_text(e), attempt, wait, outage_s,
            )  # fmt: skip
            await asyncio.sleep(wait)
            continue
        if failed_at is not None:
            log.warning(
                "Bus: %s: Redis reachable again after %.1f s (%d retries)",
                what, time.monotonic() - failed_at, attempt,
            )  # fmt: skip
        return result


def _maxlen(stream: str) -> int:
    return keys.STREAM_MAXLEN.get(stream, keys.DEFAULT_MAXLEN)


async def publish(
    client: aioredis.Redis, stream: str, msg: Message, *, outage_s: float = OUTAGE_S
) -> str:
    """Append one message to a stream (approximate MAXLEN trim); return its entry id.

    Rides out a Redis outage of up to ``outage_s`` seconds (see ``ride_out``), then raises
    ``BusUnavailable``. An XADD retried after a dropped connection may land twice.
    """
    data = encode(msg)

    async def xadd() -> Any:
        return await client.xadd(stream, {_FIELD: data}, maxlen=_maxlen(stream), approximate=True)

    entry_id = await ride_out(f"publish to {stream}", xadd, outage_s)
    BUS_PUBLISHED.labels(stream).inc()
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def publish_many(
    client: aioredis.Redis, stream: str, msgs: Sequence[Message], *, outage_s: float = OUTAGE_S
) -> list[str]:
    """Append messages in one pipelined round trip, trimming once; return their entry ids.

    Rides out a Redis outage like ``publish``; a retried batch may land twice in part.
    """
    name = stream.encode()
    data = [encode(msg) for msg in msgs]

    async def xadds() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for d in data:
            pipe.execute_command("XADD", name, b"*", _FIELD, d)
        pipe.execute_command("XTRIM", name, b"MAXLEN", b"~", _maxlen(stream))
        replies: list[Any] = await pipe.execute()
        return replies

    replies = await ride_out(f"publish to {stream}", xadds, outage_s)
    ids = replies[:-1]
    BUS_PUBLISHED.labels(stream).inc(len(ids))
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def publish_in(pipe: Pipeline, stream: str, msg: Message) -> None:
    """Queue one publish on a pipeline or MULTI/EXEC block, so it lands with the caller's writes.

    Counted as published when queued; the caller executes the pipeline.
    """
    pipe.xadd(stream, {_FIELD: encode(msg)}, maxlen=_maxlen(stream), approximate=True)
    BUS_PUBLISHED.labels(stream).inc()


async def ensure_group(
    client: aioredis.Redis, stream: str, group: str, start_id: str = "0"
) -> bool:
    """Create the consumer group (and the stream) unless it exists; return whether it was new."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise
    return True


def _group_gone(e: ResponseError) -> bool:
    # NOGROUP: stream or group missing; UNBLOCKED: the stream was deleted during a blocking read.
    return str(e).startswith(("NOGROUP", "UNBLOCKED"))


class Consumer(Generic[M]):
    """Run ``handler(message, entry_id)`` for every entry of ``stream`` read through ``group``."""

    def __init__(
        self,
        client: aioredis.Redis,
        stream: str,
        group: str,
        name: str,
        handler: Handler[M],
        model: type[M],
        *,
        count: int = 100,
        block_ms: int = 1000,
        reclaim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        start_id: str = "0",
        reconnect_for_s: float = OUTAGE_S,
        batch_handler: BatchHandler[M] | None = None,
    ) -> None:
        if block_ms <= 0 or count <= 0 or max_deliveries <= 0 or reclaim_idle_ms <= 0:
            raise ValueError("count, block_ms, reclaim_idle_ms and max_deliveries must be > 0")
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if timeout is not None and block_ms / 1000 >= timeout:
            raise ValueError(
                f"block_ms={block_ms} must be below the client's socket_timeout ({timeout}s); "
                "make the client with shared.redisconn.redis_from_url"
            )
        self.client = client
        self.stream = stream
        self.group = group
        self.name = name
        self.handler = handler
        self.batch_handler = batch_handler
        self.model = model
        self.count = count
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self.start_id = start_id
        self.reconnect_for_s = reconnect_for_s
        self._reclaim_every_s = min(reclaim_idle_ms / 2000, 5.0)
        self._next_reclaim = 0.0
        self._acked = BUS_ACKED.labels(stream, group)
        self._errors = BUS_HANDLER_ERRORS.labels(stream, group)
        self._fallbacks = BUS_BATCH_FALLBACKS.labels(stream, group)
        self._reclaimed = BUS_RECLAIMED.labels(stream, group)
        self._trimmed = BUS_TRIMMED.labels(stream, group)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set or the task is cancelled; survive Redis restarts.

        Connection errors are retried with capped exponential backoff for
        ``reconnect_for_s`` seconds, each logged with the stream, group and consumer; after
        that one "giving up" error is logged and ``BusUnavailable`` raised, so the service
        ends and its supervisor restarts it.
        """
        stop = stop or asyncio.Event()
        await self._with_reconnect(self._ensure_group)
        log.info("Bus: %s consuming %s as %s/%s", self.name, self.stream, self.group, self.name)
        while not stop.is_set():
            await self._with_reconnect(self.poll)
        log.info("Bus: %s stopped consuming %s", self.name, self.stream)

    async def _with_reconnect(self, step: Callable[[], Awaitable[Any]]) -> None:
        what = f"consumer {self.name} of {self.stream} (group {self.group})"
        await ride_out(what, step, self.reconnect_for_s)

    async def _ensure_group(self, recreate: bool = False) -> None:
        start = "0" if recreate else self.start_id
        if await ensure_group(self.client, self.stream, self.group, start) and recreate:
            log.warning("Bus: group %s on %s was gone; recreated", self.group, self.stream)

    async def poll(self) -> int:
        """Reclaim idle pending entries when due, then read and handle one batch; return count."""
        try:
            done = 0
            if time.monotonic() >= self._next_reclaim:
                done += await self.reclaim()
                self._next_reclaim = time.monotonic() + self._reclaim_every_s
            reply: Any = await self.client.xreadgroup(
                self.group, self.name, {self.stream: ">"}, count=self.count, block=self.block_ms
            )
            if not reply:
                return done
            entries: list[Entry] = reply[0][1]
            await self._handle(entries, {})
            return done + len(entries)
        except ResponseError as e:
            if not _group_gone(e):
                raise
            await self._ensure_group(recreate=True)
            return 0

    async def reclaim(self) -> int:
        """Take over entries pending longer than ``reclaim_idle_ms`` (ours or a dead consumer's)."""
        cursor: Any = "0-0"
        total = 0
        while True:
            reply: Any = await self.client.xautoclaim(
                self.stream, self.group, self.name, self.reclaim_idle_ms, cursor, count=self.count
            )
            cursor, entries = reply[0], reply[1]
            if len(reply) > 2 and reply[2]:  # Redis 7+ drops these from the PEL itself
                self._lost(reply[2])
            if entries:
                counts = await self._deliveries(entries)
                self._reclaimed.inc(len(entries))
                total += len(entries)
                await self._handle(entries, counts)
            if cursor in (b"0-0", "0-0"):
                return total

    async def _deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        # The range may also hold many of our own recently failed entries: page through it
        # until every claimed entry is found (a missed one would count as a first delivery).
        wanted = {entry_id for entry_id, _ in entries}
        found: dict[bytes, int] = {}
        low: bytes = entries[0][0]
        page = len(entries) + 1000
        while True:
            pending: Any = await self.client.xpending_range(
                self.stream,
                self.group,
                min=low,
                max=entries[-1][0],
                count=page,
                consumername=self.name,
            )
            for p in pending:
                if p["message_id"] in wanted:
                    found[p["message_id"]] = int(p["times_delivered"])
            if len(found) == len(wanted) or len(pending) < page:
                return found
            low = b"(" + pending[-1]["message_id"]

    async def _handle(self, entries: list[Entry], deliveries: dict[bytes, int]) -> None:
        """Run the handlers on the entries; ack successes and dead-letter failures in one go."""
        acks: list[bytes] = []
        dead: list[DlqEntry] = []
        ready: list[tuple[bytes, bytes, dict[bytes, bytes], int, M]] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending (Redis < 7)
                self._lost([entry_id])
                acks.append(entry_id)
                continue
            raw = fields.get(_FIELD)
            n = deliveries.get(entry_id, 1)
            try:
                if raw is None:
                    raise SchemaError(f"entry has no {FIELD!r} field")
                msg = decode(raw, self.model)
            except SchemaError as e:
                dead.append(self._dead(entry_id, raw, fields, "decode", str(e), n))
                continue
            if n > self.max_deliveries:
                err = f"delivered {n} times without an ack"
                dead.append(self._dead(entry_id, raw, fields, "deliveries", err, n))
                continue
            ready.append((entry_id, raw, fields, n, msg))
        if ready and await self._batch(ready):
            acks.extend(entry_id for entry_id, *_ in ready)
            ready = []
        for entry_id, raw, fields, n, msg in ready:
            try:
                await self.handler(msg, entry_id.decode())
            except Invalid as e:
                dead.append(self._dead(entry_id, raw, fields, "invalid", str(e), n))
                continue
            except Exception as e:
                self._errors.inc()
                log.warning(
                    "Bus: handler failed on %s %s (delivery %d/%d): %s",
                    self.stream, entry_id.decode(), n, self.max_deliveries, error_text(e),
                )  # fmt: skip
                if n >= self.max_deliveries:
                    dead.append(self._dead(entry_id, raw, fields, "handler", error_text(e), n))
                continue
            acks.append(entry_id)
        if dead:
            await self._dead_letter(dead, acks)
        elif acks:
            await self.client.xack(self.stream, self.group, *acks)
        self._acked.inc(len(acks))

    async def _batch(self, ready: list[tuple[bytes, bytes, dict[bytes, bytes], int, M]]) -> bool:
        """Run the batch handler, if any, on the ready entries; return whether it succeeded."""
        if self.batch_handler is None:
            return False
        try:
            await self.batch_handler([(msg, entry_id.decode()) for entry_id, *_, msg in ready])
        except Exception as e:
            self._fallbacks.inc()
            log.warning(
                "Bus: batch handler failed on %d entries of %s: %s; handling them one by one",
                len(ready), self.stream, error_text(e),
            )  # fmt: skip
            return False
        return True

    def _lost(self, entry_ids: list[bytes]) -> None:
        self._trimmed.inc(len(entry_ids))
        log.error(
            "Bus: %d pending entries of %s (group %s) were trimmed before being handled, lost: %s",
            len(entry_ids), self.stream, self.group, b" ".join(entry_ids[:10]).decode(),
        )  # fmt: skip

    def _dead(
        self,
        entry_id: bytes,
        raw: bytes | None,
        fields: dict[bytes, bytes],
        reason: DlqReason,
        error: str,
        deliveries: int,
    ) -> DlqEntry:
        payload = raw if raw is not None else repr(fields).encode()
        return DlqEntry(
            stream=self.stream,
            group=self.group,
            entry_id=entry_id.decode(),
            reason=reason,
            error=error,
            deliveries=deliveries,
            payload=payload.decode(errors="replace"),
            ts=int(time.time() * 1000),
        )

    async def _dead_letter(self, dead: list[DlqEntry], acks: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for d in dead:
            pipe.xadd(
                keys.STREAM_DLQ,
                {_FIELD: encode(d)},
                maxlen=_maxlen(keys.STREAM_DLQ),
                approximate=True,
            )
        pipe.xack(self.stream, self.group, *acks, *(d.entry_id for d in dead))
        await pipe.execute()
        for d in dead:
            DLQ_MESSAGES.labels(self.stream, d.reason).inc()
            log.error("Bus: %s %s dead-lettered (%s): %s", d.stream, d.entry_id, d.reason, d.error)
