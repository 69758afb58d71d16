"""Encoding values for Redis: format tags, JSON, cached responses, and corrupt bytes."""

from __future__ import annotations

import collections
import datetime
import enum
import json
import logging
import re
import sys
import types
import typing
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from _servers import RedisServer
from markupsafe import Markup

from flask_fennec_cache import CachedResponse, RedisCache, SerializationError, _tags, cache
from flask_fennec_cache._entries import Stamped
from flask_fennec_cache._tags import GenerationTag
from flask_fennec_cache.compression import Compressor
from flask_fennec_cache.serializers import (
    MAX_NESTING,
    CorruptEntry,
    Envelope,
    Lease,
    VaryMarker,
    decode,
    encode,
    envelope_head,
    lease_bytes,
    redecoder,
)


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


@pytest.mark.parametrize(
    "value", [{1: "a"}, (1, 2), [{"t": (1,)}]], ids=["int-dict-keys", "tuple", "nested-tuple"]
)
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
    [
        b"",
        b"garbage",
        b"j{",
        b"j",
        b"j\xff\xfe",
        b"r",
        b"r{}",
        b'r{"s":200}\nbody',
        b"rnot json\n",
        b"v{",
        b"v",
        b"\x80\x04\x95",
        b"Knull",
        b"x1",
    ],
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
    value = {"big": 2**64, "neg": -(2**63) - 1, "small": 7}
    data = encode(value, "k")
    assert data[:1] == b"J"
    assert decode(data) == value
    monkeypatch.setattr(_tags, "_orjson_loads", None)
    assert decode(encode({"a": 1.5, "b": [1, "x"]}, "k")) == {"a": 1.5, "b": [1, "x"]}
    assert decode(data) == value


def test_nan_and_infinity_fall_back_to_the_standard_decoder() -> None:
    data = encode([float("inf"), float("-inf")], "k")
    assert decode(data) == [float("inf"), float("-inf")]
    nan = decode(encode(float("nan"), "k"))
    assert nan != nan


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "b": {"c": "d"}},
        [float("inf"), 1],
        {"big": 2**70},
        [],
        {"long": "x" * 5000},
    ],
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
    [
        {"bytes": b"\x00\xff", 1: "int key", None: [1.5, True]},
        b"raw",
        [2**63 - 1, -(2**63)],
        {"nested": {"list": [{"a": b"b"}]}},
    ],
)
def test_msgpack_round_trips_what_json_cannot_hold(value: Any) -> None:
    data = encode(value, "k", serializer="msgpack")
    assert data[:1] == b"m"
    assert decode(data) == value
    function, argument = redecoder(data, decode(data))
    assert function(argument) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ((1, 2), "tuple"),
        ({"n": 2**64}, "64 bits"),
        ("\ud800", "surrogate"),
        ({1, 2}, "set"),
        ({"b": bytearray(b"x")}, "bytearray"),
        ([datetime.date(2026, 1, 1)], "date"),
        ({1: memoryview(b"x")}, "memoryview"),
    ],
)
def test_msgpack_refuses_what_would_not_come_back_equal(value: Any, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason):
        encode(value, "key", serializer="msgpack")


def test_corrupt_msgpack_entries_are_corrupt() -> None:
    for data in (b"m", b"m\xc1", b"m\x92\x01", b"m\x81\x90\x01", b"m\xa2\xff\xfe"):
        with pytest.raises(CorruptEntry):
            decode(data)


# ==================================================================================
# A hit returns a value of the same type as the miss returned, or the value is refused
# ==================================================================================


class Color(enum.IntEnum):
    RED = 1


class Size(str, enum.Enum):  # noqa: UP042 (the mixin enum users write is the case tested)
    LARGE = "large"


class Ratio(float, enum.Enum):
    HALF = 0.5


class Access(enum.IntFlag):
    READ = 4


class Point(NamedTuple):
    x: int
    y: int


Pair = collections.namedtuple("Pair", "a b")


class Username(str):
    pass


class Count(int):
    pass


class Meters(float):
    pass


class Attributes(dict[str, Any]):
    pass


