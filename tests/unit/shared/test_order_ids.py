"""The client order ids of a position's orders are fixed forever: pinned literally.

An executor upgraded while a position is open must ask the exchange about the orders the
old one placed, by the same client order id; a changed derivation would make it place a
second entry or a second stop. Each pinned id is ``tb-`` and the first 33 hex digits of
the SHA-256 of ``"<position id>|<purpose>"`` (``|<seq>`` after ``stop`` from the second
stop on): ``printf 'pos-7f3a|entry' | sha256sum`` re-derives the first.
"""

from __future__ import annotations

import re

from shared.order_ids import entry_client_id, exit_client_id, stop_client_id

POSITION = "pos-7f3a"


def test_each_order_of_a_position_has_its_pinned_id() -> None:
    assert entry_client_id(POSITION) == "tb-d21a4c9e0eafb414ce6ca1112ca08b911"
    assert exit_client_id(POSITION) == "tb-6a315c465d147fe0fa49d9ea6292af3e8"
    assert stop_client_id(POSITION) == "tb-08b81bb7ba16165c852ce59d474986d1b"
    assert stop_client_id(POSITION, 0) == stop_client_id(POSITION)
    assert stop_client_id(POSITION, 1) == "tb-9f72036325feededb51afbde7cef3242e"
    assert stop_client_id(POSITION, 2) == "tb-aeee2948b767bb7092ee8cda2482c0bd3"


def test_ids_are_binance_valid_and_distinct_per_position() -> None:
    ids = [
        f(p)
        for p in (POSITION, "pos-7f3b")
        for f in (entry_client_id, exit_client_id, stop_client_id)
    ] + [stop_client_id(POSITION, seq) for seq in (1, 2, 3)]
    assert len(set(ids)) == len(ids)
    # Binance: at most 36 characters from [.A-Z:/a-z0-9_-].
    assert all(re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", i) for i in ids)
