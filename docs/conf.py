"""Sphinx configuration for the flask-fennec-cache documentation site.

Build it (warnings are errors, as in CI) from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST); the configuration reference is generated at build time from
``flask_fennec_cache.config.markdown_table()`` by the ``fennec-config-table`` directive below.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

import flask_fennec_cache  # noqa: E402
from flask_fennec_cache.config import markdown_table  # noqa: E402

project = "flask-fennec-cache"
author = "the flask-fennec-cache authors"
copyright = "the flask-fennec-cache authors (MIT licence)"
release = version = flask_fennec_cache.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings (so pages can link to `page.md#a-section`), ::: fences, and
# definition lists.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: members in source order; signatures without types (ParamSpec/TypeVar make them
# long), which are listed under each documented parameter instead.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"flask-fennec-cache {release}"
html_static_path = ["_static"]
html_css_files = ["fennec.css"]
pygments_style = "friendly"


#: Repository files outside docs/ that pages link to (``[text](../bench/RESULTS.md)``, which
#: reads right on GitHub), and the page of this site that includes each of them.
OUTSIDE_PAGES = {
    "../bench/RESULTS.md": "benchmarks.md",
    "../CHANGELOG.md": "changelog.md",
}


def link_outside_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    """Point links to repository files outside docs/ at the pages that include them."""
    for target, page in OUTSIDE_PAGES.items():
        source[0] = source[0].replace(f"]({target})", f"]({page})")
        source[0] = source[0].replace(f"]({target}#", f"]({page}#")


class ConfigTable(Directive):
    """``fennec-config-table``: the table of every ``FENNEC_CACHE_*`` key, as the code has it.

    Renders ``markdown_table()`` (the very text the README carries) through the MyST parser, so
    the site cannot drift from ``flask_fennec_cache.config.CONFIG_KEYS``.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        container = nodes.container(classes=["fennec-config-table"])
        lines = StringList(markdown_table().splitlines(), source="flask_fennec_cache/config.py")
        self.state.nested_parse(lines, self.content_offset, container)
        return [container]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("fennec-config-table", ConfigTable)
    app.connect("source-read", link_outside_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
