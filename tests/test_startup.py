"""What init_app says at startup: a dead or wrong Redis, and memory:// under several workers."""

from __future__ import annotations

import logging
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import RedisServer, RedisServerFactory, find_free_port
from _support import new_app, wait_for
from flask import Flask

from flask_fennec_cache import FennecCache
from flask_fennec_cache import _startup as startup
from flask_fennec_cache.config import read_settings

LOGGER = "flask_fennec_cache"
QUIET = 3600.0  # seconds between stats flushes: none during a test


@pytest.fixture
def apps(memory_url: str) -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        backend = app.extensions.get("fennec_cache")
        if backend is not None:
            backend.close()


def start(apps: list[Flask], memory_url: str, url: str, **config: Any) -> Flask:
    """An app with FennecCache on *url*, with a cached view at /users/<id>."""
    app = new_app(
        memory_url, FENNEC_CACHE_URL=url, FENNEC_CACHE_STATS_FLUSH_INTERVAL=QUIET, **config
    )
    apps.append(app)
    fennec = FennecCache(app)

    @app.get("/users/<int:user_id>")
    @fennec.cache(ttl=60)
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    return app


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno >= logging.WARNING
    ]


def connections_received(client: Any) -> int:
    return int(client.info("stats")["total_connections_received"])


# ==================================================================================
# The probe
# ==================================================================================