class Rows(list[Any]):
    pass


SUBCLASSED = [
    Point(1, 2), Pair(1, 2), Color.RED, Size.LARGE, Ratio.HALF,
    Access.READ, Attributes(a=1), collections.OrderedDict(a=1), collections.defaultdict(int, a=1),
    collections.Counter("aab"), collections.UserDict(a=1), collections.UserList([1]),
    Username("ann"), Count(3), Meters(1.5), Rows([1]), Markup("<b>bold</b>"),
]  # fmt: skip
SUBCLASSED_IDS = [type(value).__qualname__ for value in SUBCLASSED]


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("part", SUBCLASSED, ids=SUBCLASSED_IDS)
def test_values_the_format_would_hand_back_as_another_type_are_refused_at_any_depth(
    part: Any, serializer: str
) -> None:
    nested = (({"a": [1, {"b": part}]}, 'value["a"][1]["b"]'), ([0, [part]], "value[1][0]"))
    for value, path in nested:
        with pytest.raises(SerializationError) as caught:
            encode(value, "deep:key", serializer=serializer)
        message = str(caught.value)
        assert path in message and "deep:key" in message
        assert type(part).__qualname__ in message
    if type(part) is not Markup:  # a Markup on its own round-trips (see below)
        with pytest.raises(SerializationError, match=type(part).__qualname__):
            encode(part, "k", serializer=serializer)


def test_a_refusal_names_the_path_from_the_root_the_type_and_what_to_do() -> None:
    value = {"items": [{}, {}, {}, {"created": datetime.datetime(2026, 1, 2, 3, 4)}]}
    for serializer, name in (("json", "JSON"), ("msgpack", "MessagePack")):
        with pytest.raises(SerializationError) as caught:
            encode(value, "orders:7", serializer=serializer)
        message = str(caught.value)
        assert "under key 'orders:7'" in message
        assert 'value["items"][3]["created"] is a datetime' in message
        assert f"which {name} cannot hold" in message
        assert "isoformat" in message and 'FENNEC_CACHE_SERIALIZER = "pickle"' in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"role": Size.LARGE}, 'value["role"] is Size.LARGE, a member of the enum Size'),
        ({"at": Point(1, 2)}, "which JSON would hand back as a list"),
        ([collections.OrderedDict(a=1)], "which JSON would hand back as a plain dict"),
        ({"n": Count(1)}, "a Count (an int subclass), which JSON would hand back as a plain int"),
        ({"t": (1, 2)}, 'value["t"] is a tuple, which JSON would hand back as a list'),
        ({"s": {1}}, "sorted list"),
        ({"scores": {"ann": {1: 0.5}}}, 'value["scores"]["ann"] has the key 1, an int'),
        ({"b": b"\x00"}, 'FENNEC_CACHE_SERIALIZER = "msgpack"'),
        ({"html": Markup("<i>x</i>")}, "a top-level Markup round-trips"),
        ({'say "hi"': [datetime.date(2026, 1, 1)]}, 'value["say \\"hi\\""][0] is a date'),
        (Color.RED, "value is Color.RED, a member of the enum Color (an int subclass)"),
    ],
)
def test_json_refusals_say_what_the_value_would_become_and_what_to_do(
    value: Any, expected: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        encode(value, "k")
    assert expected in str(caught.value)
    assert 'FENNEC_CACHE_SERIALIZER = "pickle"' in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"blob": bytearray(b"x")}, 'value["blob"] is a bytearray'),
        ({1: {None: [2**64]}}, "value[1][None][0] is an int beyond 64 bits"),
        ({"k": {2**64: 1}}, 'value["k"] has the key 18446744073709551616'),
        ({b"raw": [(1, 2)]}, "value[b'raw'][0] is a tuple"),
        ({"name": ["\udc80"]}, 'value["name"][0] holds a lone surrogate'),
    ],
)
def test_msgpack_refusals_name_the_path(value: Any, expected: str) -> None:
    with pytest.raises(SerializationError) as caught:
        encode(value, "k", serializer="msgpack")
    assert expected in str(caught.value)


