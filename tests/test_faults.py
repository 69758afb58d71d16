"""Faults injected into real redis-server processes while the cache is in use.

1. SIGKILL Redis while the demo serves load under gunicorn (2 workers, 8 client threads).
2. SIGSTOP Redis mid-load (a frozen server: connections accept, nothing answers).
3. ``maxmemory 1mb`` with ``noeviction``: writes fail with OOM.
4. Foreign and corrupt values planted under the prefix with ``redis-cli``.

(gunicorn ``--preload`` is in test_e2e_gunicorn.py.)

The numbers the load tests print (``-s`` shows them) are the ones in docs/reliability.md.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _gunicorn import DemoServer, LoadGenerator, Window, running_demo
from _servers import RedisServer, RedisServerFactory
from _support import wait_for
from flask import Flask

from flask_fennec_cache import MISSING, CacheAside, FennecCache, RedisCache, cache
from flask_fennec_cache.serializers import Envelope, encode, envelope_head

USER_PATHS = ["/users/1", "/users/2", "/users/3"]
CLIENT_THREADS = 8
#: The demo's simulated query time under load (small: the cache is what is measured).
LOAD_DB_DELAY = 0.01
#: How long the load runs against a broken server.
OUTAGE_SECONDS = 2.0
#: Deadline (not a pass condition on speed) for the cache to hit again after a recovery.
RECOVERY_TIMEOUT = 10.0
QUIET = 3600.0  # a stats flush interval that never fires during a test


def report(title: str, **windows: Window) -> None:
    print(f"\n[{title}]")
    for name, window in windows.items():
        print(f"  {name:<10} {window.summary()}")


def health_of(server: DemoServer) -> tuple[int, dict[str, Any]]:
    reply = server.get("/cache/health")
    return reply.status, reply.json


def warning_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "continuing without the cache" in line]


#: A user only the probe asks for: with no concurrent request for it, ``"cached": true`` can
#: only come from Redis (under load, requests coalesced in one worker also say true).
PROBE_USER = {"id": 4, "name": "Dora", "email": "dora@example.com"}
PROBE_PATH = "/users/4"


def create_probe_user(server: DemoServer) -> None:
    created = server.request("POST", "/users", PROBE_USER)
    assert created.status == 201, created
    assert server.get(PROBE_PATH).json["cached"] is True


def probe_is_hit(server: DemoServer) -> bool:
    reply = server.get(PROBE_PATH)
    assert reply.status == 200, reply
    return reply.json["cached"] is True


def wait_for_probe_hit(server: DemoServer, timeout: float = RECOVERY_TIMEOUT) -> float | None:
    """Monotonic time of the first probe answered from Redis; None after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe_is_hit(server):
            return time.monotonic()
        time.sleep(0.02)
    return None


def shared_stats_with_errors(server: DemoServer) -> dict[str, Any]:
    """``/cache/stats`` from Redis once it counts errors (each worker flushes every second)."""
    stats: dict[str, Any] = {}

    def counted() -> bool:
        nonlocal stats
        stats = server.get("/cache/stats").json
        return bool(stats["shared"] and stats["errors"] > 0)

    wait_for(counted, timeout=5.0, step=0.2)
    return stats


# ==================================================================================
# 1. SIGKILL under load
# ==================================================================================


