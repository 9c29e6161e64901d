"""Seeded, counted fault injection: which fault (if any) hits the next request.

Kinds: ``http5xx`` (500/502/503/504, plain-text body), ``http429`` and ``http418`` (Binance's
-1003 body), ``timeout`` (held past the client's timeout, then the connection is closed,
nothing executed), ``reset`` (connection closed before executing), ``drop`` (the request is
executed, then the connection is closed before the answer: the outcome-unknown case).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("http5xx", "http429", "http418", "timeout", "reset", "drop")


class FaultConfigError(ValueError):
    """A fault setting is invalid (unknown kind, negative rate, rates summing past 1)."""


@dataclass
class FaultPlan:
    """Per-kind probabilities, added latency and the paths they apply to; draws are seeded."""

    rates: dict[str, float] = field(default_factory=dict)
    latency_ms: int = 0
    timeout_hold_s: float = 2.0
    paths: tuple[str, ...] = ("/fapi/",)
    seed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.configure(self.rates, self.seed)

    def configure(self, rates: dict[str, float], seed: int | None = None) -> None:
        """Validate and set the rates; reseed when a seed is given."""
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise FaultConfigError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise FaultConfigError("fault rates must be >= 0 and sum to at most 1")
        self.rates = {k: float(v) for k, v in rates.items() if v > 0}
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(seed)

    def applies(self, path: str) -> bool:
        """Tell whether faults and latency apply to a request path."""
        return any(path.startswith(p) for p in self.paths)

    def draw(self) -> str | None:
        """Return the fault for the next request (or None), and count it."""
        self.counts["requests"] += 1
        r = self._rng.random()
        acc = 0.0
        for kind in KINDS:
            acc += self.rates.get(kind, 0.0)
            if r < acc:
                self.counts[kind] += 1
                return kind
        return None

    def status_5xx(self) -> int:
        """Return the status of an injected server error (seeded)."""
        return self._rng.choice((500, 502, 503, 504))

    def snapshot(self) -> dict[str, Any]:
        """Return the settings and counters as JSON-able data."""
        return {
            "rates": dict(self.rates),
            "latency_ms": self.latency_ms,
            "timeout_hold_s": self.timeout_hold_s,
            "paths": list(self.paths),
            "seed": self.seed,
            "counts": dict(self.counts),
        }


def parse_rates(spec: str) -> dict[str, float]:
    """Parse ``kind=rate,...`` (e.g. ``http5xx=0.05,drop=0.02``); ``all=R`` splits R evenly."""
    rates: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            raise FaultConfigError(f"bad fault rate {item!r}; expected kind=number") from None
        if kind == "all":
            rates.update(dict.fromkeys(KINDS, rate / len(KINDS)))
        else:
            rates[kind] = rate
    return rates
