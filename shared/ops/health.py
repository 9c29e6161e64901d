"""``tradebot health``: the container health check of a service or of the simulator.

A service is healthy when its metrics endpoint (127.0.0.1:TB_METRICS_PORT) answers and its
heartbeat, which it writes to Redis every two seconds, is fresh: a process that is alive
but cannot reach Redis, or whose event loop is stuck, fails. A hot standby is healthy too
(it beats while it waits for the lease). The simulator is healthy when its ping answers.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings

HEARTBEAT_METRIC = "tradebot_heartbeat_timestamp_seconds"
MAX_AGE_S = 15.0
TIMEOUT_S = 3.0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        body: bytes = response.read()
        return body.decode()


def service_problem(settings: Settings, now: float | None = None) -> str | None:
    """Return why the service on this host is unhealthy, or None when it is healthy."""
    if not settings.metrics_port:
        return "TB_METRICS_PORT=0: the health check reads the metrics endpoint; enable it"
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    try:
        text = _get(url)
    except (urllib.error.URLError, OSError) as e:
        return f"no metrics at {url}: {getattr(e, 'reason', e)}"
    beats = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == HEARTBEAT_METRIC
        for sample in family.samples
    ]
    if not beats:
        return f"no heartbeat yet ({HEARTBEAT_METRIC} missing at {url})"
    age = (time.time() if now is None else now) - max(beats)
    if age > MAX_AGE_S:
        return f"last heartbeat {age:.0f} s ago (Redis unreachable or the service is stuck)"
    return None


def sim_problem(settings: Settings) -> str | None:
    """Return why the exchange simulator on this host is unhealthy, or None."""
    url = f"http://127.0.0.1:{settings.sim_port}/fapi/v1/ping"
    try:
        _get(url)
    except (urllib.error.URLError, OSError) as e:
        return f"simulator ping {url} failed: {getattr(e, 'reason', e)}"
    return None
