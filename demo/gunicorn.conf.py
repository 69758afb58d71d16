"""gunicorn settings for the demo; run from the repository root::

    gunicorn -c demo/gunicorn.conf.py "demo.app:create_app()"

Environment knobs: ``FENNEC_DEMO_BIND`` (default ``127.0.0.1:8000``), ``FENNEC_DEMO_WORKERS``
(default 2), ``FENNEC_DEMO_THREADS`` (default 4), ``FENNEC_DEMO_PRELOAD`` (``1`` to preload),
``FENNEC_DEMO_ACCESSLOG`` (default ``-`` = stdout; empty disables it),
``FENNEC_DEMO_LOG_LEVEL`` (default ``info``), ``FENNEC_DEMO_CONTROL_SOCKET`` (``1`` to open
gunicorn's control socket). The app itself reads ``FLASK_*`` variables
(see ``demo/app.py``).
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return value in {"1", "true", "yes", "on"} if value else default


bind = os.environ.get("FENNEC_DEMO_BIND", "127.0.0.1:8000")

# Threaded workers: most of a request is spent waiting on I/O (Redis, the database), which
# threads overlap well; processes give isolation and use several cores.
worker_class = "gthread"
workers = _env_int("FENNEC_DEMO_WORKERS", 2)
threads = _env_int("FENNEC_DEMO_THREADS", 4)

# A worker silent for 30 s is killed and replaced; on shutdown or reload, workers get up to
# 10 s to finish their requests. Keep-alive a little above a typical proxy's idle timeout.
timeout = 30
graceful_timeout = 10
keepalive = 5

# Preloading imports the app in the master, then forks. That is safe with flask-fennec-cache,
# which is fork-safe by design (no Redis connection or lock is shared across a fork: redis-py
# pools reset themselves in a process with a new pid, and the package rebuilds its per-process
# state after fork), and the demo's SQLite module opens a connection per call. It stays off by
# default so that each worker builds its own app and logs its own startup warnings;
# FENNEC_DEMO_PRELOAD=1 trades that for faster, copy-on-write worker boots.
preload_app = _env_bool("FENNEC_DEMO_PRELOAD", False)

# Heartbeat files in RAM rather than on a possibly slow or full disk (the Docker advice).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

accesslog = os.environ.get("FENNEC_DEMO_ACCESSLOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("FENNEC_DEMO_LOG_LEVEL", "info")
# The default format plus the worker's pid and the request time in milliseconds.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(p)s %(M)sms'

# gunicorn >= 25.1 opens a control socket for `gunicornc` at one fixed per-user path
# ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl), which two instances (a dev copy
# and a test run, say) would fight over. Off unless FENNEC_DEMO_CONTROL_SOCKET=1; older gunicorn
# versions ignore the setting.
control_socket_disable = not _env_bool("FENNEC_DEMO_CONTROL_SOCKET", False)

# Bound request lines and headers (the app itself caps bodies at 16 KiB).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
