"""``python -m bench [--quick] [--json PATH]``: run every scenario and print one table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .loadgen import generator_name
from .peers import (
    OURS,
    OURS_NEAR,
    FennecPeer,
    Peer,
    make_peers,
    missing_peers,
)
from .report import check_targets, machine, machine_line, markdown, targets_markdown
from .scenarios import (
    Plan,
    run_bytes_per_entry,
    run_hit_latency,
    run_miss_then_set,
    run_redis_down,
    run_stampede,
)
from .server import BenchRedis, BenchRedisError
from .views import run_view_throughput

EXIT_MISSING = 2


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(plan: Plan) -> dict[str, Any]:
    """Every scenario in one run; the dict that ``--json`` writes."""
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with BenchRedis() as server:
        results["machine"] = machine(server.version(), generator_name())
        peers = make_peers(server.url)
        near = FennecPeer(server.url, "bench:near:", near_cache=True)
        with_near: dict[str, Peer] = {OURS: peers[OURS], OURS_NEAR: near, **peers}
        try:
            _progress("1/6 hit latency")
            results["hit_latency"] = run_hit_latency(with_near, plan)
            _progress("2/6 miss then set")
            results["miss_then_set"] = run_miss_then_set(peers, plan)
            _progress("3/6 cached-view throughput under gunicorn")
            results["view_throughput"] = run_view_throughput(
                server.url, plan.view_seconds, plan.view_warmup, plan.view_rounds
            )
            _progress("4/6 stampede")
            results["stampede"] = run_stampede(peers, plan)
            _progress("5/6 bytes per entry")
            results["bytes_per_entry"] = run_bytes_per_entry(server, peers)
        finally:
            for peer in with_near.values():
                peer.close()
    _progress("6/6 Redis down")
    results["redis_down"] = run_redis_down(plan)
    results["targets"] = check_targets(results)
    results["plan"] = {"quick": plan.warmup < Plan.full().warmup, **plan.__dict__}
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="flask-fennec-cache against raw redis-py, Flask-Caching and dogpile.cache, "
        "on a private redis-server.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (numbers noisy)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every number here")
    args = parser.parse_args(argv)

    missing = missing_peers()
    if missing:
        print(
            f"missing peers: {', '.join(missing)}; install the bench extra: "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return EXIT_MISSING
    try:
        results = run(Plan.quick() if args.quick else Plan.full())
    except BenchRedisError as exc:
        print(f"cannot run the bench: {exc}", file=sys.stderr)
        return EXIT_MISSING
    print(f"Machine: {machine_line(results['machine'])}\n")
    print(markdown(results))
    print()
    print(targets_markdown(results["targets"]))
    print(f"\n({results['seconds']} s{', quick run: numbers are noisy' if args.quick else ''})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
