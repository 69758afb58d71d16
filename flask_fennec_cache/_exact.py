"""Which values a format hands back exactly as they were given, and the errors that say where not.

:func:`check_value` walks a value once before it is encoded and raises :class:`Refused` at the
first part the format would hand back as another type (an enum member, a tuple, a subclass, a
key JSON would turn into a str, ...); :func:`refusal` turns that into the
:class:`~flask_fennec_cache.SerializationError` naming where the part is and what to do. The
messages are built only for a refused value: the walk of an accepted one stays cheap.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from .errors import SerializationError

__all__ = [
    "JSON_RULES",
    "MAX_NESTING",
    "MSGPACK_RULES",
    "Refused",
    "Rules",
    "check_value",
    "refusal",
    "surrogate_refusal",
    "unencodable",
]

#: Most levels of lists and dicts in a stored value. Decoders recurse once per level, within
#: the interpreter's recursion limit wherever a hit is decoded, so deeper values are refused.
MAX_NESTING = 200


@dataclass(frozen=True)
class Rules:
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
JSON_RULES = Rules("JSON", _SCALARS, frozenset({str}), False, False, _JSON_HANDS_BACK)
MSGPACK_RULES = Rules(
    "MessagePack", _SCALARS | {bytes}, _SCALARS | {bytes}, True, True,
    {**_JSON_HANDS_BACK, bytes: "plain bytes", bytearray: "bytes", memoryview: "bytes"},
)  # fmt: skip

#: Integers of 19 digits or more: orjson would read those beyond 64 bits as floats.
_LONG_INT = 10**18
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# What Refused.problem says about Refused.part.
_TYPE, _KEY, _RANGE, _DEEP = "type", "key", "range", "deep"


class Refused(Exception):
    """The check met *part*, which the format would not hand back as it is.

    Each enclosing container adds itself and the item it was checking to *trail* (innermost
    first) as the exception passes, so the path is built only for a refused value.
    """

    def __init__(self, part: object, problem: str) -> None:
        super().__init__(problem)
        self.part = part
        self.problem = problem
        self.trail: list[tuple[dict[Any, Any] | list[Any], Any]] = []


def check_value(value: Any, rules: Rules) -> bool:
    """Raise :class:`Refused` unless *rules* hand *value* back exactly; True when it holds an
    integer of 19 digits or more."""
    kind = type(value)
    if kind is dict or kind is list:
        return _check_tree(value, rules, 1)
    if kind in rules.leaves:
        return False
    if kind is int:
        return not -_LONG_INT < value < _LONG_INT and _check_long_int(value, rules)
    raise Refused(value, _TYPE)


def _check_tree(tree: dict[Any, Any] | list[Any], rules: Rules, depth: int) -> bool:
    """:func:`check_value` for a list or dict *depth* levels down.

    The one walk of the value before it is encoded: scalars are checked inline, only
    containers recurse.
    """
    if depth > MAX_NESTING:
        raise Refused(tree, _DEEP)
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
                raise Refused(item, _TYPE)
    except Refused as refused:
        refused.trail.append((tree, item))
        raise
    return long_int


def _check_long_int(number: int, rules: Rules) -> bool:
    if rules.int64 and not _INT64_MIN <= number <= _UINT64_MAX:
        raise Refused(number, _RANGE)
    return True


def _check_key(name: Any, rules: Rules) -> None:
    if not (rules.int_keys and type(name) is int):
        raise Refused(name, _KEY)
    if rules.int64 and not _INT64_MIN <= name <= _UINT64_MAX:
        raise Refused(name, _KEY)


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


def refusal(value: Any, key: str, refused: Refused, rules: Rules) -> SerializationError:
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
        elif rules is JSON_RULES and type(part) in (int, float, bool, type(None)):
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


def _advice(part: Any, becomes: str | None, rules: Rules) -> str:
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
    if rules is JSON_RULES and isinstance(part, (bytes, bytearray, memoryview)):
        return f"encode it (e.g. as base64 text), use {_MSGPACK_TOO},"
    held = "dict, list, str, int, float, bool, None" + (", bytes" if rules is MSGPACK_RULES else "")
    return f"convert it to {rules.name} types ({held})"


def _describe(part: Any, rules: Rules) -> str:
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


def _too_deep(refused: Refused, segments: list[str]) -> tuple[str, bool]:
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


def surrogate_refusal(value: Any, key: str) -> SerializationError:
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


def unencodable(value: Any, key: str, format_name: str, exc: Exception) -> SerializationError:
    """The error for *value*, which passed the check but which the encoder still refused."""
    return SerializationError(
        f"cannot store {_a(type(value).__qualname__)} under key {key!r} as {format_name}: {exc}"
    )
