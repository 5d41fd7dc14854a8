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
from agent.sensors.native import procinfo_maker

# ProcInfo(pid, ppid, exe, argv, uid, start_ns, comm, cwd), all eight given: made by the compiled helper when
# built (agent/sensors/native.py), one per exec and fork (the dataclass's __init__ was ~0.6 us of each)
_proc = procinfo_maker()


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
        try:
            cwd = escape(os.readlink(os.fsencode(os.path.join(base, "cwd"))))
        except OSError:
            cwd = ""
        return ProcInfo(pid=pid, ppid=ppid, exe=exe, argv=argv, uid=uid, start_ns=start_ns, comm=comm, cwd=cwd)


class ProcessTable:
    """pid -> ProcInfo, and each pid's ancestry.

    Ancestry (`ancestors`) is cached per pid: a process's chain is its parent plus the parent's chain,
    so a new process costs one lookup and a tuple. A chain holds the ProcInfo its ancestors had when it
    was built, so it is dropped when its own pid execs or exits, and every chain is dropped when a pid
    that appears in some chain execs or exits (cheap: a shell's exit, not its children's execs)."""

    def __init__(self, max_entries: int = 32768, procfs: ProcFS | None = None, ancestry_max: int = 8):
        if max_entries < 16:
            raise ValueError("the process table needs room for at least 16 processes")
        if ancestry_max < 0:
            raise ValueError("agent.ancestry_max must be 0 or more")
        self.max_entries = max_entries
        self.ancestry_max = ancestry_max
        self.procfs = procfs or ProcFS()
        self._t: OrderedDict[int, ProcInfo] = OrderedDict()
        # The last processes that exited, for lookups only: a child's event can follow its parent's exit
        # record with that parent's pid (the exit tracepoint fires before the kernel reparents the children;
        # seen with `runc exec`, whose runc exits as the exec'd shell starts). A live entry always wins.
        self._gone: OrderedDict[int, ProcInfo] = OrderedDict()
        self.gone_max = min(1024, max_entries)
        self._chains: dict[int, tuple[ProcInfo, ...]] = {}
        self._in_chains: set[int] = set()  # pids some cached chain holds
        self.evicted = 0
        self.procfs_reads = 0
        self.chain_builds = 0  # ancestry cache misses, for tests and metrics
        self.chain_resets = 0  # times every cached chain was dropped (the batch memo follows: enricher.py)

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

    def get(self, pid: int, gone: bool = True) -> ProcInfo | None:
        """pid's entry: live, else (gone=True) recently exited, else read from procfs once."""
        info = self._t.get(pid)
        if info is None and gone:
            info = self._gone.get(pid)
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
            self._put(_proc(ev.pid, ev.ppid, ev.filename, ev.argv, ev.uid, start, ev.comm, ev.cwd))
            self._forget_chain(ev.pid)
        elif isinstance(ev, ForkEvent):
            parent = self._t.get(ev.pid)
            if parent is not None:  # the child runs its parent's image, in its cwd, until it execs
                self._put(_proc(ev.child_pid, ev.pid, parent.exe, parent.argv, parent.uid, ev.ts_ns,
                                parent.comm, parent.cwd))
            else:
                self._put(_proc(ev.child_pid, ev.pid, "", (), ev.uid, ev.ts_ns, ev.comm, ""))
            self._chains.pop(ev.child_pid, None)  # a reused pid's old chain
            self._gone.pop(ev.child_pid, None)  # and what it was before
        elif isinstance(ev, ExitEvent):
            info = self._t.pop(ev.pid, None)
            self._forget_chain(ev.pid)
            if info is not None:
                gone = self._gone
                gone[ev.pid] = info
                gone.move_to_end(ev.pid)
                if len(gone) > self.gone_max:
                    gone.popitem(last=False)

    # -- ancestry ------------------------------------------------------------------------------------

    def ancestors(self, pid: int) -> tuple[ProcInfo, ...]:
        """pid's ancestors, parent first, at most ancestry_max, as the table knows them (a pid it does
        not know is read from procfs once, as get() does)."""
        chain = self._chains.get(pid)
        if chain is not None:
            return chain
        chain = self._build_chain(pid)
        if len(self._chains) >= self.max_entries:
            self._chains.clear()
            self._in_chains.clear()
            self.chain_resets += 1
        self._chains[pid] = chain
        self._in_chains.update(p.pid for p in chain)
        return chain

    def _build_chain(self, pid: int) -> tuple[ProcInfo, ...]:
        self.chain_builds += 1
        limit = self.ancestry_max
        info = self._t.get(pid)
        if info is None or limit == 0 or info.ppid <= 0 or info.ppid == pid:
            return ()
        parent = self.get(info.ppid)
        if parent is None:
            return ()
        above = self._chains.get(parent.pid)
        if above is not None:  # the usual case: the parent's chain is known
            return ((parent,) + above)[:limit]
        out, seen = [parent], {pid, parent.pid}
        while len(out) < limit:
            up = out[-1].ppid
            if up <= 0 or up in seen:  # pid 0 above init and kthreadd; a loop left by pid reuse
                break
            # Above the parent, live processes only: an exited starter (a daemon's double fork, the shim's
            # `start`) would make a chain's length depend on how recently it exited.
            nxt = self.get(up, gone=False)
            if nxt is None:
                break
            seen.add(up)
            out.append(nxt)
        return tuple(out)

    def in_some_chain(self, pid: int) -> bool:
        """Whether a chain cached since the last time every chain was dropped (chain_resets) held `pid`."""
        return pid in self._in_chains

    def _forget_chain(self, pid: int) -> None:
        self._chains.pop(pid, None)
        if pid in self._in_chains:  # some chain holds what this pid was: rebuild them as needed
            self._chains.clear()
            self._in_chains.clear()
            self.chain_resets += 1

    def snapshot(self) -> list[ProcInfo]:
        return list(self._t.values())
