"""The Flask-Caching suite is there: fetched, verified, extracted, and excluded with reasons."""

from __future__ import annotations

import ast
import hashlib

from . import conftest
from ._upstream import (
    DOWNLOAD_DIR,
    MODULES,
    SDIST_NAME,
    SDIST_SHA256,
    UPSTREAM_DIR,
    read_exclusions,
    unavailable,
)


def _upstream_tests() -> set[str]:
    """``module::test`` for every test function and ``module::Class::test`` method."""
    found: set[str] = set()
    for module in MODULES:
        tree = ast.parse((UPSTREAM_DIR / module).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                found.add(f"{module}::{node.name}")
            elif isinstance(node, ast.ClassDef):
                found.update(
                    f"{module}::{node.name}::{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
                )
    return found


def test_the_pinned_sdist_was_fetched_and_its_modules_extracted() -> None:
    if conftest.UPSTREAM_ERROR is not None:
        unavailable(f"Flask-Caching's tests are unavailable: {conftest.UPSTREAM_ERROR}")
    archive = DOWNLOAD_DIR / SDIST_NAME
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == SDIST_SHA256
    for module in MODULES:
        assert (UPSTREAM_DIR / module).is_file(), module


def test_every_exclusion_names_an_upstream_test_and_gives_a_reason() -> None:
    if conftest.UPSTREAM_ERROR is not None:
        unavailable(f"Flask-Caching's tests are unavailable: {conftest.UPSTREAM_ERROR}")
    exclusions = read_exclusions()
    assert exclusions, "the exclusion list is empty: then drop this check, not the file"
    unknown = set(exclusions) - _upstream_tests()
    assert not unknown, f"excluded.txt names tests Flask-Caching 2.5.1 does not have: {unknown}"
    assert all(reason for reason in exclusions.values()), "every exclusion needs a reason"
