"""Finding the primary through Sentinel, and following it through a failover.

Real valkey processes: a primary, replicas and one Sentinel (``cluster.Cluster``). The
services' client (``shared.redisconn.connect`` with TB_REDIS_SENTINELS) and the operator
commands reach the primary through the Sentinel. After the primary is killed (SIGKILL) or
demoted (SENTINEL FAILOVER), the same client, its bus consumer and its lease carry on
against the promoted replica, and every write a replica had confirmed is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from services.executor import orders as o
from services.executor.journal import Journal
from shared.bus import Consumer, publish
from shared.cli import app
from shared.config import Settings, load_settings
from shared.lease import Lease
from shared.redisconn import (
    BotRedis,
    ReplicaAck,
    connect,
    free_port,
    replica_ack_of,
    write_confirmed,
)
from shared.schemas import PriceTick
from tests.integration.bus.helpers import GROUP, STREAM, eventually, running, tick
from tests.integration.ha.cluster import MASTER, Cluster
from tests.integration.ha.conftest import PASSWORD


@pytest.fixture
def cluster2(tmp_path: Path) -> Iterator[Cluster]:
    """A primary, two replicas and one Sentinel: a replica is left after a failover."""
    c = Cluster(tmp_path / "redis", replicas=2, sentinels=1, password=PASSWORD)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def settings_for(cluster: Cluster, **extra: Any) -> Settings:
    """Return the services' settings for the cluster (replica confirmations on)."""
    fields: dict[str, Any] = {
        "redis_sentinels": ",".join(f"{h}:{p}" for h, p in cluster.addresses()),
        "redis_sentinel_master": MASTER,
        "redis_password": PASSWORD,
        "redis_min_replicas_ack": 1,
        "redis_ack_timeout_ms": 300,
        "lease_ttl_ms": 15000,
    }
    return Settings(**(fields | extra))


class Writer:
    """A task that keeps writing through a client; counts writes and keeps any error.

    Stopped by a flag, not by cancelling: redis-py 8.1 sometimes swallows the
    cancellation of a command in flight.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.done = 0
        self.errors: list[BaseException] = []
        self.stopping = False
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.client.incr("test:writes")
                self.done += 1
            except aioredis.RedisError as e:
                self.errors.append(e)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.wait_for(self.task, 30)


async def test_connect_finds_the_primary_through_the_sentinel(cluster: Cluster) -> None:
    client = connect(settings_for(cluster))
    try:
        assert isinstance(client, BotRedis)
        assert replica_ack_of(client) == ReplicaAck(1, 300)
        await client.set("k", "v")
        primary = cluster.nodes[0].client()
        assert primary.get("k") == b"v"
        primary.close()
    finally:
        await client.aclose()


async def test_primary_killed_clients_lease_and_consumer_carry_on_confirmed_writes_kept(
    cluster2: Cluster,
) -> None:
    cluster = cluster2
    client = connect(settings_for(cluster))
    journal = Journal(client)
    handled: set[int] = set()

    async def handle(msg: PriceTick, entry_id: str) -> None:
        handled.add(msg.ts)

    consumer = Consumer(client, STREAM, GROUP, "c1", handle, PriceTick, block_ms=200)
    lease = Lease(client, "executor", 15000)
    try:
        async with lease.hold() as lost, running(consumer):
            intents = [o.entry_intent(f"p{i}", "SOL/USDT:USDT", "long", 1.0, i) for i in range(20)]
            for intent in intents:
                await journal.open_intent(intent, pending_symbol=False)  # each one confirmed
            for i in range(10):
                await publish(client, STREAM, tick(i))
            await eventually(lambda: len(handled) == 10)
            writer = Writer(client)
            await eventually(lambda: writer.done > 5)

            old = cluster.primary_port()
            cluster.node(old).kill()
            new = await asyncio.to_thread(cluster.wait_failover, old, 1, 30)
            assert new != old

            done = writer.done
            await eventually(lambda: writer.done > done + 5, 30)  # writing on the new primary
            for i in range(10, 20):
                await publish(client, STREAM, tick(i))
            await eventually(lambda: len(handled) == 20, 30)
            await writer.stop()
            assert not lost.is_set(), "the lease was lost in the failover"
            assert lease.held()
            assert await client.get(lease.key) == lease.token.encode()
            found = {i.client_order_id for i in await journal.open_intents()}
            assert found == {i.client_order_id for i in intents}, "a confirmed intent was lost"
            assert writer.errors == [], f"errors reached the caller: {writer.errors}"
    finally:
        await client.aclose()


async def test_forced_failover_keeps_every_confirmed_write_and_the_client_follows(
    cluster: Cluster,
) -> None:
    """SENTINEL FAILOVER promotes the replica while the old primary still answers: until the
    Sentinel demotes it (seconds later), a pooled connection to it keeps writing there, and
    those writes are lost in its resync. None of them is confirmed (its replica is gone), so
    every write the client was told a replica confirmed is on the new primary."""
    client = connect(settings_for(cluster))
    ack = replica_ack_of(client)
    assert ack is not None
    confirmed: list[int] = []
    errors: list[BaseException] = []

    async def write(n: int) -> None:
        _, acked = await write_confirmed(client, lambda p: p.sadd("test:ids", n), ack)
        if acked >= ack.replicas:
            confirmed.append(n)

    stopping = False

    async def writer() -> None:
        n = 0
        while not stopping:
            n += 1
            try:
                await write(n)
            except aioredis.RedisError as e:
                errors.append(e)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    try:
        await eventually(lambda: len(confirmed) > 5)
        old = cluster.primary_port()
        await asyncio.to_thread(cluster.force_failover)
        new = await asyncio.to_thread(cluster.wait_failover, old, 1, 30)
        before = len(confirmed)
        await eventually(lambda: len(confirmed) > before + 5, 30)  # confirmed on the new one
    finally:
        stopping = True
        await asyncio.wait_for(task, 30)
        await client.aclose()
    assert errors == [], f"errors reached the caller: {errors}"
    demoted = cluster.node(old).client()
    info: Any = demoted.info("replication")
    demoted.close()
    assert (info["role"], int(info["master_port"])) == ("slave", new)
    promoted = cluster.node(new).client()
    kept = {int(x) for x in promoted.smembers("test:ids")}
    promoted.close()
    assert set(confirmed) <= kept, f"confirmed writes lost: {sorted(set(confirmed) - kept)}"


def test_operator_commands_reach_the_primary_through_the_sentinels(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in cluster.env().items() if k != "TB_REDIS_MIN_REPLICAS_ACK"}
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 0, result.output

    port = free_port()
    env["TB_REDIS_SENTINELS"] = f"127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["halt"], env=env)
    assert result.exit_code == 1, result.output
    [line] = result.output.splitlines()
    assert line.startswith(
        f"cannot reach the Redis primary 'tradebot' through the Sentinels at 127.0.0.1:{port}: "
        "MasterNotFoundError"
    ), line
    assert PASSWORD not in result.output

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().sentinel_addresses == [("127.0.0.1", port)]