@pytest.mark.e2e
def test_redis_killed_under_load(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        running_demo(redis_server.url, tmp_path, db_delay=LOAD_DB_DELAY, workers=2) as demo,
        LoadGenerator(demo, USER_PATHS, threads=CLIENT_THREADS) as load,
    ):
        started = time.monotonic()
        create_probe_user(demo)
        assert load.wait_for_hits(started, count=20) is not None, "the cache never hit"

        killed = time.monotonic()
        redis_server.kill()
        assert wait_for(lambda: health_of(demo)[0] == 503, timeout=5.0, step=0.05)
        status, body = health_of(demo)
        assert status == 503 and body["status"] == "unhealthy", body
        assert "ConnectionError" in body["error"], body
        time.sleep(OUTAGE_SECONDS)
        assert not probe_is_hit(demo)

        restarted = time.monotonic()
        redis_server.restart()
        first_hit = wait_for_probe_hit(demo)
        assert first_hit is not None, f"no cache hit {RECOVERY_TIMEOUT} s after the restart"
        assert wait_for(lambda: health_of(demo)[0] == 200, timeout=5.0, step=0.05)
        time.sleep(0.5)
        load.stop()
        stats = shared_stats_with_errors(demo)

    before, outage, after, everything = (
        load.window(started, killed),
        load.window(killed, restarted),
        load.window(restarted),
        load.window(),
    )
    report(
        "SIGKILL under load: 2 gunicorn workers, 8 client threads",
        before=before, outage=outage, recovery=after, total=everything,
    )  # fmt: skip
    print(
        f"  outage lasted {restarted - killed:.2f} s; first hit "
        f"{first_hit - restarted:.2f} s after the restart"
    )
    log = demo.log()
    print(f"  'continuing without the cache' log lines: {len(warning_lines(log))}")
    print(f"  shared stats after recovery: {stats}")

    assert outage.served > 0
    assert everything.server_errors == 0, everything.failures[:5]
    assert everything.failures == [], everything.failures[:5]
    assert stats["errors"] > 0, "errors during the outage are not counted"
    assert "Traceback" not in log, log[-5000:]
    # Rate-limited: a few lines per worker and cause, not one per failed request.
    assert len(warning_lines(log)) < outage.served / 4, warning_lines(log)


# ==================================================================================
# 2. SIGSTOP under load
# ==================================================================================


@pytest.mark.e2e
def test_redis_frozen_under_load(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        running_demo(redis_server.url, tmp_path, db_delay=LOAD_DB_DELAY, workers=2) as demo,
        LoadGenerator(demo, USER_PATHS, threads=CLIENT_THREADS) as load,
    ):
        started = time.monotonic()
        create_probe_user(demo)
        assert load.wait_for_hits(started, count=20) is not None, "the cache never hit"

        paused = time.monotonic()
        redis_server.pause()
        try:
            breaker_states: list[str] = []
            health_codes: list[int] = []
            deadline = paused + OUTAGE_SECONDS
            while time.monotonic() < deadline:
                status, body = health_of(demo)
                health_codes.append(status)
                breaker_states.append(body.get("breaker", "?"))
                time.sleep(0.2)
            probe_hit_while_frozen = probe_is_hit(demo)
        finally:
            resumed = time.monotonic()
            redis_server.resume()
        first_hit = wait_for_probe_hit(demo)
        assert first_hit is not None, f"no cache hit {RECOVERY_TIMEOUT} s after SIGCONT"
        assert wait_for(lambda: health_of(demo)[0] == 200, timeout=5.0, step=0.05)
        time.sleep(0.5)
        load.stop()
        stats = shared_stats_with_errors(demo)

    before, frozen, after, everything = (
        load.window(started, paused),
        load.window(paused, resumed),
        load.window(resumed),
        load.window(),
    )
    # After the first timeouts the breakers are open: requests stop waiting on Redis.
    settled = load.window(paused + 1.0, resumed)
    report(
        "SIGSTOP under load: 2 gunicorn workers, 8 client threads",
        before=before, frozen=frozen, settled=settled, recovery=after, total=everything,
    )  # fmt: skip
    print(
        f"  frozen for {resumed - paused:.2f} s; first hit {first_hit - resumed:.2f} s "
        f"after SIGCONT; health codes {sorted(set(health_codes))}, "
        f"breaker states seen {sorted(set(breaker_states))}"
    )
    print(f"  shared stats after recovery: {stats}")

    assert not probe_hit_while_frozen
    assert stats["errors"] > 0, "timeouts during the freeze are not counted"
    assert frozen.served > 0
    assert everything.failures == [], everything.failures[:5]  # no 5xx, no client timeout
    assert 503 in health_codes
    assert "open" in breaker_states, breaker_states
    # How fast the settled window is (most requests never touch Redis) is measured and printed
    # above, and recorded in docs/reliability.md: a timing, never asserted here.
    assert "Traceback" not in demo.log()


# ==================================================================================
# 3. Out of memory (maxmemory 1mb, noeviction)
# ==================================================================================


@pytest.fixture
def full_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory(["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"])


