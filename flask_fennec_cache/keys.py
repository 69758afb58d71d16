"""Build every cache key: functions from their name and arguments, views from the request."""

from __future__ import annotations

import enum
import hashlib
import inspect
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from ._validate import RESERVED
from .errors import ConfigurationError, KeyBuildError

__all__ = [
    "FunctionKeys",
    "KeySpec",
    "canonical",
    "group_head",
    "group_index",
    "hashed_if_long",
    "variant_key",
    "view_group",
    "view_key",
]

MAX_READABLE_KEY = 200
MEMO_SIZE = 4096
MEMO_MAX_STR = 256
# Arguments of these exact types (not subclasses: True is not 1 here) have keys that depend on
# their value alone, so a call's key can be remembered by its arguments.
_MEMO_TYPES = frozenset({int, str})
KeySpec = str | Callable[..., str] | None


def hashed_if_long(head: str, tail: str) -> str:
    """Join *head* and *tail*, hashing *tail* when the whole would be longer than is readable."""
    if len(head) + len(tail) <= MAX_READABLE_KEY:
        return head + tail
    return head + "#" + hashlib.sha256(tail.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def canonical(value: Any, where: str = "value") -> str:
    """A stable text for *value*, equal across processes for equal values.

    Containers are normalised (dicts and sets are sorted); an object can choose its own text by
    defining ``__cache_key__()``. An object whose ``repr`` is the default one (it contains its
    memory address) raises :class:`KeyBuildError` naming *where* it was found.
    """
    if value is None or isinstance(value, (str, int, float, bytes, enum.Enum)):
        return repr(value)
    own = getattr(value, "__cache_key__", None)
    if own is not None:
        return canonical(own(), where)
    if isinstance(value, tuple):
        return "(" + ",".join(canonical(item, where) for item in value) + ")"
    if isinstance(value, list):
        return "[" + ",".join(canonical(item, where) for item in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "set{" + ",".join(sorted(canonical(item, where) for item in value)) + "}"
    if isinstance(value, Mapping):
        pairs = sorted((canonical(k, where), canonical(v, where)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    text = repr(value)
    if " at 0x" in text:
        raise KeyBuildError(
            f"{where} is {text}, which has no stable text for a cache key: give "
            f"{type(value).__qualname__} a __cache_key__() or __repr__, or pass key= to @cache"
        )
    return f"{type(value).__qualname__}:{text}"  # the type too: a repr may mimic a builtin's


class FunctionKeys:
    """Builds the keys of one decorated function; everything independent of a call is done once."""

    def __init__(self, func: Callable[..., Any], spec: KeySpec = None) -> None:
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        kinds = {p.kind for p in params}
        self._simple = not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}
        self._names = tuple(p.name for p in params)
        self._positional = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        )
        self._keyword = frozenset(p.name for p in params if p.kind is not p.POSITIONAL_ONLY)
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._var_keyword = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        self._spec = spec
        self._head = f"fn:{func.__module__}.{func.__qualname__}:"
        if isinstance(spec, str):
            self._check_template(spec, kinds)
        self._memo: dict[tuple[Any, ...], str] | None = None if callable(spec) else {}

    def _check_template(self, template: str, kinds: set[Any]) -> None:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise ConfigurationError(f"key template {template!r}: {exc}") from exc
        for field in fields:
            name = field.split(".", 1)[0].split("[", 1)[0]
            if not name or name.isdigit():
                raise ConfigurationError(
                    f"key template {template!r}: use parameter names, like {{user_id}}"
                )
            if name not in self._names and inspect.Parameter.VAR_KEYWORD not in kinds:
                raise ConfigurationError(
                    f"key template {template!r} names {name!r}, which is not a parameter "
                    f"of {self._head[3:-1]} (parameters: {', '.join(self._names) or 'none'})"
                )

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map a call's arguments to parameter names in signature order, defaults filled in."""
        if self._simple and len(args) <= self._positional:
            given = len(args)
            if not kwargs and given == len(self._names):
                return dict(zip(self._names, args, strict=True))
            bound: dict[str, Any] = {}
            for index, name in enumerate(self._names):
                if index < given:
                    if name in kwargs:
                        break
                    bound[name] = args[index]
                elif name in kwargs and name in self._keyword:
                    bound[name] = kwargs[name]
                elif name in self._defaults:
                    bound[name] = self._defaults[name]
                else:
                    break
            else:
                if len(kwargs) == len(bound) - given:
                    return bound
        full = self._signature.bind(*args, **kwargs)  # raises the TypeError the call would
        full.apply_defaults()
        return dict(full.arguments)

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The cache key, relative to the backend's prefix, for one call."""
        memo = self._memo
        if memo is not None and not kwargs:
            for arg in args:
                if type(arg) not in _MEMO_TYPES or (type(arg) is str and len(arg) > MEMO_MAX_STR):
                    break
            else:
                found = memo.get(args)
                if found is None:
                    found = self._build(args, kwargs)
                    if len(memo) >= MEMO_SIZE:
                        memo.clear()
                    memo[args] = found
                return found
        return self._build(args, kwargs)

    def _build(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        bound = self.arguments(args, kwargs)
        spec = self._spec
        if isinstance(spec, str):
            if self._var_keyword is not None:
                bound = {**bound, **bound.get(self._var_keyword, {})}
            return spec.format(**bound)
        if spec is not None:
            return spec(*args, **kwargs)
        parts = ",".join(
            f"{name}={canonical(value, f'argument {name!r}')}" for name, value in bound.items()
        )
        return hashed_if_long(self._head, parts)


def view_group(endpoint: str, view_args: Mapping[str, Any], spec: KeySpec = None) -> str:
    """The key naming one view's entries for one set of view arguments.

    By default the endpoint and the normalised view arguments; a template (``"post:{post_id}"``)
    is filled from the view arguments; a callable is called with them as keyword arguments.
    """
    if spec is None:
        parts = ",".join(
            f"{name}={canonical(value, f'view argument {name!r}')}"
            for name, value in sorted(view_args.items())
        )
        return hashed_if_long(f"view:{endpoint}:", parts)
    if isinstance(spec, str):
        return spec.format(**view_args)
    return spec(**view_args)


def group_head(group: str) -> str:
    """The start of every key of *group*: the group with a cluster hash tag of its own, which
    its index shares (so the group is stored and dropped in one slot)."""
    tag = hashlib.sha256(group.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"view:{{{tag}}}:{group}"


def group_index(group: str) -> str:
    """The key, in the library's reserved namespace, of the set listing *group*'s keys."""
    return RESERVED + group_head(group)


def view_key(group: str, host: str, path: str, query: Iterable[tuple[str, str]]) -> str:
    """The key of a cached view response: its group, the host, the path and the query in
    sorted order."""
    # Sorted by name only: the order of a repeated parameter's values matters to the view.
    query_text = urlencode(sorted(query, key=lambda pair: pair[0]))
    tail = quote(host.lower() + path, safe="/:@!$&'()*+,;=-._~")
    if query_text:
        tail += "?" + query_text
    return hashed_if_long(group_head(group) + "|", tail)


def variant_key(base: str, vary_values: Iterable[str]) -> str:
    """The key of one variant of a view whose response varies on request headers."""
    digest = hashlib.sha256("\0".join(vary_values).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{base}|vary:{digest[:32]}"
