"""Render the cache's metrics in the Prometheus text exposition format, version 0.0.4."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._stats import FIELDS, latency_histogram

__all__ = ["BREAKER_STATES", "CONTENT_TYPE", "NAMESPACE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAMESPACE = "fennec_cache"

#: The value of ``fennec_cache_breaker_state``: higher is worse.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

_COUNTER_HELP = {
    "hits": "Cache reads that found a usable value (stale serves and near-cache hits included).",
    "misses": "Cache reads that found no usable value.",
    "sets": "Entries written.",
    "deletes": "Entries removed by delete or clear.",
    "errors": "Redis commands that failed, and stored entries that could not be decoded.",
    "stale_hits": "Reads served a stale value while one caller refreshed it.",
    "lock_waits": "Reads that waited for another caller's load of the same key.",
    "near_hits": "Reads answered by the per-process near cache, without a round trip.",
    "fail_safe_hits": "Reads served a stale value because its load failed (stale_if_error).",
}


def render(
    counters: Mapping[str, int] | None,
    breaker: str,
    pid: int,
    near: Mapping[str, Any] | None = None,
) -> str:
    """The metrics page.

    :param counters: the shared counters (``RedisCache.shared_counters()``), or None when Redis
        is unreachable: then only ``fennec_cache_up`` and the breaker state are reported, so a
        scrape still succeeds and no counter appears to drop to zero.
    :param breaker: this process's circuit breaker state.
    :param pid: this process's id, the ``pid`` label of the per-process gauges.
    :param near: this process's near cache (``RedisCache.near_cache_state()``), if it has one.
    """
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> str:
        full = f"{NAMESPACE}_{name}"
        lines.append(f"# HELP {full} {_escape_help(help_text)}")
        lines.append(f"# TYPE {full} {kind}")
        return full

    up = metric("up", "gauge", "1 if the shared counters could be read from Redis, else 0.")
    lines.append(f"{up} {0 if counters is None else 1}")
    state = metric(
        "breaker_state",
        "gauge",
        "Circuit breaker of the process that answered: 0 closed, 1 half-open, 2 open.",
    )
    lines.append(f'{state}{{pid="{pid}"}} {BREAKER_STATES.get(breaker, 2)}')
    if near is not None:
        for field, help_text in (
            ("entries", "Entries in the near cache of the process that answered."),
            ("bytes", "Bytes (stored size, key and overhead) in that near cache."),
        ):
            name = metric(f"near_cache_{field}", "gauge", help_text)
            lines.append(f'{name}{{pid="{pid}"}} {int(near[field])}')
    if counters is not None:
        for field in FIELDS:
            name = metric(f"{field}_total", "counter", _COUNTER_HELP.get(field, field))
            lines.append(f"{name} {int(counters.get(field, 0))}")
        histogram = latency_histogram(counters)
        name = metric(
            "operation_duration_seconds",
            "histogram",
            "Redis round trips made by cache operations, in seconds, from every process.",
        )
        for bound, cumulative in histogram.buckets:
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f"{name}_sum {_number(histogram.sum)}")
        lines.append(f"{name}_count {histogram.count}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
