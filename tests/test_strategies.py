"""CacheAside and WriteThrough, on fakeredis and a real server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from _servers import RedisServer
from _support import CacheFactory

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    CacheUnavailable,
    ConfigurationError,
    InvalidKeyError,
    RedisCache,
    SerializationError,
    WriteThrough,
    cache,
)
from flask_fennec_cache._ratelog import RateLimitedLog


class Database:
    """A stand-in system of record that logs what happened, in order."""

    def __init__(self, events: list[str]) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.events = events

    def load(self, user_id: int) -> dict[str, Any] | None:
        self.events.append(f"load {user_id}")
        return self.rows.get(user_id)

    def save(self, user: dict[str, Any]) -> str:
        self.events.append(f"save {user['id']}")
        self.rows[user["id"]] = user
        return "saved"


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def db(events: list[str]) -> Database:
    database = Database(events)
    database.rows[2] = {"id": 2, "name": "Bob"}
    return database


class Boom(Exception):
    pass


# ==================================================================================
# CacheAside
# ==================================================================================


def test_cache_aside_loads_once_then_hits(backend: RedisCache, db: Database) -> None:
    aside = CacheAside(backend, ttl=300)
    assert aside.get("user:2", loader=lambda: db.load(2)) == {"id": 2, "name": "Bob"}
    assert aside.get("user:2", loader=lambda: db.load(2)) == {"id": 2, "name": "Bob"}
    assert db.events == ["load 2"]
    remaining = backend.ttl("user:2")
    assert remaining is not None and 0 < remaining <= 300


def test_cache_aside_lookup_reports_hits_truthfully(backend: RedisCache, db: Database) -> None:
    aside = CacheAside(backend, ttl=300)
    first = aside.lookup("user:2", lambda: db.load(2))
    second = aside.lookup("user:2", lambda: db.load(2))
    assert (first.hit, second.hit) == (False, True)
    assert first.value == second.value == {"id": 2, "name": "Bob"}
    assert first.key == "user:2"
    backend.delete("user:2")
    assert aside.lookup("user:2", lambda: db.load(2)).hit is False


def test_cache_aside_loader_raising_stores_nothing(backend: RedisCache) -> None:
    aside = CacheAside(backend, ttl=300)

    def failing() -> Any:
        raise Boom("db down")

    with pytest.raises(Boom):
        aside.get("user:9", loader=failing)
    assert backend.lookup("user:9") is MISSING
    assert aside.get("user:9", loader=lambda: "now") == "now"


def test_cache_aside_does_not_store_none_unless_asked(backend: RedisCache, db: Database) -> None:
    assert CacheAside(backend).get("user:404", loader=lambda: db.load(404)) is None
    assert backend.lookup("user:404") is MISSING
    assert CacheAside(backend, cache_none=True).get("user:404", lambda: db.load(404)) is None
    assert backend.lookup("user:404") is None
    assert CacheAside(backend, cache_none=True).lookup("user:404", lambda: db.load(404)).hit
    assert db.events == ["load 404", "load 404"]


def test_cache_aside_still_answers_when_redis_is_down(
    redis_server: RedisServer, prefix: str, db: Database
) -> None:
    made = RedisCache(redis_server.url, prefix=prefix)
    try:
        redis_server.kill()
        aside = CacheAside(made, ttl=300)
        assert aside.get("user:2", loader=lambda: db.load(2)) == {"id": 2, "name": "Bob"}
        assert aside.get("user:2", loader=lambda: db.load(2)) == {"id": 2, "name": "Bob"}
        assert db.events == ["load 2", "load 2"]
    finally:
        made.close()


def test_cache_aside_never_stores_an_unserialisable_value(backend: RedisCache) -> None:
    """Either refused with a SerializationError naming the key, or returned and not stored."""
    loaded = object()
    try:
        value = CacheAside(backend).get("obj:1", loader=lambda: loaded)
    except SerializationError as exc:
        assert "obj:1" in str(exc)
    else:
        assert value is loaded
    assert backend.lookup("obj:1") is MISSING


# ==================================================================================
# WriteThrough
# ==================================================================================


def test_write_through_writes_the_record_first_then_the_cache(
    backend: RedisCache, db: Database, events: list[str]
) -> None:
    backend.set("user:4", {"id": 4, "name": "old"})

    def writer(user: dict[str, Any]) -> str:
        events.append(f"cache during write: {backend.get('user:4')}")
        return db.save(user)

    user = {"id": 4, "name": "David", "email": "david@example.com"}
    result = WriteThrough(backend, ttl=300).set("user:4", user, writer=writer)
    assert result == "saved"
    assert events == ["cache during write: {'id': 4, 'name': 'old'}", "save 4"]
    assert backend.get("user:4") == user
    assert db.rows[4] == user
    remaining = backend.ttl("user:4")
    assert remaining is not None and 0 < remaining <= 300


def test_write_through_writer_raising_leaves_the_cache_untouched(backend: RedisCache) -> None:
    backend.set("user:4", {"name": "old"})

    def writer(value: Any) -> None:
        raise Boom("constraint violated")

    with pytest.raises(Boom, match="constraint"):
        WriteThrough(backend).set("user:4", {"name": "new"}, writer=writer)
    assert backend.get("user:4") == {"name": "old"}


def test_serialization_error_is_raised_before_the_writer_runs(
    backend: RedisCache, events: list[str]
) -> None:
    backend.set("user:4", "old")
    with pytest.raises(SerializationError, match="user:4"):
        WriteThrough(backend).set("user:4", {"when": object()}, writer=events.append)
    assert events == []
    assert backend.get("user:4") == "old"


def test_value_over_the_size_limit_evicts_the_old_entry(
    cache_factory: CacheFactory, db: Database
) -> None:
    made = cache_factory(max_value_bytes=100)
    made.set("user:5", {"id": 5, "name": "old"})
    user = {"id": 5, "name": "x" * 500}
    assert WriteThrough(made).set("user:5", user, writer=db.save) == "saved"
    assert db.rows[5] == user
    assert made.lookup("user:5") is MISSING


def break_key(
    made: RedisCache,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    key: str,
    times: int,
    *,
    prefix: bool = False,
) -> None:
    """Make the client's *method* fail to connect, *times* times, for the cache key *key* only
    (with *prefix*, for every key starting with *key*).

    Other keys (the write-through lock, statistics) are not affected.
    """
    real = getattr(made.client, method)
    name = made.prefix + key
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        hit = (
            any(isinstance(a, str) and a.startswith(name) for a in args)
            if prefix
            else (name in args)
        )
        if hit:
            calls["n"] += 1
            if calls["n"] <= times:
                raise redis.ConnectionError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(made.client, method, wrapped)


def test_cache_update_failing_after_the_write_deletes_the_old_entry(
    backend: RedisCache, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set("user:6", {"id": 6, "name": "old"})
    break_key(backend, monkeypatch, "set", "user:6", times=1)
    assert WriteThrough(backend).set("user:6", {"id": 6, "name": "new"}, writer=db.save) == "saved"
    assert db.rows[6]["name"] == "new"
    assert backend.lookup("user:6") is MISSING


def test_the_delete_is_retried_once(
    backend: RedisCache, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set("user:6", "old")
    break_key(backend, monkeypatch, "set", "user:6", times=1)
    break_key(backend, monkeypatch, "unlink", "user:6", times=1)
    WriteThrough(backend).set("user:6", {"id": 6}, writer=db.save)
    assert backend.lookup("user:6") is MISSING


def test_if_even_the_delete_fails_it_is_logged_as_an_error(
    backend: RedisCache, db: Database, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    backend.set("user:7", "old")
    break_key(backend, monkeypatch, "set", "user:7", times=100)
    break_key(backend, monkeypatch, "unlink", "user:7", times=100)
    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        assert WriteThrough(backend).set("user:7", {"id": 7}, writer=db.save) == "saved"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "user:7" in errors[0].getMessage()
    assert db.rows[7] == {"id": 7}  # the write itself happened


def test_write_through_on_fail_closed_backend_still_evicts(
    cache_factory: CacheFactory, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = cache_factory(fail_open=False)
    made.set("user:8", "old")
    break_key(made, monkeypatch, "set", "user:8", times=1)
    try:
        WriteThrough(made).set("user:8", {"id": 8}, writer=db.save)
    except CacheUnavailable:
        pass
    assert db.rows[8] == {"id": 8}
    assert made.lookup("user:8") is MISSING


def test_write_through_delete(backend: RedisCache, events: list[str]) -> None:
    backend.set("user:9", "cached")
    result = WriteThrough(backend).delete("user:9", deleter=lambda: events.append("deleted"))
    assert result is None
    assert events == ["deleted"]
    assert backend.lookup("user:9") is MISSING


def test_write_through_per_call_ttl_and_seed_call_shape(backend: RedisCache, db: Database) -> None:
    write_through = WriteThrough(backend, ttl=300)
    write_through.set("user:10", {"id": 10}, writer=lambda v: db.save(v), ttl=20)
    remaining = backend.ttl("user:10")
    assert remaining is not None and 0 < remaining <= 20


@pytest.mark.parametrize("ttl", [0, -5, float("inf"), float("nan"), True])
def test_write_through_rejects_a_bad_ttl_before_the_writer_runs(
    backend: RedisCache, events: list[str], ttl: float
) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        WriteThrough(backend, ttl=ttl)
    with pytest.raises(ConfigurationError, match="ttl"):
        WriteThrough(backend).set("user:11", {"id": 11}, writer=events.append, ttl=ttl)
    assert events == []
    assert backend.lookup("user:11") is MISSING


# ==================================================================================
# WriteThrough: errors are logged once per cause per interval
# ==================================================================================


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_write_through_errors_are_rate_limited_with_the_count_held_back(
    backend: RedisCache, db: Database, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A failover makes every write fail to update and to evict: one line per cause per 10 s."""
    clock = FakeClock()
    backend.log = RateLimitedLog(clock=clock)
    break_key(backend, monkeypatch, "set", "user:", times=10_000, prefix=True)
    break_key(backend, monkeypatch, "unlink", "user:", times=10_000, prefix=True)
    write_through = WriteThrough(backend)
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        for n in range(30):
            assert write_through.set(f"user:{n}", {"id": n}, writer=db.save) == "saved"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "user:0" in errors[0] and "served stale" in errors[0]
    # The set and delete failures themselves: one warning per cause at most.
    assert len(caplog.records) <= 3, [r.getMessage() for r in caplog.records]
    assert all(db.rows[n] == {"id": n} for n in range(30))  # every write reached the record

    caplog.clear()
    clock.now += 10.0
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        write_through.set("user:30", {"id": 30}, writer=db.save)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "user:30" in errors[0]
    assert "(29 more like this since the last report)" in errors[0]


