"""Risk checks of an entry, and the docs/strategy.md order of entries within one candle close.

Pure: the caller reads the book, the universe, the markets and the balance and passes them
in; ``check_entry`` returns the quantity to buy or the reason not to. The checks run in a
fixed order, so a refusal always names the first rule that failed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from services.signals.sizing import MarketLimits, position_quantity
from shared.config import Settings
from shared.schemas import EntrySignal


@dataclass(frozen=True, slots=True)
class EntryContext:
    """What the executor knows when it decides on an entry."""

    now_ms: int  # exchange time
    halted: bool
    occupied: Collection[str]  # symbols with a position or an entry in flight
    universe: Collection[str] | None  # None before market_data chose one
    limits: MarketLimits | None  # None: the exchange does not list the symbol
    equity: float
    free_margin: float


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """Either a quantity to buy or sell, or the reason the entry is refused."""

    quantity: float = 0.0
    refused: str | None = None  # a metric label: stale, halted, unknown_symbol, ...
    detail: str = ""


# A signal's candle closed by the exchange's clock before market_data published it; this much
# disagreement between two readings of that clock (two Binance servers) is still accepted.
CLOSE_SLACK_MS = 1_000


def close_time_ms(signal: EntrySignal, timeframe_ms: int) -> int:
    """Return the close time of the signal's candle."""
    return signal.candle_open_time + timeframe_ms


def check_entry(signal: EntrySignal, ctx: EntryContext, s: Settings) -> EntryDecision:
    """Return the size of the entry, or the first rule it breaks."""
    age = ctx.now_ms - close_time_ms(signal, s.timeframe_ms)
    if age < -CLOSE_SLACK_MS:  # no healthy signal: its candle has not closed on the exchange
        return EntryDecision(refused="not_closed", detail=f"candle closes in {-age / 1000:.0f}s")
    if age > s.max_signal_age_ms:
        return EntryDecision(refused="stale", detail=f"candle closed {age / 1000:.0f}s ago")
    if ctx.halted:
        return EntryDecision(refused="halted", detail="trading is halted (tradebot resume)")
    if ctx.limits is None:
        return EntryDecision(refused="unknown_symbol", detail="the exchange lists no such market")
    if ctx.universe is None or signal.symbol not in ctx.universe:
        return EntryDecision(refused="not_in_universe", detail="not in the active universe")
    if signal.symbol in ctx.occupied:
        return EntryDecision(refused="position_open", detail="a position or entry is open")
    if len(ctx.occupied) >= s.max_positions:
        return EntryDecision(
            refused="no_free_slot", detail=f"{len(ctx.occupied)}/{s.max_positions} slots taken"
        )
    qty = position_quantity(
        ctx.equity, signal.price, s.trade_pct, s.max_positions, s.leverage, ctx.limits
    )
    if qty <= 0:
        return EntryDecision(
            refused="too_small", detail=f"equity {ctx.equity:.2f} sizes below the market minimum"
        )
    if ctx.limits.max_amount and qty > ctx.limits.max_amount:  # a signal price far too low
        return EntryDecision(
            refused="too_large",
            detail=f"quantity {qty:g} above the market maximum {ctx.limits.max_amount:g}",
        )
    need = qty * signal.price / s.leverage * (1 + s.fee_rate * s.leverage)
    if need > ctx.free_margin:
        return EntryDecision(
            refused="insufficient_margin",
            detail=f"needs {need:.2f} margin, {ctx.free_margin:.2f} free",
        )
    return EntryDecision(quantity=qty)


def by_priority(signals: Iterable[EntrySignal]) -> list[EntrySignal]:
    """Return one close's entries in slot order: descending vol_ratio, then symbol name."""
    return sorted(signals, key=lambda sig: (-sig.vol_ratio, sig.symbol))
