"""The admin blueprint: statistics, clearing and health over HTTP, with JSON answers."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .decorators import current_backend
from .errors import ConfigurationError
from .extension import settings_of

__all__ = ["make_blueprint"]

MAX_BODY_BYTES = 4096


def make_blueprint() -> Blueprint:
    """A fresh admin blueprint: ``GET stats``, ``POST clear``, ``GET health``."""
    admin = Blueprint("fennec_cache_admin", __name__)

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
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _error(f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
        pattern = _pattern_from_body()
        if isinstance(pattern, tuple):
            return pattern
        backend = current_backend()
        try:
            removed = backend.clear(pattern)
        except ConfigurationError as exc:
            return _error(f"invalid pattern: {exc}", 400)
        backend.reset_stats()
        return jsonify({"message": "Cache cleared", "keys_deleted": removed}), 200

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
