"""Render the cache's metrics in the Prometheus text exposition format, version 0.0.4."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._redis_info import RedisState
from ._stats import FIELDS, NAME_FIELDS, latency_histogram, load_histograms, split_named

__all__ = ["BREAKER_STATES", "CONTENT_TYPE", "NAMESPACE", "NEAR_STATES", "render", "render_redis"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAMESPACE = "fennec_cache"

#: The value of ``fennec_cache_breaker_state``: higher is worse.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
#: The value of ``fennec_cache_near_cache_state``: higher is worse.
NEAR_STATES = {"connected": 0, "not started": 1, "disconnected": 2}

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
    "bypasses": "Responses that could not be cached (streamed, set a cookie, private, ...).",
}


def render(
    counters: Mapping[str, int] | None,
    breaker: str,
    pid: int,
    near: Mapping[str, Any] | None = None,
) -> str:
    """The metrics page.

    :param counters: the shared counters with the per-name fields
        (``RedisCache.monitor.shared_snapshot()``), or None when Redis
        is unreachable: then only ``fennec_cache_up`` and the breaker state are reported, so a
        scrape still succeeds and no counter appears to drop to zero.
    :param breaker: this process's circuit breaker state.
    :param pid: this process's id, the ``pid`` label of the per-process gauges.
    :param near: this process's near cache (``RedisCache.near_cache_state()``), if it has one.
    """
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> str:
        return _family(lines, f"{NAMESPACE}_{name}", kind, help_text)

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
        name = metric(
            "near_cache_state",
            "gauge",
            "Near cache of the process that answered: 0 connected (serving), 1 not started "
            "(no read yet), 2 disconnected (reads bypass it).",
        )
        lines.append(f'{name}{{pid="{pid}"}} {NEAR_STATES.get(near["state"], 2)}')
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
        _render_names(metric, lines, counters)
    return "\n".join(lines) + "\n"


def _render_names(
    metric: Callable[[str, str, str], str], lines: list[str], counters: Mapping[str, int]
) -> None:
    """The per-name families, ``fennec_cache_name_*{name="..."}``: separate from the totals,
    so a ``sum`` over either is never doubled."""
    by_name = split_named(counters)[1]
    if not by_name:
        return
    names = sorted(by_name)
    for field in NAME_FIELDS:
        help_text = _NAME_HELP.get(field, field)
        name = metric(f"name_{field}_total", "counter", help_text)
        for label in names:
            lines.append(f'{name}{{name="{_label(label)}"}} {int(by_name[label].get(field, 0))}')
    reasons = [
        (label, field[len("bypass:") :], amount)
        for label in names
        for field, amount in sorted(by_name[label].items())
        if field.startswith("bypass:")
    ]
    if reasons:
        name = metric(
            "name_bypass_reasons_total",
            "counter",
            "Responses of a name not cached, by reason (streamed, cookie, private, ...).",
        )
        for label, reason, amount in reasons:
            lines.append(f'{name}{{name="{_label(label)}",reason="{_label(reason)}"}} {amount}')
    histograms = load_histograms(by_name)
    name = metric(
        "name_load_seconds",
        "histogram",
        "Loads (the function, view or fragment run on a miss or refresh) of a name, in seconds.",
    )
    for label in names:
        histogram = histograms[label]
        quoted = _label(label)
        for bound, cumulative in histogram.buckets:
            lines.append(f'{name}_bucket{{name="{quoted}",le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{name}_sum{{name="{quoted}"}} {_number(histogram.sum)}')
        lines.append(f'{name}_count{{name="{quoted}"}} {histogram.count}')


#: Per-name counters' help (``fennec_cache_name_<field>_total``).
_NAME_HELP = {
    "hits": "Reads of a name that found a usable value (stale and fail-safe serves included).",
    "misses": "Reads of a name that found no usable value.",
    "stale_hits": "Reads of a name served a stale value while it was refreshed.",
    "fail_safe_hits": "Reads of a name served a stale value because its load failed.",
    "errors": "Loads of a name that raised (or ran past hard_timeout and then failed).",
    "bypasses": "Responses of a name that could not be cached (see the reasons family).",
}


def _label(value: str) -> str:
    """*value* as a label value of the text format (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: Redis' own figures (``INFO``): (metric, type, the figure, help).
_REDIS_FIGURES = (
    ("used_memory_bytes", "gauge", "used_memory", "Bytes Redis has allocated (INFO used_memory)."),
    ("maxmemory_bytes", "gauge", "maxmemory", "Redis' memory limit in bytes; 0: no limit."),
    ("evicted_keys_total", "counter", "evicted", "Keys Redis evicted to stay under maxmemory."),
    ("expired_keys_total", "counter", "expired", "Keys Redis removed as their TTL ended."),
    ("connected_clients", "gauge", "clients", "Client connections open on Redis."),
)


def render_redis(state: RedisState) -> str:
    """Redis' own figures as metrics (``fennec_cache_redis_*``): the server's (on Sentinel,
    the master's), or on a cluster one series per primary with a ``node`` label (sum them in
    the query). Every process reports the same server figures, so they carry no ``pid``.
    ``fennec_cache_redis_info_available`` is 0 when no server answered ``INFO`` (refused by
    an ACL, renamed, Redis unreachable, ``memory://``): the other families are then absent."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> str:
        return _family(lines, f"{NAMESPACE}_redis_{name}", kind, help_text)

    available = metric(
        "info_available", "gauge", "1 if Redis answered INFO for the figures below, else 0."
    )
    lines.append(f"{available} {1 if state.available else 0}")

    def labels(node: str, **extra: str) -> str:
        pairs = ({"node": node} if state.cluster else {}) | extra
        inner = ",".join(f'{k}="{_redis_label(v)}"' for k, v in pairs.items())
        return f"{{{inner}}}" if inner else ""

    servers = sorted(state.servers.items())
    for name, kind, attribute, help_text in _REDIS_FIGURES:
        found = [(node, getattr(f, attribute)) for node, f in servers]
        known = [(node, value) for node, value in found if value is not None]
        if known:
            full = metric(name, kind, help_text)
            lines.extend(f"{full}{labels(node)} {int(value)}" for node, value in known)
    policies = [(node, f.policy) for node, f in servers if f.policy is not None]
    if policies:
        full = metric(
            "maxmemory_policy",
            "gauge",
            "Redis' maxmemory-policy, as the policy label of a series whose value is 1.",
        )
        lines.extend(f"{full}{labels(node, policy=policy)} 1" for node, policy in policies)
    return "\n".join(lines) + "\n"


def _redis_label(value: str) -> str:
    """*value* as a label value of the text format (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(lines: list[str], full: str, kind: str, help_text: str) -> str:
    """Append the HELP and TYPE lines of the metric family *full*; returns its name."""
    lines.append(f"# HELP {full} {_escape_help(help_text)}")
    lines.append(f"# TYPE {full} {kind}")
    return full


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
