"""The documentation site builds with warnings as errors, and shows what the code says.

The build needs the ``docs`` extra (Sphinx, myst-parser, furo). Without it the build tests are
skipped, also on CI: CI installs the extra after the test suite and then runs the same strict
build itself (the "docs" step of ``.ci/run``).
"""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_fennec_cache.config import CONFIG_KEYS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_TOOLS = ("sphinx", "myst_parser", "furo")
MISSING_TOOLS = [name for name in DOC_TOOLS if importlib.util.find_spec(name) is None]

#: Every object the API reference must document (the anchors autodoc gives them).
API_OBJECTS = (
    "flask_fennec_cache.FennecCache",
    "flask_fennec_cache.RedisCache",
    "flask_fennec_cache.cache",
    "flask_fennec_cache.CacheAside",
    "flask_fennec_cache.WriteThrough",
    "flask_fennec_cache.CacheLookup",
    "flask_fennec_cache.FennecCacheError",
    "flask_fennec_cache.ConfigurationError",
    "flask_fennec_cache.SerializationError",
    "flask_fennec_cache.InvalidKeyError",
    "flask_fennec_cache.KeyBuildError",
    "flask_fennec_cache.CacheUnavailable",
    "flask_fennec_cache.NoBackendError",
    "flask_fennec_cache.LockTimeout",
    "flask_fennec_cache.loading.LoadPolicy",
    "flask_fennec_cache.loading.Deliver",
    "flask_fennec_cache.locks.RedisLock",
    "flask_fennec_cache.locks.SingleFlight",
)

needs_doc_tools = pytest.mark.skipif(
    bool(MISSING_TOOLS),
    reason=(
        f"documentation tools not installed ({', '.join(MISSING_TOOLS)}): "
        "pip install -e '.[docs]' to build the site here (CI builds it in its docs step)"
    ),
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once into a temporary directory with warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    html = out / "html"
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-E",
        "-b",
        "html",
        "-d",
        str(out / "doctrees"),
        str(DOCS),
        str(html),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, (
        f"the docs build failed (warnings are errors):\n{result.stderr}\n{result.stdout}"
    )
    return html


@needs_doc_tools
def test_the_site_builds_with_warnings_as_errors(site: Path) -> None:
    for page in ("index", "quickstart", "configuration", "recipes", "deployment", "api"):
        assert (site / f"{page}.html").is_file(), f"{page}.html is missing"


@needs_doc_tools
def test_the_existing_markdown_pages_are_part_of_the_site(site: Path) -> None:
    for page in sorted(DOCS.glob("*.md")):
        assert (site / f"{page.stem}.html").is_file(), f"docs/{page.name} is not in the site"
    assert (site / "_images" / "dashboard.png").is_file(), "the dashboard screenshot is missing"


@needs_doc_tools
def test_the_configuration_reference_is_the_code_table(site: Path) -> None:
    text = _text((site / "configuration.html").read_text(encoding="utf-8"))
    for key in CONFIG_KEYS:
        assert key.name in text, f"{key.name} is missing from the configuration reference"
        assert _text(key.description) in text, f"the description of {key.name} is missing"


def _text(markup: str) -> str:
    """Visible text, with Sphinx's typographic quotes and whitespace normalised."""
    text = html.unescape(re.sub(r"<[^>]+>", "", markup))
    text = text.translate({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})
    return " ".join(text.split())


@needs_doc_tools
def test_the_api_reference_documents_the_public_objects(site: Path) -> None:
    page = (site / "api.html").read_text(encoding="utf-8")
    for name in API_OBJECTS:
        assert f'id="{name}"' in page, f"{name} is not in the API reference"


def test_ci_builds_the_docs_strictly_and_the_output_is_ignored() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    build = re.search(r"^.*-m sphinx .*$", ci, re.M)
    assert build is not None, ".ci/run does not build the docs"
    assert "-W" in build.group(0).split() and "--keep-going" in build.group(0).split()
    assert ci.index("pytest") < ci.index("-m sphinx"), "the docs step should follow the tests"
    assert "'.[docs]'" in ci
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert re.search(r"^docs =\n(    .+\n)+", setup, re.M), "setup.cfg has no docs extra"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "docs/_build/" in ignored
