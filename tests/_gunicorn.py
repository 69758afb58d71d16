"""Run the demo under gunicorn for end-to-end and fault-injection tests, and drive load at it.

:func:`running_demo` starts ``gunicorn -c demo/gunicorn.conf.py "demo.app:create_app()"`` on a
free loopback port against a given Redis URL (environment overrides on top), waits until it
answers, and stops it (and its whole process group) afterwards. :class:`LoadGenerator` keeps
several client threads requesting paths and records every answer with its timing, so a test can
break Redis mid-load and then look at what the clients saw in any time window.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: Seconds a client waits for one answer before counting the request as timed out.
CLIENT_TIMEOUT = 10.0
#: The demo's access_log_format ends with '<pid> <ms>ms'.
ACCESS_LINE = re.compile(r'"GET (/\S*) HTTP/1\.\d" (\d{3}) .*<(\d+)> \d+ms')


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
        timeout: float = CLIENT_TIMEOUT,
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
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Reply(resp.status, dict(resp.headers), json.loads(resp.read()))
        except urllib.error.HTTPError as err:
            with err:
                return Reply(err.code, dict(err.headers), json.loads(err.read()))

    def get(self, path: str, timeout: float = CLIENT_TIMEOUT) -> Reply:
        """``GET path``."""
        return self.request("GET", path, timeout=timeout)

    def log(self) -> str:
        """Everything gunicorn (master, workers, access log) wrote so far."""
        return self.log_path.read_text(errors="replace")

    def access_pids(self, path_prefix: str = "/users/") -> set[int]:
        """Pids of the workers that logged a ``GET`` of a path starting with *path_prefix*."""
        return {
            int(pid)
            for path, _, pid in ACCESS_LINE.findall(self.log())
            if path.startswith(path_prefix)
        }

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
            if server.get("/cache/health", timeout=2.0).status == 200:
                return
        except (OSError, ValueError):  # refused, reset, not yet JSON
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not answer within {BOOT_TIMEOUT} s:\n{server.log()}")
        time.sleep(0.1)


def start_demo(
    redis_url: str,
    workdir: Path,
    *,
    prefix: str | None = None,
    admin_token: str | None = None,
    db_delay: float = 0.2,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    config: str | Path = "demo/gunicorn.conf.py",
) -> DemoServer:
    """Start the demo under gunicorn in *workdir* (database, log) and wait until it answers.

    The process environment is cleaned of ``FLASK_*`` and ``FENNEC_DEMO_*`` variables, then
    gets the Redis URL, a fresh prefix (unless given), the admin token, the database delay and
    path, the bind address and the worker count; *env* is applied last and wins.
    """
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "FENNEC_DEMO_"))}
    clean.update(
        {
            "FLASK_FENNEC_CACHE_URL": redis_url,
            "FLASK_FENNEC_CACHE_PREFIX": prefix or f"e2e-{uuid.uuid4().hex[:8]}:",
            "FLASK_DEMO_DB_DELAY": str(db_delay),
            "FLASK_DEMO_DB_PATH": str(workdir / "demo.sqlite3"),
            "FENNEC_DEMO_BIND": f"127.0.0.1:{port}",
            "FENNEC_DEMO_WORKERS": str(workers),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if admin_token is not None:
        clean["FLASK_FENNEC_CACHE_ADMIN_TOKEN"] = admin_token
    clean.update(env or {})
    log_path = workdir / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "demo.app:create_app()"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=clean,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DemoServer(f"http://127.0.0.1:{port}", log_path, process)
    try:
        wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_demo(redis_url: str, workdir: Path, **options: Any) -> Iterator[DemoServer]:
    """:func:`start_demo` as a context manager that always stops gunicorn."""
    server = start_demo(redis_url, workdir, **options)
    try:
        yield server
    finally:
        server.stop()


# ==================================================================================
# Load: client threads that record every answer
# ==================================================================================


@dataclass(frozen=True)
class Sample:
    """One request as a client saw it (times from ``time.monotonic``)."""

    path: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (refused, reset, client timeout)
    cached: bool | None
    error: str | None = None
    body: Any = None

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Window:
    """The samples of one time window, and the numbers a report shows."""

    samples: tuple[Sample, ...]

    @property
    def served(self) -> int:
        return sum(1 for s in self.samples if s.status is not None)

    @property
    def server_errors(self) -> int:
        return sum(1 for s in self.samples if s.status is not None and s.status >= 500)

    @property
    def failures(self) -> list[Sample]:
        """Every request without a 2xx answer (5xx, 4xx, or no answer at all)."""
        return [s for s in self.samples if s.status is None or not 200 <= s.status < 300]

    @property
    def hits(self) -> int:
        return sum(1 for s in self.samples if s.cached)

    @property
    def worst_ms(self) -> float:
        return round(max((s.latency for s in self.samples), default=0.0) * 1000, 1)

    def percentile_ms(self, fraction: float) -> float:
        latencies = sorted(s.latency for s in self.samples)
        if not latencies:
            return 0.0
        index = min(len(latencies) - 1, int(fraction * len(latencies)))
        return round(latencies[index] * 1000, 1)

    def summary(self) -> str:
        return (
            f"requests={len(self.samples)} served={self.served} 5xx={self.server_errors} "
            f"failures={len(self.failures)} cached={self.hits} "
            f"p50={self.percentile_ms(0.5)}ms p99={self.percentile_ms(0.99)}ms "
            f"worst={self.worst_ms}ms"
        )


class LoadGenerator:
    """*threads* clients each requesting *paths* in turn until stopped; a context manager."""

    def __init__(self, server: DemoServer, paths: Sequence[str], threads: int = 8) -> None:
        self.server = server
        self.paths = list(paths)
        self.threads = threads
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> LoadGenerator:
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(index,), name=f"load-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(CLIENT_TIMEOUT + 5)
        self._workers.clear()

    def _run(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            path = self.paths[turn % len(self.paths)]
            turn += 1
            started = time.monotonic()
            status: int | None = None
            cached: bool | None = None
            error: str | None = None
            body: Any = None
            try:
                reply = self.server.get(path)
                status, body = reply.status, reply.json
                if isinstance(body, dict):
                    cached = body.get("cached")
            except (OSError, ValueError) as exc:  # refused, reset, timed out, not JSON
                error = f"{type(exc).__name__}: {exc}"
            sample = Sample(path, started, time.monotonic(), status, cached, error, body)
            with self._lock:
                self._samples.append(sample)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def window(self, start: float = 0.0, end: float = float("inf")) -> Window:
        """Requests that *started* in ``[start, end)``."""
        return Window(tuple(s for s in self.samples() if start <= s.started < end))

    def wait_for_hits(self, since: float, count: int = 1, timeout: float = 10.0) -> float | None:
        """Monotonic time of the answer that made *count* hits among requests started at or
        after *since*; None if that did not happen within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while True:
            hits = sorted(s.ended for s in self.samples() if s.started >= since and s.cached)
            if len(hits) >= count:
                return hits[count - 1]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
