"""Redis' own health, read with ``INFO``: memory against ``maxmemory``, the eviction policy,
evicted and expired keys (totals and per second), connected clients, and the warnings they call
for.

``INFO`` is sent only by :class:`RedisInfo` (health, the metrics scrape, the dashboard's poll),
at most once per :data:`SAMPLE_SECONDS` per process however many callers ask: never on the
request path. One server is asked (on Sentinel, the master), or each primary of a cluster.
Servers that refuse ``INFO`` (an ACL without ``+info``, a renamed command, a managed Redis) are
reported without figures, with the reason.

Rates come from two samples of this process (each with its monotonic time): the first sample
has none yet ("unknown", never 0). The eviction trend is judged over three samples at least
:data:`TREND_SECONDS` apart (see :func:`eviction_trend`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from redis.exceptions import NoPermissionError, RedisError, ResponseError

from ._forksafe import reset_after_fork
from ._guard import Guard
from ._ratelog import logger
from ._topology import ClusterClient

__all__ = [
    "MIN_FALL_POINTS",
    "MIN_READS",
    "SAMPLE_SECONDS",
    "TREND_SECONDS",
    "UNKNOWN",
    "RedisInfo",
    "RedisState",
    "ServerFigures",
    "eviction_trend",
    "policy_warnings",
    "read_servers",
]

#: A sample is reused by every caller for this many seconds (a dashboard storm: one INFO).
SAMPLE_SECONDS: Final = 1.0
#: The eviction trend compares two intervals of at least this many seconds each.
TREND_SECONDS: Final = 10.0
#: Reads an interval needs before its hit rate is compared with another's.
MIN_READS: Final = 10
#: How many percentage points the hit rate must fall for the trend warning.
MIN_FALL_POINTS: Final = 1.0
#: A rate this process cannot tell yet (one sample so far, or a counter that went back).
UNKNOWN: Final = "unknown"
NOEVICTION: Final = "noeviction"

#: The key of the one server of a standalone or Sentinel cache in :attr:`RedisState.servers`.
SINGLE: Final = ""


@dataclass(frozen=True)
class ServerFigures:
    """What ``INFO`` said about one server; None where its answer left a figure out."""

    used_memory: int | None
    maxmemory: int | None
    policy: str | None
    evicted: int | None
    expired: int | None
    clients: int | None
    role: str | None

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> ServerFigures:
        """The figures in a parsed ``INFO`` answer."""

        def number(name: str) -> int | None:
            value = info.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        policy, role = info.get("maxmemory_policy"), info.get("role")
        return cls(
            used_memory=number("used_memory"),
            maxmemory=number("maxmemory"),
            policy=policy if isinstance(policy, str) else None,
            evicted=number("evicted_keys"),
            expired=number("expired_keys"),
            clients=number("connected_clients"),
            role=role if isinstance(role, str) else None,
        )


def read_servers(client: Any, skip: Collection[str] = ()) -> dict[str, ServerFigures | str]:
    """``INFO`` of the server behind *client* (``{SINGLE: ...}``; on Sentinel, the master's),
    or of each primary of a cluster (``{"host:port": ...}``, but the nodes named in *skip*);
    each value is the figures, or the reason there are none."""
    if not isinstance(client, ClusterClient):
        return {SINGLE: _info(client.info)}
    try:
        cluster: Any = client.cluster
        primaries = list(cluster.get_primaries())
    except RedisError as exc:
        return {SINGLE: _refusal(exc)}
    found: dict[str, ServerFigures | str] = {}
    for node in primaries:
        if node.name in skip:
            found[node.name] = "not asked: its circuit breaker is open"
        else:
            found[node.name] = _info(cluster.get_redis_connection(node).info)
    return found


def _info(ask: Callable[[], Mapping[str, Any]]) -> ServerFigures | str:
    try:
        return ServerFigures.of(ask())
    except RedisError as exc:
        return _refusal(exc)


def _refusal(exc: RedisError) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NoPermissionError):
        return f"INFO refused by the server's ACL ({text}); grant it with +info"
    if isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
        return f"INFO is disabled or renamed on this server ({text})"
    return f"INFO failed: {text}"


def policy_warnings(servers: Mapping[str, ServerFigures | str]) -> list[str]:
    """The warning for servers whose policy is ``noeviction`` under a ``maxmemory``: once full,
    they refuse every write. (Without a ``maxmemory`` the policy never applies.)"""
    refusing = {
        name: figures.maxmemory
        for name, figures in servers.items()
        if isinstance(figures, ServerFigures)
        and figures.policy == NOEVICTION
        and figures.maxmemory  # None or 0: no limit, so nothing to refuse
    }
    if not refusing:
        return []
    where = "" if set(refusing) == {SINGLE} else " on " + ", ".join(sorted(refusing))
    limits = ", ".join(sorted({_bytes(limit or 0) for limit in refusing.values()}))
    return [
        f"Redis' maxmemory-policy is noeviction{where}: once used memory reaches maxmemory "
        f"({limits}) Redis refuses every write, so the cache stores nothing new (reads and "
        "loaders keep working); set maxmemory-policy allkeys-lru (or allkeys-lfu) for a cache"
    ]


@dataclass(frozen=True)
class _Sample:
    at: float
    servers: Mapping[str, ServerFigures | str]
    reads: tuple[int, int] | None  # the cache's shared (hits, misses)

    def total(self, name: str) -> int | None:
        """The sum of a counter over every server, None unless all answered it."""
        values = [getattr(s, name) for s in self.servers.values()]
        counts = [v for v in values if isinstance(v, int)]
        return sum(counts) if counts and len(counts) == len(values) else None


def _grew(newer: int | None, older: int | None) -> int | None:
    """How much a counter grew, None when unknown or when it went back (a restart, a reset)."""
    if newer is None or older is None or newer < older:
        return None
    return newer - older


def _hit_rate(newer: _Sample, older: _Sample) -> float | None:
    if newer.reads is None or older.reads is None:
        return None
    hits, misses = (_grew(n, o) for n, o in zip(newer.reads, older.reads, strict=True))
    if hits is None or misses is None or hits + misses < MIN_READS:
        return None
    return 100.0 * hits / (hits + misses)


def eviction_trend(first: _Sample, middle: _Sample, last: _Sample) -> str | None:
    """The warning when evictions are climbing while the hit rate falls, else None.

    That is: over both intervals (*first* to *middle*, *middle* to *last*, each at least
    :data:`TREND_SECONDS`), Redis evicted keys (the same servers answering), and the cache's
    hit rate (its shared hits and misses, :data:`MIN_READS` reads at least in each interval)
    fell by at least :data:`MIN_FALL_POINTS` percentage points from the first to the second.
    """
    if not (set(first.servers) == set(middle.servers) == set(last.servers)):
        return None
    before = _grew(middle.total("evicted"), first.total("evicted"))
    now = _grew(last.total("evicted"), middle.total("evicted"))
    if not before or not now:
        return None
    was, is_ = _hit_rate(middle, first), _hit_rate(last, middle)
    if was is None or is_ is None or is_ > was - MIN_FALL_POINTS:
        return None
    seconds = last.at - middle.at
    return (
        f"Redis is evicting keys ({now / seconds:.1f}/s over the last {seconds:.0f} s, "
        f"{before} evicted in the {middle.at - first.at:.0f} s before) while the cache's hit "
        f"rate fell from {was:.1f} % to {is_:.1f} %: the cached data no longer fits in "
        "maxmemory; raise maxmemory, or cache fewer or smaller entries"
    )


@dataclass(frozen=True)
class RedisState:
    """One report of Redis' health: the figures of the servers that answered ``INFO``, their
    rates, and the warnings."""

    #: Why there are no figures at all (None when some server answered).
    reason: str | None
    #: The figures of each server that answered (key :data:`SINGLE` outside a cluster).
    servers: Mapping[str, ServerFigures] = field(default_factory=dict)
    #: The servers that did not answer, with the reason (a cluster's other nodes answered).
    failed: Mapping[str, str] = field(default_factory=dict)
    #: Per server: evicted and expired keys per second since this process's previous sample.
    rates: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: Seconds between the two samples the rates come from (None: first sample).
    interval: float | None = None
    warnings: tuple[str, ...] = ()
    cluster: bool = False

    @property
    def available(self) -> bool:
        """Are there figures to show?"""
        return bool(self.servers)

    def as_dict(self) -> dict[str, Any]:
        """The ``redis`` section of ``health()``."""
        if not self.available:
            return {"available": False, "reason": self.reason}
        if not self.cluster:
            return {"available": True, **self._figures(SINGLE)}
        nodes: dict[str, Any] = {name: self._figures(name) for name in self.servers}
        for name, reason in self.failed.items():
            nodes[name] = {"available": False, "reason": reason}
        return {"available": True, **self._sum(), "nodes": dict(sorted(nodes.items()))}

    def _figures(self, name: str) -> dict[str, Any]:
        figures = self.servers[name]
        evicted, expired = self.rates.get(name, (None, None))
        return _section(
            figures.used_memory,
            figures.maxmemory,
            figures.policy,
            (figures.evicted, evicted),
            (figures.expired, expired),
            figures.clients,
            self.interval,
            figures.role,
        )

    def _sum(self) -> dict[str, Any]:
        every = list(self.servers.values())

        def total(name: str) -> int | None:
            values = [getattr(s, name) for s in every]
            return sum(values) if all(isinstance(v, int) for v in values) else None

        def rate(index: int) -> float | None:
            values = [self.rates.get(name, (None, None))[index] for name in self.servers]
            return None if any(v is None for v in values) else sum(v for v in values if v)

        policies = {s.policy for s in every}
        policy = policies.pop() if len(policies) == 1 else "mixed"
        maxmemory = total("maxmemory")
        limited = maxmemory if all(s.maxmemory for s in every) else 0  # a node without limit
        return _section(
            total("used_memory"),
            limited if maxmemory is not None else None,
            policy,
            (total("evicted"), rate(0)),
            (total("expired"), rate(1)),
            total("clients"),
            self.interval,
            None,
        )


def _section(
    used: int | None,
    maxmemory: int | None,
    policy: str | None,
    evicted: tuple[int | None, float | None],
    expired: tuple[int | None, float | None],
    clients: int | None,
    interval: float | None,
    role: str | None,
) -> dict[str, Any]:
    """The figures of one server (or a cluster's sum) as health shows them: a figure the
    server left out is left out; a rate not known yet is "unknown"."""
    out: dict[str, Any] = {}
    if used is not None:
        out["used_memory_bytes"] = used
    if maxmemory is not None:
        out["maxmemory_bytes"] = maxmemory  # 0: no limit
        if maxmemory and used is not None:
            out["used_memory_percent"] = round(100.0 * used / maxmemory, 2)
    if policy is not None:
        out["maxmemory_policy"] = policy
    for name, (count, per_second) in (("evicted_keys", evicted), ("expired_keys", expired)):
        if count is not None:
            out[name] = count
            out[f"{name}_per_second"] = UNKNOWN if per_second is None else round(per_second, 2)
    if interval is not None:
        out["rates_over_seconds"] = round(interval, 2)
    if clients is not None:
        out["connected_clients"] = clients
    if role is not None:
        out["role"] = role
    return out


class RedisInfo:
    """Samples ``INFO`` for one cache, at most once per *max_age* seconds, and keeps what the
    rates and the trend need (this process's previous samples, with their monotonic time).

    :param guard: the cache's guard: its client (and, on a cluster, the nodes whose breaker
        is open, which are not asked).
    :param stats_key: the hash of the shared counters, whose ``hits`` and ``misses`` give the
        hit rate of the trend.
    :param in_process: the server lives in this process (``memory://``): nothing to report.
    :param reads: the cache's shared ``(hits, misses)`` (default: read from *stats_key*).
    """

    def __init__(
        self,
        guard: Guard,
        stats_key: str,
        *,
        in_process: bool = False,
        reads: Callable[[], tuple[int, int] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = SAMPLE_SECONDS,
        trend_seconds: float = TREND_SECONDS,
    ) -> None:
        self._guard = guard
        self._stats_key = stats_key
        self._in_process = in_process
        self._reads = reads or self._shared_reads
        self._clock = clock
        self._max_age = max_age
        self._trend_seconds = trend_seconds
        self._lock = threading.Lock()
        self._previous: _Sample | None = None
        self._state: RedisState | None = None
        self._trend: deque[_Sample] = deque(maxlen=3)
        self._trend_warning: str | None = None
        reset_after_fork(self)

    def state(self, reachable: bool = True) -> RedisState:
        """The latest report (a new ``INFO`` when the last is older than *max_age*).

        :param reachable: whether the caller just found Redis answering; when not, nothing is
            sent and the report says so.
        """
        if self._in_process:
            return RedisState(
                "the cache's server runs in this process (memory:// or a fakeredis client): "
                "there is no Redis INFO to report"
            )
        if not reachable:
            return RedisState("Redis does not answer, so INFO was not asked")
        with self._lock:
            state = self._state
            if state is None or self._previous is None or self._age() >= self._max_age:
                state = self._state = self._sample()
            return state

    def _age(self) -> float:
        previous = self._previous
        return float("inf") if previous is None else self._clock() - previous.at

    def _sample(self) -> RedisState:
        nodes = self._guard.nodes
        skip = [n for n, s in nodes.states().items() if s == "open"] if nodes else ()
        servers = read_servers(self._guard.client, skip)
        sample = _Sample(self._clock(), servers, self._reads())
        answered = {n: s for n, s in servers.items() if isinstance(s, ServerFigures)}
        failed = {n: s for n, s in servers.items() if isinstance(s, str)}
        previous, self._previous = self._previous, sample
        rates: dict[str, tuple[float | None, float | None]] = {}
        interval = None
        if previous is not None and sample.at > previous.at:
            interval = sample.at - previous.at
            for name, figures in answered.items():
                before = previous.servers.get(name)
                if isinstance(before, ServerFigures):
                    evicted = _grew(figures.evicted, before.evicted)
                    expired = _grew(figures.expired, before.expired)
                    rates[name] = (
                        None if evicted is None else evicted / interval,
                        None if expired is None else expired / interval,
                    )
        self._follow_trend(sample)
        warnings = policy_warnings(servers)
        if self._trend_warning is not None:
            warnings.append(self._trend_warning)
        if answered and failed:
            warnings.extend(
                f"Redis {name}: {reason}; the cluster's figures leave it out"
                for name, reason in sorted(failed.items())
            )
        reason = None if answered else "; ".join(failed.values()) or "no server to ask"
        return RedisState(
            reason,
            answered,
            failed if answered else {},
            rates,
            interval,
            tuple(warnings),
            cluster=SINGLE not in servers,
        )

    def _follow_trend(self, sample: _Sample) -> None:
        trend = self._trend
        if trend and sample.at - trend[-1].at < self._trend_seconds:
            return
        trend.append(sample)
        was, self._trend_warning = (
            self._trend_warning,
            eviction_trend(*trend) if len(trend) == 3 else None,
        )
        if self._trend_warning is not None and was is None:
            logger.warning("%s.", self._trend_warning)  # once as it starts, not every sample

    def _shared_reads(self) -> tuple[int, int] | None:
        found = self._guard.quietly(lambda c: c.hmget(self._stats_key, "hits", "misses"))
        if found is None:
            return None
        hits, misses = (int(value or 0) for value in found)
        return hits, misses

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _bytes(count: int) -> str:
    """*count* bytes for people: ``512 B``, ``1.5 MiB``."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
