"""The demo app (``demo/``) through Flask's test client, on the in-process ``memory://`` cache."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from demo import db
from demo.app import BENCHMARK_KEY, create_app, fennec, load_user

STATS_KEYS = {"hits", "misses", "sets", "deletes", "total_requests", "hit_rate", "errors"}
TOKEN = "s3cret-demo-token"

AppFactory = Callable[..., Flask]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``FLASK_*`` variable from the outer environment leaks into these apps."""
    import os

    for name in list(os.environ):
        if name.startswith("FLASK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    """Build a demo app with a private SQLite file, no DB delay and a unique cache prefix."""

    def make(**overrides: Any) -> Flask:
        config: dict[str, Any] = {
            "TESTING": True,
            "FENNEC_CACHE_URL": "memory://",
            "FENNEC_CACHE_PREFIX": f"demo-test-{uuid.uuid4().hex}:",
            "DEMO_DB_DELAY": 0.0,
            "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
        }
        config.update(overrides)
        return create_app(config)

    return make


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    """The demo with admin open (no token)."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client for ``app``."""
    with app.test_client() as test_client:
        yield test_client


def body(response: TestResponse) -> Any:
    """The JSON body; every answer of the demo, errors included, is JSON."""
    assert response.mimetype == "application/json", response.data
    return response.get_json()


def stats_eventually(client: FlaskClient, total: int, timeout: float = 3.0) -> dict[str, Any]:
    """``GET /cache/stats`` until ``total_requests`` reaches ``total`` (stats may be batched)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/cache/stats")
        assert response.status_code == 200
        stats: dict[str, Any] = body(response)
        if stats["total_requests"] >= total or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def post_user(client: FlaskClient, payload: Any) -> TestResponse:
    """``POST /users`` with ``payload`` as JSON (``None`` is sent as ``null``)."""
    return client.post("/users", data=json.dumps(payload), content_type="application/json")


# --- GET /users/<id> (@cache) --------------------------------------------------------------


def test_get_user_miss_then_hit(client: FlaskClient) -> None:
    first = client.get("/users/1")
    assert first.status_code == 200
    data = body(first)
    assert set(data) == {"user", "cached", "duration_ms"}
    assert data["user"] == {"id": 1, "name": "Alice", "email": "alice@example.com"}
    assert data["cached"] is False
    assert isinstance(data["duration_ms"], float)
    assert data["duration_ms"] == round(data["duration_ms"], 2)

    second = body(client.get("/users/1"))
    assert second["cached"] is True
    assert second["user"] == data["user"]


def test_seed_users(client: FlaskClient) -> None:
    for user in db.SEED_USERS:
        assert body(client.get(f"/users/{user['id']}"))["user"] == user


def test_unknown_user_is_404_and_not_cached(app: Flask, client: FlaskClient) -> None:
    for _ in range(2):
        response = client.get("/users/99")
        assert response.status_code == 404
        assert body(response) == {"error": "User 99 not found"}
    with app.app_context():
        assert fennec.backend.get("user:99") is None
        assert load_user.lookup(99).hit is False


def test_db_delay_is_what_a_miss_costs(make_app: AppFactory) -> None:
    with make_app(DEMO_DB_DELAY=0.05).test_client() as client:
        miss = body(client.get("/users/2"))
        hit = body(client.get("/users/2"))
    assert miss["cached"] is False and miss["duration_ms"] >= 50
    assert hit["cached"] is True and hit["duration_ms"] < 50


# --- GET /users-aside/<id> (CacheAside) ----------------------------------------------------


def test_users_aside_miss_then_hit(client: FlaskClient) -> None:
    first = body(client.get("/users-aside/2"))
    assert set(first) == {"user", "cached", "duration_ms"}
    assert first["user"] == {"id": 2, "name": "Bob", "email": "bob@example.com"}
    assert first["cached"] is False
    assert isinstance(first["duration_ms"], float)
    second = body(client.get("/users-aside/2"))
    assert second["cached"] is True
    assert second["user"] == first["user"]


def test_aside_and_decorator_share_the_key(client: FlaskClient) -> None:
    assert body(client.get("/users/3"))["cached"] is False
    assert body(client.get("/users-aside/3"))["cached"] is True
    assert body(client.get("/users-aside/1"))["cached"] is False
    assert body(client.get("/users/1"))["cached"] is True


def test_users_aside_unknown_user(app: Flask, client: FlaskClient) -> None:
    response = client.get("/users-aside/99")
    assert response.status_code == 404
    assert body(response) == {"error": "User 99 not found"}
    with app.app_context():
        assert fennec.backend.get("user:99") is None


# --- POST /users (WriteThrough) ------------------------------------------------------------


def test_write_through_then_get_from_cache(app: Flask, client: FlaskClient) -> None:
    david = {"id": 4, "name": "David", "email": "david@example.com"}
    response = post_user(client, david)
    assert response.status_code == 201
    assert body(response) == {"user": david, "message": "User created"}

    # Written to the database ...
    assert db.get_user(app.config["DEMO_DB_PATH"], 4) == david
    # ... and to the cache: both read paths see it as a hit.
    got = body(client.get("/users/4"))
    assert got == {"user": david, "cached": True, "duration_ms": got["duration_ms"]}
    assert body(client.get("/users-aside/4"))["cached"] is True


def test_write_through_updates_existing_user(app: Flask, client: FlaskClient) -> None:
    assert body(client.get("/users/1"))["cached"] is False
    new = {"id": 1, "name": "  Alicia  ", "email": "alicia@example.com"}
    response = post_user(client, new)
    assert response.status_code == 200
    stored = {"id": 1, "name": "Alicia", "email": "alicia@example.com"}
    assert body(response) == {"user": stored, "message": "User updated"}
    got = body(client.get("/users/1"))
    assert got["cached"] is True and got["user"] == stored
    assert db.get_user(app.config["DEMO_DB_PATH"], 1) == stored


def test_created_user_makes_a_404_a_200(client: FlaskClient) -> None:
    assert client.get("/users/50").status_code == 404
    assert (
        post_user(client, {"id": 50, "name": "Eve", "email": "eve@example.com"}).status_code == 201
    )
    assert body(client.get("/users/50"))["user"]["name"] == "Eve"


# --- GET /users-view/<id> (@fennec.cache on the whole view) -------------------------------


def test_users_view_is_cached_whole_with_etag_age_and_304(client: FlaskClient) -> None:
    miss = client.get("/users-view/2")
    assert miss.status_code == 200
    assert miss.headers["X-Cache"] == "MISS"
    data = body(miss)
    assert set(data) == {"user", "rendered_at"}
    assert data["user"] == {"id": 2, "name": "Bob", "email": "bob@example.com"}
    etag = miss.headers["ETag"]

    hit = client.get("/users-view/2")
    assert hit.status_code == 200
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.data == miss.data  # the stored response: the same rendered_at
    assert hit.headers["ETag"] == etag
    assert int(hit.headers["Age"]) >= 0

    not_modified = client.get("/users-view/2", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.data == b""


def test_users_view_of_an_unknown_user_is_a_404_not_cached(app: Flask, client: FlaskClient) -> None:
    for _ in range(2):
        response = client.get("/users-view/99")
        assert response.status_code == 404
        assert body(response) == {"error": "User 99 not found"}
    with app.app_context():
        assert fennec.backend.keys("view:*") == []


def test_post_users_drops_the_cached_user_views(client: FlaskClient) -> None:
    before = body(client.get("/users-view/3"))
    assert client.get("/users-view/3").headers["X-Cache"] == "HIT"
    renamed = {"id": 3, "name": "Charles", "email": "charles@example.com"}
    assert post_user(client, renamed).status_code == 200
    after = client.get("/users-view/3")
    assert after.headers["X-Cache"] == "MISS"
    assert body(after)["user"] == renamed != before["user"]


def test_a_failed_view_invalidation_is_retried_then_logged(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    calls: list[tuple[str, ...]] = []

    def unreachable(*tags: str) -> bool:
        calls.append(tags)
        return False

    with app.app_context():
        monkeypatch.setattr(fennec.backend, "invalidate_tags", unreachable)
    with caplog.at_level(logging.WARNING):
        response = post_user(client, {"id": 60, "name": "Finn", "email": "finn@example.com"})
    assert response.status_code == 201  # the write itself succeeded
    assert calls == [("user-views",), ("user-views",)]
    assert any("/users-view" in r.getMessage() for r in caplog.records), caplog.text


BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    ("array", [1, 2], "JSON object"),
    ("string", "hello", "JSON object"),
    ("null", None, "JSON object"),
    ("empty object", {}, "Missing"),
    ("missing email", {"id": 5, "name": "Eve"}, "email"),
    ("missing id", {"name": "Eve", "email": "e@x.io"}, "id"),
    ("id 0", {"id": 0, "name": "Eve", "email": "e@x.io"}, "id"),
    ("id -1", {"id": -1, "name": "Eve", "email": "e@x.io"}, "id"),
    ("id string", {"id": "1", "name": "Eve", "email": "e@x.io"}, "id"),
    ("id true", {"id": True, "name": "Eve", "email": "e@x.io"}, "id"),
    ("id float", {"id": 1.5, "name": "Eve", "email": "e@x.io"}, "id"),
    ("id too big", {"id": 2**63, "name": "Eve", "email": "e@x.io"}, "id"),
    ("name not string", {"id": 5, "name": 7, "email": "e@x.io"}, "name"),
    ("name blank", {"id": 5, "name": "   ", "email": "e@x.io"}, "name"),
    ("name too long", {"id": 5, "name": "x" * 101, "email": "e@x.io"}, "name"),
    ("email without @", {"id": 5, "name": "Eve", "email": "eve.example.com"}, "email"),
    ("email too short", {"id": 5, "name": "Eve", "email": "@"}, "email"),
    ("email too long", {"id": 5, "name": "Eve", "email": "e@" + "x" * 253}, "email"),
    ("email not string", {"id": 5, "name": "Eve", "email": None}, "email"),
    ("extra field", {"id": 5, "name": "Eve", "email": "e@x.io", "admin": True}, "admin"),
]


@pytest.mark.parametrize(
    ("payload", "mentions"),
    [(p, m) for _, p, m in BAD_PAYLOADS],
    ids=[name for name, _, _ in BAD_PAYLOADS],
)
def test_post_user_rejects_bad_payload(
    app: Flask, client: FlaskClient, payload: Any, mentions: str
) -> None:
    response = post_user(client, payload)
    assert response.status_code == 400
    data = body(response)
    assert set(data) == {"error"}
    assert mentions in data["error"]
    # Nothing was written anywhere.
    with app.app_context():
        assert fennec.backend.get("user:5") is None
    assert db.get_user(app.config["DEMO_DB_PATH"], 5) is None


def test_post_user_boundaries_accepted(client: FlaskClient) -> None:
    response = post_user(client, {"id": 2**63 - 1, "name": "x" * 100, "email": "a@b"})
    assert response.status_code == 201


def test_post_user_invalid_json(client: FlaskClient) -> None:
    response = client.post("/users", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in body(response)["error"]


def test_post_user_invalid_utf8(client: FlaskClient) -> None:
    response = client.post("/users", data=b'{"name": "\xff"}', content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in body(response)["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_post_user_wrong_content_type(client: FlaskClient, content_type: str | None) -> None:
    payload = json.dumps({"id": 5, "name": "Eve", "email": "e@x.io"})
    response = client.post("/users", data=payload, content_type=content_type)
    assert response.status_code == 400
    assert "Content-Type" in body(response)["error"]


def test_post_user_huge_body(client: FlaskClient) -> None:
    payload = {"id": 5, "name": "x" * (20 * 1024), "email": "e@x.io"}
    response = post_user(client, payload)
    assert response.status_code == 413
    assert set(body(response)) == {"error"}


# --- JSON errors ---------------------------------------------------------------------------


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert set(body(response)) == {"error"}


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.get("/users")
    assert response.status_code == 405
    assert set(body(response)) == {"error"}
    assert "POST" in response.headers["Allow"]


def test_unhandled_exception_is_json_500(make_app: AppFactory) -> None:
    app = make_app(TESTING=False)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert body(response) == {"error": "Internal server error"}


# --- /benchmark ----------------------------------------------------------------------------


def test_benchmark_shape(make_app: AppFactory) -> None:
    app = make_app(DEMO_DB_DELAY=0.02)
    with app.test_client() as client:
        assert body(client.get("/users/1"))["cached"] is False
        data = body(client.get("/benchmark"))
        assert set(data) == {"uncached_ms", "cache_miss_ms", "cache_hit_ms", "speedup"}
        for name, value in data.items():
            assert isinstance(value, float), name
            assert value == round(value, 2), name
        assert data["uncached_ms"] >= 20 and data["cache_miss_ms"] >= 20
        assert data["cache_hit_ms"] < 20
        assert data["speedup"] > 1
        assert data["speedup"] == round(data["uncached_ms"] / max(data["cache_hit_ms"], 0.01), 2)
        # A second run measures a real miss again (the key is deleted first) ...
        assert body(client.get("/benchmark"))["cache_miss_ms"] >= 20
        # ... and user entries are left alone.
        assert body(client.get("/users/1"))["cached"] is True
    with app.app_context():
        assert fennec.backend.get(BENCHMARK_KEY) is not None


# --- admin: /cache/stats, /cache/health, /cache/clear -------------------------------------


def test_stats_shape_and_counts(client: FlaskClient) -> None:
    client.get("/users/1")
    client.get("/users/1")
    client.get("/users-aside/2")
    stats = stats_eventually(client, total=3)
    assert STATS_KEYS <= set(stats)
    assert stats["total_requests"] == 3
    assert stats["hits"] == 1 and stats["misses"] == 2
    assert stats["total_requests"] == stats["hits"] + stats["misses"]
    assert stats["sets"] >= 2
    assert stats["hit_rate"] == round(100 / 3, 2)


def test_health(client: FlaskClient) -> None:
    response = client.get("/cache/health")
    assert response.status_code == 200
    data = body(response)
    assert data["status"] == "healthy"
    assert data["backend"] == "redis"
    assert "latency_ms" in data


def test_clear_open_without_token(client: FlaskClient) -> None:
    client.get("/users/1")
    client.get("/users/2")
    response = client.post("/cache/clear", json={})
    assert response.status_code == 200
    assert body(response) == {"message": "Cache cleared", "keys_deleted": 2}
    assert body(client.get("/users/1"))["cached"] is False


def test_clear_with_pattern(client: FlaskClient) -> None:
    client.get("/users/1")
    client.get("/benchmark")
    response = client.post("/cache/clear", json={"pattern": "user:*"})
    assert body(response) == {"message": "Cache cleared", "keys_deleted": 1}
    assert body(client.get("/users/1"))["cached"] is False


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["no token", "wrong token", "no Bearer scheme"],
)
def test_clear_needs_token_when_configured(make_app: AppFactory, headers: dict[str, str]) -> None:
    with make_app(FENNEC_CACHE_ADMIN_TOKEN=TOKEN).test_client() as client:
        client.get("/users/1")
        response = client.post("/cache/clear", headers=headers)
        assert response.status_code in (401, 403)
        assert "error" in body(response)
        assert body(client.get("/users/1"))["cached"] is True


def test_clear_with_right_token(make_app: AppFactory) -> None:
    with make_app(FENNEC_CACHE_ADMIN_TOKEN=TOKEN).test_client() as client:
        client.get("/users/1")
        response = client.post("/cache/clear", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        assert body(response) == {"message": "Cache cleared", "keys_deleted": 1}
        # Reading stays open.
        assert client.get("/cache/stats").status_code == 200
        assert client.get("/cache/health").status_code == 200


# --- configuration -------------------------------------------------------------------------


def test_config_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "env" / "users.sqlite3"
    monkeypatch.setenv("FLASK_FENNEC_CACHE_URL", "memory://")
    monkeypatch.setenv("FLASK_FENNEC_CACHE_PREFIX", f"env-{uuid.uuid4().hex}:")
    monkeypatch.setenv("FLASK_FENNEC_CACHE_ADMIN_TOKEN", "1234567890123456")  # JSON-like: a str
    monkeypatch.setenv("FLASK_DEMO_DB_DELAY", "0")
    monkeypatch.setenv("FLASK_DEMO_DB_PATH", str(db_path))
    with caplog.at_level(logging.WARNING):
        app = create_app()
    assert app.config["FENNEC_CACHE_ADMIN_TOKEN"] == "1234567890123456"
    assert app.config["FENNEC_CACHE_ADMIN_OPEN"] is False
    assert app.config["DEMO_DB_DELAY"] == 0.0
    assert db_path.exists()
    assert not any("open to anyone" in r.getMessage() for r in caplog.records)
    assert not any("memory://" in r.getMessage() for r in caplog.records)
    client = app.test_client()
    assert client.post("/cache/clear").status_code in (401, 403)
    headers = {"Authorization": "Bearer 1234567890123456"}
    assert client.post("/cache/clear", headers=headers).status_code == 200


def test_test_config_overrides_environment(
    monkeypatch: pytest.MonkeyPatch, make_app: AppFactory
) -> None:
    monkeypatch.setenv("FLASK_DEMO_DB_DELAY", "5")
    assert make_app(DEMO_DB_DELAY=0.0).config["DEMO_DB_DELAY"] == 0.0


def test_defaults_warn_memory_and_open_admin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app({"DEMO_DB_PATH": str(tmp_path / "d.sqlite3")})
    assert app.config["FENNEC_CACHE_URL"] == "memory://"
    assert app.config["DEMO_DB_DELAY"] == 1.0
    assert app.config["FENNEC_CACHE_ADMIN_OPEN"] is True
    assert app.config["MAX_CONTENT_LENGTH"] == 16 * 1024
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("memory://" in m and "per process" in m for m in messages) == 1
    assert sum("open to anyone" in m for m in messages) == 1


@pytest.mark.parametrize("delay", [-1, float("nan")])
def test_bad_delay_rejected(make_app: AppFactory, delay: float) -> None:
    with pytest.raises(ValueError, match="DEMO_DB_DELAY"):
        make_app(DEMO_DB_DELAY=delay)


# --- demo.db -------------------------------------------------------------------------------


def test_db_init_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.sqlite3"
    db.init_db(path)
    assert db.save_user(path, {"id": 1, "name": "Changed", "email": "c@x.io"}) is False
    db.init_db(path)  # does not overwrite or duplicate
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (3,)
    conn.close()
    assert db.get_user(path, 1) == {"id": 1, "name": "Changed", "email": "c@x.io"}
    assert db.get_user(path, 2) == db.SEED_USERS[1]
    assert db.get_user(path, 99) is None


def test_db_save_reports_created(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite3"
    db.init_db(path)
    user: db.User = {"id": 7, "name": "Grace", "email": "grace@example.com"}
    assert db.save_user(path, user) is True
    assert db.save_user(path, {**user, "name": "Grace H."}) is False
    assert db.get_user(path, 7) == {**user, "name": "Grace H."}


def test_db_delay(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite3"
    db.init_db(path)
    start = time.perf_counter()
    db.get_user(path, 1, delay=0.05)
    assert time.perf_counter() - start >= 0.05


def test_python_m_demo_uses_a_local_redis_only_when_one_answers(
    monkeypatch: pytest.MonkeyPatch, redis_server: Any
) -> None:
    """``python -m demo`` probes localhost:6379; here the probe is pointed at test servers."""
    from _servers import find_free_port

    import demo.__main__ as entry

    monkeypatch.setattr(entry, "LOCAL_REDIS", redis_server.url)
    assert entry._local_redis_answers()
    monkeypatch.setattr(entry, "LOCAL_REDIS", f"redis://127.0.0.1:{find_free_port()}/0")
    assert not entry._local_redis_answers()  # then create_app() falls back to memory://


class RecordedRun:
    """Stands in for the app ``python -m demo`` builds: records how it was asked to run."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    def run(self, **options: Any) -> None:
        self.options = options


@pytest.fixture
def demo_main(monkeypatch: pytest.MonkeyPatch) -> RecordedRun:
    import demo.__main__ as entry

    recorded = RecordedRun()
    monkeypatch.setattr(entry, "create_app", lambda: recorded)
    monkeypatch.setattr(entry, "_local_redis_answers", lambda: False)
    return recorded


def test_python_m_demo_takes_a_port(
    monkeypatch: pytest.MonkeyPatch, demo_main: RecordedRun
) -> None:
    import demo.__main__ as entry

    entry.main([])
    assert demo_main.options == {"host": "127.0.0.1", "port": 8000}
    entry.main(["--port", "8001"])
    assert demo_main.options == {"host": "127.0.0.1", "port": 8001}
    monkeypatch.setenv("PORT", "8002")
    entry.main([])
    assert demo_main.options["port"] == 8002
    entry.main(["--port", "8003", "--host", "0.0.0.0"])  # the option wins over PORT
    assert demo_main.options == {"host": "0.0.0.0", "port": 8003}


@pytest.mark.parametrize(
    ("argv", "port_env", "message"),
    [
        (["--port", "http"], None, "'http' is not a port number"),
        (["--port", "70000"], None, "70000 is not a port number"),
        ([], "eighty", "PORT environment variable: 'eighty' is not a port number"),
    ],
)
def test_python_m_demo_refuses_a_bad_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    demo_main: RecordedRun, argv: list[str], port_env: str | None, message: str,
) -> None:  # fmt: skip
    import demo.__main__ as entry

    if port_env is not None:
        monkeypatch.setenv("PORT", port_env)
    with pytest.raises(SystemExit) as exited:
        entry.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert demo_main.options == {}


def test_the_near_cache_is_turned_on_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: Any
) -> None:
    monkeypatch.setenv("FLASK_FENNEC_CACHE_URL", redis_server.url)
    monkeypatch.setenv("FLASK_FENNEC_CACHE_PREFIX", f"near-{uuid.uuid4().hex}:")
    monkeypatch.setenv("FLASK_FENNEC_CACHE_NEAR_CACHE", "true")
    monkeypatch.setenv("FLASK_DEMO_DB_DELAY", "0")
    monkeypatch.setenv("FLASK_DEMO_DB_PATH", str(tmp_path / "near.sqlite3"))
    app = create_app()
    assert app.config["FENNEC_CACHE_NEAR_CACHE"] is True
    with app.app_context():
        backend = fennec.backend
    try:
        with app.test_client() as client:
            assert body(client.get("/users/1"))["cached"] is False
            assert body(client.get("/users/1"))["cached"] is True
        state = backend.near_cache_state()
        assert state is not None and state["connected"] is True
        assert body(app.test_client().get("/cache/health"))["near_cache"]["entries"] >= 1
    finally:
        backend.close()
