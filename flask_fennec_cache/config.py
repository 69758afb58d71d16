"""Every ``FENNEC_CACHE_*`` configuration key, its default and meaning, defined once."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from ._urls import check_url, redact_url, scheme_of
from ._validate import check_prefix, pickle_secret
from .compression import Compressor
from .errors import ConfigurationError
from .serializers import MSGPACK_MISSING, msgpack_available

__all__ = [
    "CONFIG_KEYS",
    "DEFAULTS",
    "ConfigKey",
    "Settings",
    "apply_defaults",
    "markdown_table",
    "read_settings",
    "store_effective",
]


def _text(value: Any) -> str:
    return str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected a boolean, got {value!r}")


def _finite(value: Any, expected: str) -> float:
    """*value* (a number, or a string of one) as a finite float; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected {expected}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected {expected}, got {value!r}")
    return number


def _positive_float(value: Any) -> float:
    number = _finite(value, "a number > 0")
    if not number > 0:
        raise ValueError(f"expected a number > 0, got {value!r}")
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        whole = _finite(value, "a whole number > 0")
        if whole != int(whole):
            raise ValueError(f"expected a whole number > 0, got {value!r}")
        number = int(whole)
    if number <= 0:
        raise ValueError(f"expected a whole number > 0, got {value!r}")
    return number


def _fraction(value: Any) -> float:
    number = _finite(value, "a fraction in [0, 1)")
    if not 0 <= number < 1:
        raise ValueError(f"expected a fraction in [0, 1), got {value!r}")
    return number


def _optional_ttl(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "0")):
        return None
    return None if value == 0 and not isinstance(value, bool) else _positive_int(value)


def _url(value: Any) -> str:
    return check_url(value, "FENNEC_CACHE_URL")


def _serializer(value: Any) -> str:
    if value not in ("json", "msgpack", "pickle"):
        raise ValueError(f"expected 'json', 'msgpack' or 'pickle', got {value!r}")
    if value == "msgpack" and not msgpack_available():
        raise ValueError(MSGPACK_MISSING)
    return str(value)


def _compression(value: Any) -> str:
    Compressor(str(value))  # refuses an unknown method, or zstd without its package
    return str(value)


def _optional_file(value: Any) -> str | None:
    path = _optional_text(value)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


#: Shortest admin token accepted: shorter ones can be guessed.
MIN_ADMIN_TOKEN_LENGTH = 16


def _admin_token(value: Any) -> str | None:
    # The token is a secret: messages describe it, never show it.
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"expected a string of at least {MIN_ADMIN_TOKEN_LENGTH} characters, got a "
            f"{type(value).__name__} (a value read with from_prefixed_env() is parsed as JSON: "
            "quote it, or read it with os.environ)"
        )
    if len(value) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"the token is {len(value)} characters long; use at least "
            f"{MIN_ADMIN_TOKEN_LENGTH} random ones, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if value != value.strip() or not all(" " <= char <= "~" for char in value):
        raise ValueError(
            "the token must be printable ASCII without leading or trailing whitespace "
            "(an 'Authorization: Bearer' header could never carry it)"
        )
    return value


