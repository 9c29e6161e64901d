"""docker-compose.yml and .env.example, checked with docker-compose and against the code.

- Debian's docker-compose 1.29 (``docker-compose config``) accepts the file, with and
  without the ``paper`` profile, in a tmp copy of the deployment (docker-compose.yml,
  deploy/, .env.example as .env, the two passwords from the environment), and refuses it
  while the passwords in .env are still empty.
- Every command and health check of a tradebot container is a real entry point: a
  ``python -m`` package with a ``__main__`` or a ``tradebot`` subcommand, whose options
  parse (typer's parser reads them, as the program would).
- Every TB_* name in the compose file and .env.example is a setting, .env.example lists
  every setting, its values are the defaults (and load as a valid paper-mode config), and
  the simulator gets the same timeframe and fee rate as the services.
- The Prometheus scrape targets (deploy/prometheus/prometheus.yml) are compose services on
  their TB_METRICS_PORT; signals can scale; only Grafana and Prometheus are published, on
  127.0.0.1; the Redis password is on no command line.
- The Redis entrypoint's config writing, run for a password full of quotes, spaces, ``$``,
  ``#``, backslashes, a tab, a newline and non-ASCII, starts a real redis-server that
  accepts that password and refuses another one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import typer
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.config import CONFIG_ENV, SIM_API_KEY, SIM_API_SECRET, Settings, env_name, load_settings
from shared.redisconn import free_port, server_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
DOCKER_COMPOSE = shutil.which("docker-compose")

needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose (Debian's 1.29) is not installed; .ci/run does"
)

BOT_IMAGE = "tradebot:local"
SINGLE_ACTIVE = ("market-data", "executor", "state")
SIMULATOR = "exchange-sim"
# Nasty on purpose: quotes, spaces, $, #, :, @, /, a backslash; the same in every test.
REDIS_PASSWORD = "r3dis pw: @/'\"$HOME #1 \\x"
GRAFANA_PASSWORD = "grafana-admin-pw"
SETTINGS = {env_name(name) for name in Settings.model_fields}
# Lines of .env.example that differ from the setting's default, on purpose.
EXAMPLE_NOT_DEFAULT = {"TB_API_KEY": SIM_API_KEY, "TB_API_SECRET": SIM_API_SECRET}
ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


# --- running docker-compose ---------------------------------------------------------------


def deployment(dest: Path, env_text: str) -> Path:
    """Copy the deployment files to ``dest`` with ``env_text`` as its .env; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMPOSE_FILE, dest / "docker-compose.yml")
    if (ROOT / "deploy").is_dir():
        shutil.copytree(ROOT / "deploy", dest / "deploy", dirs_exist_ok=True)
    (dest / ".env").write_text(env_text)
    return dest


