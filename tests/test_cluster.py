"""RedisCache on a real Redis Cluster (3 masters + 3 replicas, password-protected).

1. The contract suites (test_backend, test_strategies, test_loading, test_locks), collected
   again here with their ``cache_factory``/``real_caches`` fixture pointing at the cluster.
2. Cluster specifics: multi-key operations across slots and nodes, one round trip per node,
   clear/keys on every master, the library's own keys sharing one hash tag, replica reads,
   and a cluster that is unreachable at start-up.
3. Failover: a master SIGKILLed under load, with threads calling ``@cache`` functions and
   with the demo under gunicorn: zero exceptions and zero 5xx, writes succeed again once the
   replica is promoted.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_backend
import test_loading
import test_locks
import test_strategies
from _gunicorn import LoadGenerator, running_demo
from _support import CacheFactory, wait_for
from _topology import RedisClusterTopology
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flask_fennec_cache import RedisCache, WriteThrough, cache
from flask_fennec_cache._topology import ClusterClient

pytestmark = pytest.mark.real

QUIET = 3600.0
#: Deadline (never a speed requirement) for writes to succeed again after a master dies.
PROMOTION_TIMEOUT = 15.0


def report(line: str) -> None:
    print(f"\n[cluster] {line}")


# ==================================================================================
# 1. The contract suites, against the cluster
# ==================================================================================


@pytest.fixture
def cache_factory(cluster_caches: CacheFactory) -> CacheFactory:
    """Overrides conftest's fake/real parametrisation: every re-collected test runs on the
    cluster."""
    return cluster_caches


@pytest.fixture
def real_caches(cluster_caches: CacheFactory) -> CacheFactory:
    return cluster_caches


#: Contract tests that do not apply to a cluster, and why. Besides these, tests that count
#: commands with CallCounter (which wraps a redis.Redis client's execute_command/pipeline; a
#: cluster client routes per node) are left out: round trips per node are checked below.
NOT_ON_A_CLUSTER = {
    # Spawned processes rebuild the cache from a plain URL in the test; they run on one server.
    "test_lease_waiter_in_another_process_reports_hit",
    "test_processes_and_threads_one_cold_key_one_load",
    "test_holder_killed_mid_load_a_waiter_takes_over",
}

#: Fixtures that tie a test to one standalone server (or to fakeredis): not re-collected.
_STANDALONE_FIXTURES = {
    "redis_server", "redis_server_session", "redis_server_factory", "fake_backend",
    "memory_url", "fake_down", "dead_backend", "down_backend", "killed", "paused_backend",
}  # fmt: skip


def _contract_tests() -> dict[str, Any]:
    """``test_<module>__<name>``: the tests of the contract modules that only need a cache
    factory, plus every fixture those modules define (so the tests find them here)."""
    collected: dict[str, Any] = {}
    for module in (test_backend, test_strategies, test_loading, test_locks):
        short = module.__name__.removeprefix("test_")
        for name, obj in vars(module).items():
            if type(obj).__name__ == "FixtureFunctionDefinition":
                if name not in {"cache_factory", "real_caches", "backend"}:
                    collected.setdefault(name, obj)
                continue
            if not name.startswith("test_") or not inspect.isfunction(obj):
                continue
            if name in NOT_ON_A_CLUSTER or _counts_commands(obj):
                continue
            wanted = set(inspect.signature(obj).parameters)
            if wanted & _STANDALONE_FIXTURES:
                continue
            if not wanted & {"backend", "cache_factory", "real_caches"}:
                continue
            collected[f"test_{short}__{name.removeprefix('test_')}"] = obj
    return collected


def _counts_commands(test: Any) -> bool:
    source = inspect.getsource(test)
    return "CallCounter" in source or "_count_client_calls" in source


globals().update(_contract_tests())


# ==================================================================================
# 2. Cluster specifics
# ==================================================================================


def spread_keys(count: int = 60) -> list[str]:
    """*count* relative keys: enough to land on every master (the tests check that they do)."""
    return [f"item:{i}" for i in range(count)]


def masters_of(cluster: RedisClusterTopology, prefix: str, keys: list[str]) -> set[int]:
    return {cluster.master_of_slot(key_slot((prefix + k).encode())).port for k in keys}


def test_cluster_url_gives_a_cluster_client(cluster_caches: CacheFactory) -> None:
    made = cluster_caches()
    assert isinstance(made.client, ClusterClient)
    assert made.ping() is True
    health = made.health()
    assert health["status"] == "healthy"
    assert "cluster-secret" not in repr(made) and "cluster-secret" not in health["url"]


def test_get_many_and_set_many_span_every_master(
    redis_cluster: RedisClusterTopology, cluster_caches: CacheFactory
) -> None:
    made = cluster_caches()
    keys = spread_keys()
    assert masters_of(redis_cluster, made.prefix, keys) == {
        s.port for s in redis_cluster.master_servers()
    }
    mapping = {key: {"n": i} for i, key in enumerate(keys)}
    assert made.set_many(mapping, ttl=60) is True
    assert made.get_many([*keys, "absent:1", "absent:2"]) == mapping
    assert 0 < made.ttl(keys[0]) <= 60  # type: ignore[operator]
    # Each value really is on the master owning its slot.
    for key in keys[:10]:
        owner = redis_cluster.master_of_slot(key_slot((made.prefix + key).encode()))
        assert owner.cli("EXISTS", made.prefix + key) == "1"


def test_get_many_sends_one_mget_per_slot_to_its_master(
    redis_cluster: RedisClusterTopology, cluster_caches: CacheFactory
) -> None:
    made = cluster_caches(stats_flush_interval=QUIET)
    keys = spread_keys()
    made.set_many({key: 1 for key in keys})
    masters = redis_cluster.master_servers()
    before = {s.port: _calls(s) for s in masters}
    made.get_many(keys)
    after = {s.port: _calls(s) for s in masters}
    # One MGET per slot, each on the master owning it (the next test checks that each node
    # gets its MGETs in one pipelined write).
    assert all(after[p]["mget"] > before[p]["mget"] for p in before), (before, after)
    assert sum(after[p]["mget"] - before[p]["mget"] for p in before) == len(
        {key_slot((made.prefix + k).encode()) for k in keys}
    )


def _calls(server: Any) -> dict[str, int]:
    stats = server.cli("INFO", "commandstats")
    found = {"mget": 0, "set": 0}
    for line in stats.splitlines():
        name, _, rest = line.partition(":")
        command = name.removeprefix("cmdstat_")
        if command in found:
            found[command] = int(rest.split(",")[0].split("=")[1])
    return found


def test_one_pipeline_per_node_for_get_many(
    cluster_caches: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's cluster pipeline writes every node's commands, then reads every answer:
    one round trip per node, not one per key or per slot."""
    made = cluster_caches(stats_flush_interval=QUIET)
    keys = [f"rt:{i}" for i in range(40)]
    made.set_many({key: i for i, key in enumerate(keys)})
    from redis.cluster import NodeCommands

    writes: list[int] = []
    original: Any = NodeCommands.write

    def counting_write(self: Any) -> None:
        writes.append(len(self.commands))
        original(self)

    monkeypatch.setattr(NodeCommands, "write", counting_write)
    assert len(made.get_many(keys)) == len(keys)
    assert len(writes) == 3, writes  # one batch per master, each holding many slots' MGETs
    assert sum(writes) == len({key_slot((made.prefix + k).encode()) for k in keys})


