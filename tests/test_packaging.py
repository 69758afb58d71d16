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
