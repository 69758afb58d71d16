"""The ``flask fennec-cache`` command group: stats, health, keys, clear and warm."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
from flask.cli import AppGroup
from werkzeug.utils import ImportStringError, import_string

from .backend import RedisCache
from .decorators import current_backend
from .errors import ConfigurationError, NoBackendError

__all__ = ["WarmReport", "cli", "warm_items"]

#: Most failures listed one by one at the end of ``warm`` (the rest are counted).
MAX_LISTED_FAILURES = 20
#: Largest ``--limit`` that ``keys`` accepts: its output is meant for a terminal.
MAX_KEYS_LIMIT = 100_000

cli = AppGroup(
    "fennec-cache",
    help="Inspect and control the cache of the app (FENNEC_CACHE_URL, FENNEC_CACHE_PREFIX).",
)


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


def _table(rows: Iterable[tuple[str, object]]) -> str:
    pairs = [(name, str(value)) for name, value in rows]
    width = max((len(name) for name, _ in pairs), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in pairs)


# -- stats, health ---------------------------------------------------------------------------------


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as a JSON object.")
def stats_command(as_json: bool) -> None:
    """Show the shared statistics (all processes using this Redis and prefix)."""
    backend = _backend()
    stats = backend.get_stats()
    if not stats.get("shared", False):
        _fail("cannot read the shared statistics: Redis is unreachable")
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    rows: list[tuple[str, object]] = [(name, value) for name, value in stats.items()]
    rows = [
        (name, f"{value:.2f} %" if name == "hit_rate" else value)
        for name, value in rows
        if name != "shared"
    ]
    click.echo(f"{backend!r}")
    click.echo(_table(rows))


@cli.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the report as a JSON object.")
def health_command(as_json: bool) -> None:
    """Ping Redis and print the report; exit status 0 when healthy, 1 otherwise."""
    report = _backend().health()
    report = {"status": report.pop("status"), **report}
    rows: list[tuple[str, object]] = []
    for name, value in report.items():
        if isinstance(value, dict):  # the near cache's state: one row per field
            rows += [(f"{name}.{part}", item) for part, item in value.items()]
        else:
            rows.append((name, value))
    click.echo(json.dumps(report, indent=2) if as_json else _table(rows))
    if report["status"] != "healthy":
        raise SystemExit(1)


# -- keys, clear -----------------------------------------------------------------------------------


@cli.command("keys")
@click.argument("pattern", default="*")
@click.option(
    "--limit", type=click.IntRange(1, MAX_KEYS_LIMIT), default=100, show_default=True,
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


@cli.command("clear")
@click.argument("pattern", default="*")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clear_command(pattern: str, yes: bool) -> None:
    """Remove the keys matching the glob PATTERN (default: all keys under the prefix).

    Uses SCAN and UNLINK, never KEYS or FLUSHDB; keys outside the prefix and the library's own
    bookkeeping (statistics, tag versions) are never touched, so the statistics are kept.
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
    (recorded in ``report.aborted``), one raised by an item only fails that item.
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
            raise RuntimeError("not stored (larger than FENNEC_CACHE_MAX_VALUE_BYTES, "
                               "or Redis failed)")
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


@cli.command("warm")
@click.argument("import_path", metavar="IMPORT_PATH")
@click.option(
    "--ttl", type=click.FloatRange(min=0, min_open=True), default=None,
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

    def progress(_: Any) -> str:
        failed = f", {len(report.failures)} failed" if report.failures else ""
        return f"{report.done} warmed{failed}, {report.rate:.1f}/s"

    with click.progressbar(
        warm_items(items, backend, ttl, report), length=length, label="Warming",
        show_pos=True, item_show_func=progress,
    ) as bar:
        for _ in bar:
            pass
    _summarize(import_path, report, strict)


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
