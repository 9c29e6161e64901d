"""Takeover fencing against the simulator: a send stalled past its recvWindow never lands.

The executor checks its lease right before each send, and ``place_order`` pins the signed
timestamp to that check. Here the process stalls between the check and the signing (as
a paused old lease holder would): the exchange refuses the stale request (-1021), and once
the guard says no (the lease moved on), nothing is resent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.exchange_errors import SendRefused
from shared.exchange_models import make_client_order_id
from tests.fixtures.sim import SimHandle
from tests.integration.exchange.conftest import MakeClient
from tests.integration.exchange.intents import Intent


async def test_send_stalled_past_recv_window_is_refused_and_not_resent(
    sim: SimHandle, make_client: MakeClient
) -> None:
    client = await make_client()  # recvWindow 1 000 ms in these tests
    # The scripted market's clock stands still; sign with the host clock, which moves
    # (the simulator accepts either), so that a stall really ages the request.
    client.ex.options["timeDifference"] = 0
    sign = client.ex.sign
    stalled: list[str] = []

    def stall_before_signing_an_order(
        path: str, api: Any = "public", method: str = "GET", *args: Any
    ) -> Any:
        if method == "POST" and not stalled:
            stalled.append(path)
            time.sleep(1.3)  # the whole process stops here, like a SIGSTOP or a GC pause
        return sign(path, api, method, *args)

    client.ex.sign = stall_before_signing_an_order
    cid = make_client_order_id("fence", "entry")
    answers = iter([True])  # the lease held at the first check only
    intent = Intent(cid, "BTC/USDT:USDT", "buy", 0.01)
    with pytest.raises(SendRefused):
        await client.place_order(intent, guard=lambda: next(answers, False))
    assert stalled == ["order"]
    assert await client.fetch_order("BTC/USDT:USDT", cid) is None
    assert sim.account.orders == {}
