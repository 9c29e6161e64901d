"""The market interface the exchange needs, and a scripted feed that plays given price paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class Kline(NamedTuple):
    """One candle as the exchange serves it (times in ms, volume in base units)."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Ticker24h(NamedTuple):
    """Rolling 24-hour statistics of one symbol."""

    open: float
    high: float
    low: float
    last: float
    volume: float
    quote_volume: float
    open_time: int
    close_time: int


class MarketFeed(Protocol):
    """What the simulated exchange reads from its market: a clock, prices, candles, steps."""

    def symbols(self) -> list[str]:
        """Return the exchange symbols (e.g. ``BTCUSDT``) the market quotes."""
        ...

    def now_ms(self) -> int:
        """Return the simulated clock in ms since the epoch."""
        ...

    def price(self, symbol: str) -> float:
        """Return the symbol's latest price."""
        ...

    def klines(
        self, symbol: str, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[Kline]:
        """Return candles (closed and the forming one) by open time, oldest first."""
        ...

    def ticker_24h(self, symbol: str) -> Ticker24h:
        """Return the symbol's statistics over the 24 hours before now."""
        ...

    def step(self) -> list[tuple[str, float]]:
        """Advance by one price event; return the (symbol, price) events it produced."""
        ...

    def advance_to(self, ms: int) -> list[tuple[str, float]]:
        """Advance the clock to ms (never back); return the events played, in time order."""
        ...


@dataclass
class ScriptedFeed:
    """A market whose prices follow paths set by a test; each step plays one price per symbol.

    Time advances by ``step_ms`` per step. Candles are built from the played prices, with
    ``volume_per_event`` base units each, so klines and tickers are consistent with the path.
    """

    start_prices: dict[str, float]
    start_ms: int = 1_700_000_000_000
    step_ms: int = 75_000
    volume_per_event: float = 10.0
    _now: int = 0
    _prices: dict[str, float] = field(default_factory=dict)
    _paths: dict[str, list[float]] = field(default_factory=dict)
    _events: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._now = self.start_ms
        self._prices = dict(self.start_prices)
        self._events = {s: [(self._now, p)] for s, p in self._prices.items()}

    def set_path(self, symbol: str, prices: list[float]) -> None:
        """Queue prices the symbol plays on the next steps (one per step)."""
        self._paths[symbol] = list(prices)

    def symbols(self) -> list[str]:
        """Return the quoted symbols."""
        return sorted(self._prices)

    def now_ms(self) -> int:
        """Return the scripted clock."""
        return self._now

    def price(self, symbol: str) -> float:
        """Return the latest price."""
        return self._prices[symbol]

    def step(self) -> list[tuple[str, float]]:
        """Advance the clock; play the next queued price of every symbol that has one."""
        self._now += self.step_ms
        events: list[tuple[str, float]] = []
        for symbol in sorted(self._paths):
            path = self._paths[symbol]
            if path:
                price = path.pop(0)
                self._prices[symbol] = price
                self._events[symbol].append((self._now, price))
                events.append((symbol, price))
        return events

    def advance_to(self, ms: int) -> list[tuple[str, float]]:
        """Step while a whole step fits before ms."""
        events: list[tuple[str, float]] = []
        while self._now + self.step_ms <= ms:
            events.extend(self.step())
        return events

    def klines(
        self, symbol: str, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[Kline]:
        """Bucket the played prices into candles of ``interval_ms``."""
        buckets: dict[int, list[float]] = {}
        for t, p in self._events[symbol]:
            buckets.setdefault(t - t % interval_ms, []).append(p)
        out = [
            Kline(t, ps[0], max(ps), min(ps), ps[-1], self.volume_per_event * len(ps))
            for t, ps in sorted(buckets.items())
            if (start_ms is None or t >= start_ms) and (end_ms is None or t <= end_ms)
        ]
        return out[:limit] if start_ms is not None else out[-limit:]

    def ticker_24h(self, symbol: str) -> Ticker24h:
        """Summarise the prices played in the last 24 hours."""
        since = self._now - 86_400_000
        ps = [p for t, p in self._events[symbol] if t > since] or [self._prices[symbol]]
        vol = self.volume_per_event * len(ps)
        return Ticker24h(
            ps[0], max(ps), min(ps), ps[-1], vol, vol * sum(ps) / len(ps), since, self._now
        )
