"""A logger wrapper that writes one line per cause at most every few seconds."""

from __future__ import annotations

import logging
import threading
import time

from ._forksafe import reset_after_fork

__all__ = ["RateLimitedLog", "logger"]

logger = logging.getLogger("flask_fennec_cache")


class RateLimitedLog:
    """Log a warning per *topic* at most once per *interval* seconds, counting what it held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        reset_after_fork(self)

    def warning(self, topic: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval:
                self._held[topic] = self._held.get(topic, 0) + 1
                return
            self._last[topic] = now
            held = self._held.pop(topic, 0)
        suffix = f" ({held} more like this since the last report)" if held else ""
        logger.warning("%s%s", message, suffix)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
