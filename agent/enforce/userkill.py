"""SIGKILL from user space to the process an event came from, never to a process that reused its pid.

The event names a pid (the thread group) as it was when the kernel saw it; by the time user space acts
the process may have exited and the pid gone to a newer process. So the pid is pinned first
(pidfd_open(2): from then on the fd names that one process, whatever happens to the number), then
/proc/<pid>/stat says when the pinned process started (CLOCK_BOOTTIME ticks), and only a process that
had started by the event's time (and by its start_ns from the process table, within that table's
procfs rounding) gets the signal, through the pidfd (pidfd_send_signal(2)). A pid reused between the
pin and the stat read fails the check: the original is dead, nothing is sent. Linux >= 5.3.

Never signalled: pid 0 and 1 (the host's init), the agent itself. A zombie (exited, not yet reaped)
counts as exited: a signal to it would report success for nothing.
"""

from __future__ import annotations

import os
import signal
import time

# /proc's start time is in clock ticks (10 ms at USER_HZ 100), truncated: the event's time gets one tick
# and some clock-offset error of slack.
_TICK_SLACK_NS = 20_000_000
# The process table's start_ns of a process it read from procfs at seed rests on /proc/stat's btime,
# which has whole seconds: the true start may be up to a second after it.
_SEED_SLACK_NS = 1_000_000_000


class ProcessKiller:
    """kill(pid, ...) -> "killed" or "kill failed: <why>"; proc_root: procfs (a fixture tree in tests)."""

    def __init__(self, proc_root: str = "/proc"):
        self._proc = proc_root
        self._self = os.getpid()
        self._hz = os.sysconf("SC_CLK_TCK")

    def kill(self, pid: int, event_ns: int, start_ns: int = 0) -> str:
        """SIGKILL the process `pid` named at wall-clock `event_ns` (its start, when known: `start_ns`)."""
        if pid <= 1:
            return f"kill failed: pid {pid} is never killed"
        if pid == self._self:
            return "kill failed: the agent does not kill itself"
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "kill failed: the process had exited"
        except OSError as e:
            return f"kill failed: pidfd_open: {e.strerror}"
        try:
            started = self._started_ns(pid)
            if started is None:
                return "kill failed: the process had exited"
            not_after = event_ns if not start_ns else min(event_ns, start_ns + _SEED_SLACK_NS)
            if started > not_after + _TICK_SLACK_NS:
                return "kill failed: the pid belongs to a newer process now (not signalled)"
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return "killed"
        except ProcessLookupError:
            return "kill failed: the process had exited"
        except OSError as e:
            return f"kill failed: pidfd_send_signal: {e.strerror}"
        finally:
            os.close(fd)

    def _started_ns(self, pid: int) -> int | None:
        """When the process now at `pid` started, as wall-clock ns; None when it is gone or a zombie."""
        try:
            with open(os.path.join(self._proc, str(pid), "stat"), "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rfind(b")") + 2:].split()  # comm may hold spaces and parentheses
        if len(fields) < 20 or fields[0] in (b"Z", b"X"):
            return None
        boot_ns = int(fields[19]) * 1_000_000_000 // self._hz
        return boot_ns + time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