def test_clear_and_keys_reach_every_master(
    redis_cluster: RedisClusterTopology, cluster_caches: CacheFactory
) -> None:
    made = cluster_caches()
    other = cluster_caches(prefix=made.prefix + "other:")
    keys = spread_keys(300)
    made.set_many({key: 1 for key in keys})
    made.set_many({f"keep:{i}": 1 for i in range(20)})
    other.set_many({f"item:{i}": 1 for i in range(20)})
    made.get_stats()  # the stats hash exists and must survive clear()
    assert sorted(made.keys("item:*", limit=10_000)) == sorted(keys)
    assert made.clear("item:*") == 300
    assert made.get_many(keys) == {}
    assert len(made.keys(limit=10_000)) == 20 + 20  # keep:* and other's keys (under our prefix)
    assert made.clear() == 40
    assert other.get_many([f"item:{i}" for i in range(20)]) == {}
    assert made.get_stats()["shared"] is True


def test_delete_across_slots(cluster_caches: CacheFactory) -> None:
    made = cluster_caches()
    made.set_many({f"d:{i}": i for i in range(30)})
    assert made.delete(*[f"d:{i}" for i in range(30)], "d:absent") == 30


def test_library_keys_updated_together_share_one_slot(cluster_caches: CacheFactory) -> None:
    made = cluster_caches()
    tag_keys = [made.tag_index.key(tag) for tag in ("users", "orders", "tenant:7", "x" * 40)]
    assert len({key_slot(k.encode()) for k in tag_keys}) == 1
    # TAG_VERSIONS touches several tag keys in one script: it must run without CROSSSLOT.
    versions = made.tag_versions(["users", "orders", "tenant:7"], create=True)
    assert versions is not None and set(versions) == {"users", "orders", "tenant:7"}


