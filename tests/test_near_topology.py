"""The near cache on Redis Cluster (one tracking connection per master) and on Sentinel.

Against the real topologies of tests/_topology.py: near hits for keys on every master, writes
from other caches, redis-py cluster clients and ``redis-cli -c`` seen at once, the 1,000-trial
cross-process coherence test on the cluster, and failovers (a master SIGKILLed, a manual
``CLUSTER FAILOVER``, a Sentinel failover): the near cache is flushed, reconnects to the new
masters and serves correct values again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import RedisServer
from _support import CacheFactory, Factory, wait_for
from _topology import RedisClusterTopology, SentinelTopology
from redis.crc import key_slot
from test_near import near_of, stale_reads, stale_tagged_reads

from flask_fennec_cache import RedisCache
from flask_fennec_cache._tracking import WatchedTrackingConnections
from flask_fennec_cache.near import NearCache

pytestmark = pytest.mark.real

QUIET = 3600.0
#: Deadline (never a speed requirement) for a failover to complete and be followed.
FAILOVER_TIMEOUT = 20.0


def one_key_per_master(cluster: RedisClusterTopology, prefix: str) -> dict[int, str]:
    """A relative key on each master: ``{master port: key}``."""
    found: dict[int, str] = {}
    masters = {server.port for server in cluster.master_servers()}
    for i in range(1000):
        key = f"k{i}"
        port = cluster.master_of_slot(key_slot(f"{prefix}{key}".encode())).port
        found.setdefault(port, key)
        if set(found) == masters:
            return found
    raise AssertionError("no key found for every master")


def master_addresses(cluster: RedisClusterTopology) -> frozenset[tuple[str, int]]:
    return frozenset(("127.0.0.1", server.port) for server in cluster.master_servers())


def near_hits(cache: RedisCache) -> int:
    return int(cache.get_stats()["near_hits"])


# ==================================================================================
# Redis Cluster
# ==================================================================================


@pytest.fixture
def near(cluster_caches: CacheFactory) -> RedisCache:
    return cluster_caches(near_cache=True, stats_flush_interval=QUIET)


@pytest.fixture
def writer(cluster_caches: CacheFactory) -> RedisCache:
    return cluster_caches(stats_flush_interval=QUIET)


def test_cluster_keys_on_every_master_are_near_hits(
    redis_cluster: RedisClusterTopology, near: RedisCache, writer: RedisCache
) -> None:
    keys = one_key_per_master(redis_cluster, near.prefix)
    assert len(keys) == 3
    for port, key in keys.items():
        writer.set(key, {"on": port})
    for port, key in keys.items():
        assert near.get(key) == {"on": port}  # a fill
    cache = near_of(near)
    assert cache.connected
    assert cache.tracked == master_addresses(redis_cluster)  # one connection per master
    assert len(cache) == 3
    before = near_hits(near)
    for port, key in keys.items():
        assert near.get(key) == {"on": port}
    assert near_hits(near) == before + 3


def test_cluster_get_many_across_masters_reads_through_the_near_cache(
    redis_cluster: RedisClusterTopology, near: RedisCache, writer: RedisCache
) -> None:
    keys = one_key_per_master(redis_cluster, near.prefix)
    for port, key in keys.items():
        writer.set(key, {"on": port})
    expected = {key: {"on": port} for port, key in keys.items()}
    assert near.get_many([*keys.values(), "absent"]) == expected  # one pipeline, filling
    assert len(near_of(near)) == 3
    before = near_hits(near)
    assert near.get_many(list(keys.values())) == expected  # every key held: no round trip
    assert near_hits(near) == before + 1
    changed = next(iter(keys.values()))
    writer.set(changed, "new")
    assert near.get_many(list(keys.values())) == {**expected, changed: "new"}


def test_cluster_writes_from_anywhere_are_seen_at_once(
    redis_cluster: RedisClusterTopology, near: RedisCache, writer: RedisCache
) -> None:
    keys = one_key_per_master(redis_cluster, near.prefix)
    raw = redis_cluster.cluster_client()
    some_master = redis_cluster.master_servers()[0]
    for port, key in keys.items():
        full = near.prefix + key
        writer.set(key, 1)
        assert near.get(key) == 1
        assert near.get(key) == 1  # held locally now
        writer.set(key, 2)  # another RedisCache
        assert near.get(key) == 2
        raw.set(full, b"j3")  # a redis-py cluster client
        assert near.get(key) == 3
        # redis-cli -c, connected to any master, follows the MOVED to the key's master.
        assert some_master.cli("-c", "SET", full, "j4") == "OK", port
        assert near.get(key) == 4
        writer.delete(key)
        assert near.get(key) is None
        writer.set(key, 5)
        assert near.get(key) == 5
    assert near_of(near).tracked == master_addresses(redis_cluster)


def test_cluster_flushall_on_one_master_flushes_the_near_cache(
    redis_cluster: RedisClusterTopology, near: RedisCache, writer: RedisCache
) -> None:
    keys = one_key_per_master(redis_cluster, near.prefix)
    for key in keys.values():
        writer.set(key, key)
        near.get(key)
    assert len(near_of(near)) == 3
    victim = next(iter(keys))
    assert redis_cluster.server_on(victim).cli("FLUSHALL") == "OK"
    # Unlike a key's invalidation, Redis (7.0) writes the flush-all push just *after* the
    # FLUSHALL reply, so this read may come a moment before it: a bounded poll.
    assert wait_for(lambda: near.get(keys[victim]) is None and len(near_of(near)) == 0)


def test_cluster_no_stale_read_after_a_write_acknowledged_in_another_process(
    redis_cluster: RedisClusterTopology, near: RedisCache
) -> None:
    """1,000 trials: another process writes a key (on each master in turn), acknowledges,
    then this process reads it."""
    keys = list(one_key_per_master(redis_cluster, near.prefix).values())
    before = near_hits(near)
    assert stale_reads(near, redis_cluster.url, keys) == 0
    assert near_hits(near) - before >= 1000
    assert near_of(near).tracked == master_addresses(redis_cluster)


def test_cluster_no_stale_tagged_read_after_invalidate_tags_acknowledged_in_another_process(
    redis_cluster: RedisClusterTopology, near: RedisCache
) -> None:
    """1,000 trials: another process invalidates a tag (the tag keys share one slot, on one
    master: one tracking connection of three sees their pushes), acknowledges, then this
    process calls a function cached under the tags."""
    tags = ["a", "b", "c"]
    assert len({key_slot(near.tag_index.key(t).encode()) for t in tags}) == 1
    before = near_hits(near)
    assert stale_tagged_reads(near, redis_cluster.url, tags) == 0
    assert near_hits(near) - before >= 1000
    assert near_of(near).tracked == master_addresses(redis_cluster)


def test_cluster_a_change_of_masters_flushes_and_reconnects(
    redis_cluster: RedisClusterTopology, near: RedisCache
) -> None:
    """What the client knows of the masters is compared with what the near cache tracks:
    before storing a fill, and on reads at most once a second."""
    near.set("k", 1)
    assert near.get("k") == 1
    cache = near_of(near)
    tracking = cache._tracking
    assert isinstance(tracking, WatchedTrackingConnections)
    real = tracking._masters
    assert real is not None and real() == cache.tracked
    elsewhere = frozenset({("127.0.0.1", 1)})  # as if the client had learnt of a failover

    # A fill: not stored, everything flushed, connections rebuilt.
    name = f"{near.prefix}k".encode()
    cache.evict(name)
    ticket = cache.begin_fill(name)
    assert ticket is not None
    tracking._masters = lambda: elsewhere
    cache.finish_fill(name, ticket, b"j1", 60_000)
    assert len(cache) == 0
    tracking._masters = real
    assert near.get("k") == 1
    assert near.get("k") == 1 and len(cache) == 1

    # A read: checked only once the last check is a second old (forced here).
    tracking._masters = lambda: elsewhere
    tracking._check_at = cache._clock() + 60
    assert cache.get(name) is not None  # the last check is recent: not checked
    tracking._check_at = 0.0
    assert cache.get(name) is None and len(cache) == 0  # flushed (and reconnected)
    tracking._masters = real
    tracking._check_at = 0.0
    assert near.get("k") == 1
    assert near.get("k") == 1 and len(cache) == 1
    assert cache.tracked == master_addresses(redis_cluster)


@pytest.fixture
def heal_after(redis_cluster: RedisClusterTopology) -> Iterator[RedisClusterTopology]:
    """The cluster, healed at teardown (a killed node rejoins as a replica)."""
    yield redis_cluster
    redis_cluster.heal()


def test_cluster_master_killed_flushes_then_tracks_the_promoted_replica(
    heal_after: RedisClusterTopology, prefix: str
) -> None:
    cluster = heal_after
    near = RedisCache(cluster.url, prefix=prefix, near_cache=True, stats_flush_interval=QUIET)
    writer = RedisCache(cluster.url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        keys = one_key_per_master(cluster, prefix)
        for port, key in keys.items():
            writer.set(key, f"old-{port}")
            assert near.get(key) == f"old-{port}"
        cache = near_of(near)
        assert len(cache) == 3 and cache.connected
        victim_port, victim_key = next(iter(keys.items()))
        other_key = next(key for port, key in keys.items() if port != victim_port)
        cluster.server_on(victim_port).kill()

        # The tracking socket to the dead master breaks: the next read flushes everything and
        # bypasses the near cache (a key on a live master is read from Redis).
        def flushed() -> bool:
            return near.get(other_key) is not None and not cache.connected

        assert wait_for(flushed, timeout=5.0)
        assert len(cache) == 0
        assert near.get(other_key) is not None
        assert len(cache) == 0  # bypassed while a master is missing

        # After the promotion, writes to the dead master's slots succeed again; the near cache
        # reconnects to the new masters (bounded poll) and serves what they hold.
        def promoted_and_followed() -> bool:
            writer.set(victim_key, "new")
            return near.get(victim_key) == "new" and cache.connected

        assert wait_for(promoted_and_followed, timeout=FAILOVER_TIMEOUT, step=0.1)
        assert cache.tracked == master_addresses(cluster)
        assert ("127.0.0.1", victim_port) not in cache.tracked
        before = near_hits(near)
        for key in keys.values():
            near.get(key)
            near.get(key)
        assert near_hits(near) > before
        # And coherence holds on the new master set.
        for key in keys.values():
            writer.set(key, "newer")
            assert near.get(key) == "newer"
    finally:
        near.close()
        writer.close()


def test_cluster_manual_failover_is_followed(
    redis_cluster: RedisClusterTopology, near: RedisCache, writer: RedisCache
) -> None:
    """A master demoted without dying (``CLUSTER FAILOVER`` on its replica): the tracking
    connection survives, so the near cache notices from the client's new view of the masters."""
    cluster = redis_cluster
    keys = one_key_per_master(cluster, near.prefix)
    for key in keys.values():
        writer.set(key, "old")
        assert near.get(key) == "old"
    cache = near_of(near)
    old_port, key = next(iter(keys.items()))
    old_id = next(n.node_id for n in cluster.nodes() if n.port == old_port)
    replica = next(n for n in cluster.nodes() if n.master_id == old_id)
    assert cluster.server_on(replica.port).cli("CLUSTER", "FAILOVER") == "OK"
    assert wait_for(
        lambda: "role:master" in cluster.server_on(replica.port).cli("INFO", "replication"),
        timeout=FAILOVER_TIMEOUT,
        step=0.05,
    )

    def followed() -> bool:
        writer.set(key, "new")
        return near.get(key) == "new" and ("127.0.0.1", replica.port) in cache.tracked

    # The client learns of the new master from a MOVED reply (to a fill): the connections
    # are rebuilt to every primary it then knows, the promoted replica among them.
    assert wait_for(followed, timeout=FAILOVER_TIMEOUT, step=0.05)
    for other in keys.values():
        writer.set(other, "newer")
        assert near.get(other) == "newer"
    cluster.wait_healthy()


