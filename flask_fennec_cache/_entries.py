"""What a stored entry decodes to, the markers for no entry and for unreadable bytes, write ids."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MISSING",
    "VERSION_LENGTH",
    "CachedResponse",
    "CorruptEntry",
    "Envelope",
    "Lease",
    "Stamped",
    "Unreadable",
    "VaryMarker",
    "new_version",
]

#: Characters of a write id (:func:`new_version`), as stored at the front of an envelope.
VERSION_LENGTH: Final = 16


class CorruptEntry(Exception):
    """Stored bytes that this library did not write, or cannot read any more."""


@dataclass(frozen=True)
class CachedResponse:
    """A finished HTTP response as stored: status, headers and the body bytes, unchanged."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float


@dataclass(frozen=True)
class VaryMarker:
    """Stored at a view's base key: its responses vary on these request headers."""

    headers: tuple[str, ...]


@dataclass(frozen=True)
class Lease:
    """A placeholder: some process is loading this key and holds the lease *token*."""

    token: str


@dataclass(frozen=True)
class Envelope:
    """A value with freshness metadata.

    :param version: random id of this write, for compare-and-set refreshes.
    :param fresh_until: Unix time after which the value is stale (served only while refreshing).
    :param load_seconds: how long the loader took (for probabilistic early refresh).
    :param tags: the tag versions current when the value was loaded.
    :param generation: the cache's generation when it was written (see :mod:`._generation`).
    """

    value: Any
    version: str
    fresh_until: float | None = None
    load_seconds: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    generation: int = 0


@dataclass(frozen=True)
class Stamped:
    """An entry (not an envelope) written under generation *generation* of its cache."""

    entry: Any
    generation: int


# A pickle names each class by its module. A pickled value may hold these records (a user's
# value with pickle enabled), so they keep the module they had before the codec was split in
# several modules: processes of either version read the other's pickles, byte for byte.
CachedResponse.__module__ = VaryMarker.__module__ = "flask_fennec_cache.serializers"
Lease.__module__ = Envelope.__module__ = "flask_fennec_cache.serializers"


class _Missing:
    """The marker for "no entry", distinct from a cached ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: "No entry under this key", distinct from a cached ``None``.
MISSING: Final = _Missing()


@dataclass(frozen=True)
class Unreadable:
    """An entry this library cannot decode (foreign or corrupt); a miss that loaders replace."""

    data: bytes


def new_version() -> str:
    """A random 16-character id for one write (envelope versions, lease tokens, tag versions)."""
    return secrets.token_hex(VERSION_LENGTH // 2)
