"""Flask-Caching's ``CACHE_*`` configuration, read into what :mod:`flask_fennec_cache.compat`
builds: a backend kind, a cache URL and the options Flask-Caching users set."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final
from urllib.parse import quote

from ._urls import check_url
from ._validate import check_prefix
from .errors import ConfigurationError

__all__ = [
    "CompatSettings",
    "normalize_timeout",
    "read_compat_settings",
    "signing_key",
]

logger = logging.getLogger("flask_fennec_cache.compat")

#: The label under which the pickle signing key is derived from the app's ``SECRET_KEY`` (the
#: secret itself never signs anything: a leaked cache key cannot forge a session, and back).
SIGNING_LABEL: Final = b"flask-fennec-cache compat: cache entry signing key v1"

REDIS_TYPES: Final = frozenset(
    {
        "redis",
        "rediscache",
        "flask_caching.backends.redis",
        "flask_caching.backends.rediscache",
        "flask_caching.backends.rediscache.rediscache",
    }
)
SENTINEL_TYPES: Final = frozenset(
    {
        "redissentinel",
        "redissentinelcache",
        "flask_caching.backends.redissentinelcache",
        "flask_caching.backends.rediscache.redissentinelcache",
    }
)
CLUSTER_TYPES: Final = frozenset(
    {
        "rediscluster",
        "redisclustercache",
        "flask_caching.backends.redisclustercache",
        "flask_caching.backends.rediscache.redisclustercache",
    }
)
NULL_TYPES: Final = frozenset({"null", "nullcache", "flask_caching.backends.nullcache"})
SIMPLE_TYPES: Final = frozenset(
    {
        "simple",
        "simplecache",
        "flask_caching.backends.simplecache",
        "flask_caching.backends.simplecache.simplecache",
    }
)
SUPPORTED_TYPES: Final = (
    "'RedisCache' (or 'redis', with CACHE_REDIS_URL or CACHE_REDIS_HOST/PORT/DB/PASSWORD), "
    "'RedisSentinelCache', 'RedisClusterCache', 'SimpleCache' (in-process, for development "
    "and tests) or 'NullCache' (no caching)"
)

#: ``CACHE_OPTIONS`` entries Flask-Caching passes to redis-py, and the RedisCache option each
#: one sets.
REDIS_OPTIONS: Final = {
    "socket_timeout": "socket_timeout",
    "socket_connect_timeout": "connect_timeout",
    "max_connections": "max_connections",
    "health_check_interval": "health_check_interval",
}

#: ``CACHE_*`` keys this module reads; any other one is ignored (and logged at debug level).
KNOWN_KEYS: Final = frozenset(
    {
        "CACHE_TYPE",
        "CACHE_REDIS_URL",
        "CACHE_REDIS_HOST",
        "CACHE_REDIS_PORT",
        "CACHE_REDIS_DB",
        "CACHE_REDIS_PASSWORD",
        "CACHE_KEY_PREFIX",
        "CACHE_DEFAULT_TIMEOUT",
        "CACHE_NO_NULL_WARNING",
        "CACHE_OPTIONS",
        "CACHE_REDIS_SENTINELS",
        "CACHE_REDIS_SENTINEL_MASTER",
        "CACHE_REDIS_SENTINEL_PASSWORD",
        "CACHE_REDIS_CLUSTER",
        "CACHE_SOURCE_CHECK",
        "CACHE_HASH_METHOD",
    }
)

DEFAULT_PREFIX: Final = "flask_cache_"
DEFAULT_TIMEOUT: Final = 300


@dataclass(frozen=True)
class CompatSettings:
    """What one ``Cache`` instance reads from its app's and its own configuration.

    :param kind: ``"redis"`` (any URL we take, including ``memory://``) or ``"null"``.
    :param url: the cache URL (None for ``"null"``).
    :param prefix: ``CACHE_KEY_PREFIX``.
    :param default_timeout: seconds an entry lives when no timeout is given; None = for ever.
    :param options: RedisCache options from ``CACHE_OPTIONS``.
    :param secret: the key that signs pickled entries (None for ``"null"``).
    """

    kind: str
    url: str | None
    prefix: str
    default_timeout: int | None
    source_check: bool
    hash_method: Callable[..., Any] | None
    no_null_warning: bool
    secret: str | None
    options: dict[str, Any] = field(default_factory=dict)


def normalize_timeout(timeout: Any, key: str = "timeout") -> int | None:
    """A Flask-Caching timeout as seconds for Redis: None for "no timeout given", 0 for "never
    expires"; a ``timedelta`` or a sub-second number is rounded up to whole seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    elif isinstance(timeout, str):
        try:
            timeout = float(timeout)
        except ValueError:
            raise ConfigurationError(
                f"{key} must be a number of seconds, got {timeout!r}"
            ) from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError(f"{key} must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise ConfigurationError(
            f"{key} must be a finite number of seconds >= 0 (0: never expires), got {timeout!r}"
        )
    return math.ceil(timeout)


def signing_key(config: Mapping[str, Any]) -> str | None:
    """``FENNEC_CACHE_SECRET_KEY``, or a key derived with HMAC from the app's ``SECRET_KEY``;
    None when neither is set."""
    own = config.get("FENNEC_CACHE_SECRET_KEY")
    if own:
        if len(own) < 16:
            raise ConfigurationError(
                "FENNEC_CACHE_SECRET_KEY: use at least 16 random characters to sign cache entries"
            )
        return str(own)
    app_secret = config.get("SECRET_KEY")
    if not app_secret:
        return None
    material = app_secret.encode() if isinstance(app_secret, str) else bytes(app_secret)
    return hmac.new(material, SIGNING_LABEL, hashlib.sha256).hexdigest()


def read_compat_settings(config: Mapping[str, Any]) -> CompatSettings:
    """Parse the ``CACHE_*`` keys of *config* (the app's, updated with the instance's);
    ConfigurationError names the key at fault."""
    for name in sorted(k for k in config if k.startswith("CACHE_") and k not in KNOWN_KEYS):
        logger.debug("flask_fennec_cache.compat ignores %s (not used by this backend)", name)
    raw_type = config.get("CACHE_TYPE", "NullCache")
    if not isinstance(raw_type, str):
        raise ConfigurationError(
            f"CACHE_TYPE must be a backend name, got {raw_type!r}; use {SUPPORTED_TYPES}"
        )
    kind = raw_type.strip().lower()
    prefix = config.get("CACHE_KEY_PREFIX") or DEFAULT_PREFIX
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"CACHE_KEY_PREFIX must be a string (a callable prefix is not supported), "
            f"got {prefix!r}"
        )
    try:
        check_prefix(prefix)
    except ConfigurationError as exc:
        raise ConfigurationError(f"CACHE_KEY_PREFIX: {exc}") from exc
    default_timeout = normalize_timeout(
        config.get("CACHE_DEFAULT_TIMEOUT", DEFAULT_TIMEOUT), "CACHE_DEFAULT_TIMEOUT"
    )
    hash_method = config.get("CACHE_HASH_METHOD")
    if hash_method is not None and not callable(hash_method):
        raise ConfigurationError(
            f"CACHE_HASH_METHOD must be a hash constructor such as hashlib.sha256, "
            f"got {hash_method!r}"
        )
    common: dict[str, Any] = {
        "prefix": prefix,
        "default_timeout": default_timeout or None,
        "source_check": bool(config.get("CACHE_SOURCE_CHECK", False)),
        "hash_method": hash_method,
        "no_null_warning": bool(config.get("CACHE_NO_NULL_WARNING", False)),
    }
    if kind in NULL_TYPES:
        return CompatSettings("null", None, secret=None, **common)
    if kind in SIMPLE_TYPES:
        # In-process entries never leave this process: a per-process random key signs them.
        url = f"memory://flask-caching-compat-{uuid.uuid4().hex}"
        return CompatSettings("redis", url, secret=secrets.token_hex(32), **common)
    if kind in REDIS_TYPES:
        url = _server_url(config)
    elif kind in SENTINEL_TYPES:
        url = _sentinel_url(config)
    elif kind in CLUSTER_TYPES:
        url = _cluster_url(config)
    else:
        raise ConfigurationError(
            f"CACHE_TYPE {raw_type!r} is not supported by flask_fennec_cache.compat; use "
            f"{SUPPORTED_TYPES}"
        )
    secret = signing_key(config)
    if secret is None:
        raise ConfigurationError(
            "flask_fennec_cache.compat signs every cache entry (they are pickled, and an "
            "unsigned pickle is never loaded): set the app's SECRET_KEY, or "
            "FENNEC_CACHE_SECRET_KEY (16+ random characters)"
        )
    return CompatSettings("redis", url, secret=secret, options=_redis_options(config), **common)


