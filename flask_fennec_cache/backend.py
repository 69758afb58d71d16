"""RedisCache: the cache under one key prefix, a facade over parts that each do one job.

The parts (private modules): :class:`~._guard.Guard` runs every command under the circuit
breaker and decides what a failure means; :class:`~._codec.EntryCodec` turns entries into bytes
and back; :class:`~._reader.Reader` reads entries (near cache first); :class:`~._writer.Writer`
stores and removes them; :class:`~._tagindex.TagIndex` keeps tag versions;
:class:`~._coordination.Coordination` owns leases, locks, groups and single flight;
:class:`~._keyspace.Keyspace` walks keys with SCAN; :class:`~._monitor.Monitor` answers health
and statistics. The loaders (:mod:`.loading`) use the parts through the attributes named in
:class:`~.loading.CacheParts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import redis

from ._breaker import CircuitBreaker
from ._classify import usable
from ._codec import MISSING, EntryCodec, Unreadable
from ._connect import fast_get, make_client, redact_url
from ._coordination import Coordination, Group
from ._generation import Generation
from ._guard import Guard
from ._keyspace import Keyspace
from ._monitor import Monitor
from ._ratelog import RateLimitedLog
from ._reader import Reader, make_near_cache
from ._recovery import Invalidations
from ._scripts import Scripts
from ._stats import StatsBuffer
from ._tagindex import TagIndex
from ._tracing import invalidation
from ._validate import RESERVED, check_prefix, check_ttl
from ._writer import Writer
from .config import DEFAULTS
from .errors import ConfigurationError
from .serializers import LEASE_TAG, Envelope

__all__ = ["MISSING", "RESERVED", "Group", "RedisCache", "Unreadable"]

DEFAULT_URL: Final[str] = DEFAULTS["url"]
DEFAULT_PREFIX: Final[str] = DEFAULTS["prefix"]


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
    largest value stored and how often statistics are flushed. Every default is the
    configuration table's (``flask_fennec_cache.config.DEFAULTS``) but *default_ttl*: without
    Flask an entry ``set`` without a TTL is kept (as in redis-py); an app's entries live
    ``FENNEC_CACHE_DEFAULT_TTL`` (300 s) unless told otherwise.
    """

    def __init__(
        self,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        *,
        default_ttl: int | None = None,
        socket_timeout: float = DEFAULTS["socket_timeout"],
        connect_timeout: float = DEFAULTS["connect_timeout"],
        max_connections: int = DEFAULTS["max_connections"],
        health_check_interval: int = DEFAULTS["health_check_interval"],
        fail_open: bool = DEFAULTS["fail_open"],
        breaker_threshold: int = DEFAULTS["breaker_threshold"],
        breaker_cooldown: float = DEFAULTS["breaker_cooldown"],
        max_value_bytes: int = DEFAULTS["max_value_bytes"],
        stats_flush_interval: float = DEFAULTS["stats_flush_interval"],
        ttl_jitter: float = DEFAULTS["ttl_jitter"],
        serializer: str = DEFAULTS["serializer"],
        secret_key: str | bytes | None = DEFAULTS["secret_key"],
        tls_ca_certs: str | None = DEFAULTS["tls_ca_certs"],
        tls_certfile: str | None = DEFAULTS["tls_certfile"],
        tls_keyfile: str | None = DEFAULTS["tls_keyfile"],
        near_cache: bool = DEFAULTS["near_cache"],
        near_cache_size: int = DEFAULTS["near_cache_size"],
        near_cache_ttl: float = DEFAULTS["near_cache_ttl"],
        near_cache_max_bytes: int = DEFAULTS["near_cache_max_bytes"],
        compression: str = DEFAULTS["compression"],
        compress_threshold: int = DEFAULTS["compress_threshold"],
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
        #: This cache's rate-limited log (one line per cause per 10 s).
        self.log = RateLimitedLog()
        #: This process's counts, flushed to the shared ones in Redis (internal).
        self.counters = StatsBuffer(self._flush_counts, stats_flush_interval)
        #: The entry codec (internal).
        codec = (serializer, secret_key, compression, compress_threshold, max_value_bytes)
        self.codec = EntryCodec(*codec, self.counters, self.log)
        self._client = client or make_client(
            self.url,
            **_connection_options(locals()),
        )
        #: Whether other processes see these entries and counters: False for ``memory://`` (and
        #: a fakeredis client), whose server lives in this process.
        self.shared = not self.url.startswith("memory:") and not type(
            self._client
        ).__module__.startswith("fakeredis")
        reserved, scripts, log = self.prefix + RESERVED, Scripts(self._client), self.log
        breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        #: Runs every command under the circuit breaker (internal).
        self.guard = guard = Guard(self._client, breaker, self.counters, log, fail_open)
        near = None
        if near_cache:
            sizes = (near_cache_size, near_cache_ttl, near_cache_max_bytes)
            near = make_near_cache(self.url, self._client, self.prefix, *sizes, log)
        #: Tag versions (internal; the near cache keeps copies of them too).
        self.tag_index = TagIndex(guard, scripts, self.prefix, near)
        #: The read path (internal).
        get = fast_get(self._client)
        self.reader = Reader(guard, self.codec, self.tag_index, self.prefix, near, get, log)
        forget = self.reader.forget
        #: Leases, locks, groups and single flight (internal).
        self.coordination = Coordination(
            guard, scripts, self.prefix, self.counters, forget, self.default_ttl
        )
        #: The write path (internal).
        parts = (guard, self.codec, self.tag_index, self.counters)
        self.writer = Writer(*parts, self.prefix, self.default_ttl, forget)
        self._keyspace = Keyspace(guard, self.prefix, reserved)
        #: Health and the shared statistics (internal).
        self.monitor = Monitor(
            guard, self.counters, reserved + "stats", self.url, near, self.shared
        )
        if near is not None:
            self.counters.count_from("near_hits", lambda: near.hits)
        flush_near = None if near is None else near.flush
        self.codec.generation = generation = Generation.of(self.prefix, guard, flush_near)
        self.counters.after_round.append(generation.read_again)  # so that no read has to
        invalidations = (self.try_delete, self.invalidate_tags, self.drop_group, self.try_clear)
        guard.pending.bind(Invalidations(*invalidations, generation.bump), flush_near)

    def __repr__(self) -> str:
        return f"RedisCache(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (keys you use on it directly are not prefixed)."""
        return self._client

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: ``"closed"``, ``"open"`` or ``"half-open"``."""
        return self.guard.breaker.state

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
        value = usable(self.reader.read(key), self.tag_index)
        if value is MISSING:
            self.counters.add("misses")
        else:
            self.counters.hit()
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The entries found among *keys* (misses are left out): those the near cache holds
        from it, the others in one round trip (on a cluster: one per node)."""
        keys = [key for key in keys if self.reader.key_ok(key)]
        asked, keys = len(keys), self.guard.uncovered("get_many", keys)
        self.counters.add("misses", asked - len(keys))
        if not keys:
            return {}
        entries = self.reader.fetch_many(keys)
        tags = {t for e in entries if isinstance(e, Envelope) for t in e.tags}
        known = self.tag_index.versions(tags) if tags else {}
        found: dict[str, Any] = {}
        for key, entry in zip(keys, entries, strict=True):
            value = usable(entry, self.tag_index, known)
            if value is not MISSING:
                found[key] = value
        self.counters.add("hits", len(found))
        self.counters.add("misses", len(keys) - len(found))
        return found

    def ttl(self, key: str) -> int | None:
        """Seconds *key* has left; -1 if it never expires; None if it does not exist."""
        if not self.reader.key_ok(key):
            return None
        name = self.prefix + key

        def read(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.getrange(name, 0, 0)
            pipe.ttl(name)
            return pipe.execute()

        found = self.guard.run("ttl", read, keys=(key,))
        if found is None or found[1] == -2 or found[0] == LEASE_TAG:
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
        return self.writer.set(key, value, ttl, tags, stale_ttl)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> bool:
        """Store every entry of *mapping* in one round trip; True when all were stored."""
        return self.writer.set_many(mapping, ttl)

    def delete(self, *keys: str) -> int:
        """Remove *keys*; returns how many existed (0 when Redis failed and fail-open is on)."""
        return self.try_delete(*keys) or 0

    @invalidation("delete")
    def try_delete(self, *keys: str) -> int | None:
        """Like :meth:`delete`, but None when Redis could not be reached (fail-open)."""
        return self.writer.delete(keys)

    def clear(self, pattern: str = "*") -> int:
        """Remove the keys under this cache's prefix that match the glob *pattern*.

        Walks the keyspace with SCAN and removes matches with UNLINK in batches (never KEYS or
        FLUSHDB). Only keys under the prefix are reachable, and the library's own bookkeeping
        (``{prefix}__fennec__:…``) is never removed. Returns the number of keys removed (those
        removed before a failure, when Redis fails and fail-open is on).
        """
        return self.try_clear(pattern) or 0

    @invalidation("clear")
    def try_clear(self, pattern: str = "*") -> int | None:
        """Like :meth:`clear`, but None when Redis failed before the walk was complete."""
        removed, complete = self._keyspace.clear(pattern)
        if self.reader.near is not None:
            self.reader.near.flush()
        self.counters.add("deletes", removed)
        return removed if complete else None

    def keys(self, pattern: str = "*", limit: int = 1000) -> list[str]:
        """Up to *limit* keys (relative to the prefix) matching *pattern*, found with SCAN.

        Keys holding only the placeholder of a load in progress are left out.
        """
        return self._keyspace.keys(pattern, limit)

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store *value* only if *key* holds nothing, atomically (``SET NX``: usable as a lock);
        False when the key exists (a load in progress counts), or as :meth:`set` answers."""
        return self.writer.add(key, value, ttl)

    # -- tags and groups -----------------------------------------------------------------------

    @invalidation("tags")
    def invalidate_tags(self, *tags: str) -> bool:
        """Drop every entry carrying any of *tags*, in one round trip whatever their number.

        Each tag has a version; entries remember the versions they were loaded under and are
        misses once a version changed. Returns False when Redis could not be reached.
        """
        return self.tag_index.invalidate(tags)

    def tag_versions(self, tags: Iterable[str], create: bool = False) -> dict[str, str] | None:
        """The current version of each tag (creating missing ones when *create*); None on error.

        A tag without a version (never used, or evicted) is left out, so entries carrying it
        are misses: losing a version can only drop entries, never revive stale ones.
        """
        return self.tag_index.versions(tags, create)

    @invalidation("group")
    def drop_group(self, index: str) -> int:
        """Remove every entry of the group whose index is *index* (see :class:`Group`), in
        one step; the number removed (0 when Redis failed and fail-open is on)."""
        names = self.coordination.drop_group(index)
        if names and self.reader.near is not None:
            self.reader.near.evict(*names)
        self.counters.add("deletes", len(names))
        return len(names)

    # -- health and statistics -----------------------------------------------------------------

    def ping(self) -> bool:
        """True when Redis answers PING; never raises (bounded by the socket timeout)."""
        return bool(self.monitor.health(redis_info=False)["status"] == "healthy")

    def health(self) -> dict[str, Any]:
        """``status`` (healthy or unhealthy), ``backend``, ``url`` (without credentials),
        ``latency_ms``, ``breaker``, ``redis`` (Redis' ``INFO``, sampled at most once a second),
        ``warnings``; ``error`` when unhealthy; ``near_cache`` (:meth:`near_cache_state`)."""
        return self.monitor.health()

    def near_cache_state(self) -> dict[str, Any] | None:
        """This process's near cache: ``connected`` (it serves only while its tracking
        connections are up), ``state`` (:attr:`~.near.NearCache.state`: they open at the first
        read), ``entries``, ``bytes`` and their bounds; None without one."""
        return self.monitor.near_cache_state()

    def get_stats(self) -> dict[str, Any]:
        """Hits, misses, sets, deletes, errors, total_requests, hit_rate (percent, 2 decimals),
        and ``by_name`` (the same per function, view and fragment name, busiest first).

        Shared by every process on this Redis and prefix (each flushes at least once a second;
        this call flushes this process's counts first). ``"shared"`` is False for ``memory://``
        and when Redis is unreachable, when ``"available"`` is False too: then the counts are
        this process's alone.
        """
        return self.monitor.get_stats()

    def shared_counters(self) -> dict[str, int] | None:
        """The shared total counters as stored in Redis (per-name ones: :meth:`get_stats`),
        with the latency histogram's fields (``flask_fennec_cache._stats.latency_histogram``),
        after flushing this process's counts; None when Redis is unreachable.
        """
        return self.monitor.shared_counters()

    def reset_stats(self) -> bool:
        """Set the shared counters to zero and forget this process's unflushed counts; False
        (and nothing forgotten) when Redis could not be reached and fail-open is on."""
        return self.monitor.reset_stats()

    def close(self) -> None:
        """Flush statistics and release the connection pool."""
        self.counters.close()
        self.guard.close()
        self.coordination.keeper.close()
        if self.reader.near is not None:
            self.reader.near.close()
        self._client.close()

    def _flush_counts(self, counts: Mapping[str, int]) -> bool:
        monitor: Monitor | None = getattr(self, "monitor", None)  # None if __init__ failed
        return monitor is not None and monitor.flush(counts)


_CONNECTION_OPTIONS = (
    "socket_timeout",
    "connect_timeout",
    "max_connections",
    "health_check_interval",
    "tls_ca_certs",
    "tls_certfile",
    "tls_keyfile",
)


def _connection_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :class:`RedisCache` that :func:`make_client` takes."""
    return {name: arguments[name] for name in _CONNECTION_OPTIONS}
