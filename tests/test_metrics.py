"""``GET {mount}/metrics``: Prometheus text format 0.0.4 from the shared counters."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import pytest
from _servers import RedisServer
from _support import HANG, AppFactory, backend_of, wait_for
from flask import Flask

from flask_fennec_cache import CacheAside, RedisCache
from flask_fennec_cache._prometheus import BREAKER_STATES, CONTENT_TYPE, render
from flask_fennec_cache._stats import (
    FIELDS,
    LATENCY_BUCKETS,
    SAMPLE_EVERY,
    StatsBuffer,
    latency_histogram,
)

HISTOGRAM = "fennec_cache_operation_duration_seconds"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="[^"\\]*",?)*\})? (\S+)$')


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


class Scrape:
    """A parsed scrape, checked against the text format's rules while parsing."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[str, float] = {}
        helped: set[str] = set()
        assert text.endswith("\n")
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                assert name not in helped, f"HELP twice for {name}"
                helped.add(name)
                family = name
            elif line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                assert name == family and name not in self.types
                assert kind in {"counter", "gauge", "histogram"}
                self.types[name] = kind
            else:
                match = SAMPLE.match(line)
                assert match, f"not a valid sample line: {line!r}"
                name, labels, value = match.groups()
                assert name == family or name.startswith(family + "_"), (name, family)
                if self.types[family] == "counter":
                    assert name.endswith("_total")
                self.samples[name + (labels or "")] = float(value)
        assert helped == set(self.types)

    def __getitem__(self, name: str) -> float:
        return self.samples[name]

    def buckets(self) -> list[tuple[float, float]]:
        found = []
        for name, value in self.samples.items():
            match = re.fullmatch(HISTOGRAM + r'_bucket\{le="([^"]+)"\}', name)
            if match:
                found.append((float(match.group(1)), value))
        return found


