"""``python -m bench.freeze``: what a frozen Redis costs a request, by its number of cached calls.

A private ``redis-server`` is frozen with SIGSTOP (TCP still accepts, nothing answers: the
worst kind of outage for a client) while client threads request a page whose view makes *N*
``@cache`` calls, all warm; then it is thawed with SIGCONT. For each *N* it reports the
requests' latencies before, during and after the freeze, and the recovery time: from SIGCONT
to the first request whose every cached call was a hit again.

By default the app is served by gunicorn as the demo is (2 gthread workers × 4 threads, each
worker with its own circuit breaker) and driven over HTTP by 8 client threads, as in
``tests/test_faults.py``; ``--in-process`` runs it in this process instead (Flask's test
client in threads: one breaker, no queueing behind busy worker threads). ``--cluster``
starts a three-master Redis Cluster instead and freezes the master that holds the page's
first entry, so the page's other calls may go to healthy masters. The library's defaults
apply (0.25 s socket timeout, breaker threshold 3, cool-down 1 s).

The same page is also served with Flask-Caching's ``RedisCache`` (``@cache.memoize``, same
Redis, same freeze): ``flask-caching`` as configured from the URL alone (redis-py's defaults:
no socket timeout), ``flask-caching-tuned`` with 0.25 s socket and connect timeouts and no
retries (``bench.peers``' "tuned" setup). ``--implementations`` picks them. Not part of
``python -m bench``: it measures failure, not speed. The figures are in
``docs/reliability.md`` and ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import redis
from flask import Flask, g
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from flask_fennec_cache import CachedFunction, FennecCache, cache

from .peers import TUNED_TIMEOUT
from .server import BenchRedis, BenchRedisError, free_port
from .timing import percentile, summarize

__all__ = [
    "FLASK_CACHING", "FLASK_CACHING_TUNED", "FENNEC", "IMPLEMENTATIONS", "BenchCluster",
    "FreezeResult", "FreezeTarget", "SingleServer", "close_app", "create_app", "main",
    "make_app", "run_freeze",
]  # fmt: skip

#: What serves the page's cached calls: this library with its defaults, and Flask-Caching's
#: RedisCache from the URL (no socket timeout) or tuned (short timeouts, no retries).
FENNEC = "fennec"
FLASK_CACHING = "flask-caching"
FLASK_CACHING_TUNED = "flask-caching-tuned"
IMPLEMENTATIONS = (FENNEC, FLASK_CACHING, FLASK_CACHING_TUNED)
LABELS = {
    FENNEC: "flask-fennec-cache (defaults: 0.25 s timeout, breaker)",
    FLASK_CACHING: "Flask-Caching RedisCache, from the URL (no socket timeout)",
    FLASK_CACHING_TUNED: (
        f"Flask-Caching RedisCache, tuned ({TUNED_TIMEOUT:g} s timeouts, no retries)"
    ),
}

#: Cached calls per request, by default.
CALLS = (1, 3, 6)
#: Seconds each cached call's loader takes (a small query: the cache is what is measured).
LOADER_SECONDS = 0.01
#: Seconds the server stays frozen.
FREEZE_SECONDS = 2.0
#: Client threads (as in tests/test_faults.py).
THREADS = 8
#: gunicorn workers and threads per worker (demo/gunicorn.conf.py's defaults).
WORKERS = 2
WORKER_THREADS = 4
#: Seconds a client waits for an answer (a deadline; none came close).
CLIENT_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Seconds of warm load before the freeze, and of load after recovery.
WARM_SECONDS = 1.0
#: Deadline (not a measurement) for the cache to hit again after SIGCONT.
RECOVERY_TIMEOUT = 15.0
#: Seconds into the freeze after which the breaker is expected open ("settled" window).
SETTLE_SECONDS = 1.0
#: Seconds entries live by default: none expires during a run (every call is a hit before the
#: freeze); ``--ttl 1`` makes some of them expire during the freeze.
TTL = 3600.0


@dataclass(frozen=True)
class Sample:
    """One request: when it started and ended (monotonic seconds), and how many of its cached
    calls were hits."""

    start: float
    end: float
    hits: int

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass(frozen=True)
class FreezeResult:
    """The figures of one run for one number of cached calls per request (milliseconds)."""

    implementation: str
    calls: int
    frozen_calls: int
    threads: int
    server: str
    ttl: float
    warm_p50_ms: float
    frozen_requests: int
    frozen_p50_ms: float
    frozen_worst_ms: float
    first_second_worst_ms: float
    settled_p50_ms: float
    settled_worst_ms: float
    recovery_ms: float | None
    after_worst_ms: float


def _part(index: int, ttl: float) -> CachedFunction[[], dict[str, int]]:
    @cache(ttl=ttl, key=f"part:{index}")
    def part() -> dict[str, int]:
        time.sleep(LOADER_SECONDS)
        return {"part": index}

    return part


def _fennec_app(url: str, calls: int, prefix: str, ttl: float) -> Flask:
    app = Flask(f"bench_freeze_{calls}")
    app.config.update(FENNEC_CACHE_URL=url, FENNEC_CACHE_PREFIX=prefix)
    FennecCache(app)
    parts = [_part(index, ttl) for index in range(calls)]

    @app.get("/page")
    def page() -> dict[str, int]:
        return {"hits": sum(part.lookup().hit for part in parts)}

    return app


def _flask_caching_app(url: str, calls: int, prefix: str, ttl: float, tuned: bool) -> Flask:
    from flask_caching import Cache

    # Flask-Caching logs every failed command with its traceback: not what is measured here.
    logging.getLogger("flask_caching").setLevel(logging.CRITICAL)
    app = Flask(f"bench_freeze_fc_{calls}")
    options: dict[str, Any] = {}
    if tuned:
        options = {
            "socket_timeout": TUNED_TIMEOUT,
            "socket_connect_timeout": TUNED_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        }
    cache = Cache(app, config={
        "CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url, "CACHE_KEY_PREFIX": prefix,
        "CACHE_DEFAULT_TIMEOUT": int(ttl), "CACHE_OPTIONS": options,
    })  # fmt: skip
    app.extensions["bench_freeze_cache"] = cache

    @cache.memoize(timeout=int(ttl))
    def part(index: int) -> dict[str, int]:
        g.bench_loads += 1  # a miss (or a call Flask-Caching made without the cache)
        time.sleep(LOADER_SECONDS)
        return {"part": index}

    @app.get("/page")
    def page() -> dict[str, int]:
        g.bench_loads = 0
        for index in range(calls):
            part(index)
        return {"hits": calls - g.bench_loads}

    return app


def make_app(
    url: str, calls: int, prefix: str, ttl: float = TTL, implementation: str = FENNEC
) -> Flask:
    """An app whose ``GET /page`` makes *calls* cached calls (entries living *ttl* seconds)
    through *implementation* (one of :data:`IMPLEMENTATIONS`) and answers ``{"hits": k}``."""
    if implementation == FENNEC:
        return _fennec_app(url, calls, prefix, ttl)
    if implementation in (FLASK_CACHING, FLASK_CACHING_TUNED):
        return _flask_caching_app(url, calls, prefix, ttl, implementation == FLASK_CACHING_TUNED)
    raise ValueError(f"unknown implementation {implementation!r}: one of {IMPLEMENTATIONS}")


def close_app(app: Flask) -> None:
    """Release the connections of an app :func:`make_app` built."""
    if "fennec_cache" in app.extensions:
        app.extensions["fennec_cache"].close()
    flask_caching = app.extensions.get("bench_freeze_cache")
    if flask_caching is not None:
        client = getattr(flask_caching.cache, "_write_client", None)
        if client is not None:
            client.close()


def create_app() -> Flask:
    """:func:`make_app` from ``FENNEC_BENCH_REDIS_URL``, ``FENNEC_BENCH_CALLS``,
    ``FENNEC_BENCH_PREFIX``, ``FENNEC_BENCH_TTL`` and ``FENNEC_BENCH_IMPLEMENTATION``
    (for gunicorn)."""
    env = os.environ
    return make_app(
        env["FENNEC_BENCH_REDIS_URL"], int(env["FENNEC_BENCH_CALLS"]), env["FENNEC_BENCH_PREFIX"],
        float(env["FENNEC_BENCH_TTL"]), env.get("FENNEC_BENCH_IMPLEMENTATION", FENNEC),
    )  # fmt: skip


#: Makes one client: a callable that requests the page once and returns its number of hits.
ClientFactory = Callable[[], Callable[[], int]]


@contextmanager
def in_process(
    url: str, calls: int, prefix: str, ttl: float, implementation: str = FENNEC
) -> Iterator[ClientFactory]:
    """The page app in this process, requested through Flask's test client."""
    app = make_app(url, calls, prefix, ttl, implementation)

    def make_client() -> Callable[[], int]:
        client = app.test_client()

        def request() -> int:
            reply = client.get("/page")
            if reply.status_code != 200:
                raise RuntimeError(f"GET /page answered {reply.status_code}")
            return int(reply.get_json()["hits"])

        return request

    try:
        yield make_client
    finally:
        close_app(app)


