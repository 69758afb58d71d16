"""``python -m bench.profile``: where the time of one ``@cache`` hit goes.

Times the pieces of a 100-byte function-cache hit separately (medians, interleaved), then runs
cProfile over many hits of the function and of a cached view (in process, no HTTP server) and
prints the functions with the most own time. Profiles show relative cost; cProfile's own
overhead inflates functions that make many small calls.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
from collections.abc import Callable
from typing import Any, cast

import redis

from .peers import FennecPeer, RawPeer, returning
from .server import BenchRedis
from .timing import interleaved, summarize
from .values import compact, json_value

TOP = 18


def _breakdown(url: str, rounds: int, per_round: int) -> None:
    value = json_value(100)
    ours = FennecPeer(url)
    raw = RawPeer(url)
    cached: Any = ours.memoize(returning("profiled", value), 600)
    baseline = raw.memoize(returning("profiled", value), 600)
    cached("hit")
    baseline("hit")
    relative = cached.cache_key("hit")
    full_key = ours.backend.prefix + relative
    plain = redis.Redis.from_url(url)
    data = compact(value)
    stored = cast(bytes, ours.backend.client.get(full_key))
    from flask_fennec_cache.serializers import decode

    steps: dict[str, Callable[[int], Any]] = {
        "raw: GET + json.loads (1.00x)": lambda _i: baseline("hit"),
        "plain redis-py client GET": lambda _i: plain.get(full_key),
        "our client's GET (retry, health check)": lambda _i: ours.backend.client.get(full_key),
        "RedisCache.lookup (GET, breaker, decode, stats)": lambda _i: ours.backend.lookup(relative),
        "@cache hit (key, lookup, load policy)": lambda _i: cached("hit"),
        "key only: cached.cache_key(arg)": lambda _i: cached.cache_key("hit"),
        "json.loads of the 100 B value": lambda _i: json.loads(data),
        "our decode of the stored entry": lambda _i: decode(stored),
    }
    samples = interleaved(steps, warmup=500, rounds=rounds, per_round=per_round)
    base = summarize(samples["raw: GET + json.loads (1.00x)"]).median
    print("## A 100 B @cache hit, piece by piece (median of each, interleaved)\n")
    print("| step | median | ratio to raw |\n|---|---|---|")
    for name, values in samples.items():
        median = summarize(values).median
        print(f"| {name} | {median / 1000:.2f} µs | {median / base:.2f}× |")
    plain.close()
    ours.close()
    raw.close()


def _profile(call: Callable[[], Any], count: int, title: str) -> None:
    for _ in range(200):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        call()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(TOP)
    print(f"\n## cProfile: {title}, {count} calls, top {TOP} by own time\n")
    print("```")
    print(out.getvalue().strip())
    print("```")


def _profile_function_hit(url: str, count: int) -> None:
    ours = FennecPeer(url)
    cached = ours.memoize(returning("profiled_fn", json_value(100)), 600)
    cached("hit")
    _profile(lambda: cached("hit"), count, "@cache function hit, 100 B")
    ours.close()


def _wsgi_caller(url: str) -> Callable[[str], Callable[[int], None]]:
    """``caller(path)(i)`` runs one GET of *path* through the bench app's WSGI callable."""
    from werkzeug.test import EnvironBuilder

    os.environ["FENNEC_BENCH_REDIS_URL"] = url
    from .app import create_app

    app = create_app()

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        return lambda data: None

    def caller(path: str) -> Callable[[int], None]:
        environ = EnvironBuilder(path=path, base_url="http://127.0.0.1/").get_environ()

        def call(_i: int) -> None:
            b"".join(app.wsgi_app(dict(environ), start_response))

        return call

    return caller


def _views_in_process(url: str, rounds: int, per_round: int) -> None:
    from .app import VIEWS

    caller = _wsgi_caller(url)
    samples = interleaved(
        {name: caller(path) for name, path in VIEWS.items()},
        warmup=300, rounds=rounds, per_round=per_round,
    )  # fmt: skip
    base = summarize(samples["const"]).median
    print("\n## Views through Flask's WSGI app, in process (no HTTP server)\n")
    print("| view | median per request | requests/s equivalent vs const |\n|---|---|---|")
    for name, values in samples.items():
        median = summarize(values).median
        print(f"| {name} | {median / 1000:.1f} µs | {base / median:.2f}× |")


def _profile_view_hit(url: str, count: int) -> None:
    hit = _wsgi_caller(url)("/fennec")
    _profile(lambda: hit(0), count, "cached view hit through Flask's WSGI app (no HTTP server)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="calls profiled (default 5000)")
    args = parser.parse_args(argv)
    with BenchRedis() as server:
        _breakdown(server.url, rounds=5, per_round=max(100, args.calls // 5))
        _views_in_process(server.url, rounds=5, per_round=max(100, args.calls // 5))
        _profile_function_hit(server.url, args.calls)
        _profile_view_hit(server.url, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
