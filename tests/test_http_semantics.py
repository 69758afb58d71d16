"""HTTP semantics of cached views: ETag, 304, Cache-Control, Age, HEAD and response filters."""

from __future__ import annotations

import hashlib
import io
import logging
import time
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, make_response, request, send_file, session
from flask.testing import FlaskClient

from flask_fennec_cache import CacheResult, FennecCache, RedisCache, cache
from flask_fennec_cache import _views as views_module


@pytest.fixture
def app(memory_url: str) -> Iterator[Flask]:
    app = Flask(f"http_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_PREFIX=f"http-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)
    yield app
    backend_of(app).close()


@pytest.fixture
def fennec(app: Flask) -> FennecCache:
    return FennecCache()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def calls() -> list[str]:
    return []


def backend_of(app: Flask) -> RedisCache:
    backend: RedisCache = app.extensions["fennec_cache"]
    return backend


def body_etag(body: bytes) -> str:
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


@pytest.fixture
def doc(app: Flask, fennec: FennecCache, calls: list[str]) -> str:
    @app.get("/doc")
    @fennec.cache(ttl=60)
    def doc() -> str:
        calls.append(request.method)
        return "document body"

    return "/doc"


# ==================================================================================
# ETag
# ==================================================================================


def test_cached_responses_carry_a_strong_etag_of_the_body(client: FlaskClient, doc: str) -> None:
    miss = client.get(doc)
    hit = client.get(doc)
    assert miss.headers["X-Cache"] == "MISS" and hit.headers["X-Cache"] == "HIT"
    assert miss.headers["ETag"] == hit.headers["ETag"] == body_etag(b"document body")
    assert not hit.headers["ETag"].startswith("W/")


