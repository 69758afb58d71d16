"""``@cache``: memoise functions, and cache whole responses when the function is a Flask view."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, ParamSpec, Protocol, TypeVar, cast

from flask import Response as FlaskResponse
from flask import current_app, has_app_context, has_request_context, make_response
from flask.ctx import RequestContext
from flask.globals import request_ctx
from flask.wrappers import Request
from werkzeug.datastructures import Headers
from werkzeug.http import unquote_etag
from werkzeug.wrappers import Response

from ._ratelog import RateLimitedLog
from .backend import RedisCache
from .errors import ConfigurationError, NoBackendError, SerializationError
from .keys import FunctionKeys, KeySpec, variant_key, view_key
from .loading import Deliver, LoadPolicy, get_or_load
from .serializers import CachedResponse, VaryMarker

__all__ = ["CacheLookup", "CachedFunction", "cache", "current_backend"]

P = ParamSpec("P")
R = TypeVar("R")

EXTENSION_KEY = "fennec_cache"
_UNSTORED_HEADERS = frozenset({"set-cookie", "x-cache", "age"})
# What a 304 carries of the full response (RFC 9110, 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({"etag", "cache-control", "vary", "expires", "content-location"})
ResponseFilter = Callable[[FlaskResponse], bool]
_MAX_VARY_MEMO = 10_000
_log = RateLimitedLog()


class CacheLookup(NamedTuple, Generic[R]):
    """The result of a cached call, and whether it came from the cache."""

    value: R
    hit: bool
    key: str


class CachedFunction(Protocol[P, R]):
    """What ``@cache`` returns: the function, plus helpers to inspect and invalidate its entries."""

    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str
    __module__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., R]:
        """Bind like the function it wraps (so decorated methods work)."""
        ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> CacheLookup[R]:
        """Call through the cache and say whether the value was a hit."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key (relative to the backend's prefix) this call is cached under."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Remove this call's entry; True if there was one."""
        ...


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


