"""Property-based tests (hypothesis): key building, serializer round trips, and a fuzz of the
demo's ``POST /users``, ``GET /users/<id>`` and admin endpoints (Flask test client on
``memory://``) that must never answer 500.

Example counts are modest so the module stays fast; with ``$CI`` set the examples are
derandomized (see the profile in conftest.py).
"""

from __future__ import annotations

import collections
import enum
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_fennec_cache import (
    CacheAside,
    CachedResponse,
    FennecCacheError,
    RedisCache,
    SerializationError,
)
from flask_fennec_cache.keys import MAX_READABLE_KEY, FunctionKeys, view_key
from flask_fennec_cache.serializers import (
    CorruptEntry,
    Envelope,
    decode,
    encode,
    envelope_head,
)

FAST = settings(max_examples=150, deadline=None)
HTTP = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ==================================================================================
# Strategies
# ==================================================================================

#: Text that may contain lone surrogates (valid in a Python str, not encodable as UTF-8; a
#: JSON body can carry them as ``"\ud800"`` escapes).
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
#: (``st.text(st.one_of(st.characters(), SURROGATES))`` would drop the surrogates again.)
ANY_CHAR = st.one_of(st.characters(), SURROGATES)
ANY_TEXT = st.lists(ANY_CHAR, max_size=30).map("".join)
UTF8_TEXT = st.text(max_size=30)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    UTF8_TEXT,
    st.binary(max_size=20),
)
#: Arguments a cached function may be called with (hashable or not).
ARGUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(UTF8_TEXT, inner, max_size=4),
        st.frozensets(SCALARS.filter(lambda v: v == v), max_size=4),
    ),
    max_leaves=10,
)
#: Values JSON holds exactly: None, bool, int, finite or infinite float, str, list, dict.
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), UTF8_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(UTF8_TEXT, inner, max_size=5)
    ),
    max_leaves=20,
)


