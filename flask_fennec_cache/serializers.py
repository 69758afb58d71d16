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
"""

from __future__ import annotations

import codecs
import enum
import functools
import hashlib
import hmac
import importlib
import json
import pickle
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from .compression import decompress
from .errors import SerializationError

__all__ = [
    "MAX_NESTING",
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
TAG_MARKUP = 0x68
TAG_PICKLE = 0x70
TAG_MSGPACK = 0x6D
TAG_ZLIB = 0x7A
TAG_ZSTD = 0x5A
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
SIGNATURE_LENGTH = 32
VERSION_LENGTH = 16
#: Most levels of lists and dicts in a stored value. Decoders recurse once per level, within
#: the interpreter's recursion limit wherever a hit is decoded, so deeper values are refused.
MAX_NESTING = 200

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_json_decoder = json.JSONDecoder()
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
    """Encode *value* with its format tag; raise SerializationError naming the problem and key.

    With *pickle_secret*, plain values are pickled and signed; with *serializer* ``"msgpack"``
    they are written as MessagePack; otherwise as JSON. Either way a value that would not come
    back with the same types at every depth (a tuple, an enum member, an ``OrderedDict``) is
    refused, naming where in the value it is. A :class:`markupsafe.Markup` on its own is kept
    as Markup by every format.
    """
    if isinstance(value, CachedResponse):
        head = {"s": value.status, "h": value.headers, "t": value.stored_at}
        return b"r" + _json_encoder.encode(head).encode("utf-8") + b"\n" + value.body
    if isinstance(value, VaryMarker):
        return b"v" + _json_encoder.encode(value.headers).encode("utf-8")
    if pickle_secret is not None:
        return _encode_pickle(value, key, pickle_secret)
    if type(value) is Markup:
        try:
            return b"h" + _json_encoder.encode(str(value)).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _surrogate_refusal(value, key) from exc
    if serializer == "msgpack":
        return _encode_msgpack(value, key)
    try:
        long_int = _check_value(value, _JSON)
        data = _json_encoder.encode(value).encode("utf-8")
    except _Refused as refused:
        raise _refusal(value, key, refused, _JSON) from refused
    except UnicodeEncodeError as exc:
        # A surrogate code point: JSON would escape it, but a pair of them would come back as
        # the one character they encode.
        raise _surrogate_refusal(value, key) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"cannot store {_a(type(value).__qualname__)} under key {key!r} as JSON: {exc}"
        ) from exc
    return (b"J" if long_int else b"j") + data


def _encode_msgpack(value: Any, key: str) -> bytes:
    if _msgpack is None:
        raise SerializationError(MSGPACK_MISSING)
    try:
        _check_value(value, _MSGPACK)
        packed: bytes = _msgpack.packb(value, use_bin_type=True, strict_types=True)
    except _Refused as refused:
        raise _refusal(value, key, refused, _MSGPACK) from refused
    except UnicodeEncodeError as exc:
        raise _surrogate_refusal(value, key) from exc
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise SerializationError(
            f"cannot store {_a(type(value).__qualname__)} under key {key!r} as MessagePack: {exc}"
        ) from exc
    return b"m" + packed


def msgpack_available() -> bool:
    """Whether the msgpack package is installed (``serializer="msgpack"`` needs it)."""
    return _msgpack is not None


def _unpack_msgpack(payload: bytes | memoryview) -> Any:
    if _msgpack is None:
        raise ValueError("a MessagePack entry, but msgpack is not installed")
    return _msgpack.unpackb(payload, raw=False, strict_map_key=False)


# -- exact types: what each format hands back as it was given ---------------------------------


@dataclass(frozen=True)
class _Rules:
    """The exact types one format hands back unchanged (int, list and dict aside)."""

    name: str
    leaves: frozenset[type]
    keys: frozenset[type]
    int_keys: bool
    int64: bool  # integers must fit in 64 bits, signed or unsigned
    hands_back: dict[type, str]  # what a subclass of (or stand-in for) a type comes back as


_SCALARS: frozenset[type] = frozenset({str, float, bool, type(None)})
_JSON_HANDS_BACK = {
    dict: "a plain dict", list: "a plain list", tuple: "a list", str: "a plain str",
    int: "a plain int", float: "a plain float",
}  # fmt: skip
_JSON = _Rules("JSON", _SCALARS, frozenset({str}), False, False, _JSON_HANDS_BACK)
_MSGPACK = _Rules(
    "MessagePack", _SCALARS | {bytes}, _SCALARS | {bytes}, True, True,
    {**_JSON_HANDS_BACK, bytes: "plain bytes", bytearray: "bytes", memoryview: "bytes"},
)  # fmt: skip

#: Integers of 19 digits or more: orjson would read those beyond 64 bits as floats.
_LONG_INT = 10**18
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# What _Refused.problem says about _Refused.part.
_TYPE, _KEY, _RANGE, _DEEP = "type", "key", "range", "deep"


class _Refused(Exception):
    """The check met *part*, which the format would not hand back as it is.

    Each enclosing container adds itself and the item it was checking to *trail* (innermost
    first) as the exception passes, so the path is built only for a refused value.
    """

    def __init__(self, part: object, problem: str) -> None:
        super().__init__(problem)
        self.part = part
        self.problem = problem
        self.trail: list[tuple[dict[Any, Any] | list[Any], Any]] = []


def _check_value(value: Any, rules: _Rules) -> bool:
    """Raise :class:`_Refused` unless *rules* hand *value* back exactly; True when it holds an
    integer of 19 digits or more."""
    kind = type(value)
    if kind is dict or kind is list:
        return _check_tree(value, rules, 1)
    if kind in rules.leaves:
        return False
    if kind is int:
        return not -_LONG_INT < value < _LONG_INT and _check_long_int(value, rules)
    raise _Refused(value, _TYPE)


def _check_tree(tree: dict[Any, Any] | list[Any], rules: _Rules, depth: int) -> bool:
    """:func:`_check_value` for a list or dict *depth* levels down.

    The one walk of the value before it is encoded: scalars are checked inline, only
    containers recurse.
    """
    if depth > MAX_NESTING:
        raise _Refused(tree, _DEEP)
    items: Iterable[Any] = tree
    if type(tree) is dict:
        keys = rules.keys
        for name in tree:
            if type(name) not in keys:
                _check_key(name, rules)
        items = tree.values()
    leaves = rules.leaves
    long_int = False
    item: Any = None
    try:
        for item in items:
            kind = type(item)
            if kind in leaves:
                continue
            if kind is int:
                if not -_LONG_INT < item < _LONG_INT:
                    long_int = _check_long_int(item, rules)
            elif kind is dict or kind is list:
                if _check_tree(item, rules, depth + 1):
                    long_int = True
            else:
                raise _Refused(item, _TYPE)
    except _Refused as refused:
        refused.trail.append((tree, item))
        raise
    return long_int


def _check_long_int(number: int, rules: _Rules) -> bool:
    if rules.int64 and not _INT64_MIN <= number <= _UINT64_MAX:
        raise _Refused(number, _RANGE)
    return True


def _check_key(name: Any, rules: _Rules) -> None:
    if not (rules.int_keys and type(name) is int):
        raise _Refused(name, _KEY)
    if rules.int64 and not _INT64_MIN <= name <= _UINT64_MAX:
        raise _Refused(name, _KEY)


# -- refusal messages (built only for a refused value) ----------------------------------------

_PICKLE = 'FENNEC_CACHE_SERIALIZER = "pickle"'
_MSGPACK_TOO = 'FENNEC_CACHE_SERIALIZER = "msgpack" (bytes and non-string keys)'
_CONVERSIONS = {
    "datetime": "convert it (e.g. to an ISO string with .isoformat())",
    "date": "convert it (e.g. to an ISO string with .isoformat())",
    "time": "convert it (e.g. to an ISO string with .isoformat())",
    "timedelta": "convert it (e.g. to seconds with .total_seconds())",
    "Decimal": "convert it (e.g. to a str)",
    "UUID": "convert it (e.g. with str(...))",
    "set": "convert it (e.g. to a sorted list)",
    "frozenset": "convert it (e.g. to a sorted list)",
}


def _refusal(value: Any, key: str, refused: _Refused, rules: _Rules) -> SerializationError:
    """The error for *value*, refused by the check at ``refused.part``."""
    segments = [_segment(tree, item) for tree, item in reversed(refused.trail)]
    path = _path_text(segments)
    part, problem, fmt = refused.part, refused.problem, rules.name
    if problem == _DEEP:
        reason, cycle = _too_deep(refused, segments)
        advice = "store a copy without the cycle" if cycle else "flatten it"
    elif problem == _KEY:
        described = _describe(part, rules)
        if not isinstance(part, enum.Enum):  # a member describes itself: Color.RED, a member...
            described = f"{_short(repr(part))}, {described}"
        reason = f"{path} has the key {described}, which {fmt} cannot hold as a key exactly"
        held = rules.keys | {int} if rules.int_keys else rules.keys
        base = next((base for base in type(part).__mro__[1:] if base in held), None)
        if base is not None and type(part) is not bool:
            advice = f"convert the key with {base.__name__}(...)"
        elif rules is _JSON and type(part) in (int, float, bool, type(None)):
            reason += " (it would come back as a str)"
            advice = f"use str keys, {_MSGPACK_TOO},"
        else:
            advice = "use str keys"
    elif problem == _RANGE:
        reason = f"{path} is {_describe(part, rules)}, which {fmt} cannot hold"
        advice = 'store it as a str, use FENNEC_CACHE_SERIALIZER = "json" (any integer),'
    else:
        becomes = next((rules.hands_back[base] for base in type(part).__mro__
                        if base in rules.hands_back), None)  # fmt: skip
        if becomes is None:
            reason = f"{path} is {_describe(part, rules)}, which {fmt} cannot hold"
        else:
            reason = f"{path} is {_describe(part, rules)}, which {fmt} would hand back as {becomes}"
        advice = _advice(part, becomes, rules)
    return SerializationError(
        f"cannot store {_a(type(value).__qualname__)} under key {key!r}: {reason}; "
        f"{advice} or use {_PICKLE}"
    )


def _advice(part: Any, becomes: str | None, rules: _Rules) -> str:
    """What to do instead of storing *part*."""
    kind = type(part)
    if isinstance(part, enum.Enum):
        return "store its .value (and rebuild the member after reading)"
    if isinstance(part, tuple) and hasattr(kind, "_fields"):
        return "convert it (e.g. with ._asdict())"
    if isinstance(part, Markup):
        return (
            "cache the fragment on its own (a top-level Markup round-trips as Markup), "
            "wrap the str in Markup again after reading,"
        )
    if becomes is not None:
        base = next(base for base in kind.__mro__ if base in rules.hands_back)
        target = "list" if base is tuple else "bytes" if becomes == "bytes" else base.__name__
        return f"convert it with {target}(...)"
    if kind.__qualname__ in _CONVERSIONS:
        return _CONVERSIONS[kind.__qualname__]
    if rules is _JSON and isinstance(part, (bytes, bytearray, memoryview)):
        return f"encode it (e.g. as base64 text), use {_MSGPACK_TOO},"
    held = "dict, list, str, int, float, bool, None" + (", bytes" if rules is _MSGPACK else "")
    return f"convert it to {rules.name} types ({held})"


def _describe(part: Any, rules: _Rules) -> str:
    """``an int``, ``a Point (a namedtuple)``, ``Color.RED, a member of the enum Color``..."""
    kind = type(part)
    base = next((base for base in kind.__mro__[1:] if base in rules.hands_back), None)
    subclass = "" if base is None or kind is bool else f" ({_a(base.__name__)} subclass)"
    if isinstance(part, enum.Enum):
        member = f"{kind.__qualname__}.{part.name}" if part.name else repr(part)
        return f"{member}, a member of the enum {kind.__qualname__}{subclass}"
    if isinstance(part, tuple) and hasattr(kind, "_fields"):
        return f"{_a(kind.__qualname__)} (a namedtuple)"
    if kind is int and rules.int64 and not _INT64_MIN <= part <= _UINT64_MAX:
        return "an int beyond 64 bits"
    return f"{_a(kind.__qualname__)}{subclass}"


def _too_deep(refused: _Refused, segments: list[str]) -> tuple[str, bool]:
    """Why a value nests too deep, and whether that is because it contains itself."""
    trees = [tree for tree, _ in reversed(refused.trail)] + [refused.part]
    seen: dict[int, int] = {}
    for level, tree in enumerate(trees):
        earlier = seen.setdefault(id(tree), level)
        if earlier != level:
            later_path, earlier_path = _path_text(segments[:level]), _path_text(segments[:earlier])
            return f"{later_path} is {earlier_path}: the value contains itself", True
    deepest = _path_text(segments)
    return f"{deepest} is nested more than {MAX_NESTING} levels deep (lists, dicts)", False


def _segment(tree: dict[Any, Any] | list[Any], item: Any) -> str:
    """``["name"]`` or ``[3]``: where *item* sits in *tree*."""
    if type(tree) is dict:
        name = next((name for name, held in tree.items() if held is item), "?")
        if type(name) is str:
            text = json.dumps(name, ensure_ascii=False)
            return f"[{_short(text if _has_utf8(text) else json.dumps(name))}]"
        return f"[{_short(repr(name))}]"
    return f"[{next((index for index, held in enumerate(tree) if held is item), '?')}]"


def _path_text(segments: list[str]) -> str:
    if len(segments) > 12:
        hidden = len(segments) - 10
        return "value" + "".join(segments[:8]) + f"…({hidden} more)…" + "".join(segments[-2:])
    return "value" + "".join(segments)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _a(noun: str) -> str:
    if noun == "bytes":
        return "bytes"
    return f"{'an' if noun[:1].lower() in ('a', 'e', 'i', 'o') else 'a'} {noun}"


def _has_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_refusal(value: Any, key: str) -> SerializationError:
    where = _text_without_utf8(value, []) or "a string in value"
    return SerializationError(
        f"cannot store {_a(type(value).__qualname__)} under key {key!r}: {where} holds a lone "
        "surrogate code point, which has no UTF-8 form and would not come back unchanged; "
        f"remove it (e.g. text.encode('utf-8', 'replace').decode()) or use {_PICKLE}"
    )


def _text_without_utf8(part: Any, segments: list[str]) -> str | None:
    """Where the first string without a UTF-8 form is in *part* (a value already checked)."""
    if isinstance(part, str):
        return None if _has_utf8(part) else _path_text(segments)
    if type(part) is dict:
        for name, item in part.items():
            if isinstance(name, str) and not _has_utf8(name):
                return f"a key of {_path_text(segments)}"
            found = _text_without_utf8(item, [*segments, _segment(part, item)])
            if found is not None:
                return found
    elif type(part) is list:
        for index, item in enumerate(part):
            found = _text_without_utf8(item, [*segments, f"[{index}]"])
            if found is not None:
                return found
    return None


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
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        # RecursionError: nested too deep to decode (this library refuses to write such values).
        raise CorruptEntry(f"unreadable {chr(tag)!r} entry: {exc}") from exc
    raise CorruptEntry(f"unknown format tag {data[:1]!r}")


_IMMUTABLE = (CachedResponse, VaryMarker, Markup, str, int, float, bool, bytes, type(None))


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


def _loads_markup(payload: bytes | memoryview) -> Markup:
    # A JSON string, not the bare text: a foreign value that merely starts with "h" must not
    # read as an entry.
    text = _loads_json(payload)
    if type(text) is not str:
        raise ValueError("a markup entry holds a JSON string")
    return Markup(text)


#: Tags whose value is one function of the bytes after the tag.
_PAYLOAD_LOADERS: dict[int, Callable[[bytes | memoryview], Any]] = {
    TAG_JSON: _loads_json, TAG_JSON_EXACT: _loads_exact_json, TAG_MSGPACK: _unpack_msgpack,
    TAG_MARKUP: _loads_markup,
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
