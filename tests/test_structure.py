"""The package's shape (issue 13): no import cycles, no class over 350 lines, a handful of
private reach-ins at most, and imports that only point down the layers.

Everything is read from the source with :mod:`ast`, nothing is imported. For the whole report
(every edge of every cycle, the longest classes, every reach-in, every layering violation) run::

    .venv/bin/python tests/test_structure.py

How imports are counted: every ``import``/``from ... import`` of a package module is an edge,
whether it runs at import time (``top``), only when a function runs (``function``), or only for
the type checker (``type-checking``, under ``if TYPE_CHECKING:``). A cycle made only of
function or type-checking edges does not fail at import time, but it still ties the modules
together (issue 13 counts ``backend`` <-> ``locks``, a type-checking edge, as a cycle), so all
three kinds count, and the report says which kind each edge is. ``from . import name`` of a
name that is not a submodule is an edge to the package ``__init__``; the implicit import of a
parent package is not.

A private reach-in is a use of an underscored name (not a dunder) that another package module,
a third-party package or the standard library defines: ``x._name`` and ``getattr(x, "_name")``
with ``x`` not ``self``/``cls``, ``from m import _name``, and imports of another
distribution's private modules (``redis._parsers``). A name the module itself defines (a
method, an attribute it sets on ``self``/``cls``, a module-level name) is its own; documented
underscore API (named tuples' ``_replace``, a proxy's ``_get_current_object``) is public.
Importing the package's own private modules (``from ._topology import ...``) is how the
package is built, not a reach-in.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "flask_fennec_cache"
#: The page that describes the layers; its table must list the modules LAYERS lists.
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Longest class statement allowed, in lines (from the ``class`` line to its last line).
MAX_CLASS_LINES = 350

#: Bottom first: a module may import from its own layer and the layers below, never above.
#: ``__init__`` (re-exports only) is above them all and is not listed. The lead moves modules
#: here as they move in the source; every module of the package must be in exactly one layer.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("errors", frozenset({"errors", "_forksafe", "_ratelog", "_validate"})),
    ("codec", frozenset({
        "compression", "serializers", "_entries", "_exact", "_messagepack", "_tags",
    })),
    # _tracking: the near cache's RESP3 tracking connections (the topology says where to).
    ("connection/topology", frozenset({
        "_urls", "_connect", "_pinned", "_topology", "_scripts", "_tracking",
    })),
    # RedisCache (backend.py) is the facade over these parts; config turns FENNEC_CACHE_*
    # into Settings and the backend's options.
    ("backend parts", frozenset({
        "_breaker", "_stats", "_guard", "_codec", "_flight", "_coordination", "_tagindex",
        "_classify", "_reader", "_writer", "_keyspace", "_monitor", "near", "_near_store", "locks",
        "backend", "config", "_recovery", "_generation", "_redis_info", "_tracing",
    })),
    ("loading", frozenset({"loading", "keys", "_results"})),
    ("strategies/decorators", frozenset({
        "strategies", "decorators", "_views", "_current", "unavailable", "fragments",
    })),
    ("extension", frozenset({"extension", "_startup"})),
    # The front ends over the extension: the admin blueprint, the CLI, Flask-Caching's API.
    ("admin/CLI", frozenset({
        "admin", "cli", "_prometheus", "compat", "_compat_backend", "_compat_config",
        "_compat_keys",
    })),
)  # fmt: skip

#: ``(importer, imported) -> why`` for the imports that may point up the layers.
ALLOWED_UPWARD_IMPORTS: dict[tuple[str, str], str] = {
    ("extension", "admin"): "init_app mounts the admin blueprint (imported only when "
    "FENNEC_CACHE_ADMIN_URL_PREFIX is set); admin reads the app's state from _current, "
    "never from extension",
}

#: ``(module, private name) -> why it stays``. An entry is for a third-party internal used for
#: speed, where a bench row shows the gain and a test guards the fallback (issue 13). Keep it
#: to a handful; an entry that no longer occurs fails the check, so the list only shrinks.
ALLOWED_REACH_INS: dict[tuple[str, str], str] = {
    ("_views", "_list"): "Werkzeug Headers' item list: a cached view's hit headers handed over "
    "as they are, 1.8 µs against 7.3 µs (bench.profile, view hit); the fallback is tested by "
    "test_http_semantics.py::test_hits_are_the_same_without_werkzeug_s_list",
    ("_views", "_session"): "Flask's RequestContext._session: the only way to look at the "
    "session without marking it accessed, which is how a cached call learns that its loader "
    "read it (never serve one user's page to another); test_views' session tests fail if "
    "Flask moves it",
    ("_tracking", "_sock"): "redis-py's connection socket: one epoll.poll(0) of every tracking "
    "socket per near hit, a 100 B near hit 3.4 µs (min) against 5.4 µs with the public "
    "can_read; fallback tested by "
    "test_near.py::test_without_the_sockets_readiness_is_asked_of_each_connection",
    ("_tracking", "_parser"): "redis-py has no public way to receive invalidation pushes (its "
    "own client-side cache sets the handler on the parser too); RESP2 REDIRECT + SUBSCRIBE "
    "would need channel ACLs users lack by default since Redis 7; fallback (each push flushes "
    "everything, coherent) tested by "
    "test_near.py::test_without_the_parser_every_invalidation_flushes_everything",
}
MAX_ALLOWED_REACH_INS = 5

#: Underscored names that are documented public API: named tuples' methods and fields, and
#: the object behind a Werkzeug/Flask proxy (Flask's "Notes On Proxies").
PUBLIC_UNDERSCORE_NAMES = frozenset({
    "_replace", "_asdict", "_fields", "_field_defaults", "_make", "_get_current_object",
})  # fmt: skip

#: The owner of an attribute no package module defines (a third-party or standard library one).
OUTSIDE = "outside the package"

ImportKind = Literal["top", "function", "type-checking"]


@dataclass(frozen=True)
class Import:
    """One import of a package module by another."""

    source: str
    target: str
    line: int
    kind: ImportKind

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


@dataclass(frozen=True)
class ClassSize:
    module: str
    qualname: str
    line: int
    lines: int


@dataclass(frozen=True)
class ReachIn:
    """One use of another module's private name; *owner* is the package module(s) that
    define it, the top-level name of the package imported from, or :data:`OUTSIDE`."""

    module: str
    line: int
    name: str
    code: str
    owner: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.code}  [{self.name} of {self.owner}]"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class PackageSource:
    """The modules of one package, parsed; module names are relative to the package
    (``backend``, ``_topology``, ``__init__``; ``sub.mod`` for subpackages)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = directory.name
        self.trees: dict[str, ast.Module] = {}
        for path in sorted(directory.rglob("*.py")):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__" and len(parts) > 1:
                parts = parts[:-1]
            module = ".".join(parts)
            self.trees[module] = ast.parse(path.read_text(encoding="utf-8"), str(path))

    # -- imports ---------------------------------------------------------------------------

    def imports(self) -> list[Import]:
        """Every import of a package module by another package module."""
        found: dict[Import, None] = {}
        for module, tree in self.trees.items():
            for node, kind in _with_kinds(tree):
                for target in self._targets(module, node):
                    if target != module:
                        found[Import(module, target, node.lineno, kind)] = None
        return list(found)

    def _targets(self, module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                known = self._longest_module(alias.name)
                if known is not None:
                    yield known
            return
        base = self._absolute_base(module, node)
        if base is None:
            return
        for alias in node.names:
            # ``from base import name``: the submodule ``base.name`` if there is one, else base
            found = self._longest_module(f"{base}.{alias.name}")
            if found is not None:
                yield found

    def _absolute_base(self, module: str, node: ast.ImportFrom) -> str | None:
        """The dotted name *node* imports from, when it is inside this package."""
        if node.level == 0:
            return node.module if node.module and _within(node.module, self.name) else None
        package = self._package_of(module).split(".")
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        return ".".join([*package, *([node.module] if node.module else [])])

    def _package_of(self, module: str) -> str:
        if module == "__init__" or self._is_package(module):
            return self.name if module == "__init__" else f"{self.name}.{module}"
        return ".".join([self.name, *module.split(".")[:-1]])

    def _is_package(self, module: str) -> bool:
        return (self.directory / module.replace(".", "/") / "__init__.py").exists()

    def _longest_module(self, dotted: str) -> str | None:
        """The package module that ``import dotted`` loads last, or None outside the package."""
        if not _within(dotted, self.name):
            return None
        parts = dotted.split(".")[1:]
        while parts:
            if ".".join(parts) in self.trees:
                return ".".join(parts)
            parts.pop()
        return "__init__"

    # -- cycles ----------------------------------------------------------------------------

    def graph(self) -> dict[str, set[str]]:
        edges: dict[str, set[str]] = {module: set() for module in self.trees}
        for imported in self.imports():
            edges[imported.source].add(imported.target)
        return edges

    def cycles(self, limit: int = 200) -> list[list[str]]:
        """The simple cycles of the import graph (at most *limit*), each starting at its
        smallest module."""
        return simple_cycles(self.graph(), limit)

    # -- classes ---------------------------------------------------------------------------

    def classes(self) -> list[ClassSize]:
        """Every class, longest first."""
        sizes = [
            ClassSize(module, qualname, node.lineno, _line_count(node))
            for module, tree in self.trees.items()
            for qualname, node in _classes(tree.body, "")
        ]
        return sorted(sizes, key=lambda size: (-size.lines, size.module, size.qualname))

    # -- private reach-ins -----------------------------------------------------------------

    def reach_ins(self) -> list[ReachIn]:
        own = {module: _own_private_names(tree) for module, tree in self.trees.items()}
        defined_in: dict[str, set[str]] = defaultdict(set)
        for module, names in own.items():
            for name in names:
                defined_in[name].add(module)
        found: list[ReachIn] = []
        for module, tree in self.trees.items():
            for use, name, code in _private_uses(tree):
                if name in own[module] or name in PUBLIC_UNDERSCORE_NAMES:
                    continue
                owners = sorted(defined_in.get(name, ())) or [OUTSIDE]
                found.append(ReachIn(module, use.lineno, name, code, ", ".join(owners)))
            for statement in ast.walk(tree):
                found.extend(self._private_imports(module, statement))
        return sorted(found, key=lambda r: (r.module, r.line, r.name))

    def _private_imports(self, module: str, node: ast.AST) -> Iterator[ReachIn]:
        """``from m import _name`` (not a private submodule of this package), and imports
        from another distribution's private modules."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _within(alias.name, self.name) and _private_part(alias.name):
                    yield ReachIn(
                        module,
                        node.lineno,
                        _private_part(alias.name),
                        f"import {alias.name}",
                        alias.name.split(".")[0],
                    )
            return
        if not isinstance(node, ast.ImportFrom):
            return
        code = f"from {'.' * node.level}{node.module or ''} import"
        base = self._absolute_base(module, node)
        if base is None:
            outside = node.module or ""
            if _private_part(outside):
                names = ", ".join(alias.name for alias in node.names)
                yield ReachIn(
                    module,
                    node.lineno,
                    _private_part(outside),
                    f"{code} {names}",
                    outside.split(".")[0],
                )
                return
            for alias in node.names:
                if is_private(alias.name):
                    yield ReachIn(
                        module,
                        node.lineno,
                        alias.name,
                        f"{code} {alias.name}",
                        outside.split(".")[0],
                    )
            return
        owner = self._longest_module(base) or "__init__"
        for alias in node.names:
            if is_private(alias.name) and self._longest_module(f"{base}.{alias.name}") == owner:
                yield ReachIn(module, node.lineno, alias.name, f"{code} {alias.name}", owner)

    # -- layers ----------------------------------------------------------------------------

    def layer_violations(
        self,
        layers: Iterable[tuple[str, frozenset[str]]],
        allowed: Mapping[tuple[str, str], str] | None = None,
    ) -> list[str]:
        """Imports of a module from a higher layer than the importer's, except the *allowed*
        ``(importer, imported)`` pairs (modules missing from *layers*, and ``__init__``, are
        not judged here)."""
        rank = {module: index for index, (_, members) in enumerate(layers) for module in members}
        names = [name for name, _ in layers]
        return [
            f"{imported}: {names[rank[imported.source]]} imports {names[rank[imported.target]]}"
            for imported in self.imports()
            if imported.source in rank
            and imported.target in rank
            and rank[imported.target] > rank[imported.source]
            and (imported.source, imported.target) not in (allowed or {})
        ]


def _private_part(dotted: str) -> str:
    """The first private component of a dotted module name, or ``""``."""
    return next((part for part in dotted.split(".") if is_private(part)), "")


def _within(dotted: str, package: str) -> bool:
    return dotted == package or dotted.startswith(package + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _with_kinds(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, ImportKind]]:
    """Every import statement of *tree*, with when it runs."""

    def visit(
        node: ast.AST, in_function: bool, type_only: bool
    ) -> Iterator[tuple[ast.Import | ast.ImportFrom, ImportKind]]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, "type-checking" if type_only else "function" if in_function else "top"
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                yield from visit(statement, in_function, True)
            for statement in node.orelse:
                yield from visit(statement, in_function, type_only)
            return
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner, type_only)

    yield from visit(tree, False, False)


def simple_cycles(graph: Mapping[str, Iterable[str]], limit: int) -> list[list[str]]:
    """Up to *limit* simple cycles of *graph*, each listed from its smallest node."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for following in sorted(graph.get(node, ())):
            if len(found) >= limit:
                return
            if following == start:
                found.append(list(path))
            elif following > start and following not in path:
                walk(start, following, [*path, following])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def _line_count(node: ast.stmt) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def _classes(body: list[ast.stmt], outer: str) -> Iterator[tuple[str, ast.ClassDef]]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            qualname = f"{outer}{node.name}"
            yield qualname, node
            yield from _classes(node.body, f"{qualname}.")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _classes(node.body, f"{outer}{node.name}.<locals>.")
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _classes(getattr(node, field, []), outer)


def _own_private_names(tree: ast.Module) -> set[str]:
    """The underscored names *tree* defines: functions, classes, methods, class attributes,
    module-level names, and attributes it assigns on ``self``/``cls`` or lists in
    ``__slots__``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Name):
                        names.add(part.id)
                    elif (
                        isinstance(part, ast.Attribute)
                        and isinstance(part.value, ast.Name)
                        and part.value.id in {"self", "cls"}
                    ):
                        names.add(part.attr)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
    return {name for name in names if is_private(name)}


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in {"self", "cls"}


def _private_uses(tree: ast.Module) -> Iterator[tuple[ast.expr, str, str]]:
    """``x._name`` and ``getattr(x, "_name")``-style uses in *tree*, ``x`` not self/cls."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and not _is_self(node.value):
            yield node, node.attr, ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and not _is_self(node.args[0])
        ):
            yield node, node.args[1].value, ast.unparse(node)


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


