"""The client order ids of a position's orders, derived from its id (executor and state agree).

One position has at most one entry, one exit and one stop per sequence number, each with
a client order id derived from the position id, so a redelivered signal or a restarted
executor always asks the exchange about the same order instead of making a new one.
"""

from __future__ import annotations

from shared.exchange_models import make_client_order_id


def entry_client_id(position_id: str) -> str:
    """Return the client order id of a position's market entry."""
    return make_client_order_id(position_id, "entry")


def exit_client_id(position_id: str) -> str:
    """Return the client order id of a position's market exit (one per position, any reason)."""
    return make_client_order_id(position_id, "exit")


def stop_client_id(position_id: str, seq: int = 0) -> str:
    """Return the client order id of a position's protective stop number ``seq``."""
    if seq == 0:
        return make_client_order_id(position_id, "stop")
    return make_client_order_id(position_id, "stop", str(seq))
