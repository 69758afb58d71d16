"""Fail-closed pages: FENNEC_CACHE_UNAVAILABLE_HANDLER and handle_cache_unavailable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import RedisServer, RedisServerFactory, find_free_port
from _support import AppFactory, backend_of
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient

from flask_fennec_cache import CacheUnavailable, WriteThrough, cache, handle_cache_unavailable
from flask_fennec_cache import unavailable as unavailable_module
from flask_fennec_cache._ratelog import RateLimitedLog

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log of its own per test (the module's is shared); an hour between lines of one cause,
    so "once per cause" never depends on how fast the machine is."""
    monkeypatch.setattr(unavailable_module, "_log", RateLimitedLog(interval=3600.0))


class Writes:
    """The system of record behind the write-through view, and the loaders' call counts."""

    def __init__(self) -> None:
        self.saved: list[Any] = []
        self.loads = 0
        self.before_save: Callable[[], object] = lambda: None

    def save(self, value: Any) -> str:
        self.before_save()
        self.saved.append(value)
        return "saved"


def add_views(app: Flask, writes: Writes) -> None:
    """A cached view, a view calling a cached function, and a write-through view."""

    @app.get("/page/<int:n>")
    @cache(ttl=60)
    def page(n: int) -> dict[str, int]:
        writes.loads += 1
        return {"n": n}

    @cache(ttl=60, key="square:{n}")
    def square(n: int) -> int:
        writes.loads += 1
        return n * n

    @app.get("/square/<int:n>")
    def square_view(n: int) -> dict[str, int]:
        return {"square": square(n)}

    @app.post("/items/<int:n>")
    def save_item(n: int) -> dict[str, str]:
        result = WriteThrough(backend_of(app), ttl=60).set(
            f"item:{n}", request.get_json(), writes.save
        )
        return {"result": result}


@pytest.fixture
def dead_url(redis_server_factory: RedisServerFactory) -> str:
    """The URL of a real redis-server that was started, then killed: connection refused."""
    server: RedisServer = redis_server_factory()
    url = server.url
    server.kill()
    return url


@pytest.fixture
def writes() -> Writes:
    return Writes()


@pytest.fixture
def closed_app(make_app: AppFactory, dead_url: str, writes: Writes) -> Flask:
    app = make_app(
        FENNEC_CACHE_URL=dead_url,
        FENNEC_CACHE_FAIL_OPEN=False,
        FENNEC_CACHE_UNAVAILABLE_HANDLER=True,
        FENNEC_CACHE_BREAKER_COOLDOWN=2.5,
        FENNEC_CACHE_ADMIN_OPEN=True,
    )
    add_views(app, writes)
    return app


def call(client: FlaskClient, path: str, accept: str | None = None) -> Any:
    headers = {"Accept": accept} if accept else {}
    if path.startswith("/items/"):
        return client.post(path, json={"name": "x"}, headers=headers)
    return client.get(path, headers=headers)


VIEW_PATHS = ["/page/1", "/square/3", "/items/4"]
VIEW_IDS = ["cached-view", "cached-function", "write-through"]


# ==================================================================================
# The app-wide handler
# ==================================================================================


@pytest.mark.parametrize("path", VIEW_PATHS, ids=VIEW_IDS)
def test_views_answer_503_with_retry_after(closed_app: Flask, writes: Writes, path: str) -> None:
    client = closed_app.test_client()
    for _ in range(4):  # the first calls reach Redis; later ones meet the open breaker
        response = call(client, path, accept="application/json")
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.headers["Retry-After"] == "3"  # the cool-down, 2.5 s, rounded up
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_json()
        assert set(body) == {"error", "retry_after"} and body["retry_after"] == 3
        assert "unavailable" in body["error"]
        assert "127.0.0.1" not in body["error"]  # no host or port for the public
    assert backend_of(closed_app).breaker_state == "open"
    assert writes.loads == 0  # the read raised first: loaders never ran
    assert writes.saved == []  # write-through: the lock could not be taken, nothing written


def test_write_through_when_redis_dies_after_the_write(
    make_app: AppFactory, redis_server_factory: RedisServerFactory, writes: Writes
) -> None:
    """The writer's change is made, then the cache cannot be updated: still a 503 (and the
    old entry could not be evicted either), so the client knows the outcome is uncertain."""
    server = redis_server_factory()
    app = make_app(
        FENNEC_CACHE_URL=server.url, FENNEC_CACHE_FAIL_OPEN=False,
        FENNEC_CACHE_UNAVAILABLE_HANDLER=True,
    )  # fmt: skip
    add_views(app, writes)
    writes.before_save = server.kill
    response = call(app.test_client(), "/items/5", accept="application/json")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert writes.saved == [{"name": "x"}]


