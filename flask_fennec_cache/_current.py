"""The current Flask app's cache: the backend and the settings FennecCache stored on it.

The extension writes them into ``app.extensions``; the decorators, the admin blueprint, the
CLI and the error handler read them from here, so none of them depends on another.
"""

from __future__ import annotations

from typing import cast

from flask import Flask, current_app, has_app_context

from .backend import RedisCache
from .config import Settings
from .errors import NoBackendError

__all__ = ["EXTENSION_KEY", "SETTINGS_KEY", "current_backend", "settings_of"]

#: ``app.extensions`` key of the app's :class:`RedisCache`.
EXTENSION_KEY = "fennec_cache"
#: ``app.extensions`` key of the :class:`~flask_fennec_cache.config.Settings` read for the app.
SETTINGS_KEY = "fennec_cache_settings"


def current_backend() -> RedisCache:
    """The backend of the current Flask app (``app.extensions["fennec_cache"]``)."""
    if not has_app_context():
        raise NoBackendError(
            "no cache backend: pass backend= to @cache, or call inside a Flask app context "
            "of an app initialised with FennecCache"
        )
    backend = current_app.extensions.get(EXTENSION_KEY)
    if backend is None:
        raise NoBackendError(
            f"app {current_app.name!r} has no cache backend: "
            "did you forget FennecCache.init_app(app)?"
        )
    return cast(RedisCache, backend)


def settings_of(app: Flask) -> Settings:
    """The parsed configuration FennecCache read for *app*."""
    settings: Settings = app.extensions[SETTINGS_KEY]
    return settings
