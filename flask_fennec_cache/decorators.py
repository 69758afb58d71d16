"""``@cache``: memoise functions, and cache whole responses when the function is a Flask view."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypedDict, TypeVar, cast, overload

from flask import current_app, has_app_context, has_request_context
from flask.ctx import RequestContext
from flask.globals import request_ctx

from ._current import current_backend
from ._flight import REFRESH_POOL
from ._ratelog import logger
from ._results import CacheLookup, CacheResult
from ._tracing import named
from ._views import ResponseFilter, ViewCache, ViewOptions, request_session, wraps_view
from .backend import RedisCache
from .errors import ConfigurationError, FennecCacheError
from .keys import FunctionKeys, KeySpec
from .loading import Deliver, LoadPolicy, NamedParts, Schedule, get_or_load, load_now

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AsyncCachedFunction",
    "CacheDecorator",
    "CacheOptions",
    "CacheLookup",
    "CachedFunction",
    "cache",
    "current_backend",
]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_VIEW_MEMO = 1_000


class CacheDecorator(Protocol):
    """What ``cache(...)`` returns: a decorator for plain and coroutine functions alike."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, CacheResult[R]]]
    ) -> AsyncCachedFunction[P, R]: ...

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, CacheResult[R]]) -> CachedFunction[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...


class CachedFunction(Protocol[P, R]):
    """What ``@cache`` returns: the function, plus helpers to inspect and invalidate its entries.

    Accessed on an instance (a decorated method), it is bound like a method, helpers included:
    ``obj.method.invalidate()`` drops the entry of ``obj.method()`` only. For a view, the
    helpers take the view's arguments: ``view.invalidate(post_id=3)`` drops every entry of that
    view for those arguments (all query strings and ``Vary`` variants).
    """

    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str
    __module__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __get__(self, instance: Any, owner: type | None = None) -> CachedFunction[..., R]:
        """Bind like the function it wraps (so decorated methods work), helpers included."""
        ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> CacheLookup[R]:
        """Call through the cache and say whether the value was a hit (for a coroutine
        function, a coroutine of that)."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key (relative to the backend's prefix) this call is cached under; for a view,
        the key every entry of the view for these arguments starts with."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Remove this call's entry (a view's: all its variants); True if there was one."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now, store its result as this call's entry and return it (for an
        entry known to have changed). Readers meanwhile wait for the new value; a write or
        delete of the key while it runs wins over its result. Not for views."""
        ...


class AsyncCachedFunction(Protocol[P, R]):
    """What ``@cache`` returns for an ``async def`` function: a coroutine function, with the
    helpers of :class:`CachedFunction` (``lookup`` is a coroutine function too)."""

    __wrapped__: Callable[P, Coroutine[Any, Any, R]]
    __name__: str
    __qualname__: str
    __module__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    def __get__(self, instance: Any, owner: type | None = None) -> AsyncCachedFunction[..., R]:
        """Bind like the function it wraps, helpers included."""
        ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, CacheLookup[R]]:
        """Await the call through the cache and say whether the value was a hit."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key (relative to the backend's prefix) this call is cached under."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Remove this call's entry; True if there was one."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Await the function now, store its result as this call's entry and return it."""
        ...


class CacheOptions(TypedDict, total=False):
    """The keyword-only options of :func:`cache` and :meth:`FennecCache.cache`, typed once (their
    defaults are those of :class:`~.loading.LoadPolicy` and :class:`~._views.ViewOptions`)."""

    none_ttl: float | None
    lock: bool
    lock_timeout: float
    stale_ttl: float | None
    stale_if_error: float | None
    soft_timeout: float | None
    hard_timeout: float | None
    beta: float
    tags: tuple[str, ...]
    cache_control: bool
    response_filter: ResponseFilter | None
    query: tuple[str, ...] | None
    name: str


_POLICY_OPTIONS = frozenset(LoadPolicy.__dataclass_fields__) - {"ttl", "cache_none"}
_VIEW_OPTIONS = frozenset(ViewOptions._fields)


