"""The keys :mod:`flask_fennec_cache.compat` stores Flask-Caching's entries under, and the
small call conventions of its decorators (``unless`` with or without arguments, ...)."""

from __future__ import annotations

import hashlib
import inspect
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from .errors import KeyBuildError
from .keys import canonical, hashed_if_long

__all__ = [
    "argument_text",
    "function_name",
    "instance_id",
    "join_generator",
    "make_template_fragment_key",
    "function_tag",
    "instance_digest",
    "instance_segment",
    "query_pairs",
    "wants_args",
    "wants_extra_args",
]

FRAGMENT_KEY_HEAD: Final = "_template_fragment_cache_"
_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.")


def make_template_fragment_key(fragment_name: str, vary_on: Iterable[Any] | None = None) -> str:
    """The key of the ``{% cache %}`` fragment named *fragment_name* varying on *vary_on*
    (Flask-Caching's function: ``cache.delete(make_template_fragment_key("sidebar",
    vary_on=[user.id]))`` drops that user's sidebar)."""
    parts = [str(part) for part in vary_on or ()]
    name = f"{fragment_name}_" if parts else str(fragment_name)
    return FRAGMENT_KEY_HEAD + name + "_".join(parts)


def function_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of *func*, reduced to letters, digits, ``_`` and ``.``."""
    name = f"{func.__module__}.{func.__qualname__}"
    return "".join(char for char in name if char in _NAME_CHARS)


def instance_id(obj: Any) -> str:
    """What identifies the instance of a memoized method: its ``__caching_id__()`` if it has
    one, else its ``repr`` (Flask-Caching's rule)."""
    own = getattr(obj, "__caching_id__", None)
    return repr(obj) if own is None else str(own())


def _first_parameter(func: Callable[..., Any]) -> str | None:
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return param.name
        return None
    return None


def _text(value: Any) -> str:
    try:
        return canonical(value)
    except KeyBuildError:
        # Flask-Caching keys an object without a stable text by its repr (so by its
        # address): the entry is this object's, as there.
        return repr(value)


def argument_text(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    ignore: frozenset[str],
) -> str:
    """The arguments of one call of *func* as key text, named as Flask-Caching names them:
    each positional-or-keyword parameter takes its keyword, else the next positional argument,
    else its default (``f(1)``, ``f(1, 0)`` and ``f(a=1, b=0)`` agree when ``b`` defaults to
    0); more positional arguments and the other keywords (sorted) follow. *ignore* is left
    out; ``self`` is :func:`instance_id`, ``cls`` its qualified name. Arguments that do not
    fit the signature still make a key: the call itself raises the TypeError.

    ValueError when *func* is a method (its first parameter ``self`` or ``cls``) and *args*
    does not start with the instance or class.
    """
    params = list(inspect.signature(func).parameters.values())
    first = _first_parameter(func)
    if first in ("self", "cls"):
        if not args:
            kind = "classmethod" if first == "cls" else "method"
            raise ValueError(
                f"{function_name(func)} is a {kind}: pass the {first!r} argument first "
                f"(e.g. cache.delete_memoized(Class.{func.__name__}, {first}, ...))"
            )
        if first == "cls" and not inspect.isclass(args[0]):
            raise ValueError(
                f"{function_name(func)} is a classmethod: pass the class as the first "
                f"argument, got {args[0]!r}"
            )
    named = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    rest = dict(kwargs)
    parts = []
    position = 0
    for param in named:
        if param.name in rest:
            value = rest.pop(param.name)
        elif position < len(args):
            value = args[position]
            position += 1
        else:
            value = None if param.default is param.empty else param.default
        if param.name in ignore:
            continue
        if param.name == first == "self":
            parts.append(f"self={instance_id(value)}")
        elif param.name == first == "cls" and inspect.isclass(value):
            parts.append(f"cls={value.__module__}.{value.__qualname__}")
        else:
            parts.append(f"{param.name}={_text(value)}")
    parts.extend(_text(value) for value in args[len(named) :])
    for param in params:
        if (
            param.kind is param.KEYWORD_ONLY
            and param.name not in rest
            and (param.default is not param.empty)
        ):
            rest[param.name] = param.default
    parts.extend(f"{name}={_text(rest[name])}" for name in sorted(rest) if name not in ignore)
    return ",".join(parts)


def instance_segment(
    func: Callable[..., Any], args: tuple[Any, ...], ignore: frozenset[str]
) -> str:
    """The part of a memoized method's keys naming its instance (``"<digest>:"``; empty for a
    function, or when ``self`` is ignored): ``delete_memoized(obj.method)`` drops the keys
    that start with it. A digest, so that any ``repr`` fits in a glob pattern."""
    if not args or _first_parameter(func) != "self" or "self" in ignore:
        return ""
    return instance_digest(args[0]) + ":"


def instance_digest(instance: Any) -> str:
    """The digest of :func:`instance_id` that keys name an instance by."""
    text = instance_id(instance).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:24]


def function_tag(func: Callable[..., Any]) -> str:
    """The tag of every memoized entry of *func* (one per function: tags never expire)."""
    return hashed_if_long("memoize:", function_name(func))


def query_pairs(
    query: str | Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> list[tuple[str, str]]:
    """A query string, a mapping or ``(name, value)`` pairs, as ``(name, str(value))`` pairs."""
    if isinstance(query, str):
        return parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if isinstance(query, MultiDict):
        items: Iterable[tuple[str, Any]] = query.items(multi=True)
    elif isinstance(query, Mapping):
        items = query.items()
    else:
        items = query
    return [(str(name), str(value)) for name, value in items]


def join_generator(generator: Iterable[Any]) -> Any:
    """A generator's items, joined when they are all str (or all bytes), else a list."""
    chunks = list(generator)
    if all(isinstance(chunk, str) for chunk in chunks):
        return "".join(chunks)
    if all(isinstance(chunk, bytes) for chunk in chunks):
        return b"".join(chunks)
    return chunks


def wants_args(func: Callable[..., Any]) -> bool:
    """Whether *func* takes any positional argument (``unless`` and ``forced_update`` are then
    given the call's arguments)."""
    return any(p.kind is not p.KEYWORD_ONLY for p in inspect.signature(func).parameters.values())


def wants_extra_args(func: Callable[..., Any]) -> bool:
    """Whether *func* takes more than one positional argument (``is_stale`` is then given the
    call's arguments after the cached value)."""
    return (
        sum(p.kind is not p.KEYWORD_ONLY for p in inspect.signature(func).parameters.values()) > 1
    )