@contextmanager
def under_gunicorn(
    url: str, calls: int, prefix: str, ttl: float, implementation: str = FENNEC
) -> Iterator[ClientFactory]:
    """The page app under gunicorn (gthread workers), requested over HTTP with keep-alive."""
    port = free_port()
    env = {
        **os.environ,
        "FENNEC_BENCH_REDIS_URL": url,
        "FENNEC_BENCH_CALLS": str(calls),
        "FENNEC_BENCH_PREFIX": prefix,
        "FENNEC_BENCH_TTL": str(ttl),
        "FENNEC_BENCH_IMPLEMENTATION": implementation,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    command = [
        sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
        "--workers", str(WORKERS), "--threads", str(WORKER_THREADS),
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        "--chdir", str(REPO_ROOT), "bench.freeze:create_app()",
    ]  # fmt: skip

    def make_client() -> Callable[[], int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)

        def request() -> int:
            conn.request("GET", "/page")
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"GET /page answered {reply.status}")
            return int(json.loads(data)["hits"])

        return request

    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20.0
            while True:
                try:
                    make_client()()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        tail = log.read().decode(errors="replace")[-3000:]
                        raise RuntimeError(f"gunicorn did not start:\n{tail}") from None
                    time.sleep(0.1)
            yield make_client
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class FreezeTarget(Protocol):
    """Where the page's entries live: a URL, and the process holding a given key."""

    @property
    def url(self) -> str: ...

    def pid_of(self, key: str) -> int:
        """The pid of the ``redis-server`` that holds *key* (its master, on a cluster)."""
        ...


