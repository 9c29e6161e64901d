"""Seeded synthetic OHLCV for USDT perpetuals: regimes, volume levels and bursts, vectorized.

Model (per symbol, per candle; parameters are tuned for 5m and scaled to other timeframes):

- A regime chain of ranging / trending / volatile segments with geometric durations.
  Trending segments add a drift of TREND_DRIFT * sigma per candle in one direction.
- Log return r = drift + s * z + burst, with s = sigma * regime vol multiplier, z ~ N(0, 1).
  A burst (probability BURST_RATE per candle, scaled by the regime) adds a move of
  U(3, 7) * s and multiplies the candle's volume by U(2.5, 7).
- Quote volume = symbol daily level * exp(OU level + intraday season + coupling * |z| + noise)
  * burst factor; base volume = quote volume / close. The slow OU level moves each
  symbol's 24h quote volume by roughly x/÷1.4, so a top-N ranking by it rotates.
- Open is the previous close; wicks extend high/low beyond the body by s * WICK * |N(0, 1)|.

Each symbol's series is produced in chunks of CHUNK_DAYS days; chunk k of symbol i draws from
an RNG seeded by (seed, i, k) and continues from the previous chunk's state, so the series is
the same whatever the number of symbols or days requested, and can be extended without end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DAY_MS = 86_400_000
BASE_TIMEFRAME_MS = 300_000
DEFAULT_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
CHUNK_DAYS = 7
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")

# (ticker, start price, 5m log-return sigma, mean daily quote volume in USDT)
SYMBOL_TABLE: tuple[tuple[str, float, float, float], ...] = (
    ("BTC", 95_000.0, 0.0022, 12e9),
    ("ETH", 3_300.0, 0.0027, 7e9),
    ("SOL", 190.0, 0.0036, 2.5e9),
    ("XRP", 2.3, 0.0036, 2.0e9),
    ("DOGE", 0.33, 0.0042, 1.5e9),
    ("1000PEPE", 0.019, 0.0060, 1.0e9),
    ("SUI", 4.2, 0.0052, 0.9e9),
    ("BNB", 690.0, 0.0026, 0.8e9),
    ("ADA", 0.95, 0.0040, 0.7e9),
    ("LINK", 23.0, 0.0042, 0.6e9),
    ("AVAX", 38.0, 0.0044, 0.55e9),
    ("WIF", 2.8, 0.0066, 0.5e9),
    ("LTC", 105.0, 0.0034, 0.45e9),
    ("DOT", 7.5, 0.0040, 0.35e9),
    ("NEAR", 5.4, 0.0046, 0.32e9),
    ("TRX", 0.26, 0.0024, 0.3e9),
    ("ARB", 0.85, 0.0048, 0.3e9),
    ("OP", 2.1, 0.0048, 0.28e9),
    ("APT", 9.8, 0.0046, 0.25e9),
    ("TIA", 6.5, 0.0058, 0.22e9),
    ("FIL", 5.6, 0.0044, 0.2e9),
    ("INJ", 24.0, 0.0056, 0.2e9),
    ("SEI", 0.48, 0.0060, 0.2e9),
    ("ATOM", 6.9, 0.0040, 0.18e9),
)

# Regimes: ranging, trending, volatile.
REGIME_WEIGHTS = np.array([0.45, 0.35, 0.20])
REGIME_HOURS = np.array([10.0, 5.0, 2.0])  # mean segment duration
REGIME_VOL = np.array([0.8, 1.0, 1.8])
REGIME_BURST = np.array([0.5, 1.0, 2.5])
TREND_DRIFT = 0.15  # trending drift per candle, in units of sigma
BURST_RATE = 2.0 / 288  # bursts per 5m candle before the regime multiplier
BURST_SIZE = (3.0, 7.0)
BURST_VOLUME = (3.0, 8.0)
WICK = 0.8
VOLUME_COUPLING = 0.35
VOLUME_NOISE = 0.3
LEVEL_STD = 0.35  # stationary std of the slow log-volume level
LEVEL_HOURS = 48.0  # its mean-reversion time
SEASON_AMPLITUDE = 0.25  # intraday log-volume swing, peak at 14:00 UTC
TREND_PULL = 0.5  # bias of a new trend's direction back toward the start price


@dataclass(frozen=True)
class SymbolSpec:
    """Static parameters of one synthetic perpetual."""

    symbol: str
    start_price: float
    sigma: float
    daily_quote_volume: float


@dataclass(frozen=True)
class CandleArrays:
    """A run of consecutive candles as column arrays."""

    timestamp: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64


def symbol_spec(index: int) -> SymbolSpec:
    """Return the spec of the index-th symbol; beyond the table, derive one from the index."""
    if index < 0:
        raise ValueError(f"symbol index must be >= 0, got {index}")
    if index < len(SYMBOL_TABLE):
        base, price, sigma, volume = SYMBOL_TABLE[index]
        return SymbolSpec(f"{base}/USDT", price, sigma, volume)
    rng = np.random.default_rng([0x5EED, index])
    return SymbolSpec(
        f"SYN{index:02d}/USDT",
        float(10 ** rng.uniform(-1.5, 2.5)),
        float(rng.uniform(0.0035, 0.0060)),
        float(10 ** rng.uniform(8.0, 8.6)),
    )


def symbol_names(n_symbols: int) -> list[str]:
    """Return the names of the first n_symbols synthetic symbols."""
    return [symbol_spec(i).symbol for i in range(n_symbols)]


class SyntheticSeries:
    """Produce one symbol's candles chunk after chunk, deterministically from (seed, index)."""

    def __init__(
        self,
        index: int,
        seed: int,
        timeframe_ms: int = BASE_TIMEFRAME_MS,
        start_ms: int | None = None,
    ) -> None:
        """Set up the series at its first candle; no candles are generated yet."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if timeframe_ms <= 0 or DAY_MS % timeframe_ms:
            raise ValueError(f"timeframe_ms must divide one day, got {timeframe_ms}")
        start = DEFAULT_START_MS if start_ms is None else start_ms
        if start % timeframe_ms:
            raise ValueError(f"start_ms {start} is not aligned to the timeframe {timeframe_ms}")
        self.spec = symbol_spec(index)
        self.index = index
        self.seed = seed
        self.timeframe_ms = timeframe_ms
        self.chunk_candles = CHUNK_DAYS * DAY_MS // timeframe_ms
        self._scale = timeframe_ms / BASE_TIMEFRAME_MS
        self._next_ts = start
        self._chunk = 0
        self._log_price = math.log(self.spec.start_price)
        self._level = 0.0
        self._regime = 0
        self._regime_left = 0
        self._trend_sign = 0

    @property
    def symbol(self) -> str:
        """Return the symbol name, e.g. BTC/USDT."""
        return self.spec.symbol

    def next_chunk(self) -> CandleArrays:
        """Generate the next CHUNK_DAYS days of candles and advance the state."""
        rng = np.random.default_rng([self.seed, self.index, self._chunk])
        m = self.chunk_candles
        regime, sign = self._regimes(rng, m)
        sigma = self.spec.sigma * math.sqrt(self._scale)
        s = sigma * REGIME_VOL[regime]

        z = rng.standard_normal(m)
        burst = rng.random(m) < np.minimum(BURST_RATE * self._scale * REGIME_BURST[regime], 0.5)
        random_sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        with_trend = (sign != 0) & (rng.random(m) < 0.7)
        burst_sign = np.where(with_trend, sign, random_sign)
        burst_move = burst * burst_sign * rng.uniform(*BURST_SIZE, m) * s
        r = TREND_DRIFT * sigma * sign + s * z + burst_move

        log_close = self._log_price + np.cumsum(r)
        log_open = np.empty(m)
        log_open[0] = self._log_price
        log_open[1:] = log_close[:-1]
        wick_hi = s * WICK * np.abs(rng.standard_normal(m))
        wick_lo = s * WICK * np.abs(rng.standard_normal(m))
        open_ = np.exp(log_open)
        close = np.exp(log_close)
        high = np.maximum(
            np.exp(np.maximum(log_open, log_close) + wick_hi), np.maximum(open_, close)
        )
        low = np.minimum(
            np.exp(np.minimum(log_open, log_close) - wick_lo), np.minimum(open_, close)
        )

        ts = self._next_ts + np.arange(m, dtype=np.int64) * self.timeframe_ms
        level = self._ou_level(rng, m)
        hour = (ts % DAY_MS) / 3_600_000.0
        season = SEASON_AMPLITUDE * np.cos(2 * np.pi * (hour - 14.0) / 24.0)
        log_quote = (
            level
            + season
            + VOLUME_COUPLING * (np.abs(z) - 0.8)
            + VOLUME_NOISE * rng.standard_normal(m)
            + burst * np.log(rng.uniform(*BURST_VOLUME, m))
        )
        quote_per_candle = self.spec.daily_quote_volume * self.timeframe_ms / DAY_MS
        volume = quote_per_candle * np.exp(log_quote) / close

        self._log_price = float(log_close[-1])
        self._next_ts = int(ts[-1]) + self.timeframe_ms
        self._chunk += 1
        return CandleArrays(ts, open_, high, low, close, volume)

    def _regimes(self, rng: np.random.Generator, m: int) -> tuple[I64, F64]:
        """Return per-candle regime ids and trend signs for the next m candles."""
        regimes: list[int] = []
        signs: list[int] = []
        lengths: list[int] = []
        if self._regime_left > 0:
            regimes.append(self._regime)
            signs.append(self._trend_sign)
            lengths.append(self._regime_left)
        total = sum(lengths)
        pull = -TREND_PULL * (self._log_price - math.log(self.spec.start_price))
        p_up = 1.0 / (1.0 + math.exp(-pull))
        while total < m:
            batch = 16
            reg = rng.choice(3, size=batch, p=REGIME_WEIGHTS)
            mean_candles = REGIME_HOURS[reg] * 3_600_000 / self.timeframe_ms
            dur = rng.geometric(1.0 / np.maximum(mean_candles, 1.0))
            up = rng.random(batch) < p_up
            for g, d, u in zip(reg.tolist(), dur.tolist(), up.tolist(), strict=True):
                regimes.append(g)
                signs.append((1 if u else -1) if g == 1 else 0)
                lengths.append(d)
                total += d
                if total >= m:
                    break
        self._regime = regimes[-1]
        self._trend_sign = signs[-1]
        self._regime_left = total - m
        reg_arr = np.repeat(np.array(regimes, dtype=np.int64), lengths)[:m]
        sign_arr = np.repeat(np.array(signs, dtype=np.float64), lengths)[:m]
        return reg_arr, sign_arr

    def _ou_level(self, rng: np.random.Generator, m: int) -> F64:
        """Return the next m values of the slow log-volume level (an AR(1)), vectorized.

        x[t] = phi * x[t-1] + q * e[t] = phi^(t+1) * (x0 + q * sum_{k<=t} e[k] * phi^-(k+1)).
        """
        tau = max(LEVEL_HOURS * 3_600_000 / self.timeframe_ms, 1.0)
        phi = math.exp(-1.0 / tau)
        q = LEVEL_STD * math.sqrt(1.0 - phi * phi)
        k = np.arange(1, m + 1, dtype=np.float64)
        x: F64 = np.exp(-k / tau) * (
            self._level + q * np.cumsum(rng.standard_normal(m) * np.exp(k / tau))
        )
        self._level = float(x[-1])
        return x


def generate_candles(
    n_symbols: int,
    days: float,
    seed: int,
    timeframe_ms: int = BASE_TIMEFRAME_MS,
    start_ms: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Return {symbol: OHLCV frame} of days of synthetic candles per symbol, deterministic.

    Frames have int64 `timestamp` (candle open time, ms) and float64 open/high/low/close/volume,
    with no gaps. A symbol's frame depends only on (seed, its index, timeframe_ms, start_ms);
    a longer `days` extends it without changing the earlier candles.
    """
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    n_candles = max(1, math.ceil(days * DAY_MS / timeframe_ms))
    out: dict[str, pd.DataFrame] = {}
    for i in range(n_symbols):
        series = SyntheticSeries(i, seed, timeframe_ms, start_ms)
        chunks: list[CandleArrays] = []
        have = 0
        while have < n_candles:
            chunks.append(series.next_chunk())
            have += series.chunk_candles
        out[series.symbol] = candles_frame(chunks, n_candles)
    return out


def candles_frame(chunks: list[CandleArrays], n_candles: int | None = None) -> pd.DataFrame:
    """Concatenate candle chunks into one OHLCV frame, keeping the first n_candles rows."""
    cols = {
        name: np.concatenate([getattr(c, name) for c in chunks])[:n_candles] for name in COLUMNS
    }
    return pd.DataFrame(cols, columns=list(COLUMNS))
