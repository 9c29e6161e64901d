"""The simulated market: candles per symbol played as price events on a simulated clock.

Event timing. With q = timeframe / 4, candle t (open time t) plays the four price events of
docs/strategy.md (``candle_price_path``: open, low/high or high/low, close) at t + q, t + 2q,
t + 3q and t + 4q = t + timeframe. So the candle is closed (open time + timeframe <= clock)
exactly when its close event has been played, and a bot that sees it closed and sends a
market order has q of simulated time (75 s at 5m) to be filled at that close, as the
backtest assumes, before the next candle's open event.

The whole state is the clock: everything (prices, the forming candle, the 24h ticker) is a
pure function of the data and ``now_ms()``. The forming candle is served once its first event
has been played, as its partial OHLCV so far, with volume accrued as a quarter per event.
The clock starts ``warmup`` candles into the data, so that much closed history exists at once.
Synthetic markets extend their data chunk by chunk as the clock advances; replayed data ends,
and then ``finished`` is True and the clock stops at the last close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from services.exchange_sim.feed import Kline, Ticker24h
from services.signals.path import candle_price_paths
from shared.candles import infer_timeframe_ms, load_candles
from shared.synthetic import (
    BASE_TIMEFRAME_MS,
    DAY_MS,
    SyntheticSeries,
    candles_frame,
)

DEFAULT_WARMUP = 300  # candles of closed history at start: > CANDLE_LIMIT and > 24h at 5m

PriceEvent = tuple[str, float]


def exchange_symbol(name: str) -> str:
    """Return the exchange id of a symbol name: ``BTC/USDT`` or ``BTC/USDT:USDT`` -> ``BTCUSDT``."""
    return name.split(":")[0].replace("/", "")


@dataclass
class _Series:
    """One symbol's candles as growable column arrays, plus its synthetic source if any."""

    ts: npt.NDArray[np.int64]
    ohlcv: npt.NDArray[np.float64]  # shape (n, 5): open, high, low, close, volume
    source: SyntheticSeries | None = None
    paths: npt.NDArray[np.float64] = field(init=False)  # shape (n, 4): the four events

    def __post_init__(self) -> None:
        self.paths = _price_paths(self.ohlcv)

    def extend(self) -> None:
        """Append the next synthetic chunk."""
        assert self.source is not None
        chunk = candles_frame([self.source.next_chunk()])
        more = chunk[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
        self.ts = np.concatenate([self.ts, chunk["timestamp"].to_numpy(np.int64)])
        self.ohlcv = np.concatenate([self.ohlcv, more])
        self.paths = np.concatenate([self.paths, _price_paths(more)])


def _price_paths(ohlcv: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return each candle's four price events, shape (n, 4)."""
    return candle_price_paths(ohlcv[:, 0], ohlcv[:, 1], ohlcv[:, 2], ohlcv[:, 3])


class Market:
    """Play candles per symbol as price events on a simulated clock; pure and synchronous."""

    def __init__(
        self,
        series: Mapping[str, _Series],
        timeframe_ms: int,
        warmup: int = DEFAULT_WARMUP,
    ) -> None:
        """Build from per-symbol series; use ``from_frames``, ``from_files`` or ``synthetic``."""
        if not series:
            raise ValueError("a market needs at least one symbol")
        if timeframe_ms <= 0 or timeframe_ms % 4:
            raise ValueError(f"timeframe_ms must be a positive multiple of 4, got {timeframe_ms}")
        self.timeframe_ms = timeframe_ms
        self._q = timeframe_ms // 4
        self._series = {exchange_symbol(name): s for name, s in series.items()}
        if len(self._series) != len(series):
            raise ValueError(f"symbols name the same market twice: {', '.join(series)}")
        self._alias = {name: exchange_symbol(name) for name in series}
        self._alias.update({s: s for s in self._series})
        for name, s in self._series.items():
            if len(s.ts) == 0:
                raise ValueError(f"{name}: no candles")
            if (s.ts % timeframe_ms).any():
                raise ValueError(f"{name}: candle open times are not aligned to {timeframe_ms} ms")
            if (np.diff(s.ts) <= 0).any():
                raise ValueError(f"{name}: candle open times are not increasing")
        self._synthetic = all(s.source is not None for s in self._series.values())
        self.first_ms = min(int(s.ts[0]) for s in self._series.values())
        last = max(int(s.ts[-1]) for s in self._series.values())
        start = self.first_ms + max(warmup, 0) * timeframe_ms
        if not self._synthetic:
            start = min(start, last)
        self._now = start
        self._ensure(start)

    @classmethod
    def from_frames(
        cls,
        frames: Mapping[str, pd.DataFrame],
        timeframe_ms: int | None = None,
        warmup: int = DEFAULT_WARMUP,
    ) -> Market:
        """Replay OHLCV frames (columns timestamp, open, high, low, close, volume) per symbol."""
        tf = timeframe_ms if timeframe_ms is not None else infer_timeframe_ms(dict(frames))
        series = {
            name: _Series(
                f["timestamp"].to_numpy(np.int64),
                f[["open", "high", "low", "close", "volume"]].to_numpy(np.float64),
            )
            for name, f in frames.items()
        }
        return cls(series, tf, warmup)

    @classmethod
    def from_files(
        cls,
        path: Path | str,
        timeframe_ms: int | None = None,
        warmup: int = DEFAULT_WARMUP,
        symbols: list[str] | None = None,
    ) -> Market:
        """Replay a CSV/Parquet file or folder in the backtest's format (``load_candles``)."""
        frames = load_candles(Path(path), symbols, timeframe_ms=timeframe_ms)
        return cls.from_frames(frames, timeframe_ms, warmup)

    @classmethod
    def synthetic(
        cls,
        n_symbols: int,
        seed: int,
        timeframe_ms: int = BASE_TIMEFRAME_MS,
        start_ms: int | None = None,
        warmup: int = DEFAULT_WARMUP,
    ) -> Market:
        """Play ``generate_candles``' series for n_symbols, extended lazily without end."""
        if n_symbols < 1:
            raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
        series: dict[str, _Series] = {}
        for i in range(n_symbols):
            source = SyntheticSeries(i, seed, timeframe_ms, start_ms)
            first = candles_frame([source.next_chunk()])
            series[source.symbol] = _Series(
                first["timestamp"].to_numpy(np.int64),
                first[["open", "high", "low", "close", "volume"]].to_numpy(np.float64),
                source,
            )
        return cls(series, timeframe_ms, warmup)

    # -- clock ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Return the simulated clock in ms since the epoch."""
        return self._now

    @property
    def finished(self) -> bool:
        """Return True once replayed data has no event left to play (never for synthetic)."""
        return not self._synthetic and self._next_event_ms() is None

    def step(self) -> list[PriceEvent]:
        """Advance the clock to the next price event time; return the events played there."""
        nxt = self._next_event_ms()
        return [] if nxt is None else self.advance_to(nxt)

    def advance_to(self, ms: int) -> list[PriceEvent]:
        """Advance the clock to ms (never back); return the events played, in time order.

        Replay stops at its last close: the clock does not pass it.
        """
        if ms <= self._now:
            return []
        if not self._synthetic:
            ms = min(ms, self._end_ms())
        self._ensure(ms)
        q, now = self._q, self._now
        times: list[npt.NDArray[np.int64]] = []
        order: list[npt.NDArray[np.int64]] = []
        prices: list[npt.NDArray[np.float64]] = []
        for rank, s in enumerate(self._series.values()):
            lo = int(np.searchsorted(s.ts, now - 4 * q, side="right"))
            hi = int(np.searchsorted(s.ts, ms - q, side="right"))
            if hi <= lo:
                continue
            t = s.ts[lo:hi, None] + q * np.arange(1, 5, dtype=np.int64)
            mask = (t > now) & (t <= ms)
            times.append(t[mask])
            prices.append(s.paths[lo:hi][mask])
            order.append(np.full(int(mask.sum()), rank, dtype=np.int64))
        self._now = ms
        if not times:
            return []
        all_t, all_r = np.concatenate(times), np.concatenate(order)
        all_p = np.concatenate(prices)
        idx = np.lexsort((all_r, all_t))
        names = list(self._series)
        return [(names[r], float(p)) for r, p in zip(all_r[idx], all_p[idx], strict=True)]

    def _end_ms(self) -> int:
        """Return the time of the last close event of replayed data."""
        return max(int(s.ts[-1]) for s in self._series.values()) + self.timeframe_ms

    def _next_event_ms(self) -> int | None:
        """Return the first event time after now at which some symbol has a candle, if any."""
        q, tf = self._q, self.timeframe_ms
        e = (self._now // q + 1) * q
        candle = e - q - ((e - q) % tf)
        self._ensure(candle)
        nxt: int | None = None
        for s in self._series.values():
            i = int(np.searchsorted(s.ts, candle, side="left"))
            if i < len(s.ts) and (nxt is None or s.ts[i] < nxt):
                nxt = int(s.ts[i])
        if nxt is None:
            return None
        return e if nxt == candle else nxt + q

    def _ensure(self, ms: int) -> None:
        """Extend synthetic series until each holds the candle open at ms (plus one)."""
        for s in self._series.values():
            while s.source is not None and s.ts[-1] <= ms:
                s.extend()

    # -- market data ---------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Return the exchange symbols (e.g. ``BTCUSDT``), in the order given."""
        return list(self._series)

    def _get(self, symbol: str) -> _Series:
        """Return the series of a symbol given as ``BTCUSDT`` or ``BTC/USDT``."""
        try:
            return self._series[self._alias[symbol]]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol}") from None

    def _begun(self, s: _Series) -> int:
        """Return how many candles of s have played at least one event."""
        return int(np.searchsorted(s.ts, self._now - self._q, side="right"))

    def _played(self, s: _Series, i: int) -> int:
        """Return how many of candle i's four events have been played (0..4)."""
        return int(min(max((self._now - int(s.ts[i])) // self._q, 0), 4))

    def price(self, symbol: str) -> float:
        """Return the latest played price (before any event: the first candle's open)."""
        s = self._get(symbol)
        n = self._begun(s)
        if n == 0:
            return float(s.ohlcv[0, 0])
        return float(s.paths[n - 1, self._played(s, n - 1) - 1])

    def _candle(self, s: _Series, i: int) -> Kline:
        """Return candle i as served now: whole if closed, else partial so far."""
        j = self._played(s, i)
        o, h, lo, c, v = (float(x) for x in s.ohlcv[i])
        if j < 4:
            p = s.paths[i, :j]
            h, lo, c, v = float(p.max()), float(p.min()), float(p[-1]), v * j / 4
        return Kline(int(s.ts[i]), o, h, lo, c, v)

    def klines(
        self,
        symbol: str,
        interval_ms: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Kline]:
        """Return candles by open time, oldest first, the last one possibly still forming.

        As on Binance: with ``start_ms`` the first ``limit`` candles from it, else the last
        ``limit`` up to ``end_ms`` (or now); both bounds are on open time, inclusive. An
        interval that is a multiple of the timeframe (and divides a day) is aggregated from
        it; any other interval is a ValueError.
        """
        tf = self.timeframe_ms
        interval = tf if interval_ms is None else interval_ms
        if interval <= 0 or interval % tf or DAY_MS % interval:
            raise ValueError(f"interval {interval} ms not served (base timeframe {tf} ms)")
        m = interval // tf
        s = self._get(symbol)
        lo, hi = 0, self._begun(s)
        if start_ms is not None:
            start_ms = -(-start_ms // interval) * interval
            lo = int(np.searchsorted(s.ts, start_ms, side="left"))
        if end_ms is not None:
            end_ms = end_ms - end_ms % interval + interval - 1
            hi = min(hi, int(np.searchsorted(s.ts, end_ms, side="right")))
        if limit <= 0 or hi <= lo:
            return []
        if start_ms is not None:
            hi = min(hi, lo + limit * m)
        else:
            lo = max(lo, hi - (limit + 1) * m if m > 1 else hi - limit)
        ts, rows = s.ts[lo:hi], s.ohlcv[lo:hi].copy()
        if self._played(s, hi - 1) < 4:
            rows[-1] = self._candle(s, hi - 1)[1:]
        if m > 1:
            ts, rows = _aggregate(ts, rows, interval)
            ts, rows = (
                (ts[:limit], rows[:limit]) if start_ms is not None else (ts[-limit:], rows[-limit:])
            )
        return [Kline(t, *r) for t, r in zip(ts.tolist(), rows.tolist(), strict=True)]

    def ticker_24h(self, symbol: str) -> Ticker24h:
        """Return statistics of the candles closing in the last 24h, plus the forming one.

        quote_volume is sum(close * volume) per candle (partial close and volume for the
        forming one), as the backtest ranks its universe.
        """
        s = self._get(symbol)
        hi = self._begun(s)
        lo = int(np.searchsorted(s.ts, self._now - DAY_MS - self.timeframe_ms, side="right"))
        if hi <= lo:
            p = self.price(symbol)
            return Ticker24h(p, p, p, p, 0.0, 0.0, self._now - DAY_MS, self._now)
        rows = s.ohlcv[lo:hi].copy()
        last = self._candle(s, hi - 1)
        rows[-1] = (last.open, last.high, last.low, last.close, last.volume)
        return Ticker24h(
            open=float(rows[0, 0]),
            high=float(rows[:, 1].max()),
            low=float(rows[:, 2].min()),
            last=last.close,
            volume=float(rows[:, 4].sum()),
            quote_volume=float((rows[:, 3] * rows[:, 4]).sum()),
            open_time=int(s.ts[lo]),
            close_time=self._now,
        )


def _aggregate(
    ts: npt.NDArray[np.int64], rows: npt.NDArray[np.float64], interval: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Merge consecutive candles into candles of ``interval`` ms (open-time buckets)."""
    buckets = ts - ts % interval
    first = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    last = np.r_[first[1:] - 1, len(ts) - 1]
    merged = np.column_stack(
        [
            rows[first, 0],
            np.maximum.reduceat(rows[:, 1], first),
            np.minimum.reduceat(rows[:, 2], first),
            rows[last, 3],
            np.add.reduceat(rows[:, 4], first),
        ]
    )
    return buckets[first], merged