# ==================================================================================
# WriteThrough: tags
# ==================================================================================


def test_write_through_set_with_tags_is_dropped_with_its_family(
    backend: RedisCache, db: Database
) -> None:
    user = {"id": 4, "name": "David"}
    write_through = WriteThrough(backend, ttl=300)
    assert write_through.set("user:4", user, writer=db.save, tags=("users",)) == "saved"
    write_through.set("team:1", {"id": 1}, writer=lambda v: None, tags=["teams"])
    assert backend.get("user:4") == user
    remaining = backend.ttl("user:4")
    assert remaining is not None and 0 < remaining <= 300
    assert backend.invalidate_tags("users") is True
    assert backend.lookup("user:4") is MISSING
    assert backend.get("team:1") == {"id": 1}
    # Without tags the entry is a plain value, which no tag invalidation reaches.
    write_through.set("user:4", user, writer=db.save)
    assert backend.invalidate_tags("users") is True
    assert backend.get("user:4") == user


def test_a_tagged_write_through_entry_serves_a_tagged_cached_function(
    backend: RedisCache, db: Database, events: list[str]
) -> None:
    @cache(ttl=300, key="user:{user_id}", tags=("users",), backend=backend)
    def load_user(user_id: int) -> dict[str, Any] | None:
        return db.load(user_id)

    user = {"id": 5, "name": "Eve"}
    WriteThrough(backend, ttl=120).set("user:5", user, writer=db.save, tags=("users",))
    assert load_user.lookup(5).hit is True
    assert load_user(5) == user
    assert events == ["save 5"]
    remaining = backend.ttl("user:5")
    assert remaining is not None and 0 < remaining <= 120
    backend.invalidate_tags("users")
    assert load_user.lookup(5).hit is False
    assert events == ["save 5", "load 5"]


