"""Checks of keys, prefixes, patterns and options, each raising an error that names the problem."""

from __future__ import annotations

import math
from typing import Final

from .errors import ConfigurationError, InvalidKeyError

__all__ = [
    "RESERVED",
    "check_key",
    "check_pattern",
    "check_prefix",
    "check_ttl",
    "glob_escape",
    "key_problem",
    "pickle_secret",
    "ttl_ms",
]

#: Everything the library keeps for itself lives under ``{prefix}__fennec__:``.
RESERVED: Final = "__fennec__:"
MAX_PATTERN_LENGTH: Final = 512


def check_ttl(ttl: float | None) -> float | None:
    """*ttl* if it is None or a finite number of seconds > 0; ConfigurationError otherwise."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ConfigurationError(
            f"ttl must be a finite number of seconds > 0 (or None), got {ttl!r}"
        )
    return ttl


def ttl_ms(ttl: float | None, default: float | None) -> int | None:
    """The milliseconds Redis is given for *ttl* seconds (None: *default*); None: no expiry."""
    seconds = default if ttl is None else check_ttl(ttl)
    return None if seconds is None else max(1, int(seconds * 1000))


def check_key(key: str) -> None:
    """Refuse a key that is not a string, names the library's reserved namespace, or has no
    UTF-8 form (a surrogate code point)."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidKeyError(problem)


def key_problem(key: str) -> str | None:
    """Why *key* cannot be used, or None (cheap for the usual ASCII key)."""
    if not isinstance(key, str):
        return f"cache keys are strings, got a {type(key).__qualname__}"
    if key.startswith(RESERVED):
        return f"key {key!r} is in the reserved namespace {RESERVED!r} (statistics, locks, tags)"
    if not key.isascii() and not encodable(key):
        return f"key {key!r} holds a surrogate code point: it has no UTF-8 form"
    return None


def encodable(text: str) -> bool:
    """Whether *text* has a UTF-8 form (no surrogate code points)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_prefix(prefix: str) -> str:
    """*prefix* if usable as a key namespace; ConfigurationError otherwise."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(
            "prefix must be a non-empty string, so that clear() cannot reach other keys"
        )
    if RESERVED in prefix:
        raise ConfigurationError(f"prefix must not contain the reserved {RESERVED!r}")
    return prefix


def pickle_secret(serializer: str, secret_key: str | bytes | None) -> bytes | None:
    """The signing key pickle needs (None for JSON and MessagePack); ConfigurationError if it
    is missing or the serializer is unknown."""
    if serializer in ("json", "msgpack"):
        return None
    if serializer != "pickle":
        raise ConfigurationError(
            f"serializer must be 'json', 'msgpack' or 'pickle', got {serializer!r}"
        )
    if not secret_key or len(secret_key) < 16:
        raise ConfigurationError(
            "serializer 'pickle' needs a secret key of at least 16 characters "
            "(FENNEC_CACHE_SECRET_KEY) to sign entries: unsigned pickles are never loaded"
        )
    return secret_key.encode() if isinstance(secret_key, str) else secret_key


def check_pattern(pattern: str) -> None:
    """Refuse a glob pattern that is empty, too long, or holds control characters."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(f"pattern must be a non-empty string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ConfigurationError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if any(ord(ch) < 32 for ch in pattern):
        raise ConfigurationError("pattern must not contain control characters")
    if not encodable(pattern):
        raise ConfigurationError("pattern holds a lone surrogate: it has no UTF-8 form")


def glob_escape(text: str) -> str:
    """*text* as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