def fill_until_oom(made: RedisCache, server: RedisServer) -> int:
    """Write 8 KB values until Redis refuses one; the number of values stored.

    At the limit, used memory hovers around maxmemory (a refused command frees its buffers,
    and the next small write may fit again), so once the fill is refused the limit is pinned
    below the memory in use: from then on every write is refused with OOM, reads are not.
    """
    chunk = "x" * 8192
    for index in range(10_000):
        if not made.set(f"fill:{index}", chunk):
            break
    else:
        raise AssertionError("Redis never refused a write: is maxmemory set?")
    control = server.client()
    used = int(control.info("memory")["used_memory"])
    control.config_set("maxmemory", str(used - 64 * 1024))
    return index


def test_out_of_memory_reads_and_loaders_keep_working(
    full_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    made = RedisCache(full_server.url, prefix="oom:", stats_flush_interval=QUIET)
    try:
        assert made.set("present", {"id": 1}) is True
        with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
            stored = fill_until_oom(made, full_server)
            assert stored >= 0
            assert made.set("new", 1) is False

            # Reads of existing keys still work.
            assert made.get("present") == {"id": 1}
            assert made.get_many(["present", "fill:0"]) == {
                "present": {"id": 1}, **({"fill:0": "x" * 8192} if stored else {}),
            }  # fmt: skip

            # Loaders answer (uncached) through every path.
            calls: list[int] = []

            @cache(ttl=60, backend=made)
            def square(n: int) -> int:
                calls.append(n)
                return n * n

            assert [square(7), square(7)] == [49, 49]
            assert calls == [7, 7]
            aside = CacheAside(made, ttl=60)
            assert aside.get("absent", loader=lambda: "loaded") == "loaded"
            assert made.breaker_state == "closed"  # OOM is an answer, not an outage
        assert any("maxmemory" in r.getMessage() for r in caplog.records), caplog.text

        stats = made.get_stats()
        assert stats["errors"] >= 3, stats
        assert stats["hits"] >= 1 and stats["misses"] >= 3, stats
    finally:
        made.close()


def test_out_of_memory_views_still_answer(full_server: RedisServer) -> None:
    app = Flask(__name__)
    app.config.update(
        FENNEC_CACHE_URL=full_server.url,
        FENNEC_CACHE_PREFIX="oom-view:",
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
        FENNEC_CACHE_STATS_FLUSH_INTERVAL=QUIET,
    )
    fennec = FennecCache(app)
    renders: list[int] = []

    @app.get("/page/<int:n>")
    @fennec.cache(ttl=60)
    def page(n: int) -> dict[str, int]:
        renders.append(n)
        return {"n": n}

    with app.app_context():
        backend = fennec.backend
    try:
        fill_until_oom(backend, full_server)
        client = app.test_client()
        for _ in range(3):
            response = client.get("/page/5")
            assert response.status_code == 200
            assert response.get_json() == {"n": 5}
            assert response.headers["X-Cache"] == "MISS"
        assert renders == [5, 5, 5]
        assert client.get("/cache/health").status_code == 200  # Redis is up, only full
        stats = client.get("/cache/stats").get_json()
        assert stats["errors"] >= 3, stats
    finally:
        backend.close()


# ==================================================================================
# 4. Foreign and corrupt values planted with redis-cli
# ==================================================================================


def plant(server: RedisServer, key: str, data: bytes) -> None:
    """``redis-cli -x SET key`` with *data* (any bytes) on stdin."""
    binary = shutil.which("redis-cli")
    assert binary is not None, "redis-cli not found"
    done = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(server.port), "-x", "SET", key],
        input=data, capture_output=True, timeout=10, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == b"OK", done


VERSION = "0123456789abcdef"
GOOD_ENVELOPE = envelope_head(Envelope({"a": 1}, VERSION, None, 0.0, {})) + encode({"a": 1}, "k")