def test_a_lone_surrogate_is_refused_naming_where_it_is() -> None:
    with pytest.raises(SerializationError) as caught:
        encode({"user": {"name": "a\ud800b"}}, "k")
    assert 'value["user"]["name"] holds a lone surrogate' in str(caught.value)
    with pytest.raises(SerializationError) as caught:
        encode({"user": [{"\udfff": 1}]}, "k")
    assert 'a key of value["user"][0] holds a lone surrogate' in str(caught.value)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_value_that_contains_itself_is_refused_naming_the_cycle(serializer: str) -> None:
    node: dict[str, Any] = {"name": "a", "children": []}
    node["children"].append({"parent": node})
    with pytest.raises(SerializationError) as caught:
        encode({"root": node}, "tree", serializer=serializer)
    assert 'value["root"]["children"][0]["parent"] is value["root"]' in str(caught.value)
    assert "contains itself" in str(caught.value)


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_nesting_beyond_the_limit_is_refused_and_up_to_it_round_trips(serializer: str) -> None:
    deepest = nested_lists(MAX_NESTING)
    assert decode(encode(deepest, "k", serializer=serializer)) == deepest
    for depth in (MAX_NESTING + 1, 5000):
        with pytest.raises(SerializationError) as caught:
            encode({"tree": nested_lists(depth)}, "k", serializer=serializer)
        assert f"more than {MAX_NESTING} levels" in str(caught.value)
        assert 'value["tree"][0][0]' in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [b"j" + b"[" * 100_000 + b"]" * 100_000, b"J" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
)
def test_foreign_entries_nested_too_deep_to_decode_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode(data)


def test_stored_bytes_of_existing_formats_do_not_change() -> None:
    """Entries written by earlier versions stay readable and new ones stay readable by them."""
    value = {"a": [1, 2.5, None, True, "é"], "b": {"c": -0.0}}
    assert encode(value, "k") == 'j{"a":[1,2.5,null,true,"é"],"b":{"c":-0.0}}'.encode()
    assert encode([2**64, "x"], "k") == b'J[18446744073709551616,"x"]'
    assert encode([10**18], "k") == b"J[1000000000000000000]"
    assert encode([float("nan"), float("inf")], "k") == b"j[NaN,Infinity]"
    assert encode({1: b"x", "l": [1.5]}, "k", serializer="msgpack") == (
        b"m\x82\x01\xc4\x01x\xa1l\x91\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"
    )


SECRET = b"s" * 32
RESPONSE = CachedResponse(
    203, (("Content-Type", "text/html; charset=utf-8"), ("X-Über", "ä")), b"<p>hi</p>\n\x00\xff",
    1767225600.125,
)  # fmt: skip
ENVELOPE = Envelope({"id": 7}, "0123456789abcdef", 1767225600.12345, 0.123456,
                    {"users": "fedcba9876543210"})  # fmt: skip
#: An entry that compresses well, and its zlib (level 9) and zstd (level 19) forms as written
#: by other writers than ours: whatever our compressors' levels, these stay readable.
ROWS_ENTRY = b'j{"rows":[' + b",".join([b'"' + b"x" * 20 + b'"'] * 80) + b"]}"
ROWS_ZLIB9 = bytes.fromhex(
    "78dacbaa562aca2f2f56b28a56aac0029474468547854785478547854785478511c2b1b500cbe21565"
)
ROWS_ZSTD19 = bytes.fromhex(
    "28b52ffd603b06cd0000806a7b22726f7773223a5b2278222c5d7d020015ebfc710292"
)

