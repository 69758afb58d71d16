"""Background refresh: with ``stale_ttl`` (or ``beta``) no caller waits for a refresh; functions
refresh on the process's bounded pool, views once their response has been sent."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from _support import HANG, CacheFactory, wait_for
from flask import Flask, request, session

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    ConfigurationError,
    FennecCache,
    RedisCache,
    cache,
)
from flask_fennec_cache._flight import REFRESH_POOL, RefreshPool
from flask_fennec_cache.serializers import CachedResponse, Envelope, decode


class Gate:
    """A loader that counts its calls and returns only once it is opened."""

    def __init__(self, value: Any = "new", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        assert self.opened.wait(HANG)
        if self.error is not None:
            raise self.error
        return self.value


def raw(backend: RedisCache, key: str) -> Any:
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def stale(backend: RedisCache, key: str) -> bool:
    return backend.lookup(key) is MISSING and raw(backend, key) is not MISSING


def in_thread(call: Any) -> list[Any]:
    """Run *call* on a thread; its result once it returned within the deadline."""
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(call()))
    thread.start()
    thread.join(HANG)
    return got


def test_no_caller_waits_for_a_function_s_refresh(backend: RedisCache) -> None:
    gate = Gate({"rows": 2})

    @cache(ttl=0.2, backend=backend, stale_ttl=300)
    def report(n: int) -> Any:
        return gate(n)

    gate.opened.set()
    assert report(1) == {"rows": 2}
    gate.opened.clear()
    gate.value = {"rows": 3}
    assert wait_for(lambda: stale(backend, report.cache_key(1)), timeout=HANG)
    # The refresh cannot finish until the gate opens: had this caller waited for it, it
    # would not have returned.
    assert in_thread(lambda: report.lookup(1)) == [({"rows": 2}, True, report.cache_key(1))]
    assert wait_for(lambda: gate.calls == 2, timeout=HANG)  # running on the pool
    assert in_thread(lambda: report(1)) == [{"rows": 2}]  # still stale, no second load
    gate.opened.set()
    assert wait_for(lambda: backend.get(report.cache_key(1)) == {"rows": 3}, timeout=HANG)
    assert gate.calls == 2


@pytest.mark.real
def test_one_background_load_per_key_across_processes(real_caches: CacheFactory) -> None:
    here, there = real_caches(), real_caches()
    gate = Gate("new")
    asides = [CacheAside(here, ttl=0.2, stale_ttl=300), CacheAside(there, ttl=0.2, stale_ttl=300)]
    assert asides[0].get("k", lambda: "old") == "old"
    assert wait_for(lambda: stale(here, "k"), timeout=HANG)
    for _ in range(3):
        for aside in asides:
            assert in_thread(lambda a=aside: a.get("k", gate)) == ["old"]
    assert wait_for(lambda: gate.calls == 1, timeout=HANG)
    gate.opened.set()
    assert wait_for(lambda: there.get("k") == "new", timeout=HANG)
    assert gate.calls == 1


def test_a_failed_background_refresh_is_counted_logged_and_keeps_the_stale_value(
    backend: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"k-{uuid.uuid4().hex}"  # the log says each key once per 10 s
    aside = CacheAside(backend, ttl=0.2, stale_ttl=300)
    assert aside.get(key, lambda: "old") == "old"
    assert wait_for(lambda: stale(backend, key), timeout=HANG)
    failing = Gate(error=OSError("the database went away"))
    failing.opened.set()
    backend.reset_stats()
    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        assert aside.get(key, failing) == "old"
        assert wait_for(lambda: "the database went away" in caplog.text, timeout=HANG)
    assert key in caplog.text
    assert wait_for(lambda: backend.get_stats()["errors"] >= 1, timeout=HANG)
    entry = raw(backend, key)
    assert isinstance(entry, Envelope) and entry.value == "old"  # kept

    def read_again() -> bool:  # the next reader's refresh (in the background) succeeds
        aside.get(key, lambda: "new")
        return bool(backend.get(key) == "new")

    assert wait_for(read_again, timeout=HANG)


def test_the_pool_is_bounded_and_drains(memory_url: str) -> None:
    pool = RefreshPool(1)
    gate, busy = threading.Event(), threading.Event()
    ran: list[int] = []

    def block() -> None:
        busy.set()
        gate.wait(HANG)

    assert pool.submit(block)
    assert busy.wait(HANG)  # the one thread is busy: what follows can only queue
    accepted = [pool.submit(functools.partial(ran.append, n)) for n in range(100)]
    assert accepted.count(True) == 64 and accepted[-1] is False  # 64 queued per thread
    gate.set()
    pool.drain(HANG)
    assert ran == list(range(64))
    with pytest.raises(ConfigurationError, match="FENNEC_CACHE_REFRESH_WORKERS"):
        RefreshPool(0)


def test_a_failing_task_costs_the_pool_no_thread(caplog: pytest.LogCaptureFixture) -> None:
    pool = RefreshPool(1)
    ran = threading.Event()

    def fail() -> None:
        raise TypeError("a torn-down connection")

    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        assert pool.submit(fail)
        assert pool.submit(ran.set)
        assert ran.wait(HANG), "the pool's only thread died with the failing task"
    pool.drain(HANG)
    assert "TypeError: a torn-down connection" in caplog.text


def test_the_pool_size_is_configured_by_the_app(make_app: Any) -> None:
    try:
        make_app(FENNEC_CACHE_REFRESH_WORKERS=3)
        assert REFRESH_POOL.size == 3
        with pytest.raises(ConfigurationError, match="FENNEC_CACHE_REFRESH_WORKERS"):
            make_app(FENNEC_CACHE_REFRESH_WORKERS="many")
    finally:
        REFRESH_POOL.resize(2)


def test_queued_refreshes_run_at_exit(tmp_path: Path) -> None:
    done = tmp_path / "refreshed"
    script = (
        "import time\n"
        "from flask_fennec_cache._flight import REFRESH_POOL\n"
        "def slow():\n"
        "    time.sleep(0.2)\n"
        f"    open({str(done)!r}, 'w').close()\n"
        "REFRESH_POOL.submit(slow)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=HANG)
    assert done.exists()


def test_a_forked_child_refreshes_on_its_own_threads() -> None:
    assert REFRESH_POOL.submit(lambda: None)  # the parent's threads exist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: the parent's threads are gone, new ones start
        ran = threading.Event()
        code = 0 if REFRESH_POOL.submit(ran.set) and ran.wait(10) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- views -------------------------------------------------------------------------------------


@pytest.fixture
def view_app(cache_factory: CacheFactory) -> Iterator[Flask]:
    app = Flask(f"refresh_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        SECRET_KEY="a test secret of some length",
        FENNEC_CACHE_URL=cache_factory.url,
        FENNEC_CACHE_PREFIX=f"rf-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)
    yield app
    app.extensions["fennec_cache"].close()


def stored_body(backend: RedisCache) -> bytes:
    names = [n.decode() for n in backend.client.scan_iter(match=backend.prefix + "*")]
    [name] = [n for n in names if "__fennec__:" not in n]
    entry = raw(backend, name[len(backend.prefix) :])
    assert isinstance(entry, Envelope) and isinstance(entry.value, CachedResponse)
    return entry.value.body


def test_a_view_is_refreshed_after_its_response_is_sent(view_app: Flask) -> None:
    backend: RedisCache = view_app.extensions["fennec_cache"]
    renders: list[str] = []

    @view_app.get("/greeting")
    @cache(ttl=0.2, stale_ttl=300)
    def greeting() -> str:
        # A shared page that (wrongly) reads a cookie: the refresh must not see the one of
        # the request that found it stale.
        renders.append(request.cookies.get("user", "anonymous"))
        return f"hello {renders[-1]} #{len(renders)}"

    client = view_app.test_client()
    client.get("/greeting").close()
    assert wait_for(lambda: stored_body(backend) == b"hello anonymous #1", timeout=HANG)
    names = [n.decode() for n in backend.client.scan_iter(match=backend.prefix + "*")]
    [key] = [n[len(backend.prefix) :] for n in names if "__fennec__:" not in n]
    assert wait_for(lambda: stale(backend, key), timeout=HANG)

    client.set_cookie("user", "alice")
    response = client.get("/greeting")
    assert (response.text, response.headers["X-Cache"]) == ("hello anonymous #1", "HIT")
    assert renders == ["anonymous"]  # nothing rendered before the response was sent
    response.close()  # the server has sent it
    assert renders == ["anonymous", "anonymous"]  # re-rendered without alice's cookie
    assert stored_body(backend) == b"hello anonymous #2"


def test_a_view_that_varies_on_the_cookie_is_refreshed_in_its_own_request(
    view_app: Flask,
) -> None:
    renders: list[str] = []

    @view_app.post("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        return "ok"

    @view_app.get("/me")
    @cache(ttl=0.2, stale_ttl=300)
    def me() -> str:
        renders.append(session.get("user", "nobody"))
        return f"me: {renders[-1]} #{len(renders)}"

    backend: RedisCache = view_app.extensions["fennec_cache"]
    client = view_app.test_client()
    client.post("/login/bob")
    assert client.get("/me").text == "me: bob #1"
    names = [n.decode() for n in backend.client.scan_iter(match=backend.prefix + "*")]
    keys = [n[len(backend.prefix) :] for n in names if "__fennec__:" not in n]
    assert wait_for(
        lambda: all(stale(backend, k) or raw(backend, k) is MISSING for k in keys), timeout=HANG
    )
    response = client.get("/me")
    assert response.text == "me: bob #2"  # refreshed by bob's own request, for bob
    response.close()
    assert renders == ["bob", "bob"]
