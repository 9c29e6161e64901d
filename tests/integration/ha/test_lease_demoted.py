"""A lease write answered READONLY (the primary the Sentinel still names was demoted) must
reach redis-py as that reply, so that the Sentinel connection turns it into a connection
error: the client then reconnects through the Sentinels (retried like any outage; a
standby's poll goes on), instead of failing the command on a connection to the old
primary that it would keep reusing."""

from __future__ import annotations

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.lease import Lease
from shared.redisconn import redis_from_sentinels
from tests.integration.bus.helpers import eventually
from tests.integration.ha.cluster import MASTER, Cluster
from tests.integration.ha.conftest import ACK, PASSWORD


async def test_a_lease_write_on_a_demoted_primary_is_a_connection_error(
    cluster: Cluster,
) -> None:
    client = redis_from_sentinels(
        cluster.addresses(),
        MASTER,
        password=PASSWORD,
        replica_ack=ACK,
        retry=Retry(NoBackoff(), 0),  # no retries: the first attempt's error is seen
    )
    try:
        lease = Lease(client, "demoted", 60_000)
        standby = Lease(client, "demoted", 60_000)
        assert await lease.acquire()  # confirmed by the replica
        # Demote the primary behind the Sentinel's back: it still names the old one.
        old = cluster.node(cluster.primary_port())
        new = next(n for n in cluster.nodes if n is not old)
        promoted, demoted = new.client(), old.client()
        try:
            promoted.replicaof("NO", "ONE")
            demoted.replicaof("127.0.0.1", new.port)

            def synced() -> bool:
                info = demoted.info("replication")
                return bool(info.get("master_link_status") == "up")

            await eventually(synced)
        finally:
            promoted.close()
            demoted.close()
        for _ in range(2):  # whether or not the demotion closed the connection before
            with pytest.raises(RedisConnectionError):
                await lease.renew()
            with pytest.raises(RedisConnectionError):
                await standby.acquire()
    finally:
        await client.aclose()