@pytest.mark.parametrize(
    ("headers", "json_body"),
    [
        ({"Accept": "application/json"}, True),
        ({"Accept": "application/json, text/plain, */*"}, True),
        ({"Accept": "application/problem+json"}, True),
        ({"Content-Type": "application/json"}, True),
        ({"Accept": BROWSER_ACCEPT}, False),
        ({"Accept": "*/*"}, False),
        ({}, False),
        ({"Accept": "text/html;q=0.5, application/json"}, True),
    ],
    ids=["json", "axios", "problem-json", "json-request", "browser", "any", "none", "q-values"],
)
def test_json_for_clients_that_prefer_it_text_otherwise(
    closed_app: Flask, headers: dict[str, str], json_body: bool
) -> None:
    response = closed_app.test_client().get("/page/2", headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    if json_body:
        assert response.is_json and "error" in response.get_json()
    else:
        assert response.mimetype == "text/plain"
        text = response.get_data(as_text=True)
        assert text.startswith("503 Service Unavailable") and "retry in 3 s" in text
        assert len(text.splitlines()) == 1


def test_logged_once_per_cause_without_a_traceback(
    closed_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = closed_app.test_client()
    with caplog.at_level(logging.DEBUG):
        for path in VIEW_PATHS * 3:
            assert call(client, path).status_code == 503
    ours = [r for r in caplog.records if r.name == "flask_fennec_cache"]
    causes = {r.getMessage().split(": ", 1)[1] for r in ours}
    # one line for the refused connections, one for the calls the open breaker skipped
    assert len(ours) == 2, [r.getMessage() for r in ours]
    assert any("ConnectionError" in cause for cause in causes), causes
    assert any("circuit breaker is open" in cause for cause in causes), causes
    assert all(r.exc_info is None and "503" in r.getMessage() for r in ours)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_retry_after_is_at_least_one_second(
    make_app: AppFactory, dead_url: str, writes: Writes
) -> None:
    app = make_app(
        FENNEC_CACHE_URL=dead_url, FENNEC_CACHE_FAIL_OPEN=False,
        FENNEC_CACHE_UNAVAILABLE_HANDLER=True, FENNEC_CACHE_BREAKER_COOLDOWN=0.2,
    )  # fmt: skip
    add_views(app, writes)
    assert app.test_client().get("/page/1").headers["Retry-After"] == "1"


def test_the_admin_blueprint_keeps_its_own_json_answers(closed_app: Flask) -> None:
    client = closed_app.test_client()
    stats = client.get("/cache/stats")
    assert stats.status_code == 503 and stats.is_json
    assert "get_stats" in stats.get_json()["error"]  # operators get the cause
    assert stats.headers["Retry-After"] == "3"
    assert client.get("/cache/metrics").status_code == 200


# ==================================================================================
# Without the handler, and on a blueprint only
# ==================================================================================


@pytest.mark.parametrize("path", VIEW_PATHS, ids=VIEW_IDS)
def test_without_the_handler_fail_closed_is_a_500(
    make_app: AppFactory, dead_url: str, writes: Writes, path: str
) -> None:
    app = make_app(
        FENNEC_CACHE_URL=dead_url, FENNEC_CACHE_FAIL_OPEN=False, PROPAGATE_EXCEPTIONS=False
    )
    add_views(app, writes)
    assert call(app.test_client(), path).status_code == 500
    app.config["PROPAGATE_EXCEPTIONS"] = True  # the test client re-raises what the view raised
    with pytest.raises(CacheUnavailable):
        call(app.test_client(), path)


@pytest.mark.parametrize("path", VIEW_PATHS, ids=VIEW_IDS)
def test_fail_open_answers_from_the_loaders(
    make_app: AppFactory, dead_url: str, writes: Writes, path: str
) -> None:
    app = make_app(FENNEC_CACHE_URL=dead_url, FENNEC_CACHE_UNAVAILABLE_HANDLER=True)
    add_views(app, writes)
    response = call(app.test_client(), path)
    assert response.status_code == 200, response.get_data(as_text=True)
    if path.startswith("/page/"):
        assert response.headers["X-Cache"] == "MISS"


def test_outside_a_request_a_cached_function_raises(closed_app: Flask, writes: Writes) -> None:
    @cache(ttl=60, key="cube:{n}")
    def cube(n: int) -> int:
        writes.loads += 1
        return n**3

    with closed_app.app_context(), pytest.raises(CacheUnavailable, match="get"):
        cube(2)
    assert writes.loads == 0


@pytest.fixture
def blueprint_app(make_app: AppFactory) -> Iterator[Flask]:
    port = find_free_port()  # nobody listens on it
    app = make_app(
        FENNEC_CACHE_URL=f"redis://127.0.0.1:{port}/0", FENNEC_CACHE_FAIL_OPEN=False,
        PROPAGATE_EXCEPTIONS=False,
    )  # fmt: skip
    api = Blueprint("api", __name__)
    api.register_error_handler(CacheUnavailable, handle_cache_unavailable)

    @api.get("/api/page")
    @cache(ttl=60)
    def api_page() -> dict[str, str]:
        return {"page": "api"}

    @app.get("/other")
    @cache(ttl=60)
    def other() -> dict[str, str]:
        return {"page": "other"}

    app.register_blueprint(api)
    yield app


def test_registered_on_a_blueprint_it_covers_that_blueprint_only(blueprint_app: Flask) -> None:
    client = blueprint_app.test_client()
    inside = client.get("/api/page", headers={"Accept": "application/json"})
    assert inside.status_code == 503 and inside.headers["Retry-After"] == "1"
    assert inside.get_json()["retry_after"] == 1
    assert client.get("/other").status_code == 500
