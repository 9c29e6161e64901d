"""The lease under replica confirmation: one warning per unconfirmed streak, one note when
the replicas confirm again, and a lease another copy holds is no unconfirmed write."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from shared.lease import Lease
from tests.integration.ha.cluster import Cluster
from tests.integration.ha.test_confirm import stop_replica, unconfirmed

WARNING = "taken on the primary but confirmed by 0 of 1 replica(s)"
AGAIN = "confirmed by the replicas again"


async def test_an_unconfirmed_streak_warns_once_and_its_end_is_noted_once(
    pair: Cluster, acked_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease(acked_client, "warn-once", 1500)
    with caplog.at_level(logging.INFO, logger="shared.lease"):
        assert await lease.acquire()  # replica up: confirmed, no streak
        assert WARNING not in caplog.text
        assert AGAIN not in caplog.text

        stop_replica(pair)
        before = unconfirmed("lease")
        assert not await lease.acquire()  # the first of a streak (after a confirmed one)
        assert caplog.text.count(WARNING) == 1
        assert not await lease.acquire()
        assert not await lease.acquire()
        assert caplog.text.count(WARNING) == 1  # once per streak
        assert unconfirmed("lease") == before + 3  # every one counted

        pair.nodes[1].start()
        pair.wait_replicas(pair.nodes[0], 1)
        assert await lease.acquire()
        assert caplog.text.count(AGAIN) == 1
        assert await lease.acquire()
        assert caplog.text.count(AGAIN) == 1  # only at the end of a streak
        assert lease.held()


async def test_a_lease_another_copy_holds_is_no_unconfirmed_write(
    pair: Cluster, acked_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    mine = Lease(acked_client, "taken", 1500)
    other = Lease(acked_client, "taken", 1500)
    assert await mine.acquire()
    stop_replica(pair)
    await acked_client.set(mine.key, "someone-else")  # another copy's, as after a takeover
    before = unconfirmed("lease")
    with caplog.at_level(logging.INFO, logger="shared.lease"):
        assert await mine.renew() is False  # not ReplicaNotConfirmed: it is not ours at all
        assert await other.acquire() is False
    assert unconfirmed("lease") == before
    assert WARNING not in caplog.text
    assert not mine.held()
    assert await acked_client.get(mine.key) == b"someone-else"
