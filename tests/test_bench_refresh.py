"""Smoke test of ``python -m bench.refresh`` (docs/reliability.md's rows for issue 14): short
runs, no timing thresholds — the rows are there and the fail-safe peer never failed a read."""

from __future__ import annotations

import os
import shutil

import pytest

from bench.refresh import markdown, run_database_down, run_hot_key
from bench.server import BenchRedis

pytestmark = pytest.mark.real


@pytest.fixture
def bench_redis() -> BenchRedis:
    if shutil.which("redis-server") is None:
        message = "redis-server not found on PATH: bench.refresh starts its own"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return BenchRedis()


def test_both_rows_are_measured(bench_redis: BenchRedis) -> None:
    pytest.importorskip("flask_caching")
    with bench_redis as server:
        hot = run_hot_key(server.url, threads=2, seconds=0.5)
        down = run_database_down(server.url, threads=2, outage=0.5)
    assert [row["peer"] for row in hot] == [
        "fennec, plain ttl",
        "fennec, stale_ttl=30",
        "Flask-Caching memoize",
    ]
    assert all(row["reads"] > 0 and row["failed"] == 0 for row in hot)
    by_peer = {row["peer"]: row for row in down}
    assert by_peer["fennec, stale_if_error=60"]["failed"] == 0  # served stale throughout
    assert markdown("t", hot).splitlines()[2].startswith("| peer | reads |")
