"""RedisCache: the one object that talks to Redis, with namespacing, statistics and fail-open."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis
from redis.exceptions import RedisError

from ._breaker import CircuitBreaker
from ._connect import fast_get, make_client, redact_url
from ._ratelog import RateLimitedLog
from ._scripts import Scripts
from ._stats import StatsBuffer, summarize
from ._topology import mget, scan_targets, tracking_targets
from ._validate import (
    RESERVED,
    check_key,
    check_pattern,
    check_prefix,
    check_ttl,
    glob_escape,
    key_problem,
    pickle_secret,
)
from .compression import Compressor
from .errors import CacheUnavailable, ConfigurationError
from .locks import LeaseKeeper, SingleFlight
from .near import NearCache
from .serializers import (
    MSGPACK_MISSING,
    CorruptEntry,
    Envelope,
    Lease,
    decode,
    encode,
    envelope_head,
    lease_bytes,
    msgpack_available,
    new_version,
    redecoder,
)

__all__ = ["MISSING", "RESERVED", "Group", "RedisCache", "Unreadable"]

DEFAULT_URL: Final = "redis://localhost:6379/0"
DEFAULT_PREFIX: Final = "fennec:"
SCAN_BATCH: Final = 500
#: Bytes counted for each near-cache entry beyond its stored bytes and key (the objects around
#: them); a rough figure, so that many tiny entries still weigh on the byte bound.
NEAR_ENTRY_OVERHEAD: Final = 200


class _Missing:
    """The marker for "no entry", distinct from a cached ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


@dataclass(frozen=True)
class Group:
    """Keys stored and dropped together (one view's entries for one set of view arguments).

    :param index: the key (under the prefix) of the set listing the group's keys; it shares
        their cluster hash tag.
    :param ttl: the longest life (seconds) an entry of the group is given; None for ever.
    """

    index: str
    ttl: float | None


@dataclass(frozen=True)
class Unreadable:
    """An entry this library cannot decode (foreign or corrupt); a miss that loaders replace."""

    data: bytes

_BREAKER_ERRORS = (redis.ConnectionError, redis.TimeoutError)


