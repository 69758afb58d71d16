"""Timing helpers: per-call samples with ``perf_counter_ns``, medians and percentiles."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Summary", "interleaved", "percentile", "summarize", "time_calls"]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True)
class Summary:
    """Median and tail of a set of samples, in the samples' unit."""

    median: float
    p99: float
    n: int

    def as_dict(self, scale: float = 1.0) -> dict[str, float | int]:
        return {"median": self.median * scale, "p99": self.p99 * scale, "n": self.n}


def summarize(samples: Sequence[float]) -> Summary:
    ordered = sorted(samples)
    n = len(ordered)
    if not n:
        return Summary(0.0, 0.0, 0)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Summary(float(median), percentile(ordered, 0.99), n)


def time_calls(call: Callable[[int], Any], count: int, start: int = 0) -> list[int]:
    """Nanoseconds of ``call(i)`` for ``i`` in ``start .. start+count-1``, one sample per call."""
    clock = time.perf_counter_ns
    samples = [0] * count
    for n in range(count):
        began = clock()
        call(start + n)
        samples[n] = clock() - began
    return samples


def interleaved(
    calls: dict[str, Callable[[int], Any]], *, warmup: int, rounds: int, per_round: int
) -> dict[str, list[int]]:
    """Time several implementations in alternating rounds, so drift hits them all alike.

    Each call gets *warmup* untimed calls first; then, *rounds* times, every implementation
    (in a rotating order) runs *per_round* timed calls. The argument passed to each call is a
    running counter, unique per implementation (for scenarios that need a fresh key each time).
    """
    names = list(calls)
    counters = dict.fromkeys(names, 0)
    for name in names:
        for _ in range(warmup):
            calls[name](counters[name])
            counters[name] += 1
    samples: dict[str, list[int]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            gc.collect()
            samples[name] += time_calls(calls[name], per_round, counters[name])
            counters[name] += per_round
    return samples
