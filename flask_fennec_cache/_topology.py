"""Redis Cluster and Sentinel specifics, kept out of the backend.

The backend talks to one client object whatever the topology; this module supplies:

- :class:`ClusterClient`, the client for ``redis+cluster://`` URLs: a redis-py
  :class:`~redis.cluster.RedisCluster` built on first use (so an application starts even while
  the cluster is unreachable, as it does with a standalone Redis), whose cluster-level failures
  (:class:`~redis.exceptions.RedisClusterException`, which is *not* a ``RedisError``) are raised
  as :class:`ClusterUnavailable`, a ``redis.ConnectionError``, so fail-open and the circuit
  breaker treat them like any other outage;
- :class:`ReplicaReads`, the client for ``redis+sentinel://...?read_from_replicas=true``: writes
  and scripts go to the master, plain reads (GET, MGET, TTL, PTTL) to a replica;
- the multi-key helpers the backend needs on a cluster: :func:`mget` (one MGET per slot,
  pipelined: one round trip per node) and :func:`scan_targets` (every primary, for SCAN);
- :func:`tracking_targets`, where the near cache's tracking connections go: the server, the
  master Sentinel names (and the address the client currently uses), or every primary of a
  cluster (and the primaries the cluster client currently knows).

Routing, slot maps, MOVED/ASK redirections and failover discovery stay redis-py's job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import (
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
)
from redis.sentinel import SentinelConnectionPool

from ._forksafe import reset_after_fork
from ._tracking import Addresses, TrackingTargets

__all__ = [
    "REPLICA_READ_COMMANDS",
    "ClusterClient",
    "ClusterUnavailable",
    "ReplicaReads",
    "mget",
    "scan_targets",
    "tracking_targets",
]

#: Commands :class:`ReplicaReads` sends to a replica; everything else goes to the master.
REPLICA_READ_COMMANDS = frozenset({"GET", "MGET", "TTL", "PTTL"})

# Misuse of the cluster API (not an outage): let these surface as the programming errors they are.
_PROGRAMMING_ERRORS = (CrossSlotTransactionError, InvalidPipelineStack)
# What redis-py's cluster client raises for an outage: its own errors, and an AttributeError
# when the node owning a slot vanished during a failover (``'NoneType' object has no attribute
# 'redis_connection'``, from its slot lookup).
_OUTAGES = (RedisClusterException, AttributeError)


class ClusterUnavailable(redis.ConnectionError):
    """The cluster (or the part of it owning a slot) could not be reached or has no slot map."""


def _translate(exc: Exception) -> ClusterUnavailable:
    return ClusterUnavailable(f"{type(exc).__name__}: {exc}")


class ClusterClient:
    """A :class:`~redis.cluster.RedisCluster` built on first use, with outages as RedisErrors.

    Every command method of ``RedisCluster`` is available on this object (``get``, ``set``,
    ``mget_nonatomic``, ``unlink``, ``pipeline``, ``scan``, ``ping``, ...). The cluster itself
    is :attr:`cluster`. A failed build (no seed node reachable) is retried on the next command.
    """

    #: There is no single connection pool on a cluster (the near cache asks
    #: :meth:`tracking_connections` instead).
    connection_pool: ClassVar[None] = None

    def __init__(
        self,
        build: Callable[[], RedisCluster],
        description: str = "cluster",
        replica_reads: bool = False,
    ) -> None:
        self._build = build
        self._description = description
        #: Whether plain reads (and so the near cache's fills) may be served by replicas.
        self.replica_reads = replica_reads
        self._cluster: RedisCluster | None = None
        self._lock = threading.Lock()
        reset_after_fork(self)

    def __repr__(self) -> str:
        state = "connected" if self._cluster is not None else "not yet connected"
        return f"<ClusterClient {self._description} ({state})>"

    @property
    def cluster(self) -> RedisCluster:
        """The redis-py cluster client, discovering the slot map now if not done yet."""
        cluster = self._cluster
        if cluster is not None:
            return cluster
        with self._lock:
            if self._cluster is None:
                try:
                    self._cluster = self._build()
                except RedisClusterException as exc:
                    raise ClusterUnavailable(
                        f"{self._description}: no seed node answered: {exc}"
                    ) from exc
            return self._cluster

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            command = getattr(self.cluster, name)  # an unknown name stays an AttributeError
            try:
                return command(*args, **kwargs)
            except _PROGRAMMING_ERRORS:
                raise
            except _OUTAGES as exc:
                raise _translate(exc) from exc

        call.__name__ = name
        return call

    def pipeline(self, transaction: bool | None = None, shard_hint: Any = None) -> Any:
        """A cluster pipeline (commands grouped per node: one round trip per node)."""
        cluster: Any = self.cluster
        return _GuardedPipeline(cluster.pipeline(transaction, shard_hint))

    def register_script(self, script: str) -> Script:
        """A Lua script object that runs through this client (without connecting yet). Given
        as UTF-8 bytes, it needs no encoder of the client's to compute its SHA1."""
        return Script(self, script.encode("utf-8"))  # type: ignore[arg-type]

    def primary_clients(self) -> list[redis.Redis]:
        """A client of every primary node, as currently known."""
        cluster: Any = self.cluster
        return [cluster.get_redis_connection(node) for node in cluster.get_primaries()]

    def tracking_connections(self, refresh: bool = False) -> list[AbstractConnection]:
        """A new, unconnected RESP3 connection to every primary (for the near cache); the slot
        map is discovered first if not done yet, or asked again with *refresh*."""
        cluster: Any = self.cluster
        if refresh:
            try:
                cluster.nodes_manager.initialize(disconnect_startup_nodes_pools=False)
            except RedisClusterException as exc:
                raise _translate(exc) from exc
        made: list[AbstractConnection] = []
        for node in cluster.get_primaries():
            pool = cluster.get_redis_connection(node).connection_pool
            made.append(pool.connection_class(**tracking_options(pool.connection_kwargs)))
        return made

    def primary_addresses(self) -> Addresses | None:
        """``(host, port)`` of every primary the cluster client knows now (no I/O); None if
        it has not discovered the cluster yet."""
        cluster: Any = self._cluster
        if cluster is None:
            return None
        return frozenset((str(node.host), int(node.port)) for node in cluster.get_primaries())

    def close(self) -> None:
        """Close every node's connections (a later command reconnects)."""
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def _after_fork(self) -> None:
        # redis-py's node pools reconnect by themselves in a child; only the lock is ours.
        self._lock = threading.Lock()


