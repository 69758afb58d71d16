"""Load generation on loopback, bounded in time: ``wrk`` when installed, else Python threads."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

__all__ = ["LoadResult", "generator_name", "run_load"]

WRK_THREADS = 2
CONNECTIONS = 8
PY_THREADS = 4
REQUEST_TIMEOUT = 5.0

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class LoadResult:
    """Requests per second over the run, failures, and latency (ms) where the tool reports it."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def generator_name() -> str:
    path = shutil.which("wrk")
    return (
        f"wrk ({WRK_THREADS} threads, {CONNECTIONS} connections)"
        if path
        else (f"python http.client ({PY_THREADS} threads)")
    )


def run_load(url: str, seconds: float) -> LoadResult:
    """Hit *url* with GETs for *seconds*."""
    if shutil.which("wrk"):
        return _run_wrk(url, seconds)
    return _run_python(url, seconds)


def _run_wrk(url: str, seconds: float) -> LoadResult:
    duration = max(1, round(seconds))
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        f"{REQUEST_TIMEOUT:g}s",
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=True
    )
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    requests = int(total.group(1))
    elapsed = float(total.group(2)) * _UNITS[total.group(3)] / 1000
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        # With sync workers every response closes its connection; wrk counts those as read
        # errors (one per request), so only connect errors and timeouts are failures here.
        errors += int(socket_errors.group(1)) + int(socket_errors.group(4))
    return LoadResult(
        requests, elapsed, errors, _wrk_percentile(out, "50"), _wrk_percentile(out, "99")
    )


def _wrk_percentile(out: str, which: str) -> float | None:
    found = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    return None if found is None else float(found.group(1)) * _UNITS[found.group(2)]


def _run_python(url: str, seconds: float) -> LoadResult:
    """Threads with keep-alive connections (reopened when the server closes them)."""
    match = re.match(r"http://([^/:]+):(\d+)(/.*)", url)
    if match is None:
        raise ValueError(f"unsupported URL {url!r}")
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    deadline = time.perf_counter() + seconds
    counts = [0] * PY_THREADS
    errors = [0] * PY_THREADS

    def worker(index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        while time.perf_counter() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    counts[index] += 1
                else:
                    errors[index] += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(PY_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 5)
    elapsed = time.perf_counter() - started
    return LoadResult(sum(counts), elapsed, sum(errors), None, None)
