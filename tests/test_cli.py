"""The ``flask fennec-cache`` command group, run with Flask's CLI runner."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _servers import RedisServer
from _support import AppFactory, backend_of
from click.testing import Result
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo
from flask.testing import FlaskCliRunner

from flask_fennec_cache import RedisCache, cache, current_backend
from flask_fennec_cache.cli import MAX_LISTED_FAILURES, cli


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
    assert json.loads(result.stdout)["shared"] is True


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
    assert stats["misses"] == 1 and stats["total_requests"] == 1 and stats["shared"] is True


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