def _server_url(config: Mapping[str, Any]) -> str:
    url = config.get("CACHE_REDIS_URL")
    if url:
        return check_url(url, "CACHE_REDIS_URL")
    host = config.get("CACHE_REDIS_HOST") or "localhost"
    port = _port(config.get("CACHE_REDIS_PORT", 6379), "CACHE_REDIS_PORT")
    db = _db(config)
    return check_url(
        f"redis://{_password(config)}{_host(host, 'CACHE_REDIS_HOST')}:{port}/{db}",
        "CACHE_REDIS_HOST/PORT/DB/PASSWORD",
    )


def _sentinel_url(config: Mapping[str, Any]) -> str:
    sentinels = config.get("CACHE_REDIS_SENTINELS") or [("127.0.0.1", 26379)]
    master = config.get("CACHE_REDIS_SENTINEL_MASTER") or "mymaster"
    hosts = []
    for entry in sentinels:
        if isinstance(entry, str):
            host, _, port = entry.rpartition(":")
            entry = (host, port or 26379)
        try:
            host, port = entry
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"CACHE_REDIS_SENTINELS must list (host, port) pairs, got {entry!r}"
            ) from None
        hosts.append(
            f"{_host(host, 'CACHE_REDIS_SENTINELS')}:{_port(port, 'CACHE_REDIS_SENTINELS')}"
        )
    url = (
        f"redis+sentinel://{_password(config)}{','.join(hosts)}/{quote(str(master))}/{_db(config)}"
    )
    sentinel_password = config.get("CACHE_REDIS_SENTINEL_PASSWORD")
    if sentinel_password:
        url += f"?sentinel_password={quote(str(sentinel_password), safe='')}"
    return check_url(url, "CACHE_REDIS_SENTINELS/SENTINEL_MASTER/PASSWORD")