def cache(
    ttl: float | None = None,
    backend: RedisCache | None = None,
    key: KeySpec = None,
    unless: Callable[[], bool] | None = None,
    cache_none: bool = False,
    **options: Unpack[CacheOptions],
) -> CacheDecorator:
    """Cache a function's results, or a Flask view's whole responses.

    :param ttl: seconds an entry lives; None uses the backend's default TTL.
    :param backend: the :class:`RedisCache` to use; None uses the current Flask app's.
    :param key: the key, as a template of the function's parameters (``"user:{user_id}"``) or a
        callable taking the function's arguments; None builds one from the module, qualified
        name and normalised arguments (positional and keyword spellings share a key). On a
        view, the template is filled from the view's URL arguments (a callable is called with
        them), and the entries still vary on the query string and the response's ``Vary``.
    :param unless: a callable with no arguments; when it returns True the cache is bypassed.
    :param cache_none: also cache a ``None`` result (by default ``None`` is never stored).
    :param none_ttl: seconds a cached ``None`` lives ("not found" results; needs *cache_none*).
    :param lock: single-flight loading: when many callers miss at once, one runs the function
        and the others wait for its value (across threads, processes and hosts).
    :param lock_timeout: seconds a loader may take before a waiter takes over.
    :param stale_ttl: seconds past *ttl* a stale value is served while it is refreshed in the
        background (one load per key across processes; no caller waits for it): a function on
        the process's refresh pool (``FENNEC_CACHE_REFRESH_WORKERS`` threads), in an app
        context of its own, never the caller's request; a view once its response has been
        sent, in a new request with its URL and the headers it varies on, without its cookies
        or session (a view varying on ``Cookie`` is refreshed in its own request instead).
        A failed background refresh is logged, counted in ``errors`` and keeps the stale value.
    :param stale_if_error: seconds past *ttl* an entry is kept to be served when its load
        raises (a view: answers 500, 502, 503 or 504) — fail-safe, as HTTP's
        ``stale-if-error``. While the loader keeps failing it is retried at most about once a
        second per key across processes; each such serve counts in ``fail_safe_hits`` and is
        logged once per key every 10 s. Without a stale value the exception propagates.
    :param soft_timeout: seconds a caller waits for a load when a stale value is available
        (within *stale_ttl* or *stale_if_error*): then it gets that value, and the load
        finishes in the background and stores its result. Off by default; not for views.
    :param hard_timeout: seconds a caller waits for a load at most: then it gets the stale
        value if there is one, else :class:`~flask_fennec_cache.LoaderTimeout`; the load
        finishes in the background and stores its result. Off by default; not for views.
    :param beta: probabilistic early refresh (XFetch) strength; 0 disables, 1 is typical;
        refreshed in the background as with *stale_ttl*.
    :param tags: tag names; ``backend.invalidate_tags(*names)`` drops every entry carrying them.
    :param cache_control: views only: add ``Cache-Control: max-age=<seconds>`` to cached
        responses that have no ``Cache-Control`` of their own, so browsers and proxies may keep
        them too; the seconds are the life the entry really gets in Redis (its TTL after
        jitter), and hits carry ``Age``, so a proxy keeps a hit as long as Redis does.
    :param response_filter: views only: called with a response that passed the built-in rules;
        it is cached only when this returns True.
    :param query: views only: the query parameters that enter the key (``("page", "sort")``);
        others (``?utm_source=``) create no new entries. None (the default) keys on all of them.
    :param name: the name its statistics are counted under (``get_stats()["by_name"]``); by
        default ``module.qualname`` for a function (a method: its class-qualified name) and the
        endpoint for a view. Functions given the same name share one row.

    Exceptions are never cached. A value that is written or deleted while a call is loading it
    is not overwritten by that call's (older) result. A call made while a request is handled
    whose loader reads the session (``flask.session``) is not stored, and a warning names the
    function once: its result may belong to one user. Pass what it needs from the session as
    arguments instead.

    When the decorated function is the view of the current request (directly, or under other
    decorators, with or without ``functools.wraps``), the response is cached whole (status,
    headers, body bytes) for GET and HEAD requests with a 2xx status, unless it sets a cookie,
    says ``no-store`` or ``private``, varies on ``*``, is streamed or a direct passthrough
    (``send_file``), or the request carries ``Authorization``. A view that reads the session
    varies on the cookie. Such responses get ``X-Cache: HIT`` or ``MISS``. A cached response
    carries a strong ``ETag`` (a hash of its body, computed once when stored, unless the view
    set its own); a request whose ``If-None-Match`` matches it gets ``304 Not Modified``. Hits
    carry ``Age`` (seconds since the response was stored). HEAD requests share the GET entry.

    ``async def`` functions and views are supported: the decorator returns a coroutine
    function; the cache's own work runs on a worker thread while the loader is awaited on the
    caller's event loop (views through Flask's async support, ``flask[async]``).

    .. versionadded:: 0.1
        *cache_control*, *response_filter* and *query*; methods bind their helpers; coroutine
        functions.
    """
    resolve: Callable[[], RedisCache] = current_backend
    if backend is not None:
        resolve = lambda: backend  # noqa: E731
    given: dict[str, Any] = dict(options)
    name = _stats_name(given.pop("name", None))
    policy, view_options = _options(ttl, cache_none, given)

    def decorate(func: Callable[..., Any]) -> Any:
        state = _Cached(func, resolve, key, unless, policy, view_options, name)
        if inspect.iscoroutinefunction(func):
            return _AsyncCached(state)
        return _SyncCached(state)

    return cast(CacheDecorator, decorate)