#: tag -> (how the entry is written, its exact bytes, what it decodes to)
PINNED: dict[str, tuple[Callable[[], bytes], bytes, Any]] = {
    "j": (lambda: encode({"a": [1, 2.5, None, True, "é"], "b": {"c": -0.0}}, "k"),
          'j{"a":[1,2.5,null,true,"é"],"b":{"c":-0.0}}'.encode(),
          {"a": [1, 2.5, None, True, "é"], "b": {"c": -0.0}}),
    "J": (lambda: encode([2**64, "x"], "k"), b'J[18446744073709551616,"x"]', [2**64, "x"]),
    "h": (lambda: encode(Markup("<b>Zoë</b> & \u2028"), "k"),
          b'h"<b>Zo\xc3\xab</b> & \xe2\x80\xa8"', Markup("<b>Zoë</b> & \u2028")),
    "r": (lambda: encode(RESPONSE, "k"),
          b'r{"s":203,"h":[["Content-Type","text/html; charset=utf-8"],["X-\xc3\x9cber",'
          b'"\xc3\xa4"]],"t":1767225600.125}\n<p>hi</p>\n\x00\xff', RESPONSE),
    "v": (lambda: encode(VaryMarker(("Accept-Language", "Cookie")), "k"),
          b'v["Accept-Language","Cookie"]', VaryMarker(("Accept-Language", "Cookie"))),
    "e": (lambda: envelope_head(ENVELOPE) + encode(ENVELOPE.value, "k"),
          b'e0123456789abcdef{"f":1767225600.123,"d":0.1235,"t":{"users":"fedcba9876543210"}}'
          b'\nj{"id":7}',
          Envelope({"id": 7}, "0123456789abcdef", 1767225600.123, 0.1235,
                   {"users": "fedcba9876543210"})),
    "G": (lambda: GenerationTag.head(1767225600123) + encode([1], "k"), b"G1767225600123\nj[1]",
          Stamped([1], 1767225600123)),
    "L": (lambda: lease_bytes("0123456789abcdef"), b"L0123456789abcdef",
          Lease("0123456789abcdef")),
    "z": (lambda: b"z" + ROWS_ZLIB9, b"z" + ROWS_ZLIB9, {"rows": ["x" * 20] * 80}),
    "Z": (lambda: b"Z" + ROWS_ZSTD19, b"Z" + ROWS_ZSTD19, {"rows": ["x" * 20] * 80}),
    "m": (lambda: encode({1: b"x", "l": [1.5]}, "k", serializer="msgpack"),
          b"m\x82\x01\xc4\x01x\xa1l\x91\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",
          {1: b"x", "l": [1.5]}),
    "p": (lambda: encode({"a": (1, 2)}, "k", pickle_secret=SECRET),
          b"p" + bytes.fromhex(  # the HMAC-SHA256 of the pickle under SECRET, the pickle
              "d71b67cdb04f66dda4f3c37a4bbe3d29d11f3b81ad7837d05970fd069944fcba"
              "8005950e000000000000007d948c0161944b014b028694732e"),
          {"a": (1, 2)}),
}  # fmt: skip


@pytest.mark.parametrize("tag", sorted(PINNED))
def test_every_format_tag_keeps_its_exact_stored_bytes(tag: str) -> None:
    """Processes of this version and of earlier ones read each other's entries, byte for byte."""
    write, stored, value = PINNED[tag]
    assert write() == stored
    assert stored[:1] == tag.encode()
    back = decode(stored, SECRET)
    assert back == value and type(back) is type(value)
    compressed = b"z" + zlib.compress(stored, 9)
    if tag in "zZeLG":  # a compressed entry holds a value, a response or a vary marker only
        with pytest.raises(CorruptEntry, match="compressed entry holds only"):
            decode(compressed, SECRET)
    else:
        assert decode(compressed, SECRET) == value


def test_the_exact_format_tags_are_all_pinned() -> None:
    """A new tag gets a row in PINNED (and in the table of the serializers' docstring)."""
    import flask_fennec_cache.serializers as serializers

    documented = re.findall(r"^``(.)``  ", serializers.__doc__ or "", flags=re.MULTILINE)
    assert sorted(documented) == sorted(PINNED)
    assert sorted(chr(code) for code in _tags.TAGS) == sorted(PINNED)


def test_a_tag_byte_is_registered_once() -> None:
    registered = dict(_tags.TAGS)
    for byte in (b"j", b"z", b"ab"):
        with pytest.raises(TypeError, match="not one new byte"):

            class Clash(_tags.PayloadTag, byte=byte):
                pass

    assert _tags.TAGS == registered