class _GuardedPipeline:
    """A cluster pipeline whose ``execute`` raises outages as :class:`ClusterUnavailable`."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __enter__(self) -> _GuardedPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pipe.reset()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            result: list[Any] = self._pipe.execute(raise_on_error)
        except _PROGRAMMING_ERRORS:
            raise
        except _OUTAGES as exc:
            raise _translate(exc) from exc
        return result


class ReplicaReads(redis.Redis):
    """A master client (from Sentinel's ``master_for``) that sends plain reads to a replica.

    Only single commands named in :data:`REPLICA_READ_COMMANDS` go to :attr:`replica`;
    pipelines, scripts, SCAN and every write stay on the master. A replica that cannot be
    reached (none left, or it is being reconfigured) falls back to the master for that command.
    Reads may be stale by the replication lag: a value just written may still be a miss.
    """

    replica: redis.Redis | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        replica: Any = self.replica
        if replica is not None and args and str(args[0]).upper() in REPLICA_READ_COMMANDS:
            try:
                return replica.execute_command(*args, **options)
            except (redis.ConnectionError, redis.TimeoutError):
                pass
        master: Any = super()
        return master.execute_command(*args, **options)

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
        super().close()


def mget(client: Any, keys: Sequence[str]) -> list[Any]:
    """The values of *keys* in order: one MGET, or on a cluster one MGET per slot pipelined
    (one round trip per node, not atomic across slots)."""
    if isinstance(client, ClusterClient):
        values: list[Any] = client.mget_nonatomic(list(keys))
        return values
    return list(client.mget(list(keys)))


def scan_targets(client: Any) -> list[Any]:
    """The clients to SCAN to see every key: each primary of a cluster, else *client* itself."""
    if isinstance(client, ClusterClient):
        return list(client.primary_clients())
    return [client]


#: Connection options that belong to the client's own pooled connections, not to a tracking
#: connection: redis-py's maintenance-notification handlers and the cluster's on-connect hook.
_NOT_FOR_TRACKING = frozenset({
    "maint_notifications_config", "maint_notifications_pool_handler",
    "oss_cluster_maint_notifications_handler", "redis_connect_func",
})  # fmt: skip


def tracking_options(connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options of a near-cache tracking connection made like the client's own: same
    address, credentials, TLS and timeouts, RESP3."""
    options = {k: v for k, v in connection_kwargs.items() if k not in _NOT_FOR_TRACKING}
    options["protocol"] = 3
    return options


def tracking_targets(client: Any) -> TrackingTargets | str:
    """Where the near cache of *client* tracks invalidations, or why it cannot.

    - a single server: one connection to it;
    - Sentinel: one connection to the master, asking the sentinels at each (re)connection;
      compared with the address the client's own pool last got from them;
    - a cluster: one connection to every primary; compared with the primaries the cluster
      client knows (it learns of a failover from errors and ``MOVED`` replies).
    """
    if isinstance(client, ClusterClient):
        if client.replica_reads:
            return (
                "read_from_replicas=true on a cluster sends its fills to replicas, which the "
                "invalidations do not wait for"
            )
        return TrackingTargets(client.tracking_connections, client.primary_addresses)
    pool: Any = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if pool is None or not isinstance(kwargs, dict):
        return "the client has no connection pool to copy the connection settings from"
    options = tracking_options(kwargs)

    def connect(refresh: bool) -> list[AbstractConnection]:
        # A Sentinel-managed connection asks the sentinels where the master is as it connects.
        return [pool.connection_class(**options)]

    if isinstance(pool, SentinelConnectionPool):

        def master() -> Addresses | None:
            address = pool.master_address
            return None if address is None else frozenset({(str(address[0]), int(address[1]))})

        return TrackingTargets(connect, master)
    return TrackingTargets(connect)
