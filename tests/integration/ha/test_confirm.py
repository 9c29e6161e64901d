"""Replica confirmation of the critical writes, on a real primary with a real replica.

With the replica up, an order intent and a lease write are confirmed (WAIT) and the flows
run as before. With the replica stopped, the confirmation does not come within the
timeout: an entry's intent is written on the primary but its order is not sent (the log
and ``tradebot_replica_unconfirmed_total`` say why), and the resume loop later abandons
it like any intent whose order never reached the exchange; a stop's or exit's intent is
sent anyway; a lease acquisition does not count and a renewal fails.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.executor import orders as o
from services.executor.journal import IntentNotConfirmed, Journal
from services.executor.service import Executor
from shared import keys
from shared.exchange import ExchangeClient
from shared.lease import Lease
from shared.order_ids import entry_client_id
from shared.redisconn import (
    ReplicaNotConfirmed,
    replica_ack_of,
    write_confirmed,
)
from shared.service import ServiceContext
from tests.fixtures.sim import SimHandle
from tests.integration.bus.helpers import eventually
from tests.integration.exchange.conftest import FAST
from tests.integration.executor.conftest import ETH, SOL, Harness, stack_settings
from tests.integration.ha.cluster import Cluster
from tests.integration.ha.conftest import ACK, PASSWORD


def unconfirmed(write: str) -> float:
    """Return tradebot_replica_unconfirmed_total{write=...} (0 before the first)."""
    value = REGISTRY.get_sample_value("tradebot_replica_unconfirmed_total", {"write": write})
    return value or 0.0


def stop_replica(pair: Cluster) -> None:
    """Stop the replica and wait until the primary has none online."""
    pair.nodes[1].stop()
    pair.wait_replicas(pair.nodes[0], 0, exact=True)


async def test_the_replica_confirms_the_writes_and_none_confirms_without_it(
    pair: Cluster, acked_client: aioredis.Redis
) -> None:
    assert replica_ack_of(acked_client) == ACK
    replies, acked = await write_confirmed(
        acked_client, lambda p: (p.set("k", "v"), p.sadd("s", "a")), ACK
    )
    assert (replies, acked) == ([b"OK", 1], 1)
    replica = pair.nodes[1].client()
    assert replica.get("k") == b"v"  # confirmed means the replica has it
    replica.close()

    stop_replica(pair)
    replies, acked = await write_confirmed(acked_client, lambda p: p.set("k", "w"), ACK)
    assert (replies, acked) == ([b"OK"], 0)
    assert await acked_client.get("k") == b"w"  # applied on the primary all the same


async def test_a_failing_command_raises(acked_client: aioredis.Redis) -> None:
    await acked_client.set("k", "v")
    with pytest.raises(aioredis.ResponseError, match="WRONGTYPE"):
        await write_confirmed(acked_client, lambda p: p.sadd("k", "a"), ACK)


async def test_unconfirmed_entry_intent_raises_and_stays_open_a_stop_goes_on(
    pair: Cluster, acked_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(acked_client)
    entry = o.entry_intent("pos-1", SOL, "long", 2.0, 1)
    await journal.open_intent(entry, pending_symbol=True)  # replica up: confirmed
    assert [i.client_order_id for i in await journal.open_intents()] == [entry.client_order_id]

    stop_replica(pair)
    entry2 = o.entry_intent("pos-2", ETH, "short", 1.0, 2)
    before = unconfirmed("entry")
    with (
        caplog.at_level(logging.INFO, logger="executor"),
        pytest.raises(IntentNotConfirmed) as refused,
    ):
        await journal.open_intent(entry2, pending_symbol=True)
    assert refused.value.client_order_id == entry2.client_order_id
    assert str(refused.value) == (
        f"intent {entry2.client_order_id} confirmed by 0 of 1 replica(s) within 200 ms: "
        "order not sent"
    )
    assert unconfirmed("entry") == before + 1
    assert (
        f"Replica: intent {entry2.client_order_id} confirmed by 0 of 1 replica(s) within 200 ms:"
        f" entry SELL {ETH} qty=1 NOT sent" in caplog.text
    )
    # The intent is on the primary, open, its symbol in flight: the resume loop settles it.
    assert await journal.intent(entry2.client_order_id) == entry2
    assert (await journal.pending_entries())[ETH] == "pos-2"

    stop = o.stop_intent("pos-1", SOL, "long", 2.0, 90.0, 0, 3)
    before = unconfirmed("stop")
    with caplog.at_level(logging.INFO, logger="executor"):
        await journal.open_intent(stop)  # no raise: a stop is sent anyway
    assert unconfirmed("stop") == before + 1
    assert f"stop SELL {SOL} qty=2 sent anyway (reduce-only" in caplog.text


@pytest.fixture
async def executor(
    sim: SimHandle, pair: Cluster, acked_client: aioredis.Redis, tmp_path: Path
) -> Any:
    """An Executor whose Redis client requires one replica's confirmation."""
    url = f"redis://127.0.0.1:{pair.nodes[0].port}/0"
    settings = stack_settings(
        sim, url, tmp_path, redis_password=SecretStr(PASSWORD), redis_min_replicas_ack=1
    )
    ctx = ServiceContext(settings, "executor", "executor-test", acked_client)
    client = ExchangeClient.from_settings(settings, FAST)
    await client.start()
    try:
        yield Harness(Executor(ctx, client, await client.markets()), sim, acked_client)
    finally:
        await client.close()


