"""flask_fennec_cache.compat: Flask-Caching's API, and what it gains on our backend.

Flask-Caching's own tests run against it in tests/flask_caching_suite; these cover the rest
of the issue: configuration, signing, failure, single flight, statistics, admin and CLI.
"""

from __future__ import annotations

import logging
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import RedisServer, RedisServerFactory
from _support import HANG, Counter, run_threads
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_fennec_cache import ConfigurationError, NoBackendError, RedisCache
from flask_fennec_cache._compat_backend import CompatBackend, NullBackend
from flask_fennec_cache._compat_config import read_compat_settings
from flask_fennec_cache.cli import cli
from flask_fennec_cache.compat import Cache, make_template_fragment_key

AppMaker = Callable[..., Flask]


@pytest.fixture
def make_app() -> Iterator[AppMaker]:
    """Flask apps with a SECRET_KEY and the given config; their compat backends are closed
    at teardown."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"compat_{uuid.uuid4().hex[:8]}")
        app.config.update({"TESTING": True, "SECRET_KEY": "a-secret-for-the-tests", **config})
        made.append(app)
        return app

    yield make
    for app in made:
        for backend in app.extensions.get("cache", {}).values():
            if isinstance(backend, CompatBackend):
                backend.native.close()


@pytest.fixture
def redis_app(make_app: AppMaker, redis_server: RedisServer) -> Flask:
    return make_app(
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_KEY_PREFIX=f"compat-{uuid.uuid4().hex[:8]}:",
    )


def native(cache: Cache) -> RedisCache:
    backend = cache.cache
    assert isinstance(backend, CompatBackend)
    return backend.native


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cache_type",
    [
        "redis",
        "RedisCache",
        "flask_caching.backends.redis",
        "flask_caching.backends.RedisCache",
    ],
)
def test_every_redis_cache_type_name_uses_the_url(cache_type: str) -> None:
    settings = read_compat_settings(
        {
            "CACHE_TYPE": cache_type,
            "CACHE_REDIS_URL": "redis://cache.internal:6380/3",
            "SECRET_KEY": "s",
        }
    )
    assert (settings.kind, settings.url) == ("redis", "redis://cache.internal:6380/3")


def test_host_port_db_and_password_make_a_url() -> None:
    settings = read_compat_settings(
        {
            "CACHE_TYPE": "redis",
            "CACHE_REDIS_HOST": "10.1.2.3",
            "CACHE_REDIS_PORT": 6390,
            "CACHE_REDIS_DB": 2,
            "CACHE_REDIS_PASSWORD": "p@ss/word",
            "SECRET_KEY": "s",
        }
    )
    assert settings.url == "redis://:p%40ss%2Fword@10.1.2.3:6390/2"


def test_sentinel_and_cluster_keys_map_to_our_urls() -> None:
    sentinel = read_compat_settings(
        {
            "CACHE_TYPE": "RedisSentinelCache",
            "CACHE_REDIS_SENTINELS": [("s1", 26379), "s2:26380"],
            "CACHE_REDIS_SENTINEL_MASTER": "primary",
            "CACHE_REDIS_DB": 1,
            "CACHE_REDIS_PASSWORD": "data",
            "CACHE_REDIS_SENTINEL_PASSWORD": "sent",
            "SECRET_KEY": "s",
        }
    )
    assert sentinel.url == (
        "redis+sentinel://:data@s1:26379,s2:26380/primary/1?sentinel_password=sent"
    )
    cluster = read_compat_settings(
        {
            "CACHE_TYPE": "RedisClusterCache",
            "CACHE_REDIS_CLUSTER": "n1:7000, n2:7001",
            "CACHE_REDIS_PASSWORD": "pw",
            "SECRET_KEY": "s",
        }
    )
    assert cluster.url == "redis+cluster://:pw@n1:7000,n2:7001/"
    from_url = read_compat_settings(
        {
            "CACHE_TYPE": "RedisClusterCache",
            "CACHE_REDIS_URL": "redis://n1:7000",
            "SECRET_KEY": "s",
        }
    )
    assert from_url.url == "redis+cluster://n1:7000"


@pytest.mark.parametrize(
    ("cache_type", "kind"),
    [
        ("SimpleCache", "redis"),
        ("simple", "redis"),
        ("NullCache", "null"),
        ("null", "null"),
    ],
)
def test_simple_is_in_process_and_null_is_no_cache(cache_type: str, kind: str) -> None:
    settings = read_compat_settings({"CACHE_TYPE": cache_type})  # no secret needed for these
    assert settings.kind == kind
    if kind == "redis":
        assert settings.url is not None and settings.url.startswith("memory://")


@pytest.mark.parametrize("cache_type", ["FileSystemCache", "MemcachedCache", "UWSGICache", 3])
def test_an_unsupported_cache_type_says_what_to_use(cache_type: Any) -> None:
    with pytest.raises(ConfigurationError, match="CACHE_TYPE") as caught:
        read_compat_settings({"CACHE_TYPE": cache_type, "SECRET_KEY": "s"})
    assert "RedisCache" in str(caught.value) and "SimpleCache" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CACHE_REDIS_URL", "http://example.invalid/"),
        ("CACHE_REDIS_PORT", "not-a-port"),
        ("CACHE_DEFAULT_TIMEOUT", -5),
        ("CACHE_KEY_PREFIX", lambda: "callable"),
        ("CACHE_OPTIONS", {"retry_on_timeout": True}),
        ("CACHE_OPTIONS", {"socket_timeout": "soon"}),
    ],
)
def test_a_bad_value_names_its_key(key: str, value: Any) -> None:
    config = {"CACHE_TYPE": "redis", "SECRET_KEY": "s", key: value}
    with pytest.raises(ConfigurationError, match=key):
        read_compat_settings(config)


def test_unknown_cache_keys_are_ignored_and_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="flask_fennec_cache.compat"):
        settings = read_compat_settings(
            {
                "CACHE_TYPE": "redis",
                "SECRET_KEY": "s",
                "CACHE_THRESHOLD": 500,
                "CACHE_IGNORE_ERRORS": True,
            }
        )
    assert settings.kind == "redis"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "CACHE_THRESHOLD" in logged and "CACHE_IGNORE_ERRORS" in logged


def test_cache_options_set_the_client_timeouts(
    make_app: AppMaker,
    redis_server: RedisServer,
) -> None:
    app = make_app(
        CACHE_TYPE="redis",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_OPTIONS={"socket_timeout": 0.5, "socket_connect_timeout": 0.4},
    )
    pool = native(Cache(app)).client.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.4


def test_the_default_timeout_applies_and_zero_never_expires(redis_app: Flask) -> None:
    redis_app.config["CACHE_DEFAULT_TIMEOUT"] = 120
    cache = Cache(redis_app)
    cache.set("default", 1)
    cache.set("forever", 1, timeout=0)
    cache.set("short", 1, timeout=30)
    backend = native(cache)
    assert 0 < (backend.ttl("default") or 0) <= 120
    assert backend.ttl("forever") == -1
    assert 0 < (backend.ttl("short") or 0) <= 30


# -- signing -----------------------------------------------------------------------------------


def test_it_refuses_to_start_without_a_secret(
    make_app: AppMaker,
    redis_server: RedisServer,
) -> None:
    app = make_app(CACHE_TYPE="redis", CACHE_REDIS_URL=redis_server.url)
    app.config["SECRET_KEY"] = None
    with pytest.raises(ConfigurationError, match="SECRET_KEY.*FENNEC_CACHE_SECRET_KEY"):
        Cache(app)


def test_the_signing_key_is_derived_from_secret_key_not_equal_to_it() -> None:
    one = read_compat_settings({"CACHE_TYPE": "redis", "SECRET_KEY": "app-secret"})
    again = read_compat_settings({"CACHE_TYPE": "redis", "SECRET_KEY": "app-secret"})
    other = read_compat_settings({"CACHE_TYPE": "redis", "SECRET_KEY": "another"})
    own = read_compat_settings(
        {
            "CACHE_TYPE": "redis",
            "SECRET_KEY": "app-secret",
            "FENNEC_CACHE_SECRET_KEY": "sixteen-chars-or-more",
        }
    )
    assert one.secret == again.secret != other.secret
    assert one.secret is not None and "app-secret" not in one.secret
    assert own.secret == "sixteen-chars-or-more"


class _Payload:
    """Records every unpickling: a forged entry must never get that far."""

    loaded: list[str] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Payload.loaded.append, ("unpickled",))


def test_a_forged_entry_is_a_miss_and_is_never_unpickled(
    make_app: AppMaker,
    redis_server: RedisServer,
) -> None:
    prefix = f"forge-{uuid.uuid4().hex[:8]}:"
    victim = make_app(CACHE_TYPE="redis", CACHE_REDIS_URL=redis_server.url, CACHE_KEY_PREFIX=prefix)
    attacker = make_app(
        CACHE_TYPE="redis",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_KEY_PREFIX=prefix,
        SECRET_KEY="the-attacker-does-not-know-it",
    )
    cache, forger = Cache(victim), Cache(attacker)
    calls = Counter()

    @cache.memoize(60)
    def profile(user_id: int) -> dict[str, int]:
        calls.bump()
        return {"id": user_id}

    with victim.app_context():
        key = profile.make_cache_key(profile.uncached, 7)
    with attacker.app_context():
        assert forger.set(key, _Payload())  # signed with the wrong key
        assert forger.set("plain", _Payload())
    # A raw pickle written past the library, as an attacker with Redis access could.
    native(cache).client.set(prefix + "raw", pickle.dumps(_Payload()))
    _Payload.loaded.clear()
    with victim.app_context():
        assert profile(7) == {"id": 7}
        assert cache.get("plain") is None
        assert cache.get("raw") is None
    assert calls.calls == 1
    assert _Payload.loaded == []


def test_arbitrary_picklable_values_round_trip(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    value = {"when": uuid.UUID(int=5), 1: {3, 4}, "bytes": b"\x00", "tuple": (1, [2])}
    assert cache.set("value", value)
    assert cache.get("value") == value


# -- the backend object and several instances --------------------------------------------------


def test_cache_cache_exposes_the_prefix_and_the_redis_client(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    backend = cache.cache
    assert isinstance(backend, CompatBackend)
    assert backend.key_prefix == redis_app.config["CACHE_KEY_PREFIX"]
    backend._write_client.set(backend.key_prefix + "raw", b"1")
    assert backend._read_client.exists(backend.key_prefix + "raw") == 1
    assert redis_app.extensions["cache"][cache] is backend


def test_several_instances_on_one_app_keep_apart(redis_app: Flask) -> None:
    users = Cache(redis_app, config={"CACHE_KEY_PREFIX": "users:"})
    pages = Cache()
    pages.init_app(redis_app, config={"CACHE_KEY_PREFIX": "pages:"})
    with redis_app.app_context():
        users.set("k", "user")
        pages.set("k", "page")
        assert (users.get("k"), pages.get("k")) == ("user", "page")
        users.clear()
        assert (users.get("k"), pages.get("k")) == (None, "page")
        pages.clear()


def test_an_uninitialised_cache_says_so() -> None:
    with pytest.raises(NoBackendError, match="init_app"):
        Cache().get("k")


def test_null_cache_warns_and_caches_nothing(make_app: AppMaker) -> None:
    app = make_app(CACHE_TYPE="NullCache")
    with pytest.warns(UserWarning, match="NullCache"):
        cache = Cache(app)
    quiet = Cache(make_app(CACHE_TYPE="null", CACHE_NO_NULL_WARNING=True))
    calls = Counter()

    @cache.memoize()
    def value() -> int:
        return calls.bump()

    with app.app_context():
        assert isinstance(cache.cache, NullBackend)
        assert (value(), value()) == (1, 2)
        assert cache.set("k", 1) and cache.get("k") is None
    assert isinstance(quiet.cache, NullBackend)


def test_simple_cache_is_in_process(make_app: AppMaker) -> None:
    cache = Cache(make_app(CACHE_TYPE="SimpleCache"))
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert native(cache).url.startswith("memory://")


# -- add, inc, delete_memoized -----------------------------------------------------------------


def test_add_is_atomic_across_racing_callers(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    won = run_threads(8, lambda index: cache.add("lock", index, timeout=30))
    assert won.count(True) == 1
    assert cache.get("lock") == won.index(True)


def test_inc_and_dec_add_up_across_threads_and_keep_the_expiry(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    backend = cache.cache
    assert backend.set("hits", 0, timeout=300)

    def bump(index: int) -> None:
        for _ in range(10):
            assert backend.inc("hits") is not None

    run_threads(6, bump)
    assert backend.get("hits") == 60
    assert backend.dec("hits", 5) == 55
    assert 0 < (native(cache).ttl("hits") or 0) <= 300
    assert backend.inc("fresh") == 1 and native(cache).ttl("fresh") == -1


def test_delete_memoized_on_a_cached_function_drops_its_entry(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    calls = Counter()

    @cache.cached(60, key_prefix="report")
    def report() -> int:
        return calls.bump()

    with redis_app.test_request_context():
        assert (report(), report()) == (1, 1)
        cache.delete_memoized(report)
        assert report() == 2


def test_delete_memoized_refuses_what_it_did_not_decorate(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    with pytest.raises(TypeError, match="memoize"):
        cache.delete_memoized(len)
    with pytest.raises(TypeError, match="name"):
        cache.delete_memoized("module.function")  # type: ignore[arg-type]


def test_fragment_keys_vary_on_any_value() -> None:
    assert make_template_fragment_key("sidebar") == "_template_fragment_cache_sidebar"
    assert make_template_fragment_key("sidebar", vary_on=[7, "en"]) == (
        "_template_fragment_cache_sidebar_7_en"
    )


def test_the_compat_template_tag_varies_on_ints_and_is_dropped_by_its_key(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    template = '{% cache 60, "card", user_id %}<b>{{ name }}</b>{% endcache %}'
    with redis_app.test_request_context():
        from flask import render_template_string

        assert render_template_string(template, user_id=3, name="<Ann>") == ("<b>&lt;Ann&gt;</b>")
        assert render_template_string(template, user_id=3, name="Bob") == "<b>&lt;Ann&gt;</b>"
        assert cache.delete(make_template_fragment_key("card", vary_on=[3]))
        assert render_template_string(template, user_id=3, name="Bob") == "<b>Bob</b>"


# -- what compat users gain --------------------------------------------------------------------


def _serve_in_thread(work: Callable[[], Any]) -> Any:
    """*work*'s result; the join is a deadline against a hang, not a speed requirement."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "a request hung on the frozen Redis"
    return results[0]


