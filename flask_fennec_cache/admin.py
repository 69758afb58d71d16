"""The admin blueprint: statistics, clearing, health, Prometheus metrics and a live dashboard."""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ._prometheus import CONTENT_TYPE, render
from .decorators import current_backend
from .errors import CacheUnavailable, ConfigurationError
from .extension import settings_of

__all__ = ["make_blueprint"]

MAX_BODY_BYTES = 4096
# The dashboard loads only its own script and stylesheet and fetches only this blueprint.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def make_blueprint() -> Blueprint:
    """A fresh admin blueprint: ``GET stats``, ``POST clear``, ``GET health``, ``GET metrics``
    (Prometheus text) and ``GET /`` (the dashboard, with its files under ``assets/``)."""
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
            counters = backend.shared_counters()
        except CacheUnavailable:  # fail-closed backends raise; a scrape must still answer
            counters = None
        body = render(counters, backend.breaker_state, os.getpid(), backend.near_cache_state())
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
        refused = _refuse_unauthorised()
        if refused is not None:
            return refused
        request.max_content_length = MAX_BODY_BYTES  # also bounds chunked bodies
        try:
            pattern = _pattern_from_body()
        except RequestEntityTooLarge:
            return _error(f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
        if isinstance(pattern, tuple):
            return pattern
        backend = current_backend()
        try:
            removed = backend.try_clear(pattern)
        except ConfigurationError as exc:
            return _error(f"invalid pattern: {exc}", 400)
        if removed is None:
            return _error("the cache is unavailable: nothing or not everything was cleared", 503)
        backend.reset_stats()
        return jsonify({"message": "Cache cleared", "keys_deleted": removed}), 200

    @admin.errorhandler(CacheUnavailable)
    def unavailable(exc: CacheUnavailable) -> tuple[Response, int]:
        return _error(f"the cache is unavailable: {exc}", 503)

    return admin


def _pattern_from_body() -> str | tuple[Response, int]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return "*"
    body: Any = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return _error('body must be a JSON object like {"pattern": "user:*"}', 400)
    unknown = set(body) - {"pattern"}
    if unknown:
        return _error(f"unknown field(s): {', '.join(sorted(unknown))}", 400)
    pattern = body.get("pattern", "*")
    if not isinstance(pattern, str) or not pattern:
        return _error('"pattern" must be a non-empty string', 400)
    return pattern


def _refuse_unauthorised() -> tuple[Response, int] | None:
    settings = settings_of(current_app)
    token = settings.admin_token
    if token is None:
        if settings.admin_open:
            return None
        return _error(
            "admin endpoints that change state are closed: set FENNEC_CACHE_ADMIN_TOKEN "
            "(or FENNEC_CACHE_ADMIN_OPEN = True in development)", 403
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    response, status = _error("a valid 'Authorization: Bearer <token>' header is required", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="fennec-cache"'
    return response, status


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": message}), status
