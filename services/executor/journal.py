"""The executor's durable memory in Redis: order intents, entries in flight, settled signals.

An intent is written (with its client order id in the open set) before its order is sent
and leaves the open set only once the order's outcome is known and reported, so after a
crash every order that may exist is found in ``open_intents`` and asked about by its
client order id. An entry is "in flight" on its symbol from its intent until the book
holds its position (or it is refused), so a slot is never given twice.

With replicas required (TB_REDIS_MIN_REPLICAS_ACK, carried by the client ``connect``
made), ``open_intent`` waits for that many replicas to confirm the intent (Redis WAIT) so
that a failover cannot lose it after its order was sent. An entry's intent that is not
confirmed in time raises ``IntentNotConfirmed``: its order is not sent, and the intent,
written on the primary, stays open like that of any order not sent before a crash (the
resume loop finds no order and abandons it). A stop's or an exit's is sent anyway: they
are reduce-only with ids derived from the position, so a lost intent costs at most a
lookup or a duplicate stop cancelled with the position, while holding them back would
leave a position without its protection.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from shared import keys
from shared.bus import publish_in
from shared.exchange_errors import TemporaryError
from shared.metrics import INTENTS_OPEN, REPLICA_UNCONFIRMED
from shared.redisconn import ReplicaAck, replica_ack_of, write_confirmed
from shared.schemas import EntrySignal, Message, OrderIntent, decode, encode

log = logging.getLogger("executor")

DAY_S = 86_400
RECORD_TTL_S = 7 * DAY_S  # settled-signal records outlive any redelivery or replay
# Drop the decided entries of a close (ARGV[2..]); drop the close (ARGV[1]) only when none
# is left, in one step, so an entry queued meanwhile is not deleted unseen.
_FINISH_BATCH = """
for i = 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class IntentNotConfirmed(TemporaryError):
    """Too few replicas confirmed an entry's intent in time: its order must not be sent.

    A TemporaryError: nothing changed on the exchange; the intent stays open on the primary.
    """

    def __init__(self, message: str, client_order_id: str) -> None:
        super().__init__(message, "open_intent")
        self.client_order_id = client_order_id


