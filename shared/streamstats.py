"""Stream gauges: length of every stream, lag and pending of every consumer group.

Every service process samples them (``service.serve`` runs ``sample_forever``), so the
numbers stay on the dashboard while any one service is down; dashboards take the max
across instances. A stream that does not exist yet reads as length 0 with no groups.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from shared import keys
from shared.log import error_text
from shared.metrics import STREAM_GROUP_LAG, STREAM_GROUP_PENDING, STREAM_LENGTH

log = logging.getLogger(__name__)

SAMPLE_S = 10.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def sample(client: aioredis.Redis) -> None:
    """Read XLEN and XINFO GROUPS of every stream once and set the gauges."""
    for stream in keys.STREAM_MAXLEN:
        STREAM_LENGTH.labels(stream).set(await client.xlen(stream))
        try:
            groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
        except ResponseError:  # no such key: the stream has not been written yet
            continue
        for group in groups:
            name = _text(group.get("name", ""))
            STREAM_GROUP_PENDING.labels(stream, name).set(int(group.get("pending") or 0))
            lag = group.get("lag")
            if lag is not None:  # None: Redis cannot tell (entries were deleted)
                STREAM_GROUP_LAG.labels(stream, name).set(int(lag))


async def sample_forever(client: aioredis.Redis, interval: float = SAMPLE_S) -> None:
    """Sample every ``interval`` seconds until cancelled; a Redis error skips one round."""
    while True:
        try:
            await sample(client)
        except RedisError as e:
            log.debug("Stream gauges: not sampled: %s", error_text(e))
        await asyncio.sleep(interval)
