"""Scenarios 1, 2, 4, 5 and 6: in-process measurements against one private Redis."""

from __future__ import annotations

import functools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from . import peers as P
from .peers import Peer, calling, named, returning
from .server import BenchRedis
from .timing import interleaved, summarize
from .values import SIZES, compact, json_value, size_label

__all__ = [
    "Plan",
    "run_bytes_per_entry",
    "run_hit_latency",
    "run_miss_then_set",
    "run_redis_down",
    "run_stampede",
]

TTL = 600
NS_PER_US = 1_000


@dataclass(frozen=True)
class Plan:
    """How much to run: ``full()`` for the published numbers, ``quick()`` for a smoke run."""

    warmup: int
    rounds: int
    per_round: dict[int, int]  # value size -> timed calls per implementation per round
    miss_per_round: int
    stampede_threads: int
    stampede_trials: int
    loader_seconds: float
    view_seconds: float
    view_warmup: float
    view_rounds: int
    down_window: float  # seconds our breaker-open path is timed (spans cool-down probes)
    down_calls: int  # timed calls for peers that try Redis on every call
    down_defaults: bool  # also time one call of each peer with its default settings

    @classmethod
    def full(cls) -> Plan:
        return cls(
            warmup=300, rounds=6,
            per_round={100: 600, 1_000: 600, 10_000: 300, 100_000: 60},
            miss_per_round=250, stampede_threads=50, stampede_trials=3, loader_seconds=0.2,
            view_seconds=10.0, view_warmup=1.0, view_rounds=5, down_window=2.5, down_calls=300,
            down_defaults=True,
        )  # fmt: skip

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup=10, rounds=2, per_round=dict.fromkeys(SIZES, 20), miss_per_round=20,
            stampede_threads=50, stampede_trials=1, loader_seconds=0.2, view_seconds=1.0,
            view_warmup=0.3, view_rounds=1, down_window=0.3, down_calls=20, down_defaults=False,
        )  # fmt: skip


