"""The format tags: one class per tag byte, in the registry that :func:`decode` dispatches on.

A tag is read in one of three ways, and :func:`decode` looks each up in one table (no call in
between, as it is on every hit):

- a :class:`PayloadTag`'s value is one function of the bytes after the tag (``loads``);
- a :class:`WrapperTag` holds another entry, compressed (``unwrap``);
- any other :class:`Tag` reads the whole entry, with the secret and size limit (``read``).

Writing a value is ``dump`` on the tag :func:`~flask_fennec_cache.serializers.encode` picks.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import hmac
import json
import pickle
import re
from collections.abc import Callable
from typing import Any, ClassVar

from markupsafe import Markup

from ._entries import (
    VERSION_LENGTH,
    CachedResponse,
    CorruptEntry,
    Envelope,
    Lease,
    Stamped,
    VaryMarker,
)
from ._exact import JSON_RULES, Refused, check_value, refusal, surrogate_refusal, unencodable
from ._messagepack import pack, unpack
from .compression import ZLIB_TAG, ZSTD_TAG, decompress
from .errors import SerializationError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "TAGS",
    "EnvelopeTag",
    "ExactJsonTag",
    "GenerationTag",
    "JsonTag",
    "LeaseTag",
    "MarkupTag",
    "MessagePackTag",
    "PayloadTag",
    "PickleTag",
    "ResponseTag",
    "Tag",
    "VaryTag",
    "WrapperTag",
    "ZlibTag",
    "ZstdTag",
    "decode",
    "loads_exact_json",
    "loads_json",
]

#: Largest entry a compressed one may inflate to, unless the cache sets its own limit.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

#: Every tag class, by its byte as an int (``data[0]``).
TAGS: dict[int, type[Tag]] = {}

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_json_decoder = json.JSONDecoder()
_LINE_BREAK = re.compile(r"[\r\n]")

_orjson_loads: Callable[[bytes | memoryview], Any] | None
try:  # orjson decodes 3-4x faster; it is optional (the "fast" extra)
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = None


def loads_json(payload: bytes | memoryview) -> Any:
    """The value of UTF-8 JSON *payload* (integers beyond 64 bits need :func:`loads_exact_json`)."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(payload)
        except ValueError:
            pass  # NaN and Infinity: the standard decoder reads these
    return loads_exact_json(payload)


def loads_exact_json(payload: bytes | memoryview) -> Any:
    """JSON read by the standard library (integers of any size stay integers)."""
    return _json_decoder.decode(codecs.decode(payload, "utf-8"))


Redecoder = tuple[Callable[[Any], Any], Any]


