"""Prometheus config, alert rules and the Grafana dashboard, checked for real.

- ``promtool`` (Debian's) checks the rules and the config, and runs unit tests of the alert
  rules on synthetic series: each alert fires when its condition holds for its ``for:``
  duration, and not on the cases it must ignore (a standby's gauges, expected exchange
  answers).
- The committed dashboard JSON is exactly what ``deploy/grafana/build_dashboard.py`` (the
  Grafana Foundation SDK) produces, has the required panels and variables, and every name
  the dashboard and the rules use is in the metrics catalog (docs/metrics.md).
- The slow test runs the bot as real processes (market_data, two signals workers, an
  executor with a hot standby, state) with their metrics ports, and a real Prometheus
  whose config is generated from deploy/prometheus/prometheus.yml (the same jobs and rule
  file; static local targets instead of Docker DNS; 1 s intervals; ``for:`` shortened).
  Once the bot has traded, every query of the dashboard and of the rules is valid, every
  dashboard query returns data, and killing a signals worker fires TradebotServiceDown.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana import build_dashboard
from shared import keys
from shared.book import Universe
from shared.redisconn import free_port
from tests.fixtures.procs import ROOT
from tests.fixtures.sim import make_sim_client
from tests.fixtures.stack import Stack

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "tradebot.json"
CATALOG = ROOT / "docs" / "metrics.md"

JOBS = ("market-data", "signals", "executor", "state")
# The compose services each job discovers by DNS (the single-active ones with a standby).
JOB_NAMES = {
    "market-data": ["market-data", "market-data-standby"],
    "signals": ["signals"],
    "executor": ["executor", "executor-standby"],
    "state": ["state", "state-standby"],
}
ALERTS = {
    "TradebotServiceDown",
    "TradebotServiceMissing",
    "TradebotNoLeaseHolder",
    "TradebotSeveralLeaseHolders",
    "TradebotHeartbeatStale",
    "TradebotStreamLagGrowing",
    "TradebotDeadLetters",
    "TradebotPositionWithoutStop",
    "TradebotReconcileCorrections",
    "TradebotExchangeErrorRate",
}
PANELS = {
    "Equity",
    "PnL",
    "Open positions",
    "Positions without a stop",
    "Open positions by symbol",
    "Trades closed by exit reason",
    "Entry signals by side",
    "Orders by type and outcome",
    "Exchange errors by kind",
    "Exchange error ratio",
    "Exchange requests and retries",
    "Exchange latency",
    "Exchange latency by call (p95)",
    "Candle close to entry fill",
    "Open order intents",
    "Candles and evaluations",
    "Universe",
    "Signal evaluation time",
    "Stream lag and pending",
    "Dead letters",
    "Messages published",
    "Scrape targets",
    "Lease holders",
    "Main loop running",
    "Heartbeat age",
    "Process starts",
    "Reconciliation",
}
# Names the dashboard and rules may use besides the catalog's: Prometheus's own series.
PROMETHEUS_SERIES = {"up", "ALERTS"}

needs_promtool = pytest.mark.skipif(not PROMTOOL.exists(), reason="needs /usr/bin/promtool")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    """Return every rule of deploy/prometheus/alerts.yml."""
    groups = load_yaml(PROM_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the dashboard's panels that show data (rows left out)."""
    return [p for p in board["panels"] if p["type"] != "row"]


