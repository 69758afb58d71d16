"""The ``flask fennec-cache`` command group: stats, health, keys, clear and warm.

Every command stops with one line, ``Error: ...``, and exit status 1 when the cache is
unreachable or misconfigured, whether the app fails open or closed: never with a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, NoReturn, ParamSpec

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo
from redis.exceptions import RedisError
from werkzeug.utils import ImportStringError, import_string

from ._current import current_backend
from .backend import RedisCache
from .errors import CacheUnavailable, ConfigurationError, FennecCacheError, NoBackendError

__all__ = ["ProgressLines", "WarmReport", "cli", "warm_items"]

P = ParamSpec("P")

#: Most failures listed one by one at the end of ``warm`` (the rest are counted).
MAX_LISTED_FAILURES = 20
#: Largest ``--limit`` that ``keys`` accepts: its output is meant for a terminal.
MAX_KEYS_LIMIT = 100_000
#: Off a terminal, ``warm`` prints a progress line once at least this many items *and* ...
PROGRESS_EVERY_ITEMS = 100
#: ... this many seconds have passed since the previous line (whichever comes later).
PROGRESS_EVERY_SECONDS = 5.0

cli = AppGroup(
    "fennec-cache",
    help="Inspect and control the cache of the app (FENNEC_CACHE_URL, FENNEC_CACHE_PREFIX).",
)


def _command(name: str) -> Callable[[Callable[P, None]], click.Command]:
    """Register a command of the group that runs in the app's context and turns the library's
    errors (also those raised while loading the app) and Redis errors into one line."""

    def register(body: Callable[P, None]) -> click.Command:
        @functools.wraps(body)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            context = click.get_current_context()
            try:
                if not current_app:
                    app = context.ensure_object(ScriptInfo).load_app()
                    context.with_resource(app.app_context())
                body(*args, **kwargs)
            except (FennecCacheError, RedisError) as exc:
                raise click.ClickException(_one_line(exc)) from exc

        command: click.Command = cli.command(name, with_appcontext=False)(run)
        return command

    return register


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CacheUnavailable):
        text = f"the cache is unavailable: {exc}"
    elif isinstance(exc, ConfigurationError):
        text = f"invalid configuration: {exc}"
    elif isinstance(exc, RedisError):
        text = f"Redis failed: {type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    return " ".join(text.split())


# -- helpers -------------------------------------------------------------------------------------


def _backend() -> RedisCache:
    try:
        backend = current_backend()
    except NoBackendError as exc:
        raise click.ClickException(str(exc)) from exc
    if backend.url.startswith("memory://"):
        click.echo(
            "warning: FENNEC_CACHE_URL is memory://, a cache private to this process: "
            "this command cannot see the cache of a running server.",
            err=True,
        )
    return backend


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _require_redis(backend: RedisCache) -> dict[str, Any]:
    """The health report; stops with exit status 1 when Redis does not answer.

    Commands that read or change the cache check first, because fail-open would otherwise
    turn an unreachable Redis into an empty answer.
    """
    report = backend.health()
    if report["status"] != "healthy":
        _fail(f"Redis at {report['url']} is unreachable: {report.get('error', 'no answer')}")
    return report


def _flat_rows(report: dict[str, Any], head: str = "") -> list[tuple[str, object]]:
    """One row per figure of a nested report (``redis.nodes.host:port.used_memory``), one per
    item of a list (``warnings``)."""
    rows: list[tuple[str, object]] = []
    for name, value in report.items():
        label = f"{head}{name}"
        if isinstance(value, dict):
            rows += _flat_rows(value, label + ".")
        elif isinstance(value, list) and value:
            rows += [(label, item) for item in value]
        else:
            rows.append((label, value))
    return rows


def _table(rows: Iterable[tuple[str, object]]) -> str:
    pairs = [(name, str(value)) for name, value in rows]
    width = max((len(name) for name, _ in pairs), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in pairs)


# -- stats, health ---------------------------------------------------------------------------------


@_command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as a JSON object.")
@click.option(
    "--reset",
    is_flag=True,
    help="Then set the shared statistics to zero (asks first, unless --yes).",
)
@click.option("--yes", "-y", is_flag=True, help="With --reset: do not ask for confirmation.")
@click.option(
    "--by-name",
    is_flag=True,
    help="Also a table per cached function, view and fragment (busiest first).",
)
def stats_command(as_json: bool, reset: bool, yes: bool, by_name: bool) -> None:
    """Show the shared statistics (all processes using this Redis and prefix).

    Clearing keys never resets them; --reset does, for every process (Prometheus sees a
    counter reset). --json always includes ``by_name``.
    """
    backend = _backend()
    report = _require_redis(backend)
    stats = backend.get_stats()
    if backend.shared and not stats.get("shared", False):  # memory:// is never shared
        _fail("cannot read the shared statistics: Redis is unreachable")
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        rows: list[tuple[str, object]] = [
            (name, f"{value:.2f} %" if name == "hit_rate" else value)
            for name, value in stats.items()
            if name not in ("shared", "available", "by_name")
        ]
        click.echo(f"{backend!r}")
        click.echo(_table(rows))
        if by_name:
            click.echo("")
            click.echo(_names_table(stats["by_name"]))
    if not reset:
        return
    if not yes:
        click.confirm(
            f"Reset the shared statistics of every process using the prefix {backend.prefix!r} "
            f"at {report['url']}?",
            abort=True,
            err=True,
        )
    if not backend.reset_stats():
        _fail("Redis failed: the statistics were not reset (see the log)")
    click.echo("Statistics reset.", err=as_json)  # keeps stdout one JSON document


#: The columns of ``stats --by-name``: (heading, field of a by_name row).
_NAME_COLUMNS = (
    ("reads", "total_requests"),
    ("hit rate", "hit_rate"),
    ("hits", "hits"),
    ("misses", "misses"),
    ("stale", "stale_hits"),
    ("fail-safe", "fail_safe_hits"),
    ("errors", "errors"),
    ("bypasses", "bypasses"),
    ("load p50", "load_p50_ms"),
    ("load p99", "load_p99_ms"),
)


def _names_table(by_name: dict[str, dict[str, Any]]) -> str:
    """The per-name statistics as an aligned table (hit rates under 80 % marked ``!``)."""
    if not by_name:
        return "no cached function, view or fragment has been read yet"
    header = ["name", *(heading for heading, _ in _NAME_COLUMNS)]
    lines = [header]
    for name, row in by_name.items():
        lines.append([name, *(_name_cell(row, column) for _, column in _NAME_COLUMNS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _name_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "hit_rate":
        if not row["total_requests"]:
            return "-"
        return f"{value:.2f} %{' !' if float(value or 0) < 80 else ''}"
    if column.endswith("_ms"):
        return "-" if value is None else f"{value:.2f} ms"
    return str(value)


@_command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the report as a JSON object.")
def health_command(as_json: bool) -> None:
    """Ping Redis and print the report; exit status 0 when healthy, 1 otherwise."""
    report = _backend().health()
    report = {"status": report.pop("status"), **report}
    click.echo(json.dumps(report, indent=2) if as_json else _table(_flat_rows(report)))
    if report["status"] != "healthy":
        _fail(f"Redis at {report['url']} is unreachable: {report.get('error', 'no answer')}")


# -- keys, clear -----------------------------------------------------------------------------------


@_command("keys")
@click.argument("pattern", default="*")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_KEYS_LIMIT),
    default=100,
    show_default=True,
    help="Print at most this many keys.",
)
def keys_command(pattern: str, limit: int) -> None:
    """List keys matching the glob PATTERN (relative to the prefix), found with SCAN.

    Output is bounded by --limit; when more keys match, a note on stderr says so. The
    library's own bookkeeping keys are never listed.
    """
    backend = _backend()
    _require_redis(backend)
    try:
        found = backend.keys(pattern, limit=limit + 1)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="PATTERN") from exc
    for key in found[:limit]:
        click.echo(key)
    if len(found) > limit:
        click.echo(f"(stopped after {limit} keys; more match: raise --limit)", err=True)


@_command("clear")
@click.argument("pattern", default="*")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clear_command(pattern: str, yes: bool) -> None:
    """Remove the keys matching the glob PATTERN (default: all keys under the prefix).

    Uses SCAN and UNLINK, never KEYS or FLUSHDB; keys outside the prefix and the library's own
    bookkeeping (statistics, tag versions) are never touched, so the statistics are kept
    (``stats --reset`` resets them).
    """
    backend = _backend()
    report = _require_redis(backend)
    if not yes:
        what = "every key" if pattern == "*" else f"the keys matching {pattern!r}"
        click.confirm(
            f"Remove {what} under the prefix {backend.prefix!r} at {report['url']}?",
            abort=True,
        )
    try:
        removed = backend.try_clear(pattern)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="PATTERN") from exc
    if removed is None:
        _fail("Redis failed during the walk: some matching keys may remain (see the log)")
    click.echo(f"Removed {removed} key{'' if removed == 1 else 's'}.")


# -- warm ------------------------------------------------------------------------------------------


@dataclass
class WarmReport:
    """What a warm-up did: items done, items failed (with their label and error), seconds taken."""

    done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    aborted: str | None = None

    @property
    def total(self) -> int:
        """Items attempted."""
        return self.done + len(self.failures)

    @property
    def rate(self) -> float:
        """Items attempted per second."""
        return self.total / self.seconds if self.seconds > 0 else 0.0


def warm_items(
    items: Iterable[Any], backend: RedisCache, ttl: float | None, report: WarmReport
) -> Iterator[None]:
    """Warm *items* one by one, recording each success or failure in *report*.

    An item is a ``(key, loader)`` pair (the loader's value is stored under *key* with
    ``backend.set``), or a zero-argument callable that fills the cache itself (a cached function
    with its arguments bound by :func:`functools.partial`, for example). Yields once per item so
    that a progress bar can follow; an exception raised by the iterable itself ends the run
    (recorded in ``report.aborted``), and so does :class:`~flask_fennec_cache.CacheUnavailable`
    (a fail-closed cache that went away: every further item would fail the same way); any other
    exception raised by an item only fails that item.
    """
    started = time.perf_counter()
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # the user's generator broke: no more items can come
            report.aborted = _describe(exc)
            break
        label = _label(item)
        try:
            _warm_one(item, backend, ttl)
        except CacheUnavailable as exc:
            report.aborted = f"the cache became unavailable at {label}: {exc}"
            break
        except Exception as exc:  # one bad item must not stop the warm-up: reported at the end
            report.failures.append((label, _describe(exc)))
        else:
            report.done += 1
        report.seconds = time.perf_counter() - started
        yield None
    report.seconds = time.perf_counter() - started


def _warm_one(item: Any, backend: RedisCache, ttl: float | None) -> None:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        key, loader = item
        if not callable(loader):
            raise TypeError(f"the loader for {key!r} is a {type(loader).__name__}, not callable")
        if not backend.set(key, loader(), ttl):
            raise RuntimeError(
                "not stored (larger than FENNEC_CACHE_MAX_VALUE_BYTES, or Redis failed)"
            )
        return
    if callable(item):
        item()
        return
    raise TypeError(
        f"expected a (key, loader) pair or a zero-argument callable, got {type(item).__name__}"
    )


def _label(item: Any) -> str:
    if isinstance(item, tuple) and item and isinstance(item[0], str):
        text = item[0]
    else:
        text = getattr(item, "__qualname__", None) or repr(item)
    return text if len(text) <= 100 else text[:97] + "..."


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load_warmer(import_path: str) -> Callable[[], Any]:
    if ":" not in import_path:
        raise click.BadParameter(
            "expected module:function, e.g. myapp.warmup:popular_users", param_hint="IMPORT_PATH"
        )
    try:
        target = import_string(import_path)
    except ImportStringError as exc:
        raise click.BadParameter(
            f"cannot import {import_path!r}: {exc.exception}", param_hint="IMPORT_PATH"
        ) from exc
    if not callable(target):
        raise click.BadParameter(f"{import_path!r} is not callable", param_hint="IMPORT_PATH")
    return target  # type: ignore[no-any-return]


@_command("warm")
@click.argument("import_path", metavar="IMPORT_PATH")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds the entries of (key, loader) pairs live (default: FENNEC_CACHE_DEFAULT_TTL).",
)
@click.option("--strict", is_flag=True, help="Exit with status 1 if any item failed.")
def warm_command(import_path: str, ttl: float | None, strict: bool) -> None:
    """Fill the cache by calling IMPORT_PATH (module:function) inside the app context.

    The function returns (or yields) items: (key, loader) pairs, whose loader is called and its
    value stored under key, or zero-argument callables that fill the cache themselves (such as
    functools.partial(cached_function, arg)). It may also call cached functions itself and
    return None. A failing item is reported at the end and does not stop the others. Exit
    status: 0, unless every item failed, the function itself raised, or --strict is given and
    any item failed.
    """
    backend = _backend()
    warmer = _load_warmer(import_path)
    _require_redis(backend)
    started = time.perf_counter()
    try:
        items = warmer()
    except Exception as exc:  # the user's function: report it like any failure, then stop
        raise click.ClickException(f"{import_path} raised {_describe(exc)}") from exc
    if items is None:
        seconds = time.perf_counter() - started
        click.echo(f"{import_path} ran in {seconds:.2f} s (it returned no items to count).")
        return
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        _fail(f"{import_path} returned a {type(items).__name__}; expected an iterable of items")
    report = WarmReport()
    length = len(items) if isinstance(items, Sized) else None
    steps = warm_items(items, backend, ttl, report)
    if _on_terminal():
        _follow_with_bar(steps, report, length)
    else:
        click.echo(f"Warming {import_path}" + ("" if length is None else f": {length} items"))
        lines = ProgressLines(report, length)
        for _ in steps:
            lines.update()
    _summarize(import_path, report, strict)


def _on_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _follow_with_bar(steps: Iterator[None], report: WarmReport, length: int | None) -> None:
    """Draw a progress bar whose position and counters come from *report* after each item."""
    with click.progressbar(
        steps,
        length=length,
        label="Warming",
        show_pos=True,
        item_show_func=lambda _: _counts(report),
    ) as bar:
        # Drive the items here, not through the bar's own iteration: that draws each item
        # before counting it, one behind the counters.
        for _ in steps:
            bar.update(1)
        bar.finish()  # the last frame: a full bar even when the number of items was unknown
        bar.render_progress()


class ProgressLines:
    """Progress of a warm-up as plain lines, for logs (CI, deploy hooks) rather than a terminal.

    :meth:`update` prints a line (with *echo*) once at least *every_items* items and
    *every_seconds* seconds (by *clock*) have passed since the previous line, whichever comes
    later: fast runs print one every few seconds, slow ones one every *every_items* items.
    """

    def __init__(
        self,
        report: WarmReport,
        length: int | None,
        every_items: int | None = None,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[str], None] = click.echo,
    ) -> None:
        self.report = report
        self.length = length
        self.every_items = PROGRESS_EVERY_ITEMS if every_items is None else every_items
        self.every_seconds = PROGRESS_EVERY_SECONDS if every_seconds is None else every_seconds
        self._clock = clock
        self._echo = echo
        self._last_total = 0
        self._last_time = clock()

    def update(self) -> None:
        """Called after each item: print a line if one is due."""
        now = self._clock()
        total = self.report.total
        if total - self._last_total < self.every_items:
            return
        if now - self._last_time < self.every_seconds:
            return
        self._last_total, self._last_time = total, now
        of = "" if self.length is None else f" of {self.length}"
        self._echo(f"  {total}{of} items: {_counts(self.report)}")


def _counts(report: WarmReport) -> str:
    failed = f", {len(report.failures)} failed" if report.failures else ""
    return f"{report.done} warmed{failed}, {report.rate:.1f}/s"


def _summarize(import_path: str, report: WarmReport, strict: bool) -> None:
    click.echo(
        f"Warmed {report.done} of {report.total} item{'' if report.total == 1 else 's'} "
        f"in {report.seconds:.2f} s ({report.rate:.1f}/s)."
    )
    if report.failures:
        click.echo(f"{len(report.failures)} failed:", err=True)
        for label, error in report.failures[:MAX_LISTED_FAILURES]:
            click.echo(f"  {label}: {error}", err=True)
        hidden = len(report.failures) - MAX_LISTED_FAILURES
        if hidden > 0:
            click.echo(f"  ... and {hidden} more", err=True)
    if report.aborted is not None:
        _fail(f"{import_path} stopped after {report.total} items: {report.aborted}")
    if report.failures and (strict or report.done == 0):
        raise SystemExit(1)
