"""The Fennec caching example, as a Flask app (the seed's ``server.py``).

Run it with the dev server (``python -m demo``) or under gunicorn::

    gunicorn -c demo/gunicorn.conf.py "demo.app:create_app()"

Configuration comes from the environment through ``app.config.from_prefixed_env()``:

- ``FLASK_FENNEC_CACHE_URL``: the Redis URL; unset means ``memory://`` (per process!).
- ``FLASK_FENNEC_CACHE_ADMIN_TOKEN``: bearer token (16+ characters) for ``POST /cache/clear``;
  unset means open, for JSON requests only (``-H 'Content-Type: application/json' -d '{}'``).
- ``FLASK_DEMO_DB_DELAY``: seconds a simulated slow query takes (default 1.0; writes take half).
- ``FLASK_DEMO_DB_PATH``: the SQLite file (default: ``demo.sqlite3`` in the instance folder).

Any other ``FLASK_FENNEC_CACHE_*`` variable reaches the extension the same way, parsed as JSON
(``FLASK_FENNEC_CACHE_NEAR_CACHE=true`` turns the near cache on).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response as BaseResponse

from demo import db
from flask_fennec_cache import CacheAside, FennecCache, WriteThrough, cache

__all__ = ["VIEW_TAG", "create_app", "fennec", "get_user_view", "load_user"]

fennec = FennecCache()

#: Seconds a user entry lives in the cache, whichever pattern wrote it.
USER_TTL = 300
#: Seconds a whole ``/users-view/<id>`` response lives in the cache.
VIEW_TTL = 60
#: The tag of every cached ``/users-view/<id>`` response; ``POST /users`` invalidates it.
VIEW_TAG = "user-views"
#: Largest request body accepted (bytes); bigger bodies get 413.
MAX_BODY_BYTES = 16 * 1024
#: The key ``/benchmark`` measures with, apart from the ``user:*`` entries.
BENCHMARK_KEY = "benchmark:user:1"
#: SQLite's largest INTEGER PRIMARY KEY.
MAX_USER_ID = 2**63 - 1
_FIELDS = frozenset({"id", "name", "email"})

_T = TypeVar("_T")


def _db_path() -> str:
    return str(current_app.config["DEMO_DB_PATH"])


def _db_delay() -> float:
    return float(current_app.config["DEMO_DB_DELAY"])


def _ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``perf_counter`` reading), rounded to 2 decimals."""
    return round((time.perf_counter() - start) * 1000.0, 2)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def fetch_user(user_id: int) -> db.User | None:
    """The slow database query every pattern below hides behind the cache."""
    if not 0 < user_id <= MAX_USER_ID:  # SQLite could not even hold such an id
        return None
    return db.get_user(_db_path(), user_id, _db_delay())


@cache(ttl=USER_TTL, key="user:{user_id}")
def load_user(user_id: int) -> db.User | None:
    """A user, memoised under ``user:{user_id}``; ``None`` (unknown user) is not cached."""
    return fetch_user(user_id)


def _timed_aside(key: str, loader: Callable[[], _T]) -> tuple[_T, bool, float]:
    """Cache-aside read of ``key``: ``(value, cached, duration_ms)``.

    ``cached`` is the cache's own answer (``CacheAside.lookup``): ``False`` exactly when the
    loader ran, with no second round trip to find out.
    """
    start = time.perf_counter()
    result = CacheAside(fennec.backend, ttl=USER_TTL).lookup(key, loader)
    return result.value, result.hit, _ms(start)