def cache(
    ttl: float | None = None,
    backend: RedisCache | None = None,
    key: KeySpec = None,
    unless: Callable[[], bool] | None = None,
    cache_none: bool = False,
    *,
    none_ttl: float | None = None,
    lock: bool = True,
    lock_timeout: float = 10.0,
    stale_ttl: float | None = None,
    beta: float = 0.0,
    tags: tuple[str, ...] = (),
    cache_control: bool = False,
    response_filter: ResponseFilter | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Cache a function's results, or a Flask view's whole responses.

    :param ttl: seconds an entry lives; None uses the backend's default TTL.
    :param backend: the :class:`RedisCache` to use; None uses the current Flask app's.
    :param key: the key, as a template of the function's parameters (``"user:{user_id}"``) or a
        callable taking the function's arguments; None builds one from the module, qualified
        name and normalised arguments (positional and keyword spellings share a key).
    :param unless: a callable with no arguments; when it returns True the cache is bypassed.
    :param cache_none: also cache a ``None`` result (by default ``None`` is never stored).
    :param none_ttl: seconds a cached ``None`` lives ("not found" results; needs *cache_none*).
    :param lock: single-flight loading: when many callers miss at once, one runs the function
        and the others wait for its value (across threads, processes and hosts).
    :param lock_timeout: seconds a loader may take before a waiter takes over.
    :param stale_ttl: seconds past *ttl* a stale value is served while one caller refreshes it.
    :param beta: probabilistic early refresh (XFetch) strength; 0 disables, 1 is typical.
    :param tags: tag names; ``backend.invalidate_tags(*names)`` drops every entry carrying them.
    :param cache_control: views only: add ``Cache-Control: max-age=<ttl>`` to cached responses
        that have no ``Cache-Control`` of their own, so browsers and proxies may keep them too.
    :param response_filter: views only: called with a response that passed the built-in rules;
        it is cached only when this returns True.

    Exceptions are never cached. A value that is written or deleted while a call is loading it
    is not overwritten by that call's (older) result. When the decorated function is the view
    of the current request, the response is cached whole (status, headers, body bytes) for GET
    and HEAD requests with a 2xx status, unless it sets a cookie, says ``no-store`` or
    ``private``, varies on ``*``, or the request carries ``Authorization``. Such responses get
    ``X-Cache: HIT`` or ``MISS``. A cached response carries a strong ``ETag`` (a hash of its
    body, computed once when stored, unless the view set its own); a request whose
    ``If-None-Match`` matches it gets ``304 Not Modified``. Hits carry ``Age`` (seconds since
    the response was stored). HEAD requests share the GET entry.

    .. versionadded:: 0.1
        *cache_control* and *response_filter*.
    """
    resolve: Callable[[], RedisCache] = current_backend
    if backend is not None:
        resolve = lambda: backend  # noqa: E731
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a sequence of names, e.g. tags=({tags!r},)")
    policy = LoadPolicy(ttl, cache_none, none_ttl, lock, lock_timeout, stale_ttl, beta, tuple(tags))

    def decorate(func: Callable[P, R]) -> CachedFunction[P, R]:
        view_options = _ViewOptions(cache_control, response_filter)
        cached = _Cached(func, resolve, key, unless, policy, view_options)
        return cast(CachedFunction[P, R], cached.wrapper)

    return decorate


class _ViewOptions(NamedTuple):
    """How a decorated view's responses are cached, beyond the function options."""

    cache_control: bool = False
    response_filter: ResponseFilter | None = None


_DEFAULT_VIEW_OPTIONS = _ViewOptions()


class _Cached:
    """The state of one decorated function; everything independent of a call is computed here."""

    def __init__(
        self,
        func: Callable[..., Any],
        resolve: Callable[[], RedisCache],
        key: KeySpec,
        unless: Callable[[], bool] | None,
        policy: LoadPolicy,
        view_options: _ViewOptions = _DEFAULT_VIEW_OPTIONS,
    ) -> None:
        self.func = func
        self.view_options = view_options
        self.resolve = resolve
        self.keys = FunctionKeys(func, key)
        self.policy = policy
        self.vary_memo: dict[str, tuple[str, ...]] = {}
        self.view_keys: dict[tuple[Any, ...], str] = {}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if unless is not None and unless():
                return func(*args, **kwargs)
            if has_request_context():
                ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
                if self.is_view_of(ctx):
                    return self.view(ctx, args, kwargs)
            key = self.keys.key(args, kwargs)
            return get_or_load(self.resolve(), key, func, policy, args, kwargs)[0]

        def lookup(*args: Any, **kwargs: Any) -> CacheLookup[Any]:
            if unless is not None and unless():
                return CacheLookup(func(*args, **kwargs), False, self.keys.key(args, kwargs))
            return self.call(args, kwargs)

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            return self.resolve().delete(self.keys.key(args, kwargs)) > 0

        wrapper.lookup = lookup  # type: ignore[attr-defined]
        wrapper.cache_key = lambda *a, **kw: self.keys.key(a, kw)  # type: ignore[attr-defined]
        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        self.wrapper = wrapper

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheLookup[Any]:
        key = self.keys.key(args, kwargs)
        value, hit = get_or_load(self.resolve(), key, self.func, self.policy, args, kwargs)
        return CacheLookup(value, hit, key)

    def store(self, backend: RedisCache, key: str, value: Any) -> None:
        try:
            backend.set(key, value, self.policy.ttl)
        except SerializationError as exc:
            _log.warning(f"unserializable:{key}", f"not caching: {exc}")

    def is_view_of(self, ctx: RequestContext) -> bool:
        """Is the decorated function the view the request *ctx* was routed to?"""
        view = ctx.app.view_functions.get(ctx.request.endpoint or "")
        while view is not None:
            if view is self.wrapper:
                return True
            view = getattr(view, "__wrapped__", None)
        return False

    def view(
        self, ctx: RequestContext, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Response:
        req = ctx.request
        if req.method not in ("GET", "HEAD") or "HTTP_AUTHORIZATION" in req.environ:
            return make_response(self.func(*args, **kwargs))
        backend = self.resolve()
        base = self.base_key(req)
        vary = self.vary_memo.get(base, ())
        for _ in range(2):  # the key the memo suggests, then the one a vary marker names
            key = _variant(req, base, vary) if vary else base
            value, hit = get_or_load(
                backend, key, self.render, self.policy, (req, args, kwargs, backend, base, vary)
            )
            if isinstance(value, Deliver):
                if not hit:  # this request rendered it
                    response, stored = value.result
                    return _answer_miss(req, response, stored)
                value = value.store  # another thread rendered it for the same key
            if isinstance(value, CachedResponse):
                return _answer_hit(req, value, ctx.app.response_class)
            if not isinstance(value, VaryMarker) or value.headers == vary:
                break
            self.remember_vary(base, value.headers)
            vary = value.headers
        return _answer_miss(req, make_response(self.func(*args, **kwargs)), False)

    def base_key(self, req: Request) -> str:
        """The view key of this request, remembered by its raw host, path and query string."""
        environ = req.environ
        raw = (req.endpoint, environ.get("HTTP_HOST"), req.path, environ.get("QUERY_STRING", ""))
        key = self.view_keys.get(raw)
        if key is None:
            key = view_key(req.endpoint or "", req.host, req.path, req.args.items(multi=True))
            if len(self.view_keys) >= _MAX_VARY_MEMO:
                self.view_keys.clear()
            self.view_keys[raw] = key
        return key

    def render(
        self,
        req: Request,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        backend: RedisCache,
        base: str,
        vary: tuple[str, ...],
    ) -> Deliver:
        """Run the view; what to store under the key chosen for *vary*, and the response."""
        response = make_response(self.func(*args, **kwargs))
        response_filter = self.view_options.response_filter
        if not (
            _session_allows_caching(response)
            and _cacheable(response)
            and (response_filter is None or response_filter(response))
        ):
            return Deliver(None, (response, False))
        entry = self.entry_for(backend, response)
        varies_on = tuple(sorted(h.title() for h in response.vary))
        if varies_on == vary:
            return Deliver(entry, (response, True))
        # The response varies on other headers than the key was chosen by: learn them.
        self.remember_vary(base, varies_on)
        if not varies_on:
            self.store(backend, base, entry)
            return Deliver(None, (response, True))
        self.store(backend, _variant(req, base, varies_on), entry)
        marker = VaryMarker(varies_on)
        if not vary:
            return Deliver(marker, (response, True))
        self.store(backend, base, marker)
        return Deliver(None, (response, True))

    def entry_for(self, backend: RedisCache, response: Response) -> CachedResponse:
        """The stored form of a response, with its ETag and (opt-in) max-age added."""
        body = response.get_data()
        if "ETag" not in response.headers:
            response.headers["ETag"] = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        if self.view_options.cache_control and "Cache-Control" not in response.headers:
            ttl = self.policy.ttl if self.policy.ttl is not None else backend.default_ttl
            if ttl is not None:
                response.headers["Cache-Control"] = f"max-age={int(ttl)}"
        headers = tuple(
            (name, value) for name, value in response.headers.items()
            if name.lower() not in _UNSTORED_HEADERS
        )
        return CachedResponse(response.status_code, headers, body, time.time())

    def remember_vary(self, base: str, headers: tuple[str, ...]) -> None:
        if len(self.vary_memo) >= _MAX_VARY_MEMO:
            self.vary_memo.clear()
        self.vary_memo[base] = headers



def _variant(req: Request, base: str, headers: tuple[str, ...]) -> str:
    return variant_key(base, [req.headers.get(name, "") for name in headers])


def _answer_hit(
    req: Request, entry: CachedResponse, response_class: type[FlaskResponse]
) -> Response:
    if "HTTP_IF_NONE_MATCH" in req.environ:
        etag = next((v for n, v in entry.headers if n.lower() == "etag"), None)
        if _matches(req, etag):
            return _not_modified(entry.headers, "HIT", entry.stored_at)
    age = str(max(0, int(time.time() - entry.stored_at)))
    # X-Cache and Age are never stored, so they can be appended rather than set. The stored
    # headers were checked when the entry was decoded, and the body is bytes with its
    # Content-Length stored: the response is assembled without Werkzeug re-checking either.
    response = response_class(None, entry.status, _checked_headers(
        [*entry.headers, ("X-Cache", "HIT"), ("Age", age)]
    ))
    response.response = [entry.body]
    return response


def _checked_headers(items: list[tuple[str, str]]) -> Headers:
    """Headers holding *items*, which are known to be valid (str names and values without line
    breaks), without Werkzeug validating each one again."""
    headers = Headers()
    if type(getattr(headers, "_list", None)) is list:
        headers._list = items
        return headers
    return Headers(items)  # pragma: no cover - a Werkzeug that stores its headers otherwise


def _answer_miss(req: Request, response: Response, stored: bool) -> Response:
    if stored and "If-None-Match" in req.headers and _matches(req, response.headers.get("ETag")):
        return _not_modified(tuple(response.headers.items()), "MISS")
    response.headers["X-Cache"] = "MISS"
    return response


def _matches(req: Request, etag: str | None) -> bool:
    """Does the request's ``If-None-Match`` match *etag* (weak comparison, RFC 9110 13.1.2)?"""
    if etag is None:
        return False
    tag, _ = unquote_etag(etag)
    return tag is not None and req.if_none_match.contains_weak(tag)


def _not_modified(
    headers: tuple[tuple[str, str], ...], x_cache: str, stored_at: float | None = None
) -> Response:
    """A 304 with the validators and caching headers of the full response, and no body."""
    response = Response(status=304)
    for name, value in headers:
        if name.lower() in _NOT_MODIFIED_HEADERS:
            response.headers.add(name, value)
    response.headers["X-Cache"] = x_cache
    if stored_at is not None:
        response.headers["Age"] = str(max(0, int(time.time() - stored_at)))
    return response


def _session_allows_caching(response: Response) -> bool:
    """Apply now what Flask's session saving will do after this view returns.

    A view that read the session varies on the cookie (Flask adds ``Vary: Cookie`` later, so
    add it here where the key is chosen); a response that will set the session cookie is never
    cached.
    """
    # The context's ``session`` property would itself mark the session accessed.
    session = getattr(request_ctx._get_current_object(), "_session", None)  # type: ignore[attr-defined]
    if session is None or not session.accessed:
        return True
    response.vary.add("Cookie")
    if session.modified:
        return False
    return not (session and current_app.session_interface.should_set_cookie(current_app, session))


def _cacheable(response: Response) -> bool:
    if not 200 <= response.status_code < 300:
        return False
    if response.is_streamed or response.direct_passthrough or "Set-Cookie" in response.headers:
        return False
    control = response.cache_control
    return not (control.no_store or control.private or "*" in response.vary)
