"""Fixtures: a primary with a replica (``pair``), and the same under one Sentinel (``cluster``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.redisconn import ReplicaAck, redis_from_url
from tests.integration.ha.cluster import Cluster

PASSWORD = "ha test pw"
# Short, so a test that waits for a confirmation that cannot come is quick.
ACK = ReplicaAck(replicas=1, timeout_ms=200)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    """A primary and one replica (no Sentinel), both with AOF and the password; stopped after."""
    c = Cluster(tmp_path / "redis", replicas=1, sentinels=0, password=PASSWORD)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A primary, one replica and one Sentinel (quorum 1); stopped after."""
    c = Cluster(tmp_path / "redis", replicas=1, sentinels=1, password=PASSWORD)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
async def acked_client(pair: Cluster) -> AsyncIterator[aioredis.Redis]:
    """A services' client of the pair's primary that requires one replica's confirmation."""
    primary = pair.nodes[0]
    client = redis_from_url(
        f"redis://127.0.0.1:{primary.port}/0", password=PASSWORD, replica_ack=ACK
    )
    try:
        yield client
    finally:
        await client.aclose()
