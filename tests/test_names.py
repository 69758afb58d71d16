"""Statistics by name (issue 16 item 1): every cached function, view and fragment counts
under its name, exactly, across processes, riding the totals' flush."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _servers import RedisServer
from _support import HANG, AppFactory, CallCounter, backend_of, wait_for
from flask import Flask, Response, render_template_string, stream_with_context

from flask_fennec_cache import CacheAside, ConfigurationError, RedisCache, cache
from flask_fennec_cache import _stats as stats_module
from flask_fennec_cache._prometheus import render
from flask_fennec_cache._ratelog import RateLimitedLog
from flask_fennec_cache._stats import OVERFLOW_NAME, StatsBuffer, named_field, split_named

QUIET = 3600.0


@pytest.fixture
def memory_cache(memory_url: str, prefix: str) -> Iterator[RedisCache]:
    made = RedisCache(memory_url, prefix=prefix, stats_flush_interval=QUIET)
    yield made
    made.close()


def by_name(backend: RedisCache) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = backend.get_stats()["by_name"]
    return found


# -- the counting API (no Redis) ---------------------------------------------------------------


def test_a_name_counts_into_its_row_and_the_totals() -> None:
    sent: list[dict[str, int]] = []

    def flush(counts: Mapping[str, int]) -> bool:
        sent.append(dict(counts))
        return True

    buffer = StatsBuffer(flush, QUIET)
    counts = buffer.named("app.users")
    assert buffer.named("app.users") is counts
    counts.hit()
    counts.hit()
    counts.add("misses")
    counts.add("lock_waits")  # a totals-only field
    counts.add("errors")  # totals only: a name's errors are its failed loads
    counts.loaded(0.003, failed=True)
    counts.bypass("streamed")
    pending = buffer.pending()
    assert pending["hits"] == 2 and pending["misses"] == 1 and pending["lock_waits"] == 1
    assert pending["errors"] == 1 and pending["bypasses"] == 1
    totals, rows = split_named(pending)
    assert "lock_waits" not in rows["app.users"]
    assert rows["app.users"]["hits"] == 2 and rows["app.users"]["misses"] == 1
    assert rows["app.users"]["errors"] == 1 and rows["app.users"]["bypass:streamed"] == 1
    assert rows["app.users"]["load_le:0.005"] == 1
    assert totals["hits"] == 2
    assert buffer.flush() and split_named(sent[-1])[1]["app.users"]["hits"] == 2
    buffer.close()


def test_names_are_bounded_and_the_overflow_row_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(stats_module, "MAX_NAMES", 3)
    monkeypatch.setattr(stats_module, "_log", RateLimitedLog())
    buffer = StatsBuffer(lambda counts: True, QUIET)
    rows = [buffer.named(f"f{i}") for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        late = buffer.named("f3")
        later = buffer.named("f4")
    assert late is later and late.name == OVERFLOW_NAME
    assert len(buffer.names()) == 4 and all(row.name != "f3" for row in rows)
    warnings = [r.getMessage() for r in caplog.records if "f3" in r.getMessage()]
    assert len(warnings) == 1 and OVERFLOW_NAME in warnings[0]
    assert not [r for r in caplog.records if "'f4'" in r.getMessage()]  # rate-limited
    late.hit()
    assert split_named(buffer.pending())[1][OVERFLOW_NAME]["hits"] == 1
    buffer.close()


def test_bad_names_and_reasons_are_refused() -> None:
    buffer = StatsBuffer(lambda counts: True, QUIET)
    with pytest.raises(TypeError, match="non-empty str"):
        buffer.named("")
    with pytest.raises(ValueError, match="reason"):
        buffer.named("f").bypass("a|b")
    with pytest.raises(ConfigurationError, match="name must be a non-empty str"):
        cache(ttl=1, name="")
    with pytest.raises(ConfigurationError, match="name must be a non-empty str"):
        cache(ttl=1, name=3)  # type: ignore[arg-type]
    buffer.close()


# -- functions, methods, CacheAside ------------------------------------------------------------


def lookup_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


def test_a_function_counts_under_module_qualname(memory_cache: RedisCache) -> None:
    cached = cache(ttl=60, backend=memory_cache)(lookup_user)
    for user_id in (1, 2, 1, 1):
        assert cached(user_id) == {"id": user_id}
    row = by_name(memory_cache)["test_names.lookup_user"]
    assert row["hits"] == 2 and row["misses"] == 2 and row["total_requests"] == 4
    assert row["hit_rate"] == 50.0
    assert row["loads"] == 2 and row["load_p50_ms"] is not None
    assert row["load_p99_ms"] >= row["load_p50_ms"] >= 0
    totals = memory_cache.get_stats()
    assert totals["hits"] == 2 and totals["misses"] == 2  # counted once in the totals


def test_name_overrides_and_functions_sharing_a_name_share_a_row(
    memory_cache: RedisCache,
) -> None:
    @cache(ttl=60, backend=memory_cache, name="users")
    def first(n: int) -> int:
        return n

    @cache(ttl=60, backend=memory_cache, name="users")
    def second(n: int) -> int:
        return -n

    first(1)
    first(1)
    second(1)
    rows = by_name(memory_cache)
    assert set(rows) == {"users"}
    assert rows["users"]["hits"] == 1 and rows["users"]["misses"] == 2


class Repository:
    def __repr__(self) -> str:
        return "Repository()"

    @cache(ttl=60)
    def find(self, n: int) -> int:
        return n * 2


def test_a_method_counts_under_its_class_qualified_name(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        repo = Repository()
        assert repo.find(2) == 4 and repo.find(2) == 4
        rows = backend_of(app).get_stats()["by_name"]
    assert rows["test_names.Repository.find"]["hits"] == 1


def test_a_failing_load_counts_an_error_for_its_name(memory_cache: RedisCache) -> None:
    @cache(ttl=60, backend=memory_cache, name="flaky")
    def flaky() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        flaky()
    row = by_name(memory_cache)["flaky"]
    assert row["errors"] == 1 and row["loads"] == 1
    assert memory_cache.get_stats()["errors"] == 0  # the totals count Redis' errors only


def test_cache_aside_with_a_name_counts_fail_safe_serves(memory_cache: RedisCache) -> None:
    aside = CacheAside(memory_cache, ttl=0.1, stale_if_error=300, name="report")
    assert aside.get("report", lambda: "numbers") == "numbers"
    assert wait_for(lambda: memory_cache.get("report") is None, timeout=HANG)

    def database_down() -> str:
        raise OSError("database down")

    assert aside.get("report", database_down) == "numbers"
    row = by_name(memory_cache)["report"]
    assert row["fail_safe_hits"] == 1 and row["errors"] == 1
    assert row["misses"] == 1 and row["hits"] == 1 and row["loads"] == 2
    assert CacheAside(memory_cache, ttl=60).get("other", lambda: 1) == 1
    assert set(by_name(memory_cache)) == {"report"}  # without name=, totals only
    with pytest.raises(ConfigurationError):
        CacheAside(memory_cache, name="")


# -- views and their bypasses -------------------------------------------------------------------


def test_a_view_counts_under_its_endpoint_and_bypasses_under_their_reason(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.get("/items/<int:n>")
    @cache(ttl=60)
    def item(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/renamed")
    @cache(ttl=60, name="the-renamed-view")
    def renamed() -> str:
        return "r"

    @app.get("/stream")
    @cache(ttl=60)
    def stream() -> Response:
        return Response(stream_with_context(iter(["a", "b"])))

    client = app.test_client()
    for n in (1, 1, 2, 1, 2, 1):
        client.get(f"/items/{n}").close()
    client.get("/renamed").close()
    for _ in range(2):
        response = client.get("/stream")
        assert response.headers["X-Cache"] == "BYPASS"
        response.close()
    rows = backend_of(app).get_stats()["by_name"]
    assert rows["item"]["hits"] == 4 and rows["item"]["misses"] == 2
    assert rows["the-renamed-view"]["misses"] == 1 and "renamed" not in rows
    assert rows["stream"]["bypasses"] == 2
    assert rows["stream"]["bypass_reasons"] == {"streamed": 2}
    assert backend_of(app).get_stats()["bypasses"] == 2
    assert list(rows)[0] == "item"  # busiest first
    body = client.get("/cache/stats").get_json()
    assert body["by_name"]["item"]["hit_rate"] == 66.67


def test_fragments_are_named_from_their_tag(make_app: AppFactory) -> None:
    app = make_app()
    template = textwrap.dedent(
        """\
        {% cache 60, "sidebar", n %}side {{ n }}{% endcache %}
        {% cache 60, "c", n, name="counter" %}count {{ n }}{% endcache %}
        {% cache 60, n %}anonymous {{ n }}{% endcache %}"""
    )
    with app.test_request_context("/"):
        for _ in range(2):
            render_template_string(template, n=1)
        rows = backend_of(app).get_stats()["by_name"]
    assert rows["fragment:sidebar"]["hits"] == 1
    assert rows["counter"]["misses"] == 1
    anonymous = [name for name in rows if name.startswith("fragment:") and name.endswith(":3")]
    assert len(anonymous) == 1 and rows[anonymous[0]]["hits"] == 1


def test_compat_memoize_counts_under_module_qualname(memory_url: str) -> None:
    from flask_fennec_cache.compat import Cache

    app = Flask("compat_names")
    app.config.update(CACHE_TYPE="RedisCache", CACHE_REDIS_URL=memory_url, SECRET_KEY="k" * 32)
    compat = Cache(app)

    @compat.memoize(60)
    def double(n: int) -> int:
        return 2 * n

    with app.app_context():
        double(2)
        double(2)
        native = compat.cache.native  # type: ignore[union-attr]
        rows = native.get_stats()["by_name"]
        native.close()
    name = f"{__name__}.test_compat_memoize_counts_under_module_qualname.<locals>.double"
    assert rows[name]["hits"] == 1 and rows[name]["misses"] == 1


# -- shared, exact, no round trip on a hit --------------------------------------------------------


WORKER = """
import sys
from flask_fennec_cache import RedisCache, cache
backend = RedisCache(sys.argv[1], prefix=sys.argv[2])

