"""No secret leaks: the API key and secret and the Redis password appear nowhere the bot writes.

The whole bot runs as processes (tests/fixtures/stack.py) on the exchange simulator started
with a recognisable fake API key and secret, against a Redis that requires a recognisable
password (``requirepass``; the services get it in TB_REDIS_PASSWORD, the URL has none),
each process serving its metrics on its own port, until it has traded. Then every file
the run wrote (the processes' output, the daily log files, the simulator's state, the Redis
server's log and append-only file), every Redis key and value (every stream entry among
them), every metrics page, and the output of ``tradebot status``, ``status --json``,
``config`` and ``dlq list --json`` (also with the password inside TB_REDIS_URL, with Redis
down and with a wrong password) are searched for each secret as it is, URL-encoded, and in
base64 at each of the three byte alignments (standard and URL-safe alphabets).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import redis

from shared import keys
from shared.redisconn import EmbeddedRedis, free_port
from tests.fixtures.procs import ROOT, clean_env
from tests.fixtures.stack import SERVICES, Stack

API_KEY = "fakeKey+TbLeakCanary/Key=7f3a9c2e"
API_SECRET = "fakeSecret+TbLeakCanary/Secret=Q9kP"
REDIS_PASSWORD = "fakeRedisPw+TbLeakCanary/Pw=E4mN:@"
SECRETS = {"API key": API_KEY, "API secret": API_SECRET, "Redis password": REDIS_PASSWORD}


def forms(secret: str) -> set[bytes]:
    """Return the byte strings that betray ``secret``: as is, URL-encoded, base64-encoded.

    A base64 encoding of text holding the secret contains, whatever precedes it, the
    characters that encode only the secret's bytes: for each of the three alignments, the
    encoding without its first group (shared with what precedes) and its last (shared with
    what follows, or padding).
    """
    raw = secret.encode()
    found = {raw, quote(secret).encode(), quote(secret, safe="").encode()}
    found.add(quote_plus(secret).encode())
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw)
            found.add(text[4 if shift else 0 : -4])
    return found


NEEDLES = {(name, form) for name, secret in SECRETS.items() for form in forms(secret)}


def leaks(where: str, data: bytes) -> list[str]:
    """Return a line for each secret (in any form) found in ``data``."""
    return [f"{name} ({form!r}) in {where}" for name, form in NEEDLES if form in data]


def redis_dump(client: redis.Redis) -> dict[str, bytes]:
    """Return every key with its whole value (streams: every entry) as bytes."""
    out: dict[str, bytes] = {}
    for name in client.scan_iter(count=500):
        key = name if isinstance(name, bytes) else name.encode()
        found: Any = client.type(key)
        kind = found.decode() if isinstance(found, bytes) else str(found)
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
            value = [value, client.xinfo_groups(key)]
        else:
            value = kind
        out[key.decode(errors="replace")] = key + b" " + repr(value).encode()
    return out


def tradebot(*args: str, env: dict[str, str], code: int = 0) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=clean_env(**env), cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == code, done.stderr.decode(errors="replace")
    return done.stdout + done.stderr


def test_the_search_finds_every_form() -> None:
    for secret in SECRETS.values():
        raw = secret.encode()
        hidden = [
            b"x" + raw + b"y",
            quote(secret, safe="").encode(),
            f"https://h/?k={quote_plus(secret)}&a=1".encode(),
        ]
        for prefix in (b"", b"a", b"ab", b"abc"):
            hidden.append(b"Basic " + base64.b64encode(prefix + raw + b":tail"))
            hidden.append(base64.urlsafe_b64encode(prefix + raw))
        for data in hidden:
            assert leaks("a planted copy", data), data


@pytest.mark.slow
def test_no_secret_in_logs_redis_metrics_or_commands(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    assert all(quote(s, safe="") != s for s in SECRETS.values())  # the encoded forms differ
    admin = redis.Redis(port=redis_server.port, socket_timeout=5)
    admin.config_set("requirepass", REDIS_PASSWORD)
    admin.close()
    plain_url = redis_server.url
    own_url = f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{redis_server.port}/0"
    secrets_env = {
        "TB_REDIS_URL": plain_url,
        "TB_REDIS_PASSWORD": REDIS_PASSWORD,
        "TB_API_KEY": API_KEY,
        "TB_API_SECRET": API_SECRET,
    }
    stack = Stack(tmp_path, own_url, **secrets_env)
    metrics = {name: free_port() for name in SERVICES}
    pages: dict[str, bytes] = {}
    try:
        stack.start_sim("--speed", "300", "--seed", "42", "--api-key", API_KEY,
                        "--api-secret", API_SECRET)  # fmt: skip
        for name in SERVICES:
            stack.start(name, TB_METRICS_PORT=str(metrics[name]))
        stack.wait_for(lambda: stack.trades(), 150, "a closed trade")
        for name in SERVICES:
            assert stack.alive(name), stack.log_tails()
        for name, port in metrics.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                pages[name] = r.read()
        assert all(b"tradebot_service_up" in page for page in pages.values())
        env = secrets_env | {"TB_SIM_PORT": str(stack.sim_port)}
        outputs = {
            " ".join(args): tradebot(*args, env=env)
            for args in (["status"], ["status", "--json"], ["config"], ["dlq", "list", "--json"])
        }
        in_url = env | {"TB_REDIS_URL": own_url, "TB_REDIS_PASSWORD": ""}
        for args in (["status", "--json"], ["config"]):
            outputs[" ".join(args) + " (password in the URL)"] = tradebot(*args, env=in_url)
        dead = f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{free_port()}/0"
        outputs["status (Redis down)"] = tradebot("status", env=in_url | {"TB_REDIS_URL": dead},
                                                  code=1)  # fmt: skip
        wrong = env | {"TB_REDIS_PASSWORD": REDIS_PASSWORD[:-1]}  # a near miss
        outputs["status (wrong password)"] = tradebot("status", env=wrong, code=1)
        assert API_KEY.encode() not in outputs["config"]
        assert b"**********" in outputs["config"]
        dump = redis_dump(stack.redis)
        assert any(k.startswith(keys.STREAM_EVENTS) for k in dump), "the bot wrote no events"
    finally:
        stack.stop_all()

    found: list[str] = []
    for key, data in dump.items():
        found += leaks(f"Redis key {key}", data)
    for name, page in pages.items():
        found += leaks(f"the metrics page of {name}", page)
    for what, out in outputs.items():
        found += leaks(f"the output of tradebot {what}", out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("executor_") and p.suffix == ".log" for p in written)
    for path in written:
        found += leaks(str(path.relative_to(tmp_path)), path.read_bytes())
    assert not found, "\n".join(sorted(found))