def compose(project: Path, *args: str, passwords: bool = True) -> subprocess.CompletedProcess[str]:
    """Run docker-compose in ``project`` with a clean environment (plus the two passwords)."""
    assert DOCKER_COMPOSE is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project)}
    if passwords:
        env |= {"REDIS_PASSWORD": REDIS_PASSWORD, "GRAFANA_ADMIN_PASSWORD": GRAFANA_PASSWORD}
    return subprocess.run(
        [DOCKER_COMPOSE, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resolved(project: Path, *profile: str) -> dict[str, Any]:
    """Return ``docker-compose [--profile P] config`` parsed; fail with its stderr if refused."""
    args = [a for p in profile for a in ("--profile", p)]
    done = compose(project, *args, "config")
    assert done.returncode == 0, f"docker-compose {' '.join(args)} config failed:\n{done.stderr}"
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def unescape(value: Any) -> str:
    """Return a value of the resolved config as the container gets it (``$$`` is one ``$``)."""
    return str(value).replace("$$", "$")


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The resolved config without a profile ("default") and with ``--profile paper``."""
    if DOCKER_COMPOSE is None:
        pytest.skip("docker-compose (Debian's 1.29) is not installed; .ci/run does")
    project = deployment(tmp_path_factory.mktemp("compose"), ENV_EXAMPLE.read_text())
    return {"default": resolved(project), "paper": resolved(project, "paper")}


@pytest.fixture(scope="module")
def paper(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services of the paper-profile config, by name."""
    services: dict[str, dict[str, Any]] = configs["paper"]["services"]
    return services


def bot_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the services that run the tradebot image, the simulator excluded."""
    return {
        name: svc
        for name, svc in services.items()
        if svc.get("image") == BOT_IMAGE and name != SIMULATOR
    }


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """Return a service's environment as the container gets it (env_file merged in)."""
    env = svc.get("environment") or {}
    return {k: unescape(v) for k, v in env.items()}


# --- .env.example -------------------------------------------------------------------------


def example_entries() -> list[tuple[str, str, bool]]:
    """Return (name, value, active) for every NAME=value line of .env.example, commented too."""
    entries = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = ENV_LINE.match(line.strip())
        if m:
            entries.append((m.group(2), m.group(3), m.group(1) is None))
    return entries


def test_env_example_lists_every_setting_with_a_meaning() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = [name for name, _, _ in example_entries()]
    assert len(names) == len(set(names)), "a variable is listed twice"
    tb = {n for n in names if n.startswith("TB_")}
    assert tb - SETTINGS == set(), "not settings of shared/config.py"
    assert SETTINGS - tb == set(), "settings missing from .env.example"
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= set(names)
    for i, line in enumerate(lines):
        m = ENV_LINE.match(line.strip())
        if m:
            above = lines[i - 1].strip() if i else ""
            missing = f".env.example line {i + 1} ({m.group(2)}) has no one-line meaning above it"
            assert above.startswith("#"), missing
            assert not ENV_LINE.match(above), missing


def test_env_example_values_are_the_defaults_and_a_valid_paper_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    active = {n: v for n, v, on in example_entries() if on and n.startswith("TB_")}
    assert active["TB_EXCHANGE"] == "sim", "paper mode must be the default"
    assert active["TB_API_KEY"] == SIM_API_KEY
    assert active["TB_API_SECRET"] == SIM_API_SECRET
    for var in list(os.environ):
        if var.upper().startswith("TB_"):
            monkeypatch.delenv(var)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # raises ConfigError on any bad value or combination
    assert settings.mode == "paper"
    for field, info in Settings.model_fields.items():
        name = env_name(field)
        if name not in active or name in EXAMPLE_NOT_DEFAULT:
            continue
        assert getattr(settings, field) == info.default, f"{name}={active[name]} is not the default"


def test_env_example_passwords_are_placeholders_compose_refuses(tmp_path: Path) -> None:
    if DOCKER_COMPOSE is None:
        pytest.skip("docker-compose (Debian's 1.29) is not installed; .ci/run does")
    project = deployment(tmp_path, ENV_EXAMPLE.read_text())
    done = compose(project, "config", passwords=False)
    assert done.returncode != 0
    assert "REDIS_PASSWORD" in done.stderr or "GRAFANA_ADMIN_PASSWORD" in done.stderr


# --- the compose file against the code ------------------------------------------------------


def check_command(argv: list[str]) -> None:
    """Fail unless ``argv`` runs a real entry point with options it accepts."""
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"python -m {module}: no such module"
        if spec.submodule_search_locations is not None:  # a package: runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, (
                f"python -m {module}: the package has no __main__"
            )
            module = f"{module}.__main__"
        if len(argv) > 3:
            typer_app = getattr(importlib.import_module(module), "app", None)
            assert isinstance(typer_app, typer.Typer), f"{module} takes no options: {argv[3:]}"
            command = typer.main.get_command(typer_app)
            command.make_context(argv[2], list(argv[3:]))  # raises on an unknown option
        return
    assert argv[0] == "tradebot", f"not a tradebot entry point: {argv}"
    from shared.cli import app as cli

    commands = getattr(typer.main.get_command(cli), "commands", {})
    sub = commands.get(argv[1]) if len(argv) > 1 else None
    assert sub is not None, f"tradebot has no subcommand {argv[1:2]}"
    sub.make_context(argv[1], list(argv[2:]))


def health_argv(svc: dict[str, Any]) -> list[str]:
    """Return the health check's command line (its CMD form)."""
    test = [str(a) for a in svc["healthcheck"]["test"]]
    assert test[0] == "CMD", f"expected an exec-form health check, got {test}"
    return test[1:]


def test_compose_config_accepts_both_profiles(configs: dict[str, dict[str, Any]]) -> None:
    # docker-compose 1.29's `config` lists a service of an inactive profile too, so which
    # services a profile starts is read from their `profiles`.
    services = configs["paper"]["services"]
    assert set(configs["default"]["services"]) == set(services)
    gated = {name: svc["profiles"] for name, svc in services.items() if svc.get("profiles")}
    assert gated == {SIMULATOR: ["paper"]}, "the paper profile adds the simulator alone"
    expected = {"redis", "prometheus", "grafana", "signals", SIMULATOR}
    expected |= {s for name in SINGLE_ACTIVE for s in (name, f"{name}-standby")}
    assert set(services) == expected


def test_every_command_and_health_check_is_a_real_entry_point(
    paper: dict[str, dict[str, Any]],
) -> None:
    tradebot = {n: s for n, s in paper.items() if s.get("image") == BOT_IMAGE}
    assert set(tradebot) == set(bot_services(paper)) | {SIMULATOR}
    for name, svc in tradebot.items():
        assert svc.get("build"), f"{name} must build the one image"
        check_command([str(a) for a in svc["command"]])
        check_command(health_argv(svc))
    assert health_argv(paper[SIMULATOR]) == ["tradebot", "health", "--exchange-sim"]
    for name, svc in bot_services(paper).items():
        assert health_argv(svc) == ["tradebot", "health"], name


def test_services_run_their_module(paper: dict[str, dict[str, Any]]) -> None:
    for name, svc in bot_services(paper).items():
        module = "services." + name.removesuffix("-standby").replace("-", "_")
        assert svc["command"] == ["python", "-m", module], name


def test_tb_names_are_settings() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\bTB_[A-Z0-9_]+", text))
    assert used, "the compose file sets no TB_ variable?"
    assert used - SETTINGS - {CONFIG_ENV} == set(), "not settings of shared/config.py"


def test_bot_services_connection_settings(paper: dict[str, dict[str, Any]]) -> None:
    sim_port = sim_option(paper, "--port")
    for name, svc in bot_services(paper).items():
        env = environment(svc)
        assert env.keys() - SETTINGS - {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} == set()
        url = urlsplit(env["TB_REDIS_URL"])
        assert url.hostname == "redis", name
        assert url.hostname in paper, name
        assert url.password is None, f"{name}: the password belongs in TB_REDIS_PASSWORD"
        assert env["TB_REDIS_PASSWORD"] == REDIS_PASSWORD, name
        assert env["TB_SIM_HOST"] == SIMULATOR, name
        assert env["TB_SIM_PORT"] == sim_port, name
        assert env["TB_METRICS_PORT"] == "9100", name
        assert env["TB_EXCHANGE"] == "sim", name
        assert SIMULATOR not in (svc.get("depends_on") or {}), (
            f"{name} must not depend on the simulator (profile paper only)"
        )
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert svc["restart"] == "unless-stopped", name
        assert "logs:/app/logs" in " ".join(svc["volumes"]), name


def sim_option(services: dict[str, dict[str, Any]], option: str) -> str:
    """Return the value the simulator's command gives an option."""
    command = [str(a) for a in services[SIMULATOR]["command"]]
    return command[command.index(option) + 1]


def test_simulator_gets_no_keys_and_the_services_timeframe_and_fee(
    paper: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    sim = paper[SIMULATOR]
    assert not sim.get("env_file"), "the simulator gets no exchange keys (nor .env)"
    assert not any(k.startswith("TB_API") for k in environment(sim))
    assert "sim-data:/app/data" in " ".join(sim["volumes"])
    assert sim_option(paper, "--state-file").startswith("/app/data/")
    bot_env = environment(paper["signals"])
    assert sim_option(paper, "--timeframe") == bot_env["TB_TIMEFRAME"]
    assert sim_option(paper, "--fee-rate") == bot_env["TB_FEE_RATE"]
    # Without them in .env, the simulator's defaults in docker-compose.yml are the settings'.
    text = "".join(
        line + "\n"
        for line in ENV_EXAMPLE.read_text().splitlines()
        if not line.startswith(("TB_TIMEFRAME=", "TB_FEE_RATE="))
    )
    bare = resolved(deployment(tmp_path, text), "paper")["services"]
    defaults = Settings.model_fields
    assert sim_option(bare, "--timeframe") == defaults["timeframe"].default
    assert float(sim_option(bare, "--fee-rate")) == defaults["fee_rate"].default


def test_single_active_services_have_a_standby(paper: dict[str, dict[str, Any]]) -> None:
    for name in SINGLE_ACTIVE:
        active, standby = paper[name], paper[f"{name}-standby"]
        for key in ("image", "command", "environment", "healthcheck", "depends_on", "volumes"):
            assert active[key] == standby[key], f"{name}-standby differs in {key}"


def test_signals_scales_and_nothing_else_is_published(paper: dict[str, dict[str, Any]]) -> None:
    signals = paper["signals"]
    assert signals["deploy"]["replicas"] == 2
    for name, svc in paper.items():
        assert "container_name" not in svc, f"{name}: a container_name blocks --scale"
        if name not in ("grafana", "prometheus"):
            assert "ports" not in svc, f"{name} must not publish a port"
            continue
        for port in svc["ports"]:
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port}"
            assert str(text).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_redis_password_is_on_no_command_line(configs: dict[str, dict[str, Any]]) -> None:
    for services in (configs["default"]["services"], configs["paper"]["services"]):
        for name, svc in services.items():
            lines = [svc.get("command"), svc.get("entrypoint"), svc.get("healthcheck", {})]
            text = unescape(lines)
            for secret in (REDIS_PASSWORD, "REDIS_PASSWORD", " -a ", "--pass"):
                assert secret not in text, f"{name}: {secret!r} on a command line"
    redis_svc = configs["default"]["services"]["redis"]
    assert environment(redis_svc) == {"REDISCLI_AUTH": REDIS_PASSWORD}
    assert "redis-data:/data" in " ".join(redis_svc["volumes"])
    assert "ports" not in redis_svc
    script = unescape(redis_svc["entrypoint"][-1])
    assert "--appendonly yes --appendfsync always" in script


def test_images_are_pinned(configs: dict[str, dict[str, Any]]) -> None:
    for name, svc in configs["paper"]["services"].items():
        image = svc["image"]
        if image == BOT_IMAGE:
            continue
        tag = image.rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9.]+)?", tag), f"{name}: {image} not pinned"


