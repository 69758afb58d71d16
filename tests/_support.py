"""Helpers shared by the core test modules (the fixtures live in conftest.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from flask import Flask

from flask_fennec_cache import RedisCache


class CacheFactory(Protocol):
    """Type of the ``cache_factory`` fixture: caches on one server, fake or real."""

    kind: str
    url: str

    def __call__(self, prefix: str | None = None, **options: Any) -> RedisCache: ...


#: The socket timeout of the caches the test factories build, unless a test gives its own. The
#: library's default (0.25 s) is a production setting: on a loaded 2-core machine one stall of
#: the server process that long times a command out, and a test expecting every write to land
#: fails. Tests about timeouts give theirs explicitly (or build their RedisCache directly).
TEST_SOCKET_TIMEOUT = 2.0


class Factory:
    """Builds RedisCache objects on one URL and closes them all at teardown (with
    :data:`TEST_SOCKET_TIMEOUT` unless *options* name a ``socket_timeout``)."""

    def __init__(self, kind: str, url: str, prefix: str) -> None:
        self.kind = kind
        self.url = url
        self.default_prefix = prefix
        self.made: list[RedisCache] = []

    def __call__(self, prefix: str | None = None, **options: Any) -> RedisCache:
        options.setdefault("socket_timeout", TEST_SOCKET_TIMEOUT)
        made = RedisCache(self.url, prefix=prefix or self.default_prefix, **options)
        self.made.append(made)
        return made

    def close_all(self) -> None:
        for made in self.made:
            made.close()


class CallCounter:
    """Counts the round trips of one :class:`RedisCache`: plain commands and pipeline executes.

    :meth:`install` wraps, in place, the cache's client (``execute_command`` and ``pipeline``)
    and its direct ``GET`` (the hit path that skips the client's command layers), so everything
    the cache sends is seen.
    """

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.pipelines = 0

    @property
    def round_trips(self) -> int:
        return len(self.commands) + self.pipelines

    def install(self, cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> CallCounter:
        client = cache.client
        execute: Any = client.execute_command
        make_pipeline = client.pipeline
        direct_get = cache.reader.get

        def counting_execute(*args: Any, **kwargs: Any) -> Any:
            # The statistics' flushing thread works off the request path (it flushes the
            # counts and reads the cache's generation): not a round trip of an operation.
            if threading.current_thread().name != "fennec-cache-stats":
                self.commands.append(str(args[0]))
            return execute(*args, **kwargs)

        def counting_get(name: str) -> Any:
            if direct_get == client.get:  # the client's own get: counted by execute_command
                return client.get(name)
            self.commands.append("GET")
            return direct_get(name)

        def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            run = pipe.execute

            def counting_run(*a: Any, **kw: Any) -> Any:
                self.pipelines += 1
                return run(*a, **kw)

            setattr(pipe, "execute", counting_run)  # noqa: B010 (an instance attribute, on purpose)
            return pipe

        monkeypatch.setattr(client, "execute_command", counting_execute)
        monkeypatch.setattr(client, "pipeline", counting_pipeline)
        monkeypatch.setattr(cache.reader, "get", counting_get)
        return self


def wait_for(condition: Callable[[], object], timeout: float = 3.0, step: float = 0.01) -> bool:
    """Poll *condition* until it is truthy or *timeout* passes; True if it became truthy.

    The timeout is a deadline for slow machines, never a pass condition on speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


AppFactory = Callable[..., "Flask"]


def backend_of(app: Flask) -> RedisCache:
    """The backend FennecCache built for *app*."""
    backend = app.extensions["fennec_cache"]
    assert isinstance(backend, RedisCache)
    return backend


HANG = 30.0  # seconds: a deadline that only catches a hang, never a speed requirement


class Counter:
    """A thread-safe call counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def bump(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Start *count* threads on *target(i)* behind a barrier; return their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
        assert not thread.is_alive(), "a caller never returned"
    if errors:
        raise errors[0]
    return results


def new_app(memory_url: str, **config: Any) -> Flask:
    """A Flask app on a private memory:// server with a unique prefix (FennecCache not yet
    initialised; *config* overrides the defaults)."""
    app = Flask(f"app_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_PREFIX=f"app-{uuid.uuid4().hex[:8]}:",
    )
    app.config.update(config)
    return app


def settled(cache: RedisCache) -> RedisCache:
    """*cache*, once its statistics thread has started and finished its first round (which
    reads the generation at once). Built with a long ``stats_flush_interval``, it then sends
    nothing of its own: for tests that count the server's commands."""
    cache.counters.add("sets", 0)  # starts the thread, counting nothing
    assert wait_for(lambda: cache.counters.rounds >= 1, timeout=HANG), "no statistics round"
    return cache
