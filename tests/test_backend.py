"""RedisCache: the contract suite (fakeredis and a real redis-server), then real-server faults."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from _servers import RedisServer, RedisServerFactory
from _support import CacheFactory, CallCounter, run_threads, wait_for

from flask_fennec_cache import (
    MISSING,
    CacheUnavailable,
    ConfigurationError,
    RedisCache,
    SerializationError,
)

STATS_FIELDS = {"hits", "misses", "sets", "deletes", "errors", "total_requests", "hit_rate"}
QUIET = 3600.0  # a stats flush interval long enough that the background thread never runs


# ==================================================================================
# Contract: get / set / lookup / ttl
# ==================================================================================


@pytest.mark.parametrize(
    "value",
    [
        {"id": 1, "name": "Alice", "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True}},
        [1, "two", 3.0, None, False],
        "ünïcødé ✓ \x00 text",
        0,
        -17,
        2**70,
        3.25,
        True,
        "",
        {},
        [],
    ],
)
def test_set_then_get_returns_an_equal_value(backend: RedisCache, value: Any) -> None:
    assert backend.set("k", value) is True
    assert backend.get("k") == value
    assert type(backend.get("k")) is type(value)


def test_miss_returns_none_or_the_default(backend: RedisCache) -> None:
    assert backend.get("absent") is None
    assert backend.get("absent", default=7) == 7
    sentinel = object()
    assert backend.get("absent", sentinel) is sentinel


def test_a_cached_none_is_not_a_miss(backend: RedisCache) -> None:
    assert backend.set("none", None) is True
    assert backend.lookup("none") is None
    assert backend.lookup("absent") is MISSING
    assert backend.get("none", default=7) is None
    assert backend.get("absent", default=7) == 7


def test_set_overwrites(backend: RedisCache) -> None:
    backend.set("k", 1)
    backend.set("k", {"v": 2})
    assert backend.get("k") == {"v": 2}


def test_keys_are_stored_under_the_prefix(backend: RedisCache) -> None:
    backend.set("user:1", {"id": 1})
    raw = backend.client.get(backend.prefix + "user:1")
    assert raw is not None
    assert backend.client.get("user:1") is None


def test_ttl_reports_remaining_seconds(backend: RedisCache) -> None:
    backend.set("timed", 1, ttl=100)
    backend.set("forever", 1)
    remaining = backend.ttl("timed")
    assert remaining is not None and 0 < remaining <= 100
    assert backend.ttl("forever") == -1
    assert backend.ttl("absent") is None


def test_default_ttl_applies_when_set_gets_none(cache_factory: CacheFactory) -> None:
    made = cache_factory(default_ttl=50)
    made.set("k", 1)
    remaining = made.ttl("k")
    assert remaining is not None and 0 < remaining <= 50
    made.set("k2", 1, ttl=500)
    remaining = made.ttl("k2")
    assert remaining is not None and 50 < remaining <= 500


def test_entry_expires_after_its_ttl(backend: RedisCache) -> None:
    backend.set("short", "v", ttl=0.05)
    backend.set("long", "v", ttl=100)
    assert wait_for(lambda: backend.lookup("short") is MISSING)
    assert backend.get("long") == "v"


@pytest.mark.parametrize("ttl", [0, -1, "10", True, float("nan")])
def test_bad_ttl_is_refused(backend: RedisCache, ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        backend.set("k", 1, ttl=ttl)
    assert backend.lookup("k") is MISSING


# ==================================================================================
# Contract: get_many / set_many, one round trip each
# ==================================================================================


def test_get_many_returns_found_entries_only(backend: RedisCache) -> None:
    backend.set("a", 1)
    backend.set("b", {"x": 2})
    backend.set("n", None)
    assert backend.get_many(["a", "b", "n", "missing"]) == {"a": 1, "b": {"x": 2}, "n": None}
    assert backend.get_many([]) == {}


def test_set_many_stores_every_entry_with_the_ttl(backend: RedisCache) -> None:
    assert backend.set_many({"a": 1, "b": [2], "c": None}, ttl=100) is True
    assert backend.get_many(["a", "b", "c"]) == {"a": 1, "b": [2], "c": None}
    remaining = backend.ttl("b")
    assert remaining is not None and 0 < remaining <= 100


def test_get_many_is_one_round_trip(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = cache_factory(stats_flush_interval=QUIET)
    made.set_many({f"k{i}": i for i in range(20)})
    counter = CallCounter().install(made, monkeypatch)
    found = made.get_many([f"k{i}" for i in range(25)])
    assert found == {f"k{i}": i for i in range(20)}
    assert counter.round_trips == 1


def test_set_many_is_one_round_trip(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = cache_factory(stats_flush_interval=QUIET)
    counter = CallCounter().install(made, monkeypatch)
    assert made.set_many({f"k{i}": {"i": i} for i in range(20)}, ttl=60) is True
    assert counter.round_trips == 1
    assert made.get("k19") == {"i": 19}


def test_a_hit_is_one_round_trip(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting statistics must not add a round trip to a hit."""
    made = cache_factory(stats_flush_interval=QUIET)
    made.set("k", 1)
    counter = CallCounter().install(made, monkeypatch)
    assert made.get("k") == 1
    assert counter.round_trips == 1


