"""``@cache``: memoising functions, and caching whole responses of Flask views."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from _support import wait_for
from flask import Flask, Response, request, session, stream_with_context
from flask.testing import FlaskClient

from flask_fennec_cache import (
    MISSING,
    FennecCache,
    KeyBuildError,
    NoBackendError,
    RedisCache,
    cache,
)


class Calls:
    """Counts calls of the functions under test."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def __call__(self, *entry: Any) -> None:
        self.log.append(entry if len(entry) != 1 else entry[0])

    @property
    def count(self) -> int:
        return len(self.log)


@pytest.fixture
def calls() -> Calls:
    return Calls()


class Boom(Exception):
    pass


# ==================================================================================
# Functions
# ==================================================================================


def test_memoises_by_arguments(backend: RedisCache, calls: Calls) -> None:
    @cache(ttl=600, backend=backend)
    def expensive_operation(param: int) -> dict[str, int]:
        calls(param)
        return {"param": param, "square": param * param}

    assert expensive_operation(3) == {"param": 3, "square": 9}
    assert expensive_operation(3) == {"param": 3, "square": 9}
    assert expensive_operation(4) == {"param": 4, "square": 16}
    assert calls.log == [3, 4]
    assert len(backend.keys()) == 2


def test_positional_and_keyword_calls_share_an_entry(
    fake_backend: RedisCache, calls: Calls
) -> None:
    @cache(backend=fake_backend)
    def page(user_id: int, page: int = 1, *, size: int = 10) -> str:
        calls(user_id)
        return f"{user_id}:{page}:{size}"

    page(1)
    page(1, 1)
    page(user_id=1)
    page(page=1, user_id=1)
    page(1, size=10)
    page(size=10, page=1, user_id=1)
    assert calls.count == 1
    page(1, 2)
    assert calls.count == 2


