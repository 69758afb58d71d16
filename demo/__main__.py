"""``python -m demo``: the demo on Flask's development server at http://127.0.0.1:8000.

Without ``FLASK_FENNEC_CACHE_URL`` it uses a Redis answering on localhost:6379 if there is
one, and otherwise the embedded ``memory://`` cache (``create_app`` says so when it starts).
"""

from __future__ import annotations

import os
import sys

import redis

from demo.app import create_app

LOCAL_REDIS = "redis://localhost:6379/0"


def _local_redis_answers() -> bool:
    client = redis.Redis.from_url(LOCAL_REDIS, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def main() -> None:
    """Run the development server (threaded); use gunicorn for anything else."""
    if not os.environ.get("FLASK_FENNEC_CACHE_URL") and _local_redis_answers():
        os.environ["FLASK_FENNEC_CACHE_URL"] = LOCAL_REDIS
        print(f"demo: using the Redis server at {LOCAL_REDIS}", file=sys.stderr)
    create_app().run(host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