def _latency_table(samples: dict[str, list[int]], baseline: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    base = summarize(samples[baseline]).median
    for name, values in samples.items():
        summary = summarize(values)
        table[name] = {
            "median_us": summary.median / NS_PER_US,
            "p99_us": summary.p99 / NS_PER_US,
            "n": summary.n,
            "ratio": summary.median / base if base else 0.0,
        }
    return table


# -- 1. hit latency ---------------------------------------------------------------------------


def run_hit_latency(peers: dict[str, Peer], plan: Plan) -> dict[str, Any]:
    """Median and p99 of a cache hit per value size; raw GET + json.loads is 1.00x."""
    results: dict[str, Any] = {}
    for size in SIZES:
        value = json_value(size)
        calls: dict[str, Callable[[int], Any]] = {}
        for name, peer in peers.items():
            cached = peer.memoize(returning(f"hit_{size}", value), TTL)
            cached("hit")  # stores it
            if cached("hit") != value:
                raise RuntimeError(f"{peer.label} returned a different value at {size} B")
            calls[name] = calling(cached, "hit")
        samples = interleaved(
            calls, warmup=plan.warmup, rounds=plan.rounds, per_round=plan.per_round[size]
        )
        results[size_label(size)] = _latency_table(samples, P.RAW)
    return results


# -- 2. miss then set -------------------------------------------------------------------------


def _fresh_keys(cached: Callable[[str], Any]) -> Callable[[int], Any]:
    def call(i: int) -> Any:
        return cached(f"m{i}")

    return call


def run_miss_then_set(peers: dict[str, Peer], plan: Plan) -> dict[str, Any]:
    """A fresh key every call: the read that misses, the loader (immediate), the write."""
    value = json_value(100)
    calls: dict[str, Callable[[int], Any]] = {}
    for name, peer in peers.items():
        calls[name] = _fresh_keys(peer.memoize(returning("miss", value), TTL))
    samples = interleaved(
        calls, warmup=plan.warmup // 3, rounds=plan.rounds, per_round=plan.miss_per_round
    )
    return {"value_bytes": 100, "peers": _latency_table(samples, P.RAW)}


# -- 4. stampede ------------------------------------------------------------------------------


def _stampede_once(
    peer: Peer, threads: int, loader_seconds: float, trial: str
) -> tuple[int, list[float], int]:
    loads = 0
    lock = threading.Lock()
    value = json_value(100)

    def slow(arg: str) -> Any:
        nonlocal loads
        with lock:
            loads += 1
        time.sleep(loader_seconds)
        return value

    cached = peer.memoize(named("stampede", slow), TTL)
    barrier = threading.Barrier(threads)
    latencies: list[float] = []
    failures = 0

    def caller() -> None:
        nonlocal failures
        barrier.wait()
        began = time.perf_counter()
        try:
            result = cached(trial)
        except Exception:  # a peer's failure is a result here, not a bench bug
            with lock:
                failures += 1
            return
        elapsed = time.perf_counter() - began
        with lock:
            if result == value:
                latencies.append(elapsed)
            else:
                failures += 1

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return loads, latencies, failures


def run_stampede(peers: dict[str, Peer], plan: Plan) -> dict[str, Any]:
    """N threads miss one key at once; the loader sleeps. Loader calls and caller latency."""
    results: dict[str, Any] = {}
    for name, peer in peers.items():
        loads: list[int] = []
        latencies: list[float] = []
        failures = 0
        # An untimed first round fills the connection pools, as a running app's would be.
        _stampede_once(peer, plan.stampede_threads, 0.01, f"warm-{time.time_ns()}")
        for trial in range(plan.stampede_trials):
            count, times, failed = _stampede_once(
                peer, plan.stampede_threads, plan.loader_seconds, f"t{trial}-{time.time_ns()}"
            )
            loads.append(count)
            latencies += times
            failures += failed
        summary = summarize(latencies)
        results[name] = {
            "loads": sorted(loads)[len(loads) // 2],
            "loads_per_trial": loads,
            "p50_ms": summary.median * 1e3,
            "p99_ms": summary.p99 * 1e3,
            "max_ms": max(latencies, default=0.0) * 1e3,
            "failures": failures,
        }
    raw_p99 = results[P.RAW]["p99_ms"]
    for entry in results.values():
        entry["ratio"] = entry["p99_ms"] / raw_p99 if raw_p99 else 0.0
    return {
        "threads": plan.stampede_threads,
        "loader_ms": plan.loader_seconds * 1e3,
        "trials": plan.stampede_trials,
        "peers": results,
    }


# -- 5. bytes per entry -----------------------------------------------------------------------

_PEER_PREFIXES = {
    P.OURS: b"bench:fennec:",
    P.RAW: b"bench:raw:",
    P.FLASK_CACHING: b"bench:fc:",
    P.DOGPILE: b"bench:dogpile:",
}
_BOOKKEEPING_MARKERS = (b"__fennec__", b"_memver", b"_lock")


def _stored(client: redis.Redis, prefix: bytes) -> dict[str, Any]:
    """The keys under *prefix*: the value key's STRLEN, and every other key the library wrote."""
    value_bytes = 0
    key_bytes = 0
    extras: list[dict[str, Any]] = []
    for key in cast(Iterator[bytes], client.scan_iter(match=prefix + b"*", count=1000)):
        kind = cast(bytes, client.type(key)).decode()
        size = int(client.strlen(key)) if kind == "string" else 0
        if kind == "string" and not any(m in key for m in _BOOKKEEPING_MARKERS):
            value_bytes += size
            key_bytes += len(key)
        else:
            extras.append({"key": key.decode(errors="replace"), "type": kind, "bytes": size})
    # A per-prefix statistics hash is shared by all entries, not a cost of one entry.
    per_entry_extra = sum(e["bytes"] for e in extras if e["type"] == "string")
    return {
        "value_bytes": value_bytes,
        "key_bytes": key_bytes,
        "extra_bytes": per_entry_extra,
        "total_bytes": value_bytes + per_entry_extra,
        "extra_keys": extras,
    }


def run_bytes_per_entry(server: BenchRedis, peers: dict[str, Peer]) -> dict[str, Any]:
    """STRLEN of what each library stores for one entry, plus the extra keys it writes."""
    results: dict[str, Any] = {}
    client = server.client()
    try:
        for label, size in (("92 B", 92), ("10 KB compressible", 10_000)):
            value = json_value(size)
            baseline = len(compact(value))
            client.flushall()
            for peer in peers.values():
                cached = peer.memoize(returning(f"bytes_{size}", value), TTL)
                cached("b")
            entry: dict[str, Any] = {
                "json_bytes": baseline,
                "zlib_json_bytes": len(zlib.compress(compact(value))),
            }
            for name in peers:
                stored = _stored(client, _PEER_PREFIXES[name])
                stored["ratio"] = stored["value_bytes"] / baseline
                entry[name] = stored
            results[label] = entry
        client.flushall()
    finally:
        client.close()
    return results


# -- 6. Redis down ----------------------------------------------------------------------------


def _bounded_call(call: Callable[[], Any], limit: float) -> dict[str, Any]:
    """Time one call in a daemon thread; give up waiting after *limit* seconds."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        began = time.perf_counter()
        try:
            call()
            outcome["outcome"] = "value"
        except Exception as exc:  # the peer's failure mode is the result
            outcome["outcome"] = f"raises {type(exc).__name__}"
        outcome["ms"] = (time.perf_counter() - began) * 1e3

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return {"ms": limit * 1e3, "outcome": f"still waiting after {limit:g} s"}
    return outcome


def _bounded_calls(
    calls: dict[str, Callable[[str], Any]], limit: float
) -> dict[str, dict[str, Any]]:
    """One call of each, all in parallel (each may spend seconds in retries), bounded."""
    found: dict[str, dict[str, Any]] = {}

    def run(name: str, call: Callable[[str], Any]) -> None:
        found[name] = _bounded_call(lambda: call("k"), limit)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(limit + 5)
    return found


def _timed_calls(call: Callable[[], Any], count: int) -> tuple[list[int], str]:
    samples: list[int] = []
    outcome = "value"
    for _ in range(count):
        began = time.perf_counter_ns()
        try:
            call()
        except Exception as exc:  # the peer's failure mode is the result
            outcome = f"raises {type(exc).__name__}"
        samples.append(time.perf_counter_ns() - began)
    return samples, outcome


def _timed_window(call: Callable[[], Any], seconds: float, cap: int = 300_000) -> list[int]:
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while len(samples) < cap:
        began = clock()
        if began >= deadline:
            break
        call()
        samples.append(clock() - began)
    return samples


def _summary_us(samples: list[int]) -> dict[str, Any]:
    summary = summarize(samples)
    return {
        "p50_us": summary.median / NS_PER_US,
        "p99_us": summary.p99 / NS_PER_US,
        "max_us": max(samples, default=0) / NS_PER_US,
        "n": summary.n,
    }


def run_redis_down(plan: Plan) -> dict[str, Any]:
    """Per-call latency of a cached call after Redis was killed (the loader returns at once).

    Uses its own server, killed mid-run. Ours runs with its defaults (0.25 s timeouts, circuit
    breaker); the peers with short timeouts and no retries ("tuned"), and, in a full run, one
    call each configured by host and port with their defaults (redis-py's constructor: 10
    retries with backoff), bounded in time.
    """
    value = json_value(100)
    loader = returning("down", value)
    # Every failed call is logged (rate-limited) by ours and with a traceback by Flask-Caching.
    quiet = [logging.getLogger(name) for name in ("flask_fennec_cache", "flask_caching")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)
    try:
        return _redis_down(loader, plan)
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)


def _redis_down(loader: Callable[[str], Any], plan: Plan) -> dict[str, Any]:
    with BenchRedis() as server:
        ours = P.FennecPeer(server.url, prefix="bench:down:")
        tuned: dict[str, Peer] = {
            P.RAW: P.RawPeer(server.url, setup="tuned", catch_errors=True),
            P.FLASK_CACHING: P.FlaskCachingPeer(server.url, setup="tuned"),
            P.DOGPILE: P.DogpilePeer(server.url, setup="tuned"),
        }
        defaults: dict[str, Peer] = {}
        if plan.down_defaults:
            # Configured by host and port, the way redis-py's constructor defaults apply
            # (10 retries with backoff); clients built from a URL do not retry.
            defaults = {
                P.RAW: P.RawPeer(server.url, setup="host", catch_errors=True),
                P.FLASK_CACHING: P.FlaskCachingPeer(server.url, setup="host"),
                P.DOGPILE: P.DogpilePeer(server.url, setup="host"),
            }
        cached: dict[str, Callable[[str], Any]] = {P.OURS: ours.memoize(loader, TTL)}
        cached.update({name: peer.memoize(loader, TTL) for name, peer in tuned.items()})
        default_cached = {name: peer.memoize(loader, TTL) for name, peer in defaults.items()}
        for call in [*cached.values(), *default_cached.values()]:
            call("k")
            call("k")  # a hit: the pools hold live connections when the server dies
        server.kill()

        results: dict[str, Any] = {}
        # Ours: the first calls meet the errors and open the breaker; then time a window long
        # enough to include the recovery probes made after each cool-down.
        first, _ = _timed_calls(lambda: cached[P.OURS]("k"), 3)
        window = _timed_window(lambda: cached[P.OURS]("k"), plan.down_window)
        results[P.OURS] = {
            **_summary_us(window),
            "first_calls_ms": [ns / 1e6 for ns in first],
            "breaker": ours.backend.breaker_state,
            "outcome": "value",
            "settings": "defaults (0.25 s timeouts, breaker after 3 failures, 1 s cool-down)",
        }
        for name in tuned:
            samples, outcome = _timed_calls(functools.partial(cached[name], "k"), plan.down_calls)
            results[name] = {
                **_summary_us(samples),
                "outcome": outcome,
                "settings": "0.25 s socket/connect timeouts, no retries",
            }
        if default_cached:
            for name, found in _bounded_calls(default_cached, 20.0).items():
                results[name]["default_settings_one_call"] = found
        base = results[P.RAW]["p99_us"]
        for entry in results.values():
            entry["ratio"] = entry["p99_us"] / base if base else 0.0
        for peer in [ours, *tuned.values(), *defaults.values()]:
            try:
                peer.close()
            except redis.RedisError:
                pass
    return results
