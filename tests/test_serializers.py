"""Encoding values for Redis: format tags, JSON, cached responses, and corrupt bytes."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from flask_fennec_cache import CachedResponse, SerializationError
from flask_fennec_cache.serializers import CorruptEntry, VaryMarker, decode, encode, redecoder


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1, 2**64, 1.5, "", "text ✓", [], {}, [1, [2, [3]]], {"a": {"b": None}}],
)
def test_json_values_round_trip(value: Any) -> None:
    data = encode(value, "k")
    assert data[:1] in (b"j", b"J")  # J: a long number, decoded by the standard library only
    assert decode(data) == value
    assert type(decode(data)) is type(value)


def test_json_entries_are_readable_in_redis_cli() -> None:
    data = encode({"name": "Zoë"}, "k")
    assert json.loads(data[1:].decode("utf-8")) == {"name": "Zoë"}
    assert "Zoë".encode() in data  # UTF-8, not \\u escapes


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        ({"nested": [complex(1, 2)]}, "complex"),
        ({(1, 2): "tuple key"}, "dict"),
    ],
)
def test_unencodable_values_raise_naming_the_type_and_key(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError) as caught:
        encode(value, "user:7")
    assert type_name in str(caught.value)
    assert "user:7" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_circular_values_raise_serialization_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="loop"):
        encode(loop, "loop")


@pytest.mark.parametrize("value", [{1: "a"}, (1, 2), [{"t": (1,)}]],
                         ids=["int-dict-keys", "tuple", "nested-tuple"])
def test_encode_refuses_or_round_trips_exactly(value: Any) -> None:
    """A value must come back as itself, or be refused: never silently become another value."""
    try:
        data = encode(value, "k")
    except SerializationError:
        return
    assert decode(data) == value


def test_cached_response_round_trips_binary_bodies_byte_exact() -> None:
    body = bytes(range(256)) * 16 + b"\n\r\n\x00tail"
    response = CachedResponse(
        201, (("Content-Type", "application/octet-stream"), ("X-Thing", "a\u00e9")), body, 12.5
    )
    data = encode(response, "view:k")
    assert data[:1] == b"r"
    assert decode(data) == response
    assert len(data) - len(body) < 200  # the body is stored raw, not base64


def test_empty_response_body_round_trips() -> None:
    response = CachedResponse(204, (), b"", 0.0)
    assert decode(encode(response, "k")) == response


def test_vary_marker_round_trips() -> None:
    marker = VaryMarker(("Accept-Language", "Accept-Encoding"))
    data = encode(marker, "k")
    assert data[:1] == b"v"
    assert decode(data) == marker


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"j{", b"j", b"j\xff\xfe", b"r", b"r{}", b'r{"s":200}\nbody', b"rnot json\n",
     b"v{", b"v", b"\x80\x04\x95", b"Knull", b"x1"],
)
def test_foreign_or_truncated_bytes_raise_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode(data)


def test_a_tag_is_never_confused_with_json_text() -> None:
    # A JSON string that starts with a tag letter is still tagged as JSON.
    for text in ("r", "v", "j", "rabbit\n"):
        assert decode(encode(text, "k")) == text


def test_integers_beyond_64_bits_come_back_as_integers_with_or_without_orjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """orjson would decode 2**64 as a float; such entries are tagged for the exact decoder."""
    import flask_fennec_cache.serializers as serializers

    value = {"big": 2**64, "neg": -(2**63) - 1, "small": 7}
    data = encode(value, "k")
    assert data[:1] == b"J"
    assert decode(data) == value
    monkeypatch.setattr(serializers, "_orjson_loads", None)
    assert decode(encode({"a": 1.5, "b": [1, "x"]}, "k")) == {"a": 1.5, "b": [1, "x"]}
    assert decode(data) == value


def test_nan_and_infinity_fall_back_to_the_standard_decoder() -> None:
    data = encode([float("inf"), float("-inf")], "k")
    assert decode(data) == [float("inf"), float("-inf")]
    nan = decode(encode(float("nan"), "k"))
    assert nan != nan


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, None, True], "b": {"c": "d"}}, [float("inf"), 1], {"big": 2**70}, [],
     {"long": "x" * 5000}],
)
def test_redecoder_gives_a_fresh_equal_value_on_every_call(value: Any) -> None:
    from flask_fennec_cache.compression import Compressor

    for data in (encode(value, "k"), Compressor("zlib", 64)(encode(value, "k"))):
        function, argument = redecoder(data, decode(data))
        first, second = function(argument), function(argument)
        assert first == value and second == value
        assert first is not second  # callers may change what they get


@pytest.mark.parametrize("value", ["text", 7, 2.5, True, None])
def test_redecoder_hands_out_immutable_values_as_they_are(value: Any) -> None:
    data = encode(value, "k")
    function, argument = redecoder(data, decode(data))
    assert function(argument) is argument and argument == value


def test_redecoder_keeps_responses_decoded_and_checks_pickles_once() -> None:
    response = CachedResponse(200, (("Content-Type", "text/plain"),), b"body", 1.0)
    data = encode(response, "k")
    assert redecoder(data, decode(data))[1] == response
    secret = b"s" * 32
    pickled = encode({"when": (1, 2)}, "k", pickle_secret=secret)
    function, argument = redecoder(pickled, decode(pickled, secret), secret)
    assert function(argument) == {"when": (1, 2)}


def test_a_response_whose_headers_hold_a_line_break_is_corrupt() -> None:
    """Hits skip Werkzeug's header checks, so the decoder refuses what they would refuse."""
    for name, value in (("X-A", "a\r\nSet-Cookie: s=1"), ("X-B\n", "b")):
        data = encode(CachedResponse(200, ((name, value),), b"", 1.0), "k")
        with pytest.raises(CorruptEntry, match="line break"):
            decode(data)


@pytest.mark.parametrize(
    "value",
    [{"bytes": b"\x00\xff", 1: "int key", None: [1.5, True]}, b"raw", [2**63 - 1, -(2**63)],
     {"nested": {"list": [{"a": b"b"}]}}],
)
def test_msgpack_round_trips_what_json_cannot_hold(value: Any) -> None:
    data = encode(value, "k", serializer="msgpack")
    assert data[:1] == b"m"
    assert decode(data) == value
    function, argument = redecoder(data, decode(data))
    assert function(argument) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [((1, 2), "tuple"), ({"n": 2**64}, "64 bits"), ("\ud800", "surrogate"), ({1, 2}, "set"),
     ({"b": bytearray(b"x")}, "bytearray"), ([datetime.date(2026, 1, 1)], "date"),
     ({1: memoryview(b"x")}, "memoryview")],
)
def test_msgpack_refuses_what_would_not_come_back_equal(value: Any, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason):
        encode(value, "key", serializer="msgpack")


def test_corrupt_msgpack_entries_are_corrupt() -> None:
    for data in (b"m", b"m\xc1", b"m\x92\x01", b"m\x81\x90\x01", b"m\xa2\xff\xfe"):
        with pytest.raises(CorruptEntry):
            decode(data)
