"""What a cached call returns when asked whether it was a hit."""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

__all__ = ["CacheLookup"]

R = TypeVar("R")


class CacheLookup(NamedTuple, Generic[R]):
    """The result of a cached call, and whether it came from the cache."""

    value: R
    hit: bool
    key: str