def test_cluster_read_from_replicas_disables_it_with_a_warning(
    redis_cluster: RedisClusterTopology, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    made = RedisCache(redis_cluster.url + "?read_from_replicas=true", prefix=prefix,
                      near_cache=True)  # fmt: skip
    try:
        assert made.reader.near is None
        assert "near cache disabled" in caplog.text and "read_from_replicas" in caplog.text
        assert "cluster-secret" not in caplog.text
    finally:
        made.close()


# ==================================================================================
# Sentinel
# ==================================================================================


@pytest.fixture
def sentinel_caches(sentinel_topology: SentinelTopology, prefix: str) -> Iterator[CacheFactory]:
    factory = Factory("sentinel", sentinel_topology.url, prefix)
    yield factory
    factory.close_all()


def test_sentinel_near_hits_and_writes_elsewhere_seen_at_once(
    sentinel_topology: SentinelTopology, sentinel_caches: CacheFactory
) -> None:
    near = sentinel_caches(near_cache=True, stats_flush_interval=QUIET)
    writer = sentinel_caches(stats_flush_interval=QUIET)
    writer.set("k", 1)
    assert near.get("k") == 1
    before = near_hits(near)
    assert near.get("k") == 1
    assert near_hits(near) == before + 1
    cache = near_of(near)
    assert cache.tracked == frozenset({sentinel_topology.master_address()})
    writer.set("k", 2)
    assert near.get("k") == 2
    master: RedisServer = sentinel_topology.master()
    assert master.cli("SET", near.prefix + "k", "j3") == "OK"
    assert near.get("k") == 3
    writer.delete("k")
    assert near.get("k") is None


def test_sentinel_no_stale_read_after_a_write_acknowledged_in_another_process(
    sentinel_topology: SentinelTopology, sentinel_caches: CacheFactory
) -> None:
    near = sentinel_caches(near_cache=True, stats_flush_interval=QUIET)
    assert stale_reads(near, sentinel_topology.url, ["shared"]) == 0


def test_sentinel_no_stale_tagged_read_after_invalidate_tags_acknowledged_in_another_process(
    sentinel_topology: SentinelTopology, sentinel_caches: CacheFactory
) -> None:
    near = sentinel_caches(near_cache=True, stats_flush_interval=QUIET)
    assert stale_tagged_reads(near, sentinel_topology.url, ["t"]) == 0


def test_sentinel_master_killed_flushes_then_tracks_the_promoted_replica(
    sentinel_factory: Callable[[], SentinelTopology], prefix: str
) -> None:
    topology = sentinel_factory()
    old_master = topology.master()
    near = RedisCache(topology.url, prefix=prefix, near_cache=True, stats_flush_interval=QUIET)
    writer = RedisCache(topology.url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        writer.set("k", "old")
        assert near.get("k") == "old"
        assert near.get("k") == "old"
        cache: NearCache = near_of(near)
        assert cache.tracked == frozenset({("127.0.0.1", old_master.port)})
        old_master.kill()
        # The broken tracking socket is seen on the next read: flushed, bypassed.
        assert wait_for(lambda: near.get("k") is None and not cache.connected, timeout=5.0)
        assert len(cache) == 0

        def followed() -> bool:
            writer.set("k", "new")
            return near.get("k") == "new" and cache.connected

        assert wait_for(followed, timeout=FAILOVER_TIMEOUT, step=0.1)
        new_master = topology.master()
        assert new_master is not old_master
        assert cache.tracked == frozenset({("127.0.0.1", new_master.port)})
        before = near_hits(near)
        assert near.get("k") == "new"
        assert near_hits(near) == before + 1
        writer.set("k", "newer")
        assert near.get("k") == "newer"
        assert new_master.cli("SET", prefix + "k", 'j"raw"') == "OK"
        assert near.get("k") == "raw"
    finally:
        near.close()
        writer.close()


def test_sentinel_compares_the_address_the_client_got_from_the_sentinels(
    sentinel_topology: SentinelTopology, sentinel_caches: CacheFactory
) -> None:
    """The Sentinel check is against the address the client's pool got from the sentinels."""
    near = sentinel_caches(near_cache=True)
    near.get("x")
    cache = near_of(near)
    assert isinstance(cache._tracking, WatchedTrackingConnections)
    masters: Any = cache._tracking._masters
    assert masters is not None and masters() == cache.tracked