def test_prometheus_scrapes_every_bot_service_on_its_metrics_port(
    paper: dict[str, dict[str, Any]],
) -> None:
    if not PROMETHEUS_YML.exists():
        pytest.skip("deploy/prometheus/prometheus.yml is not written yet")
    prometheus = yaml.safe_load(PROMETHEUS_YML.read_text())
    for rule_file in prometheus.get("rule_files", []):
        assert (PROMETHEUS_YML.parent / rule_file).exists(), f"rule file {rule_file} missing"
    scraped: set[str] = set()
    for job in prometheus["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "A") == "A"
            assert job["job_name"] in sd["names"], "a job is named like its compose service"
            for host in sd["names"]:
                check_target(paper, host, int(sd["port"]))
                scraped.add(host)
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                check_target(paper, host, int(port))
                scraped.add(host)
    assert set(bot_services(paper)) <= scraped, "a bot service nobody scrapes"


def check_target(services: dict[str, dict[str, Any]], host: str, port: int) -> None:
    """Fail unless host:port is a compose service's metrics port (or Prometheus itself)."""
    if host in ("localhost", "127.0.0.1"):  # Prometheus scraping itself
        assert port == 9090
        return
    assert host in services, f"scrape target {host} is not a compose service"
    env = environment(services[host])
    metrics_port = env.get("TB_METRICS_PORT", str(Settings.model_fields["metrics_port"].default))
    assert int(metrics_port) == port, f"{host} serves metrics on {metrics_port}, not {port}"


def test_grafana_and_prometheus_mount_the_deploy_files(
    paper: dict[str, dict[str, Any]],
) -> None:
    grafana = paper["grafana"]
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == GRAFANA_PASSWORD
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {str(v).split(":")[1]: str(v) for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"].endswith(":ro")
    assert mounts["/var/lib/grafana/dashboards"].endswith(":ro")
    prometheus = paper["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = {str(v).split(":")[1]: str(v) for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus"].endswith(":ro")
    if GRAFANA_DATASOURCES.is_dir():
        for path in GRAFANA_DATASOURCES.glob("*.y*ml"):
            for source in yaml.safe_load(path.read_text()).get("datasources", []):
                url = urlsplit(source["url"])
                assert url.hostname in paper, f"{path.name}: {source['url']} is no service"
                assert url.port == 9090


# --- the Redis entrypoint with a real server -----------------------------------------------

NASTY = "p@ss: w/o\"rd $HOME \\ 'q' #x\ttab é\nnewline %s \\x41"


def test_redis_entrypoint_writes_a_config_redis_reads_back_exactly(
    configs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    entrypoint = [unescape(a) for a in configs["default"]["services"]["redis"]["entrypoint"]]
    assert entrypoint[:2] == ["sh", "-c"]
    script = entrypoint[2]
    conf_path = "/run/redis/redis.conf"
    assert conf_path in script
    conf = tmp_path / "redis.conf"
    script = script.replace(conf_path, str(conf))
    # Stand-ins for the image's entrypoint (run redis-server here, on a free port and a tmp
    # dir instead of /data) and for chown (the redis user is the image's).
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    data.mkdir()
    port = free_port()
    shim = bin_dir / "docker-entrypoint.sh"
    shim.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = sys.argv[2:]\n"  # drop 'redis-server': the server binary is given below
        f"args[args.index('--dir') + 1] = {str(data)!r}\n"
        f"binary = {str(server_binary(prefer_path=True))!r}\n"
        f"os.execv(binary, [binary, *args, '--port', '{port}', '--bind', '127.0.0.1'])\n"
    )
    (bin_dir / "chown").write_text("#!/bin/sh\nexit 0\n")
    for exe in (shim, bin_dir / "chown"):
        exe.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "REDISCLI_AUTH": NASTY}
    proc = subprocess.Popen(
        ["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    no_retry = Retry(NoBackoff(), 0)  # poll here, without redis-py's own backoff
    client = redis.Redis(port=port, password=NASTY, socket_timeout=5, retry=no_retry)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, f"redis-server exited: {proc.communicate()[1]!r}"
                assert time.monotonic() < deadline, "redis-server did not answer within 15 s"
                time.sleep(0.05)
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert NASTY.encode() not in conf.read_bytes()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=NASTY[:-1], socket_timeout=5, retry=no_retry).ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # sh exec'd the server
        assert b"redis" in cmdline
        assert NASTY.encode() not in cmdline
    finally:
        client.close()
        proc.terminate()
        proc.communicate(timeout=15)
