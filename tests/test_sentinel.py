"""RedisCache on a Sentinel-managed master: one master, one replica, three sentinels.

The data nodes and the sentinels have different passwords: the URL carries the data nodes'
(``redis+sentinel://:data-secret@...``) and the sentinels' (``?sentinel_password=...``).

1. The core contract suites (test_backend, test_strategies) again, on the Sentinel URL.
2. Sentinel specifics: credentials, redaction, replica reads.
3. Failover: the master SIGKILLed under load (threads through ``@cache``, and the demo under
   gunicorn): zero exceptions, zero 5xx, and the backend follows the promoted replica.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_backend
import test_strategies
from _gunicorn import LoadGenerator, running_demo
from _support import CacheFactory, Factory, wait_for
from _topology import DATA_PASSWORD, SENTINEL_PASSWORD, SentinelTopology

from flask_fennec_cache import RedisCache, cache
from flask_fennec_cache._topology import ReplicaReads

pytestmark = pytest.mark.real

QUIET = 3600.0
#: Deadline (never a speed requirement) for the backend to follow a promoted replica.
FOLLOW_TIMEOUT = 15.0


def report(line: str) -> None:
    print(f"\n[sentinel] {line}")


@pytest.fixture
def sentinel_caches(sentinel_topology: SentinelTopology, prefix: str) -> Any:
    factory = Factory("sentinel", sentinel_topology.url, prefix)
    yield factory
    factory.close_all()


# ==================================================================================
# 1. The core contract suites, on the Sentinel URL
# ==================================================================================


@pytest.fixture
def cache_factory(sentinel_caches: CacheFactory) -> CacheFactory:
    """Overrides conftest's fake/real parametrisation for the re-collected tests."""
    return sentinel_caches


_STANDALONE_FIXTURES = {
    "redis_server", "redis_server_session", "redis_server_factory", "fake_backend",
    "memory_url", "fake_down", "dead_backend", "down_backend", "killed", "paused_backend",
}  # fmt: skip


def _contract_tests() -> dict[str, Any]:
    """The contract tests that only need a cache factory (and their modules' fixtures)."""
    collected: dict[str, Any] = {}
    for module in (test_backend, test_strategies):
        short = module.__name__.removeprefix("test_")
        for name, obj in vars(module).items():
            if type(obj).__name__ == "FixtureFunctionDefinition":
                if name not in {"cache_factory", "real_caches", "backend"}:
                    collected.setdefault(name, obj)
                continue
            if not name.startswith("test_") or not inspect.isfunction(obj):
                continue
            wanted = set(inspect.signature(obj).parameters)
            if wanted & _STANDALONE_FIXTURES or not wanted & {"backend", "cache_factory"}:
                continue
            source = inspect.getsource(obj)
            if "CallCounter" in source or "_count_client_calls" in source:
                continue  # round trips on a plain client: also true here, checked upstream
            collected[f"test_{short}__{name.removeprefix('test_')}"] = obj
    return collected


globals().update(_contract_tests())


# ==================================================================================
# 2. Sentinel specifics
# ==================================================================================


def test_sentinel_url_reaches_the_master(
    sentinel_topology: SentinelTopology, sentinel_caches: CacheFactory
) -> None:
    made = sentinel_caches()
    assert made.set("k", {"v": 1}) is True
    assert made.get("k") == {"v": 1}
    master = sentinel_topology.master()
    assert master.cli("EXISTS", made.prefix + "k") == "1"
    health = made.health()
    assert health["status"] == "healthy"
    for secret in (DATA_PASSWORD, SENTINEL_PASSWORD):
        assert secret not in health["url"] and secret not in repr(made)
    assert "sentinel_password=***" in health["url"]


