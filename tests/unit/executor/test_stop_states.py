"""A stop counts as filled only once the market order it triggered has filled.

On Binance a triggered stop reads TRIGGERING (ccxt: open), then TRIGGERED (closed, its
order id possibly still empty), then FINISHED with ``actualOrderId``; the simulator jumps
straight to FINISHED, so these states are checked here with a hand-written client.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from services.executor.service import Executor
from shared.config import Settings
from shared.exchange_models import Order
from shared.service import ServiceContext

STOP = Order(
    id="1", client_order_id="tb-stop", symbol="SOL/USDT:USDT", side="sell", type="market",
    status="open", amount=2.0, filled=0.0, average=None, stop_price=147.0, reduce_only=True,
    timestamp=1, is_stop=True,
)  # fmt: skip
FILL = Order(
    id="77", client_order_id="x", symbol="SOL/USDT:USDT", side="sell", type="market",
    status="closed", amount=2.0, filled=2.0, average=146.9, stop_price=None, reduce_only=True,
    timestamp=2,
)  # fmt: skip


class StubClient:
    """The two reads ``stop_fill`` makes."""

    def __init__(self, stop: Order | None, fill: Order | None) -> None:
        self.stop, self.fill = stop, fill
        self.fetched_ids: list[str] = []

    async def fetch_stop_order(self, symbol: str, cid: str) -> Order | None:
        return self.stop

    async def fetch_order_by_id(self, symbol: str, order_id: str) -> Order | None:
        self.fetched_ids.append(order_id)
        return self.fill


def executor(client: Any) -> Executor:
    ctx = ServiceContext(Settings(), "executor", "t", redis=None)  # type: ignore[arg-type]
    return Executor(ctx, client, {})


@pytest.mark.parametrize(
    ("stop", "filled"),
    [
        (STOP, False),  # NEW or TRIGGERING: open
        (dataclasses.replace(STOP, status="closed"), False),  # TRIGGERED, no order id yet
        (dataclasses.replace(STOP, status="canceled"), False),
        (dataclasses.replace(STOP, status="expired"), False),
        (None, False),
        (dataclasses.replace(STOP, status="closed", triggered_order_id="77"), True),  # FINISHED
    ],
)
async def test_only_a_filled_triggered_order_is_a_stop_fill(
    stop: Order | None, filled: bool
) -> None:
    client = StubClient(stop, FILL)
    fill = await executor(client).stop_fill("SOL/USDT:USDT", "tb-stop")
    assert (fill is not None) == filled
    if filled:
        assert fill is not None
        assert (fill.average, client.fetched_ids) == (146.9, ["77"])


async def test_a_triggered_order_not_filled_yet_is_not_a_fill() -> None:
    stop = dataclasses.replace(STOP, status="closed", triggered_order_id="77")
    pending = dataclasses.replace(FILL, status="open", filled=0.0, average=None)
    assert await executor(StubClient(stop, pending)).stop_fill("SOL/USDT:USDT", "c") is None
