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
       versions), newline, then an inner entry with its own tag
``L``  a lease: a loader is filling this key; the rest is its random token
``z``  zlib-compressed entry (a ``j``, ``J``, ``m``, ``p`` or ``r`` one), for values over a
       threshold
``Z``  the same, compressed with zstd
``m``  opt-in MessagePack of the value (the ``msgpack`` extra): bytes and non-string dict keys
       round-trip, which JSON cannot hold
``p``  opt-in pickle: 32-byte HMAC-SHA256 of the pickle under the app's secret, then the pickle
=====  ==================================================================================

Entries are read by their tag whatever the cache is configured to write, so changing the
serializer needs no flush: old entries stay readable until they expire.

Pickle is used only when the cache is configured with a secret key for it; an entry whose
signature does not verify is never unpickled (it reads as corrupt, hence as a miss).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import hmac
import importlib
import json
import pickle
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .compression import decompress
from .errors import SerializationError

__all__ = [
    "CachedResponse",
    "CorruptEntry",
    "Envelope",
    "Lease",
    "VaryMarker",
    "decode",
    "encode",
    "encode_envelope",
    "envelope_head",
    "lease_bytes",
    "msgpack_available",
    "new_version",
    "redecoder",
    "version_prefix",
]

TAG_JSON = 0x6A
TAG_JSON_EXACT = 0x4A
TAG_RESPONSE = 0x72
TAG_VARY = 0x76
TAG_ENVELOPE = 0x65
TAG_LEASE = 0x4C
TAG_PICKLE = 0x70
TAG_MSGPACK = 0x6D
TAG_ZLIB = 0x7A
TAG_ZSTD = 0x5A
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
SIGNATURE_LENGTH = 32
VERSION_LENGTH = 16


class _Unencodable(TypeError):
    """JSON met an object of this type."""


def _refuse(obj: object) -> Any:
    raise _Unencodable(type(obj).__qualname__)


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_refuse)
_json_decoder = json.JSONDecoder()
_LONG_NUMBER = re.compile(rb"\d{19}")
_LINE_BREAK = re.compile(r"[\r\n]")

_orjson_loads: Callable[[bytes | memoryview], Any] | None
try:  # orjson decodes 3-4x faster; it is optional (the "fast" extra)
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = None


_msgpack: Any
try:  # optional: the "msgpack" extra (it ships no type information)
    _msgpack = importlib.import_module("msgpack")
except ImportError:  # pragma: no cover - depends on the environment
    _msgpack = None

