"""Prometheus metrics of the services (catalog: docs/metrics.md), and the helper serving them.

Names follow Prometheus conventions: the ``tradebot_`` prefix, base units, ``_total`` on
counters (prometheus_client appends it to a Counter's name).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# --- health, leases, restarts (every service) ----------------------------------------
SERVICE_UP = Gauge("tradebot_service_up", "1 while the service runs its main loop", ["service"])
SERVICE_RESTARTS = Counter(
    "tradebot_service_starts",
    "Process starts of the service, all copies, counted in Redis (a restart shows as +1)",
    ["service"],
)
HEARTBEAT_TS = Gauge(
    "tradebot_heartbeat_timestamp_seconds",
    "Unix time of the last heartbeat written to Redis",
    ["service"],
)
LEASE_HELD = Gauge(
    "tradebot_lease_held", "1 while this process holds its service lease", ["service"]
)
LEASE_TAKEOVERS = Counter(
    "tradebot_lease_takeovers",
    "Leases won by a copy that first waited as a standby behind another holder",
    ["service"],
)
REPLICA_UNCONFIRMED = Counter(
    "tradebot_replica_unconfirmed",
    "Critical writes (order intent, lease) fewer replicas confirmed than TB_REDIS_MIN_REPLICAS_ACK"
    " within TB_REDIS_ACK_TIMEOUT_MS: an entry is not sent, a lease write does not count",
    ["write"],
)

# --- bus ---------------------------------------------------------------------------------
BUS_PUBLISHED = Counter("tradebot_bus_published", "Messages published", ["stream"])
BUS_ACKED = Counter("tradebot_bus_acked", "Messages handled and acked", ["stream", "group"])
BUS_HANDLER_ERRORS = Counter(
    "tradebot_bus_handler_errors",
    "Handler failures (message left pending)",
    ["stream", "group"],
)
BUS_BATCH_FALLBACKS = Counter(
    "tradebot_bus_batch_fallbacks",
    "Batch handler failures (the batch's entries then handled one by one)",
    ["stream", "group"],
)
BUS_RECLAIMED = Counter(
    "tradebot_bus_reclaimed",
    "Pending messages reclaimed from dead consumers",
    ["stream", "group"],
)
BUS_TRIMMED = Counter(
    "tradebot_bus_trimmed_pending",
    "Pending messages trimmed from the stream before they were handled (lost)",
    ["stream", "group"],
)
DLQ_MESSAGES = Counter(
    "tradebot_dlq_messages", "Messages sent to the dead-letter stream", ["stream", "reason"]
)
STREAM_LENGTH = Gauge("tradebot_stream_length", "Entries in the stream", ["stream"])
STREAM_GROUP_LAG = Gauge(
    "tradebot_stream_group_lag",
    "Entries not yet delivered to the consumer group",
    ["stream", "group"],
)
STREAM_GROUP_PENDING = Gauge(
    "tradebot_stream_group_pending",
    "Entries delivered to the group and not yet acknowledged",
    ["stream", "group"],
)

# --- exchange (market_data, executor, state) ----------------------------------------
EXCHANGE_REQUESTS = Counter(
    "tradebot_exchange_requests", "Exchange API requests sent (each attempt)", ["call"]
)
EXCHANGE_ERRORS = Counter(
    "tradebot_exchange_errors", "Failed exchange requests by error kind", ["call", "kind"]
)
EXCHANGE_LATENCY = Histogram(
    "tradebot_exchange_request_duration_seconds",
    "Exchange API request latency (failures included)",
    ["call"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EXCHANGE_RETRIES = Counter(
    "tradebot_exchange_retries", "Retries after a retryable exchange error", ["call"]
)

# --- market_data -------------------------------------------------------------------------
CANDLES_PUBLISHED = Counter("tradebot_candles_ingested", "Closed candles published", ["symbol"])
TICKS_PUBLISHED = Counter("tradebot_ticks", "Price ticks published")
SYMBOL_FAILURES = Counter(
    "tradebot_md_symbol_failures", "Candle fetches that failed, per symbol", ["symbol"]
)
SYMBOLS_SKIPPED = Gauge(
    "tradebot_md_symbols_skipped", "Universe symbols skipped after repeated failures"
)
# call: server_time, markets, tickers, quote_volumes, ohlcv. kind: unreadable (the answer
# could not be read at all: HTML, wrong shape), empty (no markets listed), bad_value
# (a candle or price with invalid values), bad_time (an open time off the grid), duplicate,
# out_of_order, missing (a candle or ticker the answer should hold).
BAD_DATA = Counter(
    "tradebot_md_bad_data",
    "Exchange answers, candles and prices market_data refused or repaired, by call and kind",
    ["call", "kind"],
)
UNIVERSE_SIZE = Gauge("tradebot_universe_size", "Symbols in the active universe")
UNIVERSE_ROTATIONS = Counter("tradebot_universe_rotations", "Universe rotations")
CANDLE_GAPS = Counter("tradebot_md_candle_gaps", "Candle gaps found and refilled", ["symbol"])

# --- signals -----------------------------------------------------------------------------
CANDLES_EVALUATED = Counter("tradebot_evaluations", "Closed candles evaluated")
EVALUATION_SECONDS = Histogram(
    "tradebot_evaluation_duration_seconds",
    "Time to evaluate one closed candle",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ENTRY_SIGNALS = Counter("tradebot_signals", "Entry signals published", ["side", "symbol"])

# --- executor ----------------------------------------------------------------------------
ORDERS = Counter(
    "tradebot_orders",
    "Orders by type (entry, exit, stop) and outcome (filled, placed, rejected, unknown...)",
    ["type", "outcome"],
)
ENTRIES_REFUSED = Counter(
    "tradebot_entries_refused", "Entry signals not traded, by reason", ["reason"]
)
INTENTS_OPEN = Gauge("tradebot_intents_open", "Order intents written and not yet settled")
PUBLISH_TO_ORDER = Histogram(
    "tradebot_publish_to_order_seconds",
    "From market_data publishing a close's candles to the exchange acknowledging an entry "
    "order of that close, on the wall clock",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SIGNAL_TO_ORDER = Histogram(
    "tradebot_candle_to_order_seconds",
    "Candle close to entry fill, on the exchange's clock",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)

# --- state -------------------------------------------------------------------------------
POSITIONS_OPEN = Gauge("tradebot_positions_open", "Open positions in the book")
POSITION_NOTIONAL = Gauge(
    "tradebot_position_notional",
    "Entry notional (quantity x entry price) of each open position, quote currency",
    ["symbol", "side"],
)
POSITIONS_WITHOUT_STOP = Gauge(
    "tradebot_positions_without_stop",
    "Book positions whose stop was not open on the exchange at the last reconciliation",
)
EQUITY = Gauge("tradebot_equity", "Account equity (wallet + unrealised PnL), quote currency")
UNREALIZED_PNL = Gauge("tradebot_unrealized_pnl", "Unrealised PnL of the open positions")
REALIZED_PNL = Gauge("tradebot_realized_pnl", "Sum of the closed trades' PnL in the book")
TRADES_CLOSED = Counter(
    "tradebot_trades_closed", "Trades closed, by exit reason", ["reason", "symbol"]
)
EXIT_SIGNALS = Counter("tradebot_exit_signals", "Exit signals sent, by reason", ["reason"])
RECONCILE_CORRECTIONS = Counter(
    "tradebot_reconcile_corrections",
    "Book corrections made by reconciliation, by kind",
    ["kind"],
)
RECONCILE_RUNS = Counter("tradebot_reconcile_runs", "Reconciliations, by outcome", ["outcome"])


def serve_metrics(port: int) -> None:
    """Serve the default registry on ``port`` (0 disables it)."""
    if port:
        start_http_server(port)
