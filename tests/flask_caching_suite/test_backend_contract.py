"""Flask-Caching's backend contract (``GenericCacheTests`` of its test_backend_cache.py, run
unmodified) against ``cache.cache`` of a compat Cache on a real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flask_fennec_cache.compat import Cache

from ._upstream import load_module

GenericCacheTests: Any = load_module("test_backend_cache").GenericCacheTests


class TestCompatBackend(GenericCacheTests):  # type: ignore[misc]
    """``sleep`` is the suite's Redis-aware clock (``_can_use_fast_sleep`` stays True)."""

    @pytest.fixture
    def make_cache(self, cache: Cache) -> Callable[[], Any]:
        return lambda: cache.cache