def test_tags_invalidated_while_the_writer_runs_leave_a_miss(
    backend: RedisCache, db: Database
) -> None:
    """The versions are those from before the write: a family change during it wins."""

    def writer(user: dict[str, Any]) -> str:
        assert backend.invalidate_tags("users")
        return db.save(user)

    WriteThrough(backend).set("user:6", {"id": 6}, writer=writer, tags=("users",))
    assert db.rows[6] == {"id": 6}
    assert backend.lookup("user:6") is MISSING


@pytest.mark.parametrize("call", ["set", "delete"])
def test_tags_given_as_one_string_are_refused_before_the_writer_runs(
    backend: RedisCache, events: list[str], call: str
) -> None:
    write_through = WriteThrough(backend)
    with pytest.raises(ConfigurationError, match=r"tags=\('users',\)"):
        if call == "set":
            write_through.set("user:7", {"id": 7}, writer=events.append, tags="users")
        else:
            write_through.delete("user:7", deleter=lambda: events.append("x"), tags="users")
    assert events == []


def test_tagged_write_through_while_redis_is_down_still_writes(
    redis_server: RedisServer, prefix: str, db: Database
) -> None:
    made = RedisCache(redis_server.url, prefix=prefix)
    try:
        redis_server.kill()
        write_through = WriteThrough(made)
        assert write_through.set("user:8", {"id": 8}, writer=db.save, tags=("users",)) == "saved"
        assert db.rows[8] == {"id": 8}
        with pytest.raises(SerializationError, match="user:9"):
            write_through.set("user:9", {"x": object()}, writer=db.save, tags=("users",))
        assert 9 not in db.rows
    finally:
        made.close()


