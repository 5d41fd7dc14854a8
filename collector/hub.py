"""Live fan-out for Subscribe: the writer publishes what it committed, each subscriber gets
what matches its filter in a queue of its own, bounded in events.

The writer never waits for a subscriber: when a queue is full, the events that do not fit
are dropped for that subscriber alone and counted; the count reaches the client in the
`dropped` field of its next message.
"""

from __future__ import annotations

import collections
import threading

from collector.filters import EventFilter


class Subscriber:
    def __init__(self, flt: EventFilter, max_events: int):
        self.filter = flt
        self.max_events = max_events
        self._items: collections.deque = collections.deque()  # (id, body)
        self._cond = threading.Condition(threading.Lock())
        self.dropped = 0
        self.closed = False

    def offer(self, items: list) -> None:
        """Called by the writer: never blocks."""
        with self._cond:
            room = self.max_events - len(self._items)
            if room < len(items):
                self.dropped += len(items) - max(room, 0)
                items = items[: max(room, 0)]
            if items:
                self._items.extend(items)
                self._cond.notify()

    def take(self, max_items: int, timeout: float) -> tuple[list, int]:
        """Up to max_items queued (id, body), waiting up to `timeout` s for the first."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            n = min(len(self._items), max_items)
            return [self._items.popleft() for _ in range(n)], self.dropped

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Hub:
    def __init__(self):
        self._subs: list[Subscriber] = []
        self._lock = threading.Lock()
        self.dropped_total = 0  # over subscribers that are gone, for the metric

    def add(self, flt: EventFilter, max_events: int) -> Subscriber:
        sub = Subscriber(flt, max_events)
        with self._lock:
            self._subs = [*self._subs, sub]  # copy on write: publish reads without the lock
        return sub

    def remove(self, sub: Subscriber) -> None:
        sub.close()
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]
            self.dropped_total += sub.dropped

    def count(self) -> int:
        return len(self._subs)

    def dropped(self) -> int:
        return self.dropped_total + sum(s.dropped for s in self._subs)

    def publish(self, published: list) -> None:
        """published: [(id, filter row, body)] in commit order."""
        for sub in self._subs:
            flt = sub.filter
            if flt.empty:
                items = [(i, body) for i, _, body in published]
            else:
                items = [(i, body) for i, row, body in published if flt.match(row)]
            if items:
                sub.offer(items)

    def close_all(self) -> None:
        for sub in self._subs:
            sub.close()