class SingleServer:
    """A :class:`FreezeTarget` of one server (every key is on it)."""

    def __init__(self, server: BenchRedis) -> None:
        self.url = server.url
        with server.client() as control:
            self._pid = int(control.info("server")["process_id"])

    def pid_of(self, key: str) -> int:
        return self._pid


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class BenchCluster:
    """Three ``redis-server`` masters on loopback (no replicas, nothing on disk) joined with
    ``redis-cli --cluster create``, in a temporary directory; a :class:`FreezeTarget`."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="fennec-bench-cluster-"))
        self._slots: list[tuple[int, int, int]] = []  # (first slot, last slot, pid)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/"

    def __enter__(self) -> BenchCluster:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise BenchRedisError("redis-server and redis-cli are needed on PATH for --cluster")
        try:
            for _ in range(3):
                port = _free_cluster_port()
                node_dir = self._dir / str(port)
                node_dir.mkdir()
                self._procs.append(subprocess.Popen(
                    [server, "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--dir", str(node_dir), "--save", "", "--appendonly", "no",
                     "--logfile", str(node_dir / "redis.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                self.ports.append(port)
            for port in self.ports:
                _wait_until(functools.partial(_answers, port), f"node {port} did not start")
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=30,
            )  # fmt: skip
            _wait_until(self._ready, "the cluster did not reach cluster_state:ok")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        with redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=1) as client:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
            slots: list[tuple[int, int, int]] = []
            for first, last, master, *_ in client.execute_command("CLUSTER SLOTS"):
                with redis.Redis(host="127.0.0.1", port=int(master[1])) as node:
                    slots.append((int(first), int(last), int(node.info()["process_id"])))
            self._slots = slots
            return True

    def pid_of(self, key: str) -> int:
        slot = key_slot(key.encode())
        return next(pid for first, last, pid in self._slots if first <= slot <= last)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs = []
        shutil.rmtree(self._dir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _wait_until(condition: Callable[[], bool], failure: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchRedisError(failure)
        time.sleep(0.05)


def _window(samples: Sequence[Sample], start: float, end: float) -> list[float]:
    """Durations (ms) of the requests in flight at some point of [start, end), sorted."""
    return sorted(s.ms for s in samples if s.end > start and s.start < end)


def _worst(values: Sequence[float]) -> float:
    return max(values, default=0.0)


def run_freeze(
    target: FreezeTarget,
    calls: int,
    threads: int = THREADS,
    freeze: float = FREEZE_SECONDS,
    gunicorn: bool = True,
    ttl: float = TTL,
    implementation: str = FENNEC,
) -> FreezeResult:
    """Freeze the server holding the page's first entry for *freeze* seconds, under load from
    *threads* client threads, the page's calls cached by *implementation*."""
    prefix = f"freeze-{uuid.uuid4().hex[:8]}:"
    keys = [f"{prefix}part:{index}" for index in range(calls)]
    pid = target.pid_of(keys[0])
    frozen_calls = sum(target.pid_of(key) == pid for key in keys)
    serve = under_gunicorn if gunicorn else in_process
    samples: list[Sample] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def request_loop(request: Callable[[], int]) -> None:
        try:
            while not stop.is_set():
                started = time.monotonic()
                hits = request()
                samples.append(Sample(started, time.monotonic(), hits))
        except BaseException as exc:  # reported after the run, which it invalidates
            errors.append(exc)

    recovered: float | None = None
    with serve(target.url, calls, prefix, ttl, implementation) as make_client:
        make_client()()  # fill every entry
        workers = [
            threading.Thread(target=request_loop, args=(make_client(),), daemon=True)
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        try:
            time.sleep(WARM_SECONDS)
            paused = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(freeze)
            finally:
                resumed = time.monotonic()
                os.kill(pid, signal.SIGCONT)
            deadline = resumed + RECOVERY_TIMEOUT
            while recovered is None and time.monotonic() < deadline:
                recovered = next(
                    (s.end for s in list(samples) if s.start >= resumed and s.hits == calls),
                    None,
                )
                time.sleep(0.01)
            time.sleep(WARM_SECONDS)
        finally:
            stop.set()
            for worker in workers:
                worker.join(CLIENT_TIMEOUT)
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}") from errors[0]

    warm = _window(samples, paused - WARM_SECONDS, paused)
    frozen = _window(samples, paused, resumed)
    settled = _window(samples, paused + SETTLE_SECONDS, resumed)
    return FreezeResult(
        implementation=implementation,
        calls=calls,
        frozen_calls=frozen_calls,
        threads=threads,
        server="gunicorn" if gunicorn else "in-process",
        ttl=ttl,
        warm_p50_ms=percentile(warm, 0.5),
        frozen_requests=len(frozen),
        frozen_p50_ms=percentile(frozen, 0.5),
        frozen_worst_ms=_worst(frozen),
        first_second_worst_ms=_worst(_window(samples, paused, paused + SETTLE_SECONDS)),
        settled_p50_ms=percentile(settled, 0.5),
        settled_worst_ms=_worst(settled),
        recovery_ms=None if recovered is None else (recovered - resumed) * 1000.0,
        after_worst_ms=_worst(_window(samples, resumed, float("inf"))),
    )