def dashboard_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title and refId, expression) of every panel target."""
    return [
        (f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels(board) for t in p["targets"]
    ]


def catalog_names() -> set[str]:
    """Return the metric names of docs/metrics.md (the first column of its tables)."""
    return set(re.findall(r"^\| `(tradebot_\w+)` \|", CATALOG.read_text(), flags=re.M))


def metric_names(expr: str) -> set[str]:
    """Return the tradebot_ metric names an expression uses (histogram suffixes removed)."""
    names = set(re.findall(r"\btradebot_\w+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


# --- promtool: rules, config, and unit tests of the alerts ----------------------------------


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(PROM_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROM_DIR / name, tmp_path / name)
    out = subprocess.run(
        [str(PROMTOOL), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout, out.stdout


def test_prometheus_config_scrapes_every_service_by_dns() -> None:
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    assert set(JOBS) <= set(jobs)
    for name in JOBS:
        assert jobs[name]["dns_sd_configs"] == [
            {"names": JOB_NAMES[name], "type": "A", "port": 9100}
        ], name


def test_alert_rules_have_duration_severity_and_text() -> None:
    found = set()
    for rule in rules():
        name = rule["alert"]
        found.add(name)
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no for:"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"]) > 40, name
        unknown = metric_names(rule["expr"]) - catalog_names()
        assert not unknown, f"{name} uses names not in docs/metrics.md: {unknown}"
    assert found == ALERTS


def _promtool_tests() -> dict[str, Any]:
    """Return promtool unit tests of the alert rules (synthetic series, 15 s apart)."""
    inst = "10.0.0.{}:9100".format
    up_all = [
        {"series": f'up{{job="{job}", instance="{inst(k)}"}}', "values": "1x40"}
        for k, job in enumerate(JOBS)
    ]

    def expect(
        at: str, alert: str, *labels: dict[str, str], severity: str = "critical"
    ) -> dict[str, Any]:
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [{"exp_labels": {"severity": severity} | lab} for lab in labels],
        }

    def lease(service: str, job: str, instance: str) -> str:
        return f'tradebot_lease_held{{service="{service}", job="{job}", instance="{instance}"}}'

    def state_lease(instance: str) -> str:
        return lease("state", "state", instance)

    def lag(stream: str, group: str) -> str:
        return f'tradebot_stream_group_lag{{stream="{stream}", group="{group}"}}'

    def without_stop(instance: str) -> str:
        return f'tradebot_positions_without_stop{{job="state", instance="{instance}"}}'

    return {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {  # an executor copy dies at 30 s; no state process at all
                "interval": "15s",
                "input_series": [
                    *up_all[:2],
                    {"series": f'up{{job="executor", instance="{inst(5)}"}}', "values": "1x40"},
                    {"series": f'up{{job="executor", instance="{inst(6)}"}}', "values": "1 1 0x40"},
                ],
                "alert_rule_test": [
                    expect("1m", "TradebotServiceDown"),  # pending for 30 s
                    expect("2m", "TradebotServiceDown", {"job": "executor", "instance": inst(6)}),
                    expect("1m", "TradebotServiceMissing"),
                    expect("3m", "TradebotServiceMissing", {"job": "state"}),
                ],
            },
            {  # executor's holder is gone, its standby waits; market_data has two holders
                "interval": "15s",
                "input_series": [
                    *up_all,
                    {"series": lease("executor", "executor", inst(1)), "values": "1 1 stale"},
                    {"series": lease("executor", "executor", inst(2)), "values": "0x40"},
                    {"series": lease("state", "state", inst(3)), "values": "1x40"},
                    {"series": lease("market_data", "market-data", inst(4)), "values": "1x40"},
                    {"series": lease("market_data", "market-data", inst(5)), "values": "0 0 1x40"},
                ],
                "alert_rule_test": [
                    expect("30s", "TradebotNoLeaseHolder"),
                    expect("2m", "TradebotNoLeaseHolder", {"service": "executor"}),
                    expect("2m", "TradebotSeveralLeaseHolders", {"service": "market_data"}),
                ],
            },
            {  # only the lease holder's positions_without_stop counts, and only if it lasts
                "interval": "15s",
                "input_series": [
                    {"series": state_lease(inst(1)), "values": "1x40"},
                    {"series": state_lease(inst(2)), "values": "0x40"},
                    {"series": without_stop(inst(1)), "values": "0 0 1x40"},
                    {"series": without_stop(inst(2)), "values": "7x40"},  # a standby's stale
                ],
                "alert_rule_test": [
                    expect("1m", "TradebotPositionWithoutStop"),
                    expect("4m", "TradebotPositionWithoutStop", {}),
                ],
            },
            {  # the standby shows a stale count, the holder has every stop
                "interval": "15s",
                "input_series": [
                    {"series": state_lease(inst(1)), "values": "1x40"},
                    {"series": state_lease(inst(2)), "values": "0x40"},
                    {"series": without_stop(inst(1)), "values": "0x40"},
                    {"series": without_stop(inst(2)), "values": "3x40"},
                ],
                "alert_rule_test": [expect("5m", "TradebotPositionWithoutStop")],
            },
            {  # heartbeat of state stops at 60 s; signals keeps beating
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'tradebot_heartbeat_timestamp_seconds{service="state"}',
                        "values": "0+15x4 60x40",
                    },
                    {
                        "series": 'tradebot_heartbeat_timestamp_seconds{service="signals"}',
                        "values": "0+15x40",
                    },
                ],
                "alert_rule_test": [
                    expect("2m", "TradebotHeartbeatStale"),
                    expect("3m30s", "TradebotHeartbeatStale", {"service": "state"}),
                ],
            },
            {  # a dead letter, a correction; a growing lag and a high but steady one
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'tradebot_stream_length{stream="tb:dlq", instance="a"}',
                        "values": "0 0 1x80",
                    },
                    {  # a series that existed before its correction
                        "series": 'tradebot_reconcile_corrections_total{kind="adopted"}',
                        "values": "0 0 1x80",
                    },
                    {  # a series that appears with its first correction
                        "series": 'tradebot_reconcile_corrections_total{kind="stop_missing"}',
                        "values": "_x20 1x60",
                    },
                    {"series": lag("tb:signals", "executor"), "values": "0+20x80"},
                    {"series": lag("tb:md.ticks", "state"), "values": "500x80"},
                ],
                "alert_rule_test": [
                    expect("1m", "TradebotDeadLetters", {"stream": "tb:dlq"}, severity="warning"),
                    expect("15m", "TradebotDeadLetters", severity="warning"),
                    expect(
                        "1m",
                        "TradebotReconcileCorrections",
                        {"kind": "adopted"},
                        severity="warning",
                    ),
                    expect(
                        "6m",
                        "TradebotReconcileCorrections",
                        {"kind": "adopted"},
                        {"kind": "stop_missing"},
                        severity="warning",
                    ),
                    expect("22m", "TradebotReconcileCorrections", severity="warning"),
                    expect("5m", "TradebotStreamLagGrowing", severity="warning"),
                    expect(
                        "15m",
                        "TradebotStreamLagGrowing",
                        {"stream": "tb:signals", "group": "executor"},
                        severity="warning",
                    ),
                ],
            },
            {  # executor: 20% of requests fail; market-data: only expected not_found answers
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'tradebot_exchange_requests_total{job="executor", call="x"}',
                        "values": "0+10x60",
                    },
                    {
                        "series": 'tradebot_exchange_errors_total{job="executor", call="x",'
                        ' kind="unavailable"}',
                        "values": "0+2x60",
                    },
                    {
                        "series": 'tradebot_exchange_requests_total{job="market-data", call="y"}',
                        "values": "0+10x60",
                    },
                    {
                        "series": 'tradebot_exchange_errors_total{job="market-data", call="y",'
                        ' kind="not_found"}',
                        "values": "0+9x60",
                    },
                ],
                "alert_rule_test": [
                    expect("4m", "TradebotExchangeErrorRate", severity="warning"),
                    expect(
                        "11m",
                        "TradebotExchangeErrorRate",
                        {"job": "executor"},
                        severity="warning",
                    ),
                ],
            },
        ],
    }


@needs_promtool
def test_alert_rules_fire_on_synthetic_series(tmp_path: Path) -> None:
    # The rules without annotations: promtool compares annotations too, and their text is
    # checked above; here only when each alert fires and with which labels.
    alerts = load_yaml(PROM_DIR / "alerts.yml")
    for group in alerts["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(alerts))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(_promtool_tests(), sort_keys=False))
    out = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_json_is_the_generator_output() -> None:
    assert DASHBOARD.read_text() == build_dashboard.render(), (
        "deploy/grafana/dashboards/tradebot.json is not the generator's output:"
        " run python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_has_the_panels_and_variables() -> None:
    board = dashboard_json()
    shown = panels(board)
    assert {p["title"] for p in shown} == PANELS
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for p in shown:
        assert len(p.get("description", "")) > 30, f"{p['title']}: no description"
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs, p["title"]
        assert len(set(refs)) == len(refs), p["title"]
        for t in p["targets"]:
            unknown = metric_names(t["expr"]) - catalog_names()
            assert not unknown, f"{p['title']} uses names not in docs/metrics.md: {unknown}"
            assert "tradebot_" in t["expr"] or t["expr"].startswith("up{"), t["expr"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"service", "symbol"}
    assert variables["service"]["query"] == "label_values(tradebot_service_up, job)"
    assert variables["symbol"]["query"] == "label_values(tradebot_candles_ingested_total, symbol)"
    exprs = [e for _, e in dashboard_exprs(board)]
    assert sum('job=~"$service"' in e for e in exprs) >= 8
    assert sum('symbol=~"$symbol"' in e for e in exprs) >= 4
    latency = next(p for p in shown if p["title"] == "Exchange latency")
    assert all(
        "histogram_quantile" in t["expr"]
        and "tradebot_exchange_request_duration_seconds_bucket" in t["expr"]
        for t in latency["targets"]
    )


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for p in dashboard_json()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


def test_dashboard_reads_back_into_the_sdk_model() -> None:
    # The SDK's own model classes take the JSON and give the same JSON back.
    from grafana_foundation_sdk.models.dashboard import Dashboard

    board = dashboard_json()
    again = json.loads(json.dumps(Dashboard.from_json(board).to_json(), cls=_Encoder))
    assert again == board


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        to_json = getattr(o, "to_json", None)
        return to_json() if callable(to_json) else super().default(o)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    sources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["uid"] == panels(dashboard_json())[0]["datasource"]["uid"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "tradebot.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- the slow test: a real stack, a real Prometheus ------------------------------------------

# Test processes (Stack names) behind each job's DNS names.
LOCAL_PROCESSES = {
    "market-data": ["market_data"],
    "signals": ["signals-1", "signals-2"],
    "executor": ["executor", "executor-standby"],
    "state": ["state"],
}
RATE_INTERVAL = "15s"  # what Grafana would make $__rate_interval at a 1 s scrape interval
NOT_FINITE = {"NaN", "+Inf", "-Inf"}


class Prometheus:
    """Debian's Prometheus as a subprocess on a free port, with its HTTP API."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, config: dict[str, Any], alert_rules: dict[str, Any]) -> None:
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        (self.dir / "alerts.yml").write_text(yaml.safe_dump(alert_rules, sort_keys=False))
        with (self.dir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={self.dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.dir / 'tsdb'}",
                    f"--web.listen-address={self.address}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait(self.ready, 30, "Prometheus to be ready", self.log)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def get(self, path: str, **params: str | float) -> Any:
        """GET an API path; return the decoded JSON (errors answered as JSON included)."""
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query, the body says why
            with e:
                return json.loads(e.read())

    def query(self, expr: str) -> Any:
        return self.get("/api/v1/query", query=expr)

    def query_range(self, expr: str, start: float, end: float) -> Any:
        return self.get("/api/v1/query_range", query=expr, start=start, end=end, step=1)

    def value(self, expr: str) -> float:
        """Return the single value of an instant query (NaN when it has no result)."""
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else math.nan

    def firing(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    server = Prometheus(prom_dir)
    try:
        yield server
    finally:
        server.stop()


def local_config(targets: dict[str, list[str]], self_address: str) -> dict[str, Any]:
    """Return deploy/prometheus/prometheus.yml for local processes.

    Same jobs and rule file; each job's Docker DNS discovery replaced by the local
    processes' addresses; 1 s scrape and evaluation intervals.
    """
    config: dict[str, Any] = load_yaml(PROM_DIR / "prometheus.yml")
    targets = copy.deepcopy(targets)
    config["global"] |= {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if "dns_sd_configs" in job:
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": targets.pop(name)}]
        elif name == "prometheus":
            job["static_configs"] = [{"targets": [self_address]}]
    assert not targets, f"jobs missing from prometheus.yml: {sorted(targets)}"
    return config


def local_rules() -> dict[str, Any]:
    """Return deploy/prometheus/alerts.yml with every ``for:`` shortened to 1 s."""
    alert_rules: dict[str, Any] = load_yaml(PROM_DIR / "alerts.yml")
    for group in alert_rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    return alert_rules


def substitute(expr: str, service: str, symbol: str, range_s: int) -> str:
    """Return a dashboard expression as Grafana sends it, for these variable values."""
    return (
        expr.replace("$service", service)
        .replace("$symbol", symbol)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "1s")
        .replace("$__range", f"{range_s}s")
    )


def has_data(answer: Any) -> bool:
    """Return whether a query_range answer has a series with a finite value."""
    if answer.get("status") != "success":
        return False
    return any(
        v[1] not in NOT_FINITE for series in answer["data"]["result"] for v in series["values"]
    )


def open_outside_position(stack: Stack) -> str:
    """Open a small position on the exchange behind the bot's back; return its symbol.

    State's next reconciliation adopts it (a real book correction) and asks for its stop.
    """
    raw = stack.redis.get(keys.UNIVERSE)
    assert raw is not None, "no universe yet"
    held = {p.symbol for p in stack.positions().values()}
    symbol = next(s for s in Universe.load(raw).symbols if s not in held)

    async def buy() -> None:
        ex = make_sim_client(
            f"http://127.0.0.1:{stack.sim_port}",
            stack.env["TB_API_KEY"],
            stack.env["TB_API_SECRET"],
        )
        try:
            await ex.load_markets()
            price = (await ex.fetch_ticker(symbol))["last"]
            qty = float(ex.amount_to_precision(symbol, 50 / price))
            await ex.create_order(symbol, "market", "buy", qty)
        finally:
            await ex.close()

    asyncio.run(buy())
    return symbol


def wait(check: Callable[[], Any], timeout: float, what: str, details: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``details()`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{details()}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.skipif(not PROMETHEUS.exists(), reason="needs /usr/bin/prometheus")
def test_dashboard_and_alerts_against_a_running_stack(stack: Stack, prometheus: Prometheus) -> None:
    ports = {name: free_port() for names in LOCAL_PROCESSES.values() for name in names}
    targets = {
        job: [f"127.0.0.1:{ports[name]}" for name in names]
        for job, names in LOCAL_PROCESSES.items()
    }
    t0 = time.time()
    prometheus.start(local_config(targets, prometheus.address), local_rules())
    stack.start_sim("--speed", "300", "--seed", "42")
    for name in ("market_data", "executor", "state", "signals-1", "signals-2"):
        service = name.split("-")[0]
        stack.start(service, name, TB_METRICS_PORT=str(ports[name]))
    # The standby starts once the first executor holds the lease, so the roles are known.
    stack.wait_for(lambda: stack.active_pids("executor"), 30, "an active executor")
    stack.start("executor", "executor-standby", TB_METRICS_PORT=str(ports["executor-standby"]))
    # A malformed message: the signals workers dead-letter it (the DLQ panels and alert).
    stack.redis.xadd(keys.STREAM_CANDLES, {"d": b"not a message"})

    def details() -> str:
        return f"--- prometheus\n{prometheus.log()}\n{stack.log_tails()}"

    trade = stack.wait_for(lambda: stack.trades(), 150, "a closed trade")[0]
    # Book corrections and exchange errors, made for real: a position opened behind the
    # bot's back (adopted at the next reconciliation), then server errors from the exchange
    # until some requests have failed and been retried.
    open_outside_position(stack)
    stack.sim_post("/_sim/faults", {"rates": {"http5xx": 0.2}, "seed": 1})
    try:
        wait(
            lambda: (
                prometheus.value('sum(tradebot_exchange_errors_total{kind!~"not_found|no_change"})')
                > 0
                and prometheus.value("sum(tradebot_exchange_retries_total)") > 0
            ),
            60,
            "failed and retried exchange requests in Prometheus",
            details,
        )
    finally:
        stack.sim_post("/_sim/faults", {"rates": {}})
    wait(
        lambda: prometheus.value("sum(tradebot_reconcile_corrections_total)") > 0,
        60,
        "a reconciliation correction in Prometheus",
        details,
    )

    board = dashboard_json()
    queries = dashboard_exprs(board)
    all_services = "(" + "|".join(JOBS) + ")"

    def missing() -> list[str]:
        """Return the panel queries with no data yet.

        Each must have data with every service selected (Grafana's default, All) and the
        traded symbol; one that filters on the service must also have data for one service.
        """
        end = time.time()

        def data(expr: str, service: str) -> bool:
            query = substitute(expr, service, trade.symbol, int(end - t0))
            return has_data(prometheus.query_range(query, t0, end))

        return [
            where
            for where, expr in queries
            if not data(expr, all_services)
            or ("$service" in expr and not any(data(expr, job) for job in JOBS))
        ]

    left: list[str] = []

    def all_have_data() -> bool:
        left[:] = missing()
        return not left

    wait(all_have_data, 60, "data in every panel", lambda: f"no data: {left}\n{details()}")

    # Every query is valid PromQL for every value of the variables, and so is every rule.
    range_s = int(time.time() - t0)
    for where, expr in queries:
        for service in (*JOBS, all_services):
            for symbol in (trade.symbol, ".*"):
                answer = prometheus.query(substitute(expr, service, symbol, range_s))
                assert answer["status"] == "success", f"{where}: {answer}"
    for rule in rules():
        answer = prometheus.query(rule["expr"])
        assert answer["status"] == "success", f"{rule['alert']}: {answer}"
    evaluated = prometheus.get("/api/v1/rules")["data"]["groups"]
    for group in evaluated:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule

    # The variables' label_values() queries list the jobs and the traded symbol.
    jobs = prometheus.get("/api/v1/label/job/values", **{"match[]": "tradebot_service_up"})
    assert set(jobs["data"]) == set(JOBS)
    symbols = prometheus.get(
        "/api/v1/label/symbol/values", **{"match[]": "tradebot_candles_ingested_total"}
    )
    assert trade.symbol in symbols["data"]

    # A dead signals worker fires TradebotServiceDown for its instance; the dead letter and
    # the adoption fire theirs.
    stack.kill("signals-2")
    dead = {"alertname": "TradebotServiceDown", "job": "signals", "instance": targets["signals"][1]}

    def fired() -> set[str]:
        names = {a["labels"]["alertname"] for a in prometheus.firing()}
        down = any(dead.items() <= a["labels"].items() for a in prometheus.firing())
        return names if down else set()

    names = wait(fired, 60, "TradebotServiceDown for the killed worker", details)
    assert {"TradebotDeadLetters", "TradebotReconcileCorrections"} <= names, names
    # The dashboard's annotation query shows them.
    annotation = board["annotations"]["list"][0]["expr"]
    assert prometheus.query(annotation)["data"]["result"], annotation

    # The active executor dies: the standby's lease gauge goes to 1 (Lease holders panel).
    stack.kill("executor")
    standby = targets["executor"][1]
    wait(
        lambda: prometheus.value(f'tradebot_lease_held{{instance="{standby}"}}') == 1,
        60,
        "the standby executor to hold the lease",
        details,
    )