MSGPACK_MISSING = (
    "serializer 'msgpack' needs the msgpack package: pip install 'flask-fennec-cache[msgpack]'"
)


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
    """

    value: Any
    version: str
    fresh_until: float | None = None
    load_seconds: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)


def encode(
    value: Any, key: str, pickle_secret: bytes | None = None, serializer: str = "json"
) -> bytes:
    """Encode *value* with its format tag; raise SerializationError naming the type and key.

    With *pickle_secret*, plain values are pickled and signed; with *serializer* ``"msgpack"``
    they are written as MessagePack; otherwise as JSON. Either way a value that would not come
    back equal (a tuple, say) is refused.
    """
    if isinstance(value, CachedResponse):
        head = {"s": value.status, "h": value.headers, "t": value.stored_at}
        return b"r" + _json_encoder.encode(head).encode("utf-8") + b"\n" + value.body
    if isinstance(value, VaryMarker):
        return b"v" + _json_encoder.encode(value.headers).encode("utf-8")
    if pickle_secret is not None:
        return _encode_pickle(value, key, pickle_secret)
    if serializer == "msgpack":
        return _encode_msgpack(value, key)
    try:
        _check_json_exact(value)
        text = _json_encoder.encode(value)
    except _Unencodable as exc:
        raise SerializationError(
            f"cannot store a value of type {exc} (in a {type(value).__qualname__}) "
            f"under key {key!r}: JSON cannot hold it"
        ) from exc
    except _Lossy as exc:
        raise SerializationError(
            f"cannot store this {type(value).__qualname__} under key {key!r} as JSON: {exc}; "
            "convert it, or use serializer='pickle'"
        ) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"cannot store a {type(value).__qualname__} under key {key!r} as JSON: {exc}"
        ) from exc
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A surrogate code point: JSON would escape it, but a pair of them would come back as
        # the one character they encode.
        raise SerializationError(
            f"cannot store a {type(value).__qualname__} under key {key!r} as JSON: a string "
            "holds a surrogate code point, which would not come back unchanged"
        ) from exc
    return (b"J" if _LONG_NUMBER.search(data) else b"j") + data


def _encode_msgpack(value: Any, key: str) -> bytes:
    what = f"a {type(value).__qualname__} under key {key!r} as MessagePack"
    try:
        _check_msgpack_exact(value)
        return b"m" + _msgpack_packer(value)
    except _Unencodable as exc:
        raise SerializationError(
            f"cannot store a value of type {exc} (in a {type(value).__qualname__}) "
            f"under key {key!r}: MessagePack cannot hold it"
        ) from exc
    except _Lossy as exc:
        raise SerializationError(f"cannot store {what}: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"cannot store {what}: a string holds a surrogate code point (no UTF-8 form)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot store {what}: {exc}") from exc


def _refuse_for_msgpack(obj: object) -> Any:
    # Packing checks exact types: subclasses (an IntEnum, an OrderedDict), tuples and integers
    # beyond 64 bits land here.
    if type(obj) is tuple:
        raise _Lossy("a tuple would come back as a list (MessagePack has no tuples)")
    if type(obj) is int:
        raise _Lossy("it holds an integer beyond 64 bits")
    raise _Unencodable(type(obj).__qualname__)


def _check_msgpack_exact(value: Any) -> None:
    """Refuse the buffers MessagePack would pack as bytes (they would come back as bytes)."""
    kind = type(value)
    if kind is dict:
        for name, item in value.items():
            _check_msgpack_exact(name)
            _check_msgpack_exact(item)
    elif kind is list:
        for item in value:
            _check_msgpack_exact(item)
    elif kind is bytearray or kind is memoryview:
        raise _Lossy(f"a {kind.__qualname__} would come back as bytes")


def _msgpack_packer(value: Any) -> bytes:
    if _msgpack is None:
        raise SerializationError(MSGPACK_MISSING)
    packed: bytes = _msgpack.packb(
        value, use_bin_type=True, strict_types=True, default=_refuse_for_msgpack
    )
    return packed


def msgpack_available() -> bool:
    """Whether the msgpack package is installed (``serializer="msgpack"`` needs it)."""
    return _msgpack is not None


def _unpack_msgpack(payload: bytes | memoryview) -> Any:
    if _msgpack is None:
        raise ValueError("a MessagePack entry, but msgpack is not installed")
    return _msgpack.unpackb(payload, raw=False, strict_map_key=False)


def _check_json_exact(value: Any) -> None:
    """Refuse what JSON would silently turn into something else: tuples and non-str keys.

    A cached value must come back equal to what was stored, type included.
    """
    kind = type(value)
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise _Lossy(
                    f"dict key {name!r} is a {type(name).__qualname__}; JSON keys are strings, "
                    "so it would come back as a str"
                )
            if type(item) in _CONTAINERS:
                _check_json_exact(item)
    elif kind is list:
        for item in value:
            if type(item) in _CONTAINERS:
                _check_json_exact(item)
    elif kind is tuple:
        raise _Lossy("a tuple would come back as a list (JSON has no tuples)")


class _Lossy(ValueError):
    """JSON would store this value, but it would not come back equal."""


_CONTAINERS = (dict, list, tuple)


def encode_envelope(
    envelope: Envelope, key: str, pickle_secret: bytes | None = None, serializer: str = "json"
) -> bytes:
    """Encode an :class:`Envelope` (its version must be 16 characters)."""
    return envelope_head(envelope) + encode(envelope.value, key, pickle_secret, serializer)


def envelope_head(envelope: Envelope) -> bytes:
    """The bytes before an envelope's inner entry (which may be encoded and compressed alone,
    so that the version stays at the front for compare-and-set)."""
    fresh = None if envelope.fresh_until is None else round(envelope.fresh_until, 3)
    meta = {"f": fresh, "d": round(envelope.load_seconds, 4), "t": envelope.tags}
    head = b"e" + envelope.version.encode("ascii") + _json_encoder.encode(meta).encode("utf-8")
    return head + b"\n"


def new_version() -> str:
    """A random 16-character id for one write (envelope versions, lease tokens, tag versions)."""
    return secrets.token_hex(VERSION_LENGTH // 2)


def lease_bytes(token: str) -> bytes:
    """The stored form of a lease placeholder."""
    return b"L" + token.encode("ascii")


def version_prefix(version: str) -> bytes:
    """The leading bytes that identify one envelope write (for compare-and-set)."""
    return b"e" + version.encode("ascii")


def decode(
    data: bytes, pickle_secret: bytes | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> Any:
    """Decode bytes written by this module; raise CorruptEntry for anything else.

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
        if tag == TAG_RESPONSE:
            return _decode_response(data)
        if tag == TAG_ENVELOPE:
            return _decode_envelope(data, pickle_secret, max_size)
        if tag in (TAG_ZLIB, TAG_ZSTD):
            inner = decompress(data, max_size)
            if inner[:1] in (b"z", b"Z", b"e", b"L"):
                raise ValueError("a compressed entry holds only a value or a response")
            return decode(inner, pickle_secret, max_size)
        if tag == TAG_PICKLE:
            return _decode_pickle(data, pickle_secret)
        if tag == TAG_LEASE:
            return Lease(codecs.decode(memoryview(data)[1:], "ascii"))
        if tag == TAG_VARY:
            headers = _loads_exact_json(memoryview(data)[1:])
            return VaryMarker(tuple(str(name) for name in headers))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptEntry(f"unreadable {chr(tag)!r} entry: {exc}") from exc
    raise CorruptEntry(f"unknown format tag {data[:1]!r}")


