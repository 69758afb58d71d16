"""A private ``redis-server`` for the bench: loopback only, a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["BenchRedis", "BenchRedisError", "free_port"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0


class BenchRedisError(RuntimeError):
    """redis-server is missing or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BenchRedis:
    """One ``redis-server`` process owned by the bench, in its own temporary directory.

    ``--save "" --appendonly no``: nothing is written to disk. :meth:`kill` simulates a crash
    (the outage scenario); :meth:`stop` ends it and removes the directory. Use as a context
    manager so the process is ended whatever happens.
    """

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> BenchRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchRedisError("redis-server not found on PATH (apt-get install redis-server)")
        for _ in range(5):
            self.port = free_port()
            self._dir = Path(tempfile.mkdtemp(prefix="fennec-bench-redis-"))
            command = [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._dir),
                "--daemonize", "no",
                "--logfile", str(self._dir / "redis.log"),
            ]  # fmt: skip
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise BenchRedisError("redis-server did not start on a free loopback port (5 attempts)")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        probe = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2
        )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    # Ours, not someone else's server that took the port meanwhile.
                    if probe.info("server")["process_id"] == self._proc.pid:
                        return True
                except redis.RedisError:
                    pass
                time.sleep(0.01)
            return False
        finally:
            probe.close()

    def client(self) -> redis.Redis:
        """A plain client for bookkeeping (flushes, STRLEN), never timed."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`stop` still cleans up."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> BenchRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