#: name -> bytes planted under the key (None: a list, planted with RPUSH)
PLANTED: dict[str, bytes | None] = {
    "random-bytes": bytes([0x00, 0xFF, 0x13, 0x80, 0xFE, 0x7F, 0xC3]) * 9,
    "plain-string": b"hello from another app",
    "empty": b"",
    "bad-utf8-json": b"j\xff\xfe\xfd",
    "truncated-json": b'j{"a":',
    "envelope-cut-in-head": GOOD_ENVELOPE[: len(GOOD_ENVELOPE) // 3],
    "envelope-cut-in-value": GOOD_ENVELOPE[:-3],
    "envelope-of-garbage": b"e" + VERSION.encode() + b'{"f":null,"d":0,"t":{}}\n\x00\x01',
    "truncated-response": b'r{"s":200,"h":[],"t":1',
    "pickle-on-json-cache": b"p" + b"\x00" * 32 + pickle.dumps({"a": 1}),
    "list": None,
}


@pytest.fixture
def corrupt_cache(redis_server: RedisServer) -> Iterator[RedisCache]:
    made = RedisCache(
        redis_server.url, prefix=f"corrupt-{uuid.uuid4().hex[:6]}:", stats_flush_interval=QUIET
    )
    yield made
    made.close()


@pytest.mark.parametrize("kind", list(PLANTED))
def test_planted_values_read_as_logged_misses(
    redis_server: RedisServer,
    corrupt_cache: RedisCache,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = corrupt_cache
    data = PLANTED[kind]
    full_key = made.prefix + "user:1"
    if data is None:
        assert redis_server.cli("RPUSH", full_key, "a", "b") == "2"
    else:
        plant(redis_server, full_key, data)

    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert made.get("user:1", default="d") == "d"
        assert made.lookup("user:1") is MISSING
        assert made.get_many(["user:1"]) == {}
    assert any(
        "user:1" in r.getMessage() or "WRONGTYPE" in r.getMessage() for r in caplog.records
    ), caplog.text
    stats = made.get_stats()
    assert stats["errors"] >= 1 and stats["misses"] == 3, stats
    assert made.breaker_state == "closed"


@pytest.mark.parametrize("kind", list(PLANTED))
def test_planted_values_do_not_stall_loaders(
    redis_server: RedisServer, corrupt_cache: RedisCache, kind: str
) -> None:
    """A decorated function over a corrupt entry answers as fast as over a miss, and its value
    replaces the corrupt bytes.

    A loader that mistook the foreign bytes for another loader's lease would wait for the whole
    lock timeout (2.5 s here, 10 s by default) on every call.
    """
    made = corrupt_cache
    data = PLANTED[kind]
    full_key = made.prefix + "user:1"
    if data is None:
        assert redis_server.cli("RPUSH", full_key, "a") == "1"
    else:
        plant(redis_server, full_key, data)

    @cache(ttl=60, backend=made, key="user:{user_id}", lock_timeout=2.5)
    def load_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    started = time.monotonic()
    assert load_user(1) == {"id": 1}
    assert load_user(1) == {"id": 1}
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"2 calls over a {kind!r} entry took {elapsed:.1f} s"
    if data is not None:  # our bytes replaced the corrupt ones (a foreign type is left alone)
        assert made.get("user:1") == {"id": 1}

    plant(redis_server, made.prefix + "aside", data or b"\x00")
    started = time.monotonic()
    aside = CacheAside(made, ttl=60, lock_timeout=2.5)
    assert aside.get("aside", loader=lambda: "loaded") == "loaded"
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"CacheAside over a {kind!r} entry took {elapsed:.1f} s"


@pytest.mark.parametrize("kind", list(PLANTED))
def test_planted_values_under_the_demo_never_break_a_request(
    redis_server: RedisServer, tmp_path: Path, kind: str
) -> None:
    """The demo app (Flask test client, real Redis): a corrupt user entry is still a 200."""
    from demo.app import create_app

    prefix = f"demo-{uuid.uuid4().hex[:6]}:"
    app = create_app(
        {
            "FENNEC_CACHE_URL": redis_server.url,
            "FENNEC_CACHE_PREFIX": prefix,
            "DEMO_DB_DELAY": 0.0,
            "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
        }
    )
    client = app.test_client()
    data = PLANTED[kind]
    try:
        for user_id, path in ((1, "/users/1"), (2, "/users-aside/2")):
            key = f"{prefix}user:{user_id}"
            if data is None:
                redis_server.cli("RPUSH", key, "x")
            else:
                plant(redis_server, key, data)
            started = time.monotonic()
            response = client.get(path)
            elapsed = time.monotonic() - started
            assert response.status_code == 200, (path, response.data)
            assert response.get_json()["user"]["id"] == user_id
            assert elapsed < 2.0, f"GET {path} over a {kind!r} entry took {elapsed:.1f} s"
            assert client.get(path).status_code == 200
    finally:
        with app.app_context():
            app.extensions["fennec_cache"].close()
