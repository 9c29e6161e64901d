"""recvWindow on a stepped or frozen market clock: a request held too long is refused.

The market clock of the simulator may stand still, jump or run fast, so it cannot age a
request. A timestamp read from the host clock (what the bot signs with against the
simulator) is judged by the host clock alone; one read from the market clock (a client that
synced its offset from ``GET /time``) is accepted only while the market clock moved within
the request's recvWindow. See ``services.exchange_sim.auth``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import ccxt.async_support as ccxt
import pytest

from services.exchange_sim.market import Market
from tests.fixtures.sim import SimHandle, running_sim
from tests.integration.exchange_sim.rawhttp import Answer, now_ms, send, signed_params

TF = 300_000
WARMUP = 20


def market_at(clock_ms: int) -> Market:
    """Return a synthetic market whose (frozen) clock reads ``clock_ms``."""
    start = clock_ms - clock_ms % TF - WARMUP * TF
    market = Market.synthetic(2, seed=5, start_ms=start, warmup=WARMUP)
    market.advance_to(clock_ms)
    return market


async def balance(sim: SimHandle, timestamp: int) -> Answer:
    """Send GET /fapi/v3/account signed with ``timestamp`` (recvWindow 5000)."""
    query = signed_params(f"recvWindow=5000&timestamp={timestamp}", sim.api_secret, -1)
    return await send(
        sim.base_url, "GET", f"/fapi/v3/account?{query}", headers={"X-MBX-APIKEY": sim.api_key}
    )


@pytest.fixture
async def near_wall() -> AsyncIterator[SimHandle]:
    """Yield a simulator whose market clock stands 6 s behind the host clock, frozen."""
    async with running_sim(feed=market_at(now_ms() - 6_000)) as handle:
        yield handle


async def test_a_request_held_past_recv_window_is_refused_on_a_frozen_clock(
    near_wall: SimHandle,
) -> None:
    frozen = near_wall.sim.now_ms()
    # Signed 100 ms after the market clock stopped, held 5.9 s: by the market clock it is
    # 100 ms ahead, by the host clock (the one it was signed with) 5.9 s old.
    held = await balance(near_wall, frozen + 100)
    assert (held.status, held.json()["code"]) == (400, -1021)
    assert "outside of the recvWindow" in held.json()["msg"]
    fresh = await balance(near_wall, now_ms() - 100)
    assert fresh.status == 200, fresh.body


async def test_a_request_held_past_recv_window_is_refused_on_a_stepped_clock(
    near_wall: SimHandle,
) -> None:
    signed_at = now_ms() - 5_900  # signed 5.9 s ago
    # The market was stepped to 2 s after the signing time: by the market clock it is 2 s
    # old (within recvWindow), by the host clock 5.9 s.
    near_wall.sim.advance_to(signed_at + 2_000)
    held = await balance(near_wall, signed_at)
    assert (held.status, held.json()["code"]) == (400, -1021)
    near_wall.sim.advance_to(now_ms() + 3_600_000)  # an hour ahead: host timestamps still pass
    assert (await balance(near_wall, now_ms())).status == 200
    assert (await balance(near_wall, now_ms() - 5_500)).status == 400


async def test_a_client_signing_with_the_market_clock_must_follow_its_steps() -> None:
    async with running_sim(feed=Market.synthetic(2, seed=5, warmup=WARMUP)) as sim:
        ex = sim.make_ccxt(recvWindow=1_000)
        await ex.load_time_difference()  # sign with the market clock, as against Binance
        assert (await ex.fetch_balance())["USDT"]["total"] == pytest.approx(10_000.0)
        # The market clock stands still: after a recvWindow nothing can tell how long a
        # request signed with it was held, so none is accepted.
        await asyncio.sleep(1.1)  # the client stalls (this is the case under test)
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await ex.fetch_balance()
        sim.step(1)  # the market clock moves (75 s): the client's offset is stale
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await ex.fetch_balance()
        await ex.load_time_difference()
        assert (await ex.fetch_balance())["USDT"]["total"] == pytest.approx(10_000.0)
