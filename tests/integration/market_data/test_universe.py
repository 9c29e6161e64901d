"""Universe: TOP_N by 24 h quote volume, rotated at start and when a period boundary is crossed."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared.book import read_universe
from tests.fixtures.sim import SimHandle
from tests.integration.market_data.conftest import STEPS_PER_CANDLE, TF_MS, MakeScanner

QUARTER_HOUR_MS = 900_000


def rotations() -> float:
    """Return the universe rotation counter."""
    return REGISTRY.get_sample_value("tradebot_universe_rotations_total") or 0.0


async def test_first_scan_ranks_by_quote_volume(
    synthetic: SimHandle,
    make_scanner: MakeScanner,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.market_data.service")
    md = await make_scanner(synthetic, top_n=3)
    assert await md.scan()
    volumes = await md.client.quote_volumes()
    want = sorted(volumes, key=lambda s: (-volumes[s], s))[:3]
    stored = await read_universe(redis_client)
    now = synthetic.sim.now_ms()
    assert stored is not None
    assert stored.symbols == want
    assert stored.rotated_ms == now - now % TF_MS
    assert stored.quote_volumes == pytest.approx({s: volumes[s] for s in want})
    assert all(s.endswith("/USDT:USDT") for s in stored.symbols)
    assert REGISTRY.get_sample_value("tradebot_universe_size") == 3
    assert f"Universe: 3 symbols {' '.join(want)} (rotation at 2025-01-02T01:00Z)" in caplog.text


async def test_rotation_only_when_a_period_boundary_is_crossed(
    synthetic: SimHandle, make_scanner: MakeScanner, redis_client: aioredis.Redis
) -> None:
    # COIN_ROTATE_HOURS = 0.25: boundaries every 15 min; the synthetic clock starts on one.
    md = await make_scanner(synthetic, coin_rotate_hours=0.25)
    start = synthetic.sim.now_ms()
    assert start % QUARTER_HOUR_MS == 0
    before = rotations()
    assert await md.scan()
    assert rotations() == before + 1  # at start
    for _ in range(2):
        synthetic.sim.step(STEPS_PER_CANDLE)
        assert await md.scan()
        assert await md.scan()
    assert rotations() == before + 1
    stored = await read_universe(redis_client)
    assert stored is not None
    assert stored.rotated_ms == start

    restarted = await make_scanner(synthetic, coin_rotate_hours=0.25)  # mid-period restart
    assert await restarted.scan()
    assert rotations() == before + 1
    assert restarted.universe == stored

    synthetic.sim.step(STEPS_PER_CANDLE)  # 15 minutes after start: a boundary
    assert await restarted.scan()
    assert await restarted.scan()
    assert rotations() == before + 2
    stored = await read_universe(redis_client)
    assert stored is not None
    assert stored.rotated_ms == start + QUARTER_HOUR_MS

    synthetic.sim.step(2 * STEPS_PER_CANDLE)  # down across the next boundary, then back
    restarted = await make_scanner(synthetic, coin_rotate_hours=0.25)
    synthetic.sim.step(STEPS_PER_CANDLE)
    assert await restarted.scan()
    assert rotations() == before + 3
    stored = await read_universe(redis_client)
    assert stored is not None
    assert stored.rotated_ms == start + 2 * QUARTER_HOUR_MS
