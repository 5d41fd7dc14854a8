"""The process table: pid -> what the process runs, who its parent is, who runs it.

Seeded from procfs at start-up, then kept by the process sensor's fork, exec and exit events,
so that every event can name its process and parent even when the process has already exited
by the time user space reads the event (reading /proc then would race). A pid the table does
not know (started before the seed, or its fork was dropped) is read from procfs once on demand.
Bounded: past `max_entries` the least recently used entry goes.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from agent.events import ExecEvent, ExitEvent, ForkEvent, KernelEvent, ProcInfo
from agent.sensors.common import escape


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class ProcFS:
    """Reads one process from a procfs root (a fixture tree in tests)."""

    def __init__(self, root: str = "/proc"):
        self.root = root
        self._boot_ns = self._boot_time_ns()
        self._hz = os.sysconf("SC_CLK_TCK")

    def _boot_time_ns(self) -> int:
        stat = _read(os.path.join(self.root, "stat")) or b""
        for line in stat.splitlines():
            if line.startswith(b"btime "):
                return int(line.split()[1]) * 1_000_000_000
        return 0

    def pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self.root) if n.isdigit()]
        except OSError:
            return []

    def process(self, pid: int) -> ProcInfo | None:
        base = os.path.join(self.root, str(pid))
        stat = _read(os.path.join(base, "stat"))
        if not stat:
            return None
        # The comm field may hold spaces and parentheses: it ends at the last ')'.
        rparen = stat.rfind(b")")
        comm = escape(stat[stat.find(b"(") + 1 : rparen])  # the kernel strings' one escaping (sensors.common)
        fields = stat[rparen + 2 :].split()
        if len(fields) < 20:
            return None
        ppid = int(fields[1])
        start_ns = self._boot_ns + int(fields[19]) * 1_000_000_000 // self._hz if self._boot_ns else 0
        try:
            exe = escape(os.readlink(os.fsencode(os.path.join(base, "exe"))))
        except OSError:
            exe = ""  # kernel threads have none; so does a process we may not inspect
        cmdline = _read(os.path.join(base, "cmdline")) or b""
        argv = tuple(escape(a) for a in cmdline.rstrip(b"\0").split(b"\0") if cmdline)
        uid = -1
        for line in (_read(os.path.join(base, "status")) or b"").splitlines():
            if line.startswith(b"Uid:"):
                uid = int(line.split()[1])  # real uid, as bpf_get_current_uid_gid() reports
                break
        return ProcInfo(pid=pid, ppid=ppid, exe=exe, argv=argv, uid=uid, start_ns=start_ns, comm=comm)


class ProcessTable:
    def __init__(self, max_entries: int = 32768, procfs: ProcFS | None = None):
        if max_entries < 16:
            raise ValueError("the process table needs room for at least 16 processes")
        self.max_entries = max_entries
        self.procfs = procfs or ProcFS()
        self._t: OrderedDict[int, ProcInfo] = OrderedDict()
        self.evicted = 0
        self.procfs_reads = 0

    def __len__(self) -> int:
        return len(self._t)

    def seed(self) -> int:
        for pid in self.procfs.pids():
            info = self.procfs.process(pid)
            if info is not None:
                self._put(info)
        return len(self._t)

    def _put(self, info: ProcInfo) -> None:
        t = self._t
        t[info.pid] = info
        t.move_to_end(info.pid)
        while len(t) > self.max_entries:
            t.popitem(last=False)
            self.evicted += 1

    def get(self, pid: int) -> ProcInfo | None:
        info = self._t.get(pid)
        if info is None and pid > 0:
            self.procfs_reads += 1
            info = self.procfs.process(pid)
            if info is not None:
                self._put(info)
        return info

    def update(self, ev: KernelEvent) -> None:
        """Apply a process event. Call after the event itself was enriched (exit removes the pid)."""
        if isinstance(ev, ExecEvent):
            old = self._t.get(ev.pid)
            start = old.start_ns if old else ev.ts_ns
            self._put(ProcInfo(ev.pid, ev.ppid, ev.filename, ev.argv, ev.uid, start, ev.comm))
        elif isinstance(ev, ForkEvent):
            parent = self._t.get(ev.pid)
            if parent is not None:  # the child runs its parent's image until it execs
                self._put(ProcInfo(ev.child_pid, ev.pid, parent.exe, parent.argv, parent.uid, ev.ts_ns,
                                   parent.comm))
            else:
                self._put(ProcInfo(ev.child_pid, ev.pid, "", (), ev.uid, ev.ts_ns, ev.comm))
        elif isinstance(ev, ExitEvent):
            self._t.pop(ev.pid, None)

    def snapshot(self) -> list[ProcInfo]:
        return list(self._t.values())
