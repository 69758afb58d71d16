"""What a read entry means: a value to serve, a value to serve and refresh, or a miss."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping
from typing import Any

from ._codec import MISSING, Unreadable
from ._tagindex import TagIndex
from .serializers import Envelope, Lease

__all__ = ["classify", "draw", "usable"]

# The library's own generator for TTL jitter and early refresh: the global one is the app's
# (and test tools watch it), and a forked worker draws its own numbers.
_generator = random.Random()
os.register_at_fork(after_in_child=_generator.seed)
#: A random number in [0, 1) (TTL jitter, XFetch).
draw = _generator.random


def classify(
    entry: Any, tags: TagIndex, known: Mapping[str, str] | None = None, beta: float = 0.0
) -> tuple[Any, Envelope | None]:
    """``(value or MISSING, envelope to refresh or None)`` for a read entry.

    No entry, a lease (a load in progress), an unreadable entry and one written before one of
    its tags was invalidated are misses. An envelope past its freshness is served while it is
    refreshed (it is kept only for ``stale_ttl``); with *beta*, one near its expiry may be
    refreshed early (XFetch: the closer, and the slower its load was, the likelier).
    """
    if entry is MISSING or isinstance(entry, (Lease, Unreadable)):
        return MISSING, None
    if not isinstance(entry, Envelope):
        return entry, None
    if entry.tags and not tags.current(entry, known):
        return MISSING, None
    if entry.fresh_until is None:
        return entry.value, None
    now = time.time()
    if now >= entry.fresh_until:
        return entry.value, entry
    if beta and now - entry.load_seconds * beta * math.log(1.0 - draw()) >= entry.fresh_until:
        return entry.value, entry
    return entry.value, None


def usable(entry: Any, tags: TagIndex, known: Mapping[str, str] | None = None) -> Any:
    """The value a plain read may return from *entry* (only a fresh one), or MISSING."""
    if isinstance(entry, Envelope) and entry.fresh_until is not None:
        if time.time() >= entry.fresh_until:
            return MISSING  # stale: only loaders serve it, while they refresh it
    value, _ = classify(entry, tags, known)
    return value
