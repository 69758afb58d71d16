"""OpenTelemetry spans for reads, loads and invalidations (the ``otel`` extra).

With ``opentelemetry-api`` installed, every read of a named cache (``@cache`` functions and
views, ``CacheAside``, fragments) is a ``fennec_cache.read`` span, every load a
``fennec_cache.load`` span inside it, and every ``delete``, ``clear``, ``invalidate_tags`` and
view-group drop a ``fennec_cache.invalidate`` span. Their attributes (:data:`NAME`,
:data:`OUTCOME`, :data:`NAMESPACE`, :data:`KIND`, :data:`COUNT`) never hold a value or a whole
key: the namespace is the key up to its first ``:`` (``user`` for ``user:42``).

Without the package, :data:`TRACER` is None: the read path checks it once per read, and the
invalidation methods are not wrapped at all. With the API but no tracer provider set (nothing
would record them), no span is started either: :func:`active` is False until an application
sets one (it cannot be unset; it is noticed within a second).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._stats import StatsBuffer
from ._validate import RESERVED

if TYPE_CHECKING:
    from ._stats import Counts

try:  # the optional ``otel`` extra
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on the environment
    _trace = None  # type: ignore[assignment]

__all__ = [
    "COUNT", "KIND", "NAME", "NAMESPACE", "OUTCOME", "TRACER", "TracedCounts", "active",
    "invalidation", "load_span", "named", "namespace_of", "read_span",
]  # fmt: skip

#: The tracer, or None when ``opentelemetry-api`` is not installed.
TRACER: Final[Any] = None if _trace is None else _trace.get_tracer("flask_fennec_cache")

#: Has a tracer provider been set? (Checked by :func:`active` until it has.)
_provider_set = False
_next_check = 0.0

#: The name of the cached function, view, fragment or ``CacheAside`` (see ``name=``).
NAME: Final = "fennec_cache.name"
#: A read's outcome: ``hit``, ``miss``, ``stale``, ``fail-safe`` or ``error``; a load's or an
#: invalidation's: ``ok`` or ``error``.
OUTCOME: Final = "fennec_cache.outcome"
#: The key's namespace: the key up to its first ``:``.
NAMESPACE: Final = "fennec_cache.namespace"
#: An invalidation's kind: ``delete``, ``clear``, ``tags`` or ``group``.
KIND: Final = "fennec_cache.invalidation"
#: How many keys, tags or patterns an invalidation names.
COUNT: Final = "fennec_cache.count"

#: What a count means as a read's outcome (the last one counted wins: a stale serve counts a
#: hit, then ``stale_hits``).
_OUTCOMES: Final = {"misses": "miss", "stale_hits": "stale", "fail_safe_hits": "fail-safe"}

#: The name an invalidation is made for (a decorated function's ``invalidate``), if any.
_invalidating: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fennec_cache_invalidating", default=None
)

F = TypeVar("F", bound=Callable[..., Any])


def active() -> bool:
    """Are spans recorded: is a tracer provider set? (Call only when :data:`TRACER` is set.)

    Asking OpenTelemetry costs about 2 µs, more than a near-cache hit: until a provider is set,
    it is asked at most once a second (spans start within a second of the app setting one).
    """
    global _provider_set, _next_check
    if _provider_set:
        return True
    now = time.monotonic()
    if now >= _next_check:
        _next_check = now + 1.0
        provider = _trace.get_tracer_provider()
        _provider_set = not isinstance(provider, _trace.ProxyTracerProvider)
    return _provider_set


def namespace_of(key: str) -> str:
    """The namespace of *key*: its text up to the first ``:`` (all of it without one)."""
    return key.partition(":")[0]


class TracedCounts:
    """A name's counts that also tell the current read span its outcome while it is open."""

    __slots__ = ("_counts", "_span", "name")

    def __init__(self, counts: Counts, span: Any) -> None:
        self._counts = counts
        self._span: Any = span
        self.name: str = getattr(counts, "name", "")

    @property
    def totals(self) -> StatsBuffer:
        return self._counts.totals

    def close(self) -> None:
        """The read span ended: later counts (a background refresh) leave it alone."""
        self._span = None

    def hit(self) -> None:
        self._counts.hit()
        if self._span is not None:
            self._span.set_attribute(OUTCOME, "hit")

    def add(self, field: str, amount: int = 1) -> None:
        self._counts.add(field, amount)
        outcome = _OUTCOMES.get(field)
        if outcome is not None and self._span is not None:
            self._span.set_attribute(OUTCOME, outcome)

    def loaded(self, seconds: float, failed: bool) -> None:
        self._counts.loaded(seconds, failed)

    def bypass(self, reason: str) -> None:
        self._counts.bypass(reason)


@contextlib.contextmanager
def read_span(counts: Counts, key: str) -> Iterator[TracedCounts]:
    """A ``fennec_cache.read`` span for one read of *key* under *counts*' name; yields the
    counts to read with (they set the span's outcome). Call only when :data:`TRACER` is set."""
    attributes = {NAME: getattr(counts, "name", ""), NAMESPACE: namespace_of(key)}
    with TRACER.start_as_current_span("fennec_cache.read", attributes=attributes) as span:
        traced = TracedCounts(counts, span)
        try:
            yield traced
        except BaseException:
            span.set_attribute(OUTCOME, "error")
            raise
        finally:
            traced.close()


@contextlib.contextmanager
def load_span(counts: Counts) -> Iterator[None]:
    """A ``fennec_cache.load`` span around one load (a child of the read, when in one)."""
    attributes = {NAME: getattr(counts, "name", "")}
    with TRACER.start_as_current_span("fennec_cache.load", attributes=attributes) as span:
        try:
            yield
        except BaseException:
            span.set_attribute(OUTCOME, "error")
            raise
        span.set_attribute(OUTCOME, "ok")


@contextlib.contextmanager
def named(name: str) -> Iterator[None]:
    """Invalidations made inside are for *name* (a decorated function's or view's)."""
    token = _invalidating.set(name)
    try:
        yield
    finally:
        _invalidating.reset(token)


def invalidation(kind: str) -> Callable[[F], F]:
    """Wrap a cache's invalidation method in a ``fennec_cache.invalidate`` span of *kind*
    (returned unchanged when OpenTelemetry is not installed). The method's positional
    arguments are the keys, tags, pattern or group index; a result of None or False (Redis did
    not get it) is the outcome ``error``."""

    def wrap(method: F) -> F:
        if TRACER is None:
            return method

        @functools.wraps(method)
        def traced(self: Any, *items: Any, **kwargs: Any) -> Any:
            if not active():
                return method(self, *items, **kwargs)
            attributes: dict[str, Any] = {KIND: kind, COUNT: len(items)}
            name = _invalidating.get()
            if name is not None:
                attributes[NAME] = name
            spaces = sorted({namespace_of(str(item).removeprefix(RESERVED)) for item in items})
            if spaces and kind != "tags":
                attributes[NAMESPACE] = spaces[0] if len(spaces) == 1 else ",".join(spaces[:8])
            with TRACER.start_as_current_span(
                "fennec_cache.invalidate", attributes=attributes
            ) as span:
                try:
                    result = method(self, *items, **kwargs)
                except BaseException:
                    span.set_attribute(OUTCOME, "error")
                    raise
                span.set_attribute(OUTCOME, "error" if result is None or result is False else "ok")
                return result

        return traced  # type: ignore[return-value]

    return wrap