def shape(value: Any) -> Any:
    """A structural identity: equal shapes mean "the same argument" for a cache key.

    Types matter (1, 1.0 and True are different arguments), floats compare by repr (so 0.0
    and -0.0 differ), sets and frozensets with the same members are the same argument.
    """
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, (frozenset, set)):
        return ("set", tuple(sorted(repr(shape(v)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(shape(k)), repr(shape(v))) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(shape(v) for v in value))
    return (type(value).__name__, value)


def exactly_equal(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down (JSON must not turn 1.0 into 1); NaN
    equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        same = a == b or (math.isnan(a) and math.isnan(b))
        return same and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(exactly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            [type(k) for k in a] == [type(k) for k in b]
            and a.keys() == b.keys()
            and all(exactly_equal(a[k], b[k]) for k in a)
        )
    return bool(a == b)


# ==================================================================================
# Key building
# ==================================================================================


def cached_function(a: Any, b: Any = 2, *args: Any, c: Any = 3, **kwargs: Any) -> None:
    """A function with every kind of parameter, for FunctionKeys."""


def simple_function(a: Any, b: Any = 2) -> None:
    """Only positional-or-keyword parameters (the fast path of FunctionKeys)."""


KEYS = FunctionKeys(cached_function)
SIMPLE_KEYS = FunctionKeys(simple_function)
KEY_BOUND = max(MAX_READABLE_KEY, len(f"fn:{__name__}.cached_function:") + 33)


@FAST
@given(a=ARGUMENTS, b=ARGUMENTS, c=ARGUMENTS)
def test_one_logical_call_has_one_key(a: Any, b: Any, c: Any) -> None:
    for keys in (KEYS, SIMPLE_KEYS):
        spellings = [
            ((a, b), {}),
            ((a,), {"b": b}),
            ((), {"a": a, "b": b}),
            ((), {"b": b, "a": a}),
        ]
        assert len({keys.key(args, kwargs) for args, kwargs in spellings}) == 1
        assert keys.key((a,), {}) == keys.key((a, 2), {}) == keys.key((), {"a": a, "b": 2})
    assert KEYS.key((a, b), {"c": 3}) == KEYS.key((a, b), {})
    assert KEYS.key((a, b), {"c": c, "x": 1, "y": 2}) == KEYS.key((a, b), {"y": 2, "c": c, "x": 1})


@FAST
@given(items=st.dictionaries(UTF8_TEXT, SCALARS, max_size=6), data=st.data())
def test_dict_and_set_arguments_ignore_order(items: dict[str, Any], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(list(items.items())))
    assert KEYS.key((items,), {}) == KEYS.key((dict(shuffled),), {})
    names = list(items)
    assert KEYS.key((set(names),), {}) == KEYS.key((frozenset(reversed(names)),), {})


@FAST
@given(x=ARGUMENTS, y=ARGUMENTS)
@example(x=set(), y={})  # an empty set is not an empty dict
@example(x=frozenset(), y={})
@example(x=0.0, y=-0.0)
@example(x=1, y=True)
@example(x=1, y=1.0)
@example(x="1", y=1)
@example(x=b"a", y="a")
@example(x=(1,), y=[1])
@example(x=("a", "b"), y=("a,b",))
def test_different_arguments_have_different_keys(x: Any, y: Any) -> None:
    if shape(x) == shape(y):
        return
    assert KEYS.key((x,), {}) != KEYS.key((y,), {}), (x, y)
    assert KEYS.key((1, x), {}) != KEYS.key((1, y), {}), (x, y)
    assert KEYS.key((1,), {"extra": x}) != KEYS.key((1,), {"extra": y}), (x, y)


@FAST
@given(
    args=st.lists(ARGUMENTS, max_size=6),
    extra=st.dictionaries(UTF8_TEXT, ARGUMENTS, max_size=4),
)
@example(args=["x" * 10_000], extra={})
@example(args=[], extra={"k" * 5000: 1})
def test_keys_are_utf8_text_of_bounded_length(args: list[Any], extra: dict[str, Any]) -> None:
    extra = {f"kw_{name}": value for name, value in extra.items()}
    key = KEYS.key(tuple([0, *args]), extra)
    assert isinstance(key, str)
    assert len(key) <= KEY_BOUND, len(key)
    key.encode("utf-8")  # Redis keys are bytes: the key must encode


@FAST
@given(text=ANY_TEXT)
@example(text="\ud800")
def test_keys_of_any_text_argument_encode(text: str) -> None:
    KEYS.key((text,), {}).encode("utf-8")


PATH_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
QUERY = st.lists(st.tuples(PATH_TEXT, PATH_TEXT), max_size=5)


@FAST
@given(host=st.sampled_from(["example.com", "EXAMPLE.com:8080", "127.0.0.1"]), path=PATH_TEXT,
       query=QUERY, data=st.data())  # fmt: skip
def test_view_keys_are_stable_and_bounded(
    host: str, path: str, query: list[tuple[str, str]], data: st.DataObject
) -> None:
    path = "/" + path
    key = view_key("ep", host, path, query)
    assert isinstance(key, str) and len(key) <= max(MAX_READABLE_KEY, len("view:ep:") + 33)
    key.encode("utf-8")
    # Parameters with different names may come in any order; one name's values keep theirs.
    by_name: dict[str, list[str]] = {}
    for name, value in query:
        by_name.setdefault(name, []).append(value)
    names = data.draw(st.permutations(list(by_name)))
    reordered = [(name, value) for name in names for value in by_name[name]]
    assert view_key("ep", host, path, reordered) == key
    assert view_key("ep", host.upper(), path, query) == key


@FAST
@given(a=st.tuples(PATH_TEXT, QUERY), b=st.tuples(PATH_TEXT, QUERY))
@example(a=("a?b=1", []), b=("a", [("b", "1")]))
@example(a=("a%3F", []), b=("a?", []))
@example(a=("a", [("b", "1&c=2")]), b=("a", [("b", "1"), ("c", "2")]))
def test_different_requests_have_different_view_keys(
    a: tuple[str, list[tuple[str, str]]], b: tuple[str, list[tuple[str, str]]]
) -> None:
    def canonical(request: tuple[str, list[tuple[str, str]]]) -> Any:
        path, query = request
        return path, sorted(query, key=lambda pair: pair[0])

    if canonical(a) == canonical(b):
        return
    assert view_key("ep", "h", "/" + a[0], a[1]) != view_key("ep", "h", "/" + b[0], b[1])


# ==================================================================================
# Serializer round trips
# ==================================================================================


@FAST
@given(value=JSON_VALUES)
@example(value=-0.0)
@example(value=[math.inf, -math.inf])
@example(value={"": {"\n": ["\x00", "\u2028", "\U0001f98a"]}})
@example(value=2**200)
def test_json_values_round_trip_exactly(value: Any) -> None:
    assert exactly_equal(decode(encode(value, "k")), value)


@FAST
@given(value=st.recursive(
    st.one_of(st.none(), st.integers(), ANY_TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
))  # fmt: skip
@example(value="\ud800")
@example(value={"name": "\udfff"})
def test_any_text_round_trips_or_is_refused_with_a_serialization_error(value: Any) -> None:
    try:
        data = encode(value, "k")
    except SerializationError:
        return
    assert exactly_equal(decode(data), value)


MSGPACK_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    ANY_TEXT,
    st.binary(max_size=20),
)


@FAST
@given(value=st.recursive(
    MSGPACK_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(MSGPACK_SCALARS, inner, max_size=3),
    ),
    max_leaves=8,
))  # fmt: skip
@example(value={1: b"\x00", None: [2**64]})
@example(value={"t": (1, 2)})
@example(value={"s": "\ud800"})
def test_msgpack_values_round_trip_exactly_or_are_refused(value: Any) -> None:
    try:
        data = encode(value, "k", serializer="msgpack")
    except SerializationError:
        return
    assert data[:1] == b"m"
    assert exactly_equal(decode(data), value)


class Level(enum.IntEnum):
    LOW = 1


class Mode(str, enum.Enum):  # noqa: UP042 (the mixin enum users write is the case tested)
    READ = "read"


class Weight(float, enum.Enum):
    HALF = 0.5


class Flavor(enum.Enum):
    PLAIN = "plain"


class Label(str):
    pass


class Amount(int):
    pass


class Scale(float):
    pass


class Coordinates(NamedTuple):
    lat: Any
    lon: Any


#: Scalars whose type JSON or MessagePack would not hand back (a subclass, or no such type).
LOOKALIKE_SCALARS = st.one_of(
    st.sampled_from([Level.LOW, Mode.READ, Weight.HALF, Flavor.PLAIN]),
    UTF8_TEXT.map(Label), st.integers().map(Amount), st.floats().map(Scale),
    UTF8_TEXT.map(Markup), st.dates(), st.datetimes(), st.decimals(allow_nan=False),
    st.binary(max_size=8).map(bytearray), st.frozensets(st.integers(), max_size=3),
)  # fmt: skip
#: Scalars of the exact types JSON holds (NaN and infinities included).
EXACT_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), UTF8_TEXT)
#: Exact types at the edges: what one format holds and the other does not, or neither.
EDGE_SCALARS = st.one_of(
    st.sampled_from([2**64, -(2**63) - 1, 10**18, 2**63 - 1]), ANY_TEXT, st.binary(max_size=8)
)
KEYS_OF_ANY_TYPE = st.one_of(
    UTF8_TEXT, ANY_TEXT, st.integers(), st.none(), st.binary(max_size=4), UTF8_TEXT.map(Label),
    st.sampled_from([Level.LOW, Mode.READ, (1, 2)]),
)  # fmt: skip
#: Mostly exact values, with a part here and there that a format would not hand back.
MIXED_VALUES = st.recursive(
    st.one_of(*[EXACT_SCALARS] * 8, EDGE_SCALARS, LOOKALIKE_SCALARS),
    lambda inner: st.one_of(
        *[st.lists(inner, max_size=4), st.dictionaries(UTF8_TEXT, inner, max_size=4)] * 4,
        st.dictionaries(KEYS_OF_ANY_TYPE, inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.tuples(inner, inner).map(lambda pair: Coordinates(*pair)),
        st.dictionaries(UTF8_TEXT, inner, max_size=3).map(collections.OrderedDict),
        st.dictionaries(UTF8_TEXT, inner, max_size=3).map(
            lambda d: collections.defaultdict(list, d)
        ),
        st.lists(inner, max_size=3).map(collections.UserList),
    ),
    max_leaves=12,
)


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def held_exactly(value: Any, serializer: str) -> bool:
    """The oracle: whether *serializer* can hand *value* back with the same types everywhere."""
    scalars: tuple[type, ...] = (type(None), bool, int, float, str)
    if serializer == "msgpack":
        scalars += (bytes,)

    def scalar(part: Any) -> bool:
        if type(part) not in scalars:
            return False
        if type(part) is str:
            return utf8(part)
        if type(part) is int and serializer == "msgpack":
            return -(2**63) <= part < 2**64
        return True

    def key(name: Any) -> bool:
        return scalar(name) if serializer == "msgpack" else type(name) is str and utf8(name)

    def held(part: Any) -> bool:
        if type(part) is list:
            return all(held(item) for item in part)
        if type(part) is dict:
            return all(key(name) and held(item) for name, item in part.items())
        return scalar(part)

    if type(value) is Markup:
        return utf8(value)
    return held(value)


@FAST
@given(value=st.one_of(JSON_VALUES, MIXED_VALUES), serializer=st.sampled_from(["json", "msgpack"]))
@example(value={"a": [1, {"b": Level.LOW}]}, serializer="json")
@example(value=[Coordinates(1, 2)], serializer="msgpack")
@example(value=Markup("<b>x</b>"), serializer="json")
@example(value={"html": Markup("<b>x</b>")}, serializer="msgpack")
@example(value=[math.nan, -0.0, math.inf], serializer="json")
@example(value=collections.Counter("ab"), serializer="json")
def test_every_value_comes_back_with_the_same_types_or_is_refused(
    value: Any, serializer: str
) -> None:
    """A hit hands back what the miss returned, type for type at every depth; anything else
    is refused with a SerializationError, and only that."""
    try:
        data = encode(value, "prop:key", serializer=serializer)
    except SerializationError as exc:
        assert not held_exactly(value, serializer), (value, exc)
        assert str(exc).startswith("cannot store") and "'prop:key'" in str(exc)
        return
    assert held_exactly(value, serializer), value
    back = decode(data)
    assert exactly_equal(back, value), (value, back)


HEADER_NAMES = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"), min_size=1
)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)


