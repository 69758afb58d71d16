"""JSON values of exact sizes, shaped like typical API data (a list of small records)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MIN_SIZE", "SIZES", "compact", "json_value", "size_label"]

SIZES = (100, 1_000, 10_000, 100_000)


def compact(value: Any) -> bytes:
    """The compact JSON of *value* (what raw redis-py stores, and the size baseline)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def size_label(size: int) -> str:
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000} KB"
    return f"{size} B"


def _record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"user {i}",
        "email": f"user{i}@example.com",
        "score": (i * 37) % 101,
    }


def json_value(size: int) -> dict[str, Any]:
    """A dict whose compact JSON is exactly *size* bytes (at least :data:`MIN_SIZE`).

    One record (a user), with a list of more records while they fit and a ``pad`` string to
    make up the rest. Records repeat their field names, so values of a few KB compress well,
    as real API payloads do.
    """
    items: list[dict[str, Any]] = []
    value: dict[str, Any] = {**_record(0), "items": items, "pad": ""}
    if len(compact(value)) > size:
        raise ValueError(f"sizes below {MIN_SIZE} bytes are not supported")
    while True:
        items.append(_record(len(items) + 1))
        if len(compact(value)) > size:
            items.pop()
            break
    value["pad"] = "x" * (size - len(compact(value)))
    return value


MIN_SIZE = len(compact({**_record(0), "items": [], "pad": ""}))
