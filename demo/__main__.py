"""``python -m demo [--host HOST] [--port PORT]``: the demo on Flask's development server.

It listens on http://127.0.0.1:8000 unless ``--port`` (or the ``PORT`` environment variable)
and ``--host`` say otherwise. Without ``FLASK_FENNEC_CACHE_URL`` it uses a Redis answering on
localhost:6379 if there is one, and otherwise the embedded ``memory://`` cache
(``create_app`` says so when it starts).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import redis

from demo.app import create_app

LOCAL_REDIS = "redis://localhost:6379/0"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _local_redis_answers() -> bool:
    client = redis.Redis.from_url(LOCAL_REDIS, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _port(text: str) -> int:
    """A TCP port number, 1 to 65535 (an argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> argparse.Namespace:
    """The command line's host and port; ``PORT`` in *environ* is the port's default."""
    parser = argparse.ArgumentParser(
        prog="python -m demo", description="Run the flask-fennec-cache demo (development server)."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument(
        "--port", type=_port, default=None,
        help=f"default: the PORT environment variable, else {DEFAULT_PORT}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.port is None:
        from_env = environ.get("PORT", "").strip()
        try:
            args.port = _port(from_env) if from_env else DEFAULT_PORT
        except argparse.ArgumentTypeError as exc:
            parser.error(f"PORT environment variable: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the development server (threaded); use gunicorn for anything else."""
    args = parse_args(argv)
    if not os.environ.get("FLASK_FENNEC_CACHE_URL") and _local_redis_answers():
        os.environ["FLASK_FENNEC_CACHE_URL"] = LOCAL_REDIS
        print(f"demo: using the Redis server at {LOCAL_REDIS}", file=sys.stderr)
    create_app().run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
