"""Encode values for Redis and decode them back; every stored value starts with a format tag."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

from .errors import SerializationError

__all__ = ["CachedResponse", "CorruptEntry", "VaryMarker", "decode", "encode"]

TAG_JSON = 0x6A  # "j": UTF-8 JSON follows
TAG_RESPONSE = 0x72  # "r": a cached HTTP response: JSON head, newline, raw body bytes
TAG_VARY = 0x76  # "v": a JSON list of the request headers a view's responses vary on



class _Unencodable(TypeError):
    """JSON met an object of this type."""


def _refuse(obj: object) -> Any:
    raise _Unencodable(type(obj).__qualname__)


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_refuse)
_json_decoder = json.JSONDecoder()


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


def encode(value: Any, key: str) -> bytes:
    """Encode *value* with its format tag; raise SerializationError naming the type and key."""
    if isinstance(value, CachedResponse):
        return _encode_response(value)
    if isinstance(value, VaryMarker):
        return b"v" + _json_encoder.encode(value.headers).encode("utf-8")
    try:
        text = _json_encoder.encode(value)
    except _Unencodable as exc:
        raise SerializationError(
            f"cannot store a value of type {exc} (in a {type(value).__qualname__}) "
            f"under key {key!r}: JSON cannot hold it"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot store a {type(value).__qualname__} under key {key!r} as JSON: {exc}"
        ) from exc
    return b"j" + text.encode("utf-8")


def decode(data: bytes) -> Any:
    """Decode bytes written by :func:`encode`; raise CorruptEntry for anything else."""
    if not data:
        raise CorruptEntry("empty value")
    tag = data[0]
    try:
        if tag == TAG_JSON:
            return _json_decoder.decode(codecs.decode(memoryview(data)[1:], "utf-8"))
        if tag == TAG_RESPONSE:
            return _decode_response(data)
        if tag == TAG_VARY:
            headers = _json_decoder.decode(codecs.decode(memoryview(data)[1:], "utf-8"))
            return VaryMarker(tuple(str(name) for name in headers))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptEntry(f"unreadable {chr(tag)!r} entry: {exc}") from exc
    raise CorruptEntry(f"unknown format tag {data[:1]!r}")


def _encode_response(response: CachedResponse) -> bytes:
    head = {"s": response.status, "h": response.headers, "t": response.stored_at}
    return b"r" + _json_encoder.encode(head).encode("utf-8") + b"\n" + response.body


def _decode_response(data: bytes) -> CachedResponse:
    end = data.index(b"\n")
    head = _json_decoder.decode(codecs.decode(memoryview(data)[1:end], "utf-8"))
    headers = tuple((str(name), str(value)) for name, value in head["h"])
    return CachedResponse(int(head["s"]), headers, data[end + 1 :], float(head["t"]))