class RedisCache:
    """A Redis-backed cache under one key prefix, usable with or without Flask.

    :param url: ``redis://``, ``rediss://`` (TLS), ``unix://`` or ``memory://`` (an in-process
        server for development and tests; per process, so not shared by gunicorn workers);
        ``redis+cluster://host:port,host:port/`` (Redis Cluster) or
        ``redis+sentinel://host:port,host:port/service_name/db`` (a Sentinel-managed master),
        each also with TLS (``rediss+…``); see ``docs/scaling.md``.
    :param prefix: prepended to every key; :meth:`clear` never reaches keys outside it.
    :param default_ttl: seconds an entry lives when ``set`` is given no ``ttl``; None keeps it.
    :param fail_open: when Redis fails, treat reads as misses and skip writes (True), or raise
        :class:`~flask_fennec_cache.CacheUnavailable` (False).
    :param serializer: ``"json"`` (the default: safe and readable), ``"msgpack"`` (the
        ``msgpack`` extra: also bytes and non-string dict keys) or ``"pickle"``, which needs
        *secret_key*: every entry is signed with HMAC-SHA256 and an entry whose signature does
        not verify is a miss, never unpickled. Entries are read whatever the serializer that
        wrote them.
    :param tls_ca_certs: for ``rediss://``: the CA bundle that signed the server's certificate.
    :param tls_certfile: for ``rediss://``: a client certificate (mutual TLS) ...
    :param tls_keyfile: ... and its private key.
    :param near_cache: keep recently read values in this process too, kept coherent by Redis
        (``CLIENT TRACKING`` broadcasts; see :mod:`flask_fennec_cache.near`); a near hit costs
        no round trip. Needs a Redis server (>= 6.0), not ``memory://``.
    :param near_cache_size: most entries the near cache holds (LRU).
    :param near_cache_ttl: most seconds an entry stays in the near cache.
    :param near_cache_max_bytes: most bytes the near cache holds, counting each entry as its
        stored size plus its key and a fixed overhead (LRU); larger entries than a tenth of it
        are not kept.
    :param compression: ``"zlib"`` (default), ``"zstd"`` (needs the zstandard package) or
        ``"none"``: how values larger than *compress_threshold* bytes are compressed (only
        when that saves at least a tenth).
    :param client: an existing redis-py client to use instead of building one from *url*.

    The remaining keyword arguments tune timeouts, the connection pool, the circuit breaker, the
    largest value stored and how often statistics are flushed; their defaults and meaning are in
    the configuration table (``flask_fennec_cache.config``).
    """

    def __init__(
        self,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        *,
        default_ttl: int | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        max_connections: int = 50,
        health_check_interval: int = 15,
        fail_open: bool = True,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 1.0,
        max_value_bytes: int = 1_048_576,
        stats_flush_interval: float = 1.0,
        ttl_jitter: float = 0.1,
        serializer: str = "json",
        secret_key: str | bytes | None = None,
        tls_ca_certs: str | None = None,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
        near_cache: bool = False,
        near_cache_size: int = 10_000,
        near_cache_ttl: float = 30.0,
        near_cache_max_bytes: int = 64 * 1024 * 1024,
        compression: str = "zlib",
        compress_threshold: int = 1024,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url or DEFAULT_URL
        self.prefix = check_prefix(prefix)
        self.default_ttl = check_ttl(default_ttl)
        self.fail_open = fail_open
        self.max_value_bytes = max_value_bytes
        if not 0 <= ttl_jitter < 1:
            raise ConfigurationError(f"ttl_jitter must be a fraction in [0, 1), got {ttl_jitter!r}")
        self.ttl_jitter = ttl_jitter
        self._pickle_secret = pickle_secret(serializer, secret_key)
        if serializer == "msgpack" and not msgpack_available():
            raise ConfigurationError(MSGPACK_MISSING)
        self._serializer = serializer
        self._compress = Compressor(compression, compress_threshold)
        self._client = client if client is not None else make_client(
            self.url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            tls_ca_certs=tls_ca_certs,
            tls_certfile=tls_certfile,
            tls_keyfile=tls_keyfile,
        )
        #: Whether other processes see these entries and counters: False for ``memory://`` (and
        #: a fakeredis client), whose server lives in this process.
        self.shared = not self.url.startswith("memory:") and not type(
            self._client
        ).__module__.startswith("fakeredis")
        self._get = fast_get(self._client)
        self._scripts = Scripts(self._client)
        self._reserved = prefix + RESERVED
        self._stats_key = self._reserved + "stats"
        self._log = RateLimitedLog()
        self._breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self._flights = SingleFlight()
        self._keeper = LeaseKeeper(self._extend)
        self._near = (
            self._make_near_cache(near_cache_size, near_cache_ttl, near_cache_max_bytes)
            if near_cache
            else None
        )
        self._stats = StatsBuffer(self._flush_stats, stats_flush_interval)
        if self._near is not None:
            near = self._near
            self._stats.count_from("near_hits", lambda: near.hits)

    def __repr__(self) -> str:
        return f"RedisCache(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (keys you use on it directly are not prefixed)."""
        return self._client

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: ``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._breaker.state

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under *key*, or *default* on a miss (or when Redis is unreachable)."""
        value = self.lookup(key)
        return default if value is MISSING else value

    def lookup(self, key: str) -> Any:
        """The value under *key*, or :data:`MISSING`; tells a cached ``None`` from a miss.

        An entry past its soft expiry (see ``stale_ttl``), or written before one of its tags was
        invalidated, or a placeholder of a load in progress, is a miss here.
        """
        value = self._usable(self._read(key))
        if value is MISSING:
            self._stats.add("misses")
        else:
            self._stats.hit()
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The entries found among *keys* (misses are left out), in one round trip
        (on a cluster: one MGET per slot, pipelined, so one round trip per node)."""
        keys = [key for key in keys if self._key_ok(key)]
        if not keys:
            return {}
        datas = self._run("get_many", lambda c: mget(c, [self.prefix + k for k in keys]))
        datas = datas or [None] * len(keys)
        entries = [self._decode(k, d) for k, d in zip(keys, datas, strict=True)]
        tags = {t for e in entries if isinstance(e, Envelope) for t in e.tags}
        current = self.tag_versions(tags) if tags else {}
        found: dict[str, Any] = {}
        for key, entry in zip(keys, entries, strict=True):
            value = self._usable(entry, current)
            if value is not MISSING:
                found[key] = value
        self._stats.add("hits", len(found))
        self._stats.add("misses", len(keys) - len(found))
        return found

    def ttl(self, key: str) -> int | None:
        """Seconds *key* has left; -1 if it never expires; None if it does not exist."""
        if not self._key_ok(key):
            return None

        def read(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.getrange(self.prefix + key, 0, 0)
            pipe.ttl(self.prefix + key)
            return pipe.execute()

        found = self._run("ttl", read)
        if found is None or found[1] == -2 or found[0] == b"L":
            return None  # no entry (or only the placeholder of a load in progress)
        return int(found[1])

    # -- writes --------------------------------------------------------------------------------

    def set(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] = (),
        stale_ttl: float | None = None,
    ) -> bool:
        """Store *value* under *key* for *ttl* seconds (default: the cache's ``default_ttl``).

        :param tags: names whose :meth:`invalidate_tags` drops this entry (checked on read).
        :param stale_ttl: seconds past *ttl* during which loaders may serve the stale value
            while one of them refreshes it.

        Returns True when stored; False when the value was too large or Redis failed (fail-open).
        A value the format cannot hold raises :class:`~flask_fennec_cache.SerializationError`.
        Setting a key also cancels any load of it in progress, so a slower loader cannot
        overwrite this newer value.
        """
        tags = tuple(tags)
        if not tags and stale_ttl is None:
            return self._set_encoded(key, self._encode(key, value), ttl)
        versions = self.tag_versions(tags, create=True) if tags else {}
        if versions is None:
            return False
        seconds = self.default_ttl if ttl is None else check_ttl(ttl)
        fresh_until = None if seconds is None or stale_ttl is None else time.time() + seconds
        envelope = Envelope(value, new_version(), fresh_until, 0.0, versions)
        total = None if seconds is None else seconds + (check_ttl(stale_ttl) or 0)
        return self._set_encoded(key, self._encode(key, envelope), total)

    def _set_encoded(self, key: str, data: bytes | None, ttl: float | None) -> bool:
        if data is None:
            return False
        ttl_ms = self._ttl_ms(ttl)
        done = self._run("set", lambda c: c.set(self.prefix + key, data, px=ttl_ms))
        self._forget_near(key)
        if done:
            self._stats.add("sets")
        return done is not None and bool(done)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> bool:
        """Store every entry of *mapping* in one round trip; True when all were stored."""
        ttl_ms = self._ttl_ms(ttl)
        encoded = {key: self._encode(key, value) for key, value in mapping.items()}
        ready = {key: data for key, data in encoded.items() if data is not None}
        if not ready:
            return not encoded

        def write(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key, data in ready.items():
                pipe.set(self.prefix + key, data, px=ttl_ms)
            return pipe.execute()

        results = self._run("set_many", write)
        self._forget_near(*ready)
        stored = sum(1 for ok in results or () if ok)
        self._stats.add("sets", stored)
        return stored == len(encoded)

    def delete(self, *keys: str) -> int:
        """Remove *keys*; returns how many existed (0 when Redis failed and fail-open is on)."""
        removed = self.try_delete(*keys)
        return removed or 0

    def try_delete(self, *keys: str) -> int | None:
        """Like :meth:`delete`, but None when Redis could not be reached (fail-open)."""
        if not keys:
            return 0
        for key in keys:
            check_key(key)
        removed = self._run("delete", lambda c: c.unlink(*[self.prefix + k for k in keys]))
        self._forget_near(*keys)
        if removed is not None:
            self._stats.add("deletes", int(removed))
            return int(removed)
        return None

    def clear(self, pattern: str = "*") -> int:
        """Remove the keys under this cache's prefix that match the glob *pattern*.

        Walks the keyspace with SCAN and removes matches with UNLINK in batches (never KEYS or
        FLUSHDB). Only keys under the prefix are reachable, and the library's own bookkeeping
        (``{prefix}__fennec__:…``) is never removed. Returns the number of keys removed (those
        removed before a failure, when Redis fails and fail-open is on).
        """
        return self.try_clear(pattern) or 0

    def try_clear(self, pattern: str = "*") -> int | None:
        """Like :meth:`clear`, but None when Redis failed before the walk was complete."""
        check_pattern(pattern)
        if not self._breaker.allow():
            self._skipped("clear")
            return None
        removed = 0
        failed = False
        try:
            for batch in self._scan_batches(glob_escape(self.prefix) + pattern):
                removed += int(self._client.unlink(*batch))
        except RedisError as exc:
            failed = True
            self._failed(exc, "clear")
        else:
            self._breaker.success()
        if self._near is not None:
            self._near.flush()
        self._stats.add("deletes", removed)
        return None if failed else removed

    def keys(self, pattern: str = "*", limit: int = 1000) -> list[str]:
        """Up to *limit* keys (relative to the prefix) matching *pattern*, found with SCAN.

        Keys holding only the placeholder of a load in progress are left out.
        """
        check_pattern(pattern)
        if not self._breaker.allow():
            self._skipped("keys")
            return []
        found: list[str] = []
        try:
            for batch in self._scan_batches(glob_escape(self.prefix) + pattern):
                pipe = self._client.pipeline(transaction=False)
                for name in batch:
                    pipe.getrange(name, 0, 0)
                heads = pipe.execute()
                found.extend(
                    name.decode("utf-8", "replace")[len(self.prefix) :]
                    for name, head in zip(batch, heads, strict=True)
                    if head and head != b"L"
                )
                if len(found) >= limit:
                    break
        except RedisError as exc:
            self._failed(exc, "keys")
        else:
            self._breaker.success()
        return found[:limit]

    # -- tags, leases and compare-and-set ------------------------------------------------------

    def invalidate_tags(self, *tags: str) -> bool:
        """Drop every entry carrying any of *tags*, in one round trip whatever their number.

        Each tag has a version; entries remember the versions they were loaded under and are
        misses once a version changed. Returns False when Redis could not be reached.
        """
        if not tags:
            return True

        def bump(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for tag in tags:
                pipe.set(self._tag_key(tag), new_version())
            return pipe.execute()

        return self._run("invalidate_tags", bump) is not None

    def tag_versions(self, tags: Iterable[str], create: bool = False) -> dict[str, str] | None:
        """The current version of each tag (creating missing ones when *create*); None on error.

        A tag without a version (never used, or evicted) is left out, so entries carrying it
        are misses: losing a version can only drop entries, never revive stale ones.
        """
        names = sorted(set(tags))
        if not names:
            return {}
        keys = [self._tag_key(t) for t in names]
        if create:
            fresh = [new_version() for _ in names]
            values = self._run("tag_versions", lambda c: self._scripts.tags(keys, fresh, c))
        else:
            values = self._run("tag_versions", lambda c: c.mget(keys))
        if values is None:
            return None
        return {t: v.decode() for t, v in zip(names, values, strict=True) if v is not None}

    def _tag_key(self, tag: str) -> str:
        # One hash tag for all of a prefix's tag keys keeps multi-key scripts in one cluster slot.
        return f"{self._reserved}{{{self.prefix}tags}}:{tag}"

    def _read(self, key: str) -> Any:
        """The decoded entry under *key* (value, Envelope, Lease, ...) or MISSING; not counted.

        An unusable key (reserved, or without a UTF-8 form) reads as a miss: reads never break
        on input.
        """
        return self._fetch(key) if self._key_ok(key) else MISSING

    def _fetch(self, key: str) -> Any:
        """:meth:`_read` for a key already known to be usable."""
        if not self._breaker.allow():
            self._skipped("get")
            return MISSING
        full = self.prefix + key
        near = self._near
        if near is not None:
            name = full.encode("utf-8", "surrogatepass")
            held = near.get(name)
            if held is not None:
                redecode, argument = cast("tuple[Callable[[Any], Any], Any]", held)
                return redecode(argument)
            ticket = near.begin_fill(name)
            if ticket is not None:
                return self._read_and_fill(key, near, name, ticket)
        started = self._stats.timer()
        try:
            data = cast("bytes | None", self._get(full))
        except RedisError as exc:
            self._failed(exc, "get")
            return MISSING
        finally:
            self._stats.observe_since(started)
        self._breaker.success()
        return self._decode(key, data)

    def _read_and_fill(self, key: str, near: NearCache, name: bytes, ticket: object) -> Any:
        started = self._stats.timer()
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(name)
            pipe.pttl(name)
            data, ttl_ms = pipe.execute()
        except RedisError as exc:
            near.abandon_fill(name, ticket)
            self._failed(exc, "get")
            return MISSING
        finally:
            self._stats.observe_since(started)
        self._breaker.success()
        entry = self._decode(key, data)
        if entry is MISSING or isinstance(entry, (Lease, Unreadable)):
            near.abandon_fill(name, ticket)
        else:
            # Every hit gets a fresh decoding (callers never share a mutable value), from a form
            # prepared once here.
            held = redecoder(data, entry, self._pickle_secret, self.max_value_bytes)
            size = len(data) + len(name) + NEAR_ENTRY_OVERHEAD
            near.finish_fill(name, ticket, held, int(ttl_ms), size)
        return entry

    def _make_near_cache(self, size: int, ttl: float, max_bytes: int) -> NearCache | None:
        """The near cache, tracking the server, the Sentinel master or every cluster primary;
        None (with a warning) where invalidations cannot be tracked."""
        targets = (
            "it needs a Redis server (CLIENT TRACKING), not an in-process one"
            if self.url.startswith("memory:")
            else tracking_targets(self._client)
        )
        if isinstance(targets, str):
            self._log.warning(
                "near-unsupported",
                f"near cache disabled for {redact_url(self.url)}: {targets}",
            )
            return None
        return NearCache(targets, self.prefix, size, ttl, max_bytes)

    def _key_ok(self, key: str) -> bool:
        """Whether *key* can be read; an unusable one is logged (reads treat it as a miss)."""
        problem = key_problem(key)
        if problem is None:
            return True
        self._log.warning("bad-key", f"not using the cache for this read: {problem}")
        return False

    def _forget_near(self, *keys: str) -> None:
        """This process changed *keys*: drop them from the near cache before Redis says so."""
        if self._near is not None:
            self._near.evict(*((self.prefix + k).encode("utf-8", "surrogatepass") for k in keys))

    def _fetch_tagged(self, key: str, tags: tuple[str, ...]) -> tuple[Any, dict[str, str] | None]:
        """The entry under *key* and the current versions of *tags*, in one round trip.

        On a cluster the value and the tag keys live in different slots: the MGET is split
        per slot and pipelined (one round trip per node involved, at most two). Not atomic
        there, which can only cause a spurious miss: tag versions are unique, so a value is
        never taken as current under a version it was not stored with.
        """
        names = sorted(set(tags))
        keys = [self.prefix + key] + [self._tag_key(t) for t in names]
        found = self._run("get", lambda c: mget(c, keys))
        if found is None:
            return MISSING, None
        versions = {t: v.decode() for t, v in zip(names, found[1:], strict=True) if v is not None}
        return self._decode(key, found[0]), versions

    def _usable(self, entry: Any, current_tags: Mapping[str, str] | None = None) -> Any:
        """The value a plain read may return from *entry*, or MISSING."""
        if entry is MISSING or isinstance(entry, (Lease, Unreadable)):
            return MISSING
        if not isinstance(entry, Envelope):
            return entry
        if entry.fresh_until is not None and time.time() >= entry.fresh_until:
            return MISSING
        if entry.tags and not self._tags_current(entry, current_tags):
            return MISSING
        return entry.value

    def _tags_current(self, entry: Envelope, current: Mapping[str, str] | None = None) -> bool:
        if current is None or not set(entry.tags) <= set(current):
            current = self.tag_versions(entry.tags)
        if current is None:
            return False
        return all(current.get(tag) == version for tag, version in entry.tags.items())

    def _acquire_lease(
        self, key: str, replacing: tuple[str, bytes] | None, lease_ms: int,
        group: Group | None = None,
    ) -> str | bool | None:
        """Put a lease placeholder on *key* if it is empty, or if it still holds the unusable
        entry *replacing* names: ``("prefix", bytes it starts with)`` or ``("exact", bytes)``.

        With *group*, the key joins that group's index. Returns the lease token, False when the
        key is taken, None when Redis failed.
        """
        token = new_version() + new_version()
        mode, expected = replacing or ("absent", b"")
        args = [mode, expected, lease_bytes(token), lease_ms]
        if group is None:
            acquired = self._run(
                "lease", lambda c: self._scripts.lease([self.prefix + key], args, c)
            )
        else:  # the leased key joins its group, so that dropping the group cancels this load
            keys = [self.prefix + key, self.prefix + group.index]
            life = self._ttl_ms(group.ttl) or ""
            acquired = self._run(
                "lease", lambda c: self._scripts.group_lease(keys, [*args, life], c)
            )
        self._forget_near(key)
        return None if acquired is None else (token if acquired else False)

    def _store_in_group(
        self, group: Group, guard: str, expected: bytes,
        writes: Sequence[tuple[str, bytes | None]], ttl: float | None,
    ) -> bool:
        """Write *writes* (key, data; None deletes) into *group* if *guard* still starts with
        *expected* (nobody wrote or dropped it since its load began); all in one step."""
        keys = [self.prefix + guard, self.prefix + group.index]
        keys += [self.prefix + key for key, _ in writes]
        args: list[Any] = [expected, self._ttl_ms(ttl) or ""]
        args += [data or b"" for _, data in writes]
        done = self._run("set", lambda c: self._scripts.group_store(keys, args, c))
        self._forget_near(guard, *(key for key, _ in writes))
        if done:
            self._stats.add("sets", sum(1 for _, data in writes if data is not None))
        return bool(done)

    def drop_group(self, index: str) -> int:
        """Remove every entry of the group whose index is *index* (see :class:`Group`), in
        one step; the number removed (0 when Redis failed and fail-open is on)."""
        removed = self._run(
            "delete", lambda c: self._scripts.group_drop([self.prefix + index], [], c)
        )
        if not removed:
            return 0
        names = [bytes(name) for name in removed]
        if self._near is not None:
            self._near.evict(*names)
        self._stats.add("deletes", len(names))
        return len(names)

    def _try_lock(self, name: str, token: str, timeout: float) -> bool | None:
        """``SET name token NX PX``: True when taken, False when held, None when Redis failed."""
        ms = max(1, int(timeout * 1000))
        taken = self._run("lock", lambda c: bool(c.set(self.prefix + name, token, nx=True, px=ms)))
        return None if taken is None else bool(taken)

    def _compare_and_set(
        self, key: str, expected: bytes, data: bytes | None, ttl: float | None
    ) -> bool:
        """Replace (or, with *data* None, delete) *key* only if it still starts with *expected*."""
        ttl_ms = self._ttl_ms(ttl) if data is not None else None
        done = self._run(
            "compare_and_set",
            lambda c: self._scripts.cas(
                [self.prefix + key], [expected, data or b"", ttl_ms or b""], c
            ),
        )
        self._forget_near(key)
        if done and data is not None:
            self._stats.add("sets")
        return bool(done)

    # -- health and statistics -----------------------------------------------------------------

    def ping(self) -> bool:
        """True when Redis answers PING; never raises (bounded by the socket timeout)."""
        return bool(self.health()["status"] == "healthy")

    def health(self) -> dict[str, Any]:
        """``status`` (healthy or unhealthy), ``backend``, ``url`` (without credentials),
        ``latency_ms`` and ``breaker``; ``error`` naming the cause when unhealthy; with a near
        cache, ``near_cache`` (:meth:`near_cache_state`, this process's)."""
        started = time.perf_counter()
        report: dict[str, Any] = {"backend": "redis", "url": redact_url(self.url)}
        try:
            self._client.ping()
        except (RedisError, OSError) as exc:
            if isinstance(exc, _BREAKER_ERRORS):
                self._breaker.failure()
            report.update(status="unhealthy", error=f"{type(exc).__name__}: {exc}")
        else:
            self._breaker.success()
            report["status"] = "healthy"
        report["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        report["breaker"] = self._breaker.state
        near = self.near_cache_state()
        if near is not None:
            report["near_cache"] = near
        return report

    def near_cache_state(self) -> dict[str, Any] | None:
        """This process's near cache: ``connected`` (it serves only while its tracking
        connections are up; they open at the first read), ``entries``, ``bytes`` and their
        bounds; None without one."""
        near = self._near
        if near is None:
            return None
        return {
            "connected": near.connected,
            "entries": len(near),
            "max_entries": near.max_entries,
            "bytes": near.bytes_held,
            "max_bytes": near.max_bytes,
        }

    def get_stats(self) -> dict[str, Any]:
        """Hits, misses, sets, deletes, errors, total_requests and hit_rate (percent, 2 decimals).

        The counters are shared by every process using this Redis and prefix: each process
        flushes its own counts at least once a second. This call flushes this process's counts
        first, so its own work is always included. ``"shared"`` says whether the counts are the
        fleet's: False when Redis is unreachable (the counts of this process alone are
        returned) and for ``memory://``, whose server, and so its counts, are this process's.
        """
        shared = self.shared_counters()
        if shared is None:
            return {**summarize(self._stats.pending()), "shared": False}
        return {**summarize(shared), "shared": self.shared}

    def shared_counters(self) -> dict[str, int] | None:
        """Every shared counter as stored in Redis, including the latency histogram's fields
        (read them with ``flask_fennec_cache._stats.latency_histogram``), after flushing this
        process's counts; None when Redis is unreachable. :meth:`get_stats` summarises these.
        """
        self._stats.flush()
        if not self._breaker.allow():
            self._skipped("get_stats")
            return None
        try:
            shared = cast(dict[bytes, bytes], self._client.hgetall(self._stats_key))
        except RedisError as exc:
            self._failed(exc, "get_stats")
            return None
        self._breaker.success()
        counts = {k.decode(): int(v) for k, v in shared.items()}
        for field, amount in self._stats.pending().items():  # refused by Redis (e.g. OOM)
            counts[field] = counts.get(field, 0) + amount
        return counts

    def reset_stats(self) -> bool:
        """Set the shared counters to zero and forget this process's unflushed counts; False
        (and nothing forgotten) when Redis could not be reached and fail-open is on."""
        if self._run("reset_stats", lambda c: c.delete(self._stats_key)) is None:
            return False
        self._stats.discard()
        return True

    def close(self) -> None:
        """Flush statistics and release the connection pool."""
        self._stats.close()
        if self._near is not None:
            self._near.close()
        self._client.close()

    # -- internals -----------------------------------------------------------------------------

    def _encode(self, key: str, value: Any) -> bytes | None:
        """The stored form of *value* (compressed when large), or None when it is too large."""
        check_key(key)
        inner = value.value if isinstance(value, Envelope) else value
        data = encode(inner, key, self._pickle_secret, self._serializer)
        if len(data) > self.max_value_bytes:
            self._log.warning(
                "too-large",
                f"not caching {key!r}: {len(data)} bytes is over the "
                f"{self.max_value_bytes}-byte limit (FENNEC_CACHE_MAX_VALUE_BYTES)",
            )
            return None
        data = self._compress(data)
        return envelope_head(value) + data if isinstance(value, Envelope) else data

    def _decode(self, key: str, data: bytes | None) -> Any:
        """The decoded entry, MISSING for no entry, or :class:`Unreadable` (counted, logged)."""
        if data is None:
            return MISSING
        try:
            return decode(data, self._pickle_secret, self.max_value_bytes)
        except CorruptEntry as exc:
            self._stats.add("errors")
            self._log.warning("corrupt", f"treating {key!r} as a miss: {exc}")
            return Unreadable(data)

    def _ttl_ms(self, ttl: float | None) -> int | None:
        seconds = self.default_ttl if ttl is None else check_ttl(ttl)
        return None if seconds is None else max(1, int(seconds * 1000))

    def _run(self, op: str, command: Any) -> Any:
        """Run ``command(client)``; on a Redis failure count it and return None (fail-open)."""
        if not self._breaker.allow():
            self._skipped(op)
            return None
        started = self._stats.timer()
        try:
            result = command(self._client)
        except RedisError as exc:
            self._failed(exc, op)
            return None
        finally:
            self._stats.observe_since(started)
        self._breaker.success()
        return result

    def _scan_batches(self, match: str) -> Iterator[list[bytes]]:
        """Keys matching *match* (not ours), in SCAN batches; on a cluster, every primary's."""
        reserved = self._reserved.encode()
        for node in scan_targets(self._client):
            cursor = 0
            while True:
                cursor, found = cast(
                    tuple[int, list[bytes]],
                    node.scan(cursor=cursor, match=match, count=SCAN_BATCH),
                )
                batch = [k for k in found if not k.startswith(reserved)]
                if batch:
                    yield batch
                if not cursor:
                    break

    def _failed(self, exc: RedisError, op: str) -> None:
        self._stats.add("errors")
        if isinstance(exc, _BREAKER_ERRORS):
            self._breaker.failure()
        else:
            self._breaker.success()  # the server answered: it is up, the command was refused
        if not self.fail_open:
            raise CacheUnavailable(f"{op} failed: {type(exc).__name__}: {exc}") from exc
        self._log.warning(
            f"error:{op}:{type(exc).__name__}",
            f"cache {op} failed, continuing without the cache: {type(exc).__name__}: {exc}",
        )

    def _skipped(self, op: str) -> None:
        if not self.fail_open:
            raise CacheUnavailable(f"{op} skipped: the circuit breaker is open after failures")

    def _quietly(self, command: Callable[[redis.Redis], Any]) -> Any:
        """Run ``command(client)`` for a background thread: no logging, no counting, no raising
        (the breaker still learns); None when Redis failed or the breaker is open."""
        if not self._breaker.allow():
            return None
        try:
            result = command(self._client)
        except RedisError as exc:
            if isinstance(exc, _BREAKER_ERRORS):
                self._breaker.failure()
            return None
        self._breaker.success()
        return result

    def _flush_stats(self, counts: Mapping[str, int]) -> bool:
        def flush(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(self._stats_key, field, amount)
            return pipe.execute()

        return self._quietly(flush) is not None

    def _extend(self, name: str, expected: bytes, ttl_ms: int, grow: bool = False) -> bool:
        """Make *name* expire in *ttl_ms* if it still starts with *expected* (its holder's
        lease or lock); with *grow*, never shorten its life (a value kept while refreshed)."""
        key = self.prefix + name
        args = [expected, ttl_ms, "grow" if grow else ""]
        return bool(self._quietly(lambda c: self._scripts.extend([key], args, c)))