class Tag:
    """A format tag: the byte its entries start with, and how they are read.

    A subclass given ``byte=`` is registered in :data:`TAGS` under it.
    """

    #: The tag, as bytes and as an int (``data[:1]``, ``data[0]``).
    byte: ClassVar[bytes]
    code: ClassVar[int]
    #: Whether a compressed entry may hold an entry of this tag.
    compressible: ClassVar[bool] = True

    def __init_subclass__(cls, byte: bytes = b"", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if byte:
            if len(byte) != 1 or byte[0] in TAGS:
                raise TypeError(f"{cls.__name__}: the tag {byte!r} is not one new byte")
            cls.byte, cls.code = byte, byte[0]
            TAGS[cls.code] = cls

    @staticmethod
    def read(data: bytes, pickle_secret: bytes | None, max_size: int) -> Any:
        """The value of the entry *data* (tag included); ValueError, TypeError, KeyError or
        IndexError when it is malformed."""
        raise NotImplementedError

    @classmethod
    def redecoder(cls, data: bytes, pickle_secret: bytes | None, max_size: int) -> Redecoder:
        """``(function, argument)`` whose call decodes *data* again (see
        :func:`~flask_fennec_cache.serializers.redecoder`): by default the whole decode."""
        return functools.partial(decode, pickle_secret=pickle_secret, max_size=max_size), data


class PayloadTag(Tag):
    """A tag whose value is one function of the bytes after the tag."""

    @staticmethod
    def loads(payload: bytes | memoryview) -> Any:
        """The value of an entry from the bytes after its tag."""
        raise NotImplementedError

    @classmethod
    def redecoder(cls, data: bytes, pickle_secret: bytes | None, max_size: int) -> Redecoder:
        return cls.loads, data[1:]


class WrapperTag(Tag):
    """A compressed entry: the tag, then another entry (with its own tag), compressed.

    Written by :class:`~flask_fennec_cache.compression.Compressor`.
    """

    compressible = False

    @staticmethod
    def unwrap(data: bytes, limit: int) -> bytes:
        """The entry inside *data*; ValueError if it is corrupt or inflates past *limit* bytes."""
        raise NotImplementedError


# -- JSON ----------------------------------------------------------------------------------


class JsonTag(PayloadTag, byte=b"j"):
    """``j``: UTF-8 JSON of the value (the default: one byte over plain JSON)."""

    loads = staticmethod(loads_json)

    @staticmethod
    def dump(value: Any, key: str) -> bytes:
        """The ``j`` (or ``J``) entry of *value*; SerializationError naming the problem and key
        unless JSON hands *value* back exactly."""
        try:
            long_int = check_value(value, JSON_RULES)
            data = _json_encoder.encode(value).encode("utf-8")
        except Refused as refused:
            raise refusal(value, key, refused, JSON_RULES) from refused
        except UnicodeEncodeError as exc:
            # A surrogate code point: JSON would escape it, but a pair of them would come back
            # as the one character they encode.
            raise surrogate_refusal(value, key) from exc
        except (TypeError, ValueError, RecursionError) as exc:
            raise unencodable(value, key, JSON_RULES.name, exc) from exc
        return (ExactJsonTag.byte if long_int else JsonTag.byte) + data


class ExactJsonTag(PayloadTag, byte=b"J"):
    """``J``: the same, holding a number of 19 or more digits, decoded by the standard library
    only (orjson would turn integers beyond 64 bits into floats). Written by
    :meth:`JsonTag.dump`."""

    loads = staticmethod(loads_exact_json)


class MarkupTag(PayloadTag, byte=b"h"):
    """``h``: a :class:`markupsafe.Markup` (HTML marked safe, e.g. a rendered fragment) as a
    UTF-8 JSON string, read back as ``Markup`` so Jinja does not escape it."""

    @staticmethod
    def dump(value: Markup, key: str) -> bytes:
        """The entry of *value* (exactly a Markup); SerializationError for a lone surrogate."""
        try:
            return MarkupTag.byte + _json_encoder.encode(str(value)).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise surrogate_refusal(value, key) from exc

    @staticmethod
    def loads(payload: bytes | memoryview) -> Markup:
        # A JSON string, not the bare text: a foreign value that merely starts with "h" must
        # not read as an entry.
        text = loads_json(payload)
        if type(text) is not str:
            raise ValueError("a markup entry holds a JSON string")
        return Markup(text)


class ResponseTag(Tag, byte=b"r"):
    """``r``: a cached HTTP response: JSON head (status, headers, time), newline, raw body."""

    @staticmethod
    def dump(response: CachedResponse) -> bytes:
        """The entry of *response* (its body stored as it is)."""
        head = {"s": response.status, "h": response.headers, "t": response.stored_at}
        return ResponseTag.byte + _json_encoder.encode(head).encode("utf-8") + b"\n" + response.body

    @staticmethod
    def read(data: bytes, pickle_secret: bytes | None, max_size: int) -> CachedResponse:
        end = data.index(b"\n")
        head = loads_json(memoryview(data)[1:end])
        headers = tuple((name, value) for name, value in head["h"])
        if not all(type(name) is str and type(value) is str for name, value in headers):
            raise ValueError("header names and values must be strings")
        if _LINE_BREAK.search("".join(name + value for name, value in headers)):
            raise ValueError("a header holds a line break")  # hits skip Werkzeug's own check
        return CachedResponse(int(head["s"]), headers, data[end + 1 :], float(head["t"]))


class VaryTag(PayloadTag, byte=b"v"):
    """``v``: a view's vary marker: JSON list of the request headers its responses vary on."""

    @staticmethod
    def dump(marker: VaryMarker) -> bytes:
        """The entry of *marker*."""
        return VaryTag.byte + _json_encoder.encode(marker.headers).encode("utf-8")

    @staticmethod
    def loads(payload: bytes | memoryview) -> VaryMarker:
        headers = _json_decoder.decode(codecs.decode(payload, "utf-8"))
        return VaryMarker(tuple(str(name) for name in headers))


# -- the library's own records ---------------------------------------------------------------


class EnvelopeTag(Tag, byte=b"e"):
    """``e``: an envelope: 16-character version, JSON metadata (soft expiry, load time, tag
    versions), newline, then an inner entry with its own tag (compressed on its own, so that
    the version stays at the front for compare-and-set)."""

    compressible = False

    @staticmethod
    def head(envelope: Envelope) -> bytes:
        """The bytes before an envelope's inner entry (its version must be 16 characters)."""
        fresh = None if envelope.fresh_until is None else round(envelope.fresh_until, 3)
        meta: dict[str, Any] = {
            "f": fresh,
            "d": round(envelope.load_seconds, 4),
            "t": envelope.tags,
        }
        if envelope.generation:
            meta["g"] = envelope.generation
        version = envelope.version.encode("ascii")
        return EnvelopeTag.byte + version + _json_encoder.encode(meta).encode("utf-8") + b"\n"

    @staticmethod
    def version_prefix(version: str) -> bytes:
        """The leading bytes that identify one envelope write (for compare-and-set)."""
        return EnvelopeTag.byte + version.encode("ascii")

    @staticmethod
    def read(data: bytes, pickle_secret: bytes | None, max_size: int) -> Envelope:
        end = data.index(b"\n")
        version = codecs.decode(memoryview(data)[1 : 1 + VERSION_LENGTH], "ascii")
        head = codecs.decode(memoryview(data)[1 + VERSION_LENGTH : end], "utf-8")
        meta = _json_decoder.decode(head)
        inner = decode(data[end + 1 :], pickle_secret, max_size)
        if isinstance(inner, (Envelope, Lease)):
            raise ValueError("an envelope cannot hold another envelope or a lease")
        fresh = meta["f"]
        tags = {str(k): str(v) for k, v in meta["t"].items()}
        return Envelope(inner, version, None if fresh is None else float(fresh), float(meta["d"]),
                        tags, int(meta.get("g", 0)))  # fmt: skip


class LeaseTag(PayloadTag, byte=b"L"):
    """``L``: a lease: a loader is filling this key; the rest is its random token."""

    compressible = False

    @staticmethod
    def dump(token: str) -> bytes:
        """The stored form of a lease placeholder."""
        return LeaseTag.byte + token.encode("ascii")

    @staticmethod
    def loads(payload: bytes | memoryview) -> Lease:
        return Lease(codecs.decode(payload, "ascii"))


class GenerationTag(Tag, byte=b"G"):
    """``G``: an entry written under a generation of its cache above zero (see
    :mod:`flask_fennec_cache._generation`): the generation in ASCII digits, newline, then the
    entry with its own tag (an envelope carries its generation in its metadata instead)."""

    compressible = False

    @staticmethod
    def head(generation: int) -> bytes:
        """The bytes before an entry written under *generation*."""
        return GenerationTag.byte + str(generation).encode("ascii") + b"\n"

    @staticmethod
    def read(data: bytes, pickle_secret: bytes | None, max_size: int) -> Stamped:
        end = data.index(b"\n")
        inner = decode(data[end + 1 :], pickle_secret, max_size)
        if isinstance(inner, (Envelope, Lease, Stamped)):
            raise ValueError("a generation stamp holds only a value, a response or a marker")
        return Stamped(inner, int(data[1:end]))

    @staticmethod
    def inner(data: bytes) -> bytes:
        """The stored entry inside a stamped one."""
        return data[data.index(b"\n") + 1 :]


# -- compression -----------------------------------------------------------------------------


class ZlibTag(WrapperTag, byte=ZLIB_TAG):
    """``z``: a zlib-compressed entry (a ``j``, ``J``, ``h``, ``m``, ``p`` or ``r`` one)."""

    unwrap = staticmethod(decompress)


class ZstdTag(WrapperTag, byte=ZSTD_TAG):
    """``Z``: the same, compressed with zstd."""

    unwrap = staticmethod(decompress)


# -- opt-in formats --------------------------------------------------------------------------


class MessagePackTag(PayloadTag, byte=b"m"):
    """``m``: MessagePack of the value (the ``msgpack`` extra): bytes and non-string dict keys
    round-trip, which JSON cannot hold."""

    loads = staticmethod(unpack)

    @staticmethod
    def dump(value: Any, key: str) -> bytes:
        """The entry of *value*; SerializationError unless MessagePack hands it back exactly."""
        return MessagePackTag.byte + pack(value, key)


class PickleTag(Tag, byte=b"p"):
    """``p``: a signed pickle: 32-byte HMAC-SHA256 of the pickle under the app's secret, then
    the pickle. An entry whose signature does not verify is never unpickled."""

    SIGNATURE_LENGTH: ClassVar[int] = 32

    @staticmethod
    def dump(value: Any, key: str, secret: bytes) -> bytes:
        """The signed entry of *value*; SerializationError if it cannot be pickled."""
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"cannot pickle a {type(value).__qualname__} under key {key!r}: {exc}"
            ) from exc
        return PickleTag.byte + _signature(secret, payload) + payload

    @staticmethod
    def read(data: bytes, pickle_secret: bytes | None, max_size: int) -> Any:
        if pickle_secret is None:
            raise ValueError("a pickled entry, but pickle is not enabled for this cache")
        view = memoryview(data)
        payload = view[1 + PickleTag.SIGNATURE_LENGTH :]
        signature = view[1 : 1 + PickleTag.SIGNATURE_LENGTH]
        if not hmac.compare_digest(signature, _signature(pickle_secret, payload)):
            raise ValueError("the signature does not match: tampered, or signed with another key")
        try:
            return pickle.loads(payload)
        except Exception as exc:  # a verified pickle that fails (a class was removed): a miss
            raise ValueError(f"cannot unpickle: {exc}") from exc

    @classmethod
    def redecoder(cls, data: bytes, pickle_secret: bytes | None, max_size: int) -> Redecoder:
        return pickle.loads, data[1 + cls.SIGNATURE_LENGTH :]  # the signature was checked


