"""Pure per-symbol failure bookkeeping: a symbol failing closes in a row is skipped a while."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

FAILS_BEFORE_SKIP = 5  # closes in a row a symbol may fail before it is skipped
SKIP_CLOSES = 6  # closes a skipped symbol sits out before it is tried again


@dataclass
class SymbolHealth:
    """Consecutive failed closes of one symbol, and the close before which it is skipped."""

    failures: int = 0
    skip_until: int = 0


@dataclass
class Health:
    """Track candle-fetch failures per symbol so one bad symbol never stalls the others.

    After ``fails_before_skip`` failed closes in a row a symbol sits out ``skip_closes``
    closes, then is tried once; another failure sends it back out, a success clears it.
    """

    fails_before_skip: int = FAILS_BEFORE_SKIP
    skip_closes: int = SKIP_CLOSES
    symbols: dict[str, SymbolHealth] = field(default_factory=dict)

    def skipped(self, symbol: str, close_ms: int) -> bool:
        """Return whether the symbol sits out the close at ``close_ms``."""
        h = self.symbols.get(symbol)
        return h is not None and close_ms < h.skip_until

    def failed(self, symbol: str, close_ms: int, timeframe_ms: int) -> bool:
        """Record a failed close; return whether the symbol is now skipped for a while."""
        h = self.symbols.setdefault(symbol, SymbolHealth())
        h.failures += 1
        if h.failures >= self.fails_before_skip:
            h.skip_until = close_ms + self.skip_closes * timeframe_ms
            return True
        return False

    def succeeded(self, symbol: str) -> None:
        """Record a successful close: the symbol's failure streak ends."""
        self.symbols.pop(symbol, None)

    def skipped_count(self, symbols: Iterable[str], close_ms: int) -> int:
        """Return how many of ``symbols`` sit out the close at ``close_ms``."""
        return sum(1 for s in symbols if self.skipped(s, close_ms))