# ==================================================================================
# Contract: delete / clear / keys
# ==================================================================================


def test_delete_returns_how_many_existed(backend: RedisCache) -> None:
    backend.set("a", 1)
    backend.set("b", 2)
    assert backend.delete("a", "b", "missing") == 2
    assert backend.lookup("a") is MISSING
    assert backend.delete("a") == 0
    assert backend.delete() == 0


def _plant_foreign_keys(made: RedisCache) -> list[str]:
    """Keys a clear() must never touch: outside the prefix and in the library's namespace."""
    foreign = [
        "other:user:1",
        "user:1",  # the same relative name, but without our prefix
        made.prefix[:-1],  # the prefix without its final character
        made.prefix + "__fennec__:stats-like",
        made.prefix + "__fennec__:user:1",
    ]
    for name in foreign:
        made.client.set(name, b"keep")
    return foreign


def test_clear_with_pattern_removes_only_matching_keys_under_the_prefix(
    backend: RedisCache,
) -> None:
    foreign = _plant_foreign_keys(backend)
    backend.set_many({"user:1": 1, "user:2": 2, "post:1": 3})
    assert backend.clear("user:*") == 2
    assert backend.get_many(["user:1", "user:2", "post:1"]) == {"post:1": 3}
    for name in foreign:
        assert backend.client.get(name) == b"keep", name


def test_clear_removes_all_of_ours_and_nothing_else(backend: RedisCache) -> None:
    foreign = _plant_foreign_keys(backend)
    backend.set_many({"user:1": 1, "post:1": 3, "x": None})
    backend.get_stats()  # creates the shared counters under the reserved namespace
    assert backend.clear() == 3
    assert backend.keys() == []
    for name in foreign:
        assert backend.client.get(name) == b"keep", name
    assert backend.get_stats()["sets"] == 3  # the counters survived the clear


def test_clear_walks_more_keys_than_one_scan_batch(backend: RedisCache) -> None:
    backend.set_many({f"k{i}": i for i in range(1234)})
    assert backend.clear() == 1234
    assert backend.keys() == []


@pytest.mark.parametrize(
    ("glob_prefix", "lookalikes"),
    [
        ("a*b:", ["axxb:k", "ab:k", "a*xb:k"]),
        ("a?b:", ["axb:k"]),
        ("[ab]:", ["a:k", "b:k"]),
        ("a\\b:", ["ab:k"]),
    ],
)
def test_glob_characters_in_the_prefix_are_literal(
    cache_factory: CacheFactory, glob_prefix: str, lookalikes: list[str]
) -> None:
    made = cache_factory(prefix=glob_prefix)
    for name in lookalikes:
        made.client.set(name, b"keep")
    made.set("k", 1)
    assert made.keys() == ["k"]
    assert made.clear() == 1
    assert made.lookup("k") is MISSING
    for name in lookalikes:
        assert made.client.get(name) == b"keep", name


def test_two_prefixes_on_one_server_are_isolated(cache_factory: CacheFactory) -> None:
    one = cache_factory(prefix="one:")
    other = cache_factory(prefix="one:two:")  # one's prefix is a prefix of this one
    one.set("k", 1)
    other.set("k", 2)
    assert (one.get("k"), other.get("k")) == (1, 2)
    assert other.clear() == 1
    assert one.get("k") == 1


@pytest.mark.parametrize("pattern", ["", "a\nb", "a\x00", "x" * 513])
def test_bad_clear_patterns_are_refused(backend: RedisCache, pattern: str) -> None:
    backend.set("a", 1)
    with pytest.raises(ConfigurationError):
        backend.clear(pattern)
    assert backend.get("a") == 1


