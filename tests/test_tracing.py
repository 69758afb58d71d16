"""OpenTelemetry spans (issue 16 item 2): reads, loads and invalidations, with the name, the
outcome and the key's namespace, never a value; nothing at all without the package.

The spans go to the SDK's in-memory exporter through a tracer provider of the test's own (the
global one is left alone, so the rest of the suite keeps the API's no-op tracer).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flask_fennec_cache import CacheAside, FennecCache, RedisCache, _tracing, cache, loading

SECRET = "never-in-a-span-0123"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(_tracing, "TRACER", tracer)
    monkeypatch.setattr(loading, "TRACER", tracer)
    monkeypatch.setattr(_tracing, "_provider_set", True)  # as when the app sets its provider
    yield exporter
    provider.shutdown()


@pytest.fixture
def made(memory_url: str) -> Iterator[RedisCache]:
    backend = RedisCache(memory_url, prefix=f"o-{uuid.uuid4().hex[:8]}:", stats_flush_interval=3600)
    yield backend
    backend.close()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_miss_then_a_hit_with_their_load(spans: InMemorySpanExporter, made: RedisCache) -> None:
    @cache(ttl=60, backend=made, key="user:{user_id}")
    def profile(user_id: int) -> dict[str, str]:
        return {"secret": SECRET}

    profile(42)
    profile(42)
    reads = named(spans, "fennec_cache.read")
    assert [attrs(r)[_tracing.OUTCOME] for r in reads] == ["miss", "hit"]
    assert {attrs(r)[_tracing.NAME] for r in reads} == {f"{__name__}.{profile.__qualname__}"}
    assert {attrs(r)[_tracing.NAMESPACE] for r in reads} == {"user"}
    (load,) = named(spans, "fennec_cache.load")
    assert attrs(load)[_tracing.OUTCOME] == "ok"
    assert load.parent is not None and load.parent.span_id == reads[0].context.span_id
    everything = repr([attrs(s) for s in spans.get_finished_spans()])
    assert SECRET not in everything and "42" not in everything  # no value, no whole key


def test_stale_and_fail_safe_serves_and_errors(
    spans: InMemorySpanExporter, made: RedisCache
) -> None:
    failing = {"now": False}

    @cache(ttl=0.2, backend=made, key="item:1", name="items", stale_if_error=600)
    def item() -> int:
        if failing["now"]:
            raise RuntimeError("database down")
        return 1

    item()
    time.sleep(0.5)  # past its freshness (0.2 s, jitter included): stale, kept for 600 s more
    failing["now"] = True
    assert item() == 1
    outcomes = [attrs(r)[_tracing.OUTCOME] for r in named(spans, "fennec_cache.read")]
    assert outcomes == ["miss", "fail-safe"]
    loads = named(spans, "fennec_cache.load")
    assert [attrs(s)[_tracing.OUTCOME] for s in loads] == ["ok", "error"]
    assert all(attrs(s)[_tracing.NAME] == "items" for s in loads)

    @cache(ttl=60, backend=made, key="boom", name="boom")
    def boom() -> int:
        raise RuntimeError("no stale value")

    with pytest.raises(RuntimeError):
        boom()
    last = named(spans, "fennec_cache.read")[-1]
    assert attrs(last)[_tracing.NAME] == "boom" and attrs(last)[_tracing.OUTCOME] == "error"


def test_invalidations_are_spans_named_for_what_asked(
    spans: InMemorySpanExporter, made: RedisCache
) -> None:
    @cache(ttl=60, backend=made, key="order:{order_id}")
    def order(order_id: int) -> int:
        return order_id

    order(7)
    order.invalidate(7)
    made.delete("cart:1", "cart:2")
    made.invalidate_tags("orders", "users")
    made.clear("cart:*")
    found = [attrs(s) for s in named(spans, "fennec_cache.invalidate")]
    assert found[0][_tracing.KIND] == "delete" and found[0][_tracing.NAME].endswith("order")
    assert found[0][_tracing.NAMESPACE] == "order" and found[0][_tracing.OUTCOME] == "ok"
    assert found[1] == {_tracing.KIND: "delete", _tracing.COUNT: 2, _tracing.NAMESPACE: "cart",
                        _tracing.OUTCOME: "ok"}  # fmt: skip
    assert found[2][_tracing.KIND] == "tags" and found[2][_tracing.COUNT] == 2
    assert _tracing.NAMESPACE not in found[2]  # tags are not keys
    assert found[3][_tracing.KIND] == "clear" and found[3][_tracing.NAMESPACE] == "cart"


def test_a_failed_invalidation_is_an_error_span(spans: InMemorySpanExporter) -> None:
    down = RedisCache("redis://127.0.0.1:1/0", prefix="o:", socket_timeout=0.2,
                      connect_timeout=0.2, stats_flush_interval=3600)  # fmt: skip
    try:
        assert down.try_delete("k") is None
    finally:
        down.close()
    # The background prober may have tried the kept deletion again meanwhile: an error too.
    found = named(spans, "fennec_cache.invalidate")
    assert found and all(attrs(span)[_tracing.OUTCOME] == "error" for span in found)


def test_views_aside_and_fragments_are_read_spans(
    spans: InMemorySpanExporter, memory_url: str
) -> None:
    app = Flask(__name__)
    app.config.update(FENNEC_CACHE_URL=memory_url, FENNEC_CACHE_PREFIX=f"o-{uuid.uuid4().hex[:6]}:")
    ext = FennecCache(app)

    @app.get("/posts/<int:post_id>")
    @ext.cache(ttl=60)
    def post(post_id: int) -> str:
        return f"post {post_id}"

    @app.get("/page")
    def page() -> str:
        from flask import render_template_string

        return render_template_string("{% cache 60, 'sidebar' %}side{% endcache %}")

    try:
        client = app.test_client()
        client.get("/posts/3")
        client.get("/posts/3")
        client.get("/page")
        with app.app_context():
            backend = ext.backend
        aside = CacheAside(backend, ttl=60, name="aside")
        aside.get("thing:1", lambda: 1)
        reads = [attrs(s) for s in named(spans, "fennec_cache.read")]
        assert [(r[_tracing.NAME], r[_tracing.OUTCOME]) for r in reads[:2]] == [
            ("post", "miss"),
            ("post", "hit"),
        ]
        assert reads[0][_tracing.NAMESPACE] == "view"
        assert reads[2][_tracing.NAME].startswith("fragment:")
        assert (reads[3][_tracing.NAME], reads[3][_tracing.NAMESPACE]) == ("aside", "thing")
    finally:
        app.extensions["fennec_cache"].close()


def test_without_the_package_nothing_is_traced_or_wrapped() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from flask_fennec_cache import RedisCache, cache, _tracing, loading
        from flask_fennec_cache.backend import RedisCache as Backend
        assert _tracing.TRACER is None and loading.TRACER is None
        assert not hasattr(Backend.delete, "__wrapped__")
        made = RedisCache("memory://", prefix="x:")
        @cache(ttl=60, backend=made)
        def f(x):
            return x * 2
        assert f(2) == 4 and f(2) == 4
        made.delete("k")
        made.close()
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
