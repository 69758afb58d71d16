"""The admin blueprint: statistics, clearing, health, Prometheus metrics and a live dashboard."""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ._current import current_backend, settings_of
from ._prometheus import CONTENT_TYPE, render, render_redis
from .errors import CacheUnavailable, ConfigurationError
from .unavailable import retry_after_seconds

__all__ = ["make_blueprint"]

MAX_BODY_BYTES = 4096
# The dashboard loads only its own script and stylesheet and fetches only this blueprint.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def make_blueprint() -> Blueprint:
    """A fresh admin blueprint: ``GET stats``, ``POST clear``, ``POST stats/reset``,
    ``GET health``, ``GET metrics`` (Prometheus text) and ``GET /`` (the dashboard, with its
    files under ``assets/``).

    The two ``POST`` endpoints change state: they need the bearer token when
    ``FENNEC_CACHE_ADMIN_TOKEN`` is set (or ``FENNEC_CACHE_ADMIN_OPEN = True`` without one),
    and, without a token, a ``Content-Type: application/json`` body, which no web page can
    make a browser send to another site without the site's consent (a CORS preflight).
    """
    admin = Blueprint(
        "fennec_cache_admin", __name__, static_folder="static", static_url_path="/assets"
    )

    @admin.get("/")
    def dashboard() -> Response:
        response = admin.send_static_file("dashboard.html")
        response.headers["Content-Security-Policy"] = DASHBOARD_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @admin.get("/metrics")
    def metrics() -> Response:
        backend = current_backend()
        try:
            counters = backend.monitor.shared_snapshot()  # the totals and every name's
        except CacheUnavailable:  # fail-closed backends raise; a scrape must still answer
            counters = None
        body = render(counters, backend.breaker_state, os.getpid(), backend.near_cache_state())
        body += render_redis(backend.monitor.redis_info.state(reachable=counters is not None))
        return Response(body, content_type=CONTENT_TYPE)

    @admin.get("/stats")
    def stats() -> Response:
        return jsonify(current_backend().get_stats())

    @admin.get("/health")
    def health() -> tuple[Response, int]:
        report = current_backend().health()
        return jsonify(report), 200 if report["status"] == "healthy" else 503

    @admin.post("/clear")
    def clear() -> tuple[Response, int]:
        body = _state_change_body('{"pattern": "user:*"}', "pattern")
        if isinstance(body, tuple):
            return body
        pattern = body.get("pattern", "*")
        if not isinstance(pattern, str) or not pattern:
            return _error('"pattern" must be a non-empty string', 400)
        try:
            removed = current_backend().try_clear(pattern)
        except ConfigurationError as exc:
            return _error(f"invalid pattern: {exc}", 400)
        if removed is None:
            return _unavailable("nothing or not everything was cleared")
        return jsonify({"message": "Cache cleared", "keys_deleted": removed}), 200

    @admin.post("/stats/reset")
    def reset_stats() -> tuple[Response, int]:
        body = _state_change_body("{}")
        if isinstance(body, tuple):
            return body
        if not current_backend().reset_stats():
            return _unavailable("the statistics were not reset")
        return jsonify({"message": "Statistics reset"}), 200

    @admin.errorhandler(CacheUnavailable)
    def unavailable(exc: CacheUnavailable) -> tuple[Response, int]:
        return _unavailable(str(exc))

    return admin


def _state_change_body(example: str, *fields: str) -> dict[str, Any] | tuple[Response, int]:
    """The JSON object a state-changing request sent (``{}`` for an empty body), or the error
    answer: 403/401 (not authorised), 415 (a request any web page could send), 413, 400."""
    refused = _refuse_unauthorised() or _refuse_simple_request()
    if refused is not None:
        return refused
    request.max_content_length = MAX_BODY_BYTES  # also bounds chunked bodies
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        return _error(f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
    if not raw.strip():
        return {}
    body: Any = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return _error(f"body must be a JSON object like {example}", 400)
    unknown = set(body) - set(fields)
    if unknown:
        return _error(f"unknown field(s): {', '.join(sorted(unknown))}", 400)
    return body


def _refuse_unauthorised() -> tuple[Response, int] | None:
    settings = settings_of(current_app)
    token = settings.admin_token
    if token is None:
        if settings.admin_open:
            return None
        return _error(
            "admin endpoints that change state are closed: set FENNEC_CACHE_ADMIN_TOKEN "
            "(or FENNEC_CACHE_ADMIN_OPEN = True in development)",
            403,
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    response, status = _error("a valid 'Authorization: Bearer <token>' header is required", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="fennec-cache"'
    return response, status


def _refuse_simple_request() -> tuple[Response, int] | None:
    """Refuse a request that any web page could make a browser send (a CORS "simple request":
    a form, plain text or no body), unless it carries the admin token.

    A JSON content type or an ``Authorization`` header makes the browser ask first (a
    preflight), which this blueprint never grants; the token itself comes with
    ``Authorization: Bearer``, so only requests without a token need to be JSON. A browser
    may add ``Authorization: Basic`` on its own, which is why any ``Authorization`` header is
    not enough.
    """
    if settings_of(current_app).admin_token is not None or request.is_json:
        return None
    sent = request.mimetype or "no Content-Type"
    return _error(
        f"{request.method} {request.path} changes state, so it takes only JSON (any web page "
        f"can make a browser send a form, text or empty POST here; got {sent}): send the "
        "header 'Content-Type: application/json' and a JSON object body, e.g. "
        "curl -X POST -H 'Content-Type: application/json' -d '{}' <url>",
        415,
    )


def _unavailable(detail: str) -> tuple[Response, int]:
    response, status = _error(f"the cache is unavailable: {detail}", 503)
    response.headers["Retry-After"] = str(retry_after_seconds())
    return response, status


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": message}), status