#: tag -> how many of this package's Python functions decoding a hit calls: as many as before
#: the codec was split in modules (its decoder is looked up and called directly; e, z and Z
#: decode the entry inside them too).
HIT_PATH_CALLS = {"j": 2, "J": 2, "h": 3, "m": 2, "v": 2, "r": 3, "p": 3, "e": 4, "z": 4, "Z": 4}


@pytest.mark.parametrize("tag", sorted(HIT_PATH_CALLS))
def test_decoding_a_hit_adds_no_python_call(tag: str) -> None:
    import flask_fennec_cache

    package = str(Path(flask_fennec_cache.__file__).parent)
    if tag in "zZ":
        stored = Compressor("zlib" if tag == "z" else "zstd", 16)(ROWS_ENTRY)
    else:
        stored = PINNED[tag][1]
    assert stored[:1] == tag.encode()
    decode(stored, SECRET)  # the first run may import a text codec
    calls: list[str] = []

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        code = frame.f_code  # functions only: comprehensions are the same either way
        if event == "call" and code.co_filename.startswith(package) and code.co_name[0] != "<":
            calls.append(code.co_name)

    sys.setprofile(profile)
    try:
        decode(stored, SECRET)
    finally:
        sys.setprofile(None)
    assert len(calls) == HIT_PATH_CALLS[tag], calls


def test_our_compressors_write_the_tag_then_the_libraries_own_stream() -> None:
    import zstandard
    from zlib_ng import zlib_ng

    from flask_fennec_cache import compression

    assert Compressor("zlib", 64)(ROWS_ENTRY) == b"z" + zlib_ng.compress(
        ROWS_ENTRY, compression.ZLIB_LEVEL
    )
    zstd = zstandard.ZstdCompressor(level=compression.ZSTD_LEVEL).compress(ROWS_ENTRY)
    assert Compressor("zstd", 64)(ROWS_ENTRY) == b"Z" + zstd
    assert zlib.decompress(ROWS_ZLIB9) == ROWS_ENTRY


def test_pickled_records_keep_the_module_name_they_were_pickled_under() -> None:
    """A value holding a CachedResponse pickles it as ``flask_fennec_cache.serializers``'s, as
    before the codec was split: both versions unpickle what the other wrote."""
    data = encode({"r": RESPONSE}, "k", pickle_secret=SECRET)
    assert b"\x8c\x1eflask_fennec_cache.serializers\x94\x8c\x0eCachedResponse\x94" in data
    assert decode(data, SECRET) == {"r": RESPONSE}
    for record in (CachedResponse, VaryMarker, Lease, Envelope):
        assert record.__module__ == "flask_fennec_cache.serializers"
        assert typing.get_type_hints(record)  # resolved in that module's names (Any)


def test_only_long_integers_need_the_exact_decoder() -> None:
    assert encode([-(10**18) + 1, 10**18 - 1, "1234567890123456789"], "k")[:1] == b"j"
    assert encode({"a": [{"b": -(10**18)}]}, "k")[:1] == b"J"


# ==================================================================================
# markupsafe.Markup: a cached HTML fragment comes back as Markup, never as a str
# ==================================================================================


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_markup_round_trips_as_markup(serializer: str) -> None:
    fragment = Markup("<p class='x'>Zoë &amp; \u2028 ✓</p>")
    data = encode(fragment, "frag", serializer=serializer)
    # A JSON string, readable in redis-cli; a foreign value starting with "h" is not one.
    assert data == b"h" + json.dumps(str(fragment), ensure_ascii=False).encode("utf-8")
    with pytest.raises(CorruptEntry):
        decode(b"hello from another app")
    back = decode(data)
    assert type(back) is Markup and back == fragment
    assert type(Markup("{}").format(back)) is Markup and "&lt;" not in Markup("{}").format(back)
    function, argument = redecoder(data, back)
    assert type(function(argument)) is Markup and function(argument) == fragment


def test_large_markup_is_compressed_and_comes_back_as_markup() -> None:
    from flask_fennec_cache.compression import Compressor

    fragment = Markup("<li>item</li>" * 500)
    data = Compressor("zlib", 1024)(encode(fragment, "k"))
    assert data[:1] == b"z"
    back = decode(data)
    assert type(back) is Markup and back == fragment
    function, argument = redecoder(data, back)
    assert type(function(argument)) is Markup