@pytest.mark.parametrize("outage", ["frozen", "dead"])
def test_a_frozen_or_dead_redis_never_hangs_or_fails_a_request(
    make_app: AppMaker,
    redis_server_factory: RedisServerFactory,
    outage: str,
) -> None:
    server = redis_server_factory()
    app = make_app(CACHE_TYPE="redis", CACHE_REDIS_URL=server.url)
    cache = Cache(app)
    calls = Counter()

    @app.get("/page/<int:page>")
    @cache.cached(60)
    def page(page: int) -> str:
        return f"page {page} #{calls.bump()}"

    @cache.memoize(60)
    def total(n: int) -> int:
        return n * 2

    client = app.test_client()
    assert client.get("/page/1").text == "page 1 #1"
    if outage == "frozen":
        server.pause()
    else:
        server.kill()
    try:
        for _ in range(3):
            response = _serve_in_thread(lambda: client.get("/page/2"))
            assert response.status_code == 200
            assert response.text.startswith("page 2 #")
        with app.app_context():
            assert _serve_in_thread(lambda: total(4)) == 8
            assert _serve_in_thread(lambda: cache.get("anything")) is None
            assert _serve_in_thread(lambda: cache.set("anything", 1)) is False
    finally:
        if outage == "frozen":
            server.resume()


