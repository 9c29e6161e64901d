"""Build the ccxt exchange object from the settings: simulator, real exchange or testnet.

EXCHANGE=sim: ccxt ``binanceusdm`` with every ``urls['api']`` entry rewritten to
``http://SIM_HOST:SIM_PORT`` (paths kept) and Binance's futures error table made global
(ccxt picks it by URL prefix, which a local URL does not match, so -2019 would otherwise be
a bare ExchangeError). Any other value is a ccxt id. TESTNET=true: Binance futures has no
testnet in ccxt 4.5 any more (``set_sandbox_mode`` raises NotSupported for fapi), so it
switches to demo trading (``enable_demo_trading``: demo-fapi.binance.com); exchanges without
demo URLs use ``set_sandbox_mode``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ccxt.async_support as ccxt

from shared.config import Settings
from shared.exchange_errors import RETRY_AFTER_ATTR, BackoffPolicy, parse_retry_after
from shared.exchange_models import rewrite_api_urls

SIM_EXCHANGE_ID = "binanceusdm"


@dataclass(frozen=True)
class Tuning:
    """Timing knobs of the client; tests shrink them, production keeps the defaults."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    timeout_ms: int = 10_000  # per HTTP request
    recv_window_ms: int = 5_000  # Binance rejects a signed request older than this
    send_attempts: int = 5  # order sends per place_order call
    settle_slack_ms: int = 1_000  # clock error allowance when waiting out a recvWindow
    settle_poll_ms: int = 250
    enable_rate_limit: bool = True  # ccxt's own request throttle

    def __post_init__(self) -> None:
        if self.send_attempts < 1 or min(self.timeout_ms, self.recv_window_ms) <= 0:
            raise ValueError(f"Tuning needs send_attempts >= 1 and positive timeouts, got {self}")
        if self.settle_slack_ms < 0 or self.settle_poll_ms <= 0:
            raise ValueError(
                f"Tuning needs settle_slack_ms >= 0 and settle_poll_ms > 0, got {self}"
            )


def _install_retry_after(ex: Any) -> None:
    """Make ccxt attach the Retry-After header (seconds) to its 418/429 exceptions."""
    original = ex.handle_errors

    def handle_errors(
        code: int, reason: str, url: str, method: str, headers: Any, body: str, *rest: Any
    ) -> Any:
        wait = parse_retry_after(headers) if code in (418, 429) else None
        try:
            result = original(code, reason, url, method, headers, body, *rest)
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as e:
            setattr(e, RETRY_AFTER_ATTR, wait)
            raise
        if code in (418, 429):
            err = ccxt.RateLimitExceeded(f"{ex.id} {code} {reason}")
            setattr(err, RETRY_AFTER_ATTR, wait)
            raise err
        return result

    ex.handle_errors = handle_errors


def create_ccxt(settings: Settings, tuning: Tuning | None = None) -> Any:
    """Build the ccxt exchange the settings name, pointed at the simulator when EXCHANGE=sim."""
    tuning = tuning or Tuning()
    # ccxt logs every request with its headers (the API key) at DEBUG: never let it through.
    logging.getLogger("ccxt").setLevel(max(logging.getLogger("ccxt").level, logging.INFO))
    sim = settings.exchange == "sim"
    exchange_id = SIM_EXCHANGE_ID if sim else settings.exchange
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or exchange_id not in ccxt.exchanges:
        raise ValueError(f"TB_EXCHANGE={settings.exchange}: not 'sim' nor a ccxt exchange id")
    config: dict[str, Any] = {
        "enableRateLimit": tuning.enable_rate_limit,
        "timeout": tuning.timeout_ms,
        "options": {
            "fetchCurrencies": False,  # spot wallet endpoints: not needed, need extra rights
            "adjustForTimeDifference": False,  # ExchangeClient.sync_clock does it explicitly
            "recvWindow": tuning.recv_window_ms,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
    }
    if settings.api_key is not None and settings.api_secret is not None:
        config["apiKey"] = settings.api_key.get_secret_value()
        config["secret"] = settings.api_secret.get_secret_value()
    ex = cls(config)
    if sim:
        ex.urls["api"] = rewrite_api_urls(
            ex.urls["api"], f"http://{settings.sim_host}:{settings.sim_port}"
        )
        # ccxt picks Binance's futures error table by URL prefix (fapi.binance.com); at a
        # local URL it would fall back to the spot table, where -2019 is a bare ExchangeError.
        linear = ex.exceptions.get("linear", {})
        for table in ("exact", "broad"):
            ex.exceptions[table] = {**ex.exceptions.get(table, {}), **linear.get(table, {})}
    elif settings.testnet:
        if "demo" in ex.urls:
            ex.enable_demo_trading(True)  # Binance futures: the testnet became demo trading
        else:
            ex.set_sandbox_mode(True)
    _install_retry_after(ex)
    return ex
