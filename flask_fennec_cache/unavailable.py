"""Fail-closed pages: answer :class:`~flask_fennec_cache.CacheUnavailable` with a 503."""

from __future__ import annotations

import math

from flask import Response, current_app, jsonify, request

from ._current import SETTINGS_KEY
from ._ratelog import RateLimitedLog
from .errors import CacheUnavailable

__all__ = ["handle_cache_unavailable", "retry_after_seconds"]

_log = RateLimitedLog()

UNAVAILABLE_MESSAGE = "the service is temporarily unavailable: its cache cannot be reached"


def handle_cache_unavailable(exc: CacheUnavailable) -> Response:
    """A Flask error handler: ``503 Service Unavailable`` with ``Retry-After`` for *exc*.

    The body is JSON, ``{"error": ..., "retry_after": seconds}``, when the request is JSON or
    its ``Accept`` header prefers JSON, and one line of plain text otherwise; it never shows
    the Redis error (which names hosts and ports). The cause is logged as a WARNING on the
    ``flask_fennec_cache`` logger, once per cause every 10 seconds at most, without a
    traceback. ``FENNEC_CACHE_UNAVAILABLE_HANDLER = True`` registers it for the whole app; to
    cover only some views, register it yourself::

        blueprint.register_error_handler(CacheUnavailable, handle_cache_unavailable)

    .. versionadded:: 0.1
    """
    seconds = retry_after_seconds()
    cause = exc.__cause__
    _log.warning(
        f"unavailable:{type(cause).__name__ if cause is not None else 'skipped'}",
        f"answering 503 to {request.method} {request.path} (FENNEC_CACHE_FAIL_OPEN is False): "
        f"{exc}",
    )
    if _prefers_json():
        response = jsonify({"error": UNAVAILABLE_MESSAGE, "retry_after": seconds})
    else:
        response = Response(
            f"503 Service Unavailable: {UNAVAILABLE_MESSAGE}; retry in {seconds} s.\n",
            mimetype="text/plain",
        )
    response.status_code = 503
    response.headers["Retry-After"] = str(seconds)
    response.headers["Cache-Control"] = "no-store"
    return response


def retry_after_seconds() -> int:
    """Whole seconds a client should wait: the app's ``FENNEC_CACHE_BREAKER_COOLDOWN``, rounded
    up (at least 1), after which the circuit breaker lets a request probe Redis again."""
    settings = current_app.extensions.get(SETTINGS_KEY)
    cooldown = settings.breaker_cooldown if settings is not None else 1.0
    return max(1, math.ceil(cooldown))


def _prefers_json() -> bool:
    if request.is_json:
        return True
    best = request.accept_mimetypes.best
    return best is not None and (best == "application/json" or best.endswith("+json"))
