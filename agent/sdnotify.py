"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change to the
unix socket systemd names in $NOTIFY_SOCKET (a path, or `@name` for the abstract namespace).

The unit (systemd/nodewarden.service) is Type=notify: systemd counts the agent started only at READY=1,
which we send once the probes are attached (after agent.ready), so `systemctl start` returns when the node
is really watched and units ordered After= it start then. STOPPING=1 at stop, STATUS= for `systemctl status`.
With WatchdogSec= the unit sets $WATCHDOG_USEC and Watchdog pings WATCHDOG=1 at half that interval while
its health check passes; a wedged agent (the pipeline's threads gone) stops pinging and systemd restarts it.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op. A send never raises: a missing or full socket
costs the notification (counted in `failed`), never the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("nodewarden")

failed = 0  # notifications that could not be sent (socket gone, refused): the only loss here


def _address(env: dict | None = None) -> str | None:
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path or (path[0] not in "/@"):  # systemd sets absolute paths or @abstract; anything else is not it
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def notify(state: str, env: dict | None = None) -> bool:
    """Send `state` ("READY=1", "STATUS=...", newline-separated assignments); True when it was sent."""
    global failed
    addr = _address(env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode("utf-8", "replace"), addr)
        return True
    except OSError as e:
        failed += 1
        log.warning("sd_notify %s failed: %s", state.split("\n", 1)[0], e)
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def stopping(status: str = "stopping") -> bool:
    return notify(f"STOPPING=1\nSTATUS={_one_line(status)}")


def status(text: str) -> bool:
    return notify(f"STATUS={_one_line(text)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:256]  # one assignment per line: a newline would start another


def watchdog_interval(env: dict | None = None) -> float | None:
    """Seconds between pings when systemd watches this process (WatchdogSec=), else None."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):  # set for another process (a child inherited it)
        return None
    return usec / 2e6  # half the timeout, as sd_watchdog_enabled(3) advises


class Watchdog:
    """Pings WATCHDOG=1 while `healthy()` is true; stops pinging (systemd then restarts us) when it is not."""

    def __init__(self, healthy: Callable[[], bool]):
        self.healthy = healthy
        self.interval = watchdog_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.missed = 0  # intervals with a failed health check

    def start(self) -> None:
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._loop, name="nw-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ok = self.healthy()
            except Exception:  # a health check that raises is a failed one
                ok = False
            if ok:
                notify("WATCHDOG=1")
            else:
                self.missed += 1
                if self.missed == 1:
                    log.error("health check failed: not pinging systemd's watchdog (the unit restarts us)")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
