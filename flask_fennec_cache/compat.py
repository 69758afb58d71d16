"""Flask-Caching 2.5's API on flask-fennec-cache: switch by changing one import.

``from flask_caching import Cache`` becomes ``from flask_fennec_cache.compat import Cache``;
``CACHE_TYPE = "RedisCache"`` (or ``"redis"``), ``CACHE_REDIS_URL``, ``CACHE_KEY_PREFIX``,
``CACHE_DEFAULT_TIMEOUT`` and the rest of the ``CACHE_*`` keys keep their meaning. What changes
underneath: short socket timeouts, a circuit breaker and fail-open (a frozen or dead Redis
never hangs or fails a request), single flight on misses, every entry signed (a forged entry
is a miss and is never unpickled), statistics shared by every process, and the admin
blueprint and CLI when ``FENNEC_CACHE_ADMIN_URL_PREFIX`` is set. The stored keys and format
differ from Flask-Caching's: see ``docs/migrating.md``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from flask import Flask, Response, current_app, g, has_app_context, request, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from ._compat_backend import CompatBackend, NullBackend
from ._compat_config import CompatSettings, normalize_timeout, read_compat_settings
from ._compat_keys import (
    argument_text,
    function_name,
    function_tag,
    instance_digest,
    instance_segment,
    join_generator,
    make_template_fragment_key,
    query_pairs,
    wants_args,
    wants_extra_args,
)
from ._current import EXTENSION_KEY, SETTINGS_KEY
from ._validate import glob_escape
from .backend import RedisCache
from .config import read_settings
from .errors import ConfigurationError, NoBackendError
from .fragments import FragmentOptions, register_fragments
from .keys import hashed_if_long
from .loading import Deliver, LoadPolicy, NamedParts, get_or_load

__all__ = ["Cache", "CachedResponse", "make_template_fragment_key"]

#: ``app.extensions`` key of every compat Cache's backend on an app (Flask-Caching's).
APP_KEY: Final = "cache"
Backend = CompatBackend | NullBackend


class CachedResponse(Response):
    """A response a ``@cache.cached`` view returns to choose its own timeout."""

    timeout: int | None = None

    def __init__(self, response: Response, timeout: Any) -> None:
        # Adopt the response's state as it is (headers, status, body).
        self.__dict__ = response.__dict__
        self.timeout = normalize_timeout(timeout)


class Cache:
    """Flask-Caching's ``Cache`` on flask-fennec-cache.

    ``Cache(app)``, or ``Cache()`` then ``init_app(app)``; *config* (here or in ``init_app``)
    overrides the app's ``CACHE_*`` keys for this instance. Several instances may serve one
    app, each with its own ``CACHE_KEY_PREFIX``. Bad configuration raises
    :class:`~flask_fennec_cache.ConfigurationError` naming the key.
    """

    def __init__(
        self,
        app: Flask | None = None,
        with_jinja2_ext: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        _check_config(config)
        self.with_jinja2_ext = with_jinja2_ext
        self.config = config
        self._settings: weakref.WeakKeyDictionary[Flask, CompatSettings] = (
            weakref.WeakKeyDictionary()
        )
        self._last_app: weakref.ref[Flask] | None = None
        if app is not None:
            self.init_app(app, config)

    def init_app(self, app: Flask, config: dict[str, Any] | None = None) -> None:
        """Build this instance's backend for *app* from the app's configuration, this
        instance's and *config* (in that order)."""
        _check_config(config)
        merged = dict(app.config)
        merged.update(self.config or {})
        merged.update(config or {})
        settings = read_compat_settings(merged)
        if settings.kind == "null":
            backend: Backend = NullBackend()
            if not settings.no_null_warning:
                import warnings

                warnings.warn(
                    "Flask-Caching: CACHE_TYPE is set to NullCache, caching is effectively "
                    "disabled.",
                    stacklevel=2,
                )
        else:
            backend = CompatBackend(self._native(app, merged, settings), settings.default_timeout)
        app.extensions.setdefault(APP_KEY, {})[self] = backend
        self._settings[app] = settings
        self._last_app = weakref.ref(app)
        if self.with_jinja2_ext:
            register_fragments(app, _CompatFragments(self))

    def _native(self, app: Flask, merged: dict[str, Any], settings: CompatSettings) -> RedisCache:
        fennec = {k: v for k, v in merged.items() if k.startswith("FENNEC_CACHE_")}
        fennec.update(
            FENNEC_CACHE_URL=settings.url,
            FENNEC_CACHE_PREFIX=settings.prefix,
            FENNEC_CACHE_DEFAULT_TTL=None,
            FENNEC_CACHE_TTL_JITTER=0,
            FENNEC_CACHE_SERIALIZER="pickle",
            FENNEC_CACHE_SECRET_KEY=settings.secret,
        )
        options = read_settings(fennec)
        native = RedisCache(**{**options.backend_options(), **settings.options})
        if EXTENSION_KEY not in app.extensions:
            # The first compat cache is the app's cache for the native API, the admin
            # blueprint and the CLI (until FennecCache replaces it).
            app.extensions[EXTENSION_KEY] = native
            app.extensions[SETTINGS_KEY] = options
            if options.admin_url_prefix:
                from .admin import make_blueprint

                app.register_blueprint(make_blueprint(), url_prefix=options.admin_url_prefix)
        return native

    # -- the backend -----------------------------------------------------------------------------

    @property
    def cache(self) -> Backend:
        """This instance's backend for the current app (outside an app context: for the app
        last initialised), as Flask-Caching's ``cache.cache``."""
        app = self._app()
        backend: Backend | None = app.extensions.get(APP_KEY, {}).get(self)
        if backend is None:
            raise NoBackendError(
                f"this Cache is not initialised on app {app.name!r}: call cache.init_app(app)"
            )
        return backend

    def _app(self) -> Flask:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            return app
        last = self._last_app() if self._last_app is not None else None
        if last is None:
            raise NoBackendError("this Cache is not initialised: call cache.init_app(app)")
        return last

    def _setting(self) -> CompatSettings:
        return self._settings[self._app()]

    def get(self, key: str) -> Any:
        """The value under *key*, or None."""
        return self.cache.get(key)

    def has(self, key: str) -> bool:
        """Whether *key* holds a value."""
        return self.cache.has(key)

    def set(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store *value* for *timeout* seconds (None: ``CACHE_DEFAULT_TIMEOUT``; 0: for ever)."""
        return self.cache.set(key, value, timeout)

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        """Store *value* only if *key* holds nothing, atomically; False otherwise."""
        return self.cache.add(key, value, timeout)

    def delete(self, key: str) -> bool:
        """Remove *key*; True if it held a value."""
        return self.cache.delete(key)

    def delete_many(self, *keys: str) -> list[str]:
        """Remove *keys* in one round trip."""
        return self.cache.delete_many(*keys)

    def unlink(self, *keys: str) -> list[str]:
        """Remove *keys* with ``UNLINK``."""
        return self.cache.unlink(*keys)

    def clear(self) -> bool:
        """Remove every key under this instance's prefix (never FLUSHDB)."""
        return self.cache.clear()

    def get_many(self, *keys: str) -> list[Any]:
        """The values of *keys*, in order (None for misses)."""
        return self.cache.get_many(*keys)

    def set_many(self, mapping: dict[str, Any], timeout: Any = None) -> list[str]:
        """Store every entry of *mapping*."""
        return self.cache.set_many(mapping, timeout)

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """``{key: value or None}``."""
        return self.cache.get_dict(*keys)

    # -- decorators ------------------------------------------------------------------------------

    def cached(
        self,
        timeout: Any = None,
        key_prefix: str | Callable[[], str] = "view/%s",
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
        is_stale: Callable[..., Any] | None = None,
        response_filter: Callable[..., Any] | None = None,
        query_string: bool = False,
        hash_method: Callable[..., Any] | None = None,
        cache_none: bool = False,
        make_cache_key: Callable[..., str] | None = None,
        source_check: bool | None = None,
        response_hit_indication: bool | None = False,
    ) -> Callable[[Callable[..., Any]], CachedFunction]:
        """Cache a view (by ``request.path``, and the sorted query string with
        *query_string*) or any function (by *key_prefix*); Flask-Caching's options.

        The decorated function has ``uncached``, ``cache_timeout`` and ``make_cache_key``
        (both writable). An ``HTTPException`` the function raises (``abort(404)``) is cached
        and raised again on hits, unless *response_filter* refuses its response.
        """
        normalize_timeout(timeout)

        def decorate(func: Callable[..., Any]) -> CachedFunction:
            return CachedFunction(
                self,
                func,
                timeout,
                _ViewKey(self, func, key_prefix, query_string, hash_method, source_check),
                _Options(unless, forced_update, is_stale, response_filter, cache_none),
                make_cache_key,
                bool(response_hit_indication),
            )

        return decorate

    def memoize(
        self,
        timeout: Any = None,
        make_name: Callable[[str], str] | None = None,
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
        is_stale: Callable[..., Any] | None = None,
        response_filter: Callable[..., Any] | None = None,
        hash_method: Callable[..., Any] | None = None,
        cache_none: bool = False,
        source_check: bool | None = None,
        args_to_ignore: Sequence[str] | None = None,
    ) -> Callable[[Callable[..., Any]], MemoizedFunction]:
        """Cache a function by its arguments (methods by their instance, see
        :func:`~flask_fennec_cache._compat_keys.instance_id`); Flask-Caching's options.

        The decorated function has ``uncached``, ``cache_timeout``, ``make_cache_key`` and
        ``delete_memoized``.
        """
        normalize_timeout(timeout)
        if isinstance(args_to_ignore, str):
            raise ConfigurationError(
                f"args_to_ignore must be a list of names, e.g. [{args_to_ignore!r}]"
            )
        ignore = frozenset(args_to_ignore or ())

        def decorate(func: Callable[..., Any]) -> MemoizedFunction:
            keys = _MemoKey(self, make_name, hash_method, source_check, ignore)
            options = _Options(unless, forced_update, is_stale, response_filter, cache_none)
            return MemoizedFunction(self, func, timeout, keys, options, ignore)

        return decorate

    def delete_memoized(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Drop memoized results of *f*: all of them; for a bound method, its instance's;
        with arguments, that call's only (a bound method supplies its instance, a function
        reached through its class needs it first, a classmethod its class). On a
        ``@cached`` function, its entry (*kwargs* are view arguments for ``url_for``)."""
        if not callable(f):
            raise TypeError("delete_memoized takes the memoized function itself, not its name")
        target = getattr(f, "__func__", f)
        if isinstance(target, CachedFunction):
            self.delete(target.make_cache_key(*args, **kwargs))
            return
        if not isinstance(target, MemoizedFunction):
            raise TypeError(f"{f!r} is not decorated with this cache's memoize()")
        instance = getattr(f, "__self__", None)
        if not args and not kwargs:
            if instance is None or inspect.isclass(instance):
                self._invalidate(function_tag(target.uncached))
            else:  # that instance's entries: the keys that name it
                backend = self.cache
                if isinstance(backend, CompatBackend):
                    backend.native.clear(target.instance_pattern(instance))
            return
        if instance is not None and not inspect.isclass(instance):
            names = list(inspect.signature(target.uncached).parameters)
            if names and names[0] == "self" and not (args and args[0] is instance):
                args = (instance, *args)
        self.delete(target.make_cache_key(target.uncached, *args, **kwargs))

    def delete_memoized_verhash(self, f: Callable[..., Any], *args: Any) -> None:
        """Drop every memoized result of *f* (Flask-Caching deletes the function's version
        hash, which does the same)."""
        if not callable(f):
            raise TypeError(
                "delete_memoized_verhash takes the memoized function itself, not its name"
            )
        target = getattr(f, "__func__", f)
        if not isinstance(target, MemoizedFunction):
            raise TypeError(f"{f!r} is not decorated with this cache's memoize()")
        self._invalidate(function_tag(target.uncached))

    def delete_cached(
        self,
        f: Callable[..., Any],
        path: str | None = None,
        query_args: Any = None,
        **kwargs: Any,
    ) -> bool:
        """Drop the entry of ``@cached`` view *f* for *path* (and *query_args*, a query
        string, mapping or pairs, with ``query_string=True``); without *path*, the path is
        ``url_for(f, **kwargs)``. True if there was one."""
        target = getattr(f, "__func__", f)
        if not isinstance(target, CachedFunction):
            raise TypeError(f"{f!r} is not decorated with this cache's cached()")
        return self.delete(target.make_cache_key(path=path, query_args=query_args, **kwargs))

    def _invalidate(self, tag: str) -> None:
        backend = self.cache
        if isinstance(backend, CompatBackend):
            backend.native.invalidate_tags(tag)

    # -- one cached call -------------------------------------------------------------------------

    def _call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = self._app().ensure_sync(func)(*args, **kwargs)
        return join_generator(value) if inspect.isgenerator(value) else value

    def _serve(
        self,
        key: str,
        tags: tuple[str, ...],
        timeout: Any,
        options: _Options,
        call: Callable[[], Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        decorated: _Decorated,
    ) -> tuple[Any, bool]:
        """``(value, hit)`` of one call: from the cache, or ``call()`` (stored unless the
        response filter refuses it), counted under *decorated*'s name."""
        backend = self.cache
        if isinstance(backend, NullBackend):
            return call(), False
        ttl = backend.ttl_for(timeout)

        def load() -> Any:
            value = call()
            checked = value.get_response() if isinstance(value, HTTPException) else value
            if options.response_filter is not None and not options.response_filter(checked):
                return Deliver(None, value)
            if isinstance(value, CachedResponse) and value.timeout:
                return Deliver(value, value, ttl=value.timeout)
            return value

        if _flag(options.forced_update, args, kwargs):
            return self._store(backend, key, tags, ttl, options, load()), False
        policy = LoadPolicy(ttl=ttl, cache_none=options.cache_none, tags=tags)
        parts = NamedParts.of(backend.native, decorated.stats_name, decorated.counted)
        value, hit = get_or_load(parts, key, load, policy)
        if isinstance(value, Deliver):
            if value.store is None:  # not stored: a waiter runs the function itself
                return (call(), False) if hit else (value.result, False)
            value = value.store if hit else value.result
        if hit and options.is_stale is not None and _stale(options.is_stale, value, args, kwargs):
            return self._store(backend, key, tags, ttl, options, load()), False
        return value, hit

    def _store(
        self,
        backend: CompatBackend,
        key: str,
        tags: tuple[str, ...],
        ttl: float | None,
        options: _Options,
        loaded: Any,
    ) -> Any:
        if isinstance(loaded, Deliver):
            if loaded.store is not None:
                backend.native.set(key, loaded.store, loaded.ttl or ttl, tags=tags)
            return loaded.result
        if loaded is not None or options.cache_none:
            backend.native.set(key, loaded, ttl, tags=tags)
        return loaded


def _check_config(config: Any) -> None:
    if not (config is None or isinstance(config, dict)):
        raise ConfigurationError(f"config must be a dict or None, got {config!r}")


def _flag(check: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Flask-Caching's ``unless``/``forced_update`` rule: called with the call's arguments
    when it takes any, and only ``True`` itself counts."""
    if check is None:
        return False
    return (check(*args, **kwargs) if wants_args(check) else check()) is True


def _stale(
    check: Callable[..., Any], value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    answer = check(value, *args, **kwargs) if wants_extra_args(check) else check(value)
    return answer is True


class _Options:
    """The per-decorator options shared by ``cached`` and ``memoize``."""

    __slots__ = ("cache_none", "forced_update", "is_stale", "response_filter", "unless")

    def __init__(
        self,
        unless: Callable[..., Any] | None,
        forced_update: Callable[..., Any] | None,
        is_stale: Callable[..., Any] | None,
        response_filter: Callable[..., Any] | None,
        cache_none: bool,
    ) -> None:
        self.unless = unless
        self.forced_update = forced_update
        self.is_stale = is_stale
        self.response_filter = response_filter
        self.cache_none = cache_none


def _digest(owner: Cache, hash_method: Callable[..., Any] | None, text: str) -> str:
    method = hash_method or owner._setting().hash_method or hashlib.sha256
    return str(method(text.encode("utf-8", "surrogatepass")).hexdigest())


def _source_check(owner: Cache, source_check: bool | None) -> bool:
    return owner._setting().source_check if source_check is None else source_check


class _MemoKey:
    """``make_cache_key(f, *args, **kwargs)`` of a memoized function."""

    def __init__(
        self,
        owner: Cache,
        make_name: Callable[[str], str] | None,
        hash_method: Callable[..., Any] | None,
        source_check: bool | None,
        ignore: frozenset[str],
    ) -> None:
        self.owner = owner
        self.make_name = make_name
        self.hash_method = hash_method
        self.source_check = source_check
        self.ignore = ignore

    def __call__(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        text = argument_text(f, args, kwargs, self.ignore)
        head = self.head(f) + instance_segment(f, args, self.ignore)
        if _source_check(self.owner, self.source_check):
            text += "|source:" + _digest(self.owner, self.hash_method, inspect.getsource(f))
        if self.hash_method is not None or self.owner._setting().hash_method is not None:
            return f"{head}#{_digest(self.owner, self.hash_method, text)}"
        return hashed_if_long(head, text)

    def head(self, f: Callable[..., Any]) -> str:
        """What every key of *f* starts with: ``memoize:{name}:`` (*make_name* applied)."""
        name = function_name(f)
        if self.make_name is not None:
            name = self.make_name(name)
        return f"memoize:{name}:"


class _ViewKey:
    """The default ``make_cache_key`` of a ``cached`` function: *key_prefix* (with ``%s``
    the request path, or ``url_for``'s outside the request), the sorted query string's hash
    with *query_string*, the source's hash with *source_check*."""

    def __init__(
        self,
        owner: Cache,
        func: Callable[..., Any],
        key_prefix: str | Callable[[], str],
        query_string: bool,
        hash_method: Callable[..., Any] | None,
        source_check: bool | None,
    ) -> None:
        if not (callable(key_prefix) or isinstance(key_prefix, str)):
            raise ConfigurationError(
                f"key_prefix must be a string (with %s for the path) or a callable, "
                f"got {key_prefix!r}"
            )
        self.owner = owner
        self.func = func
        self.key_prefix = key_prefix
        self.query_string = query_string
        self.hash_method = hash_method
        self.source_check = source_check

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        for name, value in zip(_positional_names(self.func), args, strict=False):
            kwargs[name] = value
        if kwargs.pop("use_request", False):
            path, query = request.path, None
        else:
            path, query = kwargs.pop("path", None), kwargs.pop("query_args", None)
            if path is None and "%s" in self._prefix_text():
                path = url_for(self.func.__name__, _external=False, **kwargs)
        key = self._prefix_text()
        if "%s" in key and not callable(self.key_prefix):
            key = key % path
        if self.query_string:
            pairs = request.args.items(multi=True) if query is None else query_pairs(query)
            text = str(tuple(sorted(pairs)))
            if _source_check(self.owner, self.source_check):
                text += inspect.getsource(self.func)
            return key + _digest(self.owner, self.hash_method, text)
        if _source_check(self.owner, self.source_check):
            key += _digest(self.owner, self.hash_method, inspect.getsource(self.func))
        return key

    def _prefix_text(self) -> str:
        return self.key_prefix() if callable(self.key_prefix) else self.key_prefix


def _positional_names(func: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]


class _Decorated:
    """What ``cached`` and ``memoize`` return: the function, bound like one on instances."""

    def __init__(self, owner: Cache, func: Callable[..., Any], timeout: Any) -> None:
        functools.update_wrapper(cast(Callable[..., Any], self), func)
        self._owner = owner
        #: The function itself, without the cache.
        self.uncached = func
        #: Seconds its results live (None: ``CACHE_DEFAULT_TIMEOUT``); may be changed.
        self.cache_timeout = timeout
        #: The name its statistics count under (``get_stats()["by_name"]``):
        #: ``module.qualname``, for views too.
        self.stats_name = f"{func.__module__}.{func.__qualname__}"
        self.counted: list[NamedParts] = []  # the backend's parts counting for stats_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uncached!r}>"


class CachedFunction(_Decorated):
    """A function decorated with :meth:`Cache.cached`."""

    def __init__(
        self,
        owner: Cache,
        func: Callable[..., Any],
        timeout: Any,
        default_key: _ViewKey,
        options: _Options,
        key_maker: Callable[..., str] | None,
        hit_header: bool,
    ) -> None:
        super().__init__(owner, func, timeout)
        #: Builds the key of a call (``path=``/``query_args=`` outside a request); may be
        #: replaced.
        self.make_cache_key: Callable[..., str] = default_key
        self._key_maker = key_maker
        self._options = options
        self._hit_header = hit_header

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner, options = self._owner, self._options
        call = functools.partial(_call_catching, owner, self.uncached, args, kwargs)
        if _bypass(options.unless, self.uncached, args, kwargs):
            return owner._call(self.uncached, args, kwargs)
        if self._key_maker is not None:
            key = self._key_maker(*args, **kwargs)
        else:
            key = self.make_cache_key(*args, use_request=True, **kwargs)
        value, hit = owner._serve(key, (), self.cache_timeout, options, call, args, kwargs, self)
        if self._hit_header:
            _mark_hit(owner, hit)
        if isinstance(value, HTTPException):
            raise value
        return value


class MemoizedFunction(_Decorated):
    """A function decorated with :meth:`Cache.memoize`."""

    def __init__(
        self,
        owner: Cache,
        func: Callable[..., Any],
        timeout: Any,
        key_maker: _MemoKey,
        options: _Options,
        ignore: frozenset[str],
    ) -> None:
        super().__init__(owner, func, timeout)
        #: ``make_cache_key(f, *args, **kwargs)``: the key of a call of *f*; may be replaced.
        self.make_cache_key: Callable[..., str] = key_maker
        self._keys = key_maker
        self._options = options
        self._ignore = ignore

    def delete_memoized(self) -> None:
        """Drop every memoized result of this function (of every instance, for a method)."""
        self._owner.delete_memoized(self)

    def instance_pattern(self, instance: Any) -> str:
        """The glob pattern of this method's keys for *instance*."""
        head = glob_escape(self._keys.head(self.uncached))
        return f"{head}{instance_digest(instance)}:*"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner, func = self._owner, self.uncached
        if _bypass(self._options.unless, func, args, kwargs):
            return owner._call(func, args, kwargs)
        key = self.make_cache_key(func, *args, **kwargs)
        tags = (function_tag(func),)
        call = functools.partial(owner._call, func, args, kwargs)
        timeout, options = self.cache_timeout, self._options
        return owner._serve(key, tags, timeout, options, call, args, kwargs, self)[0]


def _bypass(
    unless: Callable[..., Any] | None,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bool:
    if unless is None:
        return False
    return (unless(func, *args, **kwargs) if wants_args(unless) else unless()) is True


def _call_catching(
    owner: Cache, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The view's value, or the ``HTTPException`` it raised (cached like a response)."""
    try:
        return owner._call(func, args, kwargs)
    except HTTPException as exc:
        return exc


def _add_hit_header(response: Response) -> Response:
    if g.get("fennec_compat_hit"):
        response.headers["hit_cache"] = "True"
    return response


def _mark_hit(owner: Cache, hit: bool) -> None:
    """``response_hit_indication``: the response gets ``hit_cache: True`` on a hit."""
    g.fennec_compat_hit = hit
    funcs = owner._app().after_request_funcs.setdefault(None, [])
    if _add_hit_header not in funcs:
        funcs.append(_add_hit_header)


class _CompatFragments:
    """The ``{% cache %}`` store of a compat Cache: Flask-Caching's keys
    (:func:`make_template_fragment_key`), timeouts, and ``'del'``."""

    def __init__(self, owner: Cache) -> None:
        self.owner = owner
        self._counted: dict[str, list[NamedParts]] = {}

    def render(
        self, ttl: Any, parts: Sequence[Any], options: FragmentOptions, body: Callable[[], str]
    ) -> Markup:
        name, *vary_on = parts
        key = make_template_fragment_key(name, vary_on=vary_on)
        backend = self.owner.cache
        if ttl == "del":
            backend.delete(key)
            return Markup(body())
        if isinstance(backend, NullBackend):
            return Markup(body())
        policy = LoadPolicy(
            ttl=backend.ttl_for(ttl), tags=options.tags, stale_ttl=options.stale_ttl
        )
        stats_name = options.name or f"fragment:{name}"
        memo = self._counted.setdefault(stats_name, []) if len(self._counted) < 1_000 else []
        counted = NamedParts.of(backend.native, stats_name, memo)
        value, _ = get_or_load(counted, key, lambda: Markup(body()), policy)
        return Markup(value)