async def test_entry_not_confirmed_is_not_sent_and_the_resume_loop_abandons_it(
    pair: Cluster, executor: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = executor
    await h.set_universe(SOL, ETH)
    first = await h.signal(SOL, "long")
    await h.executor.enter(first, await h.now())  # replica up: sent, filled, stop placed
    assert await h.executor.journal.settled(first.id) == "filled"
    orders_before = dict(h.sim.account.orders)
    assert len(orders_before) == 1

    stop_replica(pair)
    second = await h.signal(ETH, "short")
    with caplog.at_level(logging.INFO, logger="executor"):
        await h.executor.enter(second, await h.now())
    assert h.sim.account.orders == orders_before, "an order went out for an unconfirmed intent"
    assert "NOT sent (a failover now could lose the intent)" in caplog.text
    assert "exchange unreachable" not in caplog.text  # said once, as what it is
    assert await h.executor.journal.settled(second.id) is None  # the resume loop's to settle
    assert await h.redis.sismember(keys.OPEN_INTENTS, entry_client_id(second.id))

    # Later, the resume loop asks the exchange, finds no order and abandons the intent.
    async def abandoned() -> bool:
        await h.executor.resume()
        return await h.executor.journal.settled(second.id) == "abandoned"

    await eventually(abandoned, 20)
    assert "Resume: entry" in caplog.text
    assert "abandoned, not resent" in caplog.text
    assert h.sim.account.orders == orders_before
    assert not await h.redis.sismember(keys.OPEN_INTENTS, entry_client_id(second.id))


async def test_lease_counts_only_confirmed_writes(
    pair: Cluster, acked_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease(acked_client, "executor", 1500)
    assert await lease.acquire()
    assert lease.held()
    await lease.release()

    stop_replica(pair)
    other = Lease(acked_client, "executor", 1500)
    before = unconfirmed("lease")
    with caplog.at_level(logging.WARNING, logger="shared.lease"):
        assert not await other.acquire()
        assert not await other.acquire()
    assert not other.held()
    assert unconfirmed("lease") == before + 2
    assert caplog.text.count("taken on the primary but confirmed by 0 of 1 replica(s)") == 1
    assert await acked_client.get(other.key) == other.token.encode()  # on the primary only

    pair.nodes[1].start()  # the replica is back: the next poll wins the lease
    pair.wait_replicas(pair.nodes[0], 1)
    assert await other.acquire()
    assert other.held()


async def test_unconfirmed_renewals_lose_the_lease(
    pair: Cluster, acked_client: aioredis.Redis
) -> None:
    lease = Lease(acked_client, "state", 1500)
    async with lease.hold() as lost:
        assert lease.held()
        stop_replica(pair)
        with pytest.raises(ReplicaNotConfirmed, match="renewal of tb:lease:state"):
            await lease.renew()
        await asyncio.wait_for(lost.wait(), 10)  # given up 2/3 TTL after the last confirmed
        assert not lease.held()
