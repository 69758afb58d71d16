"""``python -m bench.refresh``: a slow loader across expiry, and a database that goes down.

Two rows of issue 14, in-process against a private ``redis-server``, side by side with what a
user has without these options and with Flask-Caching's ``memoize``:

- **hot key across expiry**: *threads* threads read one key for *seconds* while its entry
  (TTL 1 s) expires again and again; the loader takes 200 ms. Reported: the readers' p50,
  p99 and worst latency, and the loader's calls. With ``stale_ttl`` the refresh runs in the
  background, so the goal is the hit p99.
- **database down**: the same readers for *seconds*, TTL 0.5 s, the loader raising for 5 s in
  the middle. Reported: failed reads and loader calls. With ``stale_if_error`` the goal is 0
  failed reads, and the loader retried about once a second.

Not part of ``python -m bench`` (it measures behaviour over seconds, not speed); the figures
are in ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from flask_fennec_cache import RedisCache, cache

from .server import BenchRedis

Read = Callable[[], Any]


class Database:
    """A loader that takes *delay* seconds and raises while it is down."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.down = False
        self.calls = 0
        self._lock = threading.Lock()

    def load(self, key: str) -> str:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.down:
            raise ConnectionError("the database is down")
        return f"value of {key}"


def _drive(read: Read, threads: int, seconds: float) -> tuple[list[float], int]:
    """Every thread reads as fast as it can for *seconds*: (latencies in s, failed reads)."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def reader() -> None:
        mine: list[float] = []
        errors = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                read()
            except Exception:
                errors += 1
            mine.append(time.perf_counter() - started)
            time.sleep(0.001)
        with lock:
            latencies.extend(mine)
            failed[0] += errors

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, failed[0]


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _peers(url: str, ttl: float, options: dict[str, Any]) -> dict[str, Callable[[Database], Read]]:
    """Ways to cache ``db.load("k")``, by name."""

    def ours(name: str, **extra: Any) -> Callable[[Database], Read]:
        def build(db: Database) -> Read:
            backend = RedisCache(url, prefix=f"bench:rf:{name}:{time.monotonic_ns()}:")
            cached = cache(ttl=ttl, backend=backend, **extra)(db.load)
            return lambda: cached("k")

        return build

    def flask_caching(db: Database) -> Read:
        from flask import Flask
        from flask_caching import Cache

        app = Flask("bench_refresh_flask_caching")
        fc = Cache(
            app,
            config={
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": url,
                "CACHE_KEY_PREFIX": f"bench:rf:fc:{time.monotonic_ns()}:",
            },
        )
        cached = fc.memoize(timeout=max(1, round(ttl)))(db.load)
        return lambda: cached("k")

    return {
        "fennec, plain ttl": ours("plain"),
        **{f"fennec, {k}": ours(k.split("=")[0], **v) for k, v in options.items()},
        "Flask-Caching memoize": flask_caching,
    }


def run_hot_key(url: str, threads: int, seconds: float) -> list[dict[str, Any]]:
    rows = []
    peers = _peers(url, 1.0, {"stale_ttl=30": {"stale_ttl": 30}})
    for name, build in peers.items():
        db = Database(0.2)
        read = build(db)
        read()  # warm
        latencies, failed = _drive(read, threads, seconds)
        rows.append(
            {
                "peer": name,
                "reads": len(latencies),
                "failed": failed,
                "loads": db.calls,
                "p50_ms": round(_quantile(latencies, 0.5) * 1000, 2),
                "p99_ms": round(_quantile(latencies, 0.99) * 1000, 2),
                "p99.9_ms": round(_quantile(latencies, 0.999) * 1000, 2),
                "worst_ms": round(max(latencies) * 1000, 2),
            }
        )
    return rows


def run_database_down(url: str, threads: int, outage: float) -> list[dict[str, Any]]:
    rows = []
    peers = _peers(url, 1.0, {"stale_if_error=60": {"stale_if_error": 60}})
    for name, build in peers.items():
        db = Database(0.005)
        read = build(db)
        read()  # warm
        timer = threading.Timer(1.0, lambda d=db: setattr(d, "down", True))
        back = threading.Timer(1.0 + outage, lambda d=db: setattr(d, "down", False))
        timer.start()
        back.start()
        calls_before = db.calls
        latencies, failed = _drive(read, threads, outage + 2.0)
        rows.append(
            {
                "peer": name,
                "reads": len(latencies),
                "failed": failed,
                "loads": db.calls - calls_before,
                "outage_s": outage,
            }
        )
    return rows


def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with BenchRedis() as server:
        hot = run_hot_key(server.url, args.threads, args.seconds)
        down = run_database_down(server.url, args.threads, args.outage)
    if args.json:
        print(json.dumps({"hot_key": hot, "database_down": down}, indent=2))
        return
    print(markdown("hot key across expiry (TTL 1 s, 200 ms loader)", hot))
    print()
    print(markdown(f"database down {args.outage:g} s (TTL 1 s, 5 ms loader)", down))


if __name__ == "__main__":
    main()