def test_tagged_entries_across_slots_are_invalidated(cluster_caches: CacheFactory) -> None:
    made = cluster_caches()
    calls: list[int] = []

    @cache(ttl=60, backend=made, tags=("users",), key="user:{user_id}")
    def load(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "v": len(calls)}

    for user_id in range(12):  # keys in many slots, tag keys in one other slot
        load(user_id)
        load(user_id)
    assert len(calls) == 12
    assert made.invalidate_tags("users") is True
    for user_id in range(12):
        assert load(user_id)["v"] > 12
    assert len(calls) == 24


def test_stats_are_shared_on_a_cluster(cluster_caches: CacheFactory) -> None:
    one = cluster_caches(stats_flush_interval=QUIET)
    two = cluster_caches(stats_flush_interval=QUIET)
    one.set("a", 1)
    one.get("a")
    two.get("a")
    two.get("missing")
    one.get_stats()  # flushes one's counts (the background flush is off here)
    stats = two.get_stats()
    assert stats["shared"] is True
    assert (stats["hits"], stats["misses"], stats["sets"]) == (2, 1, 1)
    one.reset_stats()
    assert two.get_stats()["total_requests"] == 0


def test_read_from_replicas_reads_and_writes(
    redis_cluster: RedisClusterTopology, prefix: str
) -> None:
    url = redis_cluster.url + "?read_from_replicas=true"
    made = RedisCache(url, prefix=prefix)
    try:
        assert made.set("r", {"x": 1}) is True
        # Replication is asynchronous: the replica catches up within moments.
        assert wait_for(lambda: made.get("r") == {"x": 1}, timeout=5.0)
        assert made.clear() == 1
    finally:
        made.close()


def test_unreachable_cluster_at_start_fails_open(prefix: str) -> None:
    from _servers import find_free_port

    url = f"redis+cluster://127.0.0.1:{find_free_port()},127.0.0.1:{find_free_port()}/"
    made = RedisCache(url, prefix=prefix, stats_flush_interval=QUIET)  # does not connect yet
    try:
        assert made.get("k", default="d") == "d"
        assert made.set("k", 1) is False
        assert made.get_many(["a", "b"]) == {}
        assert made.clear() == 0
        assert made.ping() is False
        assert "ClusterUnavailable" in made.health()["error"]
        assert made.get_stats()["errors"] >= 1
    finally:
        made.close()


def test_unreachable_cluster_fails_closed_with_cache_unavailable(prefix: str) -> None:
    from _servers import find_free_port

    from flask_fennec_cache import CacheUnavailable

    made = RedisCache(f"redis+cluster://127.0.0.1:{find_free_port()}/", prefix=prefix,
                      fail_open=False, stats_flush_interval=QUIET)  # fmt: skip
    try:
        with pytest.raises(CacheUnavailable, match="ClusterUnavailable"):
            made.get("k")
    finally:
        made.close()


# ==================================================================================
# 3. Failover: a master dies under load
# ==================================================================================


@pytest.fixture
def heal_after(redis_cluster: RedisClusterTopology) -> Iterator[RedisClusterTopology]:
    """The cluster, healed at teardown (the killed node rejoins as a replica)."""
    yield redis_cluster
    redis_cluster.heal()