def test_markup_in_an_envelope_comes_back_as_markup() -> None:
    envelope = Envelope(Markup("<b>x</b>"), "0123456789abcdef", 12.5, 0.25, {"t": "v" * 16})
    back = decode(envelope_head(envelope) + encode(envelope.value, "k"))
    assert isinstance(back, Envelope) and type(back.value) is Markup and back == envelope


def test_markup_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(SerializationError, match="surrogate"):
        encode(Markup("<b>\ud800</b>"), "k")


def test_markup_subclasses_are_refused() -> None:
    class Fragment(Markup):
        pass

    with pytest.raises(SerializationError, match="Fragment"):
        encode(Fragment("<b>x</b>"), "k")


def test_pickle_keeps_any_markup_and_subclass() -> None:
    secret = b"p" * 32
    value = {"html": Markup("<b>x</b>"), "role": Size.LARGE, "at": Point(1, 2)}
    back = decode(encode(value, "k", pickle_secret=secret), secret)
    assert back == value
    assert [type(part) for part in back.values()] == [Markup, Size, Point]
    fragment = decode(encode(Markup("<i>y</i>"), "k", pickle_secret=secret), secret)
    assert type(fragment) is Markup


def test_a_markup_entry_is_markup_on_near_cache_hits_too(
    redis_server: RedisServer, prefix: str
) -> None:
    near = RedisCache(redis_server.url, prefix=prefix, near_cache=True)
    try:
        fragment = Markup("<nav>menu</nav>")
        assert near.set("fragment", fragment)
        for _ in range(3):
            got = near.get("fragment")
            assert type(got) is Markup and got == fragment
        assert near.get_stats()["near_hits"] >= 1
    finally:
        near.close()


def test_a_decorated_function_logs_the_path_and_does_not_cache(
    fake_backend: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @cache(ttl=60, backend=fake_backend)
    def order(order_id: int) -> dict[str, Any]:
        calls.append(order_id)
        return {"id": order_id, "lines": [{"status": Size.LARGE}]}

    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert order(5) == {"id": 5, "lines": [{"status": Size.LARGE}]}
        assert order(5)["lines"][0]["status"] is Size.LARGE
    assert calls == [5, 5]
    assert 'value["lines"][0]["status"] is Size.LARGE' in caplog.text


@pytest.mark.parametrize(
    ("value", "serializer", "expected"),
    [
        ({Color.RED: 1}, "msgpack", "value has the key Color.RED, a member of the enum Color"),
        ({Username("a"): 1}, "json", "convert the key with str(...)"),
        ({True: 1}, "json", "has the key True, a bool, which JSON cannot hold as a key exactly"),
        ({(1,): 1}, "msgpack", "value has the key (1,), a tuple"),
    ],
)
def test_refused_keys_are_named_with_what_to_do(value: Any, serializer: str, expected: str) -> None:
    with pytest.raises(SerializationError) as caught:
        encode(value, "k", serializer=serializer)
    assert expected in str(caught.value)


def test_set_refuses_a_lookalike_value_naming_the_path_and_stores_nothing(
    backend: RedisCache,
) -> None:
    when = datetime.datetime(2026, 5, 1, 12, 0)
    with pytest.raises(SerializationError, match=r'value\["items"\]\[0\]\["created"\] is a date'):
        backend.set("order:9", {"items": [{"created": when}]})
    with pytest.raises(SerializationError, match=r'value\["at"\] is a Point \(a namedtuple\)'):
        backend.set("order:9", {"at": Point(1, 2)}, tags=["orders"], stale_ttl=5)
    with pytest.raises(SerializationError, match=r"value\[0\] is Size.LARGE"):
        backend.set_many({"order:8": [1], "order:9": [Size.LARGE]})
    assert backend.get_many(["order:8", "order:9"]) == {}
    assert backend.set("fragment", Markup("<b>ok</b>"))
    assert type(backend.get("fragment")) is Markup
