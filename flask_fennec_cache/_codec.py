"""The entry codec of one cache: its serializer, compression and size limit, applied to entries."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._entries import MISSING, Stamped, Unreadable
from ._ratelog import RateLimitedLog
from ._stats import StatsBuffer
from ._tags import GenerationTag
from ._validate import check_key, pickle_secret
from .compression import Compressor
from .errors import ConfigurationError
from .serializers import (
    MSGPACK_MISSING,
    CorruptEntry,
    Envelope,
    decode,
    encode,
    envelope_head,
    msgpack_available,
    redecoder,
)

if TYPE_CHECKING:
    from ._generation import Generation

__all__ = ["MISSING", "EntryCodec", "Unreadable"]


class EntryCodec:
    """Turns entries into stored bytes and back, as one cache is configured to.

    :param serializer: ``"json"``, ``"msgpack"`` or ``"pickle"`` (which needs *secret_key*).
    :param max_value_bytes: the largest encoded value stored (checked before compression).
    """

    def __init__(
        self,
        serializer: str,
        secret_key: str | bytes | None,
        compression: str,
        compress_threshold: int,
        max_value_bytes: int,
        stats: StatsBuffer,
        log: RateLimitedLog,
    ) -> None:
        self.pickle_secret = pickle_secret(serializer, secret_key)
        if serializer == "msgpack" and not msgpack_available():
            raise ConfigurationError(MSGPACK_MISSING)
        self.serializer = serializer
        self.max_value_bytes = max_value_bytes
        self._compress = Compressor(compression, compress_threshold)
        self._stats = stats
        self._log = log
        #: The cache's generation (set once its guard exists); entries older are misses.
        self.generation: Generation | None = None

    def encode(self, key: str, value: Any) -> bytes | None:
        """The stored form of *value* (compressed when large), or None when it is too large.

        Raises :class:`~flask_fennec_cache.SerializationError` for a value the format cannot
        hold exactly, and :class:`~flask_fennec_cache.InvalidKeyError` for an unusable key.
        """
        check_key(key)
        inner = value.value if isinstance(value, Envelope) else value
        data = encode(inner, key, self.pickle_secret, self.serializer)
        if len(data) > self.max_value_bytes:
            self._log.warning(
                "too-large",
                f"not caching {key!r}: {len(data)} bytes is over the "
                f"{self.max_value_bytes}-byte limit (FENNEC_CACHE_MAX_VALUE_BYTES)",
            )
            return None
        data = self._compress(data)
        generation = 0 if self.generation is None else self.generation.current
        if isinstance(value, Envelope):
            if generation:
                value = dataclasses.replace(value, generation=generation)
            return envelope_head(value) + data
        return GenerationTag.head(generation) + data if generation else data

    def decode(self, key: str, data: bytes | None) -> Any:
        """The decoded entry, :data:`MISSING` for no data, or :class:`Unreadable` (counted and
        logged) for bytes this library cannot read."""
        if data is None:
            return MISSING
        try:
            entry = decode(data, self.pickle_secret, self.max_value_bytes)
        except CorruptEntry as exc:
            self._stats.add("errors")
            self._log.warning("corrupt", f"treating {key!r} as a miss: {exc}")
            return Unreadable(data)
        generation = self.generation
        if generation is not None and (generation.current or type(entry) is Stamped):
            return generation.admit(entry)
        return entry

    def ready_form(self, data: bytes, entry: Any) -> tuple[Callable[[Any], Any], Any]:
        """How a near cache keeps *data* (decoded as *entry*) ready to decode again per hit."""
        if data[:1] == GenerationTag.byte:
            data = GenerationTag.inner(data)
        return redecoder(data, entry, self.pickle_secret, self.max_value_bytes)
