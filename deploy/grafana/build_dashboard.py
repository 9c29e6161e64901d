"""Build the tradebot Grafana dashboard with the Grafana Foundation SDK.

``python deploy/grafana/build_dashboard.py`` rewrites ``deploy/grafana/dashboards/tradebot.json``
(``--check`` only tells whether the file is up to date, exit code 1 if not). Edit the
dashboard here, never the JSON: a test checks that the committed JSON is this script's output.

Metric names: docs/metrics.md. Every panel has a description (what it shows and how to read
it). Variables: ``service`` (the Prometheus job, named like the compose service) and
``symbol``; panels whose metrics carry the label filter on them.

Conventions of the queries:

- Gauges of a single-active service (state, executor) are taken from the copy that holds
  the lease, ``... and on (instance) (tradebot_lease_held == 1)``: a hot standby serves the
  same gauges, unset or at 0.
- Counters of rare events (trades, signals, orders, errors, dead letters, corrections) are
  shown as totals since the process started (a step up is a new event), not as
  ``increase()``: a labelled series appears at its first event with the value 1, and
  ``increase()`` never counts that first event.
- Frequent counters are shown as per-second rates over ``$__rate_interval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    common as common_b,
)
from grafana_foundation_sdk.builders import (
    dashboard as dash_b,
)
from grafana_foundation_sdk.builders import (
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

OUT = Path(__file__).resolve().parent / "dashboards" / "tradebot.json"
UID = "tradebot"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="prometheus")

# Variables as the queries use them (Grafana substitutes them).
SERVICE = 'job=~"$service"'
SYMBOL = 'symbol=~"$symbol"'
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)
# Marks on every time series: the tradebot alerts (deploy/prometheus/alerts.yml) while firing.
ALERTS_FIRING = 'ALERTS{alertstate="firing", alertname=~"Tradebot.*"}'


def active(expr: str) -> str:
    """Return ``expr`` restricted to the process holding its service's lease."""
    return f"({expr}) and on (instance) (tradebot_lease_held == 1)"


def quantile(q: float, bucket_selector: str, by: str = "le") -> str:
    """Return the q-quantile of a histogram's buckets over $__rate_interval."""
    return f"histogram_quantile({q:g}, sum by ({by}) (rate({bucket_selector}[{RATE}])))"


class Query:
    """One PromQL target of a panel: expression, legend, and whether it is instant."""

    def __init__(self, expr: str, legend: str, *, instant: bool = False) -> None:
        self.expr, self.legend, self.instant = expr, legend, instant

    def build(self, ref_id: str) -> prometheus.Dataquery:
        q = prometheus.Dataquery().expr(self.expr).legend_format(self.legend).ref_id(ref_id)
        return q.instant() if self.instant else q.range()


def _targets(panel: timeseries.Panel | stat.Panel, queries: list[Query]) -> None:
    for i, q in enumerate(queries):
        panel.with_target(q.build(chr(ord("A") + i)))