def test_wrong_data_password_fails_open(sentinel_topology: SentinelTopology, prefix: str) -> None:
    url = sentinel_topology.url.replace(f":{DATA_PASSWORD}@", ":wrong@")
    made = RedisCache(url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        assert made.get("k", default="d") == "d"
        assert made.set("k", 1) is False
        assert "AuthenticationError" in made.health()["error"]
    finally:
        made.close()


def test_wrong_sentinel_password_fails_open(
    sentinel_topology: SentinelTopology, prefix: str
) -> None:
    url = sentinel_topology.url.replace(SENTINEL_PASSWORD, "wrong")
    made = RedisCache(url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        assert made.get("k", default="d") == "d"
        assert made.health()["status"] == "unhealthy"
    finally:
        made.close()


def test_read_from_replicas_sends_reads_to_the_replica(
    sentinel_topology: SentinelTopology, prefix: str
) -> None:
    made = RedisCache(sentinel_topology.url + "&read_from_replicas=true", prefix=prefix)
    try:
        assert isinstance(made.client, ReplicaReads)
        master = sentinel_topology.master()
        replica = next(s for s in sentinel_topology.data if s is not master)
        assert made.set("r", [1, 2]) is True  # a write: on the master
        before = _gets(replica), _gets(master)
        assert wait_for(lambda: made.get("r") == [1, 2], timeout=5.0)  # replication lag
        after = _gets(replica), _gets(master)
        assert after[0] > before[0], "no GET reached the replica"
        assert after[1] == before[1], "a GET reached the master"
        assert made.delete("r") == 1  # a write again
        assert wait_for(lambda: made.get("r") is None, timeout=5.0)
    finally:
        made.close()


def _gets(server: Any) -> int:
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_get:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


# ==================================================================================
# 3. Failover: the master dies under load
# ==================================================================================


def test_master_killed_under_load_backend_follows_the_promoted_replica(
    sentinel_factory: Callable[[], SentinelTopology], prefix: str
) -> None:
    topology = sentinel_factory()
    old_master = topology.master()
    made = RedisCache(topology.url, prefix=prefix, stats_flush_interval=0.2)

    @cache(ttl=60, backend=made, key="item:{n}")
    def item(n: int) -> dict[str, int]:
        return {"n": n}

    errors: list[BaseException] = []
    answers = [0]
    slowest: list[float] = [0.0, 0, 0.0]
    stop = threading.Event()

    def worker(index: int) -> None:
        turn = index
        while not stop.is_set():
            n = turn % 30
            turn += 1
            started = time.monotonic()
            try:
                assert item(n) == {"n": n}
                if turn % 5 == 0:
                    item.invalidate(n)
            except BaseException as exc:  # any exception at all is a failure here
                errors.append(exc)
            latency = time.monotonic() - started
            if latency > slowest[0]:
                slowest[:] = [latency, n, started]
            answers[0] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    try:
        for thread in threads:
            thread.start()
        assert wait_for(lambda: answers[0] > 300, timeout=10.0)
        killed = time.monotonic()
        old_master.kill()
        followed = _wait_until_writable(made, killed)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    new_master = topology.master()
    stats = made.get_stats()
    made.close()
    report(
        f"threads: master killed under load; the backend wrote to the promoted replica "
        f"{followed - killed:.2f} s later; {len(errors)} exceptions, "
        f"{stats['errors']} errors counted; slowest call {slowest[0]:.2f} s "
        f"(started {slowest[2] - killed:+.2f} s from the kill)"
    )
    assert errors == [], errors[:3]
    assert new_master is not old_master
    assert new_master.cli("EXISTS", prefix + "probe") == "1"
    assert stats["errors"] > 0


def _wait_until_writable(made: RedisCache, since: float) -> float:
    def writable() -> bool:
        return made.set("probe", since) is True and made.get("probe") == since

    assert wait_for(writable, timeout=FOLLOW_TIMEOUT, step=0.05), (
        f"the backend did not follow the promoted replica within {FOLLOW_TIMEOUT} s"
    )
    return time.monotonic()


@pytest.mark.e2e
def test_master_killed_under_load_demo_under_gunicorn(
    sentinel_factory: Callable[[], SentinelTopology], tmp_path: Path, prefix: str
) -> None:
    topology = sentinel_factory()
    old_master = topology.master()
    with (
        running_demo(topology.url, tmp_path, prefix=prefix, db_delay=0.01, workers=2) as demo,
        LoadGenerator(demo, ["/users/1", "/users/2", "/users/3"], threads=8) as load,
    ):
        started = time.monotonic()
        assert load.wait_for_hits(started, count=20) is not None, "the cache never hit"
        killed = time.monotonic()
        old_master.kill()
        attempt = [100]

        def written_again() -> bool:
            attempt[0] += 1
            user = {"id": attempt[0], "name": "Probe", "email": "probe@example.com"}
            reply = demo.request("POST", "/users", user)
            assert reply.status in (200, 201), reply
            return bool(demo.get(f"/users/{attempt[0]}").json.get("cached"))

        assert wait_for(written_again, timeout=FOLLOW_TIMEOUT, step=0.1), (
            "the demo's cache did not accept writes again after the promotion"
        )
        recovered = time.monotonic()
        time.sleep(0.5)
        load.stop()
        log = demo.log()
    everything = load.window()
    report(
        f"gunicorn (2 workers, 8 client threads): writes cached again "
        f"{recovered - killed:.2f} s after the kill; "
        f"failover {load.window(killed, recovered).summary()}"
    )
    assert topology.master() is not old_master
    assert everything.server_errors == 0, everything.failures[:5]
    assert everything.failures == [], everything.failures[:5]
    assert "Traceback" not in log, log[-5000:]
