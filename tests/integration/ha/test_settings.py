"""The Redis HA settings: parsing and the one-line errors (no server needed)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from shared.config import ConfigError, Settings, load_settings
from shared.redisconn import ReplicaAck


@pytest.fixture(autouse=True)
def _no_tb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TB_"):
            monkeypatch.delenv(name)


def error_of(**fields: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**fields)
    return str(caught.value)


def test_defaults_are_off() -> None:
    s = Settings()
    assert (s.redis_sentinels, s.redis_sentinel_master) == ("", "tradebot")
    assert (s.redis_min_replicas_ack, s.redis_ack_timeout_ms) == (0, 500)
    assert s.sentinel_addresses == []
    assert ReplicaAck.from_settings(s) is None


def test_sentinel_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_REDIS_SENTINELS", "s1:26379, 10.0.0.2:26380,[::1]:26381")
    monkeypatch.setenv("TB_REDIS_MIN_REPLICAS_ACK", "1")
    s = load_settings()
    assert s.sentinel_addresses == [("s1", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert ReplicaAck.from_settings(s) == ReplicaAck(1, 500)


@pytest.mark.parametrize("value", ["s1", "s1:", ":26379", "s1:26379,", "s1:70000", "s1:port"])
def test_a_bad_sentinel_entry_is_named(value: str) -> None:
    entry = value.split(",")[-1].strip()
    assert error_of(redis_sentinels=value) == (
        f"TB_REDIS_SENTINELS={value}: {entry!r} is not host:port "
        "(a comma-separated list, e.g. s1:26379,s2:26379)"
    )


def test_sentinels_and_a_url_are_exclusive() -> None:
    assert error_of(redis_sentinels="s1:26379", redis_url="redis://r:6379/0") == (
        "TB_REDIS_SENTINELS=s1:26379 and TB_REDIS_URL are both set: the Sentinels find the "
        "primary, so unset TB_REDIS_URL"
    )


def test_master_name_and_acks() -> None:
    assert error_of(redis_sentinel_master="my master") == (
        "TB_REDIS_SENTINEL_MASTER='my master' must be a name without spaces"
    )
    assert error_of(redis_min_replicas_ack=-1) == (
        "TB_REDIS_MIN_REPLICAS_ACK=-1 must be 0 (off) or more"
    )
    assert error_of(redis_ack_timeout_ms=0) == "TB_REDIS_ACK_TIMEOUT_MS=0 must be at least 1"
    assert error_of(redis_min_replicas_ack=1, redis_ack_timeout_ms=4000) == (
        "TB_REDIS_ACK_TIMEOUT_MS=4000 must be below a third of TB_LEASE_TTL_MS=10000"
    )
    load_settings(redis_min_replicas_ack=0, redis_ack_timeout_ms=4000)  # off: no constraint


def test_live_with_sentinels_needs_a_password() -> None:
    live: dict[str, Any] = {"exchange": "binanceusdm", "api_key": "k", "api_secret": "s"}
    live["live"] = True
    assert "TB_LIVE=true needs a Redis password" in error_of(**live, redis_sentinels="s1:26379")
    load_settings(**live, redis_sentinels="s1:26379", redis_password="pw")
