"""End to end: the demo under gunicorn (2 gthread workers) against a real redis-server.

Replays the seed's curl session over HTTP with ``urllib`` and checks that the cache statistics
served by ``/cache/stats`` add up across both worker processes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gunicorn")

from _gunicorn import ACCESS_LINE, DemoServer, LoadGenerator, running_demo  # noqa: E402
from _support import wait_for  # noqa: E402

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123"
DB_DELAY = 0.2
#: Each worker flushes its stats to Redis at least once a second.
STATS_FLUSH_WAIT = 1.2
STATS_KEYS = {"hits", "misses", "sets", "deletes", "total_requests", "hit_rate", "errors"}
USER_PATH = re.compile(r"/users/\d+")


@pytest.fixture
def demo_server(redis_server: Any, tmp_path: Path) -> Iterator[DemoServer]:
    """``gunicorn -c demo/gunicorn.conf.py "demo.app:create_app()"`` on a free port."""
    with running_demo(
        str(redis_server.url), tmp_path, admin_token=TOKEN, db_delay=DB_DELAY, workers=2
    ) as server:
        yield server


def stats_after_flush(server: DemoServer) -> dict[str, Any]:
    """``/cache/stats`` once every worker has flushed its counters."""
    time.sleep(STATS_FLUSH_WAIT)
    reply = server.get("/cache/stats")
    assert reply.status == 200
    stats: dict[str, Any] = reply.json
    return stats


def worker_pids(server: DemoServer, expected_lines: int) -> set[int]:
    """Pids of the workers that served ``GET /users/..`` with 200 (from the access log)."""
    deadline = time.monotonic() + 2.0
    while True:
        matches = [
            pid
            for path, status, pid in ACCESS_LINE.findall(server.log())
            if status == "200" and USER_PATH.fullmatch(path)
        ]
        if len(matches) >= expected_lines or time.monotonic() > deadline:
            return {int(pid) for pid in matches}
        time.sleep(0.05)


def test_seed_session_under_gunicorn(demo_server: DemoServer) -> None:
    server = demo_server
    alice = {"id": 1, "name": "Alice", "email": "alice@example.com"}

    # 1. @cache: a miss (slow), then a hit (fast) -- maybe served by the other worker.
    first = server.get("/users/1")
    assert first.status == 200
    assert first.json["user"] == alice and first.json["cached"] is False
    assert first.json["duration_ms"] >= DB_DELAY * 1000
    second = server.get("/users/1")
    assert second.json == {"user": alice, "cached": True, "duration_ms": pytest.approx(0, abs=100)}

    # 2. Cache-aside.
    aside = server.get("/users-aside/2")
    assert aside.status == 200
    assert aside.json["user"]["name"] == "Bob" and aside.json["cached"] is False

    # 3. Write-through, then read back from the cache.
    david = {"id": 4, "name": "David", "email": "david@example.com"}
    created = server.request("POST", "/users", david)
    assert created.status == 201
    assert created.json == {"user": david, "message": "User created"}
    assert server.get("/users/4").json["cached"] is True
    bad = server.request("POST", "/users", {"id": True, "name": "X", "email": "x@y"})
    assert bad.status == 400 and "id" in bad.json["error"]

    # 4. Statistics (shape; the numbers are checked below, after a flush).
    shape = server.get("/cache/stats")
    assert shape.status == 200 and STATS_KEYS <= set(shape.json)

    # 6. Health.
    health = server.get("/cache/health")
    assert health.status == 200
    assert health.json["status"] == "healthy" and health.json["backend"] == "redis"
    assert "latency_ms" in health.json

    # 7. Benchmark.
    bench = server.get("/benchmark")
    assert bench.status == 200
    assert set(bench.json) == {"uncached_ms", "cache_miss_ms", "cache_hit_ms", "speedup"}
    assert bench.json["uncached_ms"] >= DB_DELAY * 1000
    assert bench.json["cache_miss_ms"] >= DB_DELAY * 1000
    assert bench.json["cache_hit_ms"] < DB_DELAY * 1000
    assert bench.json["speedup"] > 1

    # Lookups so far: /users/1 miss+hit, /users-aside/2 miss, /users/4 hit, benchmark miss+hit.
    server.get("/users/3")  # one more miss: now users 1-4 are all cached
    stats = stats_after_flush(server)
    assert (stats["hits"], stats["misses"], stats["total_requests"]) == (3, 4, 7), stats
    assert stats["sets"] >= 5  # users 1, 2, 3, 4 and the benchmark key
    assert stats["hit_rate"] == round(300 / 7, 2)

    # Cross-worker statistics: hits in both workers all reach the shared counters.
    made = 0
    pids: set[int] = set()
    paths = [f"/users/{1 + i % 4}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            replies = list(pool.map(server.get, paths))
            made += len(replies)
            assert all(r.status == 200 and r.json["cached"] is True for r in replies)
            pids = worker_pids(server, expected_lines=made + 4)
            if len(pids) >= 2:
                break
    assert len(pids) == 2, f"all requests went to one worker: {pids}"
    after = stats_after_flush(server)
    assert after["total_requests"] == stats["total_requests"] + made, after
    assert after["hits"] == stats["hits"] + made, after
    assert after["misses"] == stats["misses"], after
    assert after["errors"] == 0, after

    # 5. Clear: the token is configured, so it is required.
    denied = server.request("POST", "/cache/clear")
    assert denied.status in (401, 403) and "error" in denied.json
    wrong = server.request("POST", "/cache/clear", headers={"Authorization": "Bearer nope"})
    assert wrong.status in (401, 403)
    assert server.get("/users/1").json["cached"] is True
    cleared = server.request("POST", "/cache/clear", headers={"Authorization": f"Bearer {TOKEN}"})
    assert cleared.status == 200
    assert cleared.json == {"message": "Cache cleared", "keys_deleted": 5}  # users 1-4, benchmark
    # Every worker now misses.
    assert [server.get("/users/2").json["cached"] for _ in range(2)] == [False, True]

    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log, log


# ==================================================================================
# gunicorn --preload: nothing shared across the fork
# ==================================================================================

#: A gunicorn config: the demo's, plus a hook that uses the cache in the master after the
#: app is preloaded and before the workers are forked (a pooled connection, a started stats
#: thread, a taken lock: everything a fork must not share).
MASTER_WARMS_CONFIG = """
import runpy

