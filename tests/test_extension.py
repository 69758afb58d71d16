"""FennecCache: app factories, per-app backends, configuration and the bound decorator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _servers import RedisServer
from _support import AppFactory, backend_of, new_app
from flask import Flask

from flask_fennec_cache import (
    ConfigurationError,
    FennecCache,
    FennecCacheError,
    NoBackendError,
    RedisCache,
)
from flask_fennec_cache.config import CONFIG_KEYS
from flask_fennec_cache.extension import settings_of


@pytest.fixture
def make_app(memory_url: str) -> Iterator[AppFactory]:
    """A Flask app on a private memory:// server with a unique prefix (never the system Redis)."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = new_app(memory_url, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        backend = app.extensions.get("fennec_cache")
        if backend is not None:
            backend.close()


def test_extension_with_the_app_in_the_constructor(make_app: AppFactory) -> None:
    app = make_app()
    fennec = FennecCache(app)
    with app.app_context():
        assert fennec.backend is backend_of(app)
        fennec.backend.set("k", 1)
        assert fennec.backend.get("k") == 1


def test_app_factory_with_init_app(make_app: AppFactory) -> None:
    fennec = FennecCache()

    def create_app() -> Flask:
        app = make_app(FENNEC_CACHE_PREFIX="factory:")
        fennec.init_app(app)
        return app

    app = create_app()
    with app.app_context():
        assert fennec.backend.prefix == "factory:"
    assert not any(isinstance(v, RedisCache) for v in vars(fennec).values())


def test_one_extension_serves_two_apps_separately(make_app: AppFactory) -> None:
    fennec = FennecCache()
    first, second = make_app(FENNEC_CACHE_PREFIX="one:"), make_app(FENNEC_CACHE_PREFIX="two:")
    fennec.init_app(first)
    fennec.init_app(second)
    assert backend_of(first) is not backend_of(second)
    with first.app_context():
        assert fennec.backend is backend_of(first)
        fennec.backend.set("k", "first")
    with second.app_context():
        assert fennec.backend is backend_of(second)
        assert fennec.backend.get("k") is None  # same memory:// server, other prefix
        fennec.backend.set("k", "second")
    with first.app_context():
        assert fennec.backend.get("k") == "first"
        assert fennec.backend.clear() == 1
    with second.app_context():
        assert fennec.backend.get("k") == "second"


def test_a_second_init_app_on_the_same_app_raises(make_app: AppFactory) -> None:
    app = make_app()
    fennec = FennecCache(app)
    backend = backend_of(app)
    with pytest.raises(FennecCacheError, match="init_app"):
        fennec.init_app(app)
    with pytest.raises(FennecCacheError):
        FennecCache(app)
    assert backend_of(app) is backend


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FENNEC_CACHE_SOCKET_TIMEOUT", "abc"),
        ("FENNEC_CACHE_POOL_SIZE", -3),
        ("FENNEC_CACHE_FAIL_OPEN", "sometimes"),
        ("FENNEC_CACHE_DEFAULT_TTL", -1),
        ("FENNEC_CACHE_PREFIX", ""),
        ("FENNEC_CACHE_PREFIX", "app:__fennec__:"),
        ("FENNEC_CACHE_URL", "ftp://cache.example"),
        ("FENNEC_CACHE_URL", "not a url"),
        ("FENNEC_CACHE_URL", "redis://cache.example:6379/0?socket_timout=1"),
        ("FENNEC_CACHE_URL", "redis://cache.example:abc/0"),
        ("FENNEC_CACHE_URL", "redis://cache.example/x"),
        ("FENNEC_CACHE_URL", "memory:/"),
        ("FENNEC_CACHE_URL", "redis+cluster://h:1/?socket_timeout=abc"),
        ("FENNEC_CACHE_TLS_CA_CERTS", "/no/such/ca.pem"),
        ("FENNEC_CACHE_SERIALIZER", "yaml"),
        ("FENNEC_CACHE_COMPRESSION", "lz4"),
    ],
)
def test_bad_config_raises_naming_the_key(make_app: AppFactory, name: str, value: Any) -> None:
    app = make_app(**{name: value})
    with pytest.raises(ConfigurationError) as caught:
        FennecCache(app)
    assert name in str(caught.value)
    assert "fennec_cache" not in app.extensions


def test_defaults_are_visible_in_app_config(make_app: AppFactory) -> None:
    app = make_app(FENNEC_CACHE_DEFAULT_TTL=42)
    for key in CONFIG_KEYS:
        if key.name not in ("FENNEC_CACHE_URL", "FENNEC_CACHE_PREFIX", "FENNEC_CACHE_DEFAULT_TTL"):
            assert key.name not in app.config
    FennecCache(app)
    for key in CONFIG_KEYS:
        assert key.name in app.config, key.name
    assert app.config["FENNEC_CACHE_DEFAULT_TTL"] == 42
    assert app.config["FENNEC_CACHE_SOCKET_TIMEOUT"] == 0.25
    assert app.config["FENNEC_CACHE_FAIL_OPEN"] is True
    assert app.config["FENNEC_CACHE_ADMIN_URL_PREFIX"] is None


def test_config_reaches_the_backend(make_app: AppFactory) -> None:
    app = make_app(
        FENNEC_CACHE_PREFIX="cfg:", FENNEC_CACHE_DEFAULT_TTL=42, FENNEC_CACHE_FAIL_OPEN=False,
        FENNEC_CACHE_MAX_VALUE_BYTES=64,
    )  # fmt: skip
    FennecCache(app)
    backend = backend_of(app)
    assert backend.prefix == "cfg:"
    assert backend.default_ttl == 42
    assert backend.fail_open is False
    assert backend.set("big", "x" * 100) is False
    backend.set("k", 1)
    remaining = backend.ttl("k")
    assert remaining is not None and 0 < remaining <= 42


