"""``cache.cache`` of :mod:`flask_fennec_cache.compat`: Flask-Caching's backend interface
(cachelib's) over a :class:`~flask_fennec_cache.RedisCache`, and the no-op NullCache."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import redis

from ._compat_config import normalize_timeout
from .backend import MISSING, RedisCache

__all__ = ["CompatBackend", "NullBackend"]

#: How long ``inc``/``dec`` wait for another increment of the same key, and how long the
#: lock they take lives if its holder dies.
INC_LOCK_WAIT: Final = 1.0
INC_LOCK_TTL: Final = 5
INC_LOCK_POLL: Final = 0.005


class CompatBackend:
    """The backend object Flask-Caching apps reach through ``cache.cache``.

    Timeouts follow Flask-Caching: None uses ``CACHE_DEFAULT_TIMEOUT``, 0 never expires.
    Every value is pickled and signed (see :class:`~flask_fennec_cache.RedisCache`'s
    ``serializer="pickle"``). :attr:`native` is the :class:`~flask_fennec_cache.RedisCache`
    underneath, for code moving to the native API.
    """

    def __init__(self, native: RedisCache, default_timeout: int | None) -> None:
        self.native = native
        self.default_timeout = default_timeout

    def __repr__(self) -> str:
        return f"<compat backend on {self.native!r}>"

    @property
    def key_prefix(self) -> str:
        """``CACHE_KEY_PREFIX``: every key is stored as ``key_prefix + key``."""
        return self.native.prefix

    @property
    def _write_client(self) -> redis.Redis:
        """The redis-py client (Flask-Caching's name for it; keys used on it are not
        prefixed)."""
        return self.native.client

    @property
    def _read_client(self) -> redis.Redis:
        """The redis-py client reads go to (the same as :attr:`_write_client`)."""
        return self.native.client

    def ttl_for(self, timeout: Any) -> float | None:
        """The Redis TTL of a Flask-Caching *timeout* (None for "never expires")."""
        seconds = normalize_timeout(timeout)
        if seconds is None:
            seconds = self.default_timeout
        return seconds or None

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value under *key*, or None."""
        return self.native.get(key)

    def has(self, key: str) -> bool:
        """Whether *key* holds a value (a cached None counts)."""
        return self.native.lookup(key) is not MISSING

    def get_many(self, *keys: str) -> list[Any]:
        """The values of *keys* in order (None for each miss), in one round trip."""
        found = self.native.get_many(keys)
        return [found.get(key) for key in keys]

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """``{key: value or None}`` for *keys*."""
        return dict(zip(keys, self.get_many(*keys), strict=True))

    # -- writes --------------------------------------------------------------------------------

    def set(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store *value*; False when Redis failed (fail-open) or the value is too large."""
        return self.native.set(key, value, self.ttl_for(timeout))

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store *value* only if *key* holds nothing, atomically (``SET NX``): usable as a
        lock. False when the key exists or Redis failed."""
        return self.native.add(key, value, self.ttl_for(timeout))

    def set_many(self, mapping: Mapping[str, Any], timeout: Any = None) -> list[str]:
        """Store every entry in one round trip; the keys stored (all, or none on failure)."""
        if self.native.set_many(mapping, self.ttl_for(timeout)):
            return list(mapping)
        return []

    def delete(self, key: str) -> bool:
        """Remove *key*; True if it held a value."""
        return self.native.delete(key) > 0

    def delete_many(self, *keys: str) -> list[str]:
        """Remove *keys* in one round trip; the keys (absent ones count as removed), or []
        when Redis failed."""
        if not keys:
            return []
        return list(keys) if self.native.try_delete(*keys) is not None else []

    def unlink(self, *keys: str) -> list[str]:
        """:meth:`delete_many` (which already uses ``UNLINK``)."""
        return self.delete_many(*keys)

    def clear(self) -> bool:
        """Remove every key under :attr:`key_prefix` (SCAN + UNLINK, never FLUSHDB)."""
        return self.native.try_clear() is not None

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add *delta* to the number under *key* (a missing key counts as 0) and return it;
        the key keeps its expiry. None when another increment of the key held it for longer
        than a second, or Redis failed.

        Entries are signed pickles, so Redis cannot add to them itself: a short lock (an
        atomic :meth:`add`) makes the read and the write one step for every process.
        """
        lock = f"{key}:__compat_inc_lock__"
        deadline = time.monotonic() + INC_LOCK_WAIT
        while not self.native.add(lock, 1, INC_LOCK_TTL):
            if time.monotonic() > deadline:
                return None
            time.sleep(INC_LOCK_POLL)
        try:
            left = self.native.ttl(key)
            value = (self.native.get(key) or 0) + delta
            ttl = None if left is None or left < 0 else max(left, 1)
            return value if self.native.set(key, value, ttl) else None
        finally:
            self.native.delete(lock)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """:meth:`inc` by ``-delta``."""
        return self.inc(key, -delta)


class NullBackend:
    """``CACHE_TYPE = "NullCache"``: nothing is stored, every read is a miss."""

    key_prefix = ""
    default_timeout: int | None = None

    def __repr__(self) -> str:
        return "<compat NullCache>"

    def get(self, key: str) -> Any:
        """Always None."""
        return None

    def has(self, key: str) -> bool:
        """Always False."""
        return False

    def get_many(self, *keys: str) -> list[Any]:
        """None for each key."""
        return [None] * len(keys)

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """None for each key."""
        return dict.fromkeys(keys)

    def set(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Stores nothing; True, as Flask-Caching's NullCache answers."""
        return True

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Stores nothing; True."""
        return True

    def set_many(self, mapping: Mapping[str, Any], timeout: Any = None) -> list[str]:
        """Stores nothing; the keys."""
        return list(mapping)

    def delete(self, key: str) -> bool:
        """Nothing to remove; True."""
        return True

    def delete_many(self, *keys: str) -> list[str]:
        """Nothing to remove; the keys."""
        return list(keys)

    def unlink(self, *keys: str) -> list[str]:
        """Nothing to remove; the keys."""
        return list(keys)

    def clear(self) -> bool:
        """Nothing to remove; True."""
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Nothing is stored: None."""
        return None

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Nothing is stored: None."""
        return None
