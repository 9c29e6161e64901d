"""Fixtures: the ExchangeClient (real ccxt over HTTP) pointed at the ``sim`` fixture's simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from shared.config import Settings
from shared.exchange import ExchangeClient, Tuning
from shared.exchange_errors import BackoffPolicy
from tests.fixtures.sim import SimHandle

# Small waits so retries and recvWindow settling stay fast in tests; a generous HTTP
# timeout so a loaded CI machine does not turn plain tests into fault tests.
FAST = Tuning(
    backoff=BackoffPolicy(attempts=8, initial=0.01, maximum=0.1, rate_limit_factor=2.0),
    timeout_ms=3_000,
    recv_window_ms=1_000,
    settle_slack_ms=100,
    settle_poll_ms=100,
    send_attempts=8,
    enable_rate_limit=False,
)

# Under injected faults: the HTTP timeout is shorter than the simulator's timeout hold, so
# the "timeout" fault is a client-side RequestTimeout (not a reset).
CHAOS = dataclasses.replace(FAST, timeout_ms=400)
CHAOS_TIMEOUT_HOLD_S = 0.6

MakeClient = Callable[..., Awaitable[ExchangeClient]]


def sim_settings(
    sim: SimHandle, *, api_key: str | None = None, secret: str | None = None
) -> Settings:
    """Return settings with EXCHANGE=sim at the fixture's address and credentials."""
    url = urlsplit(sim.base_url)
    return Settings(
        exchange="sim",
        sim_host=url.hostname,
        sim_port=url.port,
        api_key=api_key or sim.api_key,
        api_secret=secret or sim.api_secret,
    )


@pytest.fixture
async def make_client(sim: SimHandle) -> AsyncIterator[MakeClient]:
    """Yield a factory of clients (optionally with wrong credentials), closed at teardown."""
    clients: list[ExchangeClient] = []

    async def make(
        *,
        api_key: str | None = None,
        secret: str | None = None,
        tuning: Tuning = FAST,
        start: bool = True,
    ) -> ExchangeClient:
        client = ExchangeClient.from_settings(
            sim_settings(sim, api_key=api_key, secret=secret), tuning
        )
        clients.append(client)
        if start:
            await client.start()
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> ExchangeClient:
    """Return a started client with the simulator's own credentials."""
    return await make_client()
