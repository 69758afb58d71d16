"""End to end: the demo under gunicorn (2 gthread workers) against a real redis-server.

Replays the seed's curl session over HTTP with ``urllib`` and checks that the cache statistics
served by ``/cache/stats`` add up across both worker processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gunicorn")

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
TOKEN = "e2e-admin-token"
DB_DELAY = 0.2
BOOT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: Each worker flushes its stats to Redis at least once a second.
STATS_FLUSH_WAIT = 1.2
STATS_KEYS = {"hits", "misses", "sets", "deletes", "total_requests", "hit_rate", "errors"}
# The demo's access_log_format ends with '<pid> <ms>ms'.
ACCESS_LINE = re.compile(r'"GET /users/\d+ HTTP/1\.\d" 200 .*<(\d+)> \d+ms')


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    """An HTTP answer: status, headers and decoded JSON body."""

    status: int
    headers: dict[str, str]
    json: Any


@dataclass
class DemoServer:
    """A gunicorn master running the demo, and where it logs."""

    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    returncode: int | None = field(default=None)

    def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request on a fresh connection (urllib sends ``Connection: close``)."""
        data = None if payload is None else json.dumps(payload).encode()
        all_headers = {"Connection": "close", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Reply(resp.status, dict(resp.headers), json.loads(resp.read()))
        except urllib.error.HTTPError as err:
            with err:
                return Reply(err.code, dict(err.headers), json.loads(err.read()))

    def get(self, path: str) -> Reply:
        """``GET path``."""
        return self.request("GET", path)

    def log(self) -> str:
        """Everything gunicorn (master, workers, access log) wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the master, SIGKILL its process group if it hangs; return the exit code."""
        if self.returncode is not None:
            return self.returncode
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Workers that outlived their master (they should not) go too: the group is ours.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.returncode = proc.returncode
        return self.returncode


def wait_until_ready(server: DemoServer) -> None:
    """Poll ``/cache/health`` until it answers 200; fail with gunicorn's log otherwise."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode}:\n{server.log()}")
        try:
            if server.get("/cache/health").status == 200:
                return
        except (OSError, ValueError):  # refused, reset, not yet JSON
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not answer within {BOOT_TIMEOUT} s:\n{server.log()}")
        time.sleep(0.1)


@pytest.fixture
def demo_server(redis_server: Any, tmp_path: Path) -> Iterator[DemoServer]:
    """``gunicorn -c demo/gunicorn.conf.py "demo.app:create_app()"`` on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "FENNEC_DEMO_"))}
    env.update(
        {
            "FLASK_FENNEC_CACHE_URL": str(redis_server.url),
            "FLASK_FENNEC_CACHE_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}:",
            "FLASK_FENNEC_CACHE_ADMIN_TOKEN": TOKEN,
            "FLASK_DEMO_DB_DELAY": str(DB_DELAY),
            "FLASK_DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
            "FENNEC_DEMO_BIND": f"127.0.0.1:{port}",
            "FENNEC_DEMO_WORKERS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = tmp_path / "gunicorn.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "demo/gunicorn.conf.py",
        "demo.app:create_app()",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DemoServer(f"http://127.0.0.1:{port}", log_path, process)
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()


def stats_after_flush(server: DemoServer) -> dict[str, Any]:
    """``/cache/stats`` once every worker has flushed its counters."""
    time.sleep(STATS_FLUSH_WAIT)
    reply = server.get("/cache/stats")
    assert reply.status == 200
    stats: dict[str, Any] = reply.json
    return stats


def worker_pids(server: DemoServer, expected_lines: int) -> set[int]:
    """Pids of the workers that served ``GET /users/..`` (from the access log)."""
    deadline = time.monotonic() + 2.0
    while True:
        matches = ACCESS_LINE.findall(server.log())
        if len(matches) >= expected_lines or time.monotonic() > deadline:
            return {int(pid) for pid in matches}
        time.sleep(0.05)


def test_seed_session_under_gunicorn(demo_server: DemoServer) -> None:
    server = demo_server
    alice = {"id": 1, "name": "Alice", "email": "alice@example.com"}

    # 1. @cache: a miss (slow), then a hit (fast) -- maybe served by the other worker.
    first = server.get("/users/1")
    assert first.status == 200
    assert first.json["user"] == alice and first.json["cached"] is False
    assert first.json["duration_ms"] >= DB_DELAY * 1000
    second = server.get("/users/1")
    assert second.json == {"user": alice, "cached": True, "duration_ms": pytest.approx(0, abs=100)}

    # 2. Cache-aside.
    aside = server.get("/users-aside/2")
    assert aside.status == 200
    assert aside.json["user"]["name"] == "Bob" and aside.json["cached"] is False

    # 3. Write-through, then read back from the cache.
    david = {"id": 4, "name": "David", "email": "david@example.com"}
    created = server.request("POST", "/users", david)
    assert created.status == 201
    assert created.json == {"user": david, "message": "User created"}
    assert server.get("/users/4").json["cached"] is True
    bad = server.request("POST", "/users", {"id": True, "name": "X", "email": "x@y"})
    assert bad.status == 400 and "id" in bad.json["error"]

    # 4. Statistics (shape; the numbers are checked below, after a flush).
    shape = server.get("/cache/stats")
    assert shape.status == 200 and STATS_KEYS <= set(shape.json)

    # 6. Health.
    health = server.get("/cache/health")
    assert health.status == 200
    assert health.json["status"] == "healthy" and health.json["backend"] == "redis"
    assert "latency_ms" in health.json

    # 7. Benchmark.
    bench = server.get("/benchmark")
    assert bench.status == 200
    assert set(bench.json) == {"uncached_ms", "cache_miss_ms", "cache_hit_ms", "speedup"}
    assert bench.json["uncached_ms"] >= DB_DELAY * 1000
    assert bench.json["cache_miss_ms"] >= DB_DELAY * 1000
    assert bench.json["cache_hit_ms"] < DB_DELAY * 1000
    assert bench.json["speedup"] > 1

    # Lookups so far: /users/1 miss+hit, /users-aside/2 miss, /users/4 hit, benchmark miss+hit.
    server.get("/users/3")  # one more miss: now users 1-4 are all cached
    stats = stats_after_flush(server)
    assert (stats["hits"], stats["misses"], stats["total_requests"]) == (3, 4, 7), stats
    assert stats["sets"] >= 5  # users 1, 2, 3, 4 and the benchmark key
    assert stats["hit_rate"] == round(300 / 7, 2)

    # Cross-worker statistics: hits in both workers all reach the shared counters.
    made = 0
    pids: set[int] = set()
    paths = [f"/users/{1 + i % 4}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            replies = list(pool.map(server.get, paths))
            made += len(replies)
            assert all(r.status == 200 and r.json["cached"] is True for r in replies)
            pids = worker_pids(server, expected_lines=made + 4)
            if len(pids) >= 2:
                break
    assert len(pids) == 2, f"all requests went to one worker: {pids}"
    after = stats_after_flush(server)
    assert after["total_requests"] == stats["total_requests"] + made, after
    assert after["hits"] == stats["hits"] + made, after
    assert after["misses"] == stats["misses"], after
    assert after["errors"] == 0, after

    # 5. Clear: the token is configured, so it is required.
    denied = server.request("POST", "/cache/clear")
    assert denied.status in (401, 403) and "error" in denied.json
    wrong = server.request("POST", "/cache/clear", headers={"Authorization": "Bearer nope"})
    assert wrong.status in (401, 403)
    assert server.get("/users/1").json["cached"] is True
    cleared = server.request("POST", "/cache/clear", headers={"Authorization": f"Bearer {TOKEN}"})
    assert cleared.status == 200
    assert cleared.json == {"message": "Cache cleared", "keys_deleted": 5}  # users 1-4, benchmark
    # Every worker now misses.
    assert [server.get("/users/2").json["cached"] for _ in range(2)] == [False, True]

    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log, log
