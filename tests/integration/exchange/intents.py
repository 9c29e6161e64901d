"""The order intent the exchange tests hand to place_order (the fields it reads)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.exchange import ExchangeClient
from shared.exchange_errors import OutcomeUnknown, TemporaryError
from shared.exchange_models import Order


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


async def place_until_settled(client: ExchangeClient, intent: Intent, tries: int = 5) -> Order:
    """Place an intent, trying the same intent again after a temporary or unknown outcome.

    This is what the executor does: a retry of the same client order id is safe because
    place_order looks the id up before any send. On a loaded machine a request can see
    several faults (or slow answers past the short chaos timeout) in a row.
    """
    for attempt in range(1, tries + 1):
        try:
            return await client.place_order(intent)
        except (TemporaryError, OutcomeUnknown):
            if attempt == tries:
                raise
    raise AssertionError("unreachable")