_IMMUTABLE = (CachedResponse, VaryMarker, str, int, float, bool, bytes, type(None))


def _same(entry: Any) -> Any:
    return entry


def redecoder(
    data: bytes, entry: Any, pickle_secret: bytes | None = None,
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
    loads = _PAYLOAD_LOADERS.get(data[0])
    if loads is not None:
        return loads, data[1:]
    if data[0] == TAG_PICKLE:
        return pickle.loads, data[1 + SIGNATURE_LENGTH :]
    return functools.partial(decode, pickle_secret=pickle_secret, max_size=max_size), data


def _loads_json(payload: bytes | memoryview) -> Any:
    """A ``j`` entry's value from its JSON (the bytes after the tag)."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(payload)
        except ValueError:
            pass  # NaN and Infinity: the standard decoder reads these
    return _loads_exact_json(payload)


def _loads_exact_json(payload: bytes | memoryview) -> Any:
    """JSON read by the standard library (integers of any size stay integers)."""
    return _json_decoder.decode(codecs.decode(payload, "utf-8"))


#: Tags whose value is one function of the bytes after the tag.
_PAYLOAD_LOADERS: dict[int, Callable[[bytes | memoryview], Any]] = {
    TAG_JSON: _loads_json, TAG_JSON_EXACT: _loads_exact_json, TAG_MSGPACK: _unpack_msgpack
}


def _decode_response(data: bytes) -> CachedResponse:
    end = data.index(b"\n")
    head = _loads_json(memoryview(data)[1:end])
    headers = tuple((name, value) for name, value in head["h"])
    if not all(type(name) is str and type(value) is str for name, value in headers):
        raise ValueError("header names and values must be strings")
    if _LINE_BREAK.search("".join(name + value for name, value in headers)):
        raise ValueError("a header holds a line break")  # hits skip Werkzeug's own check
    return CachedResponse(int(head["s"]), headers, data[end + 1 :], float(head["t"]))


def _signature(secret: bytes, payload: bytes | memoryview) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def _encode_pickle(value: Any, key: str, secret: bytes) -> bytes:
    try:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SerializationError(
            f"cannot pickle a {type(value).__qualname__} under key {key!r}: {exc}"
        ) from exc
    return b"p" + _signature(secret, payload) + payload


def _decode_pickle(data: bytes, secret: bytes | None) -> Any:
    if secret is None:
        raise ValueError("a pickled entry, but pickle is not enabled for this cache")
    view = memoryview(data)
    payload = view[1 + SIGNATURE_LENGTH :]
    if not hmac.compare_digest(view[1 : 1 + SIGNATURE_LENGTH], _signature(secret, payload)):
        raise ValueError("the signature does not match: tampered, or signed with another key")
    try:
        return pickle.loads(payload)
    except Exception as exc:  # a verified pickle that fails (a class was removed): a miss
        raise ValueError(f"cannot unpickle: {exc}") from exc


def _decode_envelope(data: bytes, pickle_secret: bytes | None, max_size: int) -> Envelope:
    end = data.index(b"\n")
    version = codecs.decode(memoryview(data)[1 : 1 + VERSION_LENGTH], "ascii")
    meta = _json_decoder.decode(codecs.decode(memoryview(data)[1 + VERSION_LENGTH : end], "utf-8"))
    inner = decode(data[end + 1 :], pickle_secret, max_size)
    if isinstance(inner, (Envelope, Lease)):
        raise ValueError("an envelope cannot hold another envelope or a lease")
    fresh = meta["f"]
    tags = {str(k): str(v) for k, v in meta["t"].items()}
    return Envelope(inner, version, None if fresh is None else float(fresh), float(meta["d"]), tags)
