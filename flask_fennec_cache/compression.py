"""Compress large stored values: zlib by default, zstd when installed and chosen.

zlib entries are written and read with zlib-ng when it is installed (the ``fast`` extra): the
same format, so processes with and without it share entries.

A compressed value is its tag (``z`` zlib, ``Z`` zstd) followed by the compressed bytes of the
entry it replaces, which keeps its own tag. Values up to the threshold, and values that do not
shrink by at least a tenth, are stored as they are.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError

__all__ = ["METHODS", "ZLIB_TAG", "ZSTD_TAG", "Compressor", "decompress"]

METHODS = ("zlib", "zstd", "none")
#: The format tags of compressed entries (registered with the others in ``_tags``).
ZLIB_TAG = b"z"
ZSTD_TAG = b"Z"
ZSTD_LEVEL = 3

_zlib: Any = zlib
ZLIB_LEVEL = 1  # about as small as level 6 on JSON and HTML, several times faster
try:  # optional ("fast" extra): the same format, deflated 1.5-3x and inflated 2x faster
    from zlib_ng import zlib_ng as _zlib

    ZLIB_LEVEL = 2  # zlib-ng's level 1 gives up a third more bytes; its 2 is about zlib's 1
except ImportError:  # pragma: no cover - depends on the environment
    pass

_zstd: Any
try:  # optional: the "zstd" extra
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

_zstd_compressor: Any = None
_zstd_decompressor: Any = None


class Compressor:
    """Compresses encoded values longer than *threshold* bytes with *method*."""

    def __init__(self, method: str = "zlib", threshold: int = 1024) -> None:
        if method not in METHODS:
            raise ConfigurationError(f"compression must be one of {', '.join(METHODS)}")
        if method == "zstd" and _zstd is None:
            raise ConfigurationError(
                "compression 'zstd' needs the zstandard package: "
                "pip install 'flask-fennec-cache[zstd]'"
            )
        if threshold < 0:
            raise ConfigurationError(f"compression threshold must be >= 0, got {threshold!r}")
        self.method = method
        self.threshold = threshold
        self._compress: Callable[[bytes], bytes] | None = {
            "zlib": _zlib_compress,
            "zstd": _zstd_compress,
            "none": None,
        }[method]

    def __call__(self, data: bytes) -> bytes:
        """*data*, or its compressed form when that is worth it."""
        if self._compress is None or len(data) <= self.threshold:
            return data
        packed = self._compress(data)
        return packed if len(packed) <= len(data) * 0.9 else data


def _zlib_compress(data: bytes) -> bytes:
    return ZLIB_TAG + bytes(_zlib.compress(data, ZLIB_LEVEL))


def _zstd_compress(data: bytes) -> bytes:
    global _zstd_compressor
    if _zstd_compressor is None:
        _zstd_compressor = _zstd.ZstdCompressor(level=ZSTD_LEVEL)
    return ZSTD_TAG + bytes(_zstd_compressor.compress(data))


def decompress(data: bytes, limit: int) -> bytes:
    """The entry inside a ``z`` or ``Z`` value; ValueError if it is corrupt or over *limit*."""
    body = memoryview(data)[1:]
    if data[:1] == ZLIB_TAG:
        inflater = _zlib.decompressobj()
        try:
            inner = inflater.decompress(body, limit + 1)
        except _zlib.error as exc:
            raise ValueError(f"corrupt zlib data: {exc}") from exc
    else:
        if _zstd is None:
            raise ValueError("a zstd-compressed entry, but zstandard is not installed")
        global _zstd_decompressor
        if _zstd_decompressor is None:
            _zstd_decompressor = _zstd.ZstdDecompressor()
        try:
            with _zstd_decompressor.stream_reader(io.BytesIO(body)) as reader:
                inner = reader.read(limit + 1)
        except _zstd.ZstdError as exc:
            raise ValueError(f"corrupt zstd data: {exc}") from exc
    if len(inner) > limit:
        raise ValueError(f"decompresses to more than {limit} bytes")
    return bytes(inner)
