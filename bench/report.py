"""The machine description, the markdown table of medians and ratios, and the target checks."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from typing import Any

from . import peers as P
from .values import SIZES, size_label

__all__ = ["check_targets", "machine", "machine_line", "markdown"]

DASH = "—"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(redis_version: str, load_generator: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "load_average_1m_at_start": round(load, 2),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": redis_version,
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "orjson": _version("orjson"),
        "zlib_ng": _version("zlib-ng"),
        "flask": _version("flask"),
        "flask_fennec_cache": _version("flask-fennec-cache"),
        "flask_caching": _version("Flask-Caching"),
        "dogpile_cache": _version("dogpile.cache"),
        "gunicorn": _version("gunicorn"),
        "load_generator": load_generator,
    }


def machine_line(info: dict[str, Any]) -> str:
    load = info["load_average_1m_at_start"]
    return (
        f"{info['date']} · {info['cpu']}, {info['cores']} cores (load {load} at start)"
        f" · {info['os']} · Python {info['python']} · redis-server {info['redis_server']}"
        f" · redis-py {info['redis_py']} + hiredis {info['hiredis']} · orjson {info['orjson']}"
        f" · zlib-ng {info.get('zlib_ng', 'none')}"
        f" · Flask {info['flask']}"
        f" · Flask-Caching {info['flask_caching']} · dogpile.cache {info['dogpile_cache']}"
        f" · gunicorn {info['gunicorn']} · {info['load_generator']}"
    )


def _us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    if value >= 100:
        return f"{value:.0f} µs"
    return f"{value:.1f} µs"


def _latency_cell(entry: dict[str, Any]) -> str:
    ratio = entry["ratio"]
    shown = f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"  # the near cache's 0.03x target
    return f"{_us(entry['median_us'])} · **{shown}×** · p99 {_us(entry['p99_us'])}"


def _bytes_cell(entry: dict[str, Any]) -> str:
    cell = f"{entry['value_bytes']} B (**{entry['ratio']:.2f}×**)"
    if entry["extra_bytes"]:
        count = sum(1 for e in entry["extra_keys"] if e["type"] == "string")
        cell += f" + {entry['extra_bytes']} B in {count} extra key{'s' if count > 1 else ''}"
    return cell


def _down_cell(entry: dict[str, Any]) -> str:
    cell = f"p50 {_us(entry['p50_us'])} · p99 {_us(entry['p99_us'])}"
    if entry["outcome"] != "value":
        cell += f" ({entry['outcome']})"
    default = entry.get("default_settings_one_call")
    if default:
        cell += f"; with defaults (host/port): {default['ms'] / 1000:.1f} s, {default['outcome']}"
    return cell


def markdown(results: dict[str, Any]) -> str:
    """One table: a row per measurement, a column per implementation."""
    columns = [P.OURS, P.RAW, P.FLASK_CACHING, P.DOGPILE]
    if P.OURS_NEAR in results["hit_latency"][size_label(SIZES[0])]:
        columns.insert(1, P.OURS_NEAR)
    lines = [
        "| scenario | " + " | ".join(P.LABELS[c] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]

    def row(label: str, cells: dict[str, str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells.get(c, DASH) for c in columns) + " |")

    for size in SIZES:
        table = results["hit_latency"][size_label(size)]
        row(
            f"hit, {size_label(size)} JSON (median · ratio · p99)",
            {name: _latency_cell(entry) for name, entry in table.items()},
        )
    miss = results["miss_then_set"]["peers"]
    row(
        "miss then set, 100 B (fresh key each call)",
        {name: _latency_cell(entry) for name, entry in miss.items()},
    )
    views = results["view_throughput"]
    const = views["views"]["const"]
    trip = views.get("redis_round_trip_us")
    seen = (
        f"; the workers' Redis round trip under this load: p50 {_us(trip['p50'])}, p99 "
        f"{_us(trip['p99'])}"
        if trip
        else ""
    )
    row(
        f"cached view, req/s under gunicorn ({views['workers']} {views['worker_class']} workers;"
        f" constant view = {const['rps']:.0f} req/s = 1.00×; median of per-round ratios{seen})",
        {
            name: f"{entry['rps']:.0f} req/s (**{entry['ratio']:.2f}×**)"
            for name, entry in views["views"].items()
            if name != "const"
        },
    )
    stampede = results["stampede"]
    row(
        f"stampede: {stampede['threads']} threads miss one key, {stampede['loader_ms']:.0f} ms"
        " loader (loads · p99 latency)",
        {
            name: f"**{entry['loads']} load{'s' if entry['loads'] != 1 else ''}** · p99"
            f" {entry['p99_ms']:.0f} ms"
            + (f" · {entry['failures']} failed" if entry["failures"] else "")
            for name, entry in stampede["peers"].items()
        },
    )
    for label, entry in results["bytes_per_entry"].items():
        row(
            f"bytes stored, {label} JSON value ({entry['json_bytes']} B = 1.00×;"
            f" zlib of it: {entry['zlib_json_bytes']} B)",
            {name: _bytes_cell(entry[name]) for name in columns if name in entry},
        )
    row(
        "latency per call while Redis is down (killed; ours after the breaker opened;"
        " peers tuned: 0.25 s timeouts, no retries)",
        {name: _down_cell(entry) for name, entry in results["redis_down"].items()},
    )
    return "\n".join(lines)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's numbers."""
    checks: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool) -> None:
        checks.append({"target": target, "measured": measured, "met": met})

    hit100 = results["hit_latency"][size_label(100)][P.OURS]["ratio"]
    add("@cache hit ≤ 1.10× raw GET + json.loads at 100 B", f"{hit100:.2f}×", hit100 <= 1.10)
    for size in SIZES:
        table = results["hit_latency"][size_label(size)]
        fastest = min(table[P.FLASK_CACHING]["median_us"], table[P.DOGPILE]["median_us"])
        ours = table[P.OURS]["median_us"]
        add(
            f"@cache hit no slower than the fastest peer at {size_label(size)}",
            f"{_us(ours)} vs {_us(fastest)}",
            ours <= fastest,
        )
    near = results["hit_latency"][size_label(100)].get(P.OURS_NEAR)
    if near is not None:
        add(
            "near-cache hit ≤ 0.03× raw GET at 100 B",
            f"{near['ratio']:.3f}×",
            near["ratio"] <= 0.03,
        )
    views = results["view_throughput"]["views"]
    view = views[P.OURS]["ratio"]
    add("cached view ≥ 0.8× the constant view (no near cache)", f"{view:.2f}×", view >= 0.8)
    against = results["view_throughput"].get("vs_hand_written", {}).get(P.OURS)
    if against is not None:
        add(
            "cached view (no near cache) ≥ the hand-written redis-py view (issue 16)",
            f"{against:.2f}× its req/s",
            against >= 1.0,
        )
    if P.OURS_NEAR in views:
        view = views[P.OURS_NEAR]["ratio"]
        add("cached view ≥ 0.9× the constant view (near cache)", f"{view:.2f}×", view >= 0.9)
    stampede = results["stampede"]
    ours = stampede["peers"][P.OURS]
    limit = stampede["loader_ms"] + 50
    loads = ours["loads"]
    add(f"stampede: 1 load for {stampede['threads']} misses", str(loads), loads == 1)
    add(
        f"stampede: p99 ≤ loader + 50 ms ({limit:.0f} ms)",
        f"{ours['p99_ms']:.0f} ms",
        ours["p99_ms"] <= limit,
    )
    small = results["bytes_per_entry"]["92 B"]
    stored = small[P.OURS]["total_bytes"]
    add("bytes per entry ≤ JSON + 2 (92 B value)", f"{stored} B", stored <= small["json_bytes"] + 2)
    big = results["bytes_per_entry"]["10 KB compressible"]
    ratio = big[P.OURS]["total_bytes"] / big["json_bytes"]
    add("compressible 10 KB value ≤ 0.5× JSON", f"{ratio:.2f}×", ratio <= 0.5)
    down = results["redis_down"][P.OURS]["p99_us"]
    add("Redis down: p99 ≤ 5 ms after the breaker opens", _us(down), down <= 5000)
    return checks


def targets_markdown(checks: list[dict[str, Any]]) -> str:
    lines = ["| target (issue 5) | measured | met |", "|---|---|---|"]
    for check in checks:
        met = "yes" if check["met"] else "**no**"
        lines.append(f"| {check['target']} | {check['measured']} | {met} |")
    return "\n".join(lines)
