"""Every Redis stream, consumer group and key name, in one place (all namespaced ``tb:``)."""

from __future__ import annotations

PREFIX = "tb:"

# Streams
STREAM_CANDLES = f"{PREFIX}md.candles"
STREAM_TICKS = f"{PREFIX}md.ticks"
STREAM_SIGNALS = f"{PREFIX}signals"
STREAM_EVENTS = f"{PREFIX}events"
STREAM_DLQ = f"{PREFIX}dlq"

# Approximate MAXLEN per stream; events is the audit trail and is kept long.
STREAM_MAXLEN: dict[str, int] = {
    STREAM_CANDLES: 100_000,
    STREAM_TICKS: 100_000,
    STREAM_SIGNALS: 100_000,
    STREAM_EVENTS: 10_000_000,
    STREAM_DLQ: 100_000,
}
DEFAULT_MAXLEN = 100_000

# Consumer groups
GROUP_SIGNALS = "signals"
GROUP_EXECUTOR = "executor"
GROUP_STATE = "state"


def lease_key(service: str) -> str:
    """Return the key of a single-active service's lease."""
    return f"{PREFIX}lease:{service}"


def candles_key(symbol: str, timeframe: str) -> str:
    """Return the key holding a symbol's recent closed candles."""
    return f"{PREFIX}candles:{symbol}:{timeframe}"


def order_intent_key(client_order_id: str) -> str:
    """Return the key of an order intent written before the order is sent."""
    return f"{PREFIX}intent:{client_order_id}"
