"""Fetch Flask-Caching 2.5.1's sdist (sha256-pinned, cached) and extract its test modules.

The sdist is fetched once with pip from the configured package index into ``.download/``
(gitignored), checked against :data:`SDIST_SHA256`, and the test modules are extracted,
unmodified, into ``.upstream/`` (gitignored; pytest collects it through conftest.py, mypy and
ruff never see it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

__all__ = [
    "EXCLUSIONS_FILE",
    "MODULES",
    "SDIST_SHA256",
    "UPSTREAM_DIR",
    "UpstreamUnavailable",
    "ensure_upstream",
    "load_module",
    "read_exclusions",
    "unavailable",
]

REQUIREMENT: Final = "flask-caching==2.5.1"
SDIST_NAME: Final = "flask_caching-2.5.1.tar.gz"
SDIST_SHA256: Final = "f75b451fde3faac0e278da72263818134deca8c4ba6bb07b9b3b238991368dae"
#: The four modules the compat layer must pass, run by pytest from UPSTREAM_DIR.
MODULES: Final = ("test_cache.py", "test_memoize.py", "test_templates.py", "test_view.py")
#: Extracted too: the backend contract (GenericCacheTests, imported by
#: test_backend_contract.py, not collected itself) and the templates the modules render.
SUPPORT_FILES: Final = ("test_backend_cache.py", "test_template.html", "test_stream.html")

HERE: Final = Path(__file__).resolve().parent
DOWNLOAD_DIR: Final = HERE / ".download"
UPSTREAM_DIR: Final = HERE / ".upstream"
EXCLUSIONS_FILE: Final = HERE / "excluded.txt"
STAMP: Final = ".sdist-sha256"
DOWNLOAD_TIMEOUT: Final = 600.0  # seconds: a deadline against a hung download, not a goal


class UpstreamUnavailable(RuntimeError):
    """The sdist could not be fetched, did not match its hash, or lacks a module."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist() -> Path:
    """The verified sdist, fetched with pip (``pip download``) unless already cached."""
    cached = DOWNLOAD_DIR / SDIST_NAME
    if cached.is_file() and _sha256(cached) == SDIST_SHA256:
        return cached
    DOWNLOAD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DOWNLOAD_DIR) as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--ignore-requires-python", "--disable-pip-version-check", "--quiet",
            "--dest", scratch, REQUIREMENT,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpstreamUnavailable(f"pip download {REQUIREMENT} failed: {exc}") from exc
        fetched = Path(scratch) / SDIST_NAME
        if done.returncode != 0 or not fetched.is_file():
            raise UpstreamUnavailable(
                f"pip download {REQUIREMENT} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        found = _sha256(fetched)
        if found != SDIST_SHA256:
            raise UpstreamUnavailable(
                f"{SDIST_NAME} has sha256 {found}, expected {SDIST_SHA256}: refusing to run it"
            )
        os.replace(fetched, cached)  # atomic: a concurrent run sees all of it or nothing
    return cached


def ensure_upstream() -> Path:
    """The directory holding the extracted modules (extracting them if needed)."""
    stamp = UPSTREAM_DIR / STAMP
    wanted = (*MODULES, *SUPPORT_FILES)
    if (
        stamp.is_file()
        and stamp.read_text().strip() == SDIST_SHA256
        and all((UPSTREAM_DIR / name).is_file() for name in wanted)
    ):
        return UPSTREAM_DIR
    archive = sdist()
    staging = Path(tempfile.mkdtemp(prefix=".upstream-", dir=HERE))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in wanted:
                member = tar.extractfile(f"flask_caching-2.5.1/tests/{name}")
                if member is None:
                    raise UpstreamUnavailable(f"{SDIST_NAME} has no tests/{name}")
                (staging / name).write_bytes(member.read())
        (staging / STAMP).write_text(SDIST_SHA256 + "\n")
        old = HERE / f".upstream-old-{os.getpid()}"
        if UPSTREAM_DIR.exists():
            UPSTREAM_DIR.rename(old)
        try:
            staging.rename(UPSTREAM_DIR)
        except OSError:
            if not (UPSTREAM_DIR / STAMP).is_file():  # not a concurrent run's copy: a failure
                raise
        shutil.rmtree(old, ignore_errors=True)
    except KeyError as exc:
        raise UpstreamUnavailable(f"{SDIST_NAME} lacks a test module: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return UPSTREAM_DIR


def unavailable(reason: str) -> None:
    """Skip, or fail when $CI is set: on CI the suite must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} [CI is set, so this is an error, not a skip]", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def load_module(name: str) -> ModuleType:
    """Import the extracted module *name* (``test_backend_cache``) under a private name; skips
    (fails on CI) when the sdist is unavailable."""
    try:
        directory = ensure_upstream()
    except UpstreamUnavailable as exc:
        unavailable(f"Flask-Caching's tests are unavailable: {exc}")
        raise
    spec = importlib.util.spec_from_file_location(
        f"flask_caching_upstream_{name}", directory / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_exclusions() -> dict[str, str]:
    """``{"module.py::test_name": reason}`` from :data:`EXCLUSIONS_FILE` (``id  # reason``
    lines; blank lines and lines starting with ``#`` are ignored)."""
    found: dict[str, str] = {}
    for line in EXCLUSIONS_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        test_id, _, reason = line.partition("#")
        found[test_id.strip()] = reason.strip()
    return found
