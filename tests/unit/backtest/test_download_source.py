"""``tradebot download --exchange ID``: a public client (no keys, the exchange's rate limit)."""

from __future__ import annotations

import numpy as np

from services.backtest.download import source_settings
from shared.config import Settings
from shared.exchange import ExchangeClient
from shared.history import missing_ranges


async def test_another_exchange_gets_a_public_rate_limited_client_without_keys() -> None:
    paper = Settings(api_key="sim-key", api_secret="sim-secret")
    public = source_settings(paper, "binanceusdm")
    assert (public.exchange, public.api_key, public.api_secret, public.testnet) == (
        "binanceusdm",
        None,
        None,
        False,
    )
    client = ExchangeClient.from_settings(public)
    try:
        assert not client.ex.apiKey  # public klines: no key is sent anywhere
        assert client.ex.enableRateLimit  # the exchange's own limits are respected
        assert "fapi.binance.com" in client.ex.urls["api"]["fapiPublic"]
    finally:
        await client.close()
    assert source_settings(paper, None) is paper  # the configured exchange as it is


def test_missing_ranges_are_the_head_the_tail_and_every_gap() -> None:
    tf = 300_000
    have = np.array([2, 3, 4, 7, 8], dtype=np.int64) * tf
    assert missing_ranges(have, 0, 11 * tf, tf) == [
        (0, 2 * tf),
        (5 * tf, 7 * tf),
        (9 * tf, 11 * tf),
    ]
    assert missing_ranges(have, 2 * tf, 5 * tf, tf) == []
    assert missing_ranges(np.array([], dtype=np.int64), tf + 1, 3 * tf, tf) == [(2 * tf, 3 * tf)]