def _median(values: Sequence[float | None]) -> str:
    """The median over the runs, then the range when they differ: ``312 (299–357)``."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return "never"
    low, high = _ms(known[0]), _ms(known[-1])
    text = _ms(summarize(known).median)
    if low != high:
        text += f" ({low}–{high})"
    return text + ("" if len(known) == len(values) else " (some never)")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def markdown(results: Sequence[FreezeResult]) -> str:
    """One row per implementation and number of cached calls (and of those on the frozen
    server); each figure the median over the runs (ms), with their range."""
    lines = [
        "| implementation | cached calls per request (on the frozen server) | before (p50) "
        "| frozen: p50 · worst | worst in the first second | after 1 s frozen: p50 · worst "
        "| recovery after SIGCONT | worst after SIGCONT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {name: rank for rank, name in enumerate(IMPLEMENTATIONS)}
    groups = sorted(
        {(r.implementation, r.calls, r.frozen_calls) for r in results},
        key=lambda group: (order.get(group[0], len(order)), group[1], group[2]),
    )
    for implementation, calls, frozen_calls in groups:
        rows = [r for r in results if (r.implementation, r.calls, r.frozen_calls) == (
            implementation, calls, frozen_calls)]  # fmt: skip
        lines.append(
            f"| {implementation} | {calls} ({frozen_calls}) "
            f"| {_median([r.warm_p50_ms for r in rows])} ms "
            f"| {_median([r.frozen_p50_ms for r in rows])} · "
            f"{_median([r.frozen_worst_ms for r in rows])} ms "
            f"| {_median([r.first_second_worst_ms for r in rows])} ms "
            f"| {_median([r.settled_p50_ms for r in rows])} · "
            f"{_median([r.settled_worst_ms for r in rows])} ms "
            f"| {_median([r.recovery_ms for r in rows])} ms "
            f"| {_median([r.after_worst_ms for r in rows])} ms |"
        )
    return "\n".join(lines)


def _implementations(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [value for value in values if value not in IMPLEMENTATIONS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of {', '.join(IMPLEMENTATIONS)}"
        )
    return values


def _calls(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("every number of calls must be >= 1")
    return values


@contextmanager
def _target(cluster: bool) -> Iterator[FreezeTarget]:
    if cluster:
        with BenchCluster() as nodes:
            yield nodes
    else:
        with BenchRedis() as server:
            yield SingleServer(server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freeze", description=__doc__)
    parser.add_argument("--calls", type=_calls, default=CALLS, help="e.g. 1,3,6 (the default)")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--freeze", type=float, default=FREEZE_SECONDS, help="seconds")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=TTL, help="seconds entries live")
    parser.add_argument(
        "--in-process", action="store_true",
        help="serve the page in this process (test client) instead of under gunicorn",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", action="store_true",
        help="a three-master cluster, one master frozen, instead of one server",
    )  # fmt: skip
    parser.add_argument(
        "--implementations", type=_implementations, default=IMPLEMENTATIONS,
        help=f"what caches the page's calls, e.g. {FENNEC} (default: {','.join(IMPLEMENTATIONS)})",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args(argv)
    if args.cluster and args.implementations != (FENNEC,):
        parser.error(f"--cluster measures {FENNEC} only: pass --implementations {FENNEC}")
    # The library logs each cause of failure once per 10 s: not what is measured here.
    logging.getLogger("flask_fennec_cache").setLevel(logging.CRITICAL)
    results: list[FreezeResult] = []
    try:
        with _target(args.cluster) as target:
            for run in range(args.runs):
                for calls in args.calls:
                    for implementation in args.implementations:
                        result = run_freeze(
                            target, calls, args.threads, args.freeze, not args.in_process,
                            args.ttl, implementation,
                        )  # fmt: skip
                        print(f"[freeze] run {run + 1}: {result}", file=sys.stderr, flush=True)
                        results.append(result)
    except BenchRedisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = (
        "in this process" if args.in_process
        else f"gunicorn, {WORKERS} gthread workers x {WORKER_THREADS} threads"
    ) + ("; a 3-master cluster, one master frozen" if args.cluster else "")  # fmt: skip
    print(
        f"{where}; {args.threads} client threads; frozen {args.freeze:.1f} s; "
        f"{args.runs} runs; loader {LOADER_SECONDS * 1000:.0f} ms per cached call; "
        f"entries live {args.ttl:g} s"
    )
    for implementation in args.implementations:
        print(f"- {implementation}: {LABELS[implementation]}")
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload: list[dict[str, Any]] = [asdict(r) for r in results]
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
