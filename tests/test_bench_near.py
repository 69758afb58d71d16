"""Smoke test of ``python -m bench.near`` (issue 16 item 3's rows): a short run, no timing
thresholds — every row is measured, and every call of a near-cache row was a near hit."""

from __future__ import annotations

import math
import os
import shutil

import pytest

from bench.near import GOALS, ROWS, NearPlan, markdown, run_near_hits
from bench.server import BenchRedis

pytestmark = pytest.mark.real


@pytest.fixture
def bench_redis() -> BenchRedis:
    if shutil.which("redis-server") is None:
        message = "redis-server not found on PATH: bench.near starts its own"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return BenchRedis()


def test_every_row_is_measured_and_the_near_rows_never_left_the_process(
    bench_redis: BenchRedis,
) -> None:
    with bench_redis as server:
        results = run_near_hits(server.url, NearPlan.quick())
    rows = results["rows"]
    assert list(rows) == list(ROWS)
    for row in rows.values():
        assert row["n"] == 40
        assert all(math.isfinite(row[field]) and row[field] > 0 for field in ("median_us", "ratio"))
    assert rows["plain"]["ratio"] == 1.0
    assert {name for name, row in rows.items() if row["goal"] is not None} == set(GOALS)
    assert results["near_hits"] >= results["near_calls"] > 0
    table = markdown(results).splitlines()
    assert table[0].startswith("| @cache hit, 100 B JSON | median | ratio |")
    assert len(table) == 2 + len(ROWS)
