"""Redis Cluster and Sentinel specifics, kept out of the backend.

The backend talks to one client object whatever the topology; this module supplies:

- :class:`ClusterClient`, the client for ``redis+cluster://`` URLs: a redis-py
  :class:`~redis.cluster.RedisCluster` built on first use (so an application starts even while
  the cluster is unreachable, as it does with a standalone Redis), whose cluster-level failures
  (:class:`~redis.exceptions.RedisClusterException`, which is *not* a ``RedisError``) are raised
  as :class:`ClusterUnavailable`, a ``redis.ConnectionError``, so fail-open and the circuit
  breaker treat them like any other outage; with a :class:`NodeGate` (the backend's per-node
  circuit breakers), every command with keys is sent to the primary owning them only while that
  node's breaker allows it, and a node's failure is raised as a :class:`NodeError`, which the
  backend charges to that node alone;
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

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.crc import key_slot
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
    "NodeError",
    "NodeFailed",
    "NodeGate",
    "NodeSkipped",
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


class NodeError(redis.ConnectionError):
    """One cluster node did not answer a command (the others may): :attr:`node` is its name."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


class NodeSkipped(NodeError):
    """A command was not sent: the breaker of the node owning its keys is open."""


class NodeFailed(NodeError):
    """A command to one node failed to connect or timed out."""


class NodeGate(Protocol):
    """Admission per cluster node (the backend's per-node circuit breakers)."""

    def before(self, node: str) -> bool:
        """May a command go to *node* now?"""
        ...

    def after(self, node: str, error: Exception | None) -> None:
        """What a command sent to *node* did: None (it answered), or its connection error."""
        ...


