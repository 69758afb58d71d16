"""``python -m bench.near [--quick] [--json PATH]``: near hits of tagged and enveloped entries.

Issue 16 item 3: with the near cache on, a hit of a function cached with ``tags=`` used to
make a round trip for the tag versions every time, and a ``stale_ttl`` or ``beta`` entry
decoded its metadata on every hit. This times ``@cache`` hits of a 100 B JSON value, all
near-cache hits, interleaved in one run against a private ``redis-server``:

- plain (``@cache(ttl=...)``): 1.00×, the reference;
- tagged, one tag and three tags (``tags=``): goal ≤ 1.5×;
- enveloped: ``stale_ttl=`` and ``beta=``: goal ≤ 1.3×;

and, for scale, the plain and tagged hits of the same functions without the near cache (a
round trip each). Medians and p99 per call; every ratio is against the plain near hit of the
same run. The figures are in ``bench/RESULTS.md`` and ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flask_fennec_cache import RedisCache, cache

from .peers import calling
from .server import BenchRedis
from .timing import interleaved, summarize
from .values import json_value

__all__ = ["GOALS", "ROWS", "NearPlan", "markdown", "run_near_hits"]

TTL: Final = 600
NS_PER_US: Final = 1_000

#: Row name -> (label, decorator options, near cache on).
ROWS: Final[dict[str, tuple[str, dict[str, Any], bool]]] = {
    "plain": ("plain near hit", {}, True),
    "tagged": ("tagged near hit (1 tag)", {"tags": ("users",)}, True),
    "tagged3": ("tagged near hit (3 tags)", {"tags": ("users", "teams", "orgs")}, True),
    "stale_ttl": ("enveloped near hit (stale_ttl=60)", {"stale_ttl": 60}, True),
    "beta": ("enveloped near hit (beta=1.0)", {"beta": 1.0}, True),
    "plain_redis": ("plain hit, no near cache (a round trip)", {}, False),
    "tagged_redis": ("tagged hit, no near cache (a round trip)", {"tags": ("users",)}, False),
}  # fmt: skip

#: Row name -> the most its median may be, as a ratio to the plain near hit (issue 16, whose
#: tagged figure was of one tag; three are shown for what each more tag costs).
GOALS: Final = {"tagged": 1.5, "stale_ttl": 1.3, "beta": 1.3}


@dataclass(frozen=True)
class NearPlan:
    """How much to time: :meth:`full` for the published figures, :meth:`quick` for a smoke run."""

    warmup: int
    rounds: int
    per_round: int

    @classmethod
    def full(cls) -> NearPlan:
        return cls(warmup=500, rounds=40, per_round=300)

    @classmethod
    def quick(cls) -> NearPlan:
        return cls(warmup=5, rounds=2, per_round=20)


def _cached(name: str, options: dict[str, Any], backend: RedisCache) -> Callable[[str], Any]:
    value = json_value(100)

    def load(arg: str) -> Any:
        return value

    load.__name__ = load.__qualname__ = f"near_bench_{name}"  # its own cache key per row
    cached: Callable[[str], Any] = cache(ttl=TTL, backend=backend, **options)(load)
    return cached


def run_near_hits(url: str, plan: NearPlan) -> dict[str, Any]:
    """Every row of :data:`ROWS`, interleaved; medians, p99 and ratios to the plain near hit."""
    near = RedisCache(url, prefix="bench:near16:", near_cache=True, stats_flush_interval=3600)
    remote = RedisCache(url, prefix="bench:far16:", stats_flush_interval=3600)
    try:
        calls: dict[str, Callable[[int], Any]] = {}
        for name, (_, options, on_near) in ROWS.items():
            cached = _cached(name, options, near if on_near else remote)
            expected = cached("hit")
            for _ in range(3):  # loads, then fills the entry and the tag versions, then hits
                if cached("hit") != expected:
                    raise RuntimeError(f"{name}: a different value on a hit")
            calls[name] = calling(cached, "hit")
        hits_before = near.get_stats()["near_hits"]
        samples = interleaved(
            calls, warmup=plan.warmup, rounds=plan.rounds, per_round=plan.per_round
        )
        near_hits = near.get_stats()["near_hits"] - hits_before
    finally:
        near.close()
        remote.close()
    base = summarize(samples["plain"]).median
    rows: dict[str, Any] = {}
    for name, values in samples.items():
        summary = summarize(values)
        rows[name] = {
            "label": ROWS[name][0],
            "median_us": summary.median / NS_PER_US,
            "p99_us": summary.p99 / NS_PER_US,
            "n": summary.n,
            "ratio": summary.median / base if base else 0.0,
            "goal": GOALS.get(name),
        }
    near_rows = sum(1 for _, _, on_near in ROWS.values() if on_near)
    near_calls = near_rows * (plan.warmup + plan.rounds * plan.per_round)
    # Every call of a near row was a near hit (none went to Redis): near_hits >= near_calls.
    return {"rows": rows, "near_hits": near_hits, "near_calls": near_calls}


def markdown(results: dict[str, Any]) -> str:
    """The rows as a markdown table (median · ratio · p99, and the goal where there is one)."""
    lines = ["| @cache hit, 100 B JSON | median | ratio | p99 | goal |", "|---|---|---|---|---|"]
    for row in results["rows"].values():
        goal = row["goal"]
        met = (
            ""
            if goal is None
            else f"≤ {goal:g}× ({'met' if row['ratio'] <= goal else '**not met**'})"
        )
        lines.append(
            f"| {row['label']} | {_us(row['median_us'])} | **{row['ratio']:.2f}×** "
            f"| {_us(row['p99_us'])} | {met} |"
        )
    return "\n".join(lines)


def _us(value: float) -> str:
    return f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.near", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (numbers noisy)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every number here")
    args = parser.parse_args(argv)
    plan = NearPlan.quick() if args.quick else NearPlan.full()
    load = os.getloadavg()[0]
    with BenchRedis() as server:
        results = run_near_hits(server.url, plan)
    results["load_average_1m_at_start"] = round(load, 2)
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(markdown(results))
    print(
        f"\n(load average {results['load_average_1m_at_start']} -> "
        f"{results['load_average_1m_at_end']} on {os.cpu_count()} cores"
        f"{'; quick run: numbers are noisy' if args.quick else ''})"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