globals().update(runpy.run_path({demo_config!r}))


def when_ready(server):
    app = server.app.wsgi()
    with app.app_context():
        backend = app.extensions["fennec_cache"]
        backend.set("master", "warmed", ttl=60)
        assert backend.get("master") == "warmed"
        assert backend.health()["status"] == "healthy"
        backend.get_stats()
"""


@pytest.mark.parametrize("master_uses_cache", [False, True], ids=["plain", "master-warmed"])
def test_preload_workers_share_nothing(
    redis_server: Any, tmp_path: Path, master_uses_cache: bool
) -> None:
    """Two preloaded workers both serve, flush their counters, and log no error."""
    config: str | Path = "demo/gunicorn.conf.py"
    if master_uses_cache:
        config = tmp_path / "gunicorn.conf.py"
        demo_config = str(Path(__file__).resolve().parents[1] / "demo" / "gunicorn.conf.py")
        config.write_text(MASTER_WARMS_CONFIG.format(demo_config=demo_config))
    with running_demo(
        str(redis_server.url), tmp_path, db_delay=0.01, workers=2,
        env={"FENNEC_DEMO_PRELOAD": "1"}, config=config,
    ) as demo:  # fmt: skip
        demo.request("POST", "/cache/clear", {})  # open admin in the demo without a token
        baseline = demo.get("/cache/stats").json
        paths = [f"/users/{1 + i % 3}" for i in range(60)]
        with LoadGenerator(demo, paths, threads=8) as load:
            assert wait_for(
                lambda: len(load.samples()) >= 150 and len(demo.access_pids()) >= 2,
                timeout=10.0,
                step=0.05,
            ), f"served {len(load.samples())}, by workers {demo.access_pids()}"
            load.stop()
        everything = load.window()
        for sample in everything.samples:
            assert sample.status == 200, sample
            # The answer is for the user asked for: no reply crossed to another request.
            assert sample.body["user"]["id"] == int(sample.path.rsplit("/", 1)[1]), sample
        time.sleep(1.3)  # every worker flushes its counters at least once a second
        stats = demo.get("/cache/stats").json
        health = demo.get("/cache/health")
    print(
        f"\n[--preload, {'master warmed the cache' if master_uses_cache else 'plain'}] "
        f"{everything.summary()}"
    )
    print(f"  workers that served: {sorted(demo.access_pids())}; stats: {stats}")

    assert len(demo.access_pids()) == 2
    assert health.status == 200
    assert everything.failures == []
    lookups = len(everything.samples)
    assert stats["total_requests"] - baseline["total_requests"] == lookups, (stats, lookups)
    assert stats["errors"] == 0, stats
    log = demo.log()
    assert "Traceback" not in log, log[-5000:]
    assert "continuing without the cache" not in log, log[-5000:]
    assert "[ERROR]" not in log, log[-5000:]