@FAST
@given(
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6).map(tuple),
    body=st.binary(max_size=2000),
    stored_at=st.floats(0, 4e9),
)
@example(status=200, headers=(), body=b'\n\r\n\x00j{"a":1}\ne', stored_at=0.0)
def test_cached_response_bodies_are_byte_exact(
    status: int, headers: tuple[tuple[str, str], ...], body: bytes, stored_at: float
) -> None:
    response = CachedResponse(status, headers, body, stored_at)
    back = decode(encode(response, "k"))
    assert back == response
    assert back.body == body and type(back.body) is bytes


@FAST
@given(
    value=JSON_VALUES,
    fresh=st.one_of(st.none(), st.integers(0, 4_000_000_000).map(lambda n: n / 1000)),
    load=st.integers(0, 10**6).map(lambda n: n / 10_000),
    tags=st.dictionaries(UTF8_TEXT, st.text("0123456789abcdef", min_size=16, max_size=16)),
)
def test_envelopes_round_trip(
    value: Any, fresh: float | None, load: float, tags: dict[str, str]
) -> None:
    envelope = Envelope(value, "0123456789abcdef", fresh, load, tags)
    back = decode(envelope_head(envelope) + encode(envelope.value, "k"))
    assert isinstance(back, Envelope)
    assert exactly_equal(back.value, value)
    assert (back.version, back.fresh_until, back.load_seconds, back.tags) == (
        "0123456789abcdef", fresh, load, tags,
    )  # fmt: skip