def _is_text(value: Any) -> bool:
    """A string that has a UTF-8 form (JSON escapes can smuggle in lone surrogates)."""
    if not isinstance(value, str):
        return True  # the type checks below name the problem
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate_user(payload: Any) -> db.User | str:
    """Return the user ``payload`` describes, or a message naming what is wrong with it."""
    if not isinstance(payload, dict):
        return "Request body must be a JSON object"
    missing = sorted(_FIELDS - payload.keys())
    if missing:
        return f"Missing field(s): {', '.join(missing)}"
    extra = sorted(str(k) for k in payload.keys() - _FIELDS)
    if extra:
        return f"Unexpected field(s): {', '.join(extra)}"
    user_id, name, email = payload["id"], payload["name"], payload["email"]
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        return "Field 'id' must be an integer"
    if not 0 < user_id <= MAX_USER_ID:
        return f"Field 'id' must be between 1 and {MAX_USER_ID}"
    if not isinstance(name, str):
        return "Field 'name' must be a string"
    if not _is_text(name) or not _is_text(email):
        return "Fields 'name' and 'email' must be valid Unicode text (no lone surrogates)"
    name = name.strip()
    if not 1 <= len(name) <= 100:
        return "Field 'name' must be 1 to 100 characters long"
    if not isinstance(email, str):
        return "Field 'email' must be a string"
    email = email.strip()
    if not 3 <= len(email) <= 254:
        return "Field 'email' must be 3 to 254 characters long"
    if "@" not in email:
        return "Field 'email' must contain '@'"
    return {"id": user_id, "name": name, "email": email}


def get_user(user_id: int) -> tuple[Response, int]:
    """``GET /users/<id>``: the ``@cache`` decorator; ``cached`` is what the cache says."""
    start = time.perf_counter()
    result = load_user.lookup(user_id)
    duration = _ms(start)
    if result.value is None:
        return _error(404, f"User {user_id} not found")
    return jsonify(user=result.value, cached=result.hit, duration_ms=duration), 200


def get_user_aside(user_id: int) -> tuple[Response, int]:
    """``GET /users-aside/<id>``: the cache-aside pattern on the same ``user:{id}`` key."""
    user, cached, duration = _timed_aside(f"user:{user_id}", lambda: fetch_user(user_id))
    if user is None:
        return _error(404, f"User {user_id} not found")
    return jsonify(user=user, cached=cached, duration_ms=duration), 200


@fennec.cache(ttl=VIEW_TTL, tags=(VIEW_TAG,))
def get_user_view(user_id: int) -> tuple[Response, int]:
    """``GET /users-view/<id>``: the whole response cached by ``@fennec.cache``.

    Hits are the stored response, byte for byte (the same ``rendered_at``), with ``X-Cache``,
    ``ETag`` (``If-None-Match`` gets a 304) and ``Age``. A 404 is not cached (only 2xx are).
    """
    user = fetch_user(user_id)
    if user is None:
        return _error(404, f"User {user_id} not found")
    rendered_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return jsonify(user=user, rendered_at=rendered_at), 200


def _invalidate_user_views() -> None:
    """Drop every cached ``/users-view/<id>`` response (retried once; a failure is logged,
    and those responses may then be served for up to ``VIEW_TTL`` seconds)."""
    for _ in range(2):
        if fennec.backend.invalidate_tags(VIEW_TAG):
            return
    current_app.logger.warning(
        "could not invalidate the cached /users-view pages (Redis unreachable): "
        "they may show the old user for up to %s s",
        VIEW_TTL,
    )


def create_user() -> tuple[Response, int]:
    """``POST /users``: validate, write to SQLite, then to the cache (write-through), then
    drop the cached ``/users-view`` responses."""
    if not request.is_json:
        return _error(400, "Content-Type must be application/json")
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        payload = json.loads(raw)
    except ValueError:  # also covers bad UTF-8 (UnicodeDecodeError)
        return _error(400, "Request body is not valid JSON")
    user = _validate_user(payload)
    if isinstance(user, str):
        return _error(400, user)
    path, delay = _db_path(), _db_delay() / 2
    created: bool = WriteThrough(fennec.backend, ttl=USER_TTL).set(
        f"user:{user['id']}", user, writer=lambda u: db.save_user(path, u, delay)
    )
    _invalidate_user_views()
    if created:
        return jsonify(user=user, message="User created"), 201
    return jsonify(user=user, message="User updated"), 200


