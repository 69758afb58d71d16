"""Smoke test of ``python -m bench.freeze`` (the figures of docs/reliability.md's freeze rows).

No timing thresholds: it checks that a short freeze ran, the page kept answering, the cache hit
again after SIGCONT, and the report has a row per number of cached calls.
"""

from __future__ import annotations

import argparse
import os
import shutil

import pytest

from bench.freeze import SingleServer, _calls, markdown, run_freeze
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


def test_a_short_freeze_is_measured_and_the_cache_recovers(bench_redis: BenchRedis) -> None:
    with bench_redis as server:
        result = run_freeze(SingleServer(server), calls=2, threads=2, freeze=0.6, gunicorn=False)
    assert result.calls == result.frozen_calls == 2 and result.server == "in-process"
    assert result.frozen_requests > 0  # the page answered while Redis was frozen
    assert result.recovery_ms is not None, "no page was all hits again after SIGCONT"
    assert result.frozen_worst_ms >= result.frozen_p50_ms > 0
    table = markdown([result])
    assert table.splitlines()[-1].startswith("| 2 (2) | ")


def test_the_calls_option_is_checked() -> None:
    assert _calls("1,3,6") == (1, 3, 6)
    for bad in ("1,x", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _calls(bad)
