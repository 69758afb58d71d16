"""docs/api-reference.md documents every exported name, public method and parameter.

The Markdown reference is written by hand, to read well on GitHub; these checks keep it from
drifting from the code: each name in ``flask_fennec_cache.__all__`` has a heading, and its
section names every public method and property (as ``.name``) and every parameter of its
signature and of its methods'.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flask_fennec_cache

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "api-reference.md"
TEXT = REFERENCE.read_text(encoding="utf-8")
HEADING = re.compile(r"^(#{2,6}) `([A-Za-z_][A-Za-z0-9_]*)`\s*$", re.M)


def sections() -> dict[str, str]:
    """Each documented name's section: its heading's text up to the next heading of the same
    or a higher level."""
    found: dict[str, str] = {}
    headings = list(re.finditer(r"^(#{1,6}) .*$", TEXT, re.M))
    for index, match in enumerate(headings):
        named = HEADING.match(match.group(0))
        if named is None:
            continue
        level = len(named.group(1))
        end = len(TEXT)
        for later in headings[index + 1 :]:
            if len(later.group(1)) <= level:
                end = later.start()
                break
        found[named.group(2)] = TEXT[match.start() : end]
    return found


SECTIONS = sections()


def public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties *cls* itself defines (not those of its bases)."""
    for name, member in vars(cls).items():
        if not name.startswith("_") and (callable(member) or isinstance(member, property)):
            yield name, member


def parameters(obj: Callable[..., Any]) -> list[str]:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name != "self"]


def exported() -> list[str]:
    return list(flask_fennec_cache.__all__)


@pytest.mark.parametrize("name", exported())
def test_every_exported_name_has_a_section(name: str) -> None:
    assert name in SECTIONS, (
        f"flask_fennec_cache.{name} is exported but docs/api-reference.md has no "
        f"'### `{name}`' heading: document it there"
    )


@pytest.mark.parametrize("name", exported())
def test_every_public_method_and_parameter_is_documented(name: str) -> None:
    obj = getattr(flask_fennec_cache, name)
    section = SECTIONS.get(name, "")
    missing: list[str] = []
    is_exception = inspect.isclass(obj) and issubclass(obj, BaseException)
    is_protocol = bool(getattr(obj, "_is_protocol", False))  # typing protocols: no constructor
    if callable(obj) and not is_exception and not is_protocol:
        missing += [f"parameter {p!r}" for p in parameters(obj) if not _word(p, section)]
    if inspect.isclass(obj) and not is_exception:
        for member_name, member in public_members(obj):
            if not re.search(rf"\.{member_name}\b", section):
                missing.append(f"method or property .{member_name}")
            elif not isinstance(member, property):
                missing += [
                    f"parameter {p!r} of .{member_name}"
                    for p in parameters(member)
                    if not _word(p, section)
                ]
    assert not missing, (
        f"docs/api-reference.md's section on {name} does not mention: {', '.join(missing)}"
    )


def _word(word: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def test_the_reference_is_linked_from_the_readme_and_the_site() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/api-reference.md)" in readme
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    toctrees = re.findall(r"```\{toctree\}\n(.*?)```", index, re.S)
    assert any("api-reference" in toctree.split() for toctree in toctrees)


def test_the_check_sees_a_missing_parameter() -> None:
    """The section finder and the word check are not vacuous."""
    assert "RedisCache" in SECTIONS and "WriteThrough" in SECTIONS
    assert _word("near_cache_max_bytes", SECTIONS["RedisCache"])
    assert not _word("near_cache_max_bytes", SECTIONS["WriteThrough"])
    assert "### `CacheAside`" not in SECTIONS["RedisCache"]


@pytest.mark.parametrize("name", exported())
def test_every_exported_name_is_on_the_generated_api_page(name: str) -> None:
    """docs/api.rst (the Sphinx page) has an autodoc directive for each exported name."""
    page = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    directive = rf"^\.\. auto(class|function|exception|data):: flask_fennec_cache\.{name}$"
    assert re.search(directive, page, re.M), f"docs/api.rst does not document {name}"


def test_a_cached_function_s_helpers_carry_their_documentation() -> None:
    """``help(f.refresh)`` says what ``CachedFunction`` says, sync or async, bound or not."""
    from flask_fennec_cache import CachedFunction, cache

    class Repository:
        @cache(ttl=60)
        def sync(self) -> int:
            return 1

        @cache(ttl=60)
        async def coroutine(self) -> int:
            return 1

    for cached in (
        Repository.sync,
        Repository.coroutine,
        Repository().sync,
        Repository().coroutine,
    ):
        for helper in ("lookup", "cache_key", "invalidate", "refresh"):
            expected = getattr(CachedFunction, helper).__doc__
            assert expected and getattr(cached, helper).__doc__ == expected, (cached, helper)