def test_master_killed_under_load_threads(heal_after: RedisClusterTopology, prefix: str) -> None:
    cluster = heal_after
    made = RedisCache(cluster.url, prefix=prefix, stats_flush_interval=0.2)
    loads: list[int] = []
    loads_lock = threading.Lock()

    @cache(ttl=60, backend=made, key="item:{n}")
    def item(n: int) -> dict[str, int]:
        with loads_lock:
            loads.append(n)
        return {"n": n}

    errors: list[BaseException] = []
    answers = 0
    slowest = [0.0, 0.0]
    stop = threading.Event()
    count_lock = threading.Lock()

    def worker(index: int) -> None:
        nonlocal answers
        turn = index
        while not stop.is_set():
            n = turn % 50
            turn += 1
            started = time.monotonic()
            try:
                assert item(n) == {"n": n}
                if turn % 7 == 0:
                    item.invalidate(n)
            except BaseException as exc:  # any exception at all is a failure here
                errors.append(exc)
            latency = time.monotonic() - started
            with count_lock:
                answers += 1
                if latency > slowest[0]:
                    slowest[:] = [latency, started]

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    victim = cluster.master_of_slot(key_slot(f"{prefix}item:0".encode()))
    probe = same_master_key(cluster, prefix, victim, "probe:{}")
    try:
        for thread in threads:
            thread.start()
        assert wait_for(lambda: answers > 300, timeout=10.0)
        killed = time.monotonic()
        victim.kill()
        # Writes to the dead master's slots fail (fail-open) until its replica is promoted.
        promoted = _wait_for_writes(made, probe, killed)
        time.sleep(0.5)  # keep the load on a little after the promotion
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    stats = made.get_stats()
    made.close()
    report(
        f"threads: master killed under load; writes to its slots succeeded again "
        f"{promoted - killed:.2f} s later; {answers} answers, {len(errors)} exceptions, "
        f"{stats['errors']} errors counted, loads={len(loads)}; slowest call "
        f"{slowest[0]:.2f} s (started {slowest[1] - killed:+.2f} s from the kill)"
    )
    assert errors == [], errors[:3]
    assert stats["errors"] > 0, "the failover's errors were not counted"


def same_master_key(cluster: RedisClusterTopology, prefix: str, master: Any, pattern: str) -> str:
    """The first ``pattern.format(i)`` whose slot *master* serves (a probe for its slots)."""
    for i in range(1000):
        key = pattern.format(i)
        if cluster.master_of_slot(key_slot(f"{prefix}{key}".encode())) is master:
            return key
    raise AssertionError("no key found on that master")


def _wait_for_writes(made: RedisCache, key: str, since: float) -> float:
    """Poll (bounded) until a write to *key* (on the dead master's slots) succeeds and reads
    back; the time then."""

    def writable() -> bool:
        return made.set(key, since) is True and made.get(key) == since

    assert wait_for(writable, timeout=PROMOTION_TIMEOUT, step=0.05), (
        f"writes did not succeed within {PROMOTION_TIMEOUT} s of the master's death"
    )
    return time.monotonic()


@pytest.mark.e2e
def test_master_killed_under_load_demo_under_gunicorn(
    heal_after: RedisClusterTopology, tmp_path: Path, prefix: str
) -> None:
    cluster = heal_after
    paths = [f"/users/{n}" for n in (1, 2, 3)]
    with (
        running_demo(cluster.url, tmp_path, prefix=prefix, db_delay=0.01, workers=2) as demo,
        LoadGenerator(demo, paths, threads=8) as load,
    ):
        started = time.monotonic()
        assert load.wait_for_hits(started, count=20) is not None, "the cache never hit"
        # Kill the master holding user:1.
        victim = cluster.master_of_slot(key_slot(f"{prefix}user:1".encode()))
        probe_id = int(same_master_key(cluster, prefix, victim, "user:1{:03d}").split(":")[1])
        killed = time.monotonic()
        victim.kill()

        def written_again() -> bool:
            user = {"id": probe_id, "name": "Probe", "email": "probe@example.com"}
            reply = demo.request("POST", "/users", user)
            assert reply.status in (200, 201), reply
            return bool(demo.get(f"/users/{probe_id}").json.get("cached"))

        assert wait_for(written_again, timeout=PROMOTION_TIMEOUT, step=0.1), (
            "the cache did not accept writes again after the promotion"
        )
        recovered = time.monotonic()
        time.sleep(0.5)
        load.stop()
        log = demo.log()
    everything = load.window()
    report(
        f"gunicorn (2 workers, 8 client threads): writes cached again "
        f"{recovered - killed:.2f} s after the kill; "
        f"before {load.window(started, killed).summary()}; "
        f"failover {load.window(killed, recovered).summary()}"
    )
    assert everything.server_errors == 0, everything.failures[:5]
    assert everything.failures == [], everything.failures[:5]
    assert "Traceback" not in log, log[-5000:]