def _stats_name(name: object) -> str | None:
    """A ``name=`` option, checked: a non-empty str (or None)."""
    if name is None or isinstance(name, str) and name.strip():
        return name
    raise ConfigurationError(f"name must be a non-empty str naming the statistics, got {name!r}")


def _options(
    ttl: float | None, cache_none: bool, options: dict[str, Any]
) -> tuple[LoadPolicy, ViewOptions]:
    """The load policy and view options *options* name; ConfigurationError for a bad one."""
    unknown = set(options) - _POLICY_OPTIONS - _VIEW_OPTIONS
    if unknown:
        known = ", ".join(sorted(_POLICY_OPTIONS | _VIEW_OPTIONS))
        raise ConfigurationError(
            f"@cache has no option {', '.join(sorted(unknown))}; its options: ttl, backend, "
            f"key, unless, cache_none, name, {known}"
        )
    tags = options.get("tags", ())
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a sequence of names, e.g. tags=({tags!r},)")
    policy_options = {k: v for k, v in options.items() if k in _POLICY_OPTIONS}
    policy_options["tags"] = tuple(tags)
    view = {k: v for k, v in options.items() if k in _VIEW_OPTIONS}
    view["query"] = _query_names(view.get("query"))
    return LoadPolicy(ttl, cache_none, **policy_options), ViewOptions(**view)


def _query_names(query: tuple[str, ...] | None) -> frozenset[str] | None:
    if query is None:
        return None
    if isinstance(query, str) or not all(isinstance(name, str) for name in query):
        raise ConfigurationError(
            f"query must be a sequence of parameter names, e.g. query=('page', 'sort'), "
            f"got {query!r}"
        )
    return frozenset(query)


def on_pool() -> Schedule:
    """Schedule work on the process's refresh pool, in a new context of the current app (if
    there is one)."""
    app = current_app._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]

    def schedule(work: Callable[[], object]) -> bool:
        if app is None:
            return REFRESH_POOL.submit(work)

        def in_app() -> None:
            with app.app_context():
                work()

        return REFRESH_POOL.submit(in_app)

    return schedule


def plain(value: Any) -> Any:
    """What a caller gets of a result: a :class:`CacheResult`'s value, anything else as is."""
    return value.value if isinstance(value, CacheResult) else value


#: How to run the decorated function synchronously: the function itself, or, for a coroutine
#: function, a call that awaits it on its event loop.
Invoke = Callable[..., Any]


