"""Packaging: the dependency floors setup.cfg declares and the minimums CI installs from them."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import redis.utils

ROOT = Path(__file__).resolve().parents[1]
MINIMUMS = ROOT / ".ci" / "minimums.py"


def minimums(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MINIMUMS), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def config_with(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "setup.cfg"
    config.write_text(text)
    return config


def test_the_minimums_ci_installs_are_the_floors_setup_cfg_declares() -> None:
    result = minimums("--check")
    assert result.returncode == 0, result.stderr


def test_a_floor_changed_in_setup_cfg_alone_fails_the_check(tmp_path: Path) -> None:
    declared = (ROOT / "setup.cfg").read_text()
    raised = re.sub(r"(?m)^(\s+redis)>=[0-9.]+$", r"\g<1>>=99.1", declared)
    assert raised != declared, "setup.cfg declares redis>=X in install_requires"
    result = minimums("--check", "--config", str(config_with(tmp_path, raised)))
    assert result.returncode == 1
    assert "+redis==99.1" in result.stderr
    assert "--write" in result.stderr


def test_write_then_check_agree(tmp_path: Path) -> None:
    target = tmp_path / "minimums.txt"
    assert minimums("--write", "--minimums", str(target)).returncode == 0
    assert "\nredis==" in target.read_text()
    assert minimums("--check", "--minimums", str(target)).returncode == 0


def test_a_dependency_without_a_floor_is_refused(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        """\
[options]
install_requires =
    flask>=3.1
    redis
[options.extras_require]
test =
demo =
""",
    )
    result = minimums("--config", str(config))
    assert result.returncode == 1
    assert "redis" in result.stderr and "'>='" in result.stderr


def test_one_package_with_two_floors_is_refused_even_in_an_extra_ci_does_not_install(
    tmp_path: Path,
) -> None:
    config = config_with(
        tmp_path,
        """\
[options]
install_requires =
    flask>=3.1
[options.extras_require]
fast =
    orjson>=3.10
test =
    orjson>=3.9
demo =
""",
    )
    result = minimums("--config", str(config))
    assert result.returncode == 1
    assert "orjson" in result.stderr and "3.9" in result.stderr and "3.10" in result.stderr


def test_redis_py_parses_replies_with_the_installed_hiredis() -> None:
    """hiredis is a dependency for speed: redis-py must actually use it (it ignores old ones)."""
    assert redis.utils.HIREDIS_AVAILABLE, (
        f"redis-py {metadata.version('redis')} ignores hiredis {metadata.version('hiredis')}:"
        " raise the hiredis floor in setup.cfg"
    )


#: An async view served in the main thread (as Flask's test client and the dev server do),
#: then ``asyncio.run`` in that thread: before asgiref 3.4.0, AsyncToSync called
#: ``asyncio.get_event_loop()``, which created and installed a loop that nobody closed;
#: ``asyncio.run`` then dropped it, a ResourceWarning ("unclosed event loop", and its
#: self-pipe's unix sockets) reported in whichever test the garbage collector ran in.
ASYNC_VIEW_THEN_ASYNCIO_RUN = """\
import asyncio, gc
from flask import Flask

app = Flask("async_floor")

@app.get("/")
async def index():
    return "ok"

print(app.test_client().get("/").text)
asyncio.run(asyncio.sleep(0))
gc.collect()
"""


def test_the_asgiref_floor_leaves_no_event_loop_behind() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "tracemalloc=5", "-W", "error::ResourceWarning",
         "-c", ASYNC_VIEW_THEN_ASYNCIO_RUN],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
    assert "ResourceWarning" not in result.stderr, (
        f"asgiref {metadata.version('asgiref')} leaves an event loop unclosed: raise its floor"
        f" in setup.cfg\n{result.stderr}"
    )