class Journal:
    """Read and write the executor's records; every write that must land together is one MULTI."""

    def __init__(self, redis: aioredis.Redis, ack: ReplicaAck | None = None) -> None:
        self.redis = redis
        self.ack = ack or replica_ack_of(redis)

    async def settled(self, record_id: str) -> str | None:
        """Return how a signal (or an exit) was settled, or None if it was not."""
        raw: Any = await self.redis.get(keys.signal_done_key(record_id))
        return None if raw is None else raw.decode()

    async def open_intent(
        self, intent: OrderIntent, event: Message | None = None, pending_symbol: bool = False
    ) -> None:
        """Write the intent before its send, with its event; mark the symbol in flight.

        With replicas required, raise ``IntentNotConfirmed`` for an entry they did not
        confirm in time (see the module doc); a stop or exit is only logged and counted.
        """

        def stage(pipe: Pipeline) -> None:
            key = keys.order_intent_key(intent.client_order_id)
            pipe.set(key, encode(intent), ex=30 * DAY_S)
            pipe.sadd(keys.OPEN_INTENTS, intent.client_order_id)
            if pending_symbol:
                pipe.hset(keys.PENDING_ENTRIES, intent.symbol, intent.signal_id)
            if event is not None:
                publish_in(pipe, keys.STREAM_EVENTS, event)

        if self.ack is None:
            pipe = self.redis.pipeline(transaction=True)
            stage(pipe)
            await pipe.execute()
            await self._count()
            return
        _, acked = await write_confirmed(self.redis, stage, self.ack)
        await self._count()
        if acked < self.ack.replicas:
            self._unconfirmed(intent, acked, self.ack)

    def _unconfirmed(self, intent: OrderIntent, acked: int, ack: ReplicaAck) -> None:
        """Count and log an intent the replicas did not confirm; raise for an entry."""
        REPLICA_UNCONFIRMED.labels(intent.purpose).inc()
        why = (
            f"intent {intent.client_order_id} confirmed by {acked} of {ack.replicas} "
            f"replica(s) within {ack.timeout_ms} ms"
        )
        what = f"{intent.purpose} {intent.side.upper()} {intent.symbol} qty={intent.quantity:g}"
        if intent.purpose == "entry":
            log.error(
                "Replica: %s: %s NOT sent (a failover now could lose the intent); the intent "
                "stays open and the resume loop abandons it [%s]", why, what, intent.signal_id,
            )  # fmt: skip
            raise IntentNotConfirmed(f"{why}: order not sent", intent.client_order_id)
        log.warning(
            "Replica: %s: %s sent anyway (reduce-only: holding it back would leave the position "
            "unprotected) [%s]", why, what, intent.signal_id,
        )  # fmt: skip

    async def close_intent(
        self,
        intent: OrderIntent,
        outcome: str,
        *events: Message,
        record_id: str | None = None,
        clear_pending: bool = False,
    ) -> None:
        """Settle an intent: publish its events, record the outcome, leave the open set."""
        pipe = self.redis.pipeline(transaction=True)
        for event in events:
            publish_in(pipe, keys.STREAM_EVENTS, event)
        pipe.srem(keys.OPEN_INTENTS, intent.client_order_id)
        if record_id is not None:
            pipe.set(keys.signal_done_key(record_id), outcome, ex=RECORD_TTL_S)
        if clear_pending:
            pipe.hdel(keys.PENDING_ENTRIES, intent.symbol)
        await pipe.execute()
        await self._count()

    async def settle(self, record_id: str, outcome: str) -> None:
        """Record that a signal was settled without an order (refused, stale, duplicate...)."""
        await self.redis.set(keys.signal_done_key(record_id), outcome, ex=RECORD_TTL_S)

    async def publish(self, *events: Message) -> None:
        """Publish events in one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        for event in events:
            publish_in(pipe, keys.STREAM_EVENTS, event)
        await pipe.execute()

    async def open_intents(self) -> list[OrderIntent]:
        """Return every intent whose outcome is not settled yet (oldest first)."""
        ids: Any = await self.redis.smembers(keys.OPEN_INTENTS)
        if not ids:
            return []
        raws = await self.redis.mget([keys.order_intent_key(i.decode()) for i in ids])
        intents = [decode(r, OrderIntent) for r in raws if r is not None]
        return sorted(intents, key=lambda i: i.ts)

    async def intent(self, client_order_id: str) -> OrderIntent | None:
        """Return one intent by its client order id."""
        raw: Any = await self.redis.get(keys.order_intent_key(client_order_id))
        return None if raw is None else decode(raw, OrderIntent)

    async def pending_entries(self) -> dict[str, str]:
        """Return the entries in flight: symbol -> position id."""
        raw: Any = await self.redis.hgetall(keys.PENDING_ENTRIES)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def drop_pending(self, symbol: str, position_id: str) -> None:
        """Forget an entry in flight once the book holds (or held) its position."""
        current: Any = await self.redis.hget(keys.PENDING_ENTRIES, symbol)
        if current is not None and current.decode() == position_id:
            await self.redis.hdel(keys.PENDING_ENTRIES, symbol)

    # --- stops of closed positions that could not be cancelled yet --------------------------

    async def add_stale_stop(self, client_order_id: str, symbol: str) -> None:
        """Remember a closed position's stop whose cancel failed, to cancel it later."""
        await self.redis.hset(keys.STALE_STOPS, client_order_id, symbol)

    async def stale_stops(self) -> dict[str, str]:
        """Return the stops left to cancel: client order id -> symbol."""
        raw: Any = await self.redis.hgetall(keys.STALE_STOPS)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def drop_stale_stop(self, client_order_id: str) -> None:
        """Forget a stop that is cancelled (or gone)."""
        await self.redis.hdel(keys.STALE_STOPS, client_order_id)

    # --- the entries of one candle close, waiting for their slot order ---------------------

    async def queue_entry(self, signal: EntrySignal, close_ms: int) -> None:
        """Keep an entry signal until every candle of its close is evaluated."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.entry_batch_key(close_ms), signal.id, encode(signal))
        pipe.expire(keys.entry_batch_key(close_ms), DAY_S)
        pipe.zadd(keys.ENTRY_BATCHES, {str(close_ms): int(time.time() * 1000)}, nx=True)
        await pipe.execute()

    async def batches(self) -> list[tuple[int, int]]:
        """Return the closes waiting for their slots: (close ms, arrival wall ms), oldest first."""
        rows: Any = await self.redis.zrange(keys.ENTRY_BATCHES, 0, -1, withscores=True)
        return sorted((int(m), int(score)) for m, score in rows)

    async def batch(self, close_ms: int) -> list[EntrySignal]:
        """Return the entry signals queued for one close."""
        raw: Any = await self.redis.hvals(keys.entry_batch_key(close_ms))
        return [decode(r, EntrySignal) for r in raw]

    async def finish_batch(self, close_ms: int, signal_ids: list[str]) -> bool:
        """Forget the decided entries of a close, and the close once none is left.

        An entry queued while the close was being decided (a late or redelivered signal)
        stays, so the next round decides it; return whether the close is gone.
        """
        key = keys.entry_batch_key(close_ms)
        done: Any = await self.redis.eval(
            _FINISH_BATCH, 2, key, keys.ENTRY_BATCHES, str(close_ms), *signal_ids
        )
        return bool(done)

    async def evaluations(self, close_ms: int) -> tuple[int | None, int]:
        """Return (candles market_data published for the close, candles evaluated so far)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.close_expected_key(close_ms))
        pipe.scard(keys.close_evaluated_key(close_ms))
        expected, evaluated = await pipe.execute()
        return (None if expected is None else int(expected)), int(evaluated)

    async def _count(self) -> None:
        INTENTS_OPEN.set(await self.redis.scard(keys.OPEN_INTENTS))
