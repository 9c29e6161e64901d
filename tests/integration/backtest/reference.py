"""A deliberately naive reference backtester, written from the text of docs/strategy.md.

Plain Python, one step (candle close) at a time, all symbols together, every rule spelled
out where it applies. It shares no code with services.signals or services.backtest: the point
is an independent second reading of the contract to compare the fast engine against.
Decisions where docs/strategy.md is silent follow docs/strategy.md (sizing at the signal close,
entries at one close filled one after another, 24h window (T - 24h, T], --from/--to by open
time, `end` exits at each symbol's last close with the exit fee, windows restart at gaps).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import pandas as pd

from shared.config import Settings

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RefTrade:
    """One closed trade; times are candle close times in ms."""

    symbol: str
    side: int
    entry_time_ms: int
    entry_price: float
    exit_time_ms: int
    exit_price: float
    quantity: float
    fees: float
    pnl: float
    exit_reason: str


@dataclass
class RefResult:
    """Trades in closing order, the equity after each step, and the final wallet."""

    trades: list[RefTrade]
    steps: list[int]
    equity: list[float]
    end_equity: float


@dataclass
class _Candle:
    open_ms: int
    close_ms: int
    o: float
    h: float
    lo: float
    c: float
    v: float
    vol_ratio: float | None = None
    chop: float | None = None


@dataclass
class _Position:
    symbol: str
    side: int
    entry_time_ms: int
    entry: float
    qty: float
    entry_fee: float
    stop: float
    best: float


def _indicators(candles: list[_Candle], tf: int, vr_window: int, n: int) -> None:
    """Fill vol_ratio and chop per candle, the slow obvious way; windows restart at gaps."""
    seg_start = 0
    for t, cd in enumerate(candles):
        if t > 0 and cd.open_ms - candles[t - 1].open_ms != tf:
            seg_start = t
        earlier = t - seg_start  # candles of this gap-free stretch before t
        if earlier >= vr_window:
            total = 0.0
            for k in range(t - vr_window, t):
                total += candles[k].v
            mean = total / vr_window
            if mean > 0:
                cd.vol_ratio = cd.v / mean
        if earlier >= n:  # n candles plus the one before them, for the first TR
            tr_sum = 0.0
            for i in range(t - n + 1, t + 1):
                prev = candles[i - 1].c
                cur = candles[i]
                tr_sum += max(cur.h - cur.lo, abs(cur.h - prev), abs(cur.lo - prev))
            hi = max(candles[i].h for i in range(t - n + 1, t + 1))
            lo = min(candles[i].lo for i in range(t - n + 1, t + 1))
            if hi - lo > 0:
                cd.chop = 100 * math.log10(tr_sum / (hi - lo)) / math.log10(n)


def _signal(cd: _Candle, s: Settings) -> int:
    """Return +1 long, -1 short, 0 none at a closed candle, by the Entry rules."""
    if cd.vol_ratio is None or cd.chop is None:
        return 0
    body = abs(cd.c - cd.o) / cd.o
    if body < s.min_body_pct or not cd.chop < s.chop_threshold:
        return 0
    if cd.c > cd.o and cd.vol_ratio >= s.long_vr:
        return 1
    if cd.c < cd.o and cd.vol_ratio >= s.short_vr:
        return -1
    return 0


def reference_backtest(
    frames: dict[str, pd.DataFrame],
    s: Settings,
    start_equity: float = 10_000.0,
    from_ms: int | None = None,
    to_ms: int | None = None,
    limits: dict[str, tuple[float, float, float]] | None = None,
) -> RefResult:
    """Replay docs/strategy.md candle by candle over {symbol: OHLCV frame} and return the trades.

    ``limits`` maps a symbol to (amount step, minimum amount, minimum notional); none by default.
    """
    tf = s.timeframe_ms
    rotate_ms = round(s.coin_rotate_hours * 3_600_000)
    data: dict[str, list[_Candle]] = {}
    for sym, fr in frames.items():
        rows = zip(
            fr["timestamp"].tolist(),
            fr["open"].tolist(),
            fr["high"].tolist(),
            fr["low"].tolist(),
            fr["close"].tolist(),
            fr["volume"].tolist(),
            strict=True,
        )
        candles = [
            _Candle(int(ts), int(ts) + tf, float(o), float(h), float(lo), float(c), float(v))
            for ts, o, h, lo, c, v in rows
            if to_ms is None or int(ts) < to_ms
        ]
        _indicators(candles, tf, s.vr_window, s.chop_period)
        data[sym] = candles

    def tradable(cd: _Candle) -> bool:
        return from_ms is None or cd.open_ms >= from_ms

    at_close: dict[str, dict[int, _Candle]] = {
        sym: {cd.close_ms: cd for cd in cs if tradable(cd)} for sym, cs in data.items()
    }
    last_close = {sym: max(m) for sym, m in at_close.items() if m}
    steps = sorted({t for m in at_close.values() for t in m})

    wallet = start_equity
    positions: dict[str, _Position] = {}
    trades: list[RefTrade] = []
    universe: set[str] = set()
    curve: list[float] = []

    closes_ms = {sym: [cd.close_ms for cd in cs] for sym, cs in data.items()}

    def mark(sym: str, t: int) -> float:
        return data[sym][bisect_right(closes_ms[sym], t) - 1].c

    def equity(t: int) -> float:
        return wallet + sum(
            p.side * (mark(p.symbol, t) - p.entry) * p.qty for p in positions.values()
        )

    def close(pos: _Position, t: int, price: float, reason: str) -> None:
        nonlocal wallet
        exit_fee = s.fee_rate * price * pos.qty
        gross = pos.side * (price - pos.entry) * pos.qty
        wallet += gross - exit_fee
        fees = pos.entry_fee + exit_fee
        trades.append(
            RefTrade(
                pos.symbol,
                pos.side,
                pos.entry_time_ms,
                pos.entry,
                t,
                price,
                pos.qty,
                fees,
                gross - fees,
                reason,
            )
        )
        del positions[pos.symbol]

    prev_t: int | None = None
    for t in steps:
        # 1. Exit price events of candle t, for positions entered before t.
        for sym in sorted(positions):
            pos = positions[sym]
            cd = at_close[sym].get(t)
            if cd is None or pos.entry_time_ms >= t:
                continue
            events = [cd.o, cd.lo, cd.h, cd.c] if cd.c >= cd.o else [cd.o, cd.h, cd.lo, cd.c]
            for p in events:
                if pos.side == 1:
                    if p <= pos.stop:
                        close(pos, t, pos.stop, "stop")
                        break
                    pos.best = max(pos.best, p)
                    surged = pos.best >= pos.entry * (1 + s.surge_threshold)
                    d = s.surge_trail_stop if surged else s.trail_stop
                    armed = pos.best >= pos.entry * (1 + s.trail_activate)
                    if armed and p <= pos.best * (1 - d):
                        close(pos, t, p * (1 - s.slippage), "trail")
                        break
                else:
                    if p >= pos.stop:
                        close(pos, t, pos.stop, "stop")
                        break
                    pos.best = min(pos.best, p)
                    surged = pos.best <= pos.entry * (1 - s.surge_threshold)
                    d = s.surge_trail_stop if surged else s.trail_stop
                    armed = pos.best <= pos.entry * (1 - s.trail_activate)
                    if armed and p >= pos.best * (1 + d):
                        close(pos, t, p * (1 + s.slippage), "trail")
                        break
        # A position whose symbol's data ends here closes at that last close.
        for sym in sorted(positions):
            if last_close[sym] == t:
                close(positions[sym], t, at_close[sym][t].c, "end")

        # 2. Universe rotation: at the first step, and when (prev, t] holds a multiple.
        if prev_t is None or (t // rotate_ms) * rotate_ms > prev_t:
            vols: dict[str, float] = {}
            for sym, cs in data.items():
                if not cs or cs[-1].close_ms < t:
                    continue  # its data has ended: not an active market
                lo, hi = bisect_right(closes_ms[sym], t - DAY_MS), bisect_right(closes_ms[sym], t)
                window = cs[lo:hi]
                assert all(t - DAY_MS < cd.close_ms <= t for cd in window)
                if window:
                    total = 0.0
                    for cd in window:
                        total += cd.c * cd.v
                    vols[sym] = total
            ranked = sorted(vols, key=lambda x: (-vols[x], x))
            universe = set(ranked[: s.top_n])
        prev_t = t

        # 3. Entries decided at the close of t, by descending vol_ratio then symbol.
        signals: list[tuple[float, str, int, _Candle]] = []
        for sym in at_close:
            cd = at_close[sym].get(t)
            if cd is not None:
                side = _signal(cd, s)
                if side != 0:
                    assert cd.vol_ratio is not None
                    signals.append((-cd.vol_ratio, sym, side, cd))
        signals.sort(key=lambda x: (x[0], x[1]))
        entered: list[str] = []
        for _, sym, side, cd in signals:
            if sym in positions or len(positions) >= s.max_positions or sym not in universe:
                continue
            eq = equity(t)
            if eq <= 0:
                continue
            margin = eq * s.trade_pct / s.max_positions
            qty = margin * s.leverage / cd.c
            step, min_amount, min_notional = (limits or {}).get(sym, (0.0, 0.0, 0.0))
            if step > 0:
                units = (Decimal(str(qty)) / Decimal(str(step))).to_integral_value(ROUND_FLOOR)
                qty = float(units * Decimal(str(step)))
            if qty <= 0 or qty < min_amount or qty * cd.c < min_notional:
                continue
            fill = cd.c * (1 + s.slippage) if side == 1 else cd.c * (1 - s.slippage)
            fee = s.fee_rate * fill * qty
            wallet -= fee
            stop = fill * (1 - s.sl_pct) if side == 1 else fill * (1 + s.sl_pct)
            positions[sym] = _Position(sym, side, t, fill, qty, fee, stop, fill)
            entered.append(sym)
        # An entry at its symbol's very last close is closed at once.
        for sym in entered:
            if last_close[sym] == t:
                close(positions[sym], t, at_close[sym][t].c, "end")
        curve.append(equity(t))
    return RefResult(trades, steps, curve, wallet)