class Layout:
    """Hands out panel ids and grid positions (24 columns), row after row."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def take_id(self) -> int:
        panel_id = self.next_id
        self.next_id += 1
        return panel_id

    def place(self, w: int, h: int) -> dashboard.GridPos:
        if self.x + w > 24:
            self.newline()
        pos = dashboard.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def row(self, title: str) -> dash_b.Row:
        if self.x:
            self.newline()
        pos = dashboard.GridPos(h=1, w=24, x=0, y=self.y)
        self.y += 1
        return dash_b.Row(title).id(self.take_id()).grid_pos(pos)


def time_series(
    layout: Layout,
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    steps: bool = False,
    decimals: int | None = None,
) -> timeseries.Panel:
    """Return a time series panel (lines; ``steps`` for totals that only step up)."""
    panel = (
        timeseries.Panel()
        .id(layout.take_id())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .grid_pos(layout.place(w, h))
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if steps:
        panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    if decimals is not None:
        panel.decimals(decimals)
    _targets(panel, queries)
    return panel


def stat_panel(
    layout: Layout,
    title: str,
    description: str,
    queries: list[Query],
    *,
    thresholds: list[dashboard.Threshold] | None = None,
    mappings: list[dashboard.ValueMapping] | None = None,
    unit: str = "short",
    w: int = 6,
    h: int = 4,
) -> stat.Panel:
    """Return a stat panel showing the last value of each series."""
    steps = thresholds or [dashboard.Threshold(value=None, color="green")]
    panel = (
        stat.Panel()
        .id(layout.take_id())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .grid_pos(layout.place(w, h))
        .unit(unit)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("")
        )
        .thresholds(dash_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps))
    )
    if mappings:
        panel.mappings(mappings)
    _targets(panel, queries)
    return panel


RED_ABOVE_ZERO = [
    dashboard.Threshold(value=None, color="green"),
    dashboard.Threshold(value=1, color="red"),
]
UP_DOWN: list[dashboard.ValueMapping] = [
    dashboard.ValueMap(
        options={
            "0": dashboard.ValueMappingResult(text="DOWN", color="red", index=0),
            "1": dashboard.ValueMappingResult(text="UP", color="green", index=1),
        }
    )
]
LEASE: list[dashboard.ValueMapping] = [
    dashboard.ValueMap(
        options={
            "0": dashboard.ValueMappingResult(text="standby", color="blue", index=0),
            "1": dashboard.ValueMappingResult(text="active", color="green", index=1),
        }
    )
]


def account_row(layout: Layout) -> list[cogbuilder.Builder[dashboard.Panel]]:
    return [
        time_series(
            layout,
            "Equity",
            "Account equity as state last read it from the exchange: wallet balance plus the"
            " unrealised PnL of open positions, in the quote currency (USDT by default).",
            [Query(f"max({active('tradebot_equity')})", "equity")],
            decimals=2,
        ),
        time_series(
            layout,
            "PnL",
            "Realised PnL: the sum of the book's closed trades, net of fees. Unrealised PnL:"
            " the open positions at the latest prices. Both in the quote currency.",
            [
                Query(f"max({active('tradebot_realized_pnl')})", "realised"),
                Query(f"max({active('tradebot_unrealized_pnl')})", "unrealised"),
            ],
            decimals=2,
        ),
        stat_panel(
            layout,
            "Open positions",
            "Positions open in the book now (all symbols).",
            [Query(f"max({active('tradebot_positions_open')})", "open", instant=True)],
            h=8,
        ),
        stat_panel(
            layout,
            "Positions without a stop",
            "Book positions whose stop order was not open on the exchange at the last"
            " reconciliation. State asks the executor for a new stop at once; anything but 0"
            " at two reconciliations in a row raises the TradebotPositionWithoutStop alert.",
            [
                Query(
                    f"max({active('tradebot_positions_without_stop')})",
                    "without stop",
                    instant=True,
                )
            ],
            thresholds=RED_ABOVE_ZERO,
            h=8,
        ),
        time_series(
            layout,
            "Open positions by symbol",
            "Entry notional (quantity x entry price, quote currency) of each open position, by"
            " symbol and side; a line ends when its position closes.",
            [
                Query(
                    f"sum by (symbol, side) ({active(f'tradebot_position_notional{{{SYMBOL}}}')})",
                    "{{symbol}} {{side}}",
                )
            ],
        ),
        time_series(
            layout,
            "Trades closed by exit reason",
            "Trades closed since the state process started, by exit reason (stop, trail,"
            " manual, fault, ...); each step up is a closed trade. Resets to 0 when state"
            " restarts; the full trade list is in `tradebot status`.",
            [
                Query(
                    f"sum by (reason) (tradebot_trades_closed_total{{{SYMBOL}}})",
                    "{{reason}}",
                )
            ],
            steps=True,
        ),
        time_series(
            layout,
            "Entry signals by side",
            "Entry signals the signals workers published since they started, by side"
            " (long, short); each step up is a new signal.",
            [Query(f"sum by (side) (tradebot_signals_total{{{SYMBOL}}})", "{{side}}")],
            steps=True,
        ),
    ]


def orders_row(layout: Layout) -> list[cogbuilder.Builder[dashboard.Panel]]:
    bucket = f"tradebot_exchange_request_duration_seconds_bucket{{{SERVICE}}}"
    return [
        time_series(
            layout,
            "Orders by type and outcome",
            "Orders the executor sent since it started, by type (entry, exit, stop) and"
            " outcome (filled, placed, rejected, unknown, not_sent); each step up is an"
            " order. Rejected and unknown outcomes need a look in the executor's log.",
            [Query("sum by (type, outcome) (tradebot_orders_total)", "{{type}} {{outcome}}")],
            steps=True,
        ),
        time_series(
            layout,
            "Exchange errors by kind",
            "Failed exchange requests since each process started, by error kind (timeout,"
            " unavailable, rate_limited, clock, insufficient_margin, not_found, ...). not_found"
            " and no_change are normal answers to the lookups made before sends.",
            [
                Query(
                    f"sum by (kind) (tradebot_exchange_errors_total{{{SERVICE}}})",
                    "{{kind}}",
                )
            ],
            steps=True,
        ),
        time_series(
            layout,
            "Exchange error ratio",
            "Share of exchange requests that failed, per service, leaving out the expected"
            " not_found and no_change answers. Over 10% for 5 minutes raises the"
            " TradebotExchangeErrorRate alert.",
            [
                Query(
                    f"sum by (job) (rate(tradebot_exchange_errors_total"
                    f'{{{SERVICE}, kind!~"not_found|no_change"}}[{RATE}]))'
                    " / sum by (job) (rate(tradebot_exchange_requests_total"
                    f"{{{SERVICE}}}[{RATE}]))",
                    "{{job}}",
                )
            ],
            unit="percentunit",
        ),
        time_series(
            layout,
            "Exchange requests and retries",
            "Exchange API requests per second by call (every attempt counts), and retries per"
            " second after a retryable error (network, rate limit, server busy).",
            [
                Query(
                    f"sum by (call) (rate(tradebot_exchange_requests_total{{{SERVICE}}}[{RATE}]))",
                    "{{call}}",
                ),
                Query(
                    f"sum(rate(tradebot_exchange_retries_total{{{SERVICE}}}[{RATE}]))",
                    "retries",
                ),
            ],
            unit="reqps",
        ),
        time_series(
            layout,
            "Exchange latency",
            "Latency of exchange requests (failures included): median, 95th and 99th"
            " percentile over all calls of the selected services.",
            [Query(quantile(q, bucket), f"p{round(q * 100)}") for q in QUANTILES],
            unit="s",
        ),
        time_series(
            layout,
            "Exchange latency by call (p95)",
            "95th percentile latency of exchange requests, per API call.",
            [Query(quantile(0.95, bucket, "le, call"), "{{call}}")],
            unit="s",
        ),
        time_series(
            layout,
            "Candle close to entry fill",
            "Time from a candle's close to the fill of the entry it triggered, both on the"
            " exchange's clock: median and 95th percentile over the entries filled in each"
            " interval (no value where no entry filled).",
            [
                Query(quantile(q, "tradebot_candle_to_order_seconds_bucket"), f"p{round(q * 100)}")
                for q in QUANTILES[:2]
            ],
            unit="s",
        ),
        time_series(
            layout,
            "Open order intents",
            "Order intents the executor has journaled in Redis and not yet settled (sent and"
            " answered). Usually 0 or a few for a moment; one that stays means an order whose"
            " outcome is not known yet.",
            [Query(f"max({active('tradebot_intents_open')})", "open intents")],
            steps=True,
        ),
    ]


def pipeline_row(layout: Layout) -> list[cogbuilder.Builder[dashboard.Panel]]:
    return [
        time_series(
            layout,
            "Candles and evaluations",
            "Closed candles market data publishes per second, by symbol, and closed candles"
            " the signals workers evaluate per second (all workers).",
            [
                Query(
                    f"sum by (symbol) (rate(tradebot_candles_ingested_total{{{SYMBOL}}}[{RATE}]))",
                    "{{symbol}}",
                ),
                Query(f"sum(rate(tradebot_evaluations_total[{RATE}]))", "evaluated"),
            ],
            unit="ops",
        ),
        time_series(
            layout,
            "Universe",
            "Symbols in the active universe, and universe symbols market data skips after"
            " repeated candle fetch failures.",
            [
                Query(f"max({active('tradebot_universe_size')})", "universe"),
                Query(f"max({active('tradebot_md_symbols_skipped')})", "skipped"),
            ],
            steps=True,
        ),
        time_series(
            layout,
            "Signal evaluation time",
            "Time a signals worker takes to evaluate one closed candle (read its history,"
            " compute the indicators, apply the entry rule): median and 95th percentile.",
            [
                Query(
                    quantile(q, "tradebot_evaluation_duration_seconds_bucket"),
                    f"p{round(q * 100)}",
                )
                for q in QUANTILES[:2]
            ],
            unit="s",
        ),
        time_series(
            layout,
            "Stream lag and pending",
            "Per stream and consumer group: entries not yet delivered to the group (lag) and"
            " entries delivered but not yet acknowledged (pending). Both should stay near 0;"
            " a lag that keeps growing raises TradebotStreamLagGrowing.",
            [
                Query("max by (stream, group) (tradebot_stream_group_lag)", "lag {{stream}}"),
                Query(
                    "max by (stream, group) (tradebot_stream_group_pending)",
                    "pending {{stream}}",
                ),
            ],
        ),
        time_series(
            layout,
            "Dead letters",
            "Entries in the dead-letter stream tb:dlq (messages that could not be decoded or"
            " whose handler kept failing), and messages each process dead-lettered since it"
            " started, by origin stream and reason. `tradebot dlq list` shows them.",
            [
                Query('max(tradebot_stream_length{stream="tb:dlq"})', "tb:dlq entries"),
                Query(
                    "sum by (stream, reason) (tradebot_dlq_messages_total)",
                    "from {{stream}} ({{reason}})",
                ),
            ],
            steps=True,
        ),
        time_series(
            layout,
            "Messages published",
            "Messages published per second to each stream by the selected services.",
            [
                Query(
                    f"sum by (stream) (rate(tradebot_bus_published_total{{{SERVICE}}}[{RATE}]))",
                    "{{stream}}",
                )
            ],
            unit="ops",
        ),
    ]


def health_row(layout: Layout) -> list[cogbuilder.Builder[dashboard.Panel]]:
    return [
        stat_panel(
            layout,
            "Scrape targets",
            "Whether Prometheus can scrape each service process (1 = UP). DOWN for a minute"
            " raises TradebotServiceDown.",
            [Query(f"up{{{SERVICE}}}", "{{job}} {{instance}}", instant=True)],
            mappings=UP_DOWN,
            thresholds=[
                dashboard.Threshold(value=None, color="red"),
                dashboard.Threshold(value=1, color="green"),
            ],
            w=12,
            h=6,
        ),
        stat_panel(
            layout,
            "Lease holders",
            "For the single-active services (market_data, executor, state): which process holds"
            " the lease and does the work (active) and which waits as a hot standby.",
            [
                Query(
                    f"tradebot_lease_held{{{SERVICE}}}",
                    "{{service}} {{instance}}",
                    instant=True,
                )
            ],
            mappings=LEASE,
            thresholds=[
                dashboard.Threshold(value=None, color="blue"),
                dashboard.Threshold(value=1, color="green"),
            ],
            w=12,
            h=6,
        ),
        time_series(
            layout,
            "Main loop running",
            "1 while a process runs its service's main loop, 0 as it stops; one line per process.",
            [Query(f"tradebot_service_up{{{SERVICE}}}", "{{service}} {{instance}}")],
            steps=True,
        ),
        time_series(
            layout,
            "Heartbeat age",
            "Seconds since each process last wrote its heartbeat to Redis (every 2 s when"
            " healthy). `tradebot health` fails past 15 s; TradebotHeartbeatStale fires past"
            " 60 s.",
            [
                Query(
                    f"time() - tradebot_heartbeat_timestamp_seconds{{{SERVICE}}}",
                    "{{service}} {{instance}}",
                )
            ],
            unit="s",
        ),
        time_series(
            layout,
            "Process starts",
            "Process starts of each service, all its copies together; a step up is a start"
            " or a restart (a process that died and was started again by Docker or circus).",
            [
                Query(
                    f"max by (service) (tradebot_service_starts_total{{{SERVICE}}})",
                    "{{service}}",
                )
            ],
            steps=True,
        ),
        time_series(
            layout,
            "Reconciliation",
            "State's reconciliations with the exchange since it started, by outcome (ok,"
            " unreachable), and the book corrections they made, by kind (adopted: a position"
            " only the exchange had; closed_missing: gone from the exchange, closed in the book"
            " with the exchange's fill; stop_missing: its stop was not open on the exchange;"
            " quantity: the size differed from the exchange's)."
            " Any correction raises TradebotReconcileCorrections.",
            [
                Query("sum by (outcome) (tradebot_reconcile_runs_total)", "runs {{outcome}}"),
                Query(
                    "sum by (kind) (tradebot_reconcile_corrections_total)",
                    "corrected {{kind}}",
                ),
            ],
            steps=True,
        ),
    ]


def variables() -> list[dash_b.QueryVariable]:
    service = (
        dash_b.QueryVariable("service")
        .label("service")
        .description("Compose service (Prometheus job): market-data, signals, executor, state.")
        .datasource(DATASOURCE)
        .query("label_values(tradebot_service_up, job)")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
    )
    symbol = (
        dash_b.QueryVariable("symbol")
        .label("symbol")
        .description("Symbols market data has published candles for (ccxt form, BTC/USDT:USDT).")
        .datasource(DATASOURCE)
        .query("label_values(tradebot_candles_ingested_total, symbol)")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
    )
    return [service, symbol]


def build() -> dashboard.Dashboard:
    """Return the dashboard model."""
    layout = Layout()
    board = (
        dash_b.Dashboard("tradebot")
        .uid(UID)
        .description(
            "The trading bot: money, positions, orders, the exchange, the Redis Streams"
            " pipeline and the health of every service process."
        )
        .tags(["tradebot"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .variables(list(variables()))
        .annotation(
            dash_b.AnnotationQuery()
            .name("Alerts firing")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr(ALERTS_FIRING)
        )
    )
    rows = (
        ("Account", account_row),
        ("Orders and exchange", orders_row),
        ("Pipeline", pipeline_row),
        ("Service health", health_row),
    )
    for title, make in rows:
        board.with_row(layout.row(title))
        for panel in make(layout):
            board.with_panel(panel)
    return board.build()


def render() -> str:
    """Return the dashboard as the JSON text committed in deploy/grafana/dashboards."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the JSON file is not up to date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.name} is out of date: run python deploy/grafana/build_dashboard.py")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