@dataclass(frozen=True)
class ConfigKey:
    """One configuration key: its name, default, one-line description and parser."""

    name: str
    default: Any
    description: str
    parse: Callable[[Any], Any]
    field: str


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "FENNEC_CACHE_URL",
        "redis://localhost:6379/0",
        "Where the cache lives: redis://, rediss://, unix://, memory:// "
        "(an in-process server, per process; for development and tests), "
        "redis+cluster:// or redis+sentinel:// (see docs/scaling.md).",
        _url,
        "url",
    ),
    ConfigKey(
        "FENNEC_CACHE_PREFIX",
        "fennec:",
        "Prepended to every key; clear() never reaches keys outside it. Must not be empty.",
        check_prefix,
        "prefix",
    ),
    ConfigKey(
        "FENNEC_CACHE_DEFAULT_TTL",
        300,
        "Seconds an entry lives when no ttl is given; 0 or None keeps it until evicted.",
        _optional_ttl,
        "default_ttl",
    ),
    ConfigKey(
        "FENNEC_CACHE_SOCKET_TIMEOUT",
        0.25,
        "Seconds one Redis command may take before it counts as a failure.",
        _positive_float,
        "socket_timeout",
    ),
    ConfigKey(
        "FENNEC_CACHE_CONNECT_TIMEOUT",
        0.25,
        "Seconds a new connection to Redis may take.",
        _positive_float,
        "connect_timeout",
    ),
    ConfigKey(
        "FENNEC_CACHE_POOL_SIZE",
        50,
        "Most connections one process keeps open to Redis.",
        _positive_int,
        "max_connections",
    ),
    ConfigKey(
        "FENNEC_CACHE_HEALTH_CHECK_INTERVAL",
        15,
        "Seconds a pooled connection may sit idle before it is checked with PING on reuse.",
        _positive_int,
        "health_check_interval",
    ),
    ConfigKey(
        "FENNEC_CACHE_STARTUP_CHECK",
        True,
        "PING Redis once in init_app (bounded by the timeouts) and log one WARNING with "
        "the reason if it does not answer; the app starts either way.",
        _bool,
        "startup_check",
    ),
    ConfigKey(
        "FENNEC_CACHE_FAIL_OPEN",
        True,
        "When Redis fails: True treats reads as misses and skips writes; "
        "False raises CacheUnavailable.",
        _bool,
        "fail_open",
    ),
    ConfigKey(
        "FENNEC_CACHE_BREAKER_THRESHOLD",
        3,
        "Consecutive refused connections that open the circuit breaker (per master on a "
        "cluster); a timeout opens it at once.",
        _positive_int,
        "breaker_threshold",
    ),
    ConfigKey(
        "FENNEC_CACHE_BREAKER_COOLDOWN",
        1.0,
        "Seconds the open breaker skips Redis; then one probe: a request after refused "
        "connections, the background prober after a timeout.",
        _positive_float,
        "breaker_cooldown",
    ),
    ConfigKey(
        "FENNEC_CACHE_MAX_VALUE_BYTES",
        1_048_576,
        "Largest encoded value stored; larger ones are skipped and logged.",
        _positive_int,
        "max_value_bytes",
    ),
    ConfigKey(
        "FENNEC_CACHE_STATS_FLUSH_INTERVAL",
        1.0,
        "Seconds between flushes of this process's counters to the shared ones in Redis.",
        _positive_float,
        "stats_flush_interval",
    ),
    ConfigKey(
        "FENNEC_CACHE_TTL_JITTER",
        0.1,
        "Fraction by which loaders shorten a TTL at random, so entries filled together "
        "do not expire together (0 disables; explicit set() calls are exact).",
        _fraction,
        "ttl_jitter",
    ),
    ConfigKey(
        "FENNEC_CACHE_REFRESH_WORKERS",
        2,
        "Threads per process that refresh stale entries of functions in the background "
        "(stale_ttl, beta), so that no caller waits for a refresh.",
        _positive_int,
        "refresh_workers",
    ),
    ConfigKey(
        "FENNEC_CACHE_SERIALIZER",
        "json",
        "Value format: json (safe, readable in redis-cli), msgpack (the msgpack extra; "
        "also bytes and non-string dict keys) or pickle (any Python object; every entry "
        "signed with FENNEC_CACHE_SECRET_KEY, unsigned ones never loaded). Entries are "
        "read whatever format wrote them.",
        _serializer,
        "serializer",
    ),
    ConfigKey(
        "FENNEC_CACHE_COMPRESSION",
        "zlib",
        "How values over the threshold are compressed: zlib, zstd (needs the zstd extra) "
        "or none; only when that saves at least a tenth.",
        _compression,
        "compression",
    ),
    ConfigKey(
        "FENNEC_CACHE_COMPRESS_THRESHOLD",
        1024,
        "Encoded values larger than this many bytes are compressed.",
        _positive_int,
        "compress_threshold",
    ),
    ConfigKey(
        "FENNEC_CACHE_SECRET_KEY",
        None,
        "Secret (16+ characters) that signs pickled entries; required for pickle.",
        _optional_text,
        "secret_key",
    ),
    ConfigKey(
        "FENNEC_CACHE_TLS_CA_CERTS",
        None,
        "For rediss:// URLs: CA bundle that signed the server's certificate.",
        _optional_file,
        "tls_ca_certs",
    ),
    ConfigKey(
        "FENNEC_CACHE_TLS_CERTFILE",
        None,
        "For rediss:// URLs: client certificate for mutual TLS.",
        _optional_file,
        "tls_certfile",
    ),
    ConfigKey(
        "FENNEC_CACHE_TLS_KEYFILE",
        None,
        "For rediss:// URLs: the client certificate's private key.",
        _optional_file,
        "tls_keyfile",
    ),
    ConfigKey(
        "FENNEC_CACHE_NEAR_CACHE",
        False,
        "Also keep recently read values in each process (an LRU kept coherent by Redis "
        "CLIENT TRACKING; needs Redis >= 6.0, not memory://).",
        _bool,
        "near_cache",
    ),
    ConfigKey(
        "FENNEC_CACHE_NEAR_CACHE_SIZE",
        10_000,
        "Most entries each process's near cache holds.",
        _positive_int,
        "near_cache_size",
    ),
    ConfigKey(
        "FENNEC_CACHE_NEAR_CACHE_TTL",
        30.0,
        "Most seconds an entry stays in a near cache (a backstop; Redis invalidates).",
        _positive_float,
        "near_cache_ttl",
    ),
    ConfigKey(
        "FENNEC_CACHE_NEAR_CACHE_MAX_BYTES",
        64 * 1024 * 1024,
        "Most bytes of entries (their stored size) each process's near cache holds; "
        "an entry over a tenth of it is read from Redis every time.",
        _positive_int,
        "near_cache_max_bytes",
    ),
    ConfigKey(
        "FENNEC_CACHE_ADMIN_URL_PREFIX",
        None,
        "Mount point of the admin blueprint (e.g. /cache); None mounts nothing.",
        _optional_text,
        "admin_url_prefix",
    ),
    ConfigKey(
        "FENNEC_CACHE_ADMIN_TOKEN",
        None,
        "Bearer token required by admin endpoints that change state (at least 16 characters).",
        _admin_token,
        "admin_token",
    ),
    ConfigKey(
        "FENNEC_CACHE_ADMIN_OPEN",
        False,
        "Allow state-changing admin endpoints without a token (development only).",
        _bool,
        "admin_open",
    ),
    ConfigKey(
        "FENNEC_CACHE_UNAVAILABLE_HANDLER",
        False,
        "Answer CacheUnavailable (raised with FENNEC_CACHE_FAIL_OPEN = False) from any "
        "view with 503 and Retry-After instead of a 500 (see docs/reliability.md).",
        _bool,
        "unavailable_handler",
    ),
)


