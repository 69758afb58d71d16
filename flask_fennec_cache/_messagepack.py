"""The opt-in MessagePack format (the ``msgpack`` extra): bytes and non-string keys kept exactly."""

from __future__ import annotations

import importlib
from typing import Any

from ._exact import MSGPACK_RULES, Refused, check_value, refusal, surrogate_refusal, unencodable
from .errors import SerializationError

__all__ = ["NOT_INSTALLED", "available", "msgpack", "pack", "unpack"]

#: The package, or None when it is not installed (it ships no type information).
msgpack: Any
try:
    msgpack = importlib.import_module("msgpack")
except ImportError:  # pragma: no cover - depends on the environment
    msgpack = None

NOT_INSTALLED = (
    "serializer 'msgpack' needs the msgpack package: pip install 'flask-fennec-cache[msgpack]'"
)


def available() -> bool:
    """Whether the msgpack package is installed (``serializer="msgpack"`` needs it)."""
    return msgpack is not None


def pack(value: Any, key: str) -> bytes:
    """The MessagePack of *value*; SerializationError unless it comes back exactly as it is."""
    if msgpack is None:
        raise SerializationError(NOT_INSTALLED)
    try:
        check_value(value, MSGPACK_RULES)
        packed: bytes = msgpack.packb(value, use_bin_type=True, strict_types=True)
    except Refused as refused:
        raise refusal(value, key, refused, MSGPACK_RULES) from refused
    except UnicodeEncodeError as exc:
        raise surrogate_refusal(value, key) from exc
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise unencodable(value, key, MSGPACK_RULES.name, exc) from exc
    return packed


def unpack(payload: bytes | memoryview) -> Any:
    """The value packed in *payload*; ValueError (or TypeError) when it is not MessagePack."""
    if msgpack is None:
        raise ValueError("a MessagePack entry, but msgpack is not installed")
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)