@FAST
@given(value=ARGUMENTS)
def test_signed_pickle_round_trips_and_needs_the_secret(value: Any) -> None:
    secret = b"0123456789abcdef-secret"
    data = encode(value, "k", secret)
    assert data[:1] == b"p"
    assert shape(decode(data, secret)) == shape(value)
    with pytest.raises(CorruptEntry, match="signature"):
        decode(data, b"another secret, 16+ bytes")
    with pytest.raises(CorruptEntry, match="pickle"):
        decode(data)


KEYS_URL = f"memory://props-{uuid.uuid4().hex}"


@FAST
@given(key=ANY_TEXT.filter(bool), value=JSON_VALUES)
@example(key="user:\ud800", value=1)
def test_any_key_reads_fail_open_and_loaders_answer(key: str, value: Any) -> None:
    """A key built from user input (``key="user:{name}"``) never breaks a read or a load."""
    made = RedisCache(KEYS_URL, prefix=f"p{uuid.uuid4().hex}:", stats_flush_interval=3600)
    try:
        assert made.get(key, default="d") in ("d", value)
        try:
            made.set(key, value)
        except FennecCacheError:
            pass
        assert made.get(key, default=value) == value
        assert CacheAside(made, ttl=60).get(key, loader=lambda: "loaded") in ("loaded", value)
    finally:
        made.close()