def test_the_etag_is_computed_once_at_store_time(
    client: FlaskClient, doc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests: list[bytes] = []

    def counting_blake2b(data: bytes, **kwargs: Any) -> Any:
        digests.append(data)
        return hashlib.blake2b(data, **kwargs)

    counting = types.SimpleNamespace(blake2b=counting_blake2b)
    monkeypatch.setattr(views_module, "hashlib", counting)
    client.get(doc)
    for _ in range(3):
        client.get(doc)
        client.get(doc, headers={"If-None-Match": body_etag(b"document body")})
    assert digests == [b"document body"]


def test_a_view_s_own_etag_is_kept(app: Flask, fennec: FennecCache, client: FlaskClient) -> None:
    @app.get("/versioned")
    @fennec.cache(ttl=60)
    def versioned() -> tuple[str, int, dict[str, str]]:
        return "v1 body", 200, {"ETag": 'W/"v1"'}

    assert client.get("/versioned").headers["ETag"] == 'W/"v1"'
    hit = client.get("/versioned")
    assert hit.headers["X-Cache"] == "HIT" and hit.headers.getlist("ETag") == ['W/"v1"']
    not_modified = client.get("/versioned", headers={"If-None-Match": 'W/"v1"'})
    assert not_modified.status_code == 304
    assert client.get("/versioned", headers={"If-None-Match": '"v1"'}).status_code == 304


def test_uncacheable_responses_get_no_etag(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/missing")
    @fennec.cache(ttl=60)
    def missing() -> tuple[str, int]:
        return "nope", 404

    @app.get("/secret")
    @fennec.cache(ttl=60)
    def secret() -> tuple[str, int, dict[str, str]]:
        return "s", 200, {"Cache-Control": "no-store"}

    for path in ("/missing", "/secret"):
        response = client.get(path, headers={"If-None-Match": "*"})
        assert response.status_code != 304
        assert "ETag" not in response.headers


def test_vary_variants_have_their_own_etags(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/greeting")
    @fennec.cache(ttl=60)
    def greeting() -> Response:
        response = Response(f"hello in {request.headers.get('Accept-Language', '-')}")
        response.vary.add("Accept-Language")
        return response

    en = client.get("/greeting", headers={"Accept-Language": "en"})
    fr = client.get("/greeting", headers={"Accept-Language": "fr"})
    assert en.headers["ETag"] != fr.headers["ETag"]
    en_304 = client.get(
        "/greeting", headers={"Accept-Language": "en", "If-None-Match": en.headers["ETag"]}
    )
    assert en_304.status_code == 304 and en_304.headers["Vary"] == "Accept-Language"
    fr_200 = client.get(
        "/greeting", headers={"Accept-Language": "fr", "If-None-Match": en.headers["ETag"]}
    )
    assert fr_200.status_code == 200 and fr_200.get_data(as_text=True) == "hello in fr"


# ==================================================================================
# 304 Not Modified
# ==================================================================================


def test_a_matching_if_none_match_on_a_hit_is_304(
    client: FlaskClient, doc: str, calls: list[str]
) -> None:
    etag = client.get(doc).headers["ETag"]
    response = client.get(doc, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.get_data() == b""
    assert response.headers["ETag"] == etag
    assert response.headers["X-Cache"] == "HIT"
    assert "Age" in response.headers
    assert "Content-Type" not in response.headers
    assert calls == ["GET"]


def test_a_matching_if_none_match_on_a_miss_is_304_and_still_stored(
    client: FlaskClient, doc: str, calls: list[str]
) -> None:
    etag = body_etag(b"document body")
    response = client.get(doc, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.headers["X-Cache"] == "MISS"
    assert response.headers["ETag"] == etag
    assert response.get_data() == b""
    full = client.get(doc)
    assert full.status_code == 200 and full.headers["X-Cache"] == "HIT"
    assert full.get_data() == b"document body"
    assert calls == ["GET"]


@pytest.mark.parametrize(
    "header",
    [
        "{etag}",
        "W/{etag}",
        '"other", {etag}',
        '"a",W/"b", {etag} ',
        "*",
    ],
)
def test_if_none_match_uses_weak_comparison_and_lists(
    client: FlaskClient, doc: str, header: str
) -> None:
    etag = client.get(doc).headers["ETag"]
    assert client.get(doc, headers={"If-None-Match": header.format(etag=etag)}).status_code == 304


@pytest.mark.parametrize("header", ['"other"', 'W/"other"', "garbage", ""])
def test_a_non_matching_if_none_match_gets_the_full_response(
    client: FlaskClient, doc: str, header: str
) -> None:
    client.get(doc)
    response = client.get(doc, headers={"If-None-Match": header})
    assert response.status_code == 200
    assert response.get_data() == b"document body"


def test_a_304_keeps_the_caching_headers(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/page")
    @fennec.cache(ttl=60)
    def page() -> tuple[str, int, dict[str, str]]:
        return "page", 200, {"Cache-Control": "public, max-age=30", "X-Other": "1"}

    etag = client.get("/page").headers["ETag"]
    response = client.get("/page", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.headers["Cache-Control"] == "public, max-age=30"
    assert "X-Other" not in response.headers


def test_if_none_match_on_an_uncached_method_is_ignored(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.route("/form", methods=["GET", "POST"])
    @fennec.cache(ttl=60)
    def form() -> str:
        return "form"

    etag = client.get("/form").headers["ETag"]
    assert client.post("/form", headers={"If-None-Match": etag}).status_code == 200


# ==================================================================================
# Cache-Control
# ==================================================================================


def test_no_cache_control_unless_asked(client: FlaskClient, doc: str) -> None:
    assert "Cache-Control" not in client.get(doc).headers
    assert "Cache-Control" not in client.get(doc).headers


def test_cache_control_max_age_from_the_ttl(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/cc")
    @fennec.cache(ttl=90.7, cache_control=True)
    def cc() -> str:
        return "cc"

    @app.get("/plain-cc")
    @cache(ttl=45, cache_control=True)
    def plain_cc() -> str:
        return "plain"

    @app.get("/default-cc")
    @fennec.cache(cache_control=True)
    def default_cc() -> str:
        return "default"

    miss, hit = client.get("/cc"), client.get("/cc")
    assert miss.headers["Cache-Control"] == hit.headers["Cache-Control"]
    backend = backend_of(app)
    for path, ttl in (("/cc", 90.7), ("/plain-cc", 45), ("/default-cc", 300)):
        control = client.get(path).headers["Cache-Control"]
        max_age = int(control.removeprefix("max-age="))
        # TTL jitter (10 %) shortens the entry's life, and max-age says the life it got.
        assert ttl * (1 - backend.ttl_jitter) - 1 <= max_age <= ttl
        [key] = backend.keys(f"view:*{path}")
        seconds_in_redis = backend.client.pttl(backend.prefix + key) / 1000
        assert max_age - 1 < seconds_in_redis <= max_age + 1


def test_cache_control_max_age_is_the_ttl_without_jitter(memory_url: str) -> None:
    app = Flask("no_jitter")
    app.config.update(
        FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_PREFIX="nojit:", FENNEC_CACHE_TTL_JITTER=0
    )
    fennec = FennecCache(app)

    @app.get("/cc")
    @fennec.cache(ttl=90.7, cache_control=True)
    def cc() -> str:
        return "cc"

    client = app.test_client()
    miss, hit = client.get("/cc"), client.get("/cc")
    assert miss.headers["Cache-Control"] == hit.headers["Cache-Control"] == "max-age=90"
    assert hit.headers["X-Cache"] == "HIT"
    backend_of(app).close()


def test_cache_control_keeps_the_view_s_own(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/own")
    @fennec.cache(ttl=60, cache_control=True)
    def own() -> tuple[str, int, dict[str, str]]:
        return "own", 200, {"Cache-Control": "public, s-maxage=10"}

    @app.get("/error")
    @fennec.cache(ttl=60, cache_control=True)
    def error() -> tuple[str, int]:
        return "err", 500

    assert client.get("/own").headers["Cache-Control"] == "public, s-maxage=10"
    assert client.get("/own").headers["Cache-Control"] == "public, s-maxage=10"
    assert "Cache-Control" not in client.get("/error").headers


def test_cache_control_without_any_ttl_is_left_out(memory_url: str) -> None:
    app = Flask("no_ttl")
    app.config.update(
        FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_PREFIX="nottl:", FENNEC_CACHE_DEFAULT_TTL=0
    )
    FennecCache(app)

    @app.get("/forever")
    @cache(cache_control=True)
    def forever() -> str:
        return "forever"

    client = app.test_client()
    assert "Cache-Control" not in client.get("/forever").headers
    assert client.get("/forever").headers["X-Cache"] == "HIT"
    backend_of(app).close()


# ==================================================================================
# Age
# ==================================================================================


def test_hits_carry_their_age(
    client: FlaskClient, doc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = time.time()
    monkeypatch.setattr(views_module, "time", types.SimpleNamespace(time=lambda: stored))
    miss = client.get(doc)
    assert "Age" not in miss.headers
    monkeypatch.setattr(views_module, "time", types.SimpleNamespace(time=lambda: stored + 42.9))
    hit = client.get(doc)
    assert hit.headers["Age"] == "42"
    assert hit.headers.getlist("Age") == ["42"]
    assert client.get(doc, headers={"If-None-Match": "*"}).headers["Age"] == "42"
    monkeypatch.setattr(views_module, "time", types.SimpleNamespace(time=lambda: stored - 5))
    assert client.get(doc).headers["Age"] == "0"  # a clock behind the writer's never goes negative


def test_a_stored_age_header_is_not_replayed(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/proxied")
    @fennec.cache(ttl=60)
    def proxied() -> tuple[str, int, dict[str, str]]:
        return "from upstream", 200, {"Age": "999"}

    client.get("/proxied")
    assert client.get("/proxied").headers.getlist("Age") == ["0"]


# ==================================================================================
# HEAD
# ==================================================================================


def test_head_is_served_from_the_get_entry(client: FlaskClient, doc: str, calls: list[str]) -> None:
    got = client.get(doc)
    head = client.head(doc)
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["X-Cache"] == "HIT"
    assert head.headers["ETag"] == got.headers["ETag"]
    assert head.headers["Content-Length"] == got.headers["Content-Length"]
    assert client.head(doc, headers={"If-None-Match": got.headers["ETag"]}).status_code == 304
    assert calls == ["GET"]


def test_a_head_miss_fills_the_entry_for_get(
    client: FlaskClient, doc: str, calls: list[str]
) -> None:
    head = client.head(doc)
    assert head.headers["X-Cache"] == "MISS" and head.get_data() == b""
    got = client.get(doc)
    assert got.headers["X-Cache"] == "HIT" and got.get_data() == b"document body"
    assert got.headers["ETag"] == head.headers["ETag"]
    assert calls == ["HEAD"]


# ==================================================================================
# response_filter
# ==================================================================================


def test_response_filter_decides_cacheability(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    seen: list[Any] = []
    bodies = iter([{"ok": False}, {"ok": True}, {"ok": True}])

    def only_ok(response: Response) -> bool:
        seen.append(response.get_json())
        return bool(response.get_json()["ok"])

    @app.get("/status")
    @fennec.cache(ttl=60, response_filter=only_ok)
    def status() -> dict[str, bool]:
        return next(bodies)

    first = client.get("/status")
    assert first.headers["X-Cache"] == "BYPASS" and "ETag" not in first.headers
    assert first.headers["X-Cache-Bypass"] == "filter"
    assert backend_of(app).keys() == []
    second = client.get("/status")
    assert second.headers["X-Cache"] == "MISS" and "ETag" in second.headers
    third = client.get("/status")
    assert third.headers["X-Cache"] == "HIT" and third.get_json() == {"ok": True}
    assert seen == [{"ok": False}, {"ok": True}]  # hits never call the filter


def test_response_filter_comes_after_the_built_in_rules(app: Flask, client: FlaskClient) -> None:
    seen: list[int] = []

    def anything(response: Response) -> bool:
        seen.append(response.status_code)
        return True

    @app.get("/fails")
    @cache(ttl=60, response_filter=anything)
    def fails() -> tuple[str, int]:
        return "err", 503

    client.get("/fails")
    client.get("/fails")
    assert seen == []
    assert backend_of(app).keys() == []


def test_a_response_filter_that_rejects_everything_with_a_matching_etag(
    app: Flask, client: FlaskClient
) -> None:
    @app.get("/never")
    @cache(ttl=60, response_filter=lambda response: False)
    def never() -> tuple[str, int, dict[str, str]]:
        return "never", 200, {"ETag": '"fixed"'}

    response = client.get("/never", headers={"If-None-Match": '"fixed"'})
    assert response.status_code == 200  # not cached, so left to the view entirely


def test_a_hit_is_the_miss_s_response_plus_x_cache_and_age(client: FlaskClient, doc: str) -> None:
    """Hits are assembled without Werkzeug's per-header checks: same headers, same order."""
    miss = client.get(doc)
    hit = client.get(doc)
    expected = [(n, v) for n, v in miss.headers.items() if n != "X-Cache"]
    age = hit.headers["Age"]
    assert list(hit.headers.items()) == [*expected, ("X-Cache", "HIT"), ("Age", age)]
    assert int(age) in (0, 1)
    assert (hit.status_code, hit.get_data()) == (miss.status_code, miss.get_data())


def test_hits_are_instances_of_the_app_s_response_class(memory_url: str) -> None:
    class AppResponse(Response):
        pass

    app = Flask(f"cls_{uuid.uuid4().hex[:8]}")
    app.response_class = AppResponse
    app.config.update(FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_PREFIX="cls:")
    fennec = FennecCache(app)
    seen: list[type] = []

    @app.get("/page")
    @fennec.cache(ttl=60)
    def page() -> str:
        return "page"

    @app.after_request
    def record(response: Response) -> Response:
        seen.append(type(response))
        return response

    try:
        with app.test_client() as client:
            assert [client.get("/page").headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
        assert seen == [AppResponse, AppResponse]
    finally:
        backend_of(app).close()


def test_hits_are_the_same_without_werkzeug_s_list(
    client: FlaskClient, doc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback for a Werkzeug that stores headers otherwise builds the same hit."""
    miss = client.get(doc)
    fast = client.get(doc)
    monkeypatch.setattr(views_module, "FAST_HEADERS", False)
    slow = client.get(doc)
    assert fast.headers["X-Cache"] == slow.headers["X-Cache"] == "HIT"
    assert fast.get_data() == slow.get_data() == miss.get_data()
    dropped = {"Age", "X-Cache", "Date"}
    assert [h for h in slow.headers.items() if h[0] not in dropped] == [
        h for h in fast.headers.items() if h[0] not in dropped
    ]


# ==================================================================================
# X-Cache: BYPASS — a response that cannot be cached says why
# ==================================================================================


def _streamed() -> Response:
    return Response((part for part in (b"a", b"b")), mimetype="text/plain")


def _sent_file() -> Response:
    return send_file(io.BytesIO(b"file body"), mimetype="text/plain")


def _cookie() -> Response:
    response = make_response("with a cookie")
    response.set_cookie("seen", "1")
    return response


def _session_write() -> str:
    session["visits"] = session.get("visits", 0) + 1
    return "counted"


def _headers(**headers: str) -> Callable[[], Response]:
    return lambda: Response("body", headers=headers)


#: Every reason a view's response is refused, with a view that gives it.
BYPASSING_VIEWS: dict[str, Callable[[], Any]] = {
    "store-false": lambda: CacheResult("draft", store=False),
    "session": _session_write,
    "status": lambda: ("not found", 404),
    "streamed": _streamed,
    "passthrough": _sent_file,
    "cookie": _cookie,
    "no-store": _headers(**{"Cache-Control": "no-store"}),
    "private": _headers(**{"Cache-Control": "private, max-age=60"}),
    "vary": _headers(Vary="*"),
    "filter": lambda: "refused by the filter",
}


@pytest.mark.parametrize("reason", sorted(BYPASSING_VIEWS))
def test_a_response_that_cannot_be_cached_says_bypass_and_why(
    app: Flask, fennec: FennecCache, client: FlaskClient, reason: str
) -> None:
    app.secret_key = "a test secret of some length"

    @app.get("/refused")
    @fennec.cache(ttl=60, response_filter=lambda response: reason != "filter")
    def refused() -> Any:
        return BYPASSING_VIEWS[reason]()

    for _ in range(2):  # never stored, so the second is refused again
        response = client.get("/refused")
        response.close()
        assert response.headers["X-Cache"] == "BYPASS"
        assert response.headers["X-Cache-Bypass"] == reason
    assert [key for key in backend_of(app).keys() if "__fennec__" not in key] == []
    stats = backend_of(app).get_stats()
    assert stats["bypasses"] == 2
    assert stats["by_name"]["refused"]["bypass_reasons"] == {reason: 2}


@pytest.mark.parametrize(
    ("method", "headers", "reason"),
    [("POST", {}, "method"), ("GET", {"Authorization": "Bearer secret"}, "authorization")],
)
def test_requests_that_bypass_the_cache_say_why(
    app: Flask,
    fennec: FennecCache,
    client: FlaskClient,
    method: str,
    headers: dict[str, str],
    reason: str,
) -> None:
    @app.route("/form", methods=["GET", "POST"])
    @fennec.cache(ttl=60)
    def form() -> str:
        return "the form"

    response = client.open("/form", method=method, headers=headers)
    assert (response.headers["X-Cache"], response.headers["X-Cache-Bypass"]) == ("BYPASS", reason)
    assert backend_of(app).get_stats()["by_name"]["form"]["bypass_reasons"] == {reason: 1}
    assert client.get("/form").headers["X-Cache"] == "MISS"  # a plain GET is still cached


def test_a_bypass_is_logged_at_debug_with_the_view_s_name_and_reason(
    app: Flask, fennec: FennecCache, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/mine")
    @fennec.cache(ttl=60, name="my-page")
    def mine() -> Response:
        return _headers(**{"Cache-Control": "private"})()

    with caplog.at_level(logging.DEBUG, logger="flask_fennec_cache"):
        client.get("/mine")
    [record] = [r for r in caplog.records if "not caching the response" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "my-page" in record.getMessage() and record.getMessage().endswith(": private")
    assert backend_of(app).get_stats()["by_name"]["my-page"]["bypass_reasons"] == {"private": 1}


def test_cached_responses_carry_no_bypass_header(client: FlaskClient, doc: str) -> None:
    miss, hit = client.get("/doc"), client.get("/doc")
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert "X-Cache-Bypass" not in miss.headers and "X-Cache-Bypass" not in hit.headers
    assert backend_of(client.application).get_stats()["bypasses"] == 0


def test_a_view_s_own_bypass_header_is_not_replayed_on_hits(
    app: Flask, fennec: FennecCache, client: FlaskClient
) -> None:
    @app.get("/upstream")
    @fennec.cache(ttl=60)
    def upstream() -> Response:
        return Response("proxied", headers={"X-Cache-Bypass": "upstream"})

    client.get("/upstream")
    hit = client.get("/upstream")
    assert hit.headers["X-Cache"] == "HIT" and "X-Cache-Bypass" not in hit.headers