def test_a_call_the_function_refuses_raises_its_type_error(fake_backend: RedisCache) -> None:
    @cache(backend=fake_backend)
    def one(a: int) -> int:
        return a

    with pytest.raises(TypeError):
        one(1, a=1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        one(1, 2)  # type: ignore[call-arg]


def test_exceptions_are_never_cached(backend: RedisCache, calls: Calls) -> None:
    """The seed's "conditional caching": raise to avoid caching a missing user."""

    @cache(ttl=300, backend=backend)
    def get_user(user_id: int) -> dict[str, Any]:
        calls(user_id)
        if calls.count == 1:
            raise Boom("User not found")
        return {"id": user_id}

    with pytest.raises(Boom):
        get_user(9)
    assert backend.keys() == []
    assert get_user(9) == {"id": 9}
    assert get_user(9) == {"id": 9}
    assert calls.count == 2


def test_none_is_not_cached_by_default(backend: RedisCache, calls: Calls) -> None:
    @cache(backend=backend)
    def find(name: str) -> None:
        calls(name)

    assert find("x") is None
    assert find("x") is None
    assert calls.count == 2
    assert backend.keys() == []


def test_none_is_cached_with_cache_none(backend: RedisCache, calls: Calls) -> None:
    @cache(backend=backend, cache_none=True)
    def find(name: str) -> None:
        calls(name)

    assert find("x") is None
    assert find("x") is None
    assert calls.count == 1
    assert find.lookup("x").hit is True


def test_falsy_values_are_cached(fake_backend: RedisCache, calls: Calls) -> None:
    @cache(backend=fake_backend)
    def falsy(kind: str) -> Any:
        calls(kind)
        return {"zero": 0, "empty": "", "false": False, "list": []}[kind]

    for kind in ("zero", "empty", "false", "list"):
        first = falsy(kind)
        assert falsy(kind) == first
        assert type(falsy(kind)) is type(first)
    assert calls.count == 4


def test_key_template_can_be_invalidated_with_delete(backend: RedisCache, calls: Calls) -> None:
    @cache(ttl=60, backend=backend, key="user:{user_id}")
    def get_user(user_id: int) -> dict[str, Any]:
        calls(user_id)
        return {"id": user_id, "version": calls.count}

    assert get_user(1) == {"id": 1, "version": 1}
    assert backend.get("user:1") == {"id": 1, "version": 1}
    assert get_user(user_id=1) == {"id": 1, "version": 1}
    assert backend.delete("user:1") == 1
    assert get_user(1) == {"id": 1, "version": 2}
    assert calls.count == 2


def test_a_value_set_directly_is_served_by_the_template_key(
    fake_backend: RedisCache, calls: Calls
) -> None:
    @cache(backend=fake_backend, key="user:{user_id}")
    def get_user(user_id: int) -> dict[str, Any]:
        calls(user_id)
        return {"id": user_id}

    fake_backend.set("user:5", {"id": 5, "warm": True})  # the seed's cache warming
    assert get_user(5) == {"id": 5, "warm": True}
    assert calls.count == 0


def test_a_callable_key(fake_backend: RedisCache, calls: Calls) -> None:
    @cache(backend=fake_backend, key=lambda user_id, **_: f"u/{user_id}")
    def get_user(user_id: int, verbose: bool = False) -> int:
        calls(user_id)
        return user_id

    get_user(1)
    get_user(1, verbose=True)
    assert calls.count == 1
    assert fake_backend.get("u/1") == 1


def test_ttl_is_applied(fake_backend: RedisCache, calls: Calls) -> None:
    @cache(ttl=0.05, backend=fake_backend)
    def short(x: int) -> int:
        calls(x)
        return x

    @cache(ttl=100, backend=fake_backend, key="long")
    def long() -> int:
        return 1

    short(1)
    long()
    remaining = fake_backend.ttl("long")
    assert remaining is not None and 0 < remaining <= 100

    def expired() -> bool:
        short(1)
        return calls.count > 1

    assert wait_for(expired)


def test_no_ttl_uses_the_backends_default(memory_url: str, prefix: str) -> None:
    made = RedisCache(memory_url, prefix=prefix, default_ttl=40)
    try:

        @cache(backend=made, key="k")
        def value() -> int:
            return 1

        value()
        remaining = made.ttl("k")
        assert remaining is not None and 0 < remaining <= 40
    finally:
        made.close()


def test_unless_bypasses_the_cache(fake_backend: RedisCache, calls: Calls) -> None:
    bypass = {"on": True}

    @cache(backend=fake_backend, unless=lambda: bypass["on"])
    def compute(x: int) -> int:
        calls(x)
        return x * 2

    assert compute(2) == 4
    assert compute(2) == 4
    assert calls.count == 2
    assert fake_backend.keys() == []
    assert compute.lookup(2).hit is False
    bypass["on"] = False
    compute(2)
    compute(2)
    assert calls.count == 4


def test_no_backend_outside_an_app_context(calls: Calls) -> None:
    @cache(ttl=60)
    def helper(x: int) -> int:
        calls(x)
        return x

    with pytest.raises(NoBackendError, match="backend"):
        helper(1)
    assert calls.count == 0


def test_no_backend_in_an_app_without_the_extension(calls: Calls) -> None:
    @cache(ttl=60)
    def helper(x: int) -> int:
        return x

    app = Flask("bare")
    with app.app_context(), pytest.raises(NoBackendError, match="init_app"):
        helper(1)


def test_inside_an_app_the_apps_backend_is_used(memory_url: str, calls: Calls) -> None:
    app = Flask("with_cache")
    app.config.update(FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_PREFIX="app:")
    FennecCache(app)

    @cache(ttl=60, key="helper:{x}")
    def helper(x: int) -> int:
        calls(x)
        return x * 10

    with app.app_context():
        assert helper(2) == 20
        assert helper(2) == 20
    backend: RedisCache = app.extensions["fennec_cache"]
    try:
        assert backend.get("helper:2") == 20
        assert calls.count == 1
    finally:
        backend.close()


def test_wraps_keeps_name_doc_and_signature(fake_backend: RedisCache) -> None:
    def original(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        """Load a user."""
        return {"id": user_id}

    decorated = cache(backend=fake_backend)(original)
    assert decorated.__name__ == "original"
    assert decorated.__doc__ == "Load a user."
    assert decorated.__qualname__ == original.__qualname__
    assert decorated.__module__ == original.__module__
    assert inspect.signature(decorated) == inspect.signature(original)
    assert decorated.__wrapped__ is original


def test_lookup_reports_hits_truthfully(backend: RedisCache, calls: Calls) -> None:
    @cache(backend=backend)
    def square(x: int) -> int:
        calls(x)
        return x * x

    first = square.lookup(3)
    second = square.lookup(3)
    assert (first.value, first.hit) == (9, False)
    assert (second.value, second.hit) == (9, True)
    assert first.key == second.key == square.cache_key(3) == square.cache_key(x=3)
    backend.delete(first.key)
    assert square.lookup(3).hit is False
    assert square(3) == 9
    assert square.lookup(3).hit is True
    assert calls.count == 2


def test_invalidate_removes_one_calls_entry(backend: RedisCache, calls: Calls) -> None:
    @cache(backend=backend)
    def square(x: int) -> int:
        calls(x)
        return x * x

    square(2)
    square(3)
    assert square.invalidate(2) is True
    assert square.invalidate(2) is False
    assert backend.lookup(square.cache_key(3)) == 9
    square(2)
    square(3)
    assert calls.log == [2, 3, 2]


def test_unserialisable_result_is_returned_not_cached_and_logged(
    fake_backend: RedisCache, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    class Handle:
        pass

    @cache(backend=fake_backend, key="handle")
    def open_handle() -> Handle:
        calls("open")
        return Handle()

    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        first = open_handle()
        second = open_handle()
    assert isinstance(first, Handle) and isinstance(second, Handle)
    assert first is not second
    assert calls.count == 2
    assert fake_backend.lookup("handle") is MISSING
    assert "Handle" in caplog.text


def test_a_value_comes_back_as_the_function_returned_it(
    fake_backend: RedisCache, calls: Calls
) -> None:
    """A hit must not return a different value than the function (JSON int keys, tuples)."""

    @cache(backend=fake_backend)
    def by_id() -> dict[int, str]:
        calls("load")
        return {1: "Alice", 2: "Bob"}

    assert by_id()[1] == "Alice"
    assert by_id()[1] == "Alice"


def test_arguments_without_a_stable_key_raise_key_build_error(
    fake_backend: RedisCache, calls: Calls
) -> None:
    class Connection:
        pass

    @cache(backend=fake_backend)
    def load(conn: Connection, user_id: int) -> int:
        calls(user_id)
        return user_id

    with pytest.raises(KeyBuildError, match="'conn'"):
        load(Connection(), 1)
    assert calls.count == 0


def test_fails_open_when_redis_is_unreachable(prefix: str, calls: Calls) -> None:
    server = fakeredis.FakeServer()
    made = RedisCache(
        prefix=prefix, client=fakeredis.FakeRedis(server=server), breaker_threshold=1000
    )
    try:

        @cache(backend=made)
        def compute(x: int) -> int:
            calls(x)
            return x + 1

        server.connected = False
        assert compute(1) == 2
        assert compute(1) == 2
        assert calls.count == 2
        server.connected = True
        compute(1)
        compute(1)
        assert calls.count == 3
    finally:
        made.close()


def test_a_miss_and_a_hit_are_counted_once_each(backend: RedisCache) -> None:
    @cache(backend=backend)
    def square(x: int) -> int:
        return x * x

    square(2)
    square(2)
    stats = backend.get_stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)
    assert stats["hit_rate"] == 50.0


def test_an_entry_being_loaded_is_invisible_to_readers(fake_backend: RedisCache) -> None:
    """While the function runs, its key holds no value: every reader must see a miss."""
    seen: dict[str, Any] = {}

    @cache(backend=fake_backend, key="loading")
    def load() -> int:
        seen["lookup"] = fake_backend.lookup("loading")
        seen["get"] = fake_backend.get("loading", "default")
        seen["get_many"] = fake_backend.get_many(["loading"])
        seen["ttl"] = fake_backend.ttl("loading")
        seen["keys"] = fake_backend.keys()
        return 1

    load()
    assert seen == {
        "lookup": MISSING, "get": "default", "get_many": {}, "ttl": None, "keys": [],
    }  # fmt: skip
    assert fake_backend.get("loading") == 1


def test_methods_can_be_cached_with_a_cache_key(fake_backend: RedisCache, calls: Calls) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache(backend=fake_backend)
        def get(self, x: int) -> str:
            calls(self.name, x)
            return f"{self.name}:{x}"

    assert Repo("a").get(1) == "a:1"
    assert Repo("a").get(1) == "a:1"
    assert Repo("b").get(1) == "b:1"
    assert calls.count == 2


def test_a_bound_method_has_bound_helpers(backend: RedisCache, calls: Calls) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache(backend=backend, ttl=60)
        def get(self, x: int) -> str:
            calls(self.name, x)
            return f"{self.name}:{x}"

    a, b = Repo("a"), Repo("b")
    assert a.get(1) == "a:1" and b.get(1) == "b:1"
    assert a.get.cache_key(1) != b.get.cache_key(1)
    assert a.get.cache_key(1) == Repo.get.cache_key(a, 1)
    assert a.get.lookup(1) == ("a:1", True, a.get.cache_key(1))
    assert a.get.invalidate(1) is True
    assert a.get.invalidate(1) is False
    assert b.get.lookup(1).hit is True  # invalidating one instance leaves the others cached
    assert a.get.lookup(1).hit is False
    assert Repo.get(b, 1) == "b:1"  # called on the class, the instance comes first
    assert calls.log == [("a", 1), ("b", 1), ("a", 1)]
    assert a.get.__name__ == "get" and a.get.__wrapped__ is Repo.__dict__["get"].__wrapped__


def test_classmethods_and_staticmethods_around_a_cached_function(
    fake_backend: RedisCache, calls: Calls
) -> None:
    class Settings:
        @classmethod
        @cache(backend=fake_backend, key=lambda cls, name: f"setting:{cls.__name__}:{name}")
        def load(cls, name: str) -> str:
            calls(name)
            return f"{cls.__name__}.{name}"

        @staticmethod
        @cache(backend=fake_backend)
        def double(x: int) -> int:
            calls(x)
            return 2 * x

    assert Settings.load("a") == Settings.load("a") == "Settings.a"
    assert Settings().double(2) == Settings.double(2) == 4
    assert calls.log == ["a", 2]
    assert Settings.double.invalidate(2) is True


async def _twice(func: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    return await func(*args), await func(*args)


def test_a_coroutine_function_is_cached_and_stays_a_coroutine_function(
    backend: RedisCache, calls: Calls
) -> None:
    @cache(backend=backend, ttl=60)
    async def load(user_id: int) -> dict[str, int]:
        calls(user_id)
        await asyncio.sleep(0)
        return {"id": user_id}

    assert inspect.iscoroutinefunction(load)
    assert asyncio.run(_twice(load, 7)) == ({"id": 7}, {"id": 7})
    assert calls.log == [7]

    async def lookups() -> tuple[Any, Any]:
        return await load.lookup(7), await load.lookup(8)

    hit, miss = asyncio.run(lookups())
    assert (hit.hit, miss.hit) == (True, False)
    assert load.invalidate(7) is True


def test_concurrent_awaits_of_a_cached_coroutine_load_once(fake_backend: RedisCache) -> None:
    loads: list[int] = []

    @cache(backend=fake_backend, ttl=60)
    async def slow(x: int) -> int:
        loads.append(x)
        await asyncio.sleep(0.05)
        return x * 10

    async def many() -> list[int]:
        return list(await asyncio.gather(*(slow(3) for _ in range(10))))

    assert asyncio.run(many()) == [30] * 10
    assert loads == [3]


def test_a_coroutine_s_exception_propagates_and_is_not_cached(fake_backend: RedisCache) -> None:
    attempts: list[int] = []

    @cache(backend=fake_backend, ttl=60)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise Boom("first")
        return "ok"

    with pytest.raises(Boom):
        asyncio.run(flaky())
    assert asyncio.run(flaky()) == "ok"
    assert asyncio.run(flaky()) == "ok"
    assert len(attempts) == 2


def test_a_cached_coroutine_method_binds_its_instance(fake_backend: RedisCache) -> None:
    class Client:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache(backend=fake_backend, ttl=60)
        async def fetch(self, x: int) -> str:
            return f"{self.name}{x}"

    a = Client("a")
    assert inspect.iscoroutinefunction(a.fetch)
    assert asyncio.run(a.fetch(1)) == "a1"
    assert asyncio.run(a.fetch.lookup(1)).hit is True
    assert a.fetch.invalidate(1) is True


# ==================================================================================
# Views
# ==================================================================================


@pytest.fixture
def app(memory_url: str) -> Iterator[Flask]:
    app = Flask(f"views_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test-secret",
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_PREFIX=f"views-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)
    yield app
    app.extensions["fennec_cache"].close()


@pytest.fixture
def fennec(app: Flask) -> FennecCache:
    return FennecCache()  # no app: resolves the current app's backend


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def app_backend(app: Flask) -> RedisCache:
    backend: RedisCache = app.extensions["fennec_cache"]
    return backend


def comparable_headers(response: Any) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.items() if k not in ("X-Cache", "Age"))


View = Callable[..., Any]


def test_view_miss_then_hit_with_the_same_response(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/users/<int:user_id>")
    @fennec.cache(ttl=60)
    def get_user(user_id: int) -> tuple[dict[str, Any], int, dict[str, str]]:
        calls(user_id)
        return {"id": user_id, "n": calls.count}, 201, {"X-Custom": "yes"}

    miss = client.get("/users/1")
    hit = client.get("/users/1")
    assert miss.headers["X-Cache"] == "MISS"
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers.getlist("X-Cache") == ["HIT"]
    assert hit.status_code == miss.status_code == 201
    assert hit.get_data() == miss.get_data()
    assert hit.get_json() == {"id": 1, "n": 1}
    assert comparable_headers(hit) == comparable_headers(miss)
    assert client.get("/users/2").headers["X-Cache"] == "MISS"
    assert calls.log == [1, 2]


def test_view_miss_and_hit_are_counted(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/counted")
    @fennec.cache(ttl=60)
    def counted() -> str:
        return "x"

    client.get("/counted")
    client.get("/counted")
    stats = app_backend(app).get_stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)


def test_the_view_stays_the_view(app: Flask, fennec: FennecCache) -> None:
    @app.get("/named")
    @fennec.cache(ttl=60)
    def named_view() -> str:
        """Doc."""
        return "x"

    assert app.view_functions["named_view"].__name__ == "named_view"
    assert app.view_functions["named_view"].__doc__ == "Doc."


def test_plain_cache_decorator_on_a_view(app: Flask, client: FlaskClient, calls: Calls) -> None:
    @app.get("/plain")
    @cache(ttl=60)
    def plain() -> str:
        calls("plain")
        return "plain"

    assert client.get("/plain").headers["X-Cache"] == "MISS"
    assert client.get("/plain").headers["X-Cache"] == "HIT"
    assert calls.count == 1


def test_query_order_is_canonical(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/search")
    @fennec.cache(ttl=60)
    def search() -> dict[str, Any]:
        calls(request.query_string)
        return dict(request.args)

    assert client.get("/search?a=1&b=2").headers["X-Cache"] == "MISS"
    assert client.get("/search?b=2&a=1").headers["X-Cache"] == "HIT"
    assert client.get("/search?a=1&b=3").headers["X-Cache"] == "MISS"
    assert client.get("/search?a=1").headers["X-Cache"] == "MISS"
    assert client.get("/search").headers["X-Cache"] == "MISS"
    assert calls.count == 4


def test_repeated_query_parameters_keep_their_order(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/first")
    @fennec.cache(ttl=60)
    def first() -> str:
        return request.args.get("a", "")

    assert client.get("/first?a=1&a=2").get_data(as_text=True) == "1"
    assert client.get("/first?a=2&a=1").get_data(as_text=True) == "2"


def test_post_is_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.route("/items", methods=["GET", "POST"])
    @fennec.cache(ttl=60)
    def items() -> str:
        calls(request.method)
        return f"{request.method} {calls.count}"

    assert client.post("/items").get_data(as_text=True) == "POST 1"
    assert client.post("/items").get_data(as_text=True) == "POST 2"
    assert client.get("/items").headers["X-Cache"] == "MISS"
    assert client.post("/items").get_data(as_text=True) == "POST 4"
    assert client.get("/items").get_data(as_text=True) == "GET 3"


@pytest.mark.parametrize("status", [404, 500, 302, 304, 400])
def test_non_2xx_responses_are_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls, status: int
) -> None:
    @app.get("/status")
    @fennec.cache(ttl=60)
    def status_view() -> tuple[str, int]:
        calls(status)
        return "nope", status

    client.get("/status")
    second = client.get("/status")
    assert second.status_code == status
    assert second.headers.get("X-Cache") != "HIT"
    assert calls.count == 2
    assert app_backend(app).keys() == []


def test_aborts_are_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    from flask import abort

    @app.get("/gone")
    @fennec.cache(ttl=60)
    def gone() -> str:
        calls("gone")
        abort(410)

    assert client.get("/gone").status_code == 410
    assert client.get("/gone").status_code == 410
    assert calls.count == 2


def test_responses_setting_a_cookie_are_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/cookie")
    @fennec.cache(ttl=60)
    def cookie() -> Response:
        calls("cookie")
        response = Response("hello")
        response.set_cookie("session_id", f"secret-{calls.count}")
        return response

    first = client.get("/cookie")
    second = client.get("/cookie")
    assert "secret-1" in first.headers["Set-Cookie"]
    assert "secret-2" in second.headers["Set-Cookie"]
    assert calls.count == 2


def test_a_view_that_changes_the_session_is_not_cached(
    app: Flask, fennec: FennecCache, calls: Calls
) -> None:
    """Flask adds the session's Set-Cookie after the view returns; that response sets a cookie."""

    @app.get("/visit")
    @fennec.cache(ttl=60)
    def visit() -> str:
        calls("visit")
        session["visited"] = True
        return "welcome"

    first = app.test_client().get("/visit")
    assert "Set-Cookie" in first.headers
    second = app.test_client().get("/visit")  # a new visitor, without a session
    assert "Set-Cookie" in second.headers, "the new visitor's session was never set"
    assert calls.count == 2


def test_a_view_that_reads_the_session_is_not_shared_between_users(
    app: Flask, fennec: FennecCache
) -> None:
    """Reading the session makes Flask add ``Vary: Cookie``: one user's page is not another's."""

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        return "ok"

    @app.get("/me")
    @fennec.cache(ttl=60)
    def me() -> str:
        return f"hello {session.get('user', 'anonymous')}"

    alice, bob = app.test_client(), app.test_client()
    alice.get("/login/alice")
    bob.get("/login/bob")
    assert alice.get("/me").get_data(as_text=True) == "hello alice"
    assert bob.get("/me").get_data(as_text=True) == "hello bob"
    assert alice.get("/me").get_data(as_text=True) == "hello alice"


@pytest.mark.parametrize(
    "cache_control", ["no-store", "private", "private, max-age=60", "no-store, max-age=60"]
)
def test_no_store_and_private_responses_are_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls, cache_control: str
) -> None:
    @app.get("/private")
    @fennec.cache(ttl=60)
    def private() -> tuple[str, int, dict[str, str]]:
        calls("private")
        return "secret", 200, {"Cache-Control": cache_control}

    client.get("/private")
    assert client.get("/private").headers.get("X-Cache") != "HIT"
    assert calls.count == 2
    assert app_backend(app).keys() == []


def test_public_cache_control_is_cached_and_kept(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/public")
    @fennec.cache(ttl=60)
    def public() -> tuple[str, int, dict[str, str]]:
        return "ok", 200, {"Cache-Control": "public, max-age=60"}

    client.get("/public")
    hit = client.get("/public")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Cache-Control"] == "public, max-age=60"


def test_vary_header_keeps_variants_apart(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/greeting")
    @fennec.cache(ttl=60)
    def greeting() -> Response:
        language = request.headers.get("Accept-Language", "none")
        calls(language)
        response = Response(f"greeting in {language}")
        response.vary.add("Accept-Language")
        return response

    def get(language: str) -> Any:
        return client.get("/greeting", headers={"Accept-Language": language})

    en1, fr1, en2, fr2 = get("en"), get("fr"), get("en"), get("fr")
    assert [r.headers["X-Cache"] for r in (en1, fr1, en2, fr2)] == ["MISS", "MISS", "HIT", "HIT"]
    assert en2.get_data(as_text=True) == "greeting in en"
    assert fr2.get_data(as_text=True) == "greeting in fr"
    assert "Accept-Language" in en2.headers["Vary"]
    assert calls.log == ["en", "fr"]


def test_vary_variants_are_found_by_another_process(
    app: Flask, fennec: FennecCache, calls: Calls
) -> None:
    """A second decorated copy (as in another worker) has no memo: it must read the marker."""

    def make_view() -> Callable[[], Response]:
        def greeting() -> Response:
            language = request.headers.get("Accept-Language", "none")
            calls(language)
            response = Response(f"greeting in {language}")
            response.vary.add("Accept-Language")
            return response

        return greeting

    app.add_url_rule("/g1", "g1", fennec.cache(ttl=60)(make_view()))
    client = app.test_client()
    client.get("/g1", headers={"Accept-Language": "en"})
    client.get("/g1", headers={"Accept-Language": "fr"})
    second_worker = Flask(app.name)
    second_worker.config.update(app.config)
    second_worker.extensions["fennec_cache"] = app_backend(app)
    second_worker.add_url_rule("/g1", "g1", fennec.cache(ttl=60)(make_view()))
    other = second_worker.test_client()
    fr = other.get("/g1", headers={"Accept-Language": "fr"})
    assert fr.headers["X-Cache"] == "HIT"
    assert fr.get_data(as_text=True) == "greeting in fr"
    assert calls.log == ["en", "fr"]


def test_vary_star_is_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/anything")
    @fennec.cache(ttl=60)
    def anything() -> Response:
        calls("anything")
        response = Response("depends")
        response.headers["Vary"] = "*"
        return response

    client.get("/anything")
    assert client.get("/anything").headers.get("X-Cache") != "HIT"
    assert calls.count == 2


def test_requests_with_authorization_bypass_the_cache(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/account")
    @fennec.cache(ttl=60)
    def account() -> str:
        who = request.headers.get("Authorization", "public")
        calls(who)
        return f"account of {who}"

    assert client.get("/account").get_data(as_text=True) == "account of public"
    authed = client.get("/account", headers={"Authorization": "Bearer alice"})
    assert authed.get_data(as_text=True) == "account of Bearer alice"
    assert authed.headers.get("X-Cache") != "HIT"
    client.get("/account", headers={"Authorization": "Bearer alice"})
    assert calls.log == ["public", "Bearer alice", "Bearer alice"]
    assert client.get("/account").headers["X-Cache"] == "HIT"  # the public entry is intact
    assert len(app_backend(app).keys()) == 1


def test_head_is_served_from_the_cache_after_a_get(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/doc")
    @fennec.cache(ttl=60)
    def doc() -> str:
        calls(request.method)
        return "document body"

    got = client.get("/doc")
    head = client.head("/doc")
    assert head.status_code == 200
    assert head.headers["X-Cache"] == "HIT"
    assert head.get_data() == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]
    assert calls.log == ["GET"]


def test_a_head_first_stores_the_full_body_for_get(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/doc")
    @fennec.cache(ttl=60)
    def doc() -> str:
        calls(request.method)
        return "document body"

    assert client.head("/doc").get_data() == b""
    got = client.get("/doc")
    assert got.get_data() == b"document body"
    assert got.headers["Content-Length"] == str(len(b"document body"))


def test_binary_bodies_are_byte_exact_and_not_base64(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    body = os.urandom(10_000) + b"\r\n\x00end"  # incompressible, so stored as it is

    @app.get("/blob")
    @fennec.cache(ttl=60)
    def blob() -> Response:
        return Response(body, mimetype="application/octet-stream")

    assert client.get("/blob").get_data() == body
    hit = client.get("/blob")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.get_data() == body
    assert hit.mimetype == "application/octet-stream"
    backend = app_backend(app)
    (stored_key,) = backend.keys()
    raw = backend.client.get(backend.prefix + stored_key)
    assert raw is not None
    assert len(body) <= len(raw) < len(body) + 512  # base64 would add ~3.4 KB


def test_streamed_responses_are_not_cached(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/stream")
    @fennec.cache(ttl=60)
    def stream() -> Response:
        calls("stream")

        def generate() -> Iterator[str]:
            yield "part 1, "
            yield "part 2"

        return Response(stream_with_context(generate()))

    assert client.get("/stream").get_data(as_text=True) == "part 1, part 2"
    assert client.get("/stream").get_data(as_text=True) == "part 1, part 2"
    assert calls.count == 2
    assert app_backend(app).keys() == []


def test_a_cached_helper_inside_a_view_is_a_function(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @fennec.cache(ttl=60)
    def load_user(user_id: int) -> dict[str, Any]:
        calls(user_id)
        return {"id": user_id}

    @app.get("/profile/<int:user_id>")
    def profile(user_id: int) -> dict[str, Any]:
        lookup = load_user.lookup(user_id)
        return {"user": lookup.value, "cached": lookup.hit}

    first = client.get("/profile/1")
    second = client.get("/profile/1")
    assert "X-Cache" not in first.headers and "X-Cache" not in second.headers
    assert first.get_json() == {"user": {"id": 1}, "cached": False}
    assert second.get_json() == {"user": {"id": 1}, "cached": True}
    assert calls.log == [1]
    assert [k for k in app_backend(app).keys() if k.startswith("view:")] == []


def test_a_helper_called_directly_inside_a_view(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @fennec.cache(ttl=60)
    def total(a: int, b: int) -> int:
        calls(a, b)
        return a + b

    @app.get("/sum")
    def sum_view() -> str:
        return str(total(1, 2))

    assert client.get("/sum").get_data(as_text=True) == "3"
    assert client.get("/sum").get_data(as_text=True) == "3"
    assert calls.count == 1


def test_unless_on_a_view(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/maybe")
    @fennec.cache(ttl=60, unless=lambda: request.args.get("fresh") == "1")
    def maybe() -> str:
        calls(request.args.get("fresh"))
        return "x"

    for _ in range(2):
        bypassed = client.get("/maybe?fresh=1")
        assert bypassed.get_data(as_text=True) == "x"
        assert bypassed.headers["X-Cache"] == "BYPASS"
        assert bypassed.headers["X-Cache-Bypass"] == "unless"
    assert calls.count == 2
    client.get("/maybe")
    assert client.get("/maybe").headers["X-Cache"] == "HIT"
    assert calls.count == 3
    by_name = app_backend(app).get_stats()["by_name"]["maybe"]
    assert by_name["bypasses"] == 2
    assert by_name["bypass_reasons"] == {"unless": 2}


def test_a_view_still_answers_when_redis_is_down(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/resilient")
    @fennec.cache(ttl=60)
    def resilient() -> str:
        calls("resilient")
        return "still here"

    server = app_backend(app).client.connection_pool.connection_kwargs["server"]
    server.connected = False
    try:
        first = client.get("/resilient")
        second = client.get("/resilient")
    finally:
        server.connected = True
    assert first.status_code == second.status_code == 200
    assert second.get_data(as_text=True) == "still here"
    assert calls.count == 2


def test_view_entries_are_cleared_with_the_cache(
    app: Flask, fennec: FennecCache, client: FlaskClient, calls: Calls
) -> None:
    @app.get("/clearable")
    @fennec.cache(ttl=60)
    def clearable() -> str:
        calls("x")
        return "x"

    client.get("/clearable")
    assert app_backend(app).clear() >= 1
    assert client.get("/clearable").headers["X-Cache"] == "MISS"
    assert calls.count == 2


def test_different_hosts_are_cached_separately(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/host")
    @fennec.cache(ttl=60)
    def host() -> str:
        return request.host

    assert client.get("/host", base_url="http://one.example").get_data() == b"one.example"
    assert client.get("/host", base_url="http://two.example").get_data() == b"two.example"


def test_an_unknown_option_is_refused_naming_it(fake_backend: RedisCache) -> None:
    with pytest.raises(ValueError, match="stale_tll"):
        cache(backend=fake_backend, stale_tll=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="lock_timout"):
        FennecCache().cache(ttl=5, lock_timout=1)  # type: ignore[call-arg]