# ==================================================================================
# HTTP fuzz: the demo never answers 500
# ==================================================================================


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    from demo.app import create_app

    app = create_app(
        {
            "FENNEC_CACHE_URL": f"memory://fuzz-{uuid.uuid4().hex}",
            "FENNEC_CACHE_ADMIN_TOKEN": None,
            "FENNEC_CACHE_ADMIN_OPEN": True,
            "DEMO_DB_DELAY": 0.0,
            "DEMO_DB_PATH": str(Path(tmp_path_factory.mktemp("fuzz")) / "demo.sqlite3"),
        }
    )
    yield app
    app.extensions["fennec_cache"].close()


@pytest.fixture
def client(demo_app: Flask) -> FlaskClient:
    return demo_app.test_client()


def assert_not_500(response: Any, what: Any) -> None:
    """No 5xx; an error answer is JSON with an ``error`` message. Closes the response."""
    with response:
        data = response.get_data()
        assert response.status_code < 500, (what, response.status_code, data[:300])
        if response.status_code >= 400 and data:
            body = response.get_json(silent=True)
            assert isinstance(body, dict) and "error" in body, (what, data[:300])


CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "APPLICATION/JSON", "application/vnd.api+json", "text/plain", "text/json",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "",
    "application/json; charset=utf-16", "application/octet-stream",
])  # fmt: skip
USER_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.floats(), UTF8_TEXT,
    st.none(), st.just(2**63 - 1), st.just(2**63),
)  # fmt: skip
FUZZED_USERS = st.fixed_dictionaries(
    {"id": USER_IDS, "name": ANY_TEXT, "email": ANY_TEXT},
    optional={"extra": JSON_VALUES},
)
#: Users that pass validation except, perhaps, for what their text holds.
VALID_USERS = st.fixed_dictionaries(
    {
        "id": st.integers(1, 10**6),
        "name": st.lists(ANY_CHAR, min_size=1, max_size=20)
        .map("".join)
        .filter(lambda name: bool(name.strip())),
        "email": st.tuples(ANY_TEXT, ANY_TEXT).map(lambda parts: f"{parts[0]}@x{parts[1]}"),
    }
)
USERS = st.one_of(VALID_USERS, FUZZED_USERS)


