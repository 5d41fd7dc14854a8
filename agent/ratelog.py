"""Rate-limited logging: a recurring condition logs once per key per interval, not once per event.

A stage never kills the pipeline: it counts, logs once and goes on (STYLE.md). Without a limit a
bad record arriving 100k times a second would flood the log; with a plain "log once" the operator
never learns that it kept happening. So: the first occurrence of a key logs at once, later ones
within `interval` seconds are counted, and the next line for that key says how many were
suppressed since the last one.

    rlog = RateLog(logging.getLogger("nodewarden"))
    rlog.error("decode", "undecodable record: %r", exc)
    rlog.exception("session", "watcher session failed; retrying")   # with the traceback

Keys are bounded (`max_keys`, oldest forgotten first) because some callers build them from data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict


class RateLog:
    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 1024,
                 clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (last logged, suppressed since)
        self.suppressed = 0  # in all, over every key: lines not written

    def _admit(self, key: str) -> int | None:
        """None when the line must be suppressed, else how many were suppressed before it."""
        now = self._clock()
        with self._lock:
            last, held = self._last.get(key, (None, 0))
            if last is not None and now - last < self.interval:
                self._last[key] = (last, held + 1)
                self.suppressed += 1
                return None
            self._last[key] = (now, 0)
            self._last.move_to_end(key)
            while len(self._last) > self.max_keys:
                self._last.popitem(last=False)
            return held

    def log(self, level: int, key: str, msg: str, *args, exc_info=False) -> bool:
        """Log `msg % args` at `level` unless `key` logged less than `interval` ago; True when written."""
        held = self._admit(key)
        if held is None:
            return False
        if held:
            msg = f"{msg} ({held} more like this suppressed since the last line)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def exception(self, key: str, msg: str, *args) -> bool:
        """An error with the current exception's traceback (call from an except block)."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=True)
