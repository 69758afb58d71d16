"""Flask-Caching 2.5.1's test modules, unmodified, against ``flask_fennec_cache.compat``.

This replaces their conftest.py: ``flask_caching`` (as those modules import it) is our compat
module, the ``app`` fixture configures ``CACHE_TYPE = "RedisCache"`` on a real redis-server
started by the fixtures in tests/conftest.py, and ``clock`` moves time for Redis too (advancing
it shortens every TTL in that server). The tests listed in ``excluded.txt`` are skipped, each
with its reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import RedisServer
from flask import Flask

from flask_fennec_cache import compat
from flask_fennec_cache._compat_backend import CompatBackend

from ._upstream import (
    MODULES,
    UPSTREAM_DIR,
    UpstreamUnavailable,
    ensure_upstream,
    read_exclusions,
)

try:
    ensure_upstream()
    UPSTREAM_ERROR: str | None = None
except UpstreamUnavailable as exc:  # reported by test_upstream_download.py
    UPSTREAM_ERROR = str(exc)

#: Flask-Caching's SUPPORTED_HASH_FUNCTIONS.
HASH_METHODS: tuple[Callable[..., Any], ...] = (
    hashlib.sha1,
    hashlib.sha224,
    hashlib.sha256,
    hashlib.sha384,
    hashlib.sha512,
    hashlib.md5,
)


def _shim() -> types.ModuleType:
    """What ``import flask_caching`` gives the upstream modules: our compat names."""
    from flask_caching.utils import function_namespace  # only the excluded tests use it

    module = types.ModuleType("flask_caching", "flask_fennec_cache.compat, as flask_caching")
    module.Cache = compat.Cache  # type: ignore[attr-defined]
    module.CachedResponse = compat.CachedResponse  # type: ignore[attr-defined]
    module.make_template_fragment_key = (  # type: ignore[attr-defined]
        compat.make_template_fragment_key
    )
    module.function_namespace = function_namespace  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def _flask_caching_is_compat() -> Iterator[None]:
    """While an upstream module is imported, ``flask_caching`` names the compat module."""
    saved = sys.modules.get("flask_caching")
    _shim()  # imports the real package's utils first, while it is still the real one
    sys.modules["flask_caching"] = _shim()
    try:
        yield
    finally:
        if saved is None:
            sys.modules.pop("flask_caching", None)
        else:
            sys.modules["flask_caching"] = saved


class UpstreamModule(pytest.Module):
    """One of Flask-Caching's test modules, imported with ``flask_caching`` = compat."""

    def _getobj(self) -> Any:
        with _flask_caching_is_compat():
            return super()._getobj()  # type: ignore[no-untyped-call]


def _is_upstream(path: Path) -> bool:
    return path.parent == UPSTREAM_DIR


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect ``.upstream/`` (a dot directory pytest would skip), only its four modules."""
    if collection_path == UPSTREAM_DIR:
        return UPSTREAM_ERROR is not None
    if _is_upstream(collection_path):
        return collection_path.name not in MODULES
    if collection_path.name.startswith(".upstream") or collection_path.name == ".download":
        return True
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    if _is_upstream(module_path) and module_path.name in MODULES:
        return UpstreamModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the excluded upstream tests, each with the reason given in excluded.txt."""
    exclusions = read_exclusions()
    for item in items:
        if not _is_upstream(item.path):
            continue
        name = getattr(item, "originalname", item.name)
        cls = getattr(item, "cls", None)
        owner = cls.__name__ + "::" if cls is not None else ""
        reason = exclusions.get(f"{item.path.name}::{owner}{name}")
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded: {reason}"))


class RedisClock:
    """Flask-Caching's ``clock`` fixture, for Redis: :meth:`advance` moves the clock and
    takes as many seconds off the TTL of every key in the test's server (dropping those whose
    TTL runs out), as if that much time had passed for Redis."""

    def __init__(self, server: RedisServer) -> None:
        self.now = 1_700_000_000.0
        self._client = server.client()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        step = int(seconds * 1000)
        for name in self._client.scan_iter(count=1000):
            left = int(self._client.pttl(name))
            if left < 0:  # no expiry (-1), or gone meanwhile (-2)
                continue
            if left <= step:
                self._client.unlink(name)
            else:
                self._client.pexpire(name, left - step)


@pytest.fixture
def app(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Flask]:
    made = Flask(request.module.__name__, template_folder=str(UPSTREAM_DIR))
    made.testing = True
    made.config.update(
        SECRET_KEY=uuid.uuid4().hex,
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=redis_server.url,
        CACHE_KEY_PREFIX=f"fc-{uuid.uuid4().hex[:8]}:",
    )
    yield made
    for backend in made.extensions.get("cache", {}).values():
        if isinstance(backend, CompatBackend):
            backend.native.close()


@pytest.fixture
def cache(app: Flask) -> compat.Cache:
    return compat.Cache(app)


@pytest.fixture
def clock(redis_server: RedisServer) -> RedisClock:
    return RedisClock(redis_server)


@pytest.fixture(params=HASH_METHODS, ids=[method.__name__ for method in HASH_METHODS])
def hash_method(request: pytest.FixtureRequest) -> Callable[..., Any]:
    method: Callable[..., Any] = request.param
    return method
