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


# --- market_data -------------------------------------------------------------------------
UNIVERSE = f"{PREFIX}universe"  # JSON: the active universe (shared.book.Universe)
LAST_PRICES = f"{PREFIX}md:prices"  # hash symbol -> JSON {price, ts}: the latest tick
LAST_CANDLE = f"{PREFIX}md:last_candle"  # hash symbol -> open time of the last published candle
MD_CLOCK = f"{PREFIX}md:clock"  # exchange ms up to which candles and ticks are published
# The newest exchange time market_data read, raised (never lowered) before the ticks stamped
# with it are published: no true tick is dated past it (state refuses those).
MD_NOW = f"{PREFIX}md:now"


def close_expected_key(close_ms: int) -> str:
    """Return the key holding how many candles market_data published for one close time."""
    return f"{PREFIX}close:{close_ms}:expected"


def close_published_key(close_ms: int) -> str:
    """Return the key holding when market_data first published a close (wall clock, µs)."""
    return f"{PREFIX}close:{close_ms}:published"


def close_evaluated_key(close_ms: int) -> str:
    """Return the set of symbols whose candle of one close time a signals worker evaluated."""
    return f"{PREFIX}close:{close_ms}:evaluated"


# --- executor ----------------------------------------------------------------------------
HALT = f"{PREFIX}halt"  # set = no new entries (JSON {reason, ts}); exits still managed
OPEN_INTENTS = f"{PREFIX}exec:open_intents"  # set of client order ids not yet settled
PENDING_ENTRIES = f"{PREFIX}exec:pending"  # hash symbol -> position id: entry not yet in book
ENTRY_BATCHES = f"{PREFIX}exec:batches"  # zset close_ms -> first arrival ms: closes to allot
STALE_STOPS = f"{PREFIX}exec:stale_stops"  # hash client id -> symbol: stops left to cancel


def entry_batch_key(close_ms: int) -> str:
    """Return the hash (signal id -> entry signal) of the entries of one candle close."""
    return f"{PREFIX}exec:batch:{close_ms}"


def signal_done_key(signal_id: str) -> str:
    """Return the key recording how the executor settled a signal (its dedupe record)."""
    return f"{PREFIX}exec:signal:{signal_id}"


# --- state: the position book ------------------------------------------------------------
BOOK_POSITIONS = f"{PREFIX}book:positions"  # hash position id -> BookPosition JSON
BOOK_TRADES = f"{PREFIX}book:trades"  # hash position id -> ClosedTrade JSON
BOOK_TRADE_LOG = f"{PREFIX}book:trade_log"  # zset position id by exit time (recent trades)
BOOK_ACCOUNT = f"{PREFIX}book:account"  # JSON: wallet, equity, unrealised PnL, ts
STATE_TICK_MS = f"{PREFIX}state:tick_ms"  # exchange ms of the newest price event state handled


# --- every service -----------------------------------------------------------------------
def heartbeat_key(service: str, instance: str) -> str:
    """Return the expiring key a running service instance refreshes (tradebot status)."""
    return f"{PREFIX}hb:{service}:{instance}"


HEARTBEAT_PATTERN = f"{PREFIX}hb:*"


def starts_key(service: str) -> str:
    """Return the counter of a service's process starts, all copies (a restart adds one)."""
    return f"{PREFIX}starts:{service}"
