"""Scenario 3: cached-view throughput under gunicorn, against a constant view."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flask_fennec_cache import RedisCache
from flask_fennec_cache._stats import latency_histogram

from .app import BODY_BYTES, VIEW_PREFIX, VIEWS
from .loadgen import generator_name, run_load
from .server import free_port
from .timing import summarize

__all__ = ["WORKERS", "run_view_throughput"]

WORKERS = 2
WORKER_CLASS = "sync"
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
STATS_FLUSH_WAIT = 1.5


class Gunicorn:
    """``gunicorn -w 2 -k sync "bench.app:create_app()"`` on a free loopback port."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    def __enter__(self) -> Gunicorn:
        env = {**os.environ, "FENNEC_BENCH_REDIS_URL": self.redis_url}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(WORKERS), "--worker-class", WORKER_CLASS,
            "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
            "--chdir", str(REPO_ROOT), "bench.app:create_app()",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if self.get(VIEWS["const"])[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not start:\n{self.log()}")

    def get(self, path: str) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def _round_trip_us(cache: RedisCache) -> dict[str, float] | None:
    """The median and p99 Redis round trip the gunicorn workers measured for the cached view
    (the library's own sampled latency histogram, shared through Redis)."""
    counts = cache.shared_counters()
    if counts is None:
        return None
    histogram = latency_histogram(counts)
    p50, p99 = histogram.quantile(0.5), histogram.quantile(0.99)
    if p50 is None or p99 is None:
        return None
    return {"p50": p50 * 1e6, "p99": p99 * 1e6, "samples": histogram.count}


def _against(per_round: dict[str, list[float]], peer: str) -> dict[str, float]:
    """Each cached view's rate over *peer*'s, the median of the per-round ratios (the two run
    one after the other in every round, on the same server)."""
    return {
        name: summarize(
            [
                rps / other if other else 0.0
                for rps, other in zip(rates, per_round[peer], strict=True)
            ]
        ).median
        for name, rates in per_round.items()
        if name.startswith("fennec")
    }


def run_view_throughput(
    redis_url: str, seconds: float, warmup: float, rounds: int
) -> dict[str, Any]:
    """Requests/s of each view and its ratio to ``/const``.

    Each view gets *seconds* of load in total, split into *rounds* runs taken in rotating order;
    the ratio is the median of the per-round ratios, so that drift (other work on the machine)
    weighs on every view alike. ``vs_hand_written`` is ours over the hand-written redis-py view
    (``/raw``), taken the same way.
    """
    served = VIEWS
    names = list(served)
    totals = {name: {"requests": 0, "seconds": 0.0, "errors": 0} for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    latency: dict[str, list[tuple[float | None, float | None]]] = {name: [] for name in names}
    with Gunicorn(redis_url) as server:
        checks: dict[str, str] = {}
        for name, path in served.items():
            run_load(f"http://127.0.0.1:{server.port}{path}", warmup)
            status, headers = server.get(path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}:\n{server.log()}")
            checks[name] = headers.get("x-cache", "")
        for name in ("fennec", "fennec_near"):
            if name in checks and checks[name] != "HIT":
                found = checks[name]
                raise RuntimeError(f"{served[name]} was not served from the cache: {found!r}")
        ours = RedisCache(redis_url, prefix=VIEW_PREFIX)
        ours.reset_stats()  # the workers' latency histogram then covers the timed rounds only
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                load = run_load(f"http://127.0.0.1:{server.port}{served[name]}", seconds / rounds)
                totals[name]["requests"] += load.requests
                totals[name]["seconds"] += load.seconds
                totals[name]["errors"] += load.errors
                per_round[name].append(load.rps)
                latency[name].append((load.p50_ms, load.p99_ms))
        time.sleep(STATS_FLUSH_WAIT)  # the workers flush their counts once a second
        round_trip = _round_trip_us(ours)
        ours.close()
    results: dict[str, Any] = {}
    for name in names:
        total = totals[name]
        p50s = sorted(p for p, _ in latency[name] if p is not None)
        p99s = sorted(p for _, p in latency[name] if p is not None)
        results[name] = {
            "rps": total["requests"] / total["seconds"] if total["seconds"] else 0.0,
            "rps_per_round": per_round[name],
            "requests": total["requests"],
            "errors": total["errors"],
            "p50_ms": p50s[len(p50s) // 2] if p50s else None,
            "p99_ms": p99s[len(p99s) // 2] if p99s else None,
        }
    # The ratio of each round (to the constant view's rate in the same round), then their
    # median: drift between rounds cancels out.
    for name in names:
        ratios = [
            rps / const if const else 0.0
            for rps, const in zip(per_round[name], per_round["const"], strict=True)
        ]
        results[name]["ratio"] = summarize(ratios).median
        results[name]["ratio_per_round"] = ratios
    return {
        "views": results,
        "vs_hand_written": _against(per_round, "raw"),
        "redis_round_trip_us": round_trip,
        "workers": WORKERS,
        "worker_class": WORKER_CLASS,
        "load_generator": generator_name(),
        "seconds_each": seconds,
        "rounds": rounds,
        "body_bytes": BODY_BYTES,
    }