def test_write_through_delete_with_tags_drops_the_key_and_the_family(
    backend: RedisCache, events: list[str]
) -> None:
    backend.set("user:12", {"id": 12}, tags=("users",))
    backend.set("users:page:1", [12, 13], tags=("users",))
    backend.set("team:1", {"id": 1}, tags=("teams",))
    backend.set("untagged", "kept")

    def deleter() -> str:
        events.append("deleted")
        return "gone"

    result = WriteThrough(backend).delete("user:12", deleter=deleter, tags=("users",))
    assert result == "gone"
    assert events == ["deleted"]
    assert backend.lookup("user:12") is MISSING
    assert backend.lookup("users:page:1") is MISSING
    assert backend.get("team:1") == {"id": 1}
    assert backend.get("untagged") == "kept"


def test_write_through_delete_whose_deleter_raises_leaves_the_cache(backend: RedisCache) -> None:
    backend.set("user:13", "cached", tags=("users",))
    backend.set("users:page:1", [13], tags=("users",))

    def deleter() -> None:
        raise Boom("foreign key")

    with pytest.raises(Boom):
        WriteThrough(backend).delete("user:13", deleter=deleter, tags=("users",))
    assert backend.get("user:13") == "cached"
    assert backend.get("users:page:1") == [13]


def failing_invalidations(
    made: RedisCache, monkeypatch: pytest.MonkeyPatch, times: int
) -> list[tuple[str, ...]]:
    """``invalidate_tags`` answers False (Redis unreachable) *times* times; the calls made."""
    real = made.invalidate_tags
    calls: list[tuple[str, ...]] = []

    def invalidate(*tags: str) -> bool:
        calls.append(tags)
        return False if len(calls) <= times else real(*tags)

    monkeypatch.setattr(made, "invalidate_tags", invalidate)
    return calls


def test_write_through_delete_retries_the_invalidation_once(
    backend: RedisCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend.set("users:page:1", [14], tags=("users",))
    calls = failing_invalidations(backend, monkeypatch, times=1)
    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        WriteThrough(backend).delete("user:14", deleter=lambda: None, tags=("users",))
    assert calls == [("users",), ("users",)]
    assert backend.lookup("users:page:1") is MISSING
    assert caplog.records == []


def test_a_failed_invalidation_after_a_delete_is_logged_as_an_error(
    backend: RedisCache, events: list[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    backend.set("user:15", "cached")
    backend.set("users:page:1", [15], tags=("users",))
    failing_invalidations(backend, monkeypatch, times=100)
    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        WriteThrough(backend).delete(
            "user:15", deleter=lambda: events.append("deleted"), tags=("users",)
        )
    assert events == ["deleted"]
    assert backend.lookup("user:15") is MISSING  # the key itself was removed
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "'users'" in errors[0], errors


def test_fail_closed_delete_that_cannot_evict_raises_after_the_deleter(
    cache_factory: CacheFactory, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = cache_factory(fail_open=False, breaker_threshold=10)
    made.set("user:16", "cached")
    # Both attempts fail, and so does the second one's applying of the first, kept.
    break_key(made, monkeypatch, "unlink", "user:16", times=3)
    with pytest.raises(CacheUnavailable, match="user:16"):
        WriteThrough(made).delete("user:16", deleter=lambda: events.append("deleted"))
    assert events == ["deleted"]


def test_fail_closed_delete_with_redis_down_does_not_run_the_deleter(
    prefix: str, events: list[str]
) -> None:
    """The per-key lock cannot be taken, so nothing is deleted and the caller is told."""
    from _servers import find_free_port

    made = RedisCache(f"redis://127.0.0.1:{find_free_port()}/0", prefix=prefix, fail_open=False)
    try:
        with pytest.raises(CacheUnavailable):
            WriteThrough(made).delete("user:17", deleter=lambda: events.append("deleted"))
        assert events == []
    finally:
        made.close()


def test_write_through_delete_refuses_a_reserved_key_before_the_deleter(
    backend: RedisCache, events: list[str]
) -> None:
    with pytest.raises(InvalidKeyError):
        WriteThrough(backend).delete("__fennec__:stats", deleter=lambda: events.append("x"))
    assert events == []
