"""The simulator's state holder: market feed, account, symbol rules, credentials, persistence."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from services.exchange_sim import engine
from services.exchange_sim.auth import DEFAULT_API_KEY, DEFAULT_API_SECRET, Clocks
from services.exchange_sim.engine import Account, AlgoOrder, SimError, SymbolSpec
from services.exchange_sim.faults import FaultPlan
from services.exchange_sim.feed import MarketFeed

DEFAULT_BALANCE = 10_000.0
DEFAULT_FEE_RATE = 0.0005


@dataclass
class Simulator:
    """Everything one simulated exchange holds; the HTTP routes and the clock task call it."""

    feed: MarketFeed
    account: Account
    specs: dict[str, SymbolSpec]
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    faults: FaultPlan = field(default_factory=FaultPlan)
    state_file: Path | None = None
    triggered: list[AlgoOrder] = field(default_factory=list)
    _clock_seen: int = field(default=0, init=False, repr=False)
    # the host time (ms) at which the market clock last changed
    _clock_moved_at: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._clock_seen, self._clock_moved_at = self.feed.now_ms(), wall_ms()

    @classmethod
    def create(
        cls,
        feed: MarketFeed,
        balance: float = DEFAULT_BALANCE,
        fee_rate: float = DEFAULT_FEE_RATE,
        state_file: Path | None = None,
        **kwargs: Any,
    ) -> Simulator:
        """Build a simulator over a feed; resume account and symbol rules from ``state_file``.

        Saved symbol rules win over ones derived from today's prices, so a restart never
        changes a traded symbol's tick or lot size.
        """
        specs = {s: engine.spec_for(s, feed.price(s)) for s in feed.symbols()}
        account = Account(wallet=balance, fee_rate=fee_rate)
        if state_file is not None and state_file.exists():
            try:
                saved = json.loads(state_file.read_text())
                account = Account.from_dict(saved["account"])
                for s, spec in saved.get("specs", {}).items():
                    if s in specs:
                        specs[s] = SymbolSpec(**spec)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"not a simulator state file ({type(e).__name__}: {e})") from e
        return cls(feed, account, specs, state_file=state_file, **kwargs)

    def now_ms(self) -> int:
        """Return the exchange clock (the market's simulated time)."""
        return self.feed.now_ms()

    def clocks(self, host_ms: int | None = None) -> Clocks:
        """Return the clocks a signed request is judged against (see ``auth``).

        The market clock is dated when it moves (``step``, ``advance_to``); a move made
        past them (the feed stepped directly) is dated when first seen here.
        """
        host = wall_ms() if host_ms is None else host_ms
        self._note_clock(host)
        return Clocks(host, self._clock_seen, self._clock_moved_at)

    def _note_clock(self, host_ms: int) -> None:
        """Record the host time at which the market clock reading changed."""
        now = self.feed.now_ms()
        if now != self._clock_seen:
            self._clock_seen, self._clock_moved_at = now, host_ms

    def spec(self, symbol: str | None) -> SymbolSpec:
        """Return a symbol's rules; unknown or missing symbols are -1121 as on Binance."""
        if symbol is None or symbol not in self.specs:
            raise SimError(-1121, "Invalid symbol.")
        return self.specs[symbol]

    def prices(self) -> dict[str, float]:
        """Return every symbol's current price."""
        return {s: self.feed.price(s) for s in self.specs}

    def step(self, n: int = 1) -> list[tuple[str, float]]:
        """Play the market's next n price event times; trigger the stops each event reaches."""
        played: list[tuple[str, float]] = []
        for _ in range(n):
            played.extend(self._play(self.feed.step()))
        self._note_clock(wall_ms())
        return played

    def advance_to(self, ms: int) -> list[tuple[str, float]]:
        """Move the market clock to ms, playing (and triggering on) every event on the way."""
        events = self._play(self.feed.advance_to(ms))
        self._note_clock(wall_ms())
        return events

    def _play(self, events: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Run the stops against each event in order; persist if any fired."""
        fired_any = False
        armed = {a.symbol for a in self.account.algo_orders.values() if a.status == "NEW"}
        for symbol, price in events:
            if symbol not in armed:
                continue
            prices = self.prices()
            prices[symbol] = price
            fired = engine.trigger_stops(
                self.account, self.specs[symbol], price, prices, self.now_ms()
            )
            self.triggered.extend(fired)
            fired_any = fired_any or bool(fired)
        if fired_any:
            self.save()
        return events

    def save(self) -> None:
        """Write the account to the state file atomically (temp file, then rename)."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        specs = {s: asdict(spec) for s, spec in self.specs.items()}
        tmp.write_text(json.dumps({"account": self.account.to_dict(), "specs": specs}))
        os.replace(tmp, self.state_file)


def wall_ms() -> int:
    """Return the host's wall clock in ms."""
    return int(time.time() * 1000)


SIM_KEY: web.AppKey[Simulator] = web.AppKey("sim", Simulator)


def sim_of(request: web.Request) -> Simulator:
    """Return the simulator an app serves."""
    return request.app[SIM_KEY]
