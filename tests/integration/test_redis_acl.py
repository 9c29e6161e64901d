"""Redis ACL users: the bot runs as a user limited to its own keys and commands.

The test server gets an ``admin`` user, turns the ``default`` user off, and creates
``tradebot`` with the narrowest rights the bot needs (``BOT_ACL``: its ``tb:*`` keys, no
Pub/Sub channels, and only the commands the services and the operator commands send).
The services and ``tradebot status`` then run with ``redis://tradebot@host:port/0`` and
TB_REDIS_PASSWORD. Redis's ACL LOG must stay empty (no command or key was refused).

A user without the rights (no key access, no command access, a wrong password) gets one
clear line from ``tradebot status`` and exit code 1, no traceback.

``BOT_ACL`` was found by running the whole stack until it traded, plus every operator
command, as a user with ``+@all`` and reading ``INFO commandstats``; the rare paths
(reclaim's XPENDING, dlq replay's WATCH/XDEL, a failed MULTI's DISCARD) were added from the
code. Compose and the password rules are tested elsewhere: tests/deploy/test_compose.py
(Redis requires the password) and tests/unit/shared/test_config.py (live mode refuses a
Redis without one).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import keys
from shared.redisconn import EmbeddedRedis
from shared.schemas import FIELD, encode
from tests.fixtures.procs import ROOT, clean_env
from tests.fixtures.stack import SERVICES, Stack
from tests.integration.signals.helpers import trend

BOT_PASSWORD = "acl-bot-pw: /@%"
ADMIN_PASSWORD = "acl-admin-pw"
# The bot's commands, by what uses them (WAIT only with TB_REDIS_MIN_REPLICAS_ACK > 0).
BOT_COMMANDS = (
    "+hello +auth +ping +select "  # connecting (and +client|setinfo on Redis >= 7.2)
    "+get +set +mget +del +exists +expire +pexpire +pttl +incrby +scan "
    "+hget +hset +hdel +hexists +hgetall +hmget +hvals "
    "+sadd +srem +smembers +scard "
    "+zadd +zrem +zcard +zrange +zrevrange +zrevrangebyscore +zremrangebyscore "
    "+zremrangebyrank "
    "+xadd +xtrim +xdel +xlen +xrange +xrevrange +xreadgroup +xack +xautoclaim +xpending "
    "+xgroup|create +xinfo|groups "
    "+multi +exec +discard +watch +unwatch "
    "+eval +evalsha +script|load "
    "+wait"
)
BOT_ACL = f"on resetkeys ~tb:* resetchannels -@all {BOT_COMMANDS}"
BROAD_ACL = "on resetkeys ~tb:* resetchannels +@all -@dangerous"


def command(client: redis.Redis, *args: Any) -> Any:
    """Run a raw command (ACL ...) on a synchronous client."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def setuser(admin: redis.Redis, name: str, rules: str, password: str) -> None:
    command(admin, "ACL", "SETUSER", name, "reset", f">{password}", *rules.split())


def setuser_bot(admin: redis.Redis, name: str, rules: str, password: str) -> None:
    """Create the bot's user, with CLIENT SETINFO (redis-py names itself with it) where the
    server has that command (Redis 7.2+; 7.0 refuses the rule)."""
    try:
        setuser(admin, name, f"{rules} +client|setinfo", password)
    except redis.ResponseError:
        setuser(admin, name, rules, password)


