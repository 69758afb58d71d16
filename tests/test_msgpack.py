"""The opt-in MessagePack serializer through the backend, the near cache and app config."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import NamedTuple

import pytest
from _servers import RedisServer
from _support import CacheFactory
from flask import Flask
from markupsafe import Markup

from flask_fennec_cache import (
    ConfigurationError,
    FennecCache,
    RedisCache,
    SerializationError,
    _messagepack,
)


class Kind(enum.IntEnum):
    BLOB = 2


class Span(NamedTuple):
    start: int
    end: int


VALUE = {"id": 7, "avatar": b"\x89PNG\r\n", "scores": {1: 0.5, 2: 0.75}, "tags": ["a", None]}


def stored(backend: RedisCache, key: str) -> bytes:
    data = backend.client.get(backend.prefix + key)
    assert isinstance(data, bytes)
    return data


def test_msgpack_entries_round_trip_bytes_and_int_keys(cache_factory: CacheFactory) -> None:
    backend = cache_factory(serializer="msgpack")
    assert backend.set("user", VALUE)
    assert stored(backend, "user")[:1] == b"m"
    assert backend.get("user") == VALUE
    rows = [{"id": i, "blob": bytes(range(i % 200)) * 3} for i in range(60)]
    assert backend.set("rows", rows)
    assert stored(backend, "rows")[:1] == b"z"  # compressed like any other entry
    assert backend.get("rows") == rows


def test_unstorable_msgpack_values_raise_naming_the_problem(
    cache_factory: CacheFactory,
) -> None:
    backend = cache_factory(serializer="msgpack")
    with pytest.raises(SerializationError, match="tuple"):
        backend.set("k", {"t": (1, 2)})
    assert backend.get("k") is None


def test_msgpack_refuses_lookalike_types_at_any_depth_naming_the_path(
    cache_factory: CacheFactory,
) -> None:
    """Strict types: an OrderedDict, an enum member or a namedtuple would come back as its base."""
    backend = cache_factory(serializer="msgpack")
    for part, what in ((OrderedDict(a=1), "an OrderedDict"), (Kind.BLOB, "Kind.BLOB"),
                       (Span(1, 2), "a Span"), (Markup("<b>x</b>"), "a Markup")):  # fmt: skip
        with pytest.raises(SerializationError) as caught:
            backend.set("doc:1", {"parts": [b"x", {7: part}]})
        assert f'value["parts"][1][7] is {what}' in str(caught.value)
        assert "'doc:1'" in str(caught.value)
    assert backend.get("doc:1") is None


def test_markup_round_trips_through_msgpack_caches_and_their_near_cache(
    redis_server: RedisServer, prefix: str
) -> None:
    near = RedisCache(redis_server.url, prefix=prefix, near_cache=True, serializer="msgpack")
    try:
        fragment = Markup("<ul><li>Zoë</li></ul>" * 100)  # compressed as well
        near.set("menu", fragment)
        assert stored(near, "menu")[:1] == b"z"
        for _ in range(3):
            got = near.get("menu")
            assert type(got) is Markup and got == fragment
        assert near.get_stats()["near_hits"] >= 1
    finally:
        near.close()


def test_caches_read_entries_whatever_serializer_wrote_them(cache_factory: CacheFactory) -> None:
    """Switching the serializer needs no flush: entries are read by their tag."""
    packed = cache_factory(serializer="msgpack")
    plain = cache_factory()
    packed.set("a", {"x": [1, 2]})
    plain.set("b", {"y": "z"})
    assert plain.get("a") == {"x": [1, 2]}
    assert packed.get("b") == {"y": "z"}


def test_the_near_cache_hands_out_fresh_msgpack_values(
    redis_server: RedisServer, prefix: str
) -> None:
    near = RedisCache(redis_server.url, prefix=prefix, near_cache=True, serializer="msgpack")
    try:
        near.set("k", VALUE)
        for _ in range(3):
            got = near.get("k")
            assert got == VALUE
            got["id"] = -1  # a caller changing its copy changes nobody else's
        assert near.get_stats()["near_hits"] >= 1
    finally:
        near.close()


def test_app_config_selects_msgpack(memory_url: str) -> None:
    app = Flask(__name__)
    app.config.update(FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_SERIALIZER="msgpack")
    FennecCache(app)
    backend: RedisCache = app.extensions["fennec_cache"]
    try:
        backend.set("k", b"bytes")
        assert backend.get("k") == b"bytes"
    finally:
        backend.close()


def test_msgpack_without_the_package_is_a_configuration_error(
    memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_messagepack, "msgpack", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'flask-fennec-cache\[msgpack\]'"):
        RedisCache(memory_url, serializer="msgpack")
    with pytest.raises(ConfigurationError, match="'json', 'msgpack' or 'pickle'"):
        RedisCache(memory_url, serializer="yaml")


def test_a_msgpack_entry_read_without_the_package_is_a_miss(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cache_factory(serializer="msgpack")
    backend.set("k", {"v": 1})
    monkeypatch.setattr(_messagepack, "msgpack", None)
    assert backend.get("k") is None
