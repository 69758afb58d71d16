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
replication lag), writes, scripts, locks and SCAN stay on the master(s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
SCHEMES: Final = ("redis", "rediss", "unix", "memory", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)

DEFAULT_NODE_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
_OPTIONS: Final = {
    "cluster": frozenset({"read_from_replicas"}),
    "sentinel": frozenset({"read_from_replicas", "sentinel_username", "sentinel_password"}),
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


@dataclass(frozen=True)
class TopologyURL:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL."""

    kind: str  # "cluster" or "sentinel"
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # seed nodes, or sentinels
    username: str | None = None
    password: str | None = None
    service_name: str | None = None  # sentinel only
    db: int = 0
    read_from_replicas: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def check_url(url: str) -> str:
    """*url* if we can use it (scheme, and for topologies the whole URL); ConfigurationError
    otherwise."""
    try:
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    except ValueError as exc:
        raise ConfigurationError(f"cache URL {redact_url(url)!r}: {exc}") from exc
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"cache URL {redact_url(url)!r}: unsupported scheme {scheme!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        parse_topology_url(url)
    return url


def parse_topology_url(url: str) -> TopologyURL:
    """Parse a cluster or sentinel URL; ConfigurationError (without the password) if invalid."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"cache URL {shown!r}: {exc}") from exc
    base, _, kind = parts.scheme.partition("+")
    if kind not in _OPTIONS or base not in ("redis", "rediss"):
        raise ConfigurationError(f"cache URL {shown!r}: not a cluster or sentinel URL")
    if parts.fragment:
        raise ConfigurationError(f"cache URL {shown!r}: a '#fragment' is not allowed")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_NODE_PORT
    nodes = tuple(_host_port(item, default_port, shown) for item in hostlist.split(","))

    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    while segments and segments[-1] == "":
        segments.pop()
    service_name = None
    db_text = "0"
    if kind == "cluster":
        if len(segments) > 1 or (segments and segments[0] != "0"):
            raise ConfigurationError(
                f"cache URL {shown!r}: a cluster has only database 0; the path must be empty or /0"
            )
    else:
        if not segments or not segments[0]:
            raise ConfigurationError(
                f"cache URL {shown!r}: name the Sentinel service, e.g. "
                "redis+sentinel://host:26379/mymaster/0"
            )
        if len(segments) > 2:
            raise ConfigurationError(f"cache URL {shown!r}: expected /service_name[/db]")
        service_name = segments[0]
        db_text = segments[1] if len(segments) == 2 else "0"
    if not db_text.isdigit():
        raise ConfigurationError(f"cache URL {shown!r}: database {db_text!r} is not a number")

    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"cache URL {shown!r}: bad query string: {exc}") from exc
    for name, value in pairs:
        if name not in _OPTIONS[kind]:
            raise ConfigurationError(
                f"cache URL {shown!r}: unknown option {name!r} for {parts.scheme}://; "
                f"known: {', '.join(sorted(_OPTIONS[kind]))}"
            )
        options[name] = value
    return TopologyURL(
        kind=kind,
        tls=base == "rediss",
        nodes=nodes,
        username=username,
        password=password,
        service_name=service_name,
        db=int(db_text),
        read_from_replicas=_flag(options.get("read_from_replicas", "false"), shown),
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def redact_url(url: str) -> str:
    """*url* without its credentials: the user-info part and any ``*password*`` option."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    if qmark:
        query = "&".join(
            f"{name}=***" if "password" in name.lower() else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        )
    return f"{scheme}://{netloc}{slash}{path}{qmark}{query}"


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
    a ``redis.Redis`` whose connections ask the sentinels where the master is.
    """
    scheme = urlsplit(check_url(url)).scheme
    if scheme == "memory":
        return _memory_client(url)
    tls: dict[str, Any] = {}
    if scheme.startswith("rediss"):
        tls = {
            name: value
            for name, value in (
                ("ssl_ca_certs", tls_ca_certs),
                ("ssl_certfile", tls_certfile),
                ("ssl_keyfile", tls_keyfile),
            )
            if value
        }
    elif tls_ca_certs or tls_certfile or tls_keyfile:
        raise ConfigurationError(
            f"TLS files are set but the cache URL {redact_url(url)!r} does not use TLS "
            "(rediss://, rediss+cluster:// or rediss+sentinel://)"
        )
    # One quick retry for a connection that went stale in the pool; a timeout is not retried,
    # because a cache must not double the wait on a slow server.
    retry = Retry(ExponentialBackoff(cap=0.01, base=0.001), retries=1,
                  supported_errors=(redis.ConnectionError,))
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
    try:
        return redis.Redis.from_url(url, retry=retry, **common, **tls)
    except ValueError as exc:
        raise ConfigurationError(f"cache URL {redact_url(url)!r}: {exc}") from exc


def _cluster_client(
    parsed: TopologyURL, common: dict[str, Any], tls: dict[str, Any], retry: Retry
) -> redis.Redis:
    """A lazily connected cluster client: the slot map is discovered on first use."""
    from redis.cluster import ClusterNode, LoadBalancingStrategy, RedisCluster

    from ._topology import ClusterClient

    options: dict[str, Any] = {**common, **_auth(parsed.username, parsed.password)}
    if parsed.tls:
        options.update(ssl=True, **tls)
    if parsed.read_from_replicas:
        options["load_balancing_strategy"] = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS
    node: Any = ClusterNode  # redis-py leaves these constructors untyped
    seeds = [node(host, port) for host, port in parsed.nodes]

    def build() -> RedisCluster:
        # The retry object sets how often a command is retried after the cluster client
        # refreshed its slot map (MOVED, a dead node); node connections themselves never retry.
        return RedisCluster(startup_nodes=list(seeds), retry=retry, **options)

    description = ",".join(f"{host}:{port}" for host, port in parsed.nodes)
    return cast(redis.Redis, ClusterClient(build, description, parsed.read_from_replicas))


def _sentinel_client(
    parsed: TopologyURL, common: dict[str, Any], tls: dict[str, Any], retry: Retry
) -> redis.Redis:
    """A client of the master Sentinel names (and a replica client for reads if asked)."""
    from redis import sentinel as sentinel_module

    from ._topology import ReplicaReads

    ssl: dict[str, Any] = {"ssl": True, **tls} if parsed.tls else {}
    sentinel_options: dict[str, Any] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": retry,
        **_auth(parsed.sentinel_username, parsed.sentinel_password),
        **ssl,
    }
    make_sentinel: Any = sentinel_module.Sentinel  # untyped in redis-py
    sentinel = make_sentinel(list(parsed.nodes), sentinel_kwargs=sentinel_options)
    node_options: dict[str, Any] = {
        **common,
        "retry": retry,
        "db": parsed.db,
        **_auth(parsed.username, parsed.password),
        **ssl,
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


def _host_port(item: str, default_port: int, shown: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as ``(host, port)``."""
    item = item.strip()
    if item.startswith("["):
        host, bracket, after = item[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigurationError(f"cache URL {shown!r}: bad IPv6 address {item!r}")
        port_text = after[1:]
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigurationError(f"cache URL {shown!r}: a host is missing in {item!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"cache URL {shown!r}: bad port {port_text!r} in {item!r}")
    return host, int(port_text)


def _flag(value: str, shown: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"cache URL {shown!r}: read_from_replicas must be true or false")


def _memory_client(url: str) -> redis.Redis:
    """A fakeredis client; clients of the same ``memory://name`` in one process share a server."""
    import fakeredis

    name = url[len("memory://"):].strip("/")
    with _memory_lock:
        server = _memory_servers.get(name)
        if server is None:
            server = _memory_servers[name] = fakeredis.FakeServer()
    client: redis.Redis = fakeredis.FakeRedis(server=server)
    return client


def fast_get(client: redis.Redis) -> Callable[[str], Any]:
    """``GET`` on a pooled connection directly, without redis-py's per-command layers.

    redis-py 8 wraps every command in a retry helper and an observability layer that cost a
    few microseconds, a tenth of a loopback hit. This does what they do for ``GET`` on a
    plain connection pool: one reconnect for a stale pooled connection (as the client's
    retry policy would), no retry after a timeout, and a connection left in an unknown state
    is closed, never reused. Other clients (Sentinel, cluster, fakeredis) use their own
    ``get``.
    """
    pool = client.connection_pool if type(client) is redis.Redis else None
    if pool is None or type(pool) is not redis.ConnectionPool:
        return client.get

    def get(name: str) -> Any:
        conn: Any = pool.get_connection()
        try:
            try:
                conn.send_command("GET", name)
                return conn.read_response()
            except redis.ConnectionError:
                conn.disconnect()  # stale: the retry policy's one reconnect
                conn.send_command("GET", name)
                return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is fine
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    return get