@pytest.fixture
def acl(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """Give the server an admin, the bot's users and outsiders; turn the default user off."""
    first = redis.Redis(port=redis_server.port, socket_timeout=5)
    command(first, "ACL", "SETUSER", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all")
    first.close()
    admin = redis.Redis(
        port=redis_server.port, username="admin", password=ADMIN_PASSWORD, socket_timeout=5
    )
    command(admin, "ACL", "SETUSER", "default", "off")
    setuser_bot(admin, "tradebot", BOT_ACL, BOT_PASSWORD)
    setuser(admin, "broad", BROAD_ACL, BOT_PASSWORD)
    setuser(admin, "nokeys", "on ~other:* +@all", BOT_PASSWORD)
    setuser(admin, "nocommands", "on ~tb:* -@all +hello +auth", BOT_PASSWORD)
    command(admin, "ACL", "LOG", "RESET")
    try:
        yield admin
    finally:
        admin.close()


def denials(admin: redis.Redis) -> list[Any]:
    """Return Redis's ACL LOG: every refused command, key or login."""
    return list(command(admin, "ACL", "LOG", "128"))


def user_url(server: EmbeddedRedis, user: str) -> str:
    return f"redis://{user}@127.0.0.1:{server.port}/0"


def tradebot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=clean_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_user(server: EmbeddedRedis, user: str, password: str = BOT_PASSWORD) -> dict[str, str]:
    return {"TB_REDIS_URL": user_url(server, user), "TB_REDIS_PASSWORD": password}


@pytest.mark.parametrize("user", ["tradebot", "broad"])
def test_signals_worker_and_status_run_as_an_acl_user(
    redis_server: EmbeddedRedis, acl: redis.Redis, tmp_path: Path, user: str
) -> None:
    stack = Stack(tmp_path, f"redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{redis_server.port}/0")
    stack.env |= as_user(redis_server, user)
    try:
        series = trend("SOL/USDT:USDT")  # its last candle is a long
        window = {encode(c): c.open_time for c in series[:-1]}
        acl.zadd(keys.candles_key("SOL/USDT:USDT", "5m"), window)
        stack.start("signals")
        acl.xadd(keys.STREAM_CANDLES, {FIELD: encode(series[-1])})
        stack.wait_for(lambda: acl.xlen(keys.STREAM_SIGNALS) == 1, 30, "the entry signal")
        for args in (["status"], ["status", "--json"]):
            done = tradebot(*args, env=as_user(redis_server, user))
            assert done.returncode == 0, done.stderr
            assert done.stderr == ""
    finally:
        stack.stop_all()
    assert denials(acl) == []


@pytest.mark.slow
def test_whole_stack_and_every_operator_command_as_the_narrow_user(
    redis_server: EmbeddedRedis, acl: redis.Redis, tmp_path: Path
) -> None:
    stack = Stack(tmp_path, f"redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{redis_server.port}/0")
    stack.env |= as_user(redis_server, "tradebot")
    env = as_user(redis_server, "tradebot") | {
        "TB_SIM_PORT": str(stack.sim_port), "TB_API_KEY": stack.env["TB_API_KEY"],
        "TB_API_SECRET": stack.env["TB_API_SECRET"],
    }  # fmt: skip
    try:
        stack.start_sim("--speed", "300", "--seed", "42")
        for name in SERVICES:
            stack.start(name)
        stack.wait_for(lambda: stack.trades() and stack.positions(), 150, "a trade, a position")
        acl.xadd(keys.STREAM_TICKS, {FIELD: b"not json"})  # a dead letter to list and replay
        stack.wait_for(lambda: acl.xlen(keys.STREAM_DLQ) == 1, 30, "the dead letter")
        commands = [
            ["status"], ["status", "--json"], ["halt", "--reason", "acl"], ["resume"],
            ["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "replay", "--all"],
            ["flatten", "--yes", "--timeout", "60"], ["resume"], ["config"],
        ]  # fmt: skip
        for args in commands:
            done = tradebot(*args, env=env)
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        stack.wait_for(lambda: acl.xlen(keys.STREAM_DLQ) >= 1, 30, "the replayed letter back")
        for name in SERVICES:
            assert stack.alive(name), stack.log_tails()
    finally:
        stack.stop_all()
    assert denials(acl) == [], "the narrow ACL refused a command the bot sends"
    stats: Any = acl.info("commandstats")
    assert all(not s.get("rejected_calls") for s in stats.values()), stats


@pytest.mark.parametrize(
    ("user", "password", "words"),
    [
        ("nokeys", BOT_PASSWORD, "no permissions to access"),
        ("nocommands", BOT_PASSWORD, "no permissions to run"),
        ("tradebot", "wrong", "cannot log in"),
        ("nobody", BOT_PASSWORD, "cannot log in"),
    ],
)
def test_a_user_without_the_rights_gets_one_clear_line(
    redis_server: EmbeddedRedis, acl: redis.Redis, user: str, password: str, words: str
) -> None:
    done = tradebot("status", env=as_user(redis_server, user, password))
    assert done.returncode == 1, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert words in lines[0], lines[0]
    assert user in lines[0], lines[0]
    assert password not in done.stderr
