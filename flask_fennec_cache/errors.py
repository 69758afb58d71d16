"""The exceptions flask-fennec-cache raises: one root, a few precise leaves."""

from __future__ import annotations

__all__ = [
    "CacheUnavailable",
    "ConfigurationError",
    "FennecCacheError",
    "InvalidKeyError",
    "KeyBuildError",
    "LoaderTimeout",
    "LockTimeout",
    "NoBackendError",
    "SerializationError",
]


class FennecCacheError(Exception):
    """Root of every exception this library raises."""


class ConfigurationError(FennecCacheError, ValueError):
    """A configuration value or URL is invalid; the message names the setting."""


class SerializationError(FennecCacheError, ValueError):
    """A value cannot be stored in the configured format; the message names the type and key."""


class InvalidKeyError(FennecCacheError, ValueError):
    """A key names the library's reserved namespace (``__fennec__:``), or is not a string."""


class KeyBuildError(FennecCacheError, TypeError):
    """A cache key cannot be built from a call's arguments; the message names the argument."""


class CacheUnavailable(FennecCacheError):
    """Redis could not be reached and the cache is configured to fail closed."""


class NoBackendError(FennecCacheError, RuntimeError):
    """A decorator found no backend: none was passed and no Flask app with FennecCache is active."""


class LockTimeout(FennecCacheError, TimeoutError):
    """A single-flight lock could not be acquired in time."""


class LoaderTimeout(FennecCacheError, TimeoutError):
    """A load outlasted its ``hard_timeout`` and no stale value could be served instead; the
    load goes on in the background and stores its result."""