def test_the_contract_suites_run_on_the_cluster(
    cache_factory: CacheFactory, real_caches: CacheFactory, backend: RedisCache
) -> None:
    """Section 1 re-collects tests of every contract module, and the fixtures they take
    (conftest's ``backend`` included) give caches on the cluster, never fakeredis or the
    standalone server."""
    for made in (cache_factory(), real_caches(), backend):
        assert isinstance(made.client, ClusterClient), made
        assert made.ping() is True
    recollected = _contract_tests()
    for module in (test_backend, test_strategies, test_loading, test_locks):
        short = module.__name__.removeprefix("test_")
        tests = [name for name in recollected if name.startswith(f"test_{short}__")]
        assert tests, f"no test of {module.__name__} runs on the cluster"


def test_plain_client_sees_what_the_cache_wrote(
    redis_cluster: RedisClusterTopology, cluster_caches: CacheFactory
) -> None:
    made = cluster_caches()
    made.set("visible", "yes")
    raw = redis_cluster.cluster_client()
    assert raw.get(made.prefix + "visible") is not None
    with pytest.raises(RedisClusterException, match="same key slot"):
        raw.mget(made.prefix + "a", made.prefix + "b")  # cross-slot: why mget_nonatomic


def test_wrong_cluster_password_fails_open(
    redis_cluster: RedisClusterTopology, prefix: str
) -> None:
    url = redis_cluster.url.replace(f":{redis_cluster.password}@", ":wrong@")
    made = RedisCache(url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        assert made.get("k", default="d") == "d"
        assert made.set("k", 1) is False
        health = made.health()
        assert health["status"] == "unhealthy" and "wrong" not in health["url"]
    finally:
        made.close()


def test_a_view_s_variants_share_a_slot_and_are_dropped_together(
    cluster_caches: CacheFactory, prefix: str
) -> None:
    """A view's entries for one set of arguments (every query string and Vary variant) live in
    one slot with their index, so storing and dropping them runs as one script."""
    from flask import Flask, make_response, request

    from flask_fennec_cache import FennecCache

    app = Flask("cluster_views")
    app.config.update(FENNEC_CACHE_URL=cluster_caches.url, FENNEC_CACHE_PREFIX=prefix)
    fennec = FennecCache(app)
    renders: list[str] = []

    @app.get("/p/<int:post_id>")
    @fennec.cache(ttl=60, tags=("posts",))
    def post(post_id: int) -> Any:
        renders.append(f"{post_id}{request.query_string.decode()}")
        response = make_response(f"post {post_id}")
        response.vary.add("Accept-Language")
        return response

    client = app.test_client()
    paths = ["/p/1", "/p/1?page=2", "/p/2"]
    try:
        for _ in range(2):
            for path in paths:
                for language in ("en", "fr"):
                    answer = client.get(path, headers={"Accept-Language": language})
                    assert answer.status_code == 200
        assert len(renders) == 6
        made: RedisCache = app.extensions["fennec_cache"]
        names = [prefix + k for k in made.keys("view:*") if "post_id=1" in k]
        assert len(names) >= 4 and len({key_slot(n.encode()) for n in names}) == 1
        with app.app_context():
            assert post.invalidate(post_id=1) is True
        for path in paths:
            client.get(path, headers={"Accept-Language": "en"})
        assert len(renders) == 8  # post 1's two entries rendered again, post 2 still cached
        assert made.invalidate_tags("posts")
        assert client.get("/p/2", headers={"Accept-Language": "fr"}).headers["X-Cache"] == "MISS"
    finally:
        app.extensions["fennec_cache"].close()


# ==================================================================================
# 4. A breaker per master (issue 14): a dead or frozen master costs the others nothing
# ==================================================================================


def _keys_per_master(
    cluster: RedisClusterTopology, prefix: str, victim: Any
) -> tuple[str, list[str]]:
    """A key on *victim*, and one key on each other master."""
    others = [server for server in cluster.master_servers() if server is not victim]
    healthy = [same_master_key(cluster, prefix, server, f"ok{n}:{{}}") for n, server in
               enumerate(others)]  # fmt: skip
    return same_master_key(cluster, prefix, victim, "down:{}"), healthy


def _count_timeouts(made: RedisCache, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations of *made* that waited a whole socket timeout, as they happen."""
    waited: list[str] = []
    failed = made.guard.failed

    def counting(exc: RedisError, op: str) -> None:
        if isinstance(exc.__cause__ or exc, RedisTimeoutError):
            waited.append(op)
        failed(exc, op)

    monkeypatch.setattr(made.guard, "failed", counting)
    return waited


@pytest.mark.parametrize("outage", ["frozen", "killed"])
def test_a_dead_master_does_not_cost_the_healthy_ones_their_writes_and_deletes(
    heal_after: RedisClusterTopology,
    prefix: str,
    outage: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = heal_after
    made = RedisCache(cluster.url, prefix=prefix, stats_flush_interval=QUIET)
    probe = f"probe:{prefix}"
    victim = cluster.master_of_slot(key_slot(f"{prefix}{probe}".encode()))
    down, healthy = _keys_per_master(cluster, prefix, victim)
    tagged = WriteThrough(made, ttl=60)
    for key in (down, *healthy):
        assert made.set(key, "old") is True
    waited = _count_timeouts(made, monkeypatch)
    victim.pause() if outage == "frozen" else victim.kill()
    try:
        for _ in range(made.guard.breaker.threshold):  # enough to open the victim's breaker
            assert made.get(down, default="miss") == "miss"
        assert made.get(down, default="miss") == "miss"  # skipped now: no wait
        for key in healthy:
            assert made.get(key) == "old"
            assert tagged.set(key, "new", writer=lambda value: "saved") == "saved"
            assert made.get(key) == "new"
            assert made.delete(key) == 1
            assert made.get(key) is None
            assert made.set(key, "again") is True
        assert made.delete(*healthy) == len(healthy)  # one call across the healthy masters
        assert made.get_many([down, *healthy]) == {}
        assert made.set_many({key: "many" for key in healthy}) is True
        assert made.get_many(healthy) == {key: "many" for key in healthy}
        # A delete that also names a key of the victim removes the healthy ones, and says
        # that it could not do everything.
        assert made.try_delete(down, *healthy) is None
        assert made.get_many(healthy) == {}
        # Those deletions are kept until the victim answers again. Meanwhile only what they
        # concern is a miss: the healthy masters' other keys are read and written as usual.
        assert made.guard.pending.waiting
        others = [server for server in cluster.master_servers() if server is not victim]
        fresh = [same_master_key(cluster, prefix, server, f"fresh{n}:{{}}")
                 for n, server in enumerate(others)]  # fmt: skip
        for key in fresh:
            assert made.set(key, "fresh") is True
            assert made.get(key) == "fresh"
            assert tagged.set(key, "newer", writer=lambda value: "saved") == "saved"
            assert made.get(key) == "newer"
        assert made.get_many([down, *healthy, *fresh]) == {key: "newer" for key in fresh}
        assert made.set(down, "x") is False and made.get(down) is None  # kept: never stale
        assert made.breaker_state == "closed"  # the cache as a whole never opened
        assert len(waited) <= 1, waited  # at most one timeout (frozen), none when refused
    finally:
        if outage == "frozen":
            victim.resume()
        made.close()


def test_the_prober_closes_a_frozen_master_s_breaker_without_traffic(
    heal_after: RedisClusterTopology, prefix: str
) -> None:
    cluster = heal_after
    made = RedisCache(cluster.url, prefix=prefix, stats_flush_interval=QUIET)
    down, healthy = _keys_per_master(cluster, prefix, cluster.master_servers()[0])
    victim = cluster.master_of_slot(key_slot(f"{prefix}{down}".encode()))
    try:
        assert made.set(down, "v") is True
        victim.pause()
        try:
            assert made.get(down, default="miss") == "miss"
            assert made.guard.nodes is not None and made.guard.nodes.not_closed()
        finally:
            victim.resume()
        assert wait_for(made.guard.recovered, timeout=PROMOTION_TIMEOUT)
        assert made.get(down) == "v"
    finally:
        made.close()
