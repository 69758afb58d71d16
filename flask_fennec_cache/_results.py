"""What a cached call returns when asked whether it was a hit, and what a loader may return
to choose how its result is cached."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, NamedTuple, TypeVar

from ._validate import check_ttl
from .errors import ConfigurationError

__all__ = ["CacheLookup", "CacheResult"]

R = TypeVar("R")


class CacheLookup(NamedTuple, Generic[R]):
    """The result of a cached call, and whether it came from the cache."""

    value: R
    hit: bool
    key: str


class CacheResult(Generic[R]):
    """A loader's result with its own caching: return it from a cached function, a
    :class:`~flask_fennec_cache.CacheAside` loader or a cached view, and the caller gets
    *value* (a view: the response made from it).

    :param value: what the caller gets (and what is stored).
    :param ttl: seconds this result is fresh (e.g. an upstream's ``Cache-Control: max-age``),
        used as given (no TTL jitter); None uses the decorator's or backend's TTL.
    :param tags: tag names this entry carries besides the decorator's own. Their versions are
        read when the result is stored (the decorator's, before the load), so an invalidation
        of one of them while the loader runs is not seen: name the tags on the decorator when
        that matters.
    :param store: False to hand *value* to the caller without storing it (a partial or
        degraded result).

    .. versionadded:: 0.1
    """

    __slots__ = ("store", "tags", "ttl", "value")

    def __init__(
        self, value: R, ttl: float | None = None, tags: Iterable[str] = (), store: bool = True
    ) -> None:
        names = (tags,) if isinstance(tags, str) else tuple(tags)
        if isinstance(tags, str) or not all(isinstance(tag, str) for tag in names):
            raise ConfigurationError(
                f"CacheResult tags must be a sequence of names, e.g. tags=('users',), got {tags!r}"
            )
        self.value = value
        self.ttl = check_ttl(ttl)
        self.tags: tuple[str, ...] = names
        self.store = bool(store)

    def __repr__(self) -> str:
        return (
            f"CacheResult({self.value!r}, ttl={self.ttl!r}, tags={self.tags!r}, "
            f"store={self.store!r})"
        )
