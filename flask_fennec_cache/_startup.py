"""What ``init_app`` checks once an app's backend is built: that Redis answers, that its
eviction policy lets a full Redis keep taking writes, and that a ``memory://`` cache served by
several worker processes is not mistaken for a shared one."""

from __future__ import annotations

import inspect
import os
import sys
import threading

from ._connect import make_client, redact_url
from ._ratelog import logger
from ._redis_info import policy_warnings, read_servers
from .backend import RedisCache
from .config import Settings

__all__ = ["check_at_startup", "probe", "probe_server", "worker_processes"]


def check_at_startup(backend: RedisCache, settings: Settings) -> None:
    """Log one WARNING if Redis does not answer, or if its ``maxmemory-policy`` is
    ``noeviction`` under a ``maxmemory`` (or if a ``memory://`` cache is served by several
    workers); never raises, and leaves no connection behind."""
    if not backend.shared:
        workers = worker_processes()
        if workers != 1:
            count = "several" if workers is None else str(workers)
            logger.warning(
                "FENNEC_CACHE_URL is %s, an in-process cache, and this server runs %s worker "
                "processes: each worker has its own cache and statistics, nothing is shared "
                "between them; set FENNEC_CACHE_URL=redis://... to share one Redis",
                redact_url(backend.url),
                count,
            )
        return
    if not settings.startup_check:
        return
    reason, warnings = probe_server(settings)
    for warning in warnings:
        logger.warning("FENNEC_CACHE_URL %s: %s.", redact_url(settings.url), warning)
    if reason is not None:
        then = (
            "cached calls run their loaders without the cache until it answers (fail-open)"
            if settings.fail_open
            else "cache operations raise CacheUnavailable until it answers "
            "(FENNEC_CACHE_FAIL_OPEN is False)"
        )
        logger.warning(
            "FENNEC_CACHE_URL %s: Redis does not answer at startup: %s. The app starts anyway; %s.",
            redact_url(settings.url),
            reason.rstrip("."),
            then,
        )


def probe(settings: Settings) -> str | None:
    """Why Redis did not answer one PING, or None when it did (see :func:`probe_server`)."""
    return probe_server(settings)[0]


def probe_server(settings: Settings) -> tuple[str | None, list[str]]:
    """Why Redis did not answer one PING (None when it did), and the warnings its ``INFO``
    calls for (``noeviction`` under a ``maxmemory``; none when INFO is refused).

    The PING and the INFO go through a client of its own, on its one connection, closed
    afterwards: the backend's pool stays empty, so nothing is inherited by forked workers. It
    waits at most twice the connect plus the socket timeout (a name lookup is not bound by the
    socket timeouts).
    """
    client = make_client(
        settings.url,
        socket_timeout=settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
        max_connections=1,
        health_check_interval=settings.health_check_interval,
        tls_ca_certs=settings.tls_ca_certs,
        tls_certfile=settings.tls_certfile,
        tls_keyfile=settings.tls_keyfile,
    )
    outcome: list[str | None] = []
    warnings: list[str] = []

    def ping() -> None:
        try:
            client.ping()
        except Exception as exc:  # only redis-py runs here: whatever it raises is the reason
            outcome.append(f"{type(exc).__name__}: {exc}")
        else:
            try:
                warnings.extend(policy_warnings(read_servers(client)))
            except Exception:  # a server that answers PING is enough to start
                pass
            outcome.append(None)
        finally:
            client.close()

    limit = 2 * (settings.connect_timeout + settings.socket_timeout)
    thread = threading.Thread(target=ping, name="fennec-startup-probe", daemon=True)
    thread.start()
    thread.join(limit)
    if not outcome:
        return f"no answer within {limit:g} s (a slow name lookup, or a server that hangs)", []
    return outcome[0], list(warnings)


def worker_processes() -> int | None:
    """How many worker processes the forking server running this code has: 1 outside one,
    None under one whose count cannot be found.

    Under gunicorn (which sets ``SERVER_SOFTWARE``) the app is built either in a worker (the
    arbiter's ``spawn_worker`` is on the stack) or, with ``--preload``, in the arbiter's
    ``setup``: either way a gunicorn object on the stack knows the count. uWSGI exposes it as
    ``uwsgi.numproc``.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        count = getattr(uwsgi, "numproc", None)
        return count if isinstance(count, int) and count > 0 else None
    if not os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return 1
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__module__.startswith("gunicorn."):
            count = getattr(owner, "num_workers", None)
            if not isinstance(count, int):
                count = getattr(getattr(owner, "cfg", None), "workers", None)
            if isinstance(count, int) and count > 0:
                return count
        frame = frame.f_back
    return None
