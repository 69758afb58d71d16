"""Cluster and Sentinel URLs: parsing, validation, redaction and the clients they build.

No server is needed here: clients are built lazily, or with redis-py's classes replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.cluster
from redis.sentinel import (
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from flask_fennec_cache import ConfigurationError, RedisCache
from flask_fennec_cache._connect import (
    SCHEMES,
    TopologyURL,
    check_url,
    make_client,
    parse_topology_url,
    redact_url,
)
from flask_fennec_cache._topology import ClusterClient, ReplicaReads, mget, scan_targets
from flask_fennec_cache.config import read_settings

OPTIONS: dict[str, Any] = {
    "socket_timeout": 0.25,
    "connect_timeout": 0.5,
    "max_connections": 7,
    "health_check_interval": 15,
}


# ==================================================================================
# Parsing
# ==================================================================================


def test_cluster_url_with_seeds_credentials_and_options() -> None:
    parsed = parse_topology_url(
        "redis+cluster://user:p%40ss%3Aword@10.0.0.1:7000,node-b,[::1]:7002/?read_from_replicas=yes"
    )
    assert parsed == TopologyURL(
        kind="cluster", tls=False,
        nodes=(("10.0.0.1", 7000), ("node-b", 6379), ("::1", 7002)),
        username="user", password="p@ss:word", read_from_replicas=True,
    )  # fmt: skip


@pytest.mark.parametrize("path", ["", "/", "/0"])
def test_cluster_url_paths(path: str) -> None:
    parsed = parse_topology_url(f"rediss+cluster://:secret@h1:1,h2:2{path}")
    assert parsed.tls and parsed.db == 0 and parsed.username is None
    assert parsed.password == "secret"


def test_sentinel_url_with_service_db_and_sentinel_credentials() -> None:
    parsed = parse_topology_url(
        "redis+sentinel://:data@s1:26379,s2,s3:26381/mymaster/3"
        "?sentinel_password=sent&sentinel_username=watcher"
    )
    assert parsed.kind == "sentinel" and not parsed.tls
    assert parsed.nodes == (("s1", 26379), ("s2", 26379), ("s3", 26381))
    assert (parsed.service_name, parsed.db) == ("mymaster", 3)
    assert (parsed.username, parsed.password) == (None, "data")
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watcher", "sent")
    assert parsed.read_from_replicas is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:1/1", "only database 0"),
        ("redis+cluster://h:1/0/x", "only database 0"),
        ("redis+cluster://h:99999", "port 99999 is out of range"),
        ("redis+cluster://h:x", "port 'x' is not a number"),
        ("redis+cluster://h:1,,h:2", "host is missing"),
        ("redis+cluster://[::1:7000", "cache URL"),
        ("redis+cluster://h:1/?read_from_replica=true", "unknown option 'read_from_replica'"),
        ("redis+cluster://h:1/?read_from_replicas=maybe", "true or false"),
        ("redis+cluster://h:1/?sentinel_password=x", "only for redis\\+sentinel://"),
        ("redis+cluster://h:1/#frag", "fragment"),
        ("redis+sentinel://s:1", "name the Sentinel service"),
        ("redis+sentinel://s:1/", "name the Sentinel service"),
        ("redis+sentinel://s:1/svc/x", "not a number"),
        ("redis+sentinel://s:1/svc/0/extra", "service_name[/db]"),
        ("redis+sentinel://:pw@s:1/svc/0?nope=1", "unknown option"),
    ],
)
def test_bad_topology_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        check_url(url)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_url("redis+sentinel://:hunter2@s:1/svc/x?sentinel_password=hunter3")
    assert "hunter2" not in str(caught.value) and "hunter3" not in str(caught.value)


def test_every_scheme_is_accepted_by_check_url_and_config() -> None:
    assert {"redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"} <= set(SCHEMES)
    for url in ("redis+cluster://h:1/", "rediss+sentinel://s:1/svc"):
        assert check_url(url) == url
        assert read_settings({"FENNEC_CACHE_URL": url}).url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://***@h:1/0"),
        ("redis+cluster://:pw@h1:1,h2:2/", "redis+cluster://***@h1:1,h2:2/"),
        (
            "redis+sentinel://:pw@s:1/svc/0?sentinel_password=pw2&read_from_replicas=1",
            "redis+sentinel://***@s:1/svc/0?sentinel_password=***&read_from_replicas=1",
        ),
        ("redis://h:1/0", "redis://h:1/0"),
        ("memory://x", "memory://x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ==================================================================================
# Clients
# ==================================================================================


def pem(tmp_path: Path, name: str) -> str:
    """A file standing for a certificate (only its existence is checked before connecting)."""
    path = tmp_path / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def test_cluster_client_is_lazy_and_carries_our_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[dict[str, Any]] = []
    ca = pem(tmp_path, "ca.pem")

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)

        def get(self, key: str) -> bytes:
            return b"value of " + key.encode()

    monkeypatch.setattr(redis.cluster, "RedisCluster", Recorder)
    client: Any = make_client(
        "rediss+cluster://alice:pw@h1:7000,h2:7001/?read_from_replicas=true&client_name=web",
        tls_ca_certs=ca, **OPTIONS,
    )  # fmt: skip
    assert isinstance(client, ClusterClient) and built == []  # nothing connects yet
    assert client.get("k") == b"value of k"
    (kwargs,) = built
    assert [(n.host, n.port) for n in kwargs.pop("startup_nodes")] == [("h1", 7000), ("h2", 7001)]
    retry = kwargs.pop("retry")
    assert retry.get_retries() == 1
    assert kwargs == {
        "socket_timeout": 0.25, "socket_connect_timeout": 0.5, "max_connections": 7,
        "health_check_interval": 15, "username": "alice", "password": "pw",
        "ssl": True, "ssl_ca_certs": ca, "client_name": "web",
        "load_balancing_strategy": redis.cluster.LoadBalancingStrategy.ROUND_ROBIN_REPLICAS,
    }  # fmt: skip
    client.get("again")
    assert len(built) == 1  # built once


def test_sentinel_client_options(tmp_path: Path) -> None:
    cert, key = pem(tmp_path, "c.pem"), pem(tmp_path, "k.pem")
    client = make_client(
        "rediss+sentinel://:data@s1:1,s2:2/cache/2?sentinel_password=sent&socket_timeout=0.5",
        tls_certfile=cert, tls_keyfile=key, **OPTIONS,
    )  # fmt: skip
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master
    assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
    options = pool.connection_kwargs
    assert (options["db"], options["password"]) == (2, "data")
    assert options["socket_timeout"] == 0.5  # the URL's option wins over the setting
    assert options["ssl_certfile"] == cert and options["ssl_keyfile"] == key
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [1, 2]
    sentinel_options = sentinels[0].connection_pool.connection_kwargs
    assert sentinel_options["password"] == "sent"
    assert sentinel_options["socket_connect_timeout"] == 0.5
    assert sentinel_options["socket_timeout"] == 0.25  # URL options are the data nodes'
    assert not isinstance(client, ReplicaReads)


def test_sentinel_read_from_replicas_builds_a_replica_client() -> None:
    client = make_client("redis+sentinel://s1:1/cache?read_from_replicas=on", **OPTIONS)
    assert isinstance(client, ReplicaReads)
    assert issubclass(client.connection_pool.connection_class, SentinelManagedConnection)
    assert client.replica is not None
    assert client.replica.connection_pool.is_master is False  # type: ignore[attr-defined]


def test_tls_files_need_a_tls_scheme() -> None:
    with pytest.raises(ConfigurationError, match="does not use TLS"):
        make_client("redis+cluster://h:1/", tls_ca_certs="/ca.pem", **OPTIONS)


class _FakeReplicaReads(ReplicaReads, fakeredis.FakeRedis):
    """ReplicaReads over a fakeredis master, for routing checks without servers."""


class _StubReplica:
    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.answer, self.error = answer, error
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        if self.error is not None:
            raise self.error
        return self.answer

    def close(self) -> None:
        pass


def test_replica_reads_routing_and_fallback() -> None:
    master = _FakeReplicaReads()
    replica = _StubReplica(answer=b"from replica")
    master.replica = replica  # type: ignore[assignment]
    master.set("k", "from master")
    assert master.get("k") == b"from replica"
    assert master.ttl("k") == b"from replica"  # type: ignore[comparison-overlap]  # TTL: a read
    assert master.incr("n") == 1  # writes never go to the replica
    assert replica.commands == ["GET", "TTL"]
    replica.error = redis.ConnectionError("replica gone")
    assert master.get("k") == b"from master"  # falls back to the master
    master.close()


def test_helpers_on_a_plain_client() -> None:
    client = fakeredis.FakeRedis()
    client.set("a", "1")
    assert mget(client, ["a", "b"]) == [b"1", None]
    assert scan_targets(client) == [client]


def test_redis_cache_repr_and_health_hide_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    made = RedisCache("redis+sentinel://:pw@127.0.0.1:1/svc?sentinel_password=spw",
                      connect_timeout=0.05, stats_flush_interval=3600)  # fmt: skip
    try:
        assert "pw" not in repr(made).replace("password=***", "")
        health = made.health()
        assert health["status"] == "unhealthy"
        assert "spw" not in health["url"] and ":pw@" not in health["url"]
    finally:
        made.close()
