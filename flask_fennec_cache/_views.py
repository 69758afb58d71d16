"""Whole-response caching of Flask views: which call is the view, its keys, storing, answering.

A view's entries for one set of view arguments form a group (see
:class:`~flask_fennec_cache.backend.Group`): every query-string and ``Vary`` variant of it is
listed in the group's index, so ``view.invalidate(post_id=3)`` drops them all in one step, and
a render whose group was dropped while it ran stores nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from flask import Response as FlaskResponse
from flask import current_app, make_response
from flask.ctx import RequestContext
from flask.globals import request_ctx
from flask.wrappers import Request
from werkzeug.datastructures import Headers
from werkzeug.http import unquote_etag
from werkzeug.wrappers import Response

from ._classify import draw
from ._coordination import Group
from ._results import CacheResult
from ._stats import NameStats
from .backend import RedisCache
from .keys import KeySpec, group_head, group_index, variant_key, view_group, view_key
from .loading import Background, CacheParts, Deliver, LoadPolicy, Schedule, get_or_load
from .serializers import CachedResponse, VaryMarker

__all__ = [
    "BYPASS_HEADER",
    "FailedRender",
    "ResponseFilter",
    "ViewCache",
    "ViewOptions",
    "request_session",
    "wraps_view",
]

ResponseFilter = Callable[[FlaskResponse], bool]

logger = logging.getLogger("flask_fennec_cache")

#: The header naming why a response was not cached (``X-Cache: BYPASS``): one of ``unless``,
#: ``method``, ``authorization``, ``store-false``, ``session``, ``status``, ``streamed``,
#: ``passthrough``, ``cookie``, ``no-store``, ``private``, ``vary``, ``filter``
#: (docs/recipes.md).
BYPASS_HEADER = "X-Cache-Bypass"

_UNSTORED_HEADERS = frozenset({"set-cookie", "x-cache", "x-cache-bypass", "age"})
# What a 304 carries of the full response (RFC 9110, 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({"etag", "cache-control", "vary", "expires", "content-location"})
_MAX_MEMO = 10_000
#: Statuses a view's stale response replaces with ``stale_if_error`` (RFC 5861, section 4).
_FAIL_SAFE_STATUSES = frozenset({500, 502, 503, 504})
#: How far :func:`wraps_view` looks through the wrappers around a view.
_MAX_WRAPPER_DEPTH = 6


class FailedRender(Exception):
    """A view answered 500, 502, 503 or 504 under ``stale_if_error``: a failed load, so that a
    stale response may be served instead of *response*."""

    def __init__(self, request: Request, response: Response) -> None:
        super().__init__(f"the view answered {response.status}")
        self.request = request
        self.response = response


class ViewOptions(NamedTuple):
    """How a decorated view's responses are cached, beyond the function options.

    :param cache_control: add ``Cache-Control: max-age`` (the entry's life) to stored responses.
    :param response_filter: called with a cacheable response; cached only when it returns True.
    :param query: the query parameters that enter the key; None for all of them.
    """

    cache_control: bool = False
    response_filter: ResponseFilter | None = None
    query: frozenset[str] | None = None


def wraps_view(view: object, is_target: Callable[[object], bool]) -> bool:
    """Does the view function *view* (what a URL rule dispatches to) run a target, for which
    *is_target* is True, as its view — directly or through decorators around it?

    A decorator is followed through ``__wrapped__`` (``functools.wraps``), ``functools.partial``
    (its function and arguments), bound methods and Flask's ``view_class``; through the
    closure of a wrapper function that took the wrapped function's ``__name__``
    (``wrapper.__name__ = view.__name__``); and through
    the attributes of a callable object (a class-based decorator) that has no ``__name__`` of
    its own or the target's. A view function that merely *calls* a cached helper it closes over
    is not taken for a wrapper of it: its name is its own.
    """
    seen: set[int] = set()

    def visit(node: object, depth: int) -> bool:
        if is_target(node):
            return True
        if depth >= _MAX_WRAPPER_DEPTH or id(node) in seen:
            return False
        seen.add(id(node))
        return any(visit(inner, depth + 1) for inner in _wrapped_by(node, is_target))

    return visit(view, 0)


def _wrapped_by(node: object, is_target: Callable[[object], bool]) -> Iterator[object]:
    """The callables *node* may be a wrapper of."""
    wrapped = getattr(node, "__wrapped__", None)
    if wrapped is not None:
        yield wrapped
    if isinstance(node, functools.partial):
        yield node.func
        yield from (arg for arg in (*node.args, *node.keywords.values()) if callable(arg))
    elif isinstance(node, types.MethodType):
        yield node.__func__
        yield node.__self__
    elif isinstance(node, types.FunctionType):
        for cell in node.__closure__ or ():
            try:
                inner = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(inner) and _same_name(node, inner, is_target):
                yield inner
    elif callable(node) and not isinstance(node, type) and hasattr(node, "__dict__"):
        own = getattr(node, "__name__", None)
        for inner in vars(node).values():
            if callable(inner) and (own is None or _same_name(node, inner, is_target)):
                yield inner
    view_class = getattr(node, "view_class", None)
    if isinstance(view_class, type):
        yield from (item for item in vars(view_class).values() if callable(item))


def _same_name(wrapper: object, inner: object, is_target: Callable[[object], bool]) -> bool:
    """Whether *wrapper* took the name of *inner* (or of what *inner* wraps in turn)."""
    name = getattr(wrapper, "__name__", None)
    while inner is not None:
        if getattr(inner, "__name__", None) == name:
            return True
        if is_target(inner):
            return False
        inner = getattr(inner, "__wrapped__", None)
    return False


class ViewCache:
    """Caches the whole responses of one decorated view."""

    def __init__(self, policy: LoadPolicy, key: KeySpec, options: ViewOptions) -> None:
        # A view renders in its request, which must not outlive its response: no timeouts.
        self.policy = dataclasses.replace(policy, soft_timeout=None, hard_timeout=None)
        self.key = key
        self.options = options
        self._vary_memo: dict[str, tuple[str, ...]] = {}
        self._keys: dict[tuple[Any, ...], tuple[Group, str]] = {}

    def group(self, endpoint: str, view_args: Mapping[str, Any]) -> str:
        """The group key of this view's entries for *view_args* (every entry key starts
        with it)."""
        return group_head(view_group(endpoint, view_args, self.key))

    def drop(self, backend: RedisCache, endpoint: str, view_args: Mapping[str, Any]) -> int:
        """Remove every entry (all hosts, query strings and ``Vary`` variants) of this view
        for *view_args*; the number of keys removed."""
        return backend.drop_group(group_index(view_group(endpoint, view_args, self.key)))

    def bypass(
        self, ctx: RequestContext, backend: CacheParts, rendered: Any, reason: str
    ) -> Response:
        """The response of what the view returned (*rendered*), not cached for *reason*:
        marked ``X-Cache: BYPASS``, logged and counted."""
        return _bypass(ctx.request, backend, _response(rendered), reason)

    def serve(
        self,
        ctx: RequestContext,
        backend: CacheParts,
        render: Callable[[], Any],
        after_response: bool = True,
    ) -> tuple[Response, bool, str]:
        """``(response, hit, key)`` for the request of *ctx*, from the cache or *render*.

        With a refreshing policy (``stale_ttl``, ``beta``) and *after_response*, a stale
        entry is served at once and re-rendered once the response has been sent, in a new
        request built from this one's URL and the headers the entry varies on (never its
        cookies or session); an entry that varies on ``Cookie`` is refreshed in its own
        request instead."""
        pending: list[Callable[[], object]] | None = None
        if after_response and (self.policy.stale_ttl or self.policy.beta):
            pending = []
        response, hit, key = self._serve(ctx, backend, render, pending)
        for work in pending or ():
            response.call_on_close(work)
        return response, hit, key

    def _serve(
        self,
        ctx: RequestContext,
        backend: CacheParts,
        render: Callable[[], Any],
        pending: list[Callable[[], object]] | None,
    ) -> tuple[Response, bool, str]:
        req = ctx.request
        if req.method not in ("GET", "HEAD"):
            return _bypass(req, backend, _response(render()), "method"), False, ""
        if "HTTP_AUTHORIZATION" in req.environ:
            return _bypass(req, backend, _response(render()), "authorization"), False, ""
        group, base = self._keys_of(req, self._entry_life(backend))
        vary = self._vary_memo.get(base, ())
        key = base
        for _ in range(2):  # the key the memo suggests, then the one a vary marker names
            key = _variant(req, base, vary) if vary else base
            background = None
            if pending is not None and "Cookie" not in vary:
                background = self._after_response(ctx, render, backend, base, vary, pending)
            try:
                value, hit = get_or_load(
                    backend,
                    key,
                    self._render,
                    self.policy,
                    (req, render, backend, base, vary),
                    group=group,
                    background=background,
                )
            except FailedRender as failed:  # no stale response to serve instead
                if failed.request is not req:  # another thread's render: not this request's
                    return self._unstored(req, backend, render()), False, key
                return _bypass(req, backend, failed.response, "status"), False, key
            if isinstance(value, Deliver):
                if not hit:  # this request rendered it
                    response, refused = value.result
                    if refused is not None:
                        return _bypass(req, backend, response, refused), False, key
                    return _answer_miss(req, response), False, key
                value = value.store  # another thread rendered it for the same key
            if isinstance(value, CachedResponse):
                return _answer_hit(req, value, ctx.app.response_class), True, key
            if not isinstance(value, VaryMarker) or value.headers == vary:
                break
            self._remember_vary(base, value.headers)
            vary = value.headers
        return self._unstored(req, backend, render()), False, key

    def _unstored(self, req: Request, backend: CacheParts, rendered: Any) -> Response:
        """The answer of a render this request made without storing it (another request
        rendered the key, or its variants kept changing): a MISS, or a BYPASS with the reason
        it could not have been stored anyway."""
        response = _response(rendered)
        chosen = rendered if isinstance(rendered, CacheResult) else None
        refused = self._refusal(response, chosen)
        if refused is not None:
            return _bypass(req, backend, response, refused)
        response.headers["X-Cache"] = "MISS"
        return response

    def _after_response(
        self,
        ctx: RequestContext,
        render: Callable[[], Any],
        backend: CacheParts,
        base: str,
        vary: tuple[str, ...],
        pending: list[Callable[[], object]],
    ) -> Background:
        """Re-render the view once the response is sent, in a new request with this one's
        URL and only the headers the entry varies on."""
        req = ctx.request
        app = ctx.app
        path, root, query = req.path, req.url_root, req.query_string
        headers = [(name, req.headers[name]) for name in vary if name in req.headers]

        def background(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[Schedule, Callable[[], Any]]:
            def load() -> Deliver:
                with app.test_request_context(
                    path, base_url=root, query_string=query, headers=headers
                ) as fresh:
                    return self._render(fresh.request, render, backend, base, vary)

            return _queue(pending), load

        return background

    def _entry_life(self, backend: CacheParts) -> float | None:
        ttl = self.policy.ttl if self.policy.ttl is not None else backend.default_ttl
        if ttl is None:
            return None
        return ttl + self.policy.kept_stale if self.policy.enveloped else ttl

    def _keys_of(self, req: Request, life: float | None) -> tuple[Group, str]:
        """The group of this request's entries and its key before any ``Vary``, remembered by
        the raw parts of the request they are built from.

        The group comes from the endpoint and the view arguments, which a default or template
        key spec turns into the same text every time: both are remembered. A callable spec is
        called on every request (it may read more than its arguments)."""
        environ = req.environ
        view_args = req.view_args or {}
        where = (environ.get("HTTP_HOST"), req.path, environ.get("QUERY_STRING", ""))
        raw: tuple[Any, ...] | None = None
        if self.key is None or isinstance(self.key, str):
            raw = (req.endpoint, *view_args.items(), *where)
            try:
                known = self._keys.get(raw)
            except TypeError:  # a view argument that cannot be hashed: nothing remembered
                known, raw = None, None
            if known is not None and known[0].ttl == life:
                return known
        group_name = view_group(req.endpoint or "", view_args, self.key)
        if raw is None:
            raw = (group_name, *where)
            known = self._keys.get(raw)
            if known is not None and known[0].ttl == life:
                return known
        query = req.args.items(multi=True)
        wanted = self.options.query
        if wanted is not None:
            query = (pair for pair in query if pair[0] in wanted)
        keys = (
            Group(group_index(group_name), life),
            view_key(group_name, req.host, req.path, query),
        )
        if len(self._keys) >= _MAX_MEMO:
            self._keys.clear()
        self._keys[raw] = keys
        return keys

    def _render(
        self,
        req: Request,
        render: Callable[[], Any],
        backend: CacheParts,
        base: str,
        vary: tuple[str, ...],
    ) -> Deliver:
        """Run the view; what to store under the key chosen for *vary* (and beside it), and
        the response. A view returning a :class:`CacheResult` chooses its entry's TTL and tags,
        or that it is not stored."""
        rendered = render()
        chosen = rendered if isinstance(rendered, CacheResult) else None
        response = _response(rendered)
        if self.policy.stale_if_error and response.status_code in _FAIL_SAFE_STATUSES:
            raise FailedRender(req, response)
        refused = self._refusal(response, chosen)
        if refused is not None:
            return Deliver(None, (response, refused))
        stored = (response, None)
        ttl = self._fresh_for(backend) if chosen is None or chosen.ttl is None else chosen.ttl
        tags = () if chosen is None else chosen.tags
        entry = self._entry_for(response, ttl)
        varies_on = tuple(sorted(h.title() for h in response.vary))
        if varies_on == vary:
            return Deliver(entry, stored, ttl=ttl, tags=tags)
        # The response varies on other headers than the key was chosen by: learn them, and
        # store it under the right variant (and the marker naming them under the base key).
        self._remember_vary(base, varies_on)
        if not varies_on:
            return Deliver(None, stored, ((base, entry),), ttl, tags)
        own = ((_variant(req, base, varies_on), entry),)
        marker = VaryMarker(varies_on)
        if not vary:
            return Deliver(marker, stored, own, ttl, tags)
        return Deliver(None, stored, (*own, (base, marker)), ttl, tags)

    def _refusal(self, response: FlaskResponse, chosen: CacheResult[Any] | None) -> str | None:
        """Why *response* (of a view that returned *chosen*, or not a CacheResult) cannot be
        stored, as the word of :data:`BYPASS_HEADER`; None when it can."""
        if chosen is not None and not chosen.store:
            return "store-false"
        if not _session_allows_caching(response):
            return "session"
        refused = _refusal(response)
        if refused is not None:
            return refused
        response_filter = self.options.response_filter
        if response_filter is not None and not response_filter(response):
            return "filter"
        return None

    def _fresh_for(self, backend: CacheParts) -> float | None:
        """Seconds a new entry is fresh: the TTL, shortened by the backend's jitter here (not
        when stored), so that its ``max-age`` is the life it really gets."""
        ttl = self.policy.ttl if self.policy.ttl is not None else backend.default_ttl
        if ttl is not None and backend.ttl_jitter:
            ttl *= 1.0 - backend.ttl_jitter * draw()
        return ttl

    def _entry_for(self, response: Response, ttl: float | None) -> CachedResponse:
        """The stored form of a response, with its ETag and (opt-in) max-age added."""
        body = response.get_data()
        if "ETag" not in response.headers:
            response.headers["ETag"] = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        if self.options.cache_control and "Cache-Control" not in response.headers:
            if ttl is not None:
                response.headers["Cache-Control"] = f"max-age={int(ttl)}"
        headers = tuple(
            (name, value)
            for name, value in response.headers.items()
            if name.lower() not in _UNSTORED_HEADERS
        )
        return CachedResponse(response.status_code, headers, body, time.time())

    def _remember_vary(self, base: str, headers: tuple[str, ...]) -> None:
        if len(self._vary_memo) >= _MAX_MEMO:
            self._vary_memo.clear()
        self._vary_memo[base] = headers


def _queue(pending: list[Callable[[], object]]) -> Schedule:
    def schedule(work: Callable[[], object]) -> bool:
        pending.append(work)
        return True

    return schedule


def _response(rendered: Any) -> FlaskResponse:
    """The response of what a view returned (a CacheResult's value)."""
    if isinstance(rendered, CacheResult):
        rendered = rendered.value
    return make_response(rendered)


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
    response = response_class(
        None, entry.status, _checked_headers([*entry.headers, ("X-Cache", "HIT"), ("Age", age)])
    )
    response.response = [entry.body]
    return response


#: Whether Werkzeug keeps a ``Headers``' items in a plain list ``_list`` (every version so
#: far): a hit's headers are then handed over as they are, 1.8 µs against 7.3 µs for
#: ``Headers(items)`` re-checking each one (``python -m bench.profile``, view hit). Otherwise
#: ``Headers(items)`` does it (tested: ``test_hits_are_the_same_without_werkzeug_s_list``).
FAST_HEADERS = type(getattr(Headers(), "_list", None)) is list


def _checked_headers(items: list[tuple[str, str]]) -> Headers:
    """Headers holding *items*, which are known to be valid (str names and values without line
    breaks), without Werkzeug validating each one again."""
    if not FAST_HEADERS:
        return Headers(items)
    headers = Headers()
    headers._list = items
    return headers


def request_session(ctx: RequestContext) -> Any:
    """The session of the request of *ctx* as opened, or None — without marking it accessed
    (the ``session`` property would). Flask keeps it in ``RequestContext._session`` (3.1+);
    there is no public way to look at it unmarked. The session tests (``test_views``) fail if
    Flask moves it."""
    return getattr(ctx, "_session", None)


def _answer_miss(req: Request, response: Response) -> Response:
    """The answer of a response this request rendered and stored."""
    if "If-None-Match" in req.headers and _matches(req, response.headers.get("ETag")):
        return _not_modified(tuple(response.headers.items()), "MISS")
    response.headers["X-Cache"] = "MISS"
    return response


def _bypass(req: Request, backend: CacheParts, response: Response, reason: str) -> Response:
    """*response*, which could not be cached for *reason*: marked, logged and counted."""
    counters = backend.counters
    name = counters.name if isinstance(counters, NameStats) else req.endpoint
    logger.debug("not caching the response of %s (%s %s): %s", name, req.method, req.path, reason)
    counters.bypass(reason)
    response.headers["X-Cache"] = "BYPASS"
    response.headers[BYPASS_HEADER] = reason
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
    session = request_session(request_ctx._get_current_object())  # type: ignore[attr-defined]
    if session is None or not session.accessed:
        return True
    response.vary.add("Cookie")
    if session.modified:
        return False
    return not (session and current_app.session_interface.should_set_cookie(current_app, session))


def _refusal(response: Response) -> str | None:
    """Why the response itself forbids storing it (HTTP semantics); None when nothing does."""
    if not 200 <= response.status_code < 300:
        return "status"
    if response.direct_passthrough:  # send_file: streamed too, but this says more
        return "passthrough"
    if response.is_streamed:
        return "streamed"
    if "Set-Cookie" in response.headers:
        return "cookie"
    control = response.cache_control
    if control.no_store:
        return "no-store"
    if control.private:
        return "private"
    if "*" in response.vary:
        return "vary"
    return None
