"""Key building: function keys from normalised arguments, templates, and view keys."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from flask_fennec_cache import ConfigurationError, KeyBuildError, RedisCache, cache
from flask_fennec_cache.keys import (
    MAX_READABLE_KEY,
    FunctionKeys,
    canonical,
    hashed_if_long,
    variant_key,
    view_key,
)

Call = tuple[tuple[Any, ...], dict[str, Any]]


def key_of(func: Callable[..., Any], call: Call, spec: Any = None) -> str:
    return FunctionKeys(func, spec).key(*call)


# ==================================================================================
# Function keys: spellings of one call share a key
# ==================================================================================


def two(a: int, b: int = 5) -> None: ...


def kw_only(a: int, *, c: int = 1, d: int = 2) -> None: ...


def pos_only(a: int, /, b: int = 2) -> None: ...


@pytest.mark.parametrize(
    ("func", "same"),
    [
        (two, [((1, 2), {}), ((1,), {"b": 2}), ((), {"a": 1, "b": 2}), ((), {"b": 2, "a": 1})]),
        (two, [((1,), {}), ((1, 5), {}), ((), {"a": 1}), ((), {"b": 5, "a": 1})]),
        (
            kw_only,
            [
                ((1,), {}),
                ((1,), {"c": 1}),
                ((1,), {"d": 2}),
                ((1,), {"c": 1, "d": 2}),
                ((1,), {"d": 2, "c": 1}),
                ((), {"d": 2, "a": 1}),
            ],
        ),
        (pos_only, [((1,), {}), ((1, 2), {}), ((1,), {"b": 2})]),
    ],
    ids=["all-given", "default-filled", "keyword-only", "positional-only"],
)
def test_every_spelling_of_a_call_shares_a_key(func: Callable[..., Any], same: list[Call]) -> None:
    keys = {key_of(func, call) for call in same}
    assert len(keys) == 1, keys


def test_different_calls_have_different_keys() -> None:
    calls: list[Call] = [
        ((1, 2), {}), ((2, 1), {}), ((1, 3), {}), (("1", 2), {}), ((1.0, 2), {}),
        ((True, 2), {}), ((None, 2), {}), (([1], 2), {}), (((1,), 2), {}), ((b"1", 2), {}),
    ]  # fmt: skip
    keys = [key_of(two, call) for call in calls]
    assert len(set(keys)) == len(keys), keys


def test_the_key_names_module_and_qualname() -> None:
    class Holder:
        @staticmethod
        def two(a: int, b: int = 5) -> None: ...

    assert key_of(two, ((1,), {})) != key_of(Holder.two, ((1,), {}))
    assert key_of(two, ((1,), {})).startswith(f"fn:{__name__}.two:")
    assert "Holder.two" in key_of(Holder.two, ((1,), {}))


def test_keys_are_stable_across_builders() -> None:
    assert FunctionKeys(two).key((1, 2), {}) == FunctionKeys(two).key((1, 2), {})


def test_a_call_the_function_would_refuse_raises_type_error() -> None:
    keys = FunctionKeys(two)
    with pytest.raises(TypeError):
        keys.key((1,), {"a": 1})
    with pytest.raises(TypeError):
        keys.key((1, 2, 3), {})
    with pytest.raises(TypeError):
        keys.key((), {"zz": 1})


# ==================================================================================
# *args / **kwargs
# ==================================================================================


def star(*args: Any, **kwargs: Any) -> None: ...


def mixed(a: int, *rest: Any, k: int = 1, **extra: Any) -> None: ...


def test_var_args_and_kwargs_are_normalised() -> None:
    assert key_of(star, ((1, 2), {"x": 1, "y": 2})) == key_of(star, ((1, 2), {"y": 2, "x": 1}))
    assert key_of(star, ((1, 2), {})) != key_of(star, ((2, 1), {}))
    assert key_of(star, ((1,), {"x": 2})) != key_of(star, ((1,), {"y": 2}))
    assert key_of(star, ((), {})) != key_of(star, ((None,), {}))


def test_mixed_signature_spellings_share_a_key() -> None:
    base = key_of(mixed, ((1, 2, 3), {"z": 9}))
    assert key_of(mixed, ((1, 2, 3), {"k": 1, "z": 9})) == base
    assert key_of(mixed, ((1, 2, 3), {"z": 9, "k": 1})) == base
    assert key_of(mixed, ((1, 2, 3), {"z": 9, "k": 2})) != base
    assert key_of(mixed, ((1, 2), {"z": 9})) != base


# ==================================================================================
# Normalising values
# ==================================================================================


def one(x: Any) -> None: ...


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({3, 1, 2}, {2, 3, 1}),
        (frozenset({"x", "y"}), frozenset({"y", "x"})),
        (
            {"outer": {"b": [1, {"z", "y"}], "a": None}},
            {"outer": {"a": None, "b": [1, {"y", "z"}]}},
        ),
        ({1: "a", "1": "b"}, {"1": "b", 1: "a"}),
    ],
    ids=["dict", "set", "frozenset", "nested", "mixed-key-types"],
)
def test_dict_and_set_order_does_not_matter(left: Any, right: Any) -> None:
    assert key_of(one, ((left,), {})) == key_of(one, ((right,), {}))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": "1"}),
        ({1, 2}, [1, 2]),
        ({"a": 1}, [("a", 1)]),
        ("a,b", ["a", "b"]),
        ({"k": "v"}, {"k:v": None}),
    ],
)
def test_different_values_keep_different_keys(left: Any, right: Any) -> None:
    assert key_of(one, ((left,), {})) != key_of(one, ((right,), {}))


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_enums_and_objects_with_a_repr_are_keyed_by_it() -> None:
    assert key_of(one, ((Color.RED,), {})) != key_of(one, ((Color.BLUE,), {}))
    assert key_of(one, ((Point(1, 2),), {})) == key_of(one, ((Point(1, 2),), {}))
    assert key_of(one, ((Point(1, 2),), {})) != key_of(one, ((Point(2, 1),), {}))


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), [1, Opaque()], {"k": Opaque()}, {Opaque()}, lambda: 1],
    ids=["object", "in-list", "in-dict", "in-set", "lambda"],
)
def test_objects_with_the_default_repr_raise_naming_the_argument(value: Any) -> None:
    def load(user: Any, page: int = 1) -> None: ...

    with pytest.raises(KeyBuildError) as caught:
        key_of(load, ((value,), {}))
    assert "'user'" in str(caught.value)
    assert isinstance(caught.value, TypeError)


class User:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    def __cache_key__(self) -> str:
        return f"user-{self.user_id}"


def test_cache_key_method_is_honoured() -> None:
    assert key_of(one, ((User(1),), {})) == key_of(one, ((User(1),), {}))
    assert key_of(one, ((User(1),), {})) != key_of(one, ((User(2),), {}))
    assert "user-1" in key_of(one, ((User(1),), {}))
    assert key_of(one, (([User(1)],), {})) == key_of(one, (([User(1)],), {}))


def test_canonical_texts() -> None:
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical(None) == "None"
    assert canonical("x") != canonical(b"x")
    assert canonical(User(3)) == canonical("user-3")


# ==================================================================================
# Long keys
# ==================================================================================


def test_long_keys_are_hashed_and_still_distinct() -> None:
    short = key_of(one, (("abc",), {}))
    assert "abc" in short
    long_a = key_of(one, (("a" * 1000,), {}))
    long_b = key_of(one, (("a" * 999 + "b",), {}))
    assert long_a != long_b
    assert long_a == key_of(one, (("a" * 1000,), {}))
    head = f"fn:{__name__}.one:"
    for made in (long_a, long_b):
        assert made.startswith(head)
        assert len(made) <= len(head) + 40
    assert len(key_of(one, (("x" * 100_000,), {}))) == len(long_a)


def test_hashed_if_long_keeps_readable_keys() -> None:
    assert hashed_if_long("h:", "tail") == "h:tail"
    assert len(hashed_if_long("h:", "t" * MAX_READABLE_KEY)) < MAX_READABLE_KEY
    assert hashed_if_long("h:", "\udcff" * 300) != hashed_if_long("h:", "x" * 300)


# ==================================================================================
# Key templates
# ==================================================================================


def get_user(user_id: int, page: int = 1) -> None: ...


@pytest.mark.parametrize(
    ("template", "call", "expected"),
    [
        ("user:{user_id}", ((1,), {}), "user:1"),
        ("user:{user_id}", ((), {"user_id": 1}), "user:1"),
        ("user:{user_id}:{page}", ((7,), {}), "user:7:1"),
        ("user:{user_id}:{page}", ((), {"page": 3, "user_id": 7}), "user:7:3"),
        ("static", ((1,), {}), "static"),
        ("u:{user_id:04d}", ((7,), {}), "u:0007"),
    ],
)
def test_templates_build_the_named_key(template: str, call: Call, expected: str) -> None:
    assert key_of(get_user, call, template) == expected


def test_a_template_may_name_keyword_arguments_of_a_kwargs_function() -> None:
    """The template check accepts any name when the function takes **kwargs; the call must too."""

    def load(**filters: Any) -> None: ...

    assert key_of(load, ((), {"user_id": 1}), "user:{user_id}") == "user:1"


def test_a_callable_key_gets_the_call_arguments() -> None:
    seen: list[Any] = []

    def make_key(user_id: int, page: int = 1) -> str:
        seen.append((user_id, page))
        return f"custom:{user_id}:{page}"

    assert key_of(get_user, ((4,), {"page": 2}), make_key) == "custom:4:2"
    assert seen == [(4, 2)]


@pytest.mark.parametrize(
    "template",
    ["user:{", "user:}", "user:{}", "user:{0}", "user:{nope}", "user:{user_id}:{nope.x}"],
)
def test_bad_templates_raise_configuration_error_when_decorating(
    template: str, fake_backend: RedisCache
) -> None:
    with pytest.raises(ConfigurationError):
        FunctionKeys(get_user, template)
    with pytest.raises(ConfigurationError) as caught:
        cache(backend=fake_backend, key=template)(get_user)
    assert template in str(caught.value)


def test_template_errors_name_the_unknown_field_and_the_parameters(
    fake_backend: RedisCache,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        cache(backend=fake_backend, key="user:{uid}")(get_user)
    message = str(caught.value)
    assert "uid" in message and "user_id" in message


# ==================================================================================
# View keys
# ==================================================================================


def test_view_key_puts_the_query_in_canonical_order() -> None:
    one_order = view_key("users", "example.com", "/users", [("b", "2"), ("a", "1")])
    other = view_key("users", "example.com", "/users", [("a", "1"), ("b", "2")])
    assert one_order == other
    assert view_key("users", "example.com", "/users", []) != one_order


def test_view_key_keeps_the_order_of_repeated_parameters() -> None:
    """``?a=1&a=2`` and ``?a=2&a=1`` differ to the view (``request.args.get("a")``)."""
    first = view_key("v", "h", "/p", [("a", "1"), ("a", "2")])
    second = view_key("v", "h", "/p", [("a", "2"), ("a", "1")])
    assert first != second
    assert view_key("v", "h", "/p", [("a", "1"), ("b", "x"), ("a", "2")]) == view_key(
        "v", "h", "/p", [("b", "x"), ("a", "1"), ("a", "2")]
    )


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("v", "h", "/p", [("a", "1&b=2")]), ("v", "h", "/p", [("a", "1"), ("b", "2")])),
        (("v", "h", "/a?b=1", []), ("v", "h", "/a", [("b", "1")])),
        (("v", "h", "/p", []), ("w", "h", "/p", [])),
        (("v", "h", "/p", []), ("v", "other", "/p", [])),
        (("v", "h", "/p", []), ("v", "h", "/p/", [])),
        (("v", "h", "/p", [("a", "")]), ("v", "h", "/p", [])),
        (("v", "h", "/p", [("a", " ")]), ("v", "h", "/p", [("a", "+")])),
    ],
)
def test_distinct_requests_have_distinct_view_keys(left: Any, right: Any) -> None:
    assert view_key(*left) != view_key(*right)


def test_host_case_does_not_matter_and_long_paths_are_hashed() -> None:
    assert view_key("v", "Example.COM", "/p", []) == view_key("v", "example.com", "/p", [])
    long_path = "/" + "x" * 2000
    made = view_key("v", "h", long_path, [])
    assert len(made) < 100
    assert made != view_key("v", "h", long_path + "y", [])


def test_variant_keys_differ_by_header_values() -> None:
    base = view_key("v", "h", "/p", [])
    en, fr = variant_key(base, ["en"]), variant_key(base, ["fr"])
    assert en != fr
    assert en == variant_key(base, ["en"])
    assert en.startswith(base)
    assert variant_key(base, ["", "x"]) != variant_key(base, ["x", ""])