def test_string_values_from_the_environment_are_parsed(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_FENNEC_CACHE_DEFAULT_TTL", "17")
    monkeypatch.setenv("FLASK_FENNEC_CACHE_FAIL_OPEN", "false")
    app = make_app()
    app.config.from_prefixed_env()
    FennecCache(app)
    assert backend_of(app).default_ttl == 17
    assert backend_of(app).fail_open is False


def test_backend_outside_an_app_context_raises() -> None:
    fennec = FennecCache()
    with pytest.raises(NoBackendError):
        fennec.backend  # noqa: B018


def test_backend_of_an_app_without_init_app_says_so(make_app: AppFactory) -> None:
    fennec = FennecCache()
    app = make_app()
    with app.app_context(), pytest.raises(NoBackendError, match="init_app"):
        fennec.backend  # noqa: B018


def test_fennec_cache_decorates_functions_and_views(make_app: AppFactory) -> None:
    app = make_app()
    fennec = FennecCache(app)
    calls: list[str] = []

    @fennec.cache(ttl=60)
    def square(x: int) -> int:
        calls.append(f"square {x}")
        return x * x

    @app.get("/page")
    @fennec.cache(ttl=60)
    def page() -> str:
        calls.append("page")
        return "hello"

    with app.app_context():
        assert square(3) == 9
        assert square(3) == 9
        assert any(key.startswith("fn:") for key in fennec.backend.keys())
    client = app.test_client()
    assert client.get("/page").headers["X-Cache"] == "MISS"
    assert client.get("/page").headers["X-Cache"] == "HIT"
    assert calls == ["square 3", "page"]


def test_fennec_cache_uses_the_current_apps_backend(make_app: AppFactory) -> None:
    fennec = FennecCache()
    first, second = make_app(), make_app()
    fennec.init_app(first)
    fennec.init_app(second)

    @fennec.cache(key="answer")
    def answer() -> int:
        return 42

    with first.app_context():
        answer()
    assert backend_of(first).get("answer") == 42
    assert backend_of(second).get("answer") is None


def test_no_admin_routes_without_a_prefix(make_app: AppFactory) -> None:
    app = make_app()
    FennecCache(app)
    assert not [rule for rule in app.url_map.iter_rules() if "fennec" in rule.endpoint]


def test_a_real_server_url(redis_server: RedisServer, make_app: AppFactory) -> None:
    app = make_app(FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_PREFIX="real:")
    fennec = FennecCache(app)
    with app.app_context():
        assert fennec.backend.ping() is True
        fennec.backend.set("user:1", {"id": 1})
    assert redis_server.client().exists("real:user:1") == 1


def test_fennec_cache_takes_every_option_of_cache(make_app: AppFactory) -> None:
    """``fennec.cache(...)`` is ``cache(...)`` bound to the app: the same options, no backend."""
    import inspect

    from flask_fennec_cache import cache

    bound = set(inspect.signature(FennecCache.cache).parameters) - {"self"}
    assert bound == set(inspect.signature(cache).parameters) - {"backend"}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://cache.example:6379/0?socket_timout=1",
         "unknown option 'socket_timout' for redis:// (did you mean 'socket_timeout'"),
        ("redis://cache.example:6379/0?health_check_interval=x",
         "option health_check_interval='x': expected a whole number"),
        ("unix:///run/redis.sock?socket_timeout=abc", "option socket_timeout='abc'"),
        ("redis://cache.example:abc/0", "port 'abc' is not a number"),
        ("redis://cache.example/x", "database 'x' is not a number"),
        ("memory:/", "expected memory://"),
    ],
)  # fmt: skip
def test_a_bad_url_fails_init_app_naming_the_key_and_the_option(
    make_app: AppFactory, url: str, problem: str
) -> None:
    app = make_app(FENNEC_CACHE_URL=url)
    with pytest.raises(ConfigurationError) as caught:
        FennecCache(app)
    assert str(caught.value).startswith(f"FENNEC_CACHE_URL: {problem}")
    assert "fennec_cache" not in app.extensions


def test_string_values_are_normalised_in_app_config(make_app: AppFactory) -> None:
    app = make_app(
        FENNEC_CACHE_ADMIN_OPEN="yes", FENNEC_CACHE_FAIL_OPEN="false",
        FENNEC_CACHE_SOCKET_TIMEOUT="0.5", FENNEC_CACHE_POOL_SIZE="10",
        FENNEC_CACHE_NEAR_CACHE="off", FENNEC_CACHE_DEFAULT_TTL="60",
    )  # fmt: skip
    FennecCache(app)
    assert app.config["FENNEC_CACHE_ADMIN_OPEN"] is True
    assert app.config["FENNEC_CACHE_FAIL_OPEN"] is False
    assert app.config["FENNEC_CACHE_SOCKET_TIMEOUT"] == 0.5
    assert app.config["FENNEC_CACHE_POOL_SIZE"] == 10
    assert app.config["FENNEC_CACHE_NEAR_CACHE"] is False
    assert app.config["FENNEC_CACHE_DEFAULT_TTL"] == 60
    settings = settings_of(app)
    for key in CONFIG_KEYS:
        assert app.config[key.name] == getattr(settings, key.field), key.name


def test_booleans_from_the_environment_are_normalised(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_FENNEC_CACHE_ADMIN_OPEN", "yes")  # not JSON: stays a string
    app = make_app()
    app.config.from_prefixed_env()
    assert app.config["FENNEC_CACHE_ADMIN_OPEN"] == "yes"
    FennecCache(app)
    assert app.config["FENNEC_CACHE_ADMIN_OPEN"] is True
