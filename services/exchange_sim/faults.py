"""Seeded, counted fault injection: which fault (if any) hits the next request.

Transport faults (``rates``, every ``/fapi`` request): ``http5xx`` (500/502/503/504,
plain-text body), ``http429`` and ``http418`` (Binance's -1003 body), ``timeout`` (held past
the client's timeout, then the connection is closed, nothing executed), ``reset``
(connection closed before executing), ``drop`` (the request is executed, then the
connection is closed before the answer: the outcome-unknown case).

Garbage (``garbage``, market data answers only: time, exchangeInfo, klines, tickers,
premiumIndex; or only the ``garbage_paths`` given): the answer is served corrupted, see
``services.exchange_sim.garbage``.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("http5xx", "http429", "http418", "timeout", "reset", "drop")
GARBAGE_KINDS = (
    "nan_price",
    "zero_price",
    "negative_price",
    "high_below_low",
    "duplicate",
    "out_of_order",
    "missing",
    "html_200",
    "html_5xx",
)


class FaultConfigError(ValueError):
    """A fault setting is invalid (unknown kind, rate not a number >= 0, rates summing past 1)."""


def checked_rates(rates: Mapping[str, Any], known: Sequence[str], what: str) -> dict[str, float]:
    """Return valid rates (known kinds, finite numbers >= 0, sum <= 1) or raise FaultConfigError."""
    if not isinstance(rates, Mapping):
        raise FaultConfigError(f"{what} must be an object of kind: rate")
    unknown = set(rates) - set(known)
    if unknown:
        raise FaultConfigError(
            f"unknown {what} kind(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}"
        )
    for kind, rate in rates.items():
        number = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not number or not math.isfinite(rate) or rate < 0:
            raise FaultConfigError(f"{what} rate of {kind} must be a number >= 0, not {rate!r}")
    if sum(rates.values()) > 1 + 1e-9:
        raise FaultConfigError(f"{what} rates must sum to at most 1")
    return {k: float(v) for k, v in rates.items() if v > 0}


EVENTS_KEPT = 10_000


@dataclass
class FaultPlan:
    """Per-kind probabilities, added latency and the paths they apply to; draws are seeded."""

    rates: dict[str, float] = field(default_factory=dict)
    latency_ms: int = 0
    timeout_hold_s: float = 2.0
    paths: tuple[str, ...] = ("/fapi/",)
    seed: int = 0
    garbage: dict[str, float] = field(default_factory=dict)
    garbage_paths: tuple[str, ...] = ()  # empty: every market data path
    counts: Counter[str] = field(default_factory=Counter)
    # The newest injected faults, numbered from 1: {"n", "ms" (exchange time), "method",
    # "path", "kind"}; read with GET /_sim/faults?events_after=N.
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.configure(self.rates, self.seed, self.garbage)

    def configure(
        self,
        rates: Mapping[str, Any],
        seed: int | None = None,
        garbage: Mapping[str, Any] | None = None,
        garbage_paths: Sequence[Any] | None = None,
    ) -> None:
        """Validate and set the rates (and garbage rates and paths, when given); reseed when a
        seed is given. Nothing changes when any of it is invalid."""
        new_rates = checked_rates(rates, KINDS, "fault")
        new_garbage = None if garbage is None else checked_rates(garbage, GARBAGE_KINDS, "garbage")
        if garbage_paths is not None and (
            isinstance(garbage_paths, str)
            or not all(isinstance(p, str) and p.startswith("/") for p in garbage_paths)
        ):
            raise FaultConfigError("garbage paths must be a list of paths like /fapi/v1/klines")
        self.rates = new_rates
        if new_garbage is not None:
            self.garbage = new_garbage
        if garbage_paths is not None:
            self.garbage_paths = tuple(garbage_paths)
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(seed)

    def applies(self, path: str) -> bool:
        """Tell whether faults and latency apply to a request path."""
        return any(path.startswith(p) for p in self.paths)

    def draw(self) -> str | None:
        """Return the fault for the next request (or None), and count it."""
        self.counts["requests"] += 1
        return self._pick(self.rates, KINDS)

    def record(self, ms: int, method: str, path: str, kind: str) -> None:
        """Remember one injected fault (the oldest is forgotten past ``EVENTS_KEPT``)."""
        n = self.events[-1]["n"] + 1 if self.events else 1
        self.events.append({"n": n, "ms": ms, "method": method, "path": path, "kind": kind})

    def events_after(self, n: int) -> list[dict[str, Any]]:
        """Return the remembered faults numbered above ``n``, oldest first."""
        return [e for e in self.events if e["n"] > n]

    def draw_garbage(self, applicable: Sequence[str], path: str = "") -> str | None:
        """Return the corruption of the next market data answer (or None), and count it.

        Only ``applicable`` kinds can be drawn (candle kinds apply to klines only), and only
        on ``garbage_paths`` when some are set.
        """
        if not self.garbage or (self.garbage_paths and path not in self.garbage_paths):
            return None
        self.counts["market_answers"] += 1
        return self._pick({k: v for k, v in self.garbage.items() if k in applicable}, GARBAGE_KINDS)

    def _pick(self, rates: Mapping[str, float], order: Sequence[str]) -> str | None:
        """Draw one kind by its rate (or None) and count it."""
        r = self._rng.random()
        acc = 0.0
        for kind in order:
            acc += rates.get(kind, 0.0)
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
            "garbage": dict(self.garbage),
            "garbage_paths": list(self.garbage_paths),
            "latency_ms": self.latency_ms,
            "timeout_hold_s": self.timeout_hold_s,
            "paths": list(self.paths),
            "seed": self.seed,
            "counts": dict(self.counts),
        }


def parse_rates(spec: str, kinds: Sequence[str] = KINDS) -> dict[str, float]:
    """Parse ``kind=rate,...`` (e.g. ``http5xx=0.05,drop=0.02``); ``all=R`` splits R evenly
    among ``kinds``."""
    rates: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            raise FaultConfigError(f"bad fault rate {item!r}; expected kind=number") from None
        if kind == "all":
            rates.update(dict.fromkeys(kinds, rate / len(kinds)))
        else:
            rates[kind] = rate
    return rates
