"""Smoke test of the benchmark suite: ``python -m bench --quick --json`` runs every scenario.

No timing thresholds: the numbers of a quick run are noise. It checks that each scenario ran,
for each implementation, and reported numbers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS = ("fennec", "raw", "flask_caching", "dogpile")
SIZES = ("100 B", "1 KB", "10 KB", "100 KB")


def _require_bench() -> None:
    missing = [
        dist
        for module, dist in (("flask_caching", "Flask-Caching"), ("dogpile", "dogpile.cache"))
        if find_spec(module) is None
    ]
    if missing:
        pytest.skip(
            f"the bench peers are not installed ({', '.join(missing)}): "
            "pip install -e '.[bench]' to run the benchmark smoke test"
        )
    if shutil.which("redis-server") is None:
        message = "redis-server not found on PATH: the bench starts its own"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _assert_numbers(entry: dict[str, Any], *fields: str) -> None:
    for field in fields:
        assert _number(entry.get(field)), f"{field} is not a number in {entry}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _require_bench()
    out = tmp_path_factory.mktemp("bench") / "results" / "bench.json"  # a new directory too
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"bench failed:\n{done.stdout}\n{done.stderr}"
    assert "| scenario |" in done.stdout
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_machine_is_described(results: dict[str, Any]) -> None:
    machine = results["machine"]
    for field in ("cpu", "python", "redis_server", "redis_py", "hiredis", "load_generator"):
        assert machine[field], field
    assert _number(machine["cores"])


def test_hit_latency_every_size_and_peer(results: dict[str, Any]) -> None:
    for size in SIZES:
        table = results["hit_latency"][size]
        for peer in PEERS:
            _assert_numbers(table[peer], "median_us", "p99_us", "ratio", "n")
        assert table["raw"]["ratio"] == 1.0


def test_miss_then_set(results: dict[str, Any]) -> None:
    for peer in PEERS:
        _assert_numbers(results["miss_then_set"]["peers"][peer], "median_us", "p99_us", "ratio")


def test_view_throughput(results: dict[str, Any]) -> None:
    views = results["view_throughput"]["views"]
    for view in ("const", "fennec", "flask_caching", "raw"):
        _assert_numbers(views[view], "rps", "ratio", "requests", "errors")
        assert views[view]["requests"] > 0, view
    against = results["view_throughput"]["vs_hand_written"]
    assert set(against) >= {"fennec"} and all(value > 0 for value in against.values())
    trip = results["view_throughput"]["redis_round_trip_us"]
    assert trip is not None, "the workers' latency histogram was not read"
    _assert_numbers(trip, "p50", "p99", "samples")
    assert 0 < trip["p50"] <= trip["p99"]


def test_stampede(results: dict[str, Any]) -> None:
    stampede = results["stampede"]
    for peer in PEERS:
        entry = stampede["peers"][peer]
        _assert_numbers(entry, "loads", "p50_ms", "p99_ms", "ratio")
        assert entry["loads"] >= 1


def test_bytes_per_entry(results: dict[str, Any]) -> None:
    for label in ("92 B", "10 KB compressible"):
        entry = results["bytes_per_entry"][label]
        _assert_numbers(entry, "json_bytes", "zlib_json_bytes")
        for peer in PEERS:
            _assert_numbers(entry[peer], "value_bytes", "extra_bytes", "total_bytes", "ratio")
            assert entry[peer]["value_bytes"] > 0, peer


def test_redis_down(results: dict[str, Any]) -> None:
    for peer in PEERS:
        _assert_numbers(results["redis_down"][peer], "p50_us", "p99_us", "ratio", "n")


def test_targets_are_reported(results: dict[str, Any]) -> None:
    assert results["targets"]
    for check in results["targets"]:
        assert isinstance(check["met"], bool)