@cache(ttl=600, backend=backend, name="shared")
def value(n):
    return n

for i in range(int(sys.argv[3])):
    value(i % 10)
backend.close()
"""


@pytest.mark.real
def test_counts_are_exact_across_processes(redis_server: RedisServer, prefix: str) -> None:
    """Three processes read one function's keys: the shared row is their exact sum."""
    runs = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, prefix, str(count)])
        for count in (100, 200, 300)
    ]
    assert [run.wait(timeout=60) for run in runs] == [0, 0, 0]
    reader = RedisCache(redis_server.url, prefix=prefix)
    try:
        row = reader.get_stats()["by_name"]["shared"]
        assert row["hits"] + row["misses"] == 600
        assert 10 <= row["misses"] <= 30  # 10 keys, each missed at most once per process
        assert reader.get_stats()["hits"] == row["hits"]
    finally:
        reader.close()


@pytest.mark.real
def test_a_named_hit_costs_no_extra_round_trip(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = RedisCache(redis_server.url, prefix=prefix, stats_flush_interval=QUIET)
    try:
        cached = cache(ttl=600, backend=backend, name="hot")(lookup_user)
        cached(1)
        counter = CallCounter().install(backend, monkeypatch)
        for _ in range(50):
            cached(1)
        assert counter.commands == ["GET"] * 50 and counter.pipelines == 0
        monkeypatch.undo()
        assert backend.get_stats()["by_name"]["hot"]["hits"] == 50  # one flush, one read
    finally:
        backend.close()


def test_reset_stats_clears_the_names_too(memory_cache: RedisCache) -> None:
    cache(ttl=60, backend=memory_cache, name="gone")(lookup_user)(1)
    assert "gone" in by_name(memory_cache)
    assert memory_cache.reset_stats()
    assert by_name(memory_cache) == {}


def test_during_an_outage_the_figures_say_they_are_this_processs(
    memory_cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = cache(ttl=60, backend=memory_cache, name="during")(lookup_user)
    cached(1)
    monkeypatch.setattr(memory_cache.monitor, "shared_snapshot", lambda: None)
    cached(2)
    found = memory_cache.get_stats()
    assert found["available"] is False and found["shared"] is False
    assert found["by_name"]["during"]["misses"] >= 1  # this process's unflushed counts
    monkeypatch.undo()
    assert memory_cache.get_stats()["available"] is True


# -- Prometheus ------------------------------------------------------------------------------------


def test_prometheus_name_families_are_separate_and_escaped() -> None:
    odd = 'a "quoted" \\ name\nwith a newline'
    counts = {
        "hits": 5,
        "misses": 1,
        named_field("hits", "plain"): 3,
        named_field("hits", odd): 2,
        named_field("misses", "plain"): 1,
        named_field("bypass:cookie", "plain"): 4,
        named_field("bypasses", "plain"): 4,
        named_field("load_le:0.01", "plain"): 1,
        named_field("load_sum_us", "plain"): 7000,
    }
    text = render(counts, "closed", 1)
    lines = text.splitlines()
    assert "fennec_cache_hits_total 5" in lines
    assert 'fennec_cache_name_hits_total{name="plain"} 3' in lines
    assert 'fennec_cache_name_hits_total{name="a \\"quoted\\" \\\\ name\\nwith a newline"} 2' in (
        lines
    )
    assert 'fennec_cache_name_bypass_reasons_total{name="plain",reason="cookie"} 4' in lines
    assert "# TYPE fennec_cache_name_load_seconds histogram" in lines
    assert 'fennec_cache_name_load_seconds_bucket{name="plain",le="0.01"} 1' in lines
    assert 'fennec_cache_name_load_seconds_bucket{name="plain",le="+Inf"} 1' in lines
    assert 'fennec_cache_name_load_seconds_count{name="plain"} 1' in lines
    assert 'fennec_cache_name_load_seconds_sum{name="plain"} 0.007' in lines
    # No sample of a totals family carries a name label: summing it never doubles.
    assert not [line for line in lines if line.startswith("fennec_cache_hits_total{")]


def test_metrics_endpoint_shows_names(make_app: AppFactory) -> None:
    app = make_app()

    @app.get("/x")
    @cache(ttl=60)
    def x_view() -> str:
        return "x"

    client = app.test_client()
    client.get("/x").close()
    client.get("/x").close()
    text = client.get("/cache/metrics").get_data(as_text=True)
    assert 'fennec_cache_name_hits_total{name="x_view"} 1' in text.splitlines()
    assert 'fennec_cache_name_misses_total{name="x_view"} 1' in text.splitlines()


def test_metrics_without_redis_report_no_name_families(app_factory_down: Flask) -> None:
    text = app_factory_down.test_client().get("/cache/metrics").get_data(as_text=True)
    assert "fennec_cache_up 0" in text and "fennec_cache_name_" not in text


@pytest.fixture
def app_factory_down(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> Flask:
    app = make_app()
    monkeypatch.setattr(backend_of(app).monitor, "shared_snapshot", lambda: None)
    return app


@pytest.mark.real
def test_names_on_a_cluster(cluster_caches: Any) -> None:
    """The per-name fields live in the totals' hash: one key, one slot, one pipeline."""
    backend: RedisCache = cluster_caches(stats_flush_interval=QUIET)
    cached = cache(ttl=60, backend=backend, name="clustered")(lookup_user)
    for user_id in (1, 2, 3, 1, 2, 3):
        cached(user_id)
    row = backend.get_stats()["by_name"]["clustered"]
    assert row["hits"] == 3 and row["misses"] == 3
    assert backend.reset_stats() and backend.get_stats()["by_name"] == {}