def test_concurrent_misses_run_the_function_once(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    calls = Counter()
    started = threading.Event()
    release = threading.Event()

    @cache.memoize(60)
    def slow_report(year: int) -> dict[str, int]:
        calls.bump()
        started.set()
        release.wait(HANG)
        return {"year": year}

    def call(index: int) -> Any:
        if index == 0:
            return slow_report(2024)
        started.wait(HANG)  # the first caller is loading: every other one is a concurrent miss
        if index == 1:
            threading.Timer(0.2, release.set).start()
        return slow_report(2024)

    results = run_threads(6, call)
    assert results == [{"year": 2024}] * 6
    assert calls.calls == 1


def test_statistics_are_shared_by_every_process(
    make_app: AppMaker,
    redis_server: RedisServer,
) -> None:
    prefix = f"stats-{uuid.uuid4().hex[:8]}:"
    config = {
        "CACHE_TYPE": "redis",
        "CACHE_REDIS_URL": redis_server.url,
        "CACHE_KEY_PREFIX": prefix,
    }
    one, two = Cache(make_app(**config)), Cache(make_app(**config))  # as two workers would
    one.set("k", 1)
    assert two.get("k") == 1
    assert two.get("missing") is None
    native(two).get_stats()  # flushes the second worker's counts, as its timer would
    stats = native(one).get_stats()
    assert stats["shared"] is True
    assert (stats["sets"], stats["hits"], stats["misses"]) == (1, 1, 1)


def test_the_admin_blueprint_and_cli_serve_the_compat_cache(
    make_app: AppMaker,
    redis_server: RedisServer,
) -> None:
    app = make_app(
        CACHE_TYPE="redis",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_KEY_PREFIX=f"admin-{uuid.uuid4().hex[:8]}:",
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
    )
    cache = Cache(app)
    second = Cache(app, config={"CACHE_KEY_PREFIX": "second:"})
    cache.set("k", 1)
    assert cache.get("k") == 1
    stats = app.test_client().get("/cache/stats").get_json()
    assert (stats["sets"], stats["hits"], stats["shared"]) == (1, 1, True)
    assert app.test_client().get("/cache/health").status_code == 200
    result = FlaskCliRunner(app).invoke(cli, ["keys"])
    assert result.exit_code == 0, result.output
    assert "k" in result.output.split()
    assert native(second).prefix == "second:"  # its own backend, not the app's


def test_memoized_methods_of_many_instances_keep_one_tag_per_function(redis_app: Flask) -> None:
    cache = Cache(redis_app)
    calls = Counter()

    class Account:
        def __init__(self, number: int) -> None:
            self.number = number

        def __repr__(self) -> str:
            return f"Account({self.number})"

        @cache.memoize(60)
        def balance(self) -> int:
            calls.bump()
            return self.number

    accounts = [Account(number) for number in range(40)]
    assert [account.balance() for account in accounts] == list(range(40))
    backend = native(cache)
    reserved = [
        name
        for name in backend.client.scan_iter(match=backend.prefix + "__fennec__:*")
        if b"memoize:" in name
    ]
    assert len(reserved) == 1  # tag versions never expire: none per instance
    cache.delete_memoized(accounts[3].balance)
    assert [account.balance() for account in accounts] == list(range(40))
    assert calls.calls == 41
