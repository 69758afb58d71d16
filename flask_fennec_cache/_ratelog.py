"""A logger wrapper that writes one line per cause at most every few seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._forksafe import reset_after_fork

__all__ = ["RateLimitedLog", "logger"]

logger = logging.getLogger("flask_fennec_cache")


class RateLimitedLog:
    """Log a line per *topic* at most once per *interval* seconds, counting what it held back.

    :param clock: where the time comes from (tests pass a fake one).
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        reset_after_fork(self)

    def warning(self, topic: str, message: str) -> None:
        """Log *message* at WARNING, unless *topic* was logged less than *interval* s ago."""
        self._log(logging.WARNING, topic, message)

    def error(self, topic: str, message: str) -> None:
        """Log *message* at ERROR, unless *topic* was logged less than *interval* s ago."""
        self._log(logging.ERROR, topic, message)

    def _log(self, level: int, topic: str, message: str) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval:
                self._held[topic] = self._held.get(topic, 0) + 1
                return
            self._last[topic] = now
            held = self._held.pop(topic, 0)
        suffix = f" ({held} more like this since the last report)" if held else ""
        logger.log(level, "%s%s", message, suffix)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
