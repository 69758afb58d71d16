"""Cached views: which call is the view, private pages, Vary variants, view keys and helpers."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from _support import wait_for
from flask import Flask, Response, jsonify, make_response, request, session
from flask.testing import FlaskClient
from flask.views import MethodView
from werkzeug.routing import BaseConverter

from flask_fennec_cache import CachedFunction, FennecCache, FennecCacheError, RedisCache, cache
from flask_fennec_cache.serializers import Envelope

HANG = 10.0


@pytest.fixture
def app(memory_url: str) -> Iterator[Flask]:
    app = Flask(f"views_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        SECRET_KEY="a test secret of some length",
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_PREFIX=f"views-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        return "ok"

    yield app
    backend_of(app).close()


@pytest.fixture
def fennec() -> FennecCache:
    return FennecCache()


def backend_of(app: Flask) -> RedisCache:
    backend: RedisCache = app.extensions["fennec_cache"]
    return backend


def view_of(app: Flask, endpoint: str) -> CachedFunction[..., Any]:
    """The cached view registered for *endpoint* (typed with its helpers)."""
    return cast(CachedFunction[..., Any], app.view_functions[endpoint])


def logged_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    assert client.post(f"/login/{name}").status_code == 200
    return client


# ==================================================================================
# Decorators between the route and the cache, with or without functools.wraps
# ==================================================================================


def name_copying_guard(view: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(**kwargs: Any) -> Any:
        if "user" not in session:
            return "log in first", 401
        return view(**kwargs)

    wrapper.__name__ = view.__name__
    return wrapper


def wraps_guard(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "user" not in session:
            return "log in first", 401
        return view(*args, **kwargs)

    return wrapper


class ClassGuard:
    """A class-based guard that copies nothing (registered under an explicit endpoint)."""

    def __init__(self, view: Callable[..., Any]) -> None:
        self.protected = view

    def __call__(self, **kwargs: Any) -> Any:
        if "user" not in session:
            return "log in first", 401
        return self.protected(**kwargs)


class NamedClassGuard(ClassGuard):
    """A class-based guard that takes the view's name (so Flask can name the endpoint)."""

    def __init__(self, view: Callable[..., Any]) -> None:
        super().__init__(view)
        self.__name__ = view.__name__


def partial_guard(view: Callable[..., Any]) -> Callable[..., Any]:
    def check(target: Callable[..., Any], **kwargs: Any) -> Any:
        if "user" not in session:
            return "log in first", 401
        return target(**kwargs)

    return functools.partial(check, view)


GUARDS = {
    "name-copying": name_copying_guard,
    "functools.wraps": wraps_guard,
    "class": ClassGuard,
    "named class": NamedClassGuard,
    "partial": partial_guard,
}


@pytest.mark.parametrize("guard", GUARDS.values(), ids=list(GUARDS))
def test_a_guarded_private_page_is_never_served_to_another_user(
    app: Flask, fennec: FennecCache, guard: Callable[[Callable[..., Any]], Any]
) -> None:
    renders: list[str] = []

    @fennec.cache(ttl=60)
    def dashboard(board: int) -> str:
        renders.append(session["user"])
        return f"board {board} of {session['user']}"

    app.add_url_rule("/dash/<int:board>", "dash", guard(dashboard))
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    first = alice.get("/dash/1")
    assert first.get_data(as_text=True) == "board 1 of alice"
    assert first.headers["X-Cache"] == "MISS"  # recognised as the view: cached as a response
    assert "Cookie" in first.headers["Vary"]
    assert bob.get("/dash/1").get_data(as_text=True) == "board 1 of bob"
    again = alice.get("/dash/1")
    assert again.get_data(as_text=True) == "board 1 of alice"
    assert again.headers["X-Cache"] == "HIT"
    assert bob.get("/dash/1").get_data(as_text=True) == "board 1 of bob"
    assert renders == ["alice", "bob"]
    assert app.test_client().get("/dash/1").status_code == 401