def scrape(app: Flask) -> Scrape:
    response = app.test_client().get("/cache/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return Scrape(response.get_data(as_text=True))


# ==================================================================================
# The endpoint
# ==================================================================================


def test_counters_follow_the_cache(app: Flask) -> None:
    backend = backend_of(app)
    before = scrape(app)
    assert before["fennec_cache_up"] == 1
    assert all(before[f"fennec_cache_{field}_total"] == 0 for field in FIELDS)
    backend.set("a", 1)
    backend.set("b", 2)
    backend.get("a")
    backend.get("a")
    backend.get("nope")
    backend.delete("b")
    after = scrape(app)
    assert after["fennec_cache_hits_total"] == 2
    assert after["fennec_cache_misses_total"] == 1
    assert after["fennec_cache_sets_total"] == 2
    assert after["fennec_cache_deletes_total"] == 1
    assert after.types["fennec_cache_hits_total"] == "counter"


def test_fail_safe_serves_are_a_counter(app: Flask) -> None:
    backend = backend_of(app)
    aside = CacheAside(backend, ttl=0.1, stale_if_error=300)
    assert aside.get("k", lambda: "v") == "v"
    assert wait_for(lambda: backend.get("k") is None, timeout=HANG)

    def failing() -> str:
        raise OSError("the database is down")

    assert aside.get("k", failing) == "v"
    result = scrape(app)
    assert result["fennec_cache_fail_safe_hits_total"] == 1
    assert result.types["fennec_cache_fail_safe_hits_total"] == "counter"
    help_line = "# HELP fennec_cache_fail_safe_hits_total Reads served a stale value because"
    assert help_line in app.test_client().get("/cache/metrics").get_data(as_text=True)


def test_the_histogram_counts_every_round_trip(app: Flask) -> None:
    backend = backend_of(app)
    start = scrape(app)[f"{HISTOGRAM}_count"]
    backend.set("a", 1)  # through _run
    for _ in range(29):
        backend.get("a")  # through _read
    backend.get_many(["a", "b"])
    result = scrape(app)
    assert result.types[HISTOGRAM] == "histogram"
    # One round trip in SAMPLE_EVERY is timed and counted SAMPLE_EVERY times.
    counted = result[f"{HISTOGRAM}_count"] - start
    assert counted % SAMPLE_EVERY == 0
    assert abs(counted - 31) < SAMPLE_EVERY
    buckets = result.buckets()
    assert [bound for bound, _ in buckets] == [*LATENCY_BUCKETS, math.inf]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert counts[-1] == result[f"{HISTOGRAM}_count"]
    assert result[f"{HISTOGRAM}_sum"] > 0


def test_counters_are_shared_by_every_process(app: Flask) -> None:
    """Another worker (another RedisCache on the same Redis and prefix) counts in the same place."""
    mine = backend_of(app)
    worker = RedisCache(mine.url, prefix=mine.prefix)
    for _ in range(SAMPLE_EVERY):
        worker.set("x", 1)
    worker.get("x")
    worker.get("y")
    worker.close()  # flushes its counts, as a worker does every second and at exit
    result = scrape(app)
    assert result["fennec_cache_hits_total"] == 1
    assert result["fennec_cache_misses_total"] == 1
    assert result[f"{HISTOGRAM}_count"] >= SAMPLE_EVERY


def test_breaker_state_is_labelled_with_the_pid(app: Flask) -> None:
    result = scrape(app)
    assert result[f'fennec_cache_breaker_state{{pid="{os.getpid()}"}}'] == 0


def test_metrics_are_open_like_stats(make_app: AppFactory) -> None:
    app = make_app(FENNEC_CACHE_ADMIN_TOKEN="metrics-admin-token")
    assert app.test_client().get("/cache/metrics").status_code == 200
    assert app.test_client().post("/cache/clear").status_code == 401


@pytest.mark.parametrize("body", [{"pattern": "user:*"}, {}], ids=["pattern", "all"])
def test_clearing_is_not_a_counter_reset(make_app: AppFactory, body: dict[str, str]) -> None:
    """A clear through the admin endpoint keeps every counter (Prometheus sees no reset);
    only POST stats/reset zeroes them."""
    app = make_app(FENNEC_CACHE_ADMIN_OPEN=True)
    backend = backend_of(app)
    backend.set_many({"user:1": 1, "user:2": 2, "post:1": 3})
    backend.get("user:1")
    backend.get("nope")
    before = scrape(app)
    cleared = app.test_client().post("/cache/clear", json=body)
    assert cleared.status_code == 200
    after = scrape(app)
    removed = cleared.get_json()["keys_deleted"]
    assert removed > 0
    for field in FIELDS:
        name = f"fennec_cache_{field}_total"
        grown = removed if field == "deletes" else 0
        assert after[name] == before[name] + grown, name
    assert after[f"{HISTOGRAM}_count"] >= before[f"{HISTOGRAM}_count"]

    assert app.test_client().post("/cache/stats/reset", json={}).status_code == 200
    reset = scrape(app)
    assert all(reset[f"fennec_cache_{field}_total"] == 0 for field in FIELDS)


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_dead_redis_still_answers_a_scrape(
    make_app: AppFactory, redis_server: RedisServer, fail_open: bool
) -> None:
    app = make_app(
        FENNEC_CACHE_URL=redis_server.url,
        FENNEC_CACHE_FAIL_OPEN=fail_open,
        FENNEC_CACHE_BREAKER_THRESHOLD=1,
        FENNEC_CACHE_BREAKER_COOLDOWN=30,
    )
    backend_of(app).get("warm-up")
    assert scrape(app)["fennec_cache_up"] == 1
    redis_server.kill()
    result = scrape(app)
    assert result["fennec_cache_up"] == 0
    assert result[f'fennec_cache_breaker_state{{pid="{os.getpid()}"}}'] == BREAKER_STATES["open"]
    assert "fennec_cache_hits_total" not in result.samples  # absent, not a drop to zero


# ==================================================================================
# The pieces
# ==================================================================================


def test_render_without_counters() -> None:
    text = render(None, "half-open", 42)
    parsed = Scrape(text)
    assert parsed.samples == {"fennec_cache_up": 0, 'fennec_cache_breaker_state{pid="42"}': 1}


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, 0.0001),
        (0.0001, 0.0001),
        (0.00010001, 0.00025),
        (0.001, 0.001),
        (1.0, 1.0),
        (1.5, math.inf),
        (3600.0, math.inf),
    ],
)
def test_observations_land_in_the_right_bucket(seconds: float, bucket: float) -> None:
    flushed: list[dict[str, int]] = []

    def keep(counts: Mapping[str, int]) -> bool:
        flushed.append(dict(counts))
        return True

    buffer = StatsBuffer(keep, 60.0)
    buffer.observe(seconds)
    assert buffer.flush()
    histogram = latency_histogram(flushed[0])
    assert histogram.count == 1
    first = next(bound for bound, cumulative in histogram.buckets if cumulative == 1)
    assert first == bucket
    assert histogram.sum == pytest.approx(int(seconds * 1_000_000) / 1_000_000)
    buffer.close()


def test_quantiles_interpolate_like_prometheus() -> None:
    counts = {"latency_le:0.001": 50, "latency_le:0.0025": 40, "latency_le:0.01": 10}
    histogram = latency_histogram(counts)
    assert histogram.count == 100
    assert histogram.quantile(0.5) == pytest.approx(0.001)
    assert histogram.quantile(0.25) == pytest.approx(0.0005 + 0.0005 * 25 / 50)
    assert histogram.quantile(0.7) == pytest.approx(0.001 + 0.0015 * 20 / 40)
    assert histogram.quantile(0.99) == pytest.approx(0.005 + 0.005 * 9 / 10)
    assert latency_histogram({}).quantile(0.5) is None
    slow = latency_histogram({"latency_le:+Inf": 3})
    assert slow.quantile(0.5) == 1.0  # beyond the last bound, the bound is all we know


def test_unknown_bucket_fields_are_ignored() -> None:
    histogram = latency_histogram({"latency_le:0.0007": 9, "latency_le:0.001": 1})
    assert histogram.count == 1
