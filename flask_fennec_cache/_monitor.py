"""Health and the shared statistics of one cache (counted per process, summed in Redis)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.exceptions import RedisError

from ._connect import redact_url
from ._guard import BREAKER_ERRORS, Guard
from ._redis_info import RedisInfo
from ._stats import StatsBuffer, split_named, summarize, summarize_names
from .near import NearCache

__all__ = ["Monitor"]


class Monitor:
    """Answers for one cache: is Redis healthy, and what do the shared counters say.

    :param stats_key: the hash in Redis holding the counters every process flushes into.
    :param shared: whether other processes see these counters (False for ``memory://``).
    """

    def __init__(
        self,
        guard: Guard,
        counters: StatsBuffer,
        stats_key: str,
        url: str,
        near: NearCache | None,
        shared: bool,
    ) -> None:
        self._guard = guard
        self._counters = counters
        self._stats_key = stats_key
        self._url = redact_url(url)
        self._near = near
        self._shared = shared
        #: Redis' own figures (INFO), sampled at most once a second.
        self.redis_info = RedisInfo(guard, stats_key, in_process=not shared)

    def health(self, redis_info: bool = True) -> dict[str, Any]:
        """See :meth:`~flask_fennec_cache.RedisCache.health` (without *redis_info*, no ``redis``
        and ``warnings``: no ``INFO`` is sampled)."""
        started = time.perf_counter()
        report: dict[str, Any] = {"backend": "redis", "url": self._url}
        breaker = self._guard.breaker
        try:
            self._guard.client.ping()
        except (RedisError, OSError) as exc:
            if isinstance(exc, BREAKER_ERRORS):
                breaker.failure()
            report.update(status="unhealthy", error=f"{type(exc).__name__}: {exc}")
        else:
            breaker.success()
            report["status"] = "healthy"
        report["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        report["breaker"] = breaker.state
        if redis_info:
            redis_state = self.redis_info.state(reachable=report["status"] == "healthy")
            report["redis"] = redis_state.as_dict()
            report["warnings"] = list(redis_state.warnings)
        near = self.near_cache_state()
        if near is not None:
            report["near_cache"] = near
        return report

    def near_cache_state(self) -> dict[str, Any] | None:
        """See :meth:`~flask_fennec_cache.RedisCache.near_cache_state`."""
        near = self._near
        if near is None:
            return None
        return {
            "connected": near.connected,
            "state": near.state,
            "entries": len(near),
            "max_entries": near.max_entries,
            "bytes": near.bytes_held,
            "max_bytes": near.max_bytes,
        }

    def get_stats(self) -> dict[str, Any]:
        """See :meth:`~flask_fennec_cache.RedisCache.get_stats`.

        ``by_name`` holds each name's counts (sorted by traffic). When the shared counters
        cannot be read, the figures are this process's unflushed counts only: ``shared`` is
        False and ``available`` False (so nobody reads them as every process's).
        """
        everything = self.shared_snapshot()
        available = everything is not None
        if everything is None:
            everything = self._counters.pending()
        totals, by_name = split_named(everything)
        return {
            **summarize(totals),
            "by_name": summarize_names(by_name),
            "shared": self._shared and available,
            "available": available,
        }

    def shared_counters(self) -> dict[str, int] | None:
        """See :meth:`~flask_fennec_cache.RedisCache.shared_counters` (the totals; the
        per-name fields are left out)."""
        everything = self.shared_snapshot()
        return None if everything is None else split_named(everything)[0]

    def shared_snapshot(self) -> dict[str, int] | None:
        """The shared counters with every name's fields (``n|<field>|<name>``, see
        :func:`~._stats.split_named`), in one read; None when Redis is unreachable."""
        self._counters.flush()
        found = self._guard.run(
            "get_stats",
            lambda c: cast(dict[bytes, bytes], c.hgetall(self._stats_key)),
            timed=False,
        )
        if found is None:
            return None
        counts = {k.decode(): int(v) for k, v in found.items()}
        for field, amount in self._counters.pending().items():  # refused by Redis (e.g. OOM)
            counts[field] = counts.get(field, 0) + amount
        return counts

    def reset_stats(self) -> bool:
        """See :meth:`~flask_fennec_cache.RedisCache.reset_stats`."""
        if self._guard.run("reset_stats", lambda c: c.delete(self._stats_key)) is None:
            return False
        self._counters.discard()
        return True

    def flush(self, counts: Mapping[str, int]) -> bool:
        """Add this process's *counts* to the shared ones (for the flushing thread: quiet)."""

        def add(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(self._stats_key, field, amount)
            return pipe.execute()

        return self._guard.quietly(add) is not None
