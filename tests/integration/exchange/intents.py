"""The order intent the exchange tests hand to place_order (the fields it reads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    """An order intent with the fields place_order reads."""

    client_order_id: str
    symbol: str
    side: str
    quantity: float
    type: str = "market"
    stop_price: float | None = None
    reduce_only: bool = False