#: The parsed default of every setting, by the name of its RedisCache/Settings field: the one
#: place defaults are declared (RedisCache's keyword defaults are read from here).
DEFAULTS: Mapping[str, Any] = {key.field: key.parse(key.default) for key in CONFIG_KEYS}


@dataclass(frozen=True)
class Settings:
    """The parsed, validated configuration of one app."""

    url: str
    prefix: str
    default_ttl: int | None
    socket_timeout: float
    connect_timeout: float
    max_connections: int
    health_check_interval: int
    startup_check: bool
    fail_open: bool
    breaker_threshold: int
    breaker_cooldown: float
    max_value_bytes: int
    stats_flush_interval: float
    ttl_jitter: float
    refresh_workers: int
    serializer: str
    compression: str
    compress_threshold: int
    secret_key: str | None
    tls_ca_certs: str | None
    tls_certfile: str | None
    tls_keyfile: str | None
    near_cache: bool
    near_cache_size: int
    near_cache_ttl: float
    near_cache_max_bytes: int
    admin_url_prefix: str | None
    admin_token: str | None
    admin_open: bool
    unavailable_handler: bool

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~flask_fennec_cache.RedisCache`."""
        extension_only = {
            "admin_url_prefix",
            "admin_token",
            "admin_open",
            "unavailable_handler",
            "startup_check",
            "refresh_workers",
        }
        return {
            k.field: getattr(self, k.field) for k in CONFIG_KEYS if k.field not in extension_only
        }


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Fill every missing key with its default so the effective values are visible."""
    for key in CONFIG_KEYS:
        config.setdefault(key.name, key.default)


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Parse and validate every key, then the keys that go together; a bad value raises
    ConfigurationError naming the key."""
    values: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        raw = config.get(key.name, key.default)
        try:
            values[key.field] = key.parse(raw)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError) and str(exc).startswith(f"{key.name}:"):
                raise
            raise ConfigurationError(f"{key.name}: {exc}") from exc
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _check_together(settings: Settings) -> None:
    tls_keys = {
        "FENNEC_CACHE_TLS_CA_CERTS": settings.tls_ca_certs,
        "FENNEC_CACHE_TLS_CERTFILE": settings.tls_certfile,
        "FENNEC_CACHE_TLS_KEYFILE": settings.tls_keyfile,
    }
    named = [name for name, value in tls_keys.items() if value]
    if named and not scheme_of(settings.url, "FENNEC_CACHE_URL").startswith("rediss"):
        raise ConfigurationError(
            f"{', '.join(named)}: set, but FENNEC_CACHE_URL {redact_url(settings.url)!r} does "
            "not use TLS (rediss://, rediss+cluster:// or rediss+sentinel://)"
        )
    try:
        pickle_secret(settings.serializer, settings.secret_key)
    except ConfigurationError as exc:
        raise ConfigurationError(f"FENNEC_CACHE_SERIALIZER: {exc}") from exc


def store_effective(config: MutableMapping[str, Any], settings: Settings) -> None:
    """Write the parsed value of every key back (``"yes"`` becomes ``True``, ``"60"`` 60), so
    the configuration shows what is in effect."""
    for key in CONFIG_KEYS:
        config[key.name] = getattr(settings, key.field)


def markdown_table() -> str:
    """The configuration table as Markdown, as the README shows it."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | `{k.default!r}` | {k.description} |" for k in CONFIG_KEYS]
    return "\n".join(rows)