def _signature(secret: bytes, payload: bytes | memoryview) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


# -- decoding ---------------------------------------------------------------------------------

_PAYLOAD_LOADERS: dict[int, Callable[[bytes | memoryview], Any]] = {
    code: tag.loads for code, tag in TAGS.items() if issubclass(tag, PayloadTag)
}
_UNWRAPPERS: dict[int, Callable[[bytes, int], bytes]] = {
    code: tag.unwrap for code, tag in TAGS.items() if issubclass(tag, WrapperTag)
}
_READERS: dict[int, Callable[[bytes, bytes | None, int], Any]] = {
    code: tag.read for code, tag in TAGS.items()
    if code not in _PAYLOAD_LOADERS and code not in _UNWRAPPERS
}  # fmt: skip
#: The tags a compressed entry may not hold, as ``data[:1]``.
_NOT_COMPRESSIBLE = frozenset(tag.byte for tag in TAGS.values() if not tag.compressible)


def decode(
    data: bytes, pickle_secret: bytes | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> Any:
    """Decode bytes written by this library; raise CorruptEntry for anything else.

    Signed pickles are loaded only with the *pickle_secret* they were signed with; compressed
    entries that would inflate past *max_size* bytes are refused.
    """
    if not data:
        raise CorruptEntry("empty value")
    tag = data[0]
    try:
        loads = _PAYLOAD_LOADERS.get(tag)
        if loads is not None:
            return loads(memoryview(data)[1:])
        read = _READERS.get(tag)
        if read is not None:
            return read(data, pickle_secret, max_size)
        unwrap = _UNWRAPPERS.get(tag)
        if unwrap is not None:
            inner = unwrap(data, max_size)
            if inner[:1] in _NOT_COMPRESSIBLE:
                raise ValueError("a compressed entry holds only a value or a response")
            return decode(inner, pickle_secret, max_size)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        # RecursionError: nested too deep to decode (this library refuses to write such values).
        raise CorruptEntry(f"unreadable {chr(tag)!r} entry: {exc}") from exc
    raise CorruptEntry(f"unknown format tag {data[:1]!r}")
