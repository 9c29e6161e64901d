"""Settings: the strategy's defaults, validation rules with one-line messages, env and TOML."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.config import ConfigError, Settings, load_settings

STRATEGY_DEFAULTS = {
    "LEVERAGE": 3,
    "TRADE_PCT": 0.80,
    "MAX_POSITIONS": 3,
    "TOP_N": 8,
    "TIMEFRAME": "5m",
    "CANDLE_LIMIT": 100,
    "MIN_BODY_PCT": 0.007,
    "LONG_VR": 1.8,
    "SHORT_VR": 1.5,
    "VR_WINDOW": 20,
    "CHOP_PERIOD": 14,
    "CHOP_THRESHOLD": 50,
    "SL_PCT": 0.02,
    "TRAIL_ACTIVATE": 0.02,
    "TRAIL_STOP": 0.005,
    "SURGE_THRESHOLD": 0.04,
    "SURGE_TRAIL_STOP": 0.0025,
    "FEE_RATE": 0.0005,
    "SLIPPAGE": 0.0,
    "SCAN_INTERVAL": 10,
    "COIN_ROTATE_HOURS": 3,
    "QUOTE": "USDT",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TB_"):
            monkeypatch.delenv(key)


def test_defaults_match_strategy_md() -> None:
    s = Settings()
    for name, value in STRATEGY_DEFAULTS.items():
        assert getattr(s, name.lower()) == value, name


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_LEVERAGE", "5")
    monkeypatch.setenv("tb_top_n", "4")
    s = load_settings()
    assert (s.leverage, s.top_n) == (5, 4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TB_TRAIL_STOP": "0.03"},
            "TB_TRAIL_STOP=0.03 must be smaller than TB_TRAIL_ACTIVATE=0.02",
        ),
        (
            {"TB_TRAIL_STOP": "0.02"},
            "TB_TRAIL_STOP=0.02 must be smaller than TB_TRAIL_ACTIVATE=0.02",
        ),
        (
            {"TB_SURGE_TRAIL_STOP": "0.006"},
            "TB_SURGE_TRAIL_STOP=0.006 must be at most TB_TRAIL_STOP=0.005",
        ),
        (
            {"TB_SURGE_THRESHOLD": "0.019"},
            "TB_SURGE_THRESHOLD=0.019 must be at least TB_TRAIL_ACTIVATE=0.02",
        ),
        ({"TB_LEVERAGE": "126"}, "TB_LEVERAGE=126 must be between 1 and 125"),
        ({"TB_LEVERAGE": "0"}, "TB_LEVERAGE=0 must be between 1 and 125"),
        ({"TB_MAX_POSITIONS": "0"}, "TB_MAX_POSITIONS=0 must be at least 1"),
        ({"TB_TOP_N": "0"}, "TB_TOP_N=0 must be at least 1"),
        ({"TB_TRADE_PCT": "1.0"}, "TB_TRADE_PCT=1.0 must be a fraction in (0, 1)"),
        ({"TB_SL_PCT": "0"}, "TB_SL_PCT=0.0 must be a fraction in (0, 1)"),
        ({"TB_FEE_RATE": "-0.1"}, "TB_FEE_RATE=-0.1 must be a fraction in (0, 1)"),
        ({"TB_SLIPPAGE": "1"}, "TB_SLIPPAGE=1.0 must be a fraction in [0, 1)"),
        ({"TB_TIMEFRAME": "7m"}, "TB_TIMEFRAME=7m must be one of"),
        ({"TB_RECLAIM_IDLE_MS": "0"}, "TB_RECLAIM_IDLE_MS=0 must be at least 1"),
        ({"TB_LEASE_TTL_MS": "-5"}, "TB_LEASE_TTL_MS=-5 must be at least 1"),
        ({"TB_SIM_PORT": "70000"}, "TB_SIM_PORT=70000 must be a port in 1..65535"),
        ({"TB_EMBEDDED_REDIS_PORT": "0"}, "TB_EMBEDDED_REDIS_PORT=0 must be a port in 1..65535"),
        ({"TB_METRICS_PORT": "-1"}, "TB_METRICS_PORT=-1 must be a port in 0..65535"),
        ({"TB_LEVERAGE": "abc"}, "TB_LEVERAGE='abc'"),
        ({"TB_EXCHANGE": "binanceusdm"}, "needs TB_API_KEY and TB_API_SECRET"),
        (
            {"TB_EXCHANGE": "binanceusdm", "TB_API_KEY": "k", "TB_API_SECRET": ""},
            "needs TB_API_KEY and TB_API_SECRET",
        ),
        (
            {"TB_EXCHANGE": "binanceusdm", "TB_API_KEY": "k", "TB_API_SECRET": "s"},
            "TB_EXCHANGE=binanceusdm trades real money: set TB_LIVE=true to confirm",
        ),
        ({"TB_LIVE": "true"}, "TB_LIVE=true needs a real exchange"),
        (
            {
                "TB_EXCHANGE": "binanceusdm",
                "TB_API_KEY": "k",
                "TB_API_SECRET": "s",
                "TB_LIVE": "true",
                "TB_TESTNET": "true",
            },
            "contradict each other",
        ),
        ({"TB_RECONCILE_INTERVAL": "0"}, "TB_RECONCILE_INTERVAL=0.0 must be positive"),
        ({"TB_ENTRY_WAIT_MS": "0"}, "TB_ENTRY_WAIT_MS=0 must be at least 1"),
    ],
)
def test_invalid_settings_name_setting_value_and_rule(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_slippage_zero_is_allowed() -> None:
    assert Settings(slippage=0.0).slippage == 0.0


def test_boundaries_that_are_allowed() -> None:
    s = Settings(surge_trail_stop=0.005, surge_threshold=0.02, leverage=125)
    assert (s.surge_trail_stop, s.surge_threshold, s.leverage) == (0.005, 0.02, 125)


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text('LEVERAGE = 7\ntop_n = 5\nTB_QUOTE = "USDC"\n')
    monkeypatch.setenv("TB_TOP_N", "6")
    s = load_settings(cfg)
    assert (s.leverage, s.top_n, s.quote) == (7, 6, "USDC")


def test_toml_unknown_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("LEVERAGEE = 7\n")
    with pytest.raises(ConfigError, match="unknown setting 'LEVERAGEE'"):
        load_settings(cfg)


def test_config_file_does_not_leak_into_environment(tmp_path: Path) -> None:
    import os

    cfg = tmp_path / "bot.toml"
    cfg.write_text("LEVERAGE = 7\n")
    assert load_settings(cfg).leverage == 7
    assert "TB_CONFIG" not in os.environ
    assert load_settings().leverage == 3


def test_tb_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("LEVERAGE = 9\n")
    monkeypatch.setenv("TB_CONFIG", str(cfg))
    assert load_settings().leverage == 9


def test_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_toml_bad_value_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("TRAIL_STOP = 0.03\n")
    with pytest.raises(ConfigError, match=re.escape(f"{cfg}: TRAIL_STOP=0.03 must be smaller")):
        load_settings(cfg)


def test_secrets_masked() -> None:
    s = Settings(api_key="key-123456", api_secret="sec-abcdef", redis_url="redis://:pw@h:6379/0")
    text = " ".join(s.masked().values()) + repr(s) + str(s)
    for secret in ("key-123456", "sec-abcdef", ":pw@"):
        assert secret not in text


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")} | env
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
        timeout=60,
    )


def test_cli_config_bad_value_exits_2_with_one_line() -> None:
    proc = _run_cli("config", env={"TB_TRAIL_STOP": "0.03"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["config error: TB_TRAIL_STOP=0.03 must be smaller than TB_TRAIL_ACTIVATE=0.02"]


def test_cli_config_prints_every_setting_and_masks_secret() -> None:
    proc = _run_cli("config", env={"TB_API_SECRET": "s3cr3t-value", "TB_API_KEY": "k3y-value"})
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {f"TB_{name}" for name in STRATEGY_DEFAULTS} <= names
    assert "s3cr3t-value" not in proc.stdout
    assert "k3y-value" not in proc.stdout
    assert "TB_API_SECRET" in names


def test_a_secret_in_the_toml_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("API_KEY = 123456789\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).startswith(f"{cfg}: API_KEY holds a secret")
    assert "set TB_API_KEY or TB_API_KEY_FILE" in str(info.value)
    assert "123456789" not in str(info.value)


def test_misspelt_env_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_LEVERGE", "1")
    with pytest.raises(ConfigError, match=re.escape("TB_LEVERGE: unknown setting (did you mean")):
        load_settings()


def test_secrets_for_the_log_filter_include_the_redis_password() -> None:
    s = Settings(api_key="key-1", api_secret="sec-2", redis_url="redis://u:pw-3@h:6379/0")
    values = {v.get_secret_value() for v in s.secrets()}
    assert values == {"key-1", "sec-2", "redis://u:pw-3@h:6379/0", "pw-3"}
    assert Settings(api_key=None, api_secret=None, redis_url=None).secrets() == []


def test_mode_names_what_money_is_at_stake() -> None:
    assert Settings().mode == "paper"
    key, secret = SecretStr("k"), SecretStr("s")
    real = Settings(exchange="binanceusdm", testnet=True, api_key=key, api_secret=secret)
    assert real.mode == "testnet"
    real = Settings(exchange="binanceusdm", live=True, api_key=key, api_secret=secret)
    assert real.mode == "live"


def test_live_mode_refuses_a_redis_url_without_a_password() -> None:
    live = {
        "exchange": "binanceusdm", "live": True,
        "api_key": "k", "api_secret": "s",  # fake: nothing is sent
    }  # fmt: skip
    with pytest.raises(ValidationError, match="TB_LIVE=true needs a Redis password"):
        Settings(**live, redis_url="redis://redis:6379/0")  # type: ignore[arg-type]
    ok = Settings(**live, redis_url="redis://redis:6379/0", redis_password="p@ss:/w")  # type: ignore[arg-type]
    assert ok.mode == "live"
    assert Settings(**live, redis_url="redis://:pw@redis:6379/0").mode == "live"  # type: ignore[arg-type]


def test_a_redis_url_without_a_scheme_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError, match="TB_REDIS_URL must start with redis://") as err:
        Settings(redis_url="secret-host:6379")
    assert "secret-host" not in str(err.value).split("input_value")[0]


def test_secrets_can_come_from_files_named_by_file_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text("key-from-file\n")  # `echo key > file` leaves a newline
    (tmp_path / "secret").write_text("secret-from-file")
    monkeypatch.setenv("TB_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("TB_API_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("TB_API_SECRET", "secret-from-file")  # the same value twice is no conflict
    s = load_settings()
    assert s.api_key is not None
    assert s.api_secret is not None
    assert s.api_key.get_secret_value() == "key-from-file"
    assert s.api_secret.get_secret_value() == "secret-from-file"
    assert s.source("api_key") == "TB_API_KEY_FILE"
    assert s.source("api_secret") == "env"


def test_config_shows_where_each_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("LEVERAGE = 5\nTOP_N = 4\n")
    monkeypatch.setenv("TB_TOP_N", "6")
    monkeypatch.setenv("TB_REDIS_URL", "redis://bot:pw-123@127.0.0.1:6379/0")
    s = load_settings(cfg, max_positions=2)
    assert (s.leverage, s.top_n, s.max_positions) == (5, 6, 2)
    assert [s.source(f) for f in ("leverage", "top_n", "max_positions", "sl_pct")] == [
        str(cfg),
        "env",
        "argument",
        "default",
    ]
    shown = s.masked()
    assert shown["TB_REDIS_URL"] == "redis://bot:**********@127.0.0.1:6379/0"
    assert shown["TB_LEVERAGE"] == "5"
