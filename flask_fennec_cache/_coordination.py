"""Who may load or write a key: leases, locks, compare-and-set, groups and single flight."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._flight import LeaseKeeper, SingleFlight
from ._guard import Guard
from ._scripts import Scripts
from ._stats import StatsBuffer
from ._validate import ttl_ms
from .errors import CacheUnavailable
from .serializers import lease_bytes, new_version

__all__ = ["Coordination", "Group"]


@dataclass(frozen=True)
class Group:
    """Keys stored and dropped together (one view's entries for one set of view arguments).

    :param index: the key (under the prefix) of the set listing the group's keys; it shares
        their cluster hash tag.
    :param ttl: the longest life (seconds) an entry of the group is given; None for ever.
    """

    index: str
    ttl: float | None


class Coordination:
    """The coordination primitives of one cache, each one atomic step in Redis.

    Keys are relative to *prefix*. Every change of a key goes through *forget* too, so this
    process's near cache drops it before Redis says so. A TTL of None is *default_ttl*.
    """

    def __init__(
        self,
        guard: Guard,
        scripts: Scripts,
        prefix: str,
        stats: StatsBuffer,
        forget: Callable[..., None],
        default_ttl: float | None,
    ) -> None:
        self._guard = guard
        self._scripts = scripts
        self._prefix = prefix
        self._stats = stats
        self._forget = forget
        self._default_ttl = default_ttl
        #: Coalesces this process's concurrent loads of one key.
        self.flights = SingleFlight()
        #: Renews the leases and locks this process holds while their holders work.
        self.keeper = LeaseKeeper(self.extend)

    def acquire_lease(
        self,
        key: str,
        replacing: tuple[str, bytes] | None,
        lease_ms: int,
        group: Group | None = None,
    ) -> str | bool | None:
        """Put a lease placeholder on *key* if it is empty, or if it still holds the unusable
        entry *replacing* names: ``("prefix", bytes it starts with)`` or ``("exact", bytes)``.

        With *group*, the key joins that group's index (so dropping the group cancels the
        load). Returns the lease token, False when the key is taken, None when Redis failed.
        """
        token = new_version() + new_version()
        mode, expected = replacing or ("absent", b"")
        args: list[Any] = [mode, expected, lease_bytes(token), lease_ms]
        if group is None:
            keys = [self._prefix + key]
            acquired = self._guard.run(
                "lease", lambda c: self._scripts.lease(keys, args, c), keys=(key,)
            )
        else:
            keys = [self._prefix + key, self._prefix + group.index]
            args.append(ttl_ms(group.ttl, self._default_ttl) or "")
            acquired = self._guard.run(
                "lease", lambda c: self._scripts.group_lease(keys, args, c), keys=(key,)
            )
        self._forget(key)
        return None if acquired is None else (token if acquired else False)

    def compare_and_set(
        self, key: str, expected: bytes, data: bytes | None, ttl: float | None
    ) -> bool:
        """Replace (or, with *data* None, delete) *key* only if it still starts with *expected*."""
        ms = ttl_ms(ttl, self._default_ttl) if data is not None else None
        args = [expected, data or b"", ms or b""]
        done = self._guard.run(
            "compare_and_set",
            lambda c: self._scripts.cas([self._prefix + key], args, c),
            keys=(key,),
        )
        self._forget(key)
        if done and data is not None:
            self._stats.add("sets")
        return bool(done)

    def store_in_group(
        self,
        group: Group,
        guard: str,
        expected: bytes,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        """Write *writes* (key, data; None deletes) into *group* if *guard* still starts with
        *expected* (nobody wrote or dropped it since its load began); all in one step."""
        keys = [self._prefix + guard, self._prefix + group.index]
        keys += [self._prefix + key for key, _ in writes]
        args: list[Any] = [expected, ttl_ms(ttl, self._default_ttl) or ""]
        args += [data or b"" for _, data in writes]
        written = (guard, *(key for key, _ in writes))
        done = self._guard.run(
            "set", lambda c: self._scripts.group_store(keys, args, c), keys=written
        )
        self._forget(guard, *(key for key, _ in writes))
        if done:
            self._stats.add("sets", sum(1 for _, data in writes if data is not None))
        return bool(done)

    def drop_group(self, index: str) -> list[bytes]:
        """Remove every key the group index *index* lists, and the index, in one step; the
        full names of the keys removed ([] when Redis failed and fail-open is on)."""
        try:
            removed = self._guard.run(
                "delete",
                lambda c: self._scripts.group_drop([self._prefix + index], [], c),
                keys=(),  # a removal: never stale
            )
        except CacheUnavailable:
            self._guard.pending.drop_group(index)
            raise
        if removed is None:
            self._guard.pending.drop_group(index)  # applied when Redis answers again
        return [bytes(name) for name in removed or ()]

    def try_lock(self, name: str, token: str, timeout: float) -> bool | None:
        """``SET name token NX PX``: True when taken, False when held, None when Redis failed."""
        ms = max(1, int(timeout * 1000))
        full = self._prefix + name
        taken = self._guard.run("lock", lambda c: bool(c.set(full, token, nx=True, px=ms)), keys=())
        return None if taken is None else bool(taken)

    def extend(self, name: str, expected: bytes, ttl_ms: int, grow: bool = False) -> bool:
        """Make *name* expire in *ttl_ms* if it still starts with *expected* (its holder's
        lease or lock); with *grow*, never shorten its life (a value kept while refreshed).
        Quiet (for the renewing thread): a failure is False, never logged or raised."""
        key = self._prefix + name
        args = [expected, ttl_ms, "grow" if grow else ""]
        return bool(self._guard.quietly(lambda c: self._scripts.extend([key], args, c)))
