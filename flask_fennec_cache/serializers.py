"""Encode values for Redis and decode them back; every stored value starts with a format tag.

=====  ==================================================================================
tag    layout
=====  ==================================================================================
``j``  UTF-8 JSON of the value (the default: one byte over plain JSON)
``J``  the same, holding a number of 19 or more digits: decoded by the standard library only
       (orjson would turn integers beyond 64 bits into floats)
``r``  a cached HTTP response: JSON head (status, headers, time), newline, raw body bytes
``v``  a view's vary marker: JSON list of the request headers its responses vary on
``e``  an envelope: 16-character version, JSON metadata (soft expiry, load time, tag
       versions, and the generation ``g`` when above zero), newline, then an inner entry with
       its own tag
``G``  an entry written under a generation of its cache above zero (after an O(1)
       invalidation of the whole prefix): the generation in ASCII digits, newline, then the
       entry with its own tag
``L``  a lease: a loader is filling this key; the rest is its random token
``h``  a :class:`markupsafe.Markup` (HTML marked safe, e.g. a rendered template fragment):
       its text as a UTF-8 JSON string, read back as ``Markup`` so Jinja does not escape it
``z``  zlib-compressed entry (a ``j``, ``J``, ``h``, ``m``, ``p`` or ``r`` one), for values
       over a threshold
``Z``  the same, compressed with zstd
``m``  opt-in MessagePack of the value (the ``msgpack`` extra): bytes and non-string dict keys
       round-trip, which JSON cannot hold
``p``  opt-in pickle: 32-byte HMAC-SHA256 of the pickle under the app's secret, then the pickle
=====  ==================================================================================

Entries are read by their tag whatever the cache is configured to write, so changing the
serializer needs no flush: old entries stay readable until they expire.

A hit hands back a value of the same type as the one stored, at every depth, or the value is
refused with a :class:`~flask_fennec_cache.SerializationError` naming where it is
(``value["items"][3]["created"]``), what it is and what to do: JSON keeps exactly ``dict``
(with ``str`` keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``; MessagePack
also ``bytes`` and non-string keys. Subclasses (enum members, namedtuples, ``OrderedDict``,
``str`` subclasses, ...) are refused, since they would come back as their base type, and so
are lists and dicts nested more than :data:`MAX_NESTING` levels deep.

Pickle is used only when the cache is configured with a secret key for it; an entry whose
signature does not verify is never unpickled (it reads as corrupt, hence as a miss).

This module is the codec's front: :func:`encode` (which tag a value gets), :func:`decode`,
:func:`redecoder`, and the names the rest of the package imports. The parts: ``_entries``
(the records entries decode to), ``_tags`` (one class per tag, and the registry ``decode``
dispatches on), ``_exact`` (the exact-type check and its messages), ``_messagepack`` and
``compression``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from markupsafe import Markup

from ._entries import (
    MISSING,
    CachedResponse,
    CorruptEntry,
    Envelope,
    Lease,
    Unreadable,
    VaryMarker,
    new_version,
)
from ._exact import MAX_NESTING
from ._messagepack import NOT_INSTALLED as MSGPACK_MISSING
from ._messagepack import available as msgpack_available
from ._tags import (
    DEFAULT_MAX_SIZE,
    TAGS,
    EnvelopeTag,
    JsonTag,
    LeaseTag,
    MarkupTag,
    MessagePackTag,
    PickleTag,
    ResponseTag,
    Tag,
    VaryTag,
    decode,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "LEASE_TAG",
    "MAX_NESTING",
    "MISSING",
    "MSGPACK_MISSING",
    "CachedResponse",
    "CorruptEntry",
    "Envelope",
    "Lease",
    "Unreadable",
    "VaryMarker",
    "decode",
    "encode",
    "envelope_head",
    "lease_bytes",
    "msgpack_available",
    "new_version",
    "redecoder",
    "version_prefix",
]

#: The first byte of a lease placeholder (``data[:1]``): a key being loaded, not a value.
LEASE_TAG: Final = LeaseTag.byte

envelope_head = EnvelopeTag.head
version_prefix = EnvelopeTag.version_prefix
lease_bytes = LeaseTag.dump


def encode(
    value: Any, key: str, pickle_secret: bytes | None = None, serializer: str = "json"
) -> bytes:
    """Encode *value* with its format tag; raise SerializationError naming the problem and key.

    With *pickle_secret*, plain values are pickled and signed; with *serializer* ``"msgpack"``
    they are written as MessagePack; otherwise as JSON. Either way a value that would not come
    back with the same types at every depth (a tuple, an enum member, an ``OrderedDict``) is
    refused, naming where in the value it is. A :class:`markupsafe.Markup` on its own is kept
    as Markup by every format.
    """
    if isinstance(value, CachedResponse):
        return ResponseTag.dump(value)
    if isinstance(value, VaryMarker):
        return VaryTag.dump(value)
    if pickle_secret is not None:
        return PickleTag.dump(value, key, pickle_secret)
    if type(value) is Markup:
        return MarkupTag.dump(value, key)
    if serializer == "msgpack":
        return MessagePackTag.dump(value, key)
    return JsonTag.dump(value, key)


_IMMUTABLE = (CachedResponse, VaryMarker, Markup, str, int, float, bool, bytes, type(None))


def _same(entry: Any) -> Any:
    return entry


def redecoder(
    data: bytes,
    entry: Any,
    pickle_secret: bytes | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> tuple[Callable[[Any], Any], Any]:
    """``(function, argument)``: ``function(argument)`` decodes *data* (whose decoding is
    *entry*) again, with the one-time work already done.

    For the near cache, which hands every caller a fresh copy of a mutable value: the format
    dispatch, the tag slicing and the pickle signature check are paid once per fill instead of
    once per hit, and immutable entries are handed out as they are. Compressed entries stay
    compressed (the near cache's byte bound counts their stored size).
    """
    if type(entry) in _IMMUTABLE:
        return _same, entry
    if type(entry) is Envelope:
        inner = data[data.index(b"\n") + 1 :]
        redecode, argument = redecoder(inner, entry.value, pickle_secret, max_size)
        if redecode is _same:
            return _same, entry  # frozen, and its value immutable
        fields = {name: got for name, got in entry.__dict__.items() if name != "value"}
        return _rebuilt_envelope, (redecode, argument, fields)
    return TAGS.get(data[0], Tag).redecoder(data, pickle_secret, max_size)


_new_object = object.__new__


def _rebuilt_envelope(form: tuple[Callable[[Any], Any], Any, dict[str, Any]]) -> Envelope:
    """An envelope with the metadata *fields* parsed at the fill and a fresh decoding of its
    value: a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs
    about six times this copy of its fields (its tags are shared: never mutated)."""
    redecode, argument, fields = form
    copy = _new_object(Envelope)
    state = copy.__dict__
    state.update(fields)
    state["value"] = redecode(argument)
    return copy
