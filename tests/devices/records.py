"""The device poller's emit as the tests see it: every record kept, and a wait for one that matches."""

from __future__ import annotations

import threading
import time


class Records:
    def __init__(self):
        self.items: list = []
        self.cond = threading.Condition()

    def __call__(self, ev) -> None:
        with self.cond:
            self.items.append(ev)
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((e for e in self.items if pred(e)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such record among {[type(e).__name__ for e in self.items][-20:]}")
                self.cond.wait(left)

    def of(self, cls, uuid: str | None = None) -> list:
        with self.cond:
            return [e for e in self.items if isinstance(e, cls) and (uuid is None or e.device.uuid == uuid)]
