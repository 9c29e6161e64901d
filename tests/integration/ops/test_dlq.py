"""``tradebot dlq list`` and ``replay`` against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import redis
from typer.testing import CliRunner

from shared import keys
from shared.cli import app
from shared.schemas import FIELD, DlqEntry, encode


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["dlq", *args], env=env)
    return result.exit_code, result.output


def dead_letter(client: redis.Redis, stream: str, payload: str, error: str) -> str:
    entry = DlqEntry(
        stream=stream,
        group="g",
        entry_id="1-0",
        reason="handler",
        error=error,
        deliveries=5,
        payload=payload,
        ts=1,
    )
    entry_id: Any = client.xadd(keys.STREAM_DLQ, {FIELD: encode(entry)})
    return str(entry_id.decode())


def test_list_shows_newest_first(cli_env: dict[str, str], sync_client: redis.Redis) -> None:
    code, out = invoke(cli_env, "list")
    assert code == 0, out
    assert "No dead letters in tb:dlq." in out
    first = dead_letter(sync_client, keys.STREAM_SIGNALS, '{"kind":"entry"}', "ValueError: one")
    second = dead_letter(sync_client, keys.STREAM_EVENTS, "x" * 500, "KeyError: two")

    code, out = invoke(cli_env, "list", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [second, first]
    assert rows[1]["stream"] == keys.STREAM_SIGNALS
    assert rows[1]["deliveries"] == 5

    code, out = invoke(cli_env, "list", "--limit", "1")
    assert code == 0, out
    assert second in out
    assert first not in out
    assert "KeyError: two" in out
    assert "x" * 500 not in out  # the payload is shortened


def test_replay_moves_entries_back_to_their_stream(
    cli_env: dict[str, str], sync_client: redis.Redis
) -> None:
    a = dead_letter(sync_client, keys.STREAM_SIGNALS, '{"a":1}', "E: a")
    b = dead_letter(sync_client, keys.STREAM_EVENTS, '{"b":2}', "E: b")
    c = dead_letter(sync_client, keys.STREAM_SIGNALS, '{"c":3}', "E: c")

    code, out = invoke(cli_env, "replay", b)
    assert code == 0, out
    assert f"replayed {b} -> {keys.STREAM_EVENTS}" in out
    events: Any = sync_client.xrange(keys.STREAM_EVENTS)
    assert [fields for _, fields in events] == [{FIELD.encode(): b'{"b":2}'}]
    left: Any = sync_client.xrange(keys.STREAM_DLQ)
    assert [i.decode() for i, _ in left] == [a, c]

    code, out = invoke(cli_env, "replay", b)
    assert code == 1, out
    assert f"skipped {b}: not in the DLQ" in out

    code, out = invoke(cli_env, "replay", "--all")
    assert code == 0, out
    assert "2 replayed, 0 skipped." in out
    replayed: Any = sync_client.xrange(keys.STREAM_SIGNALS)
    payloads = [f[FIELD.encode()] for _, f in replayed]
    assert payloads == [b'{"a":1}', b'{"c":3}']
    assert sync_client.xlen(keys.STREAM_DLQ) == 0


def test_replay_needs_ids_or_all(cli_env: dict[str, str]) -> None:
    code, out = invoke(cli_env, "replay")
    assert code == 2, out
    assert "give DLQ entry ids or --all" in out