def test_a_helper_the_view_closes_over_is_not_taken_for_the_view(
    app: Flask, fennec: FennecCache
) -> None:
    loads: list[int] = []

    @cache(ttl=60)
    def popular(limit: int = 3) -> list[int]:
        loads.append(limit)
        return list(range(limit))

    @cache(ttl=60)
    def count() -> int:
        loads.append(0)
        return 7

    @app.get("/home")
    def home() -> Response:
        return jsonify(posts=popular(), count=count())

    @app.get("/top/<int:limit>")
    def top(limit: int) -> Response:
        return jsonify(posts=popular(limit=limit))

    client = app.test_client()
    for _ in range(2):
        assert client.get("/home").get_json() == {"posts": [0, 1, 2], "count": 7}
        assert client.get("/top/2").get_json() == {"posts": [0, 1]}
    assert loads == [3, 0, 2]
    assert "X-Cache" not in client.get("/home").headers  # the view itself is not cached


def test_a_method_view_with_a_cached_method_is_cached_as_a_view(
    app: Flask, fennec: FennecCache
) -> None:
    renders: list[int] = []

    class PostView(MethodView):
        @fennec.cache(ttl=60)
        def get(self, post_id: int) -> str:
            renders.append(post_id)
            return f"post {post_id}"

    app.add_url_rule("/posts/<int:post_id>", view_func=PostView.as_view("post"))
    client = app.test_client()
    assert client.get("/posts/1").headers["X-Cache"] == "MISS"
    assert client.get("/posts/1").headers["X-Cache"] == "HIT"
    assert renders == [1]


# ==================================================================================
# A cached call whose loader reads the session is never shared between sessions
# ==================================================================================