def benchmark() -> tuple[Response, int]:
    """``GET /benchmark``: the slow query, then a cache miss and a cache hit on a private key."""
    start = time.perf_counter()
    fetch_user(1)
    uncached_ms = _ms(start)
    fennec.backend.delete(BENCHMARK_KEY)
    _, _, miss_ms = _timed_aside(BENCHMARK_KEY, lambda: fetch_user(1))
    _, _, hit_ms = _timed_aside(BENCHMARK_KEY, lambda: fetch_user(1))
    # Like the seed, the speedup is the ratio of the numbers shown (a 0.00 ms hit counts as 0.01).
    speedup = round(uncached_ms / max(hit_ms, 0.01), 2)
    return (
        jsonify(
            uncached_ms=uncached_ms,
            cache_miss_ms=miss_ms,
            cache_hit_ms=hit_ms,
            speedup=speedup,
        ),
        200,
    )


def _http_error(error: HTTPException) -> BaseResponse:
    """Every HTTP error as JSON, keeping its status and headers (``Allow`` on a 405)."""
    response = error.get_response()
    response.set_data(json.dumps({"error": error.description or error.name}))
    response.content_type = "application/json"
    return response


def _server_error(error: InternalServerError) -> tuple[Response, int]:
    """Unhandled exceptions (already logged by Flask) answer a generic JSON 500."""
    return _error(500, "Internal server error")


def _configure(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Defaults, then ``FLASK_*`` environment variables, then ``test_config``."""
    app.config.from_mapping(
        DEMO_DB_DELAY=1.0,
        DEMO_DB_PATH=str(Path(app.instance_path) / "demo.sqlite3"),
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.config.from_prefixed_env()
    # from_prefixed_env() parses values as JSON: keep strings that must stay strings verbatim
    # (a token "12345" would otherwise become an int, "true" a bool).
    for name in ("FENNEC_CACHE_URL", "FENNEC_CACHE_ADMIN_TOKEN", "DEMO_DB_PATH"):
        value = os.environ.get(f"FLASK_{name}")
        if value is not None:
            app.config[name] = value
    if test_config is not None:
        app.config.update(test_config)

    delay = float(app.config["DEMO_DB_DELAY"])
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"DEMO_DB_DELAY must be a number of seconds >= 0, got {delay!r}")
    app.config["DEMO_DB_DELAY"] = delay

    if not app.config.get("FENNEC_CACHE_URL"):
        app.config["FENNEC_CACHE_URL"] = "memory://"
        app.logger.warning(
            "FLASK_FENNEC_CACHE_URL is not set: using the in-process memory:// cache. "
            "It is per process: gunicorn workers do not share it. "
            "Set FLASK_FENNEC_CACHE_URL=redis://... to share one Redis."
        )
    if app.config.get("FENNEC_CACHE_ADMIN_TOKEN"):
        app.config["FENNEC_CACHE_ADMIN_OPEN"] = False
        app.logger.info("Cache admin: POST /cache/clear needs the bearer token.")
    else:
        app.config["FENNEC_CACHE_ADMIN_TOKEN"] = None
        app.config.setdefault("FENNEC_CACHE_ADMIN_OPEN", True)
        if app.config["FENNEC_CACHE_ADMIN_OPEN"]:
            app.logger.warning(
                "FLASK_FENNEC_CACHE_ADMIN_TOKEN is not set: POST /cache/clear is open to anyone. "
                "Set a token before exposing this server."
            )


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the demo app; ``test_config`` overrides the environment."""
    app = Flask(__name__)
    _configure(app, test_config)
    db.init_db(app.config["DEMO_DB_PATH"])
    fennec.init_app(app)

    app.add_url_rule("/users/<int:user_id>", view_func=get_user, methods=["GET"])
    app.add_url_rule("/users-aside/<int:user_id>", view_func=get_user_aside, methods=["GET"])
    app.add_url_rule("/users-view/<int:user_id>", view_func=get_user_view, methods=["GET"])
    app.add_url_rule("/users", view_func=create_user, methods=["POST"])
    app.add_url_rule("/benchmark", view_func=benchmark, methods=["GET"])
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _server_error)
    return app