#: Errors that say a node may be gone (as opposed to a refusal by a node that answered).
_NODE_DOWN = (redis.ConnectionError, redis.TimeoutError)


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
        #: Per-node admission; None sends every command the way redis-py routes it.
        self.gate: NodeGate | None = None
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
                    built = self._build()
                except RedisClusterException as exc:
                    raise ClusterUnavailable(
                        f"{self._description}: no seed node answered: {exc}"
                    ) from exc
                self._route_by_node(built)
                self._cluster = built
            return self._cluster

    def _route_by_node(self, cluster: RedisCluster) -> None:
        """Send each command with keys to the primary owning them, under that node's gate.

        Sent with ``target_nodes``, a command is not retried by redis-py after a timeout (it
        would wait a second timeout on the same frozen node); the slot map is still refreshed
        after the failure and MOVED/ASK redirections still followed.
        """
        send: Callable[..., Any] | None = getattr(cluster, "execute_command", None)
        if send is None:
            return  # not a redis-py cluster client (a stand-in): nothing to route

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            gate = self.gate
            node = None if gate is None or "target_nodes" in kwargs else self._owner(args)
            if gate is None or node is None:
                return send(*args, **kwargs)
            return self._through(gate, node.name, lambda: send(*args, target_nodes=node, **kwargs))

        cluster.execute_command = execute_command  # type: ignore[method-assign]

    def _owner(self, args: Sequence[Any]) -> Any:
        """The primary owning the keys of the command *args*; None without keys (or a map)."""
        if self.replica_reads:
            return None  # reads may go to replicas: leave the routing to redis-py
        cluster: Any = self._cluster
        try:
            slot = cluster.determine_slot(*args)
            return None if slot is None else cluster.nodes_manager.get_node_from_slot(slot)
        except (RedisClusterException, redis.RedisError, AttributeError):
            return None  # no single slot (or no slot map yet): redis-py decides

    def _nodes_of_keys(self, keys: Iterable[Any]) -> dict[str, list[Any]] | None:
        """*keys* grouped by the name of the primary owning them; None without a slot map."""
        cluster: Any = self._cluster
        grouped: dict[str, list[Any]] = {}
        try:
            for key in keys:
                slot = key_slot(cluster.encoder.encode(key))
                grouped.setdefault(cluster.nodes_manager.get_node_from_slot(slot).name, []).append(
                    key
                )
        except (RedisClusterException, AttributeError):
            return None
        return grouped

    @staticmethod
    def _through(gate: NodeGate, node: str, send: Callable[[], Any]) -> Any:
        if not gate.before(node):
            raise NodeSkipped(f"not sent to {node}: its circuit breaker is open", node)
        try:
            result = send()
        except _NODE_DOWN as exc:
            gate.after(node, exc)
            raise NodeFailed(f"{node}: {type(exc).__name__}: {exc}", node) from exc
        gate.after(node, None)
        return result

    def unlink(self, *names: Any) -> int:
        """UNLINK *names* (one pipelined batch, as redis-py sends it), leaving out the keys of
        nodes whose breaker is open: the others are removed, then :class:`NodeSkipped` is
        raised for the rest."""
        sendable, skipped = self._admitted(names)
        removed = 0
        if sendable is None:
            removed = self._send(lambda: self.cluster.unlink(*names))
        elif sendable:
            removed = self._batch(sendable, lambda: self.cluster.unlink(*_flat(sendable)))
        if skipped:
            raise NodeSkipped(f"not sent to {skipped[0]}: its circuit breaker is open", skipped[0])
        return int(removed)

    def mget_nonatomic(self, keys: Sequence[Any]) -> list[Any]:
        """MGET *keys* (one MGET per slot, pipelined); the keys of nodes whose breaker is open
        are None (misses) without being asked for."""
        keys = list(keys)
        sendable, _ = self._admitted(keys)
        if sendable is None:
            values: list[Any] = self._send(lambda: self.cluster.mget_nonatomic(keys))
            return values
        asked = _flat(sendable)
        if not asked:
            return [None] * len(keys)
        found = dict(
            zip(asked, self._batch(sendable, lambda: self.cluster.mget_nonatomic(asked)),
                strict=True)
        )  # fmt: skip
        return [found.get(key) for key in keys]

    def _admitted(self, keys: Iterable[Any]) -> tuple[dict[str, list[Any]] | None, list[str]]:
        """*keys* grouped by the nodes that may be sent commands now, and the nodes that may
        not; None for the first without a gate or a slot map (send them all)."""
        gate = self.gate
        grouped = None if gate is None or self.replica_reads else self._nodes_of_keys(keys)
        if gate is None or grouped is None:
            return None, []
        sendable = {node: part for node, part in grouped.items() if gate.before(node)}
        return sendable, [node for node in grouped if node not in sendable]

    def _batch(self, nodes: dict[str, list[Any]], send: Callable[[], Any]) -> Any:
        """``send()`` of a batch for *nodes*, whose outcome is told to each node's gate."""
        gate = self.gate
        assert gate is not None
        try:
            result = self._send(send)
        except _NODE_DOWN as exc:
            failed = _node_of_error(exc) or (next(iter(nodes)) if len(nodes) == 1 else None)
            if failed is None:
                raise  # which node did not answer is unknown: the whole cluster's breaker
            gate.after(failed, exc)
            raise NodeFailed(f"{failed}: {type(exc).__name__}: {exc}", failed) from exc
        for node in nodes:
            gate.after(node, None)
        return result

    @staticmethod
    def _send(send: Callable[[], Any]) -> Any:
        try:
            return send()
        except _PROGRAMMING_ERRORS:
            raise
        except _OUTAGES as exc:
            raise _translate(exc) from exc

    def script_load(self, script: Any) -> str:
        """SCRIPT LOAD on every primary that may be sent commands now (redis-py's Script calls
        this after a NOSCRIPT reply); the SHA1 once one of them loaded it."""
        gate = self.gate
        if gate is None:
            loaded: str = self._send(lambda: self.cluster.script_load(script))
            return loaded
        cluster: Any = self.cluster
        sha: str | None = None
        errors: list[NodeError] = []
        for node in self._send(cluster.get_primaries):
            client = cluster.get_redis_connection(node)
            try:
                sha = self._through(gate, node.name, functools.partial(client.script_load, script))
            except NodeError as exc:
                errors.append(exc)
        if sha is None:
            raise errors[0] if errors else ClusterUnavailable(f"{self._description}: no primary")
        return sha

    def ping_node(self, node: str) -> bool:
        """PING the primary named *node* (``host:port``) alone; False when it is no longer a
        primary. A failed PING also refreshes the slot map (commands skipped for that node
        would never teach it of a failover), so a promoted replica is found."""
        cluster: Any = self.cluster
        found = next((n for n in self._send(cluster.get_primaries) if n.name == node), None)
        if found is None:
            return False
        try:
            return bool(cluster.get_redis_connection(found).ping())
        except _NODE_DOWN:
            try:
                cluster.nodes_manager.initialize()
            except (RedisClusterException, redis.RedisError):
                pass  # the next probe asks again
            raise

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
        return _GuardedPipeline(cluster.pipeline(transaction, shard_hint), self)

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
    """A cluster pipeline whose ``execute`` raises outages as :class:`ClusterUnavailable`;
    with a gate, it is not sent when the breaker of a node it needs is open, and a node's
    failure is raised as a :class:`NodeFailed` of that node."""

    def __init__(self, pipe: Any, client: ClusterClient) -> None:
        self._pipe = pipe
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __enter__(self) -> _GuardedPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pipe.reset()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        gate = self._client.gate
        nodes = self._nodes() if gate is not None else None
        if gate is None or not nodes:
            return self._send(raise_on_error)
        for node in nodes:
            if not gate.before(node):
                self._pipe.reset()
                raise NodeSkipped(f"not sent to {node}: its circuit breaker is open", node)
        try:
            result = self._send(raise_on_error)
        except _NODE_DOWN as exc:
            failed = _node_of_error(exc) or (next(iter(nodes)) if len(nodes) == 1 else None)
            if failed is None:
                raise
            gate.after(failed, exc)
            raise NodeFailed(f"{failed}: {type(exc).__name__}: {exc}", failed) from exc
        for node in nodes:
            gate.after(node, None)
        return result

    def _nodes(self) -> set[str] | None:
        """The names of the primaries the queued commands go to; None if one is unknown."""
        nodes: set[str] = set()
        for command in getattr(self._pipe, "command_stack", ()):
            node = self._client._owner(command.args)
            if node is None:
                return None
            nodes.add(node.name)
        return nodes

    def _send(self, raise_on_error: bool) -> list[Any]:
        try:
            result: list[Any] = self._pipe.execute(raise_on_error)
        except _PROGRAMMING_ERRORS:
            raise
        except _OUTAGES as exc:
            raise _translate(exc) from exc
        return result


def _flat(grouped: dict[str, list[Any]]) -> list[Any]:
    return [key for part in grouped.values() for key in part]


def _node_of_error(exc: Exception) -> str | None:
    """``host:port`` of the connection a redis-py cluster error names, if it names one."""
    connection = getattr(exc, "connection", None)
    host, port = getattr(connection, "host", None), getattr(connection, "port", None)
    return None if host is None or port is None else f"{host}:{port}"


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
