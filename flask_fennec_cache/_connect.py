"""Turn a cache URL into a redis-py client with timeouts and retries suited to a cache.

Single servers: ``redis://``, ``rediss://`` (TLS), ``unix://``, and ``memory://`` (fakeredis).
Topologies, routed by redis-py's own clients (see ``docs/scaling.md``):

``redis+cluster://[user:password@]host:port[,host:port...][/0][?read_from_replicas=true]``
    A Redis Cluster, discovered from any of the seed nodes listed. ``rediss+cluster://`` uses
    TLS. The credentials are those of the cluster nodes.

``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db][?options]``
    The master Sentinel names *service_name*, followed across failovers. ``rediss+sentinel://``
    uses TLS towards the sentinels and the data nodes. The credentials in the URL are those of
    the master and replicas; the sentinels' own (if they require any) are the
    ``sentinel_username`` / ``sentinel_password`` query options.

Both accept ``read_from_replicas=true``: plain reads go to replicas (possibly stale by the
replication lag), writes, scripts, locks and SCAN stay on the master(s). Connection options in
their query string (``socket_timeout``, ``client_name``, ``ssl_*``…) apply to the data nodes.

The URL is checked whole first (:mod:`flask_fennec_cache._urls`). What can only fail on
connecting (a DNS name, a certificate file removed since startup) is raised as
``redis.ConnectionError`` by the connection classes made here, so fail-open and the circuit
breaker treat it as the outage it is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from ._pinned import PinnedGet
from ._urls import (
    CLUSTER_SCHEMES,
    SCHEMES,
    SENTINEL_SCHEMES,
    TopologyURL,
    check_url,
    memory_name,
    parse_server_url,
    parse_topology_url,
    redact_url,
    scheme_of,
)
from .errors import ConfigurationError

__all__ = [
    "CLUSTER_SCHEMES",
    "SCHEMES",
    "SENTINEL_SCHEMES",
    "TopologyURL",
    "check_url",
    "fast_get",
    "make_client",
    "parse_topology_url",
    "redact_url",
]

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


# -- clients -----------------------------------------------------------------------------------


def make_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    health_check_interval: int,
    tls_ca_certs: str | None = None,
    tls_certfile: str | None = None,
    tls_keyfile: str | None = None,
) -> redis.Redis:
    """A client for *url*; raises ConfigurationError for a URL it cannot use.

    For ``redis+cluster://`` this is a :class:`~flask_fennec_cache._topology.ClusterClient`
    (typed as ``redis.Redis``: it offers the same command methods); for ``redis+sentinel://``
    a ``redis.Redis`` whose connections ask the sentinels where the master is. Nothing
    connects yet.
    """
    scheme = scheme_of(check_url(url), "cache URL")
    if scheme == "memory":
        return _memory_client(url)
    tls = _tls_files(scheme, url, tls_ca_certs, tls_certfile, tls_keyfile)
    # One quick retry for a connection that went stale in the pool; a timeout is not retried,
    # because a cache must not double the wait on a slow server.
    retry = Retry(
        ExponentialBackoff(cap=0.01, base=0.001),
        retries=1,
        supported_errors=(redis.ConnectionError,),
    )
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "max_connections": max_connections,
        "health_check_interval": health_check_interval,
    }
    if scheme in CLUSTER_SCHEMES:
        return _cluster_client(parse_topology_url(url), common, tls, retry)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_client(parse_topology_url(url), common, tls, retry)
    return _server_client(scheme, parse_server_url(url), common, tls, retry)


def _tls_files(
    scheme: str, url: str, ca_certs: str | None, certfile: str | None, keyfile: str | None
) -> dict[str, str]:
    files = {
        option: (parameter, value)
        for option, parameter, value in (
            ("ssl_ca_certs", "tls_ca_certs", ca_certs),
            ("ssl_certfile", "tls_certfile", certfile),
            ("ssl_keyfile", "tls_keyfile", keyfile),
        )
        if value
    }
    if files and not scheme.startswith("rediss"):
        raise ConfigurationError(
            f"TLS files are set but the cache URL {redact_url(url)!r} does not use TLS "
            "(rediss://, rediss+cluster:// or rediss+sentinel://)"
        )
    for parameter, path in files.values():
        if not os.path.isfile(path):
            raise ConfigurationError(f"{parameter}: no such file: {path!r}")
    return {option: path for option, (_, path) in files.items()}


class _ConnectFailuresAreConnectionErrors:
    """Mixin for redis-py connection classes: whatever goes wrong while opening a connection
    (a host name the resolver cannot encode, a certificate file removed since startup, an
    option the ssl module refuses) is raised as ``redis.ConnectionError``, so fail-open and the
    circuit breaker treat it as an outage. Only redis-py and the standard library run here,
    never user code."""

    def connect(self) -> None:
        try:
            cast(Any, super()).connect()
        except RedisError:
            raise
        except Exception as exc:
            raise self._as_connection_error(exc) from exc

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            cast(Any, super()).connect_check_health(*args, **kwargs)
        except RedisError:
            raise
        except Exception as exc:
            raise self._as_connection_error(exc) from exc

    def _as_connection_error(self, exc: Exception) -> redis.ConnectionError:
        pool = getattr(self, "connection_pool", None)
        service = getattr(pool, "service_name", None)
        if service is not None:  # Sentinel: the address is not known before the sentinels answer
            role = "master" if getattr(pool, "is_master", True) else "replica"
            where = f"the {role} of {service!r}"
        else:
            where = getattr(self, "path", None) or (
                f"{getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"
            )
        return redis.ConnectionError(f"{type(exc).__name__} connecting to {where}: {exc}")


class _Connection(_ConnectFailuresAreConnectionErrors, redis.Connection):
    """A TCP connection (redis://)."""


class _SSLConnection(_ConnectFailuresAreConnectionErrors, redis.SSLConnection):
    """A TLS connection (rediss://)."""


class _UnixConnection(_ConnectFailuresAreConnectionErrors, redis.UnixDomainSocketConnection):
    """A Unix socket connection (unix://)."""


class _SentinelConnection(_ConnectFailuresAreConnectionErrors, SentinelManagedConnection):
    """A connection to the node Sentinel names (redis+sentinel://)."""


class _SentinelSSLConnection(_ConnectFailuresAreConnectionErrors, SentinelManagedSSLConnection):
    """A TLS connection to the node Sentinel names (rediss+sentinel://)."""


_CONNECTION_CLASSES: Final[Mapping[str, type[Any]]] = {
    "redis": _Connection,
    "rediss": _SSLConnection,
    "unix": _UnixConnection,
}


def _server_client(
    scheme: str,
    url_options: dict[str, Any],
    common: dict[str, Any],
    tls: dict[str, Any],
    retry: Retry,
) -> redis.Redis:
    """A client of one server; the URL's options win over the settings (as in redis-py)."""
    pool = redis.ConnectionPool(
        connection_class=_CONNECTION_CLASSES[scheme],
        retry=retry,
        **{**common, **tls, **url_options},
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() releases the pool, as from_url's do
    return client


def _cluster_client(
    parsed: TopologyURL, common: dict[str, Any], tls: dict[str, Any], retry: Retry
) -> redis.Redis:
    """A lazily connected cluster client: the slot map is discovered on first use."""
    from redis.cluster import ClusterNode, LoadBalancingStrategy, RedisCluster

    from ._topology import ClusterClient

    options: dict[str, Any] = {**common, **_auth(parsed.username, parsed.password)}
    if parsed.tls:
        options.update(ssl=True, **tls)
    options.update(parsed.options)
    if parsed.read_from_replicas:
        options["load_balancing_strategy"] = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS
    node: Any = ClusterNode  # redis-py leaves these constructors untyped
    seeds = [node(host, port) for host, port in parsed.nodes]

    def build() -> RedisCluster:
        # The retry object sets how often a command is retried after the cluster client
        # refreshed its slot map (MOVED, a dead node); node connections themselves never retry.
        try:
            return RedisCluster(startup_nodes=list(seeds), retry=retry, **options)
        except (RedisError, RedisClusterException):
            raise
        except Exception as exc:  # only redis-py runs here: a failed build is an outage
            raise RedisClusterException(f"{type(exc).__name__}: {exc}") from exc

    description = ",".join(f"{host}:{port}" for host, port in parsed.nodes)
    return cast(redis.Redis, ClusterClient(build, description, parsed.read_from_replicas))


def _sentinel_client(
    parsed: TopologyURL, common: dict[str, Any], tls: dict[str, Any], retry: Retry
) -> redis.Redis:
    """A client of the master Sentinel names (and a replica client for reads if asked)."""
    from redis import sentinel as sentinel_module

    from ._topology import ReplicaReads

    ssl_options: dict[str, Any] = {"ssl": True, **tls} if parsed.tls else {}
    sentinel_options: dict[str, Any] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": retry,
        **_auth(parsed.sentinel_username, parsed.sentinel_password),
        **ssl_options,
    }
    make_sentinel: Any = sentinel_module.Sentinel  # untyped in redis-py
    sentinel = make_sentinel(list(parsed.nodes), sentinel_kwargs=sentinel_options)
    node_options: dict[str, Any] = {
        **common,
        "retry": retry,
        "db": parsed.db,
        **_auth(parsed.username, parsed.password),
        **tls,
        **dict(parsed.options),
        "connection_class": _SentinelSSLConnection if parsed.tls else _SentinelConnection,
    }
    assert parsed.service_name is not None
    if not parsed.read_from_replicas:
        return cast(redis.Redis, sentinel.master_for(parsed.service_name, **node_options))
    master = cast(
        ReplicaReads,
        sentinel.master_for(parsed.service_name, redis_class=ReplicaReads, **node_options),
    )
    master.replica = cast(redis.Redis, sentinel.slave_for(parsed.service_name, **node_options))
    return master


def _auth(username: str | None, password: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    return options


def _memory_client(url: str) -> redis.Redis:
    """A fakeredis client; clients of the same ``memory://name`` in one process share a server."""
    import fakeredis

    name = memory_name(url, "cache URL")
    with _memory_lock:
        server = _memory_servers.get(name)
        if server is None:
            server = _memory_servers[name] = fakeredis.FakeServer()
    client: redis.Redis = fakeredis.FakeRedis(server=server)
    return client


def fast_get(client: redis.Redis) -> Callable[[str], Any]:
    """``GET`` on a connection of the calling thread directly, without redis-py's per-command
    layers nor a pool checkout per read (:class:`~._pinned.PinnedGet`).

    redis-py 8 wraps every command in a retry helper and an observability layer, and its pool
    checks and counts every checkout: together a tenth of a loopback hit. This does what
    matters of them for ``GET`` on a plain connection pool: one reconnect for a connection the
    server closed (as the client's retry policy would), no retry after a timeout, and a
    connection left in an unknown state is closed, never reused. Other clients (Sentinel,
    cluster, fakeredis) and RESP3 connections (push messages may arrive between commands) use
    their own ``get``.
    """
    pool = client.connection_pool if type(client) is redis.Redis else None
    if pool is None or type(pool) is not redis.ConnectionPool:
        return client.get
    if str(pool.connection_kwargs.get("protocol") or 2) != "2":
        return client.get
    return PinnedGet(pool)
