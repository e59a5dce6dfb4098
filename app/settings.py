"""One typed settings object, read from ``POOLGATE_*`` environment variables once.

Every variable may also be given as ``POOLGATE_<NAME>_FILE`` pointing at a file that
holds the value (for secrets mounted by an orchestrator). A bad value fails at start
with one line that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Settings", "SettingsError", "redact_url"]

PREFIX = "POOLGATE_"
LIMITS_SCHEMES = ("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")
LOG_LEVELS = ("debug", "info", "warning", "error")
BALANCERS = ("least_inflight", "round_robin", "weighted_random", "latency", "usage")


class SettingsError(ValueError):
    """A setting has a value poolgate cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    catalog_file: Path | None = None
    limits_url: str = "memory://"
    workers: int = 1
    sync_interval: float = 0.5
    log_level: str = "info"
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    """Fernet keys for upstream credentials, newest first; empty means a key file in the data dir."""
    balancer: str = "least_inflight"
    connect_timeout: float = 5.0
    first_byte_timeout: float = 300.0
    idle_timeout: float = 120.0
    total_timeout: float = 1800.0
    max_body_bytes: int = 32 * 1024 * 1024
    database_pool_size: int = 20
    """The most PostgreSQL connections one process opens (half kept open, half opened under load)."""
    quota_fail_open: bool = False
    """With the shared quota store (Redis) away: serve without quotas instead of answering 503."""
    single_instance: bool = False
    """On PostgreSQL with memory:// limits: the operator states that only one instance runs."""
    head_timeout: float = 10.0
    """Seconds a connection may take to send a complete request head (slow clients are closed)."""
    keepalive_timeout: float = 15.0
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = 4096
    """Open client connections per process; past it new requests get a 503 and the connection closes."""
    max_event_bytes: int = 8 * 1024 * 1024
    """Largest single server-sent event relayed from an upstream; a larger one ends the stream."""
    usage_queue: int = 20_000
    """Usage rows held in memory while the database refuses writes; past it they go to the spill file."""
    metrics_public: bool = False
    """Serve /metrics without a token (for scraping on a private network)."""
    metrics_token: str = field(default="", repr=False)
    """A token that may read /metrics only (admin tokens may too)."""
    websocket: bool = True
    """Serve the Responses API over WebSocket on /v1/responses (as Codex speaks it); off answers 426."""
    owner_wait: float = 10.0
    """Seconds a request that must go to a response's own upstream waits for it to finish cooling down."""
    secure_cookies: bool = False
    """Mark dashboard cookies Secure even on plain HTTP requests (set it behind a TLS-terminating proxy)."""

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", sqlite_url(self.data_dir / "poolgate.db"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        _places(env, values)
        _choices(env, values)
        _numbers(env, values)
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (CLI flags win over the environment)."""
        if "data_dir" in changes and "database_url" not in changes and self._default_database():
            changes["database_url"] = ""
        return replace(self, **changes)  # type: ignore[arg-type]

    def _default_database(self) -> bool:
        return self.database_url == sqlite_url(self.data_dir / "poolgate.db")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_FLOATS = (  # name, field, lowest, highest
    ("SYNC_INTERVAL", "sync_interval", 0.05, 1.5),  # capped: a change reaches every process within 2 s
    ("CONNECT_TIMEOUT", "connect_timeout", 0.1, 300.0),
    ("FIRST_BYTE_TIMEOUT", "first_byte_timeout", 0.1, 3600.0),
    ("IDLE_TIMEOUT", "idle_timeout", 0.1, 3600.0),
    ("TOTAL_TIMEOUT", "total_timeout", 0.1, 86400.0),
    ("HEAD_TIMEOUT", "head_timeout", 0.5, 300.0),
    ("KEEPALIVE_TIMEOUT", "keepalive_timeout", 0.5, 3600.0),
    ("OWNER_WAIT", "owner_wait", 0.0, 600.0),
)
_INTS = (
    ("PORT", "port", 1, 65535),
    ("WORKERS", "workers", 1, 256),
    ("MAX_BODY_BYTES", "max_body_bytes", 1024, 1024 * 1024 * 1024),
    ("DATABASE_POOL_SIZE", "database_pool_size", 2, 1000),
    ("MAX_CONNECTIONS", "max_connections", 16, 1_000_000),
    ("MAX_EVENT_BYTES", "max_event_bytes", 64 * 1024, 1024 * 1024 * 1024),
    ("USAGE_QUEUE", "usage_queue", 100, 10_000_000),
)
_BOOLS = (
    ("QUOTA_FAIL_OPEN", "quota_fail_open"), ("SINGLE_INSTANCE", "single_instance"),
    ("METRICS_PUBLIC", "metrics_public"), ("WEBSOCKET", "websocket"), ("SECURE_COOKIES", "secure_cookies"),
)


def _places(env: Mapping[str, str], values: dict[str, object]) -> None:
    """Where things live: the data directory, the databases, the catalog file, the address to listen on."""
    if (raw := _read(env, "DATA_DIR")) is not None:
        if not raw.strip():
            raise SettingsError(f"{PREFIX}DATA_DIR: must not be empty")
        values["data_dir"] = Path(raw).expanduser()
    if (raw := _read(env, "DATABASE_URL")) is not None:
        values["database_url"] = _database_url(raw)
    if (raw := _read(env, "HOST")) is not None:
        if not raw.strip():
            raise SettingsError(f"{PREFIX}HOST: must not be empty")
        values["host"] = raw.strip()
    if (raw := _read(env, "CATALOG_FILE")) is not None and raw.strip():
        values["catalog_file"] = Path(raw).expanduser()
    if (raw := _read(env, "LIMITS_URL")) is not None:
        if not raw.startswith(LIMITS_SCHEMES):
            raise SettingsError(
                f"{PREFIX}LIMITS_URL: expected memory:// or a Redis URL such as redis://host:6379/0, "
                f"got {redact_url(raw)!r}"
            )
        values["limits_url"] = raw


def _choices(env: Mapping[str, str], values: dict[str, object]) -> None:
    """Named choices, switches and secrets."""
    if (raw := _read(env, "LOG_LEVEL")) is not None:
        level = raw.strip().lower()
        if level not in LOG_LEVELS:
            raise SettingsError(f"{PREFIX}LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")
        values["log_level"] = level
    if (raw := _read(env, "ENCRYPTION_KEYS")) is not None:
        values["encryption_keys"] = _fernet_keys(raw)
    if (raw := _read(env, "BALANCER")) is not None:
        if raw.strip() not in BALANCERS:
            raise SettingsError(f"{PREFIX}BALANCER: expected one of {', '.join(BALANCERS)}, got {raw!r}")
        values["balancer"] = raw.strip()
    for name, field_name in _BOOLS:
        if (raw := _read(env, name)) is not None:
            values[field_name] = _bool(name, raw)
    if (raw := _read(env, "METRICS_TOKEN")) is not None:
        token = raw.strip()
        if token and len(token) < 16:
            raise SettingsError(f"{PREFIX}METRICS_TOKEN: use at least 16 characters")
        values["metrics_token"] = token


def _numbers(env: Mapping[str, str], values: dict[str, object]) -> None:
    for name, field_name, low, high in _FLOATS:
        if (raw := _read(env, name)) is not None:
            values[field_name] = _float(name, raw, low, high)
    for name, field_name, low_int, high_int in _INTS:
        if (raw := _read(env, name)) is not None:
            values[field_name] = _int(name, raw, low_int, high_int)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _read(env: Mapping[str, str], name: str) -> str | None:
    direct = env.get(PREFIX + name)
    file_name = env.get(f"{PREFIX}{name}_FILE")
    if direct is not None and file_name:
        raise SettingsError(f"{PREFIX}{name}: set either {PREFIX}{name} or {PREFIX}{name}_FILE, not both")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{PREFIX}{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
    return direct


def _bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{PREFIX}{name}: expected true or false, got {raw!r}")


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{PREFIX}{name}: expected {low}-{high}, got {value}")
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}: expected a number of seconds, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{PREFIX}{name}: expected {low}-{high}, got {value}")
    return value


def _database_url(raw: str) -> str:
    url = raw.strip()
    if url.startswith("sqlite:///"):
        url = "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    elif url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise SettingsError(
            f"{PREFIX}DATABASE_URL: expected sqlite:///path or postgresql://..., got {redact_url(url)!r}"
        )
    return url


def _fernet_keys(raw: str) -> tuple[str, ...]:
    """Comma- or newline-separated Fernet keys, newest first."""
    import base64
    import binascii

    keys = tuple(part.strip() for part in raw.replace("\n", ",").split(",") if part.strip())
    if not keys:
        raise SettingsError(f"{PREFIX}ENCRYPTION_KEYS: no key given")
    for position, key in enumerate(keys, 1):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise SettingsError(
                f"{PREFIX}ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe base64 bytes; "
                "make one with: poolgate secrets generate)"
            )
    return keys


def redact_url(url: str) -> str:
    """Hide a password in a URL so it never reaches an error message."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