def json_bytes(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


BODIES = st.one_of(
    st.tuples(USERS, st.booleans()).map(lambda pair: json_bytes(*pair)),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda pair: json_bytes(*pair)),
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-16")),
    st.just(b"{" * 5000),
    st.just(b'{"id": 1, "name": "A", "email": "a@b", "id": 2}'),
    st.just(b"x" * 20_000),  # over the demo's 16 KiB limit
)


@HTTP
@given(body=BODIES, content_type=CONTENT_TYPES)
@example(body=b'{"id": 5, "name": "\\ud800", "email": "a@b"}', content_type="application/json")
@example(body=b'{"id": 5, "name": "Eve", "email": "e@x"}', content_type="application/json")
@example(body=b'{"id": NaN, "name": "Eve", "email": "e@x"}', content_type="application/json")
@example(body=b'{"id": 1e400, "name": "Eve", "email": "e@x"}', content_type="application/json")
def test_post_users_never_answers_500(client: FlaskClient, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/users", data=body, headers=headers)
    assert_not_500(response, (body[:200], content_type))
    if response.status_code in (200, 201):
        user = response.get_json()["user"]
        with client.get(f"/users/{user['id']}") as read:
            assert read.get_json()["user"] == user


@HTTP
@given(user_id=st.integers(min_value=0, max_value=10**30))
@example(user_id=2**63 - 1)
@example(user_id=2**63)
def test_get_user_never_answers_500(client: FlaskClient, user_id: int) -> None:
    for path in (f"/users/{user_id}", f"/users-aside/{user_id}"):
        assert_not_500(client.get(path), path)


PATTERN_TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("*?[]^-\\!:{}") + ["user:", "\x00", "\x1f"]),
        st.characters(),
        SURROGATES,
    ),
    max_size=20,
).map("".join)
CLEAR_BODIES = st.one_of(
    st.tuples(st.fixed_dictionaries({"pattern": PATTERN_TEXT}), st.booleans()).map(
        lambda pair: json_bytes(*pair)
    ),
    st.tuples(st.fixed_dictionaries({"pattern": JSON_VALUES}), st.booleans()).map(
        lambda pair: json_bytes(*pair)
    ),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda pair: json_bytes(*pair)),
    st.binary(max_size=100),
    st.just(b" "),
    st.just(b'{"pattern": "' + b"*" * 600 + b'"}'),
    st.just(b"x" * 5000),  # over the admin's 4 KiB limit
)


@HTTP
@given(body=CLEAR_BODIES, content_type=CONTENT_TYPES)
@example(body=b'{"pattern": "\\ud800"}', content_type="application/json")
@example(body=b'{"pattern": "user:*"}', content_type="application/json")
@example(body=b'{"pattern": "[", "other": 1}', content_type="application/json")
def test_admin_clear_never_answers_500(client: FlaskClient, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/cache/clear", data=body, headers=headers)
    assert_not_500(response, (body[:200], content_type))


METHODS = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"]
)
PATHS = st.one_of(
    st.sampled_from([
        "/cache/stats", "/cache/clear", "/cache/health", "/cache/metrics", "/cache/", "/cache",
        "/cache/nope", "/cache//stats", "/cache/stats/", "/cache/%00", "/cache/../users/1",
        "/users", "/users/1", "/users-aside/1", "/benchmark", "/", "/users/1?x=%ff",
        "/cache/stats?format=%00", "/users/%2e%2e", "/users/1/",
    ]),
    st.text(st.characters(codec="ascii", exclude_characters="?#"), max_size=30).map(
        lambda t: "/cache/" + t
    ),
)  # fmt: skip


@HTTP
@given(method=METHODS, path=PATHS, body=st.one_of(st.none(), st.binary(max_size=50)))
def test_odd_methods_and_paths_never_answer_500(
    client: FlaskClient, method: str, path: str, body: bytes | None
) -> None:
    response = client.open(path, method=method, data=body)
    assert_not_500(response, (method, path, body))
