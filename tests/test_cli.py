"""The ``flask fennec-cache`` command group, run with Flask's CLI runner."""

from __future__ import annotations

import functools
import json
import os
import pty
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _servers import RedisServer, find_free_port
from _support import HANG, AppFactory, backend_of
from click.testing import Result
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo
from flask.testing import FlaskCliRunner

from flask_fennec_cache import FennecCache, RedisCache, cache, current_backend
from flask_fennec_cache import cli as cli_module
from flask_fennec_cache.cli import MAX_LISTED_FAILURES, ProgressLines, WarmReport, cli


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def run(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(cli, list(args), input=input)


def fill(backend: RedisCache) -> None:
    backend.set_many({"user:1": 1, "user:2": 2, "post:1": 3})


# ==================================================================================
# Registration
# ==================================================================================


def test_registered_through_the_flask_commands_entry_point(app: Flask) -> None:
    group = FlaskGroup(create_app=lambda: app)
    result = FlaskCliRunner(app).invoke(group, ["fennec-cache", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shared"] is False  # memory://: this process's counts


def test_an_app_without_the_extension_gets_an_actionable_error() -> None:
    bare = Flask("bare")
    result = bare.test_cli_runner().invoke(cli, ["stats"], obj=ScriptInfo(create_app=lambda: bare))
    assert result.exit_code == 1
    assert "did you forget FennecCache.init_app(app)?" in result.output


def test_memory_urls_get_a_warning_on_stderr(runner: FlaskCliRunner) -> None:
    result = run(runner, "health")
    assert "memory://" in result.stderr and "private to this process" in result.stderr


# ==================================================================================
# stats
# ==================================================================================


def test_stats_table(app: Flask, runner: FlaskCliRunner) -> None:
    backend = backend_of(app)
    backend.set("a", 1)
    backend.get("a")
    backend.get("nope")
    result = run(runner, "stats")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:])
    assert lines["hits"] == "1" and lines["misses"] == "1" and lines["sets"] == "1"
    assert lines["hit_rate"] == "50.00 %"
    assert "shared" not in lines
    assert result.stdout.startswith("RedisCache(url='memory://")


def test_stats_json(app: Flask, runner: FlaskCliRunner) -> None:
    backend_of(app).get("missing")
    result = run(runner, "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["misses"] == 1 and stats["total_requests"] == 1
    assert stats["shared"] is False  # memory://: this process's counts


def test_stats_by_name_table_and_json(app: Flask, runner: FlaskCliRunner) -> None:
    backend = backend_of(app)

    @cache(ttl=60, backend=backend, name="popular")
    def popular(n: int) -> int:
        return n

    @cache(ttl=60, backend=backend, name="cold")
    def cold(n: int) -> int:
        return n

    for n in (1, 1, 1, 1, 1):
        popular(n)
    cold(1)
    plain = run(runner, "stats")
    assert "popular" not in plain.stdout and "by_name" not in plain.stdout
    result = run(runner, "stats", "--by-name")
    assert result.exit_code == 0, result.output
    table = result.stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split()[:3] == ["name", "reads", "hit"]
    assert table[1].split()[:5] == ["popular", "5", "80.00", "%", "4"]  # busiest first
    assert table[2].split()[:5] == ["cold", "1", "0.00", "%", "!"]  # under 80 %: marked
    assert "!" not in table[1]
    stats = json.loads(run(runner, "stats", "--json").stdout)
    assert stats["by_name"]["popular"]["hits"] == 4 and stats["by_name"]["cold"]["misses"] == 1


# ==================================================================================
# health
# ==================================================================================


def test_health_healthy(runner: FlaskCliRunner) -> None:
    result = run(runner, "health")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["status", "healthy"]
    assert "breaker" in result.stdout and "latency_ms" in result.stdout


def test_health_json(runner: FlaskCliRunner) -> None:
    result = run(runner, "health", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["status"] == "healthy" and report["backend"] == "redis"


# ==================================================================================
# keys
# ==================================================================================


def test_keys_lists_matches_relative_to_the_prefix(app: Flask, runner: FlaskCliRunner) -> None:
    fill(backend_of(app))
    backend_of(app).get("user:1")
    backend_of(app).get_stats()  # creates the library's own stats key: never listed
    result = run(runner, "keys")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == ["post:1", "user:1", "user:2"]
    result = run(runner, "keys", "user:*")
    assert sorted(result.stdout.split()) == ["user:1", "user:2"]


def test_keys_output_is_bounded(app: Flask, runner: FlaskCliRunner) -> None:
    backend_of(app).set_many({f"k:{i}": i for i in range(30)})
    result = run(runner, "keys", "--limit", "7")
    assert result.exit_code == 0
    assert len(result.stdout.split()) == 7
    assert "stopped after 7 keys" in result.stderr
    exact = run(runner, "keys", "--limit", "30")
    assert len(exact.stdout.split()) == 30 and "stopped" not in exact.stderr


@pytest.mark.parametrize("args", [["--limit", "0"], ["--limit", "x"], ["a" * 600]])
def test_keys_bad_input_is_a_usage_error(runner: FlaskCliRunner, args: list[str]) -> None:
    result = run(runner, "keys", *args)
    assert result.exit_code == 2, result.output


# ==================================================================================
# clear
# ==================================================================================


def test_clear_asks_first_and_aborts_on_no(app: Flask, runner: FlaskCliRunner) -> None:
    fill(backend_of(app))
    result = run(runner, "clear", input="n\n")
    assert result.exit_code == 1
    assert "Remove every key under the prefix" in result.output
    assert "Aborted" in result.output
    assert len(backend_of(app).keys()) == 3


def test_clear_after_confirmation(app: Flask, runner: FlaskCliRunner) -> None:
    fill(backend_of(app))
    result = run(runner, "clear", "user:*", input="y\n")
    assert result.exit_code == 0, result.output
    assert "the keys matching 'user:*'" in result.output
    assert "Removed 2 keys." in result.stdout
    assert backend_of(app).keys() == ["post:1"]


def test_clear_yes_skips_the_question_and_keeps_stats(app: Flask, runner: FlaskCliRunner) -> None:
    backend = backend_of(app)
    fill(backend)
    backend.get("user:1")
    result = run(runner, "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "Remove every key" not in result.output
    assert "Removed 3 keys." in result.stdout
    assert backend.keys() == []
    assert backend.get_stats()["hits"] == 1
    assert "Removed 0 keys." in run(runner, "clear", "-y").stdout
    backend.set("x", 1)
    assert "Removed 1 key." in run(runner, "clear", "-y", "x").stdout


def test_clear_failing_midway_exits_1(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(app)
    fill(backend)

    def broken_unlink(*keys: Any) -> int:
        raise redis.ConnectionError("gone mid-walk")

    monkeypatch.setattr(backend.client, "unlink", broken_unlink)
    result = run(runner, "clear", "--yes")
    assert result.exit_code == 1
    assert "some matching keys may remain" in result.output


def test_clear_bad_pattern_is_a_usage_error(runner: FlaskCliRunner) -> None:
    result = run(runner, "clear", "--yes", "bad\x01pattern")
    assert result.exit_code == 2
    assert "control characters" in result.output


# ==================================================================================
# warm
# ==================================================================================


@cache(ttl=60, key="square:{n}")
def square(n: int) -> int:
    return n * n


def warm_pairs() -> Iterator[tuple[str, Callable[[], Any]]]:
    for i in range(5):
        yield f"warm:{i}", functools.partial(lambda i: {"i": i}, i)


def warm_list_of_callables() -> list[Callable[[], int]]:
    return [functools.partial(square, n) for n in range(4)]


def warm_by_calling() -> None:
    for n in range(3):
        square(n)


def warm_some_fail() -> Iterator[Any]:
    def boom() -> int:
        raise ValueError("database said no")

    yield "good:1", lambda: 1
    yield "bad:1", boom
    yield 42  # neither a pair nor callable
    yield "bad:2", "not callable"
    yield "good:2", lambda: 2
    yield "unserializable", lambda: object()


def warm_all_fail() -> Iterator[Any]:
    for i in range(3):
        yield f"bad:{i}", lambda: 1 / 0


def warm_many_fail() -> Iterator[Any]:
    yield "ok", lambda: 1
    for i in range(MAX_LISTED_FAILURES + 5):
        yield f"bad:{i}", lambda: 1 / 0


def warm_breaks_midway() -> Iterator[Any]:
    yield "first", lambda: 1
    raise RuntimeError("generator broke")


def warm_raises_at_once() -> Iterator[Any]:
    raise RuntimeError("cannot even start")


def warm_returns_junk() -> int:
    return 3


def warm_nothing() -> list[Any]:
    return []


not_callable = 7


def test_warm_pairs_store_loader_values(app: Flask, runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_pairs")
    assert result.exit_code == 0, result.output
    assert "Warmed 5 of 5 items" in result.stdout and "/s)" in result.stdout
    backend = backend_of(app)
    assert [backend.get(f"warm:{i}") for i in range(5)] == [{"i": i} for i in range(5)]
    ttl = backend.ttl("warm:0")
    assert ttl is not None and 0 < ttl <= 300  # the app's default TTL


def test_warm_ttl_option(app: Flask, runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "--ttl", "5000", "test_cli:warm_pairs")
    assert result.exit_code == 0, result.output
    ttl = backend_of(app).ttl("warm:3")
    assert ttl is not None and 300 < ttl <= 5000


def test_warm_callables_fill_cached_functions(app: Flask, runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_list_of_callables")
    assert result.exit_code == 0, result.output
    assert "Warmed 4 of 4 items" in result.stdout
    assert [backend_of(app).get(f"square:{n}") for n in range(4)] == [0, 1, 4, 9]


def test_warm_a_function_that_calls_cached_functions_itself(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = run(runner, "warm", "test_cli:warm_by_calling")
    assert result.exit_code == 0, result.output
    assert "returned no items" in result.stdout
    assert backend_of(app).get("square:2") == 4


def test_warm_failures_are_reported_at_the_end_not_fatal(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = run(runner, "warm", "test_cli:warm_some_fail")
    assert result.exit_code == 0, result.output
    assert "Warmed 2 of 6 items" in result.stdout
    assert "4 failed:" in result.stderr
    assert "bad:1: ValueError: database said no" in result.stderr
    assert "42: TypeError: expected a (key, loader) pair" in result.stderr
    assert "bad:2: TypeError: the loader for 'bad:2' is a str" in result.stderr
    assert "unserializable: SerializationError" in result.stderr
    assert backend_of(app).get("good:2") == 2


def test_warm_strict_fails_on_any_failure(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "--strict", "test_cli:warm_some_fail")
    assert result.exit_code == 1
    assert "Warmed 2 of 6 items" in result.stdout


def test_warm_fails_when_every_item_failed(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_all_fail")
    assert result.exit_code == 1
    assert "Warmed 0 of 3 items" in result.stdout
    assert "ZeroDivisionError" in result.stderr


def test_warm_lists_a_bounded_number_of_failures(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_many_fail")
    assert result.exit_code == 0
    assert result.stderr.count("ZeroDivisionError") == MAX_LISTED_FAILURES
    assert "... and 5 more" in result.stderr


def test_warm_stops_when_the_generator_itself_raises(app: Flask, runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_breaks_midway")
    assert result.exit_code == 1
    assert "Warmed 1 of 1 item " in result.stdout
    assert "stopped after 1 items: RuntimeError: generator broke" in result.output
    assert backend_of(app).get("first") == 1


def test_warm_function_raising_at_once(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_raises_at_once")
    # a generator function raises on its first item, a plain function on the call
    assert result.exit_code == 1
    assert "RuntimeError: cannot even start" in result.output


def test_warm_nothing_to_do(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_nothing")
    assert result.exit_code == 0
    assert "Warmed 0 of 0 items" in result.stdout


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("test_cli.warm_pairs", "expected module:function"),
        ("no_such_module_xyz:f", "cannot import"),
        ("test_cli:no_such_function", "cannot import"),
        ("test_cli:not_callable", "is not callable"),
    ],
)
def test_warm_bad_import_path_is_a_usage_error(
    runner: FlaskCliRunner, path: str, message: str
) -> None:
    result = run(runner, "warm", path)
    assert result.exit_code == 2
    assert message in result.output


def test_warm_a_function_returning_a_non_iterable(runner: FlaskCliRunner) -> None:
    result = run(runner, "warm", "test_cli:warm_returns_junk")
    assert result.exit_code == 1
    assert "returned a int; expected an iterable" in result.output


def test_warm_runs_in_the_app_context(app: Flask, runner: FlaskCliRunner) -> None:
    # current_backend() inside the warm function is this app's backend
    result = run(runner, "warm", "test_cli:warm_pairs")
    assert result.exit_code == 0
    with app.app_context():
        assert current_backend() is backend_of(app)
        assert current_backend().get("warm:4") == {"i": 4}


# ==================================================================================
# A real server: exit codes when it dies
# ==================================================================================


def test_health_lists_the_near_cache_state_one_field_per_row(
    make_app: AppFactory, redis_server: RedisServer
) -> None:
    app = make_app(FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_NEAR_CACHE=True)
    result = run(app.test_cli_runner(), "health")
    assert result.exit_code == 0, result.output
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert rows["near_cache.entries"] == "0" and rows["near_cache.max_bytes"] == str(64 << 20)


def test_real_server_health_exit_codes(make_app: AppFactory, redis_server: RedisServer) -> None:
    app = make_app(FENNEC_CACHE_URL=redis_server.url)
    runner = app.test_cli_runner()
    result = run(runner, "health")
    assert result.exit_code == 0, result.output
    assert "healthy" in result.stdout
    backend_of(app).set("user:1", 1)
    assert run(runner, "keys").stdout.split() == ["user:1"]

    redis_server.kill()
    result = run(runner, "health")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].split() == ["status", "unhealthy"]
    assert "ConnectionError" in result.stdout
    for args in (["stats"], ["keys"], ["clear", "--yes"], ["warm", "test_cli:warm_pairs"]):
        result = run(runner, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "unreachable" in result.output


# ==================================================================================
# stats --reset: clearing keeps the statistics, resetting them is explicit
# ==================================================================================


def test_stats_reset_asks_then_zeroes_the_shared_counters(
    app: Flask, runner: FlaskCliRunner
) -> None:
    backend = backend_of(app)
    fill(backend)
    backend.get("user:1")
    declined = run(runner, "stats", "--reset", input="n\n")
    assert declined.exit_code == 1
    assert "Reset the shared statistics" in declined.stderr
    assert backend.get_stats()["hits"] == 1
    result = run(runner, "stats", "--reset", "--yes")
    assert result.exit_code == 0, result.output
    shown = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:-1])
    assert shown["hits"] == "1"  # what was reset is printed first
    assert result.stdout.splitlines()[-1] == "Statistics reset."
    stats = backend.get_stats()
    assert (stats["hits"], stats["sets"], stats["total_requests"]) == (0, 0, 0)
    assert len(backend.keys()) == 3


def test_stats_reset_json_keeps_stdout_one_document(app: Flask, runner: FlaskCliRunner) -> None:
    backend_of(app).get("nope")
    result = run(runner, "stats", "--json", "--reset", "-y")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["misses"] == 1
    assert "Statistics reset." in result.stderr
    assert backend_of(app).get_stats()["misses"] == 0


def test_a_pattern_clear_keeps_the_statistics(app: Flask, runner: FlaskCliRunner) -> None:
    backend = backend_of(app)
    fill(backend)
    backend.get("user:1")
    before = backend.get_stats()
    assert run(runner, "clear", "--yes", "user:*").exit_code == 0
    after = backend.get_stats()
    assert {**after, "deletes": before["deletes"]} == before
    assert after["deletes"] == before["deletes"] + 2


# ==================================================================================
# One line, exit status 1, never a traceback: a dead Redis in both modes, a bad config
# ==================================================================================

#: Every command of the group, with arguments that would otherwise succeed.
COMMANDS = [
    ["stats"], ["stats", "--json"], ["stats", "--reset", "--yes"], ["health"],
    ["health", "--json"], ["keys"], ["keys", "user:*"], ["clear", "--yes"],
    ["clear", "--yes", "user:*"], ["warm", "test_cli:warm_pairs"],
    ["warm", "test_cli:warm_list_of_callables"],
]  # fmt: skip
COMMAND_IDS = [" ".join(args) for args in COMMANDS]


def assert_one_error_line(result: Result, *expected: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    others = [line for line in result.stderr.splitlines() if not line.startswith("Error:")]
    assert all(line.startswith("warning: FENNEC_CACHE_URL is memory://") for line in others)
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("args", COMMANDS, ids=COMMAND_IDS)
def test_every_command_against_a_dead_redis_prints_one_line(
    make_app: AppFactory, fail_open: bool, args: list[str]
) -> None:
    port = find_free_port()  # nobody listens on it
    app = make_app(FENNEC_CACHE_URL=f"redis://127.0.0.1:{port}/0", FENNEC_CACHE_FAIL_OPEN=fail_open)
    result = run(app.test_cli_runner(), *args)
    line = assert_one_error_line(result, f"127.0.0.1:{port}", "unreachable", "ConnectionError")
    assert "Connection refused" in line
    if args[0] == "health":  # the probe's report is still printed, on stdout
        assert "unhealthy" in result.stdout


def broken_app() -> Flask:
    broken = Flask("broken")
    broken.config["FENNEC_CACHE_ADMIN_TOKEN"] = True  # from_prefixed_env() made it a bool
    FennecCache(broken)
    return broken


@pytest.mark.parametrize("args", COMMANDS, ids=COMMAND_IDS)
def test_every_command_with_a_bad_configuration_prints_one_line(args: list[str]) -> None:
    """The app factory itself raises ConfigurationError: one line naming the key."""
    runner = FlaskCliRunner(Flask("unused"))
    result = runner.invoke(cli, args, obj=ScriptInfo(create_app=broken_app))
    assert_one_error_line(result, "Error: invalid configuration:", "FENNEC_CACHE_ADMIN_TOKEN")


@pytest.mark.parametrize(
    ("args", "method"),
    [(["stats"], "hgetall"), (["keys"], "scan"), (["clear", "--yes"], "scan"),
     (["stats", "--reset", "--yes"], "delete")],
    ids=["stats", "keys", "clear", "reset"],
)  # fmt: skip
def test_redis_failing_after_the_check_in_fail_closed_mode_prints_one_line(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, args: list[str], method: str
) -> None:
    app = make_app(FENNEC_CACHE_FAIL_OPEN=False)
    backend = backend_of(app)
    fill(backend)

    def gone(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(backend.client, method, gone)
    result = run(app.test_cli_runner(), *args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert errors == [errors[0]] and "Connection reset by peer" in errors[0], result.output
    assert "the cache is unavailable" in errors[0]


def warm_then_redis_goes_away() -> Iterator[Any]:
    yield "first", lambda: 1
    backend = current_backend()
    backend.client.connection_pool.connection_kwargs["server"].connected = False
    for i in range(50):
        yield f"later:{i}", lambda: 2


def test_warm_stops_at_the_first_cache_unavailable(make_app: AppFactory) -> None:
    """Fail-closed: once the cache is gone every item would fail the same way, so the run
    stops there, with one error line (not fifty listed failures)."""
    app = make_app(FENNEC_CACHE_FAIL_OPEN=False)
    server = backend_of(app).client.connection_pool.connection_kwargs["server"]
    try:
        result = run(app.test_cli_runner(), "warm", "test_cli:warm_then_redis_goes_away")
    finally:
        server.connected = True
    assert "Warmed 1 of 1 item " in result.stdout
    assert_one_error_line(result, "stopped after 1 items", "unavailable at later:0", "failed")


# ==================================================================================
# warm: progress lines off a terminal, a bar with the right counters on one
# ==================================================================================


def test_off_a_terminal_warm_prints_progress_lines(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_module, "PROGRESS_EVERY_ITEMS", 2)
    monkeypatch.setattr(cli_module, "PROGRESS_EVERY_SECONDS", 0.0)
    result = run(runner, "warm", "test_cli:warm_list_of_callables")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Warming test_cli:warm_list_of_callables: 4 items"
    assert re.fullmatch(r"  2 of 4 items: 2 warmed, [\d.]+/s", lines[1]), lines
    assert re.fullmatch(r"  4 of 4 items: 4 warmed, [\d.]+/s", lines[2]), lines
    assert re.fullmatch(r"Warmed 4 of 4 items in [\d.]+ s \([\d.]+/s\)\.", lines[3]), lines
    assert len(lines) == 4


def test_off_a_terminal_an_unsized_warm_counts_failures_too(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_module, "PROGRESS_EVERY_ITEMS", 3)
    monkeypatch.setattr(cli_module, "PROGRESS_EVERY_SECONDS", 0.0)
    result = run(runner, "warm", "test_cli:warm_some_fail")
    lines = result.stdout.splitlines()
    assert lines[0] == "Warming test_cli:warm_some_fail"
    assert re.fullmatch(r"  3 items: 1 warmed, 2 failed, [\d.]+/s", lines[1]), lines
    assert re.fullmatch(r"  6 items: 2 warmed, 4 failed, [\d.]+/s", lines[2]), lines


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_after(
    items: int, seconds_per_item: float, every_items: int, every_seconds: float
) -> list[str]:
    """The progress lines of a run of *items* items taking *seconds_per_item* each."""
    clock = FakeClock()
    report = WarmReport()
    printed: list[str] = []
    lines = ProgressLines(
        report, items, every_items, every_seconds, clock=clock, echo=printed.append
    )
    for _ in range(items):
        clock.now += seconds_per_item
        report.done += 1
        report.seconds += seconds_per_item
        lines.update()
    return printed


def heads(lines: list[str]) -> list[str]:
    return [line.split(":")[0].strip() for line in lines]


def test_progress_lines_come_at_the_rarer_of_both_cadences() -> None:
    # Fast items, 64 a second (exact in binary): the time cadence (every 5 s) is the rarer.
    fast = progress_after(1000, 1 / 64, every_items=100, every_seconds=5.0)
    assert heads(fast) == ["320 of 1000 items", "640 of 1000 items", "960 of 1000 items"]
    assert fast[0].endswith("320 warmed, 64.0/s")
    # Slow items, 2 s each: the item cadence (every 100 items = 200 s) is the rarer one.
    slow = progress_after(250, 2.0, every_items=100, every_seconds=5.0)
    assert heads(slow) == ["100 of 250 items", "200 of 250 items"]
    assert slow[0].endswith("100 warmed, 0.5/s")


@pytest.mark.parametrize("sized", [True, False], ids=["list", "generator"])
def test_on_a_terminal_the_bar_and_its_counters_agree(tmp_path: Path, sized: bool) -> None:
    """Runs ``flask fennec-cache warm`` on a pseudo-terminal, as a person would, and reads
    every frame the bar drew: its position and the "warmed" counter are the same number."""
    (tmp_path / "warm_app.py").write_text(WARM_APP.format(url=f"memory://pty-{uuid.uuid4().hex}"))
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "120", "TERM": "xterm"}
    target = "warm_app:sized" if sized else "warm_app:unsized"
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "warm_app", "fennec-cache", "warm", target],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    _, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 0, (b"".join(chunks), stderr)
    screen = b"".join(chunks).decode()
    frames = [frame for frame in re.split(r"[\r\n]", screen) if "warmed" in frame]
    positions = [re.search(r"(\d+)(?:/30)?\s+(\d+) warmed", frame) for frame in frames]
    pairs = [(int(m.group(1)), int(m.group(2))) for m in positions if m is not None]
    assert pairs, screen
    assert all(pos == warmed for pos, warmed in pairs), pairs
    assert pairs[-1] == (30, 30), pairs
    assert "Warmed 30 of 30 items" in screen


WARM_APP = """
import functools
from flask import Flask
from flask_fennec_cache import FennecCache

app = Flask(__name__)
app.config["FENNEC_CACHE_URL"] = "{url}"
FennecCache(app)


def sized():
    return [("k:%d" % i, functools.partial(int, i)) for i in range(30)]


def unsized():
    yield from sized()
"""


def test_health_prints_one_row_per_figure_and_per_warning(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = {
        "status": "healthy", "url": "redis+cluster://h:1/",
        "redis": {"available": True,
                  "nodes": {"h:1": {"used_memory": 10}, "h:2": {"used_memory": 20}}},
        "warnings": ["maxmemory-policy is noeviction", "evictions climbing"],
    }  # fmt: skip
    monkeypatch.setattr(type(backend_of(app)), "health", lambda self: dict(report))
    lines = run(runner, "health").stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "status", "url", "redis.available", "redis.nodes.h:1.used_memory",
        "redis.nodes.h:2.used_memory", "warnings", "warnings",
    ]  # fmt: skip
    assert lines[-2].split(None, 1)[1] == "maxmemory-policy is noeviction"
