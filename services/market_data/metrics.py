"""market_data's own metrics, until they move to ``shared.metrics`` (the one catalog)."""

from __future__ import annotations

from prometheus_client import Counter

# call: server_time, markets, tickers, quote_volumes, ohlcv. kind: unreadable (the answer
# could not be read at all: HTML, wrong shape), empty (no markets listed), bad_value
# (a candle or price with invalid values), bad_time (an open time off the grid), duplicate,
# out_of_order, missing (a candle or ticker the answer should hold).
BAD_DATA = Counter(
    "tradebot_md_bad_data",
    "Exchange answers, candles and prices market_data refused or repaired, by call and kind",
    ["call", "kind"],
)