class _Cached:
    """The state of one decorated function; everything independent of a call is computed here."""

    def __init__(
        self,
        func: Callable[..., Any],
        resolve: Callable[[], RedisCache],
        key: KeySpec,
        unless: Callable[[], bool] | None,
        policy: LoadPolicy,
        view_options: ViewOptions,
        name: str | None = None,
    ) -> None:
        self.func = func
        #: The statistics name of its calls outside its own requests (``name=`` or
        #: ``module.qualname``); its view requests count under ``name=`` or their endpoint.
        self.name = name or f"{func.__module__}.{func.__qualname__}"
        self._view_name = name
        self._parts: list[NamedParts] = []
        self._view_parts: dict[str, list[NamedParts]] = {}
        self.resolve = resolve
        self.unless = unless
        self.policy = policy
        self.keys = FunctionKeys(func, key)
        self.views = ViewCache(policy, key, view_options)
        self.signature = inspect.signature(func)
        self.is_async = inspect.iscoroutinefunction(func)
        #: How stale entries are refreshed in the background (None: no refreshing policy).
        self.background = self._background if policy.stale_ttl or policy.beta else None
        self.reads_session = False
        self._views_seen: dict[int, tuple[object, bool]] = {}
        # Per app (by its view_functions dict, while it keeps its size): the endpoints found.
        self._endpoints: dict[int, tuple[object, int, list[str]]] = {}

    # -- calls -----------------------------------------------------------------------------------

    def run(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], invoke: Invoke, bound: bool
    ) -> tuple[Any, bool, str]:
        """``(value, hit, key)`` of one call; *args* include the instance when *bound*."""
        if self.unless is not None and self.unless():
            return self._unless(invoke(*args, **kwargs), args, kwargs, bound), False, ""
        loader = invoke
        if has_request_context():
            ctx: RequestContext = request_ctx._get_current_object()  # type: ignore[attr-defined]
            if self.is_view_of(ctx, args[1:] if bound else args, kwargs):
                return self.views.serve(
                    ctx,
                    self._view_counted(ctx),
                    lambda: invoke(*args, **kwargs),
                    after_response=not self.is_async,
                )
            if self.reads_session:
                self.resolve().counters.named(self.name).bypass("session")
                return plain(invoke(*args, **kwargs)), False, ""
            loader = self._watching_session(ctx, invoke)
        key = self.keys.key(args, kwargs)
        parts = NamedParts.of(self.resolve(), self.name, self._parts)
        value, hit = get_or_load(
            parts, key, loader, self.policy, args, kwargs, background=self.background
        )
        if isinstance(value, Deliver):  # a result only the request that loaded it may see
            if hit:
                return plain(invoke(*args, **kwargs)), False, key
            return value.result, False, key
        return value, hit, key

    def _unless(
        self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> Any:
        """What a call ``unless`` bypassed returns: a view's response marked ``X-Cache:
        BYPASS`` (reason ``unless``, counted for its name), a function's result as is."""
        ctx = self._view_request(args, kwargs, bound)
        if ctx is not None:
            return self.views.bypass(ctx, self._view_counted(ctx), result, "unless")
        return plain(result)

    def _view_counted(self, ctx: RequestContext) -> NamedParts:
        """The backend's parts counting for this view request's name (``name=`` or its
        endpoint)."""
        name = self._view_name or ctx.request.endpoint or self.name
        memo = self._view_parts.get(name)
        if memo is None:
            if len(self._view_parts) >= _MAX_VIEW_MEMO:
                self._view_parts.clear()
            memo = self._view_parts[name] = []
        return NamedParts.of(self.resolve(), name, memo)

    async def run_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> tuple[Any, bool, str]:
        """:meth:`run` for a coroutine function: the cache's own (blocking) work runs on a
        worker thread, in a copy of this context, and the function is awaited on this loop."""
        if self.unless is not None and self.unless():
            return self._unless(await self.func(*args, **kwargs), args, kwargs, bound), False, ""
        return cast("tuple[Any, bool, str]", await self._off_loop(self.run, args, kwargs, bound))

    async def _off_loop(
        self,
        work: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: bool,
    ) -> Any:
        """``work(args, kwargs, invoke, bound)`` on a worker thread, in a copy of this context,
        with *invoke* awaiting the coroutine function on this loop."""
        loop = asyncio.get_running_loop()

        def invoke(*call_args: Any, **call_kwargs: Any) -> Any:
            coroutine = self.func(*call_args, **call_kwargs)
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        context = contextvars.copy_context()
        return await loop.run_in_executor(None, context.run, work, args, kwargs, invoke, bound)

    def refresh(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], invoke: Invoke, bound: bool
    ) -> Any:
        """Run the function now and store its result under the call's key (see
        :func:`~.loading.load_now`); its value."""
        if self.endpoints():
            raise FennecCacheError(
                f"{self.func.__qualname__} is a cached view: refresh() runs functions only; "
                "use .invalidate(**view_args) and let the next request render it"
            )
        if self.unless is not None and self.unless():
            return plain(invoke(*args, **kwargs))
        loader = invoke
        if has_request_context():
            if self.reads_session:
                return plain(invoke(*args, **kwargs))
            ctx: RequestContext = request_ctx._get_current_object()  # type: ignore[attr-defined]
            loader = self._watching_session(ctx, invoke)
        parts = NamedParts.of(self.resolve(), self.name, self._parts)
        value = load_now(parts, self.keys.key(args, kwargs), loader, self.policy, args, kwargs)
        return value.result if isinstance(value, Deliver) else value

    async def refresh_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> Any:
        """:meth:`refresh` for a coroutine function."""
        return await self._off_loop(self.refresh, args, kwargs, bound)

    def _background(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Schedule, Callable[[], Any]]:
        """Where and how a stale entry of this call is refreshed: on the backend's pool, by the
        function itself (a coroutine function on an event loop of its own), in an app context
        of its own when the caller had one — never in the caller's request."""
        func = self.func
        if self.is_async:
            load: Callable[[], Any] = lambda: asyncio.run(func(*args, **kwargs))  # noqa: E731
        else:
            load = functools.partial(func, *args, **kwargs)
        return on_pool(), load

    def _watching_session(self, ctx: RequestContext, invoke: Invoke) -> Invoke:
        """*invoke*, telling whether it read the session: then its result is not stored."""

        def load(*args: Any, **kwargs: Any) -> Any:
            session = request_session(ctx)
            if session is None:
                return invoke(*args, **kwargs)
            before = session.accessed
            session.accessed = False
            try:
                value = invoke(*args, **kwargs)
            finally:
                read = session.accessed
                session.accessed = before or read
            if not read:
                return value
            if not self.reads_session:
                self.reads_session = True
                logger.warning(
                    "not caching %s.%s: it read the session, so its result may belong to one "
                    "user; pass what it needs from the session as arguments (its calls in "
                    "requests now bypass the cache)",
                    self.func.__module__,
                    self.func.__qualname__,
                )
            return Deliver(None, plain(value))

        return load

    # -- is it a view? ---------------------------------------------------------------------------

    def is_target(self, node: object) -> bool:
        return isinstance(node, (_SyncCached, _Bound)) and node._state is self

    def _view_request(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> RequestContext | None:
        """The request context this call is the view of, or None (not in a request, or not
        its view)."""
        if not has_request_context():
            return None
        ctx: RequestContext = request_ctx._get_current_object()  # type: ignore[attr-defined]
        return ctx if self.is_view_of(ctx, args[1:] if bound else args, kwargs) else None

    def is_view_of(
        self, ctx: RequestContext, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """Is this call the view the request of *ctx* was routed to? Flask calls a view with its
        URL arguments as keywords (decorators around it pass them on)."""
        req = ctx.request
        view_args = req.view_args
        if args or view_args is None:
            return False
        for name, value in view_args.items():
            if name not in kwargs or kwargs[name] != value:
                return False
        return self.is_view(ctx.app.view_functions.get(req.endpoint or ""))

    def is_view(self, view: object) -> bool:
        """Whether the view function *view* runs this function as its view."""
        if view is None:
            return False
        seen = self._views_seen.get(id(view))
        if seen is not None and seen[0] is view:
            return seen[1]
        answer = wraps_view(view, self.is_target)
        if len(self._views_seen) >= _MAX_VIEW_MEMO:
            self._views_seen.clear()
        self._views_seen[id(view)] = (view, answer)
        return answer

    def endpoints(self) -> list[str]:
        """The endpoints of the current app whose view this is ([] outside an app)."""
        if not has_app_context():
            return []
        views = current_app.view_functions
        known = self._endpoints.get(id(views))
        if known is not None and known[0] is views and known[1] == len(views):
            return known[2]
        found = [name for name, view in views.items() if self.is_view(view)]
        if len(self._endpoints) >= _MAX_VIEW_MEMO:
            self._endpoints.clear()
        self._endpoints[id(views)] = (views, len(views), found)
        return found

    # -- helpers ---------------------------------------------------------------------------------

    def view_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> dict[str, Any]:
        """A view's URL arguments from a helper's call (positional ones named)."""
        named = dict(self.signature.bind_partial(*args, **kwargs).arguments)
        if bound:
            named.pop(next(iter(self.signature.parameters)), None)
        return named

    def cache_key(self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool) -> str:
        endpoints = self.endpoints()
        if endpoints:
            return self.views.group(endpoints[0], self.view_args(args, kwargs, bound))
        return self.keys.key(args, kwargs)

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool) -> bool:
        endpoints = self.endpoints()
        if endpoints:
            view_args = self.view_args(args, kwargs, bound)
            backend = self.resolve()
            dropped = 0
            for endpoint in endpoints:
                with named(self._view_name or endpoint):
                    dropped += self.views.drop(backend, endpoint, view_args)
            return dropped > 0
        with named(self.name):
            return self.resolve().delete(self.keys.key(args, kwargs)) > 0

    def lookup(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], invoke: Invoke, bound: bool
    ) -> CacheLookup[Any]:
        self._check_lookup(args, kwargs, bound)
        return CacheLookup(*self.run(args, kwargs, invoke, bound))

    async def lookup_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool
    ) -> CacheLookup[Any]:
        self._check_lookup(args, kwargs, bound)
        return CacheLookup(*await self.run_async(args, kwargs, bound))

    def _check_lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: bool) -> None:
        """A view is looked up only in its own requests (its entries are chosen by them)."""
        if self._view_request(args, kwargs, bound) is None and self.endpoints():
            raise FennecCacheError(
                f"{self.func.__qualname__} is a cached view: lookup() serves it only in one of "
                "its own requests (e.g. app.test_request_context(url)); use .invalidate(**view_"
                "args) or .cache_key(**view_args) elsewhere"
            )


