"""The one thread that enters a backend's driver (agent/devices/poller.py): one call at a time, each awaited
under a time limit. A call that does not return in time stays `late`: the thread cannot be interrupted,
so no other call is handed to it until the driver lets that one go; the caller is never held."""

from __future__ import annotations

import queue
import threading

from agent.events import DeviceRef


class CallTimeout(Exception):
    """A driver call did not return within call_timeout_s; the worker is still inside it."""


class Busy(Exception):
    """The worker is still inside an earlier call that timed out."""


class _Call:
    __slots__ = ("what", "dev", "fn", "args", "done", "result", "error")

    def __init__(self, what: str, dev: DeviceRef | None, fn, args):
        self.what, self.dev, self.fn, self.args = what, dev, fn, args
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class Worker:
    """The one thread that enters a backend's driver: one call at a time, each awaited under a limit."""

    def __init__(self, name: str):
        self._q: queue.Queue[_Call | None] = queue.Queue(maxsize=1)
        self.late: _Call | None = None  # the call that timed out, while the driver still holds it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (c := self._q.get()) is not None:
            try:
                c.result = c.fn(*c.args)
            except BaseException as e:  # handed to the caller, whatever the driver raised
                c.error = e
            c.done.set()

    def call(self, what: str, dev: DeviceRef | None, fn, *args, limit: float):
        if self.late is not None:
            raise Busy(self.late.what)
        c = _Call(what, dev, fn, args)
        self._q.put_nowait(c)  # never full: the previous call is done (late is None)
        if not c.done.wait(limit):
            self.late = c
            raise CallTimeout(f"{what} did not return in {limit:g} s")
        if c.error is not None:
            raise c.error
        return c.result

    def returned(self) -> _Call | None:
        """The late call, once the driver has let it go (then the worker takes calls again)."""
        c = self.late
        if c is not None and c.done.is_set():
            self.late = None
            return c
        return None

    def stop(self) -> None:
        try:
            self._q.put_nowait(None)
        except queue.Full:  # stuck in the driver: the daemon thread goes with the process
            pass