def _cluster_url(config: Mapping[str, Any]) -> str:
    url = config.get("CACHE_REDIS_URL")
    if url:
        scheme, sep, rest = str(url).partition("://")
        if sep and scheme in ("redis", "rediss"):
            url = f"{scheme}+cluster://{rest}"
        return check_url(url, "CACHE_REDIS_URL")
    nodes = config.get("CACHE_REDIS_CLUSTER")
    if not nodes or not isinstance(nodes, str):
        raise ConfigurationError(
            "RedisClusterCache needs CACHE_REDIS_CLUSTER ('host1:port1,host2:port2') or "
            f"CACHE_REDIS_URL, got CACHE_REDIS_CLUSTER={nodes!r}"
        )
    hosts = ",".join(node.strip() for node in nodes.split(","))
    return check_url(f"redis+cluster://{_password(config)}{hosts}/", "CACHE_REDIS_CLUSTER")


def _password(config: Mapping[str, Any]) -> str:
    password = config.get("CACHE_REDIS_PASSWORD")
    return f":{quote(str(password), safe='')}@" if password else ""


def _host(host: Any, key: str) -> str:
    if not isinstance(host, str) or not host or any(c in host for c in "/@?#, "):
        raise ConfigurationError(f"{key} must be a host name or address, got {host!r}")
    return f"[{host}]" if ":" in host else host


def _port(port: Any, key: str) -> int:
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a port number, got {port!r}") from None
    if isinstance(port, bool) or not 0 < number < 65536:
        raise ConfigurationError(f"{key} must be a port number, got {port!r}")
    return number


def _db(config: Mapping[str, Any]) -> int:
    db = config.get("CACHE_REDIS_DB", 0) or 0
    try:
        number = int(db)
    except (TypeError, ValueError):
        raise ConfigurationError(f"CACHE_REDIS_DB must be a database number, got {db!r}") from None
    if isinstance(db, bool) or number < 0:
        raise ConfigurationError(f"CACHE_REDIS_DB must be a database number, got {db!r}")
    return number


def _redis_options(config: Mapping[str, Any]) -> dict[str, Any]:
    given = config.get("CACHE_OPTIONS") or {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(f"CACHE_OPTIONS must be a dict, got {given!r}")
    options: dict[str, Any] = {}
    for name, value in given.items():
        target = REDIS_OPTIONS.get(name)
        if target is None:
            raise ConfigurationError(
                f"CACHE_OPTIONS[{name!r}] is not supported by flask_fennec_cache.compat; "
                f"supported: {', '.join(sorted(REDIS_OPTIONS))} (other client options go in "
                "the URL's query string, see docs/configuration.md)"
            )
        if value is None:
            continue  # redis-py's "no limit": our short defaults stay
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < math.inf
        ):
            raise ConfigurationError(f"CACHE_OPTIONS[{name!r}] must be a number > 0, got {value!r}")
        if target in ("max_connections", "health_check_interval"):
            value = math.ceil(value)
        options[target] = value
    return options
