"""FennecCache: the Flask extension that builds each app's backend from its configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask

from ._current import EXTENSION_KEY, SETTINGS_KEY, current_backend
from ._current import settings_of as settings_of  # re-exported for existing imports
from ._flight import REFRESH_POOL
from ._startup import check_at_startup
from .backend import RedisCache
from .config import apply_defaults, read_settings, store_effective
from .decorators import CacheDecorator, CacheOptions
from .decorators import cache as _cache
from .errors import FennecCacheError
from .fragments import register_fragments
from .keys import KeySpec

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["FennecCache"]


class FennecCache:
    """Redis caching for Flask apps.

    ``FennecCache(app)`` or, with an app factory, ``fennec = FennecCache()`` then
    ``fennec.init_app(app)``. One extension object serves any number of apps: each app gets its
    own :class:`RedisCache`, built from its ``FENNEC_CACHE_*`` configuration and kept in
    ``app.extensions["fennec_cache"]``. When ``FENNEC_CACHE_ADMIN_URL_PREFIX`` is set, the admin
    blueprint (stats, clear, health) is mounted there.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure caching for *app*; raises ConfigurationError for a bad setting.

        Every ``FENNEC_CACHE_*`` key of ``app.config`` then holds its effective, parsed value.
        Unless ``FENNEC_CACHE_STARTUP_CHECK`` is False, Redis is sent one PING (bounded by the
        timeouts): if it does not answer, one WARNING says why, and the app starts anyway.
        """
        if EXTENSION_KEY in app.extensions:
            raise FennecCacheError(
                f"FennecCache is already initialised on app {app.name!r}: "
                "call init_app once per app"
            )
        apply_defaults(app.config)
        settings = read_settings(app.config)
        backend = RedisCache(**settings.backend_options())
        REFRESH_POOL.resize(settings.refresh_workers)
        store_effective(app.config, settings)
        app.extensions[EXTENSION_KEY] = backend
        app.extensions[SETTINGS_KEY] = settings
        check_at_startup(backend, settings)
        register_fragments(app)  # the {% cache %} Jinja tag
        if settings.admin_url_prefix:
            from .admin import make_blueprint

            app.register_blueprint(make_blueprint(), url_prefix=settings.admin_url_prefix)
        if settings.unavailable_handler:
            from .errors import CacheUnavailable
            from .unavailable import handle_cache_unavailable

            app.register_error_handler(CacheUnavailable, handle_cache_unavailable)

    @property
    def backend(self) -> RedisCache:
        """The :class:`RedisCache` of the current app (needs an app context)."""
        return current_backend()

    def cache(
        self,
        ttl: float | None = None,
        *,
        key: KeySpec = None,
        unless: Callable[[], bool] | None = None,
        cache_none: bool = False,
        **options: Unpack[CacheOptions],
    ) -> CacheDecorator:
        """:func:`~flask_fennec_cache.cache` with the current app's backend; same options."""
        return _cache(ttl=ttl, key=key, unless=unless, cache_none=cache_none, **options)