def report(source: PackageSource) -> str:
    imports = source.imports()
    kinds: dict[str, int] = defaultdict(int)
    for imported in imports:
        kinds[imported.kind] += 1
    cycles = source.cycles()
    lines = [
        f"imports between modules of {source.name}: {len(imports)} "
        f"({', '.join(f'{kinds[k]} {k}' for k in ('top', 'function', 'type-checking'))})",
        f"import cycles: {len(cycles)}",
    ]
    by_pair = {(i.source, i.target): i for i in imports}
    for cycle in cycles:
        steps = [by_pair[(a, b)] for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
        lines.append("  " + " -> ".join([*cycle, cycle[0]]))
        lines.extend(f"      {step}" for step in steps)
    classes = source.classes()
    over = [size for size in classes if size.lines > MAX_CLASS_LINES]
    lines.append(f"classes over {MAX_CLASS_LINES} lines: {len(over)}; the longest:")
    lines.extend(
        f"  {size.lines:5d}  {size.module}.{size.qualname} (line {size.line})"
        for size in classes[:5]
    )
    reach_ins = source.reach_ins()
    lines.append(
        f"private reach-ins: {len(reach_ins)} uses of "
        f"{len({(r.module, r.name) for r in reach_ins})} (module, name) pairs"
    )
    lines.extend(f"  {reach}" for reach in reach_ins)
    violations = source.layer_violations(LAYERS, ALLOWED_UPWARD_IMPORTS)
    lines.append(f"layering violations: {len(violations)}")
    lines.extend(f"  {violation}" for violation in violations)
    unplaced = unplaced_modules(source)
    if unplaced:
        lines.append(f"modules in no layer: {', '.join(unplaced)}")
    return "\n".join(lines)


def unplaced_modules(source: PackageSource) -> list[str]:
    placed = {module for _, members in LAYERS for module in members}
    return sorted(set(source.trees) - placed - {"__init__"})


@pytest.fixture(scope="module")
def package() -> PackageSource:
    return PackageSource(ROOT / PACKAGE)


# ------------------------------------------------------------------------------------------
# The checks on flask_fennec_cache
# ------------------------------------------------------------------------------------------


def test_no_import_cycles(package: PackageSource) -> None:
    assert package.cycles() == [], report(package)


def test_no_class_over_the_limit(package: PackageSource) -> None:
    over = [size for size in package.classes() if size.lines > MAX_CLASS_LINES]
    assert over == [], report(package)


def test_private_reach_ins_are_only_the_allowed_ones(package: PackageSource) -> None:
    used = {(reach.module, reach.name) for reach in package.reach_ins()}
    assert used - set(ALLOWED_REACH_INS) == set(), report(package)
    stale = set(ALLOWED_REACH_INS) - used
    assert stale == set(), f"allowed reach-ins that no longer occur (remove them): {stale}"


def test_the_allowed_exceptions_are_a_handful_with_reasons() -> None:
    assert len(ALLOWED_REACH_INS) <= MAX_ALLOWED_REACH_INS
    assert len(ALLOWED_UPWARD_IMPORTS) <= MAX_ALLOWED_REACH_INS
    reasons = [*ALLOWED_REACH_INS.values(), *ALLOWED_UPWARD_IMPORTS.values()]
    assert all(len(reason.split()) >= 5 for reason in reasons), "say why each one stays"


def test_imports_only_point_down_the_layers(package: PackageSource) -> None:
    assert package.layer_violations(LAYERS, ALLOWED_UPWARD_IMPORTS) == [], report(package)


def test_every_module_is_in_one_layer(package: PackageSource) -> None:
    assert unplaced_modules(package) == [], (
        "add these modules to LAYERS in tests/test_structure.py, in the layer they belong to"
    )
    listed = [module for _, members in LAYERS for module in members]
    assert sorted(m for m in listed if listed.count(m) > 1) == [], "modules in two layers"
    gone = sorted(set(listed) - set(package.trees))
    assert gone == [], f"LAYERS lists modules that no longer exist: {gone}"
    for importer, imported in ALLOWED_UPWARD_IMPORTS:
        assert {importer, imported} <= set(package.trees), (importer, imported)


def documented_layers(text: str) -> list[tuple[str, list[str]]]:
    """The ``| layer | modules | job |`` rows of the architecture page: each layer's name and
    module names (backticked, in the order written; ``_compat_*`` stays a pattern)."""
    section = text.split("## The layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] not in {"layer", ""} and not set(cells[0]) <= {"-"}:
            rows.append((cells[0], re.findall(r"`([A-Za-z0-9_.*]+)`", cells[1])))
    return rows


def test_the_architecture_page_shows_the_same_layers() -> None:
    documented = documented_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert [name for name, _ in documented] == [name for name, _ in LAYERS]
    for (name, written), (_, members) in zip(documented, LAYERS, strict=True):
        matched = {m for pattern in written for m in fnmatch.filter(members, pattern)}
        unmatched = [pattern for pattern in written if not fnmatch.filter(members, pattern)]
        assert (unmatched, sorted(members - matched)) == ([], []), (
            f"layer {name!r}: {ARCHITECTURE.name} names {unmatched} that LAYERS does not have "
            "there, and leaves out the modules on the right"
        )


def test_the_architecture_table_is_read_row_by_row() -> None:
    page = (
        "# A\n\n## The layers, bottom to top\n\n| layer | modules | job |\n|---|---|---|\n"
        "| low | `a`, `b` (facade) | x |\n| high | `c_*` | y |\n\n## Next\n| z | `d` | w |\n"
    )
    assert documented_layers(page) == [("low", ["a", "b"]), ("high", ["c_*"])]


# ------------------------------------------------------------------------------------------
# The checker itself, on small packages written for each case
# ------------------------------------------------------------------------------------------


def make_package(root: Path, files: Mapping[str, str]) -> PackageSource:
    directory = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return PackageSource(directory)


def test_checker_finds_cycles_of_every_kind_of_import(tmp_path: Path) -> None:
    source = make_package(tmp_path, {
        "a.py": "from .b import B\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        "c.py": "import pkg.d\n",
        "d.py": "def f():\n    from . import c\n",
        "e.py": "from . import a\nfrom .a import x\nimport os\n",
    })  # fmt: skip
    assert source.cycles() == [["a", "b"], ["c", "d"]]
    kinds = {(i.source, i.target): i.kind for i in source.imports()}
    assert kinds == {
        ("a", "b"): "top", ("b", "a"): "type-checking", ("c", "d"): "top",
        ("d", "c"): "function", ("e", "a"): "top",
    }  # fmt: skip


def test_checker_sees_an_import_of_the_package_init_and_longer_cycles(tmp_path: Path) -> None:
    source = make_package(tmp_path, {
        "__init__.py": "from .a import A\n",
        "a.py": "from .b import B\n",
        "b.py": "from .c import C\n",
        "c.py": "from . import A\n",
    })  # fmt: skip
    assert source.cycles() == [["__init__", "a", "b", "c"]]


def test_checker_measures_classes_nested_and_top_level(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(5))
    source = make_package(tmp_path, {
        "m.py": f"class Outer:\n{body}    class Inner:\n        y = 1\n"
                f"def f():\n    class Local:\n        z = 1\n",
    })  # fmt: skip
    sizes = {size.qualname: size.lines for size in source.classes()}
    assert sizes == {"Outer": 8, "Outer.Inner": 2, "f.<locals>.Local": 2}


def test_checker_lists_private_reach_ins_and_only_those(tmp_path: Path) -> None:
    source = make_package(tmp_path, {
        "owner.py": "class Owner:\n    def __init__(self):\n        self._state = 1\n"
                    "    def _helper(self):\n        return self._state\n",
        "user.py": (
            "from redis._parsers import Encoder\n"
            "import werkzeug._internal\n"
            "from .owner import _hidden\n"
            "from . import _private_module\n"
            "from ._private_module import public\n"
            "_mine = 1\n"
            "class Mine:\n"
            "    def _own(self):\n"
            "        return other._own, cls._x, self._y, obj.__dict__, row._replace(a=1)\n"
            "def use(owner, conn, other):\n"
            "    owner._helper()\n"
            "    getattr(conn, '_sock', None)\n"
            "    return owner.inner._state, conn._parser, _mine\n"
        ),
        "_private_module.py": "public = 1\n",
    })  # fmt: skip
    found = {(r.module, r.name, r.owner) for r in source.reach_ins()}
    assert found == {
        ("user", "_parsers", "redis"),
        ("user", "_internal", "werkzeug"),
        ("user", "_hidden", "owner"),
        ("user", "_helper", "owner"),
        ("user", "_sock", OUTSIDE),
        ("user", "_state", "owner"),
        ("user", "_parser", OUTSIDE),
    }


def test_checker_finds_imports_up_the_layers(tmp_path: Path) -> None:
    source = make_package(tmp_path, {
        "low.py": "def f():\n    from .high import H\n",
        "high.py": "from .low import L\n",
        "side.py": "from .high import H\n",
    })  # fmt: skip
    layers = (("bottom", frozenset({"low", "side"})), ("top", frozenset({"high"})))
    violations = source.layer_violations(layers)
    assert [v.split(":")[0] for v in violations] == [
        "low -> high (function, line 2)", "side -> high (top, line 1)",
    ]  # fmt: skip
    assert len(source.layer_violations(layers, {("low", "high"): "why"})) == 1


if __name__ == "__main__":
    print(report(PackageSource(ROOT / PACKAGE)))
    sys.exit(0)
