"""Large values are compressed (zlib, or zstd) and come back unchanged; bombs are refused."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import pytest
from _support import CacheFactory

from flask_fennec_cache import ConfigurationError, RedisCache
from flask_fennec_cache.compression import Compressor
from flask_fennec_cache.serializers import CorruptEntry, decode

ROWS = {"items": [{"id": i, "name": f"user {i}", "email": f"u{i}@example.com"} for i in range(150)]}


def stored(backend: RedisCache, key: str) -> bytes:
    data = backend.client.get(backend.prefix + key)
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize("method", ["zlib", "zstd"])
def test_compressible_values_over_the_threshold_take_at_most_half_the_json(
    cache_factory: CacheFactory, method: str
) -> None:
    backend = cache_factory(compression=method)
    assert backend.set("rows", ROWS)
    data = stored(backend, "rows")
    assert data[:1] == (b"z" if method == "zlib" else b"Z")
    assert len(data) <= 0.5 * len(json.dumps(ROWS, separators=(",", ":")))
    assert backend.get("rows") == ROWS


def test_small_and_incompressible_values_are_stored_as_they_are(
    cache_factory: CacheFactory,
) -> None:
    backend = cache_factory()
    backend.set("small", {"a": 1})
    assert stored(backend, "small") == b'j{"a":1}'
    incompressible = os.urandom(4096)
    assert Compressor()(incompressible) is incompressible  # would not save a tenth


def test_envelopes_keep_their_version_in_front_for_compare_and_set(
    cache_factory: CacheFactory,
) -> None:
    backend = cache_factory()
    backend.set("rows", ROWS, stale_ttl=30, tags=("t",))
    data = stored(backend, "rows")
    assert data[:1] == b"e"
    assert b"\nz" in data
    assert backend.get("rows") == ROWS


def test_cached_views_are_compressed_too(cache_factory: CacheFactory) -> None:
    from flask_fennec_cache.serializers import CachedResponse

    backend = cache_factory()
    body = ("<li>row</li>" * 1000).encode()
    backend.set("view", CachedResponse(200, (("Content-Type", "text/html"),), body, 0.0))
    assert stored(backend, "view")[:1] == b"z"
    back: Any = backend.get("view")
    assert back.body == body


def test_none_disables_compression(cache_factory: CacheFactory) -> None:
    backend = cache_factory(compression="none")
    backend.set("rows", ROWS)
    assert stored(backend, "rows")[:1] == b"j"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="compression"):
        Compressor("lz4")
    with pytest.raises(ConfigurationError, match="threshold"):
        Compressor("zlib", -1)


def test_a_decompression_bomb_is_a_corrupt_entry_not_a_memory_blowup() -> None:
    bomb = b"z" + zlib.compress(b"j" + b"1" * 5_000_000)
    with pytest.raises(CorruptEntry, match="more than"):
        decode(bomb, None, 1_000_000)
    with pytest.raises(CorruptEntry):
        decode(b"z" + b"not zlib at all")
    with pytest.raises(CorruptEntry, match="compressed entry holds only"):
        decode(b"z" + zlib.compress(b"L" + b"token"))


def test_zlib_entries_are_shared_with_processes_without_zlib_ng(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zlib-ng (the fast extra) writes and reads the zlib format: mixed fleets share entries."""
    from zlib_ng import zlib_ng

    import flask_fennec_cache.compression as compression
    from flask_fennec_cache.serializers import encode

    assert compression._zlib is zlib_ng  # installed by the test extra, so it is what runs here
    entry = encode(ROWS, "k")
    with_ng = Compressor("zlib", 64)(entry)
    monkeypatch.setattr(compression, "_zlib", zlib)
    monkeypatch.setattr(compression, "ZLIB_LEVEL", 1)
    with_stdlib = Compressor("zlib", 64)(entry)
    assert decode(with_ng) == decode(with_stdlib) == ROWS  # the stdlib reads zlib-ng's
    monkeypatch.setattr(compression, "_zlib", zlib_ng)
    assert decode(with_stdlib) == ROWS  # and zlib-ng reads the stdlib's
    with pytest.raises(CorruptEntry):
        decode(b"z" + b"not zlib at all")