class _SyncCached:
    """What ``@cache`` returns for a plain function (see :class:`CachedFunction`)."""

    def __init__(self, state: _Cached) -> None:
        self._state = state
        functools.update_wrapper(self, state.func)
        # As instance attributes too, so that a decorator using functools.wraps on this copies
        # them along with __wrapped__.
        vars(self).update(
            lookup=self.lookup,
            cache_key=self.cache_key,
            invalidate=self.invalidate,
            refresh=self.refresh,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.run(args, kwargs, self._state.func, False)[0]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _Bound(self, instance)

    def __repr__(self) -> str:
        return f"<cached {self._state.func!r}>"

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.lookup(args, kwargs, self._state.func, False)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return self._state.cache_key(args, kwargs, False)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return self._state.invalidate(args, kwargs, False)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.refresh(args, kwargs, self._state.func, False)


class _AsyncCached(_SyncCached):
    """What ``@cache`` returns for a coroutine function: a coroutine function itself."""

    def __init__(self, state: _Cached) -> None:
        super().__init__(state)
        # inspect.iscoroutinefunction (which Flask's ensure_sync uses) recognises an object
        # that looks like a function with a coroutine's code; Python 3.12 adds a marker.
        func: Any = state.func
        self.__code__ = func.__code__
        self.__defaults__ = func.__defaults__
        self.__kwdefaults__ = func.__kwdefaults__
        mark = getattr(inspect, "markcoroutinefunction", None)
        if mark is not None:
            mark(self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (await self._state.run_async(args, kwargs, False))[0]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _AsyncBound(self, instance)

    async def lookup(self, *args: Any, **kwargs: Any) -> Any:
        return await self._state.lookup_async(args, kwargs, False)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self._state.refresh_async(args, kwargs, False)


class _Bound:
    """A cached method bound to an instance: calls and helpers pass it first."""

    __slots__ = ("_instance", "_state", "_unbound")

    def __init__(self, unbound: _SyncCached, instance: Any) -> None:
        self._unbound = unbound
        self._state = unbound._state
        self._instance = instance

    def __getattr__(self, name: str) -> Any:  # __name__, __wrapped__, __doc__, ...
        return getattr(self._unbound, name)

    def __repr__(self) -> str:
        return f"<bound cached {self._state.func.__qualname__} of {self._instance!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.run((self._instance, *args), kwargs, self._state.func, True)[0]

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.lookup((self._instance, *args), kwargs, self._state.func, True)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return self._state.cache_key((self._instance, *args), kwargs, True)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return self._state.invalidate((self._instance, *args), kwargs, True)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.refresh((self._instance, *args), kwargs, self._state.func, True)


class _AsyncBound(_Bound):
    """A cached coroutine method bound to an instance."""

    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (await self._state.run_async((self._instance, *args), kwargs, True))[0]

    async def lookup(self, *args: Any, **kwargs: Any) -> Any:
        return await self._state.lookup_async((self._instance, *args), kwargs, True)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self._state.refresh_async((self._instance, *args), kwargs, True)


# help(f.refresh) and friends show what CachedFunction documents.
for _helpers in (_SyncCached, _AsyncCached, _Bound, _AsyncBound):
    for _name in ("lookup", "cache_key", "invalidate", "refresh"):
        if _name in vars(_helpers):
            vars(_helpers)[_name].__doc__ = getattr(CachedFunction, _name).__doc__
del _helpers, _name