def test_keys_lists_relative_names_bounded_by_limit(backend: RedisCache) -> None:
    _plant_foreign_keys(backend)
    backend.set_many({f"user:{i}": i for i in range(30)})
    backend.set("post:1", 1)
    assert sorted(backend.keys("user:*")) == sorted(f"user:{i}" for i in range(30))
    assert len(backend.keys(limit=10)) == 10
    assert set(backend.keys(limit=10)) <= {f"user:{i}" for i in range(30)} | {"post:1"}
    assert len(backend.keys()) == 31


# ==================================================================================
# Contract: serialisation and size limits
# ==================================================================================


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(Opaque(), "Opaque"), ({"a": {1, 2}}, "set"), ([b"raw bytes"], "bytes"), (object(), "object")],
)
def test_unserialisable_value_raises_naming_type_and_key(
    backend: RedisCache, value: Any, type_name: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        backend.set("user:42", value)
    assert type_name in str(caught.value)
    assert "user:42" in str(caught.value)
    assert backend.lookup("user:42") is MISSING


def test_set_many_with_an_unserialisable_value_stores_nothing(backend: RedisCache) -> None:
    with pytest.raises(SerializationError, match="bad"):
        backend.set_many({"good": 1, "bad": Opaque()})
    assert backend.get_many(["good", "bad"]) == {}


@pytest.mark.parametrize("value", [{1: "a", 2: "b"}, (1, 2)], ids=["int-dict-keys", "tuple"])
def test_a_value_comes_back_equal_or_is_refused(backend: RedisCache, value: Any) -> None:
    """A stored value must read back as the same value, or be refused with SerializationError.

    JSON turns int dict keys into strings and tuples into lists; silently returning a
    different value from the cache than the one stored is a wrong result.
    """
    try:
        stored = backend.set("k", value)
    except SerializationError:
        return
    assert stored is True
    assert backend.get("k") == value


def test_values_over_max_value_bytes_are_not_stored(
    cache_factory: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    made = cache_factory(max_value_bytes=100)
    made.set("big", "old")
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert made.set("big", "x" * 200) is False
    assert made.get("big") == "old"  # nothing was written
    assert "big" in caplog.text and "100" in caplog.text
    assert made.set("small", "x" * 50) is True
    assert made.set_many({"small2": "y", "big2": "z" * 500}) is False
    assert made.get_many(["small2", "big2"]) == {"small2": "y"}


# ==================================================================================
# Contract: corrupt entries, health
# ==================================================================================


@pytest.mark.parametrize("raw", [b"garbage", b"j{", b"", b"\xff\xfe", b"r{}", b"j\xff", b"v{"])
def test_corrupt_or_foreign_value_reads_as_a_miss(backend: RedisCache, raw: bytes) -> None:
    backend.client.set(backend.prefix + "k", raw)
    assert backend.lookup("k") is MISSING
    assert backend.get("k", default="d") == "d"
    assert backend.get_many(["k"]) == {}
    stats = backend.get_stats()
    assert stats["errors"] == 3
    assert stats["misses"] == 3
    assert stats["hits"] == 0


def test_a_foreign_type_under_the_prefix_reads_as_a_miss(backend: RedisCache) -> None:
    backend.client.rpush(backend.prefix + "list", b"x")  # GET answers WRONGTYPE
    assert backend.get("list", default="d") == "d"
    assert backend.get_stats()["errors"] >= 1
    assert backend.breaker_state == "closed"  # the server answered: it is not down


def test_ping_and_health_on_a_live_server(backend: RedisCache) -> None:
    assert backend.ping() is True
    report = backend.health()
    assert report["status"] == "healthy"
    assert isinstance(report["latency_ms"], float) and report["latency_ms"] >= 0
    assert "error" not in report


# ==================================================================================
# Contract: statistics
# ==================================================================================


def test_fresh_stats_are_zero(backend: RedisCache) -> None:
    stats = backend.get_stats()
    assert STATS_FIELDS <= set(stats)
    assert {field: stats[field] for field in STATS_FIELDS} == {
        "hits": 0, "misses": 0, "sets": 0, "deletes": 0, "errors": 0,
        "total_requests": 0, "hit_rate": 0.0,
    }  # fmt: skip
    assert isinstance(stats["hit_rate"], float)


def test_stats_count_every_operation(backend: RedisCache) -> None:
    backend.set("a", 1)
    backend.set("b", 2)
    backend.get("a")
    backend.get("a")
    backend.get("missing")
    backend.get_many(["a", "b", "nope"])
    backend.delete("a", "zzz")
    backend.set_many({"c": 1, "d": 2})
    backend.clear("c")
    stats = backend.get_stats()
    assert stats["hits"] == 4
    assert stats["misses"] == 2
    assert stats["sets"] == 4
    assert stats["deletes"] == 2
    assert stats["total_requests"] == 6
    assert stats["hit_rate"] == 66.67
    assert stats["errors"] == 0


@pytest.mark.parametrize(
    ("hits", "misses", "rate"),
    [(1, 2, 33.33), (2, 1, 66.67), (1, 0, 100.0), (0, 3, 0.0), (1, 6, 14.29)],
)
def test_hit_rate_is_a_percentage_with_two_decimals(
    backend: RedisCache, hits: int, misses: int, rate: float
) -> None:
    backend.set("k", 1)
    for _ in range(hits):
        backend.get("k")
    for _ in range(misses):
        backend.get("absent")
    stats = backend.get_stats()
    assert stats["hit_rate"] == rate
    assert stats["total_requests"] == hits + misses


def test_reset_stats_zeroes_the_counters(backend: RedisCache) -> None:
    backend.set("k", 1)
    backend.get("k")
    backend.get_stats()  # flushed to the shared counters
    backend.get("k")  # and one still pending in this process
    backend.reset_stats()
    stats = backend.get_stats()
    assert (stats["hits"], stats["sets"], stats["total_requests"]) == (0, 0, 0)
    backend.get("k")
    assert backend.get_stats()["hits"] == 1


def test_two_caches_on_one_server_and_prefix_report_the_same_totals(
    cache_factory: CacheFactory,
) -> None:
    one = cache_factory(stats_flush_interval=QUIET)
    two = cache_factory(stats_flush_interval=QUIET)
    one.set("k", 1)
    one.get("k")
    two.get("k")
    two.get("k")
    two.get("absent")
    first = one.get_stats()
    second = two.get_stats()
    assert (second["hits"], second["misses"], second["sets"]) == (3, 1, 1)
    assert one.get_stats() == second
    assert first["hits"] == 1  # one's own counts (two had not flushed yet)


def test_counts_reach_other_processes_by_the_background_flush(cache_factory: CacheFactory) -> None:
    """Without get_stats() on the writer: its flush thread publishes within about a second."""
    writer = cache_factory()  # the default flush interval (1 s)
    reader = cache_factory(stats_flush_interval=QUIET)
    writer.set("k", 1)
    writer.get("k")
    writer.get("k")
    writer.get("absent")
    expected = {"hits": 2, "misses": 1, "sets": 1, "total_requests": 3, "hit_rate": 66.67}

    def published() -> bool:
        stats = reader.get_stats()
        return all(stats[name] == value for name, value in expected.items())

    assert wait_for(published, timeout=3.0, step=0.05), reader.get_stats()


# ==================================================================================
# Construction
# ==================================================================================


@pytest.mark.parametrize("bad_prefix", ["", "x:__fennec__:"])
def test_bad_prefix_is_refused(memory_url: str, bad_prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisCache(memory_url, prefix=bad_prefix)


@pytest.mark.parametrize("url", ["ftp://host", "http://localhost:6379", "localhost:6379"])
def test_unsupported_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="scheme"):
        RedisCache(url)


def test_repr_hides_the_password() -> None:
    made = RedisCache("redis://:hunter2@127.0.0.1:1/0", prefix="p:")
    try:
        assert "hunter2" not in repr(made)
    finally:
        made.client.close()


def test_memory_urls_with_one_name_share_a_server(memory_url: str) -> None:
    one = RedisCache(memory_url, prefix="p:")
    two = RedisCache(memory_url, prefix="p:")
    other = RedisCache(memory_url + "-other", prefix="p:")
    try:
        one.set("k", 1)
        assert two.get("k") == 1
        assert other.get("k") is None
    finally:
        for made in (one, two, other):
            made.close()


def test_an_injected_client_is_used(prefix: str) -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    made = RedisCache(prefix=prefix, client=client)
    try:
        made.set("k", 1)
        assert client.get(prefix + "k") is not None
        assert made.client is client
    finally:
        made.close()


# ==================================================================================
# Faults: a memory:// server made unreachable (fakeredis ``connected = False``)
# ==================================================================================


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake_down(fake_server: fakeredis.FakeServer, prefix: str) -> Iterator[RedisCache]:
    made = RedisCache(
        prefix=prefix, client=fakeredis.FakeRedis(server=fake_server),
        breaker_threshold=1000, stats_flush_interval=QUIET,
    )  # fmt: skip
    made.set("k", 1)
    fake_server.connected = False
    yield made
    made.close()


def test_unreachable_fake_server_fails_open(fake_down: RedisCache) -> None:
    assert fake_down.get("k", default="d") == "d"
    assert fake_down.lookup("k") is MISSING
    assert fake_down.set("k", 2) is False
    assert fake_down.delete("k") == 0
    assert fake_down.try_delete("k") is None
    assert fake_down.clear() == 0
    assert fake_down.get_many(["k"]) == {}
    assert fake_down.set_many({"k": 1}) is False
    assert fake_down.keys() == []
    assert fake_down.ping() is False
    stats = fake_down.get_stats()
    assert stats["shared"] is False
    assert stats["errors"] >= 9
    assert stats["misses"] == 3


# ==================================================================================
# Faults on a real redis-server: kill, restart, fail closed, corrupt entries
# ==================================================================================


@pytest.fixture
def real_cache(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    made = RedisCache(
        redis_server.url, prefix=prefix, breaker_threshold=1000, stats_flush_interval=QUIET
    )
    yield made
    made.close()


def test_killed_server_reads_miss_and_writes_are_skipped(
    redis_server: RedisServer, real_cache: RedisCache
) -> None:
    real_cache.set("k", 1)
    assert real_cache.get("k") == 1
    redis_server.kill()
    assert real_cache.get("k", default="d") == "d"
    assert real_cache.set("k", 2) is False
    assert real_cache.delete("k") == 0
    assert real_cache.clear() == 0
    assert real_cache.get_many(["k", "j"]) == {}
    assert real_cache.set_many({"a": 1}) is False
    assert real_cache.ttl("k") is None
    assert real_cache.ping() is False
    report = real_cache.health()
    assert report["status"] == "unhealthy"
    assert report["backend"] == "redis"
    assert "error" in report
    stats = real_cache.get_stats()
    assert stats["shared"] is False
    assert stats["errors"] >= 7
    assert stats["hits"] == 1
    assert stats["misses"] == 3


def test_errors_on_a_dead_server_are_logged_rate_limited(
    redis_server: RedisServer, real_cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        for _ in range(20):
            real_cache.get("k")
    lines = [r for r in caplog.records if "get" in r.getMessage()]
    assert 1 <= len(lines) < 20


def test_fail_closed_raises_cache_unavailable(redis_server: RedisServer, prefix: str) -> None:
    made = RedisCache(redis_server.url, prefix=prefix, fail_open=False, stats_flush_interval=QUIET)
    try:
        made.set("k", 1)
        redis_server.kill()
        with pytest.raises(CacheUnavailable):
            made.get("k")
        with pytest.raises(CacheUnavailable):
            made.set("k", 1)
        with pytest.raises(CacheUnavailable):
            made.delete("k")
        with pytest.raises(CacheUnavailable):
            made.clear()
        with pytest.raises(CacheUnavailable):
            made.get_many(["k"])
        with pytest.raises(CacheUnavailable):  # the breaker is open by now: still typed
            made.get("k")
        assert made.ping() is False  # ping never raises
    finally:
        made.close()


def _count_client_calls(made: RedisCache, monkeypatch: pytest.MonkeyPatch) -> CallCounter:
    return CallCounter().install(made, monkeypatch)


@pytest.fixture
def tripped(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    """A cache whose breaker opened after two failures on a killed server (long cool-down)."""
    made = RedisCache(
        redis_server.url, prefix=prefix, breaker_threshold=2, breaker_cooldown=600,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    made.set("k", 1)
    redis_server.kill()
    assert made.breaker_state == "closed"
    made.get("k")
    assert made.breaker_state == "closed"
    made.get("k")
    assert made.breaker_state == "open"
    yield made
    made.close()


def test_open_breaker_answers_without_calling_redis(
    tripped: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _count_client_calls(tripped, monkeypatch)
    assert tripped.get("k", default="d") == "d"
    assert tripped.lookup("k") is MISSING
    assert tripped.set("k", 2) is False
    assert tripped.delete("k") == 0
    assert tripped.get_many(["k"]) == {}
    assert tripped.set_many({"k": 2}) is False
    assert tripped.ttl("k") is None
    assert counter.round_trips == 0, counter.commands
    assert tripped.breaker_state == "open"


@pytest.mark.parametrize("operation", ["clear", "clear_pattern", "keys", "get_stats"])
def test_open_breaker_also_covers_clear_keys_and_stats(
    tripped: RedisCache, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """Every request-path call must skip a server the breaker knows is down."""
    counter = _count_client_calls(tripped, monkeypatch)
    if operation == "clear":
        assert tripped.clear() == 0
    elif operation == "clear_pattern":
        assert tripped.clear("user:*") == 0
    elif operation == "keys":
        assert tripped.keys() == []
    else:
        assert tripped.get_stats()["shared"] is False
    assert counter.round_trips == 0, counter.commands


def test_breaker_closes_after_the_server_comes_back(redis_server: RedisServer, prefix: str) -> None:
    made = RedisCache(
        redis_server.url, prefix=prefix, breaker_threshold=2, breaker_cooldown=0.1,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    try:
        made.set("k", 1)
        redis_server.kill()
        made.get("k")
        made.get("k")
        assert made.breaker_state == "open"
        redis_server.restart()
        assert wait_for(lambda: made.set("k", "back") is True, step=0.02)
        assert made.breaker_state == "closed"
        assert made.get("k") == "back"
        assert redis_server.client().get(prefix + "k") is not None
    finally:
        made.close()


def test_corrupt_values_planted_with_redis_cli_read_as_misses(
    redis_server: RedisServer, real_cache: RedisCache, prefix: str
) -> None:
    assert redis_server.cli("SET", prefix + "garbage", "garbage") == "OK"
    assert redis_server.cli("SET", prefix + "truncated", "j{") == "OK"
    assert redis_server.cli("SET", prefix + "bad-response", 'r{"s": 200}') == "OK"
    for name in ("garbage", "truncated", "bad-response"):
        assert real_cache.get(name, default="d") == "d"
    stats = real_cache.get_stats()
    assert stats["errors"] == 3
    assert stats["misses"] == 3
    assert real_cache.breaker_state == "closed"


def test_a_paused_server_times_out_instead_of_hanging(
    redis_server: RedisServer, prefix: str
) -> None:
    made = RedisCache(
        redis_server.url, prefix=prefix, socket_timeout=0.05, connect_timeout=0.05,
        breaker_threshold=1, breaker_cooldown=600, stats_flush_interval=QUIET,
    )  # fmt: skip
    try:
        made.set("k", 1)
        redis_server.pause()
        assert made.get("k", default="d") == "d"
        assert made.breaker_state == "open"
        assert made.get("k", default="d") == "d"
    finally:
        redis_server.resume()
        made.close()


def test_connection_errors_from_the_client_never_escape(
    fake_backend: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("boom")

    monkeypatch.setattr(fake_backend.client, "execute_command", boom)
    assert fake_backend.get("k", default=1) == 1
    assert fake_backend.set("k", 1) is False


# ==================================================================================
# URLs on real servers: unix sockets, passwords, database numbers
# ==================================================================================


def test_unix_socket_url(redis_server_factory: RedisServerFactory, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = redis_server_factory(["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    made = RedisCache(url=f"unix://{socket_path}", prefix="sock:")
    try:
        assert made.set("k", {"v": 1}) is True
        assert made.get("k") == {"v": 1}
        assert server.client().exists("sock:k") == 1
        assert made.ping() is True
    finally:
        made.close()


def test_password_and_database_in_the_url(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(["--requirepass", "s3cret"])
    made = RedisCache(url=f"redis://:s3cret@127.0.0.1:{server.port}/3", prefix="auth:")
    wrong = RedisCache(url=f"redis://:nope@127.0.0.1:{server.port}/3", prefix="auth:")
    try:
        assert made.set("k", 1) is True
        assert server.client(db=3).exists("auth:k") == 1
        assert server.client(db=0).exists("auth:k") == 0
        assert "s3cret" not in repr(made)
        assert wrong.get("k", default="d") == "d"  # refused, fail-open: a miss
        assert wrong.ping() is False
        assert wrong.health()["status"] == "unhealthy"
    finally:
        made.close()
        wrong.close()


# ==================================================================================
# More contract: SCAN/UNLINK only, threads, exit flush, bounded ping
# ==================================================================================


def test_clear_uses_scan_and_unlink_never_keys_or_flush(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = cache_factory(stats_flush_interval=QUIET)
    made.set_many({f"k{i}": i for i in range(50)})
    counter = CallCounter().install(made, monkeypatch)
    assert made.clear() == 50
    names = {name.upper() for name in counter.commands}
    assert "SCAN" in names and "UNLINK" in names
    assert not names & {"KEYS", "FLUSHDB", "FLUSHALL", "DEL"}


def test_threads_sharing_one_cache_lose_no_counts(backend: RedisCache) -> None:
    import threading

    backend.set("k", 1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(100):
                assert backend.get("k") == 1
                backend.get("missing")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = backend.get_stats()
    assert (stats["hits"], stats["misses"], stats["total_requests"]) == (800, 800, 1600)
    assert stats["hit_rate"] == 50.0


def test_pending_counts_are_flushed_at_interpreter_exit(
    redis_server: RedisServer, prefix: str
) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from flask_fennec_cache import RedisCache\n"
        "c = RedisCache(sys.argv[1], prefix=sys.argv[2], stats_flush_interval=3600)\n"
        "c.set('k', 1)\n"
        "c.get('k')\n"
        "c.get('missing')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, redis_server.url, prefix],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reader = RedisCache(redis_server.url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        stats = reader.get_stats()
    finally:
        reader.close()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)


def test_ping_on_a_paused_server_returns_false(redis_server: RedisServer, prefix: str) -> None:
    made = RedisCache(
        redis_server.url, prefix=prefix, socket_timeout=0.1, connect_timeout=0.1,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    try:
        assert made.ping() is True
        redis_server.pause()
        assert made.ping() is False
        assert made.health()["status"] == "unhealthy"
    finally:
        redis_server.resume()
        made.close()


def test_url_is_accepted_as_a_keyword(memory_url: str) -> None:
    made = RedisCache(url=memory_url, prefix="kw:")
    try:
        made.set("k", 1)
        assert made.get("k") == 1
        assert made.prefix == "kw:"
    finally:
        made.close()


@pytest.mark.parametrize("operation", ["set", "set_many", "delete"])
def test_user_keys_cannot_reach_the_reserved_namespace(backend: RedisCache, operation: str) -> None:
    """DESIGN: the library's bookkeeping under ``{prefix}__fennec__:`` never collides with users.

    A user key that starts with ``__fennec__:`` (say, from a template filled with request data)
    must be refused or kept apart; it must not overwrite or delete the shared counters.
    """
    import contextlib

    from flask_fennec_cache import FennecCacheError

    backend.get("absent")
    assert backend.get_stats()["misses"] == 1  # the shared counters now exist
    reserved = "__fennec__:stats"
    with contextlib.suppress(FennecCacheError, ValueError):
        if operation == "set":
            backend.set(reserved, 1)
        elif operation == "set_many":
            backend.set_many({reserved: 1})
        else:
            backend.delete(reserved)
    stats = backend.get_stats()
    assert stats["shared"] is backend.shared  # read from the server (memory:// is never shared)
    assert stats["misses"] == 1
    assert stats["errors"] == 0


# ==================================================================================
# add: SET NX (Flask-Caching's cache.add, used as a lock)
# ==================================================================================


def test_add_stores_only_when_the_key_holds_nothing(backend: RedisCache) -> None:
    assert backend.add("lock", "first", ttl=60) is True
    assert backend.add("lock", "second", ttl=60) is False
    assert backend.get("lock") == "first"
    assert 0 < (backend.ttl("lock") or 0) <= 60
    backend.delete("lock")
    assert backend.add("lock", "third") is True
    assert backend.get("lock") == "third"


def test_add_lets_exactly_one_of_racing_callers_in(backend: RedisCache) -> None:
    won = run_threads(8, lambda index: backend.add("lock", index, ttl=60))
    assert won.count(True) == 1
    assert backend.get("lock") == won.index(True)


def test_add_fails_open_when_redis_is_unreachable(fake_down: RedisCache) -> None:
    assert fake_down.add("new", 1) is False
    assert fake_down.get_stats()["errors"] >= 1