def test_a_helper_that_reads_the_session_is_not_stored(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @cache(ttl=60)
    def greeting(page: str) -> str:
        return f"{page}: hello {session.get('user', 'stranger')}"

    @app.get("/greet")
    def greet() -> str:
        return greeting("home")

    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert alice.get("/greet").get_data(as_text=True) == "home: hello alice"
        assert bob.get("/greet").get_data(as_text=True) == "home: hello bob"
        assert alice.get("/greet").get_data(as_text=True) == "home: hello alice"
    assert [k for k in backend_of(app).keys() if "greeting" in k] == []
    warnings = [r for r in caplog.records if "read the session" in r.getMessage()]
    assert len(warnings) == 1 and "greeting" in warnings[0].getMessage()


def test_a_helper_read_after_a_guard_touched_the_session_is_still_caught(app: Flask) -> None:
    @cache(ttl=60)
    def inbox() -> str:
        return f"inbox of {session['user']}"

    @app.get("/inbox")
    def inbox_page() -> str | tuple[str, int]:
        if "user" not in session:  # the session is already accessed before the helper runs
            return "log in", 401
        return inbox()

    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    assert alice.get("/inbox").get_data(as_text=True) == "inbox of alice"
    assert bob.get("/inbox").get_data(as_text=True) == "inbox of bob"


def test_a_helper_that_does_not_read_the_session_is_shared(app: Flask) -> None:
    loads: list[str] = []

    @cache(ttl=60)
    def headline() -> str:
        loads.append("x")
        return "news"

    @app.get("/news")
    def news() -> str:
        return f"{session.get('user')}: {headline()}"

    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    assert alice.get("/news").get_data(as_text=True) == "alice: news"
    assert bob.get("/news").get_data(as_text=True) == "bob: news"
    assert loads == ["x"]


def test_concurrent_session_reading_helpers_never_share_a_result(app: Flask) -> None:
    """Single flight would hand one request's load to the others waiting for the same key."""
    entered = threading.Event()
    release = threading.Event()

    @cache(ttl=60)
    def whoami() -> str:
        name = str(session["user"])
        if name == "alice":
            entered.set()
            release.wait(HANG)
        return name

    @app.get("/me")
    def me() -> str:
        return whoami()

    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    answers: dict[str, str] = {}
    first = threading.Thread(target=lambda: answers.update(a=alice.get("/me").get_data(True)))
    first.start()
    assert entered.wait(HANG)
    second = threading.Thread(target=lambda: answers.update(b=bob.get("/me").get_data(True)))
    second.start()
    release.set()
    first.join(HANG)
    second.join(HANG)
    assert answers == {"a": "alice", "b": "bob"}


# ==================================================================================
# Vary variants are stored through the tagged, leased path
# ==================================================================================


def test_every_vary_variant_is_tagged_and_dropped_by_its_tags(
    app: Flask, fennec: FennecCache
) -> None:
    renders: list[str] = []

    @app.get("/hello")
    @fennec.cache(ttl=300, tags=("greetings",))
    def hello() -> Response:
        language = request.headers.get("Accept-Language", "en")
        renders.append(language)
        response = make_response(f"hello in {language}")
        response.vary.add("Accept-Language")
        return response

    client = app.test_client()
    for language in ("en", "fr", "en", "fr"):
        assert client.get("/hello", headers={"Accept-Language": language}).status_code == 200
    assert renders == ["en", "fr"]
    backend = backend_of(app)
    entries = [backend.reader.read(k) for k in backend.keys("view:*")]
    variants = [e for e in entries if isinstance(e, Envelope) and hasattr(e.value, "body")]
    assert len(variants) == 2 and all(e.tags for e in variants)
    assert backend.invalidate_tags("greetings")
    for language in ("en", "fr"):
        assert (
            client.get("/hello", headers={"Accept-Language": language}).headers["X-Cache"] == "MISS"
        )
    assert renders == ["en", "fr", "en", "fr"]


def test_the_first_session_variant_is_dropped_by_its_tags(app: Flask, fennec: FennecCache) -> None:
    """A view that reads the session learns ``Vary: Cookie`` from its first response."""
    renders: list[str] = []

    @app.get("/profile")
    @fennec.cache(ttl=300, tags=("profiles",))
    def profile() -> str:
        renders.append(session["user"])
        return f"profile of {session['user']}"

    alice = logged_in(app, "alice")
    assert alice.get("/profile").headers["X-Cache"] == "MISS"
    assert alice.get("/profile").headers["X-Cache"] == "HIT"
    assert backend_of(app).invalidate_tags("profiles")
    refreshed = alice.get("/profile")
    assert refreshed.headers["X-Cache"] == "MISS"
    assert renders == ["alice", "alice"]


# ==================================================================================
# View keys: key=, query=, and helpers that take the view's arguments
# ==================================================================================


@pytest.fixture
def posts(app: Flask, fennec: FennecCache) -> list[tuple[int, str]]:
    renders: list[tuple[int, str]] = []

    @app.get("/posts/<int:post_id>")
    @fennec.cache(ttl=300)
    def post(post_id: int) -> Response:
        renders.append((post_id, request.query_string.decode()))
        response = make_response(f"post {post_id} {request.args.get('page', '1')}")
        response.vary.add("Accept-Language")
        return response

    return renders


def test_invalidate_drops_every_variant_of_one_view_arguments(
    app: Flask, posts: list[tuple[int, str]]
) -> None:
    client = app.test_client()
    requests = [
        ("/posts/3", "en"),
        ("/posts/3?page=2", "en"),
        ("/posts/3?page=2", "fr"),
        ("/posts/4", "en"),
    ]
    for _ in range(2):
        for path, language in requests:
            client.get(path, headers={"Accept-Language": language})
    assert len(posts) == 4
    view = view_of(app, "post")
    with app.app_context():
        assert view.invalidate(post_id=3) is True
        assert view.invalidate(post_id=3) is False
    for path, language in requests:
        client.get(path, headers={"Accept-Language": language})
    assert posts[4:] == [(3, ""), (3, "page=2"), (3, "page=2")]  # post 4 stayed cached


def test_view_helpers_take_positional_view_arguments_and_work_in_other_requests(
    app: Flask, posts: list[tuple[int, str]]
) -> None:
    view = view_of(app, "post")

    @app.post("/posts/<int:post_id>/edit")
    def edit(post_id: int) -> str:
        return str(view.invalidate(post_id))

    client = app.test_client()
    client.get("/posts/5")
    assert client.post("/posts/5/edit").get_data(as_text=True) == "True"
    client.get("/posts/5")
    assert posts == [(5, ""), (5, "")]
    with app.app_context():
        key = view.cache_key(post_id=5)
    assert key.startswith("view:") and "post_id=5" in key
    assert all(k.startswith(key) for k in backend_of(app).keys("view:*"))


def test_lookup_of_a_view_outside_its_requests_says_what_to_use(
    app: Flask, posts: list[tuple[int, str]]
) -> None:
    view = view_of(app, "post")
    with app.app_context(), pytest.raises(FennecCacheError, match="invalidate"):
        view.lookup(post_id=1)
    with app.test_request_context("/posts/1"):
        first = view.lookup(post_id=1)
        assert first.hit is False and isinstance(first.value, Response)
    with app.test_request_context("/posts/1"):
        assert view.lookup(post_id=1).hit is True


def test_a_key_template_on_a_view_is_filled_from_its_arguments(
    app: Flask, fennec: FennecCache
) -> None:
    renders: list[str] = []

    @app.get("/u/<name>/card")
    @fennec.cache(ttl=300, key="card:{name}")
    def card(name: str) -> str:
        renders.append(name)
        return f"card of {name}"

    @app.get("/c/<int:a>/<int:b>")
    @fennec.cache(ttl=300, key=lambda a, b: f"pair:{min(a, b)}-{max(a, b)}")
    def pair(a: int, b: int) -> str:
        renders.append(f"{a}{b}")
        return f"{a}+{b}"

    client = app.test_client()
    assert client.get("/u/ann/card?x=1").get_data(as_text=True) == "card of ann"
    assert client.get("/u/ann/card?x=1").headers["X-Cache"] == "HIT"
    assert client.get("/c/1/2").get_data(as_text=True) == "1+2"
    keys = backend_of(app).keys("view:*")
    assert any("card:ann" in k for k in keys) and any("pair:1-2" in k for k in keys)
    with app.app_context():
        assert view_of(app, "card").cache_key(name="ann").endswith(":card:ann")
        assert view_of(app, "card").invalidate(name="ann")
    assert client.get("/u/ann/card?x=1").headers["X-Cache"] == "MISS"
    assert renders == ["ann", "12", "ann"]


def test_a_key_template_naming_no_view_argument_is_refused(fennec: FennecCache) -> None:
    with pytest.raises(ValueError, match="post_id"):

        @fennec.cache(key="post:{post_id}")
        def post(slug: str) -> str:
            return slug


def test_query_names_the_parameters_that_enter_the_key(app: Flask, fennec: FennecCache) -> None:
    renders: list[str] = []

    @app.get("/list")
    @fennec.cache(ttl=300, query=("page", "sort"))
    def listing() -> str:
        renders.append(request.query_string.decode())
        return f"page {request.args.get('page', '1')} by {request.args.get('sort', 'date')}"

    client = app.test_client()
    assert client.get("/list?page=2&utm_source=a").get_data(as_text=True) == "page 2 by date"
    assert client.get("/list?utm_source=b&page=2").headers["X-Cache"] == "HIT"
    assert client.get("/list?page=2&sort=name").headers["X-Cache"] == "MISS"
    assert client.get("/list?page=3").headers["X-Cache"] == "MISS"
    assert len(renders) == 3


def test_query_must_be_a_sequence_of_names(fennec: FennecCache) -> None:
    with pytest.raises(ValueError, match="query"):
        fennec.cache(query="page")  # type: ignore[arg-type]


def test_an_invalidation_during_a_render_is_not_lost(app: Flask, fennec: FennecCache) -> None:
    """A render that began before ``invalidate()`` must not store its (older) response."""
    entered = threading.Event()
    release = threading.Event()
    version = {"n": 1}

    @app.get("/article/<int:article_id>")
    @fennec.cache(ttl=300)
    def article(article_id: int) -> str:
        seen = version["n"]
        if seen == 1:
            entered.set()
            release.wait(HANG)
        return f"version {seen}"

    client = app.test_client()
    slow = threading.Thread(target=lambda: client.get("/article/1"))
    slow.start()
    assert entered.wait(HANG)
    version["n"] = 2
    with app.app_context():
        assert view_of(app, "article").invalidate(article_id=1)  # drops the lease
    release.set()
    slow.join(HANG)
    assert wait_for(lambda: not slow.is_alive(), timeout=HANG)
    assert app.test_client().get("/article/1").get_data(as_text=True) == "version 2"


# ==================================================================================
# async def views (Flask's async support, flask[async])
# ==================================================================================


def test_an_async_view_is_cached(app: Flask, fennec: FennecCache) -> None:
    renders: list[int] = []

    @cache(ttl=60)
    async def load_item(item_id: int) -> dict[str, int]:
        renders.append(-item_id)
        return {"id": item_id}

    @app.get("/items/<int:item_id>")
    @fennec.cache(ttl=60, tags=("items",))
    async def item(item_id: int) -> Response:
        renders.append(item_id)
        return jsonify(await load_item(item_id))

    client = app.test_client()
    first = client.get("/items/2")
    assert first.status_code == 200 and first.get_json() == {"id": 2}
    assert first.headers["X-Cache"] == "MISS"
    second = client.get("/items/2")
    assert second.headers["X-Cache"] == "HIT" and second.get_json() == {"id": 2}
    assert renders == [2, -2]
    assert backend_of(app).invalidate_tags("items")
    assert client.get("/items/2").headers["X-Cache"] == "MISS"
    assert renders == [2, -2, 2]  # the helper's own entry was still fresh


def test_an_async_view_bypassed_by_unless_says_so(app: Flask, fennec: FennecCache) -> None:
    @cache(ttl=60, unless=lambda: True)
    async def helper() -> str:
        return "helper"

    @app.get("/async-fresh")
    @fennec.cache(ttl=60, unless=lambda: request.args.get("fresh") == "1")
    async def fresh() -> str:
        return await helper()

    client = app.test_client()
    bypassed = client.get("/async-fresh?fresh=1")
    assert bypassed.get_data(as_text=True) == "helper"
    assert (bypassed.headers["X-Cache"], bypassed.headers["X-Cache-Bypass"]) == ("BYPASS", "unless")
    assert client.get("/async-fresh").headers["X-Cache"] == "MISS"
    assert backend_of(app).get_stats()["by_name"]["fresh"]["bypass_reasons"] == {"unless": 1}


def test_an_async_view_reading_the_session_varies_on_the_cookie(
    app: Flask, fennec: FennecCache
) -> None:
    @app.get("/async-me")
    @fennec.cache(ttl=60)
    async def me() -> str:
        return f"me: {session['user']}"

    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    assert alice.get("/async-me").get_data(as_text=True) == "me: alice"
    assert bob.get("/async-me").get_data(as_text=True) == "me: bob"
    assert alice.get("/async-me").headers["X-Cache"] == "HIT"


def test_a_view_argument_that_cannot_be_hashed_is_still_keyed(
    app: Flask, fennec: FennecCache
) -> None:
    class ListConverter(BaseConverter):
        def to_python(self, value: str) -> list[str]:
            return value.split("+")

        def to_url(self, value: Any) -> str:
            return "+".join(value)

    app.url_map.converters["list"] = ListConverter
    renders: list[list[str]] = []

    @app.get("/pick/<list:names>")
    @fennec.cache(ttl=60)
    def pick(names: list[str]) -> str:
        renders.append(names)
        return ",".join(names)

    client = app.test_client()
    answers = [client.get(path) for path in ("/pick/a+b", "/pick/a+b", "/pick/c")]
    assert [r.headers["X-Cache"] for r in answers] == ["MISS", "HIT", "MISS"]
    assert [r.text for r in answers] == ["a,b", "a,b", "c"]
    assert renders == [["a", "b"], ["c"]]
    with app.app_context():
        assert view_of(app, "pick").invalidate(names=["a", "b"])
    assert client.get("/pick/a+b").headers["X-Cache"] == "MISS"
