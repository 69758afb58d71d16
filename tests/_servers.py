"""Start and control real ``redis-server`` processes for tests.

Every :class:`RedisServer` listens on 127.0.0.1 only, persists nothing, and keeps
its working directory and logs in a private temporary directory that is removed
on :meth:`RedisServer.stop`. Nothing here ever talks to a Redis it did not start.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT = 10.0
"""Seconds to wait for a new server to answer before giving up."""
STOP_TIMEOUT = 3.0
"""Seconds to wait after SIGTERM before sending SIGKILL."""
PORT_ATTEMPTS = 5
"""How many fresh ports to try when the chosen one was taken meanwhile."""
LOG_TAIL_LINES = 20
PORT_IN_USE_MESSAGE = "Address already in use"


class RedisServerError(RuntimeError):
    """A server could not be started, or a ``redis-cli`` command failed."""


class _PortTaken(RedisServerError):
    """The port was taken by someone else between choosing it and binding it."""


class RedisServerFactory(Protocol):
    """Type of the ``redis_server_factory`` fixture."""

    def __call__(self, extra_args: Sequence[str] = ()) -> RedisServer:
        """Start and return a private server with ``extra_args`` appended."""
        ...


SERVER_ENV = "FENNEC_TEST_REDIS_SERVER"
"""Environment variable naming the redis-server binary (or wrapper) every test server runs,
e.g. Redis 6.0 from ``.ci/redis6``; unset or empty: ``redis-server`` on PATH."""


def redis_server_binary() -> str | None:
    """Return the redis-server to start: ``$FENNEC_TEST_REDIS_SERVER`` if set, else the one on
    PATH, or None if it is not installed.

    Raises :class:`RedisServerError` if the variable names no executable (a typo must not
    quietly test the default server instead).
    """
    override = os.environ.get(SERVER_ENV)
    if override:
        found = shutil.which(override)
        if found is None:
            raise RedisServerError(f"{SERVER_ENV}={override!r} is not an executable")
        return os.path.abspath(found)
    return shutil.which("redis-server")


@functools.cache
def _binary_version(binary: str) -> tuple[int, ...]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"\bv=(\d+)\.(\d+)\.(\d+)", output)
    if match is None:
        raise RedisServerError(f"{binary} --version printed no version: {output!r}")
    return tuple(int(part) for part in match.groups())


def redis_server_version() -> tuple[int, ...]:
    """``(major, minor, patch)`` of :func:`redis_server_binary`, for options newer servers
    added (e.g. ``cluster-port`` is 7.0+)."""
    binary = redis_server_binary()
    if binary is None:
        raise RedisServerError("redis-server not found on PATH")
    return _binary_version(binary)


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def no_retry() -> Retry:
    """Return a redis-py retry policy that never retries (redis-py 6+ retries by default)."""
    return Retry(NoBackoff(), 0)


class RedisServer:
    """One ``redis-server`` process that a test owns and may kill, pause or restart.

    The port is chosen on the first :meth:`start` and kept by :meth:`restart`, so URLs
    and clients handed out before a restart stay valid. A ``--requirepass`` given in
    ``extra_args`` is remembered in :attr:`password` and used by :meth:`cli` and
    :meth:`client`; :attr:`url` never contains it.
    """

    def __init__(self, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.extra_args = list(extra_args)
        self.password = _option_value(self.extra_args, "--requirepass")
        self._port = port
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._paused = False
        self._clients: list[redis.Redis] = []

    # -- properties ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; only known once the server has been started."""
        if self._port is None:
            raise RedisServerError("the server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (without the password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while a process exists (running, paused or not yet reaped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def is_running(self) -> bool:
        """True if the process exists and has not exited (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers; retry on a fresh port if needed."""
        if self.is_running():
            raise RedisServerError(f"server on port {self.port} is already running")
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not self._fixed_port:
                self._port = find_free_port()
            try:
                self._launch()
                self._fixed_port = True  # restart() must come back on this port
                return self
            except _PortTaken:
                self._reap()
                if attempt == attempts:
                    raise
            except BaseException:
                self._reap()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a short wait; reap the process, remove the temp dir.

        Redis notices SIGTERM on its next cron tick (``hz`` 10), so this takes ~0.1 s;
        use :func:`stop_all` to stop several servers in parallel.
        """
        self._terminate()
        if self._proc is not None:
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()
        self.close_clients()

    def kill(self) -> None:
        """SIGKILL the server (simulating a crash) and reap it; the temp dir is kept."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> RedisServer:
        """SIGKILL the server if it still runs, then start it again, empty, on the same port.

        Clients from :meth:`client` stay usable: redis-py reconnects on the next command.
        """
        self._reap()
        return self.start()

    def ensure_running(self) -> None:
        """Undo what a test may have done: resume if paused, restart if dead."""
        if not self.is_running():
            self.restart()
        elif self._paused:
            self.resume()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- talking to the server ----------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a ``redis.Redis`` for assertions, closed by :meth:`close_clients`/:meth:`stop`.

        Defaults: bytes responses, the server's password, and no retries (pass
        ``retry=...`` to override), so failures show up immediately.
        """
        client = self._new_client(**kwargs)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        """Close every client handed out by :meth:`client`."""
        for client in self._clients:
            client.close()
        self._clients.clear()

    def flushall(self) -> None:
        """Empty every database of this server."""
        with self._new_client() as client:
            client.flushall()

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -p <port> *args`` and return its output without the final newline.

        Raises :class:`RedisServerError` if redis-cli exits non-zero (e.g. cannot connect).
        Error *replies* come back as text: redis-cli 7.0 exits 0 on them, so check the
        result (``assert server.cli("SET", "k", "v") == "OK"``).
        """
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RedisServerError("redis-cli not found on PATH")
        auth = ["--no-auth-warning", "-a", self.password] if self.password is not None else []
        command = [binary, "-h", "127.0.0.1", "-p", str(self.port), *auth, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        output = result.stdout.removesuffix("\n")
        if result.returncode != 0:
            raise RedisServerError(
                f"{' '.join(command)} failed ({result.returncode}): {output} {result.stderr}"
            )
        return output

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log and of its stdout/stderr, for error messages."""
        if self._tmpdir is None:
            return "(no log)"
        parts = []
        for name in ("redis.log", "stdout.log"):
            path = self._tmpdir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(empty log)"

    # -- internals ----------------------------------------------------------------

    def _launch(self) -> None:
        """Spawn the process on ``self.port`` and wait until it is ours and answering."""
        binary = redis_server_binary()
        if binary is None:
            raise RedisServerError("redis-server not found on PATH")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="fennec-redis-"))
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._tmpdir),
            "--daemonize", "no",
            "--logfile", str(self._tmpdir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        # Errors in the arguments are printed before the log file is opened.
        with open(self._tmpdir / "stdout.log", "wb") as output:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        self._paused = False
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """Poll until *our* process answers on the port (not some other server there)."""
        assert self._proc is not None
        probe = self._new_client(socket_connect_timeout=0.1, socket_timeout=0.1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    message = self._failure(f"exited with code {self._proc.returncode}")
                    port_taken = PORT_IN_USE_MESSAGE in message
                    raise (_PortTaken if port_taken else RedisServerError)(message)
                try:
                    if probe.info("server")["process_id"] == self._proc.pid:
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.01)
        finally:
            probe.close()
        raise RedisServerError(self._failure(f"did not answer within {START_TIMEOUT:g}s"))

    def _new_client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        kwargs.setdefault("retry", no_retry())
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def _failure(self, what: str) -> str:
        return f"redis-server on port {self._port} {what}\n{self.log_tail()}"

    def _terminate(self) -> None:
        """Send SIGTERM without waiting (and SIGCONT: a stopped process cannot exit)."""
        if self.is_running():
            assert self._proc is not None
            self._proc.terminate()
            if self._paused:
                self.resume()

    def _signal(self, signum: signal.Signals) -> None:
        if not self.is_running():
            raise RedisServerError(f"server on port {self._port} is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, signum)

    def _reap(self) -> None:
        """Kill the process if it still runs, wait for it and remove the temp dir."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._paused = False
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def stop_all(servers: Iterable[RedisServer]) -> None:
    """Stop several servers, SIGTERMing them all first so their shutdowns overlap."""
    servers = list(servers)
    for server in servers:
        server._terminate()
    for server in servers:
        server.stop()


def _option_value(args: Sequence[str], option: str) -> str | None:
    """Return the value following the last ``option`` in ``args``, if any."""
    value = None
    for name, following in zip(args, args[1:], strict=False):
        if name == option:
            value = following
    return value
