"""The live-trading guard: no path reaches Binance's real-money host without TB_LIVE=true.

Three proofs, with a real ccxt ``binanceusdm`` and the network cut off:

- A real exchange with neither TB_LIVE nor TB_TESTNET is refused by the settings (exit 2,
  one line naming TB_LIVE) and every service process stops there, before resolving any
  host name.
- In-process, the executor's order path (``ExchangeClient.start`` and ``place_order``, a
  lookup by client order id then the send) runs through an aiohttp session whose resolver
  records each host name and sends every connection to a local TLS server (the exchange
  simulator behind a self-signed certificate); a trace records each request's URL. With
  TB_TESTNET=true every request goes to ``demo-fapi.binance.com``; only with TB_LIVE=true
  does one go to ``fapi.binance.com``.
- Each service that talks to the exchange (market_data, executor, state), started as
  ``python -m services.<name>`` with a ``sitecustomize`` that records every host name the
  process resolves and refuses it, resolves only Binance's demo hosts under TB_TESTNET and
  only the live host under TB_LIVE.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.exchange_sim.app import make_app
from services.exchange_sim.core import Simulator
from services.exchange_sim.faults import FaultPlan
from services.exchange_sim.feed import ScriptedFeed
from services.executor import orders as o
from shared.config import ConfigError, Settings, load_settings
from shared.exchange import ExchangeClient
from shared.exchange_errors import TemporaryError
from shared.redisconn import EmbeddedRedis, free_port
from shared.schemas import entry_signal_id
from tests.fixtures.procs import ROOT, clean_env
from tests.fixtures.sim import SIM_PRICES
from tests.integration.exchange.conftest import FAST

LIVE_HOST = "fapi.binance.com"
DEMO_HOST = "demo-fapi.binance.com"
SOL = "SOL/USDT:USDT"
KEY, SECRET = "guard-test-key", "guard-test-secret"
REAL = {"TB_EXCHANGE": "binanceusdm", "TB_API_KEY": KEY, "TB_API_SECRET": SECRET}
EXCHANGE_SERVICES = ("market_data", "executor", "state")


# --- settings --------------------------------------------------------------------------------


def test_a_real_exchange_needs_live_or_testnet(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in REAL.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match="TB_LIVE=true") as err:
        load_settings()
    assert "TB_TESTNET=true" in str(err.value)
    monkeypatch.setenv("TB_TESTNET", "true")
    assert load_settings().mode == "testnet"
    monkeypatch.delenv("TB_TESTNET")
    monkeypatch.setenv("TB_LIVE", "true")
    assert load_settings().mode == "live"


# --- in-process: the order path through a recording session ---------------------------------


def self_signed(tmp: Path) -> ssl.SSLContext:
    """Return a server TLS context with a throwaway self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exchange-recorder")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class ToRecorder(AbstractResolver):
    """Resolve every host name to the local recorder, noting each name asked for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hosts: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.hosts.append(host)
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=self.port, family=socket.AF_INET,
                proto=0, flags=socket.AI_NUMERICHOST,
            )
        ]  # fmt: skip

    async def close(self) -> None:
        return None


class Recorded:
    """The session given to ccxt: every request's URL and every host name resolved."""

    def __init__(self, port: int) -> None:
        self.urls: list[str] = []
        self.resolver = ToRecorder(port)
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._started)
        # ssl=False: the recorder's certificate is self-signed (the hosts are not really Binance)
        connector = aiohttp.TCPConnector(resolver=self.resolver, ssl=False)
        self.session = aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    async def _started(self, _: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        self.urls.append(f"{params.method} {params.url}")

    def hosts(self) -> set[str]:
        return {urlsplit(u.split(" ", 1)[1]).hostname or "" for u in self.urls} | set(
            self.resolver.hosts
        )


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[int]:
    """Yield the port of the exchange simulator served over TLS (self-signed)."""
    sim = Simulator.create(
        ScriptedFeed(dict(SIM_PRICES)), faults=FaultPlan(seed=0), api_key=KEY, api_secret=SECRET
    )
    runner = web.AppRunner(make_app(sim), shutdown_timeout=0.5, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=self_signed(tmp_path)).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def settings(**mode: Any) -> Settings:
    return Settings(
        exchange="binanceusdm", api_key=KEY, api_secret=SECRET, metrics_port=0,
        **mode,
    )  # fmt: skip


async def place_one(client: ExchangeClient, rec: Recorded) -> None:
    """Start the client through the recording session and place one entry order."""
    client.ex.session = rec.session  # ccxt uses a session it is given and opens none itself
    await client.start()
    now = await client.server_time()
    pid = entry_signal_id(SOL, "5m", now - now % 300_000 - 300_000, "long")
    order = await client.place_order(o.entry_intent(pid, SOL, "long", 1.0, now))
    assert order.filled == 1.0


@pytest.mark.parametrize(
    ("mode", "host"),
    [({"testnet": True}, DEMO_HOST), ({"live": True}, LIVE_HOST)],
    ids=["testnet", "live"],
)
async def test_order_path_goes_to_the_demo_host_unless_live(
    recorder: int, mode: dict[str, bool], host: str
) -> None:
    rec = Recorded(recorder)
    client = ExchangeClient.from_settings(settings(**mode), FAST)
    try:
        await place_one(client, rec)
    finally:
        await client.close()

    methods = [u.split(" ", 1)[0] for u in rec.urls]
    assert "POST" in methods, rec.urls  # the order itself went out
    assert rec.hosts() == {host}, rec.urls
    for url in rec.urls:
        assert urlsplit(url.split(" ", 1)[1]).scheme == "https", url


async def test_testnet_never_reaches_the_live_host_even_when_failing(recorder: int) -> None:
    """With every connection refused, retries and lookups still only ask the demo host."""
    rec = Recorded(recorder)
    rec.resolver.port = free_port()  # nothing listens there: every connection is refused
    client = ExchangeClient.from_settings(settings(testnet=True), FAST)
    client.ex.session = rec.session
    try:
        with pytest.raises(TemporaryError):
            await client.start()
        intent = o.entry_intent(entry_signal_id(SOL, "5m", 0, "long"), SOL, "long", 1.0, 0)
        with pytest.raises(TemporaryError):
            await client.place_order(intent)
    finally:
        await client.close()
    assert rec.hosts() == {DEMO_HOST}, rec.urls


# --- the services, as processes, with name resolution recorded and refused ---------------------

SITECUSTOMIZE = '''
"""Test harness: record every host name this process resolves, and refuse it."""
import os
import socket

_log = os.environ.get("NETGUARD_LOG")
_real = socket.getaddrinfo


def _numeric(host):
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _guarded(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if not name or name == "localhost" or _numeric(name):
        return _real(host, port, *args, **kwargs)
    with open(_log, "a") as fh:
        fh.write(f"{name} {port}\\n")
    raise socket.gaierror(socket.EAI_NONAME, f"network blocked by the test: {name}")


if _log:
    socket.getaddrinfo = _guarded
'''


def guard_dir(tmp: Path) -> Path:
    path = tmp / "netguard"
    path.mkdir(exist_ok=True)
    (path / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    return path


def resolved(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def start(service: str, env: dict[str, str], tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    full = clean_env(**env) | {
        "PYTHONPATH": f"{guard_dir(tmp)}:{ROOT}",
        "NETGUARD_LOG": str(log),
        "TB_METRICS_PORT": "0",
        "TB_LOG_DIR": str(tmp / "logs"),
        "TB_SCAN_INTERVAL": "1",
    }
    out = (tmp / f"{service}.out").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=full, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    finally:
        out.close()


def test_services_refuse_a_real_exchange_without_live_or_testnet(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    for service in (*EXCHANGE_SERVICES, "signals"):
        log = tmp_path / f"{service}.hosts"
        proc = start(service, {**REAL, "TB_REDIS_URL": redis_server.url}, tmp_path, log)
        assert proc.wait(60) == 2, (tmp_path / f"{service}.out").read_text()
        [line] = (tmp_path / f"{service}.out").read_text().splitlines()
        assert line.startswith("config error: TB_EXCHANGE=binanceusdm"), line
        assert "TB_LIVE=true" in line
        assert resolved(log) == [], f"{service} resolved a host before refusing"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


@pytest.mark.parametrize(
    ("mode", "hosts"),
    [({"TB_TESTNET": "true"}, {DEMO_HOST}), ({"TB_LIVE": "true"}, {LIVE_HOST})],
    ids=["testnet", "live"],
)
def test_services_resolve_only_the_host_of_their_mode(
    redis_server: EmbeddedRedis, tmp_path: Path, mode: dict[str, str], hosts: set[str]
) -> None:
    password = "guard-redis-pw"  # live mode insists on a Redis password
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", password)
    admin.close()
    env = {**REAL, **mode, "TB_REDIS_URL": redis_server.url, "TB_REDIS_PASSWORD": password}
    procs = {s: start(s, env, tmp_path, tmp_path / f"{s}.hosts") for s in EXCHANGE_SERVICES}
    try:
        deadline = time.monotonic() + 60
        for service, proc in procs.items():
            log = tmp_path / f"{service}.hosts"
            while len(resolved(log)) < 2:  # its first start attempt, and a retry
                out = (tmp_path / f"{service}.out").read_text()
                assert proc.poll() is None, f"{service} ended: {out}"
                assert time.monotonic() < deadline, f"{service} resolved nothing: {out}"
                time.sleep(0.1)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
    for service in EXCHANGE_SERVICES:
        names = {line.split(" ")[0] for line in resolved(tmp_path / f"{service}.hosts")}
        assert names == hosts, f"{service} resolved {names}"
