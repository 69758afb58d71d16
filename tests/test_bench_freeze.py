"""Smoke test of ``python -m bench.freeze`` (the figures of docs/reliability.md's freeze rows).

No timing thresholds: it checks that a short freeze ran, the page kept answering, the cache hit
again after SIGCONT, and the report has a row per number of cached calls.
"""

from __future__ import annotations

import argparse
import os
import shutil

import pytest

from bench.freeze import (
    FENNEC,
    FLASK_CACHING,
    FLASK_CACHING_TUNED,
    SingleServer,
    _calls,
    _implementations,
    close_app,
    make_app,
    markdown,
    run_freeze,
)
from bench.server import BenchRedis

pytestmark = pytest.mark.real


@pytest.fixture
def bench_redis() -> BenchRedis:
    if shutil.which("redis-server") is None:
        message = "redis-server not found on PATH: bench.freeze starts its own"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return BenchRedis()


#: At the floors (Flask-Caching 2.1, cachelib 0.9) RedisCache stores with redis-py's deprecated
#: ``setex``: as an error (this suite's warning filter) memoize takes it for a cache failure.
OLD_FLASK_CACHING = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")


@OLD_FLASK_CACHING
@pytest.mark.parametrize("implementation", [FENNEC, FLASK_CACHING, FLASK_CACHING_TUNED])
def test_a_short_freeze_is_measured_and_the_cache_recovers(
    bench_redis: BenchRedis, implementation: str
) -> None:
    with bench_redis as server:
        result = run_freeze(
            SingleServer(server), calls=2, threads=2, freeze=0.6, gunicorn=False,
            implementation=implementation,
        )  # fmt: skip
    assert result.implementation == implementation
    assert result.calls == result.frozen_calls == 2 and result.server == "in-process"
    assert result.frozen_requests > 0  # the page answered while Redis was frozen
    assert result.recovery_ms is not None, "no page was all hits again after SIGCONT"
    assert result.frozen_worst_ms >= result.frozen_p50_ms > 0
    table = markdown([result])
    assert table.splitlines()[-1].startswith(f"| {implementation} | 2 (2) | ")


@OLD_FLASK_CACHING
def test_the_flask_caching_page_counts_its_hits(bench_redis: BenchRedis) -> None:
    with bench_redis as server:
        app = make_app(server.url, 3, "fc-hits:", implementation=FLASK_CACHING_TUNED)
        client = app.test_client()
        assert client.get("/page").get_json() == {"hits": 0}
        assert client.get("/page").get_json() == {"hits": 3}
        close_app(app)


def test_the_options_are_checked() -> None:
    assert _calls("1,3,6") == (1, 3, 6)
    for bad in ("1,x", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _calls(bad)
    assert _implementations("fennec,flask-caching") == (FENNEC, FLASK_CACHING)
    for bad in ("", "fennec,memcached"):
        with pytest.raises(argparse.ArgumentTypeError):
            _implementations(bad)
    with pytest.raises(ValueError, match="unknown implementation"):
        make_app("memory://x", 1, "p:", implementation="memcached")
