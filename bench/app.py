"""The tiny Flask app served by gunicorn in the throughput scenario.

Every view answers the same JSON body: ``/const`` from a constant, the others through a cache
(all hits once warm). Started as ``gunicorn "bench.app:create_app()"`` with the private Redis
URL in ``FENNEC_BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response

from flask_fennec_cache import FennecCache, RedisCache, cache

from .values import compact, json_value

__all__ = ["BODY_BYTES", "VIEWS", "VIEW_PREFIX", "create_app"]

BODY_BYTES = 1_000
VIEWS = {
    "const": "/const",
    "fennec": "/fennec",
    "flask_caching": "/flask-caching",
    "raw": "/raw",
    "fennec_near": "/fennec-near",
}


TTL = 600
VIEW_PREFIX = "bench:view:"


def create_app() -> Flask:
    from flask_caching import Cache

    url = os.environ["FENNEC_BENCH_REDIS_URL"]
    body = compact(json_value(BODY_BYTES))
    app = Flask("bench_app")
    app.config.update(
        FENNEC_CACHE_URL=url,
        FENNEC_CACHE_PREFIX=VIEW_PREFIX,
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=url,
        CACHE_KEY_PREFIX="bench:fcview:",
    )
    fennec = FennecCache(app)
    flask_caching = Cache(app)
    client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)

    def respond() -> Response:
        return Response(body, mimetype="application/json")

    @app.get(VIEWS["const"])
    def const() -> Response:
        return respond()

    @app.get(VIEWS["fennec"])
    @fennec.cache(ttl=TTL)
    def fennec_view() -> Response:
        return respond()

    @app.get(VIEWS["flask_caching"])
    @flask_caching.cached(timeout=TTL)
    def flask_caching_view() -> Response:
        return respond()

    @app.get(VIEWS["raw"])
    def raw_view() -> Response:
        data = client.get("bench:rawview")
        if data is None:
            data = body
            client.set("bench:rawview", data, ex=TTL)
        return Response(data, mimetype="application/json")

    # Its own backend (one per gunicorn worker: the app is built after the fork), so that the
    # near cache is on for this view only.
    near = RedisCache(url, prefix="bench:nearview:", near_cache=True)

    @app.get(VIEWS["fennec_near"])
    @cache(ttl=TTL, backend=near)
    def fennec_near_view() -> Response:
        return respond()

    return app
