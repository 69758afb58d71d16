"""A loader's ``CacheResult``: its own TTL and tags, or not stored; the caller gets the value."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from _support import CacheFactory
from flask import Flask, make_response

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    CacheResult,
    ConfigurationError,
    FennecCache,
    RedisCache,
    cache,
)
from flask_fennec_cache.serializers import decode


def raw(backend: RedisCache, key: str) -> Any:
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def pttl(backend: RedisCache, key: str) -> int:
    return int(backend.client.pttl(backend.prefix + key))


def value_keys(backend: RedisCache) -> list[str]:
    """The value keys under *backend*'s prefix (not the library's own)."""
    names = (name.decode() for name in backend.client.scan_iter(match=backend.prefix + "*"))
    return [n[len(backend.prefix) :] for n in names if "__fennec__:" not in n]


def test_a_function_s_result_chooses_its_ttl(backend: RedisCache) -> None:
    calls: list[int] = []

    @cache(ttl=30, backend=backend)
    def upstream(item: int) -> CacheResult[str]:
        calls.append(item)
        return CacheResult(f"item {item}", ttl=900)

    assert upstream(4) == "item 4"
    assert upstream.lookup(4) == (("item 4", True, upstream.cache_key(4)))
    assert calls == [4]
    assert raw(backend, upstream.cache_key(4)) == "item 4"
    assert pttl(backend, upstream.cache_key(4)) > 30_000  # the result's 900 s, not the 30 s


def test_a_result_that_says_store_false_is_returned_and_not_stored(backend: RedisCache) -> None:
    calls: list[str] = []

    @cache(ttl=60, backend=backend)
    def degraded(name: str) -> CacheResult[dict[str, str]]:
        calls.append(name)
        return CacheResult({"name": name, "partial": "yes"}, store=False)

    assert degraded("a") == {"name": "a", "partial": "yes"}
    assert raw(backend, degraded.cache_key("a")) is MISSING  # not even a lease left behind
    assert degraded.lookup("a").hit is False
    assert calls == ["a", "a"]


def test_a_result_s_own_tags_invalidate_it(backend: RedisCache) -> None:
    calls: list[int] = []

    @cache(ttl=300, backend=backend, tags=("profiles",))
    def profile(user_id: int) -> CacheResult[str]:
        calls.append(user_id)
        return CacheResult(f"user {user_id}", tags=(f"user:{user_id}",))

    assert profile(7) == profile(7) == "user 7"
    assert profile(8) == "user 8"
    assert calls == [7, 8]
    assert backend.invalidate_tags("user:7")
    assert profile(7) == "user 7"
    assert profile(8) == "user 8"  # untouched by another user's tag
    assert calls == [7, 8, 7]
    assert backend.invalidate_tags("profiles")  # the decorator's tag still applies
    assert profile(8) == "user 8"
    assert calls == [7, 8, 7, 8]


def test_a_none_result_is_stored_only_with_cache_none(backend: RedisCache) -> None:
    calls: list[str] = []

    @cache(ttl=60, backend=backend)
    def missing(name: str) -> CacheResult[None]:
        calls.append(name)
        return CacheResult(None, ttl=5)

    @cache(ttl=60, backend=backend, cache_none=True)
    def negative(name: str) -> CacheResult[None]:
        calls.append(name)
        return CacheResult(None, ttl=500)

    assert missing("m") is None and missing("m") is None
    assert negative("n") is None and negative("n") is None
    assert calls == ["m", "m", "n"]
    assert pttl(backend, negative.cache_key("n")) > 60_000


def test_cache_aside_loaders_return_results_too(backend: RedisCache) -> None:
    aside = CacheAside(backend, ttl=30)
    assert aside.get("long", lambda: CacheResult("kept", ttl=900)) == "kept"
    assert pttl(backend, "long") > 30_000
    assert aside.lookup("long", lambda: "unused") == ("kept", True, "long")
    assert aside.get("skip", lambda: CacheResult("once", store=False)) == "once"
    assert raw(backend, "skip") is MISSING
    assert aside.get("tagged", lambda: CacheResult(1, tags=("t",))) == 1
    backend.invalidate_tags("t")
    assert aside.lookup("tagged", lambda: 2) == (2, False, "tagged")


def test_a_stale_serving_entry_keeps_its_chosen_freshness(backend: RedisCache) -> None:
    aside = CacheAside(backend, ttl=30, stale_ttl=100)
    assert aside.get("k", lambda: CacheResult("v", ttl=900)) == "v"
    # Fresh for the result's 900 s, then kept 100 s more for stale serving.
    assert pttl(backend, "k") > 930_000


def test_the_caller_never_sees_a_result_wrapper(backend: RedisCache) -> None:
    bypass = [True]

    @cache(ttl=60, backend=backend, unless=lambda: bypass[0])
    def wrapped() -> CacheResult[str]:
        return CacheResult("plain", ttl=10)

    assert wrapped() == "plain"  # bypassed
    bypass[0] = False
    assert wrapped() == "plain"
    assert wrapped() == "plain"


def test_coroutine_functions_return_results(backend: RedisCache) -> None:
    calls: list[int] = []

    @cache(ttl=30, backend=backend)
    async def fetch(n: int) -> CacheResult[int]:
        calls.append(n)
        return CacheResult(n * 2, ttl=900, store=n != 0)

    async def main() -> list[int]:
        return [await fetch(3), await fetch(3), await fetch(0), await fetch(0)]

    assert asyncio.run(main()) == [6, 6, 0, 0]
    assert calls == [3, 0, 0]
    assert pttl(backend, fetch.cache_key(3)) > 30_000


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("inf")}, "ttl"),
        ({"tags": "users"}, "tags"),
        ({"tags": (1,)}, "tags"),
    ],
)
def test_a_bad_result_option_is_a_configuration_error(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        CacheResult("v", **options)


# -- views -------------------------------------------------------------------------------------


@pytest.fixture
def view_app(cache_factory: CacheFactory) -> Iterator[Flask]:
    app = Flask(f"results_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        FENNEC_CACHE_URL=cache_factory.url,
        FENNEC_CACHE_PREFIX=f"results-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)
    yield app
    app.extensions["fennec_cache"].close()


def test_a_view_s_result_chooses_its_ttl_tags_or_not_to_be_stored(view_app: Flask) -> None:
    backend: RedisCache = view_app.extensions["fennec_cache"]
    renders: list[str] = []

    @view_app.get("/page/<name>")
    @cache(ttl=30)
    def page(name: str) -> Any:
        renders.append(name)
        if name == "draft":
            return CacheResult(make_response(f"draft {name}", 200), store=False)
        return CacheResult(f"page {name}", ttl=900, tags=(f"page:{name}",))

    client = view_app.test_client()
    first = client.get("/page/home")
    assert (first.status_code, first.text, first.headers["X-Cache"]) == (200, "page home", "MISS")
    again = client.get("/page/home")
    assert (again.text, again.headers["X-Cache"]) == ("page home", "HIT")
    [key] = value_keys(backend)
    assert pttl(backend, key) > 30_000

    for _ in range(2):
        draft = client.get("/page/draft")
        assert (draft.text, draft.headers["X-Cache"]) == ("draft draft", "BYPASS")
        assert draft.headers["X-Cache-Bypass"] == "store-false"
    assert renders == ["home", "draft", "draft"]

    backend.invalidate_tags("page:home")
    assert client.get("/page/home").headers["X-Cache"] == "MISS"
    assert renders == ["home", "draft", "draft", "home"]


def test_a_view_s_chosen_ttl_is_its_max_age(view_app: Flask) -> None:
    @view_app.get("/feed")
    @cache(ttl=30, cache_control=True)
    def feed() -> Any:
        return CacheResult("feed", ttl=120)

    response = view_app.test_client().get("/feed")
    assert response.headers["Cache-Control"] == "max-age=120"
    assert view_app.test_client().post("/feed").status_code == 405