def test_a_dead_port_is_one_warning_with_the_redacted_url_and_the_app_serves(
    apps: list[Flask], memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = find_free_port()
    app = start(apps, memory_url, f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    (warning,) = warnings_of(caplog)
    assert f"redis://***@127.0.0.1:{port}/0" in warning and "s3cret" not in warning
    assert "does not answer at startup" in warning and "Connection refused" in warning
    assert "fail-open" in warning
    reply = app.test_client().get("/users/3")
    assert reply.status_code == 200 and reply.get_json() == {"id": 3}


def test_fail_closed_says_what_cache_calls_will_do(
    apps: list[Flask], memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    start(apps, memory_url, f"redis://127.0.0.1:{find_free_port()}/0", FENNEC_CACHE_FAIL_OPEN=False)
    (warning,) = warnings_of(caplog)
    assert "raise CacheUnavailable" in warning


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        (":wrong-password@", "AuthenticationError"),
        ("", "AuthenticationError"),  # no password where one is required
    ],
)
def test_a_wrong_password_is_named(
    redis_server_factory: RedisServerFactory, apps: list[Flask], memory_url: str,
    caplog: pytest.LogCaptureFixture, credentials: str, reason: str,
) -> None:  # fmt: skip
    server = redis_server_factory(["--requirepass", "the-right-password"])
    start(apps, memory_url, f"redis://{credentials}127.0.0.1:{server.port}/0")
    (warning,) = warnings_of(caplog)
    assert reason in warning and "wrong-password" not in warning


def test_a_wrong_database_index_is_named(
    redis_server: RedisServer, apps: list[Flask], memory_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    start(apps, memory_url, f"redis://127.0.0.1:{redis_server.port}/99")
    (warning,) = warnings_of(caplog)
    assert "DB index is out of range" in warning and "/99" in warning


def test_a_healthy_redis_gets_no_warning_and_no_connection_is_left_open(
    redis_server_factory: RedisServerFactory, apps: list[Flask], memory_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = redis_server_factory()
    observer = server.client()
    before = connections_received(observer)
    app = start(apps, memory_url, server.url)
    assert warnings_of(caplog) == []
    assert connections_received(observer) == before + 1  # the probe's
    # Only the observer is connected: the probe closed its connection, the backend has none
    # (nothing for forked workers to inherit).
    assert observer.info("clients")["connected_clients"] == 1
    assert app.extensions["fennec_cache"].client.connection_pool._created_connections == 0
    assert app.test_client().get("/users/1").status_code == 200


def test_the_probe_can_be_turned_off(
    redis_server_factory: RedisServerFactory, apps: list[Flask], memory_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = redis_server_factory()
    observer = server.client()
    before = connections_received(observer)
    start(apps, memory_url, server.url, FENNEC_CACHE_STARTUP_CHECK="off")
    assert connections_received(observer) == before
    start(apps, memory_url, f"redis://127.0.0.1:{find_free_port()}/0",
          FENNEC_CACHE_STARTUP_CHECK=False)  # fmt: skip
    assert warnings_of(caplog) == []


def test_the_probe_gives_up_after_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup or server that never answers does not hold up startup past the bound."""
    release = threading.Event()
    closed = threading.Event()

    class Hanging:
        def ping(self) -> bool:
            release.wait(30.0)  # a deadline against a hang of the test itself
            return True

        def close(self) -> None:
            closed.set()

    monkeypatch.setattr(startup, "make_client", lambda *args, **kwargs: Hanging())
    settings = read_settings({
        "FENNEC_CACHE_URL": "redis://cache.example:6379/0",
        "FENNEC_CACHE_CONNECT_TIMEOUT": 0.01, "FENNEC_CACHE_SOCKET_TIMEOUT": 0.01,
    })  # fmt: skip
    try:
        assert startup.probe(settings) == (
            "no answer within 0.04 s (a slow name lookup, or a server that hangs)"
        )
    finally:
        release.set()
    assert closed.wait(30.0)  # the probe's own client is closed once it returns


# ==================================================================================
# memory:// under a forking server
# ==================================================================================


def as_gunicorn_part(owner: object, app: Flask) -> None:
    """Run init_app as code that gunicorn's *owner* (its arbiter or a worker) is running."""
    self = owner  # noqa: F841 (found on the stack, as in gunicorn's own frames)
    FennecCache(app)


@pytest.fixture
def gunicorn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/27.0.1")


def arbiter(workers: int) -> object:
    arbiter_module = pytest.importorskip("gunicorn.arbiter")
    made: Any = arbiter_module.Arbiter.__new__(arbiter_module.Arbiter)
    made._num_workers = workers
    return made


def worker(workers: int) -> object:
    base = pytest.importorskip("gunicorn.workers.base")
    made: Any = base.Worker.__new__(base.Worker)
    made.cfg = types.SimpleNamespace(workers=workers)
    return made


@pytest.mark.usefixtures("gunicorn_env")
@pytest.mark.parametrize("owner", [arbiter, worker], ids=["preloaded", "in-a-worker"])
def test_memory_under_several_gunicorn_workers_says_each_has_its_own_cache(
    owner: Any, memory_url: str, apps: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(memory_url)
    apps.append(app)
    as_gunicorn_part(owner(3), app)
    (warning,) = warnings_of(caplog)
    assert "memory://" in warning and "runs 3 worker processes" in warning
    assert "each worker has its own cache" in warning
    assert app.extensions["fennec_cache"].get_stats()["shared"] is False


@pytest.mark.usefixtures("gunicorn_env")
def test_memory_under_one_gunicorn_worker_is_quiet(
    memory_url: str, apps: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(memory_url)
    apps.append(app)
    as_gunicorn_part(arbiter(1), app)
    assert warnings_of(caplog) == []


@pytest.mark.usefixtures("gunicorn_env")
def test_memory_under_gunicorn_with_an_unknown_worker_count_still_warns(
    memory_url: str, apps: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(memory_url)
    apps.append(app)
    FennecCache(app)  # no gunicorn object on the stack: the count cannot be found
    (warning,) = warnings_of(caplog)
    assert "runs several worker processes: each worker has its own cache" in warning


def test_worker_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    assert startup.worker_processes() == 1  # not under a forking server
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/27.0.1")
    assert startup.worker_processes() is None  # gunicorn, count not found: warn anyway
    monkeypatch.setitem(sys.modules, "uwsgi", types.SimpleNamespace(numproc=4))
    assert startup.worker_processes() == 4


def test_memory_outside_a_forking_server_is_quiet_and_not_shared(
    memory_url: str, apps: list[Flask], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    app = new_app(memory_url)
    apps.append(app)
    FennecCache(app)
    assert warnings_of(caplog) == []
    backend = app.extensions["fennec_cache"]
    backend.get("absent")
    stats = backend.get_stats()
    assert stats["shared"] is False and stats["misses"] == 1


@pytest.mark.e2e
@pytest.mark.parametrize("preload", [False, True], ids=["workers", "preload"])
def test_the_demo_on_memory_under_gunicorn_warns(tmp_path: Path, preload: bool) -> None:
    pytest.importorskip("gunicorn")
    from _gunicorn import running_demo

    def warned(log: str) -> list[str]:
        return [line for line in log.splitlines() if "each worker has its own cache" in line]

    env = {"FENNEC_DEMO_PRELOAD": "1"} if preload else {}
    expected = 1 if preload else 2  # the arbiter once, before forking; or each worker
    with running_demo("memory://", tmp_path, workers=2, env=env) as demo:
        stats = demo.get("/cache/stats")
        # Deadlines against a hang, not speed tests: wait until both workers serve.
        assert wait_for(lambda: len(warned(demo.log())) >= expected, timeout=10.0, step=0.05)
        assert wait_for(
            lambda: (
                demo.get("/cache/stats").status == 200 and len(demo.access_pids("/cache/")) >= 2
            ),
            timeout=10.0,
            step=0.01,
        ), demo.log()
        lines = warned(demo.log())
    assert stats.status == 200 and stats.json["shared"] is False
    assert len(lines) == expected, demo.log()
    assert "runs 2 worker processes" in lines[0]
