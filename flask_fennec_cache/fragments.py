"""Jinja fragment caching: ``{% cache TTL, PART, ... [, tags=(...)] %}...{% endcache %}``.

:class:`~flask_fennec_cache.FennecCache` registers the tag on each app's Jinja environment.
A fragment is rendered once, stored as safe markup (a hit is never escaped again), under the
key :func:`fragment_key` builds from its parts, through the same get-or-load path as
``@cache`` (single flight, fail-open, tags, stale serving). Without parts, the template's
name and the tag's line name the fragment. Options, after the parts:

``tags=("post:1", ...)``
    :meth:`~flask_fennec_cache.RedisCache.invalidate_tags` drops the fragment.
``stale_ttl=N``
    serve the old fragment for up to N seconds past its TTL while one request re-renders it.
``name="sidebar"``
    the name its statistics count under (``get_stats()["by_name"]``). By default
    ``fragment:<first part>`` when the first part is a string literal
    (``{% cache 60, "sidebar", user.id %}`` counts as ``fragment:sidebar``), else
    ``fragment:<template name>:<line>`` (stable while the template's lines do not move).

``flask_fennec_cache.compat.Cache`` registers the same tag with Flask-Caching's keys and
timeouts (``make_template_fragment_key``, ``'del'``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from flask import Flask
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from markupsafe import Markup

from ._current import current_backend
from .backend import RedisCache
from .errors import ConfigurationError
from .keys import canonical, hashed_if_long
from .loading import CacheParts, LoadPolicy, NamedParts, get_or_load

__all__ = [
    "FragmentCacheExtension",
    "FragmentOptions",
    "FragmentStore",
    "NativeFragments",
    "fragment_key",
    "invalidate_fragment",
    "register_fragments",
]

#: The attribute of a Jinja environment naming the store its ``{% cache %}`` tags use.
STORE_ATTRIBUTE: Final = "fennec_fragment_store"
OPTIONS: Final = ("tags", "stale_ttl", "name")
#: Per-name parts kept by the native store, at most this many (names come from templates).
_MAX_NAMES_KEPT = 1_000


@dataclass(frozen=True)
class FragmentOptions:
    """The keyword options of one ``{% cache %}`` tag."""

    tags: tuple[str, ...] = ()
    stale_ttl: float | None = None
    #: The statistics name (see the module's docs); None counts in the totals only.
    name: str | None = None


class FragmentStore(Protocol):
    """Where a Jinja environment's fragments are cached."""

    def render(
        self, ttl: Any, parts: Sequence[Any], options: FragmentOptions, body: Callable[[], str]
    ) -> Markup:
        """The fragment named by *parts*: cached, or ``body()`` rendered now (and stored)."""
        ...


def fragment_key(*parts: Any) -> str:
    """The key (under the backend's prefix) of the fragment cached with these parts:
    ``{% cache 60, "sidebar", user.id %}`` is ``fragment_key("sidebar", user.id)``.

    Parts are normalised as ``@cache`` arguments are (``1`` and ``"1"`` differ; long keys
    are hashed); an object without a stable text raises
    :class:`~flask_fennec_cache.KeyBuildError`.
    """
    text = ",".join(canonical(part, f"fragment part {i}") for i, part in enumerate(parts))
    return hashed_if_long("fragment:", text)


def invalidate_fragment(*parts: Any, backend: RedisCache | None = None) -> bool:
    """Drop the fragment cached with *parts* (in the current app's backend unless *backend*
    is given); True if there was one."""
    target = backend if backend is not None else current_backend()
    return target.delete(fragment_key(*parts)) > 0


class NativeFragments:
    """The store :class:`~flask_fennec_cache.FennecCache` registers: the current app's
    backend, keyed by :func:`fragment_key`."""

    def __init__(self) -> None:
        self._counted: dict[str, list[NamedParts]] = {}

    def render(
        self, ttl: Any, parts: Sequence[Any], options: FragmentOptions, body: Callable[[], str]
    ) -> Markup:
        """See :class:`FragmentStore`; a TTL of None uses the backend's default."""
        policy = LoadPolicy(ttl=ttl, tags=options.tags, stale_ttl=options.stale_ttl)
        backend: CacheParts = current_backend()
        if options.name is not None:
            backend = NamedParts.of(backend, options.name, self._memo(options.name))
        value, _ = get_or_load(backend, fragment_key(*parts), lambda: Markup(body()), policy)
        return Markup(value)

    def _memo(self, name: str) -> list[NamedParts]:
        memo = self._counted.get(name)
        if memo is None:
            if len(self._counted) >= _MAX_NAMES_KEPT:
                self._counted.clear()
            memo = self._counted[name] = []
        return memo


NATIVE_FRAGMENTS: Final = NativeFragments()


class FragmentCacheExtension(Extension):
    """The ``{% cache TTL, PART, ... %}...{% endcache %}`` tag (see the module's docs)."""

    tags = {"cache"}

    def parse(self, parser: Parser) -> nodes.Node:
        """Parse ``TTL[, PART ...][, tags=(...)][, stale_ttl=N]`` and the body."""
        lineno = next(parser.stream).lineno
        ttl = parser.parse_expression()
        parts: list[nodes.Expr] = []
        options: list[nodes.Keyword] = []
        default_name = f"fragment:{parser.name or parser.filename or '<template>'}:{lineno}"
        while parser.stream.skip_if("comma"):
            if parser.stream.current.type == "name" and parser.stream.look().type == "assign":
                name = next(parser.stream).value
                next(parser.stream)
                if name not in OPTIONS:
                    parser.fail(
                        f"{{% cache %}} has no option {name!r}; its options are "
                        "tags=(...), stale_ttl=N and name=...",
                        lineno,
                    )
                options.append(nodes.Keyword(name, parser.parse_expression(), lineno=lineno))
            elif options:
                parser.fail("{% cache %}: the parts come before its options", lineno)
            else:
                parts.append(parser.parse_expression())
        if not parts:
            parts.append(nodes.Const(f"{parser.filename}{lineno}"))
        elif isinstance(parts[0], nodes.Const) and isinstance(parts[0].value, str):
            default_name = f"fragment:{parts[0].value}"
        if not any(option.key == "name" for option in options):
            options.append(nodes.Keyword("name", nodes.Const(default_name), lineno=lineno))
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        call = self.call_method("_render", [ttl, nodes.List(parts)], options)
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(
        self,
        ttl: Any,
        parts: list[Any],
        caller: Callable[[], str],
        tags: Sequence[str] = (),
        stale_ttl: float | None = None,
        name: str | None = None,
    ) -> Markup:
        store: FragmentStore | None = getattr(self.environment, STORE_ATTRIBUTE, None)
        if store is None:
            raise ConfigurationError(
                "{% cache %} needs a cache: initialise FennecCache (or compat.Cache) on the "
                "app whose templates use it"
            )
        if isinstance(tags, str):
            raise ConfigurationError(
                f"{{% cache %}}: tags must be a sequence of names, e.g. tags=({tags!r},)"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{{% cache %}}: name must be a non-empty str, got {name!r}")
        options = FragmentOptions(tuple(tags), stale_ttl, name)
        return store.render(ttl, parts, options, caller)


def register_fragments(app: Flask, store: FragmentStore = NATIVE_FRAGMENTS) -> None:
    """Add the ``{% cache %}`` tag to *app*'s Jinja environment, cached in *store* (the last
    registered store serves every template of the app)."""
    env = app.jinja_env
    env.add_extension(FragmentCacheExtension)
    setattr(env, STORE_ATTRIBUTE, store)
