"""Prometheus metrics shared by the services, and the helper that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

BUS_PUBLISHED = Counter("tb_bus_published_total", "Messages published", ["stream"])
BUS_ACKED = Counter("tb_bus_acked_total", "Messages handled and acked", ["stream", "group"])
BUS_HANDLER_ERRORS = Counter(
    "tb_bus_handler_errors_total", "Handler failures (message left pending)", ["stream", "group"]
)
BUS_RECLAIMED = Counter(
    "tb_bus_reclaimed_total", "Pending messages reclaimed from dead consumers", ["stream", "group"]
)
BUS_TRIMMED = Counter(
    "tb_bus_trimmed_pending_total",
    "Pending messages trimmed from the stream before they were handled (lost)",
    ["stream", "group"],
)
DLQ_MESSAGES = Counter(
    "tb_dlq_messages_total", "Messages sent to the dead-letter stream", ["stream", "reason"]
)
SERVICE_UP = Gauge("tb_service_up", "1 while the service runs its main loop", ["service"])
LEASE_HELD = Gauge("tb_lease_held", "1 while this process holds its service lease", ["service"])
EXCHANGE_CALLS = Counter(
    "tb_exchange_calls_total", "Exchange API calls by call and outcome", ["call", "outcome"]
)
EXCHANGE_LATENCY = Histogram(
    "tb_exchange_call_seconds",
    "Exchange API call latency",
    ["call"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

SERVICE_RESTARTS = Counter(
    "tb_service_starts_total", "Service process starts (restarts show as increases)", ["service"]
)

# market_data
CANDLES_PUBLISHED = Counter("tb_md_candles_published_total", "Closed candles published")
TICKS_PUBLISHED = Counter("tb_md_ticks_published_total", "Price ticks published")
SYMBOL_FAILURES = Counter(
    "tb_md_symbol_failures_total", "Candle fetches that failed, per symbol", ["symbol"]
)
SYMBOLS_SKIPPED = Gauge("tb_md_symbols_skipped", "Universe symbols skipped after repeated failures")
UNIVERSE_SIZE = Gauge("tb_universe_size", "Symbols in the active universe")
UNIVERSE_ROTATIONS = Counter("tb_universe_rotations_total", "Universe rotations")
CANDLE_GAPS = Counter("tb_md_candle_gaps_total", "Candle gaps found and refilled", ["symbol"])

# signals
CANDLES_EVALUATED = Counter("tb_signals_candles_evaluated_total", "Closed candles evaluated")
ENTRY_SIGNALS = Counter("tb_signals_entry_total", "Entry signals published", ["side"])

# executor
ORDERS = Counter(
    "tb_orders_total",
    "Orders by purpose and outcome (filled, rejected, unknown...)",
    ["purpose", "outcome"],
)
ENTRIES_REFUSED = Counter(
    "tb_entries_refused_total", "Entry signals not traded, by reason", ["reason"]
)
INTENTS_OPEN = Gauge("tb_intents_open", "Order intents written and not yet settled")
SIGNAL_TO_ORDER = Histogram(
    "tb_signal_to_order_seconds",
    "Candle close (exchange time) to entry fill",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)

# state
POSITIONS_OPEN = Gauge("tb_positions_open", "Open positions in the book")
EQUITY = Gauge("tb_equity", "Account equity (wallet + unrealised PnL), quote currency")
UNREALIZED_PNL = Gauge("tb_unrealized_pnl", "Unrealised PnL of the open positions")
REALIZED_PNL = Gauge("tb_realized_pnl", "Sum of the closed trades' PnL in the book")
TRADES_CLOSED = Counter("tb_trades_closed_total", "Trades closed, by exit reason", ["reason"])
EXIT_SIGNALS = Counter("tb_exit_signals_total", "Exit signals sent, by reason", ["reason"])
RECONCILE_CORRECTIONS = Counter(
    "tb_reconcile_corrections_total",
    "Book corrections made by reconciliation, by kind",
    ["kind"],
)
RECONCILE_RUNS = Counter("tb_reconcile_runs_total", "Reconciliations, by outcome", ["outcome"])


def serve_metrics(port: int) -> None:
    """Serve the default registry on ``port`` (0 disables it)."""
    if port:
        start_http_server(port)
