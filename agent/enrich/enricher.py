"""The enrich stage: attach to each kernel event its process, its parent and its container."""

from __future__ import annotations

import posixpath
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from agent.enrich.proctable import ProcessTable
from agent.events import (
    CgroupEvent,
    ContainerInfo,
    Enriched,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    KernelEvent,
    ProcInfo,
)
from agent.sensors.native import enriched_maker

# Enriched(event, process, parent, container, ancestors, path_resolved), made by the compiled helper when
# built (agent/sensors/native.py): the dataclass's own __init__ was ~0.45 us of every event's enrich.
_make = enriched_maker()
_PROCESS_EVENTS = (ExecEvent, ForkEvent, ExitEvent)

UNKNOWN = ContainerInfo(id="unknown", runtime="")
AT_FDCWD = -100  # file_event.dirfd of a call relative to the cwd

# The last element of a cgroup path that names a container: a 64-hex id (CRI, nerdctl, docker),
# bare or as a systemd scope (cri-containerd-<id>.scope, docker-<id>.scope).
_CONTAINER_LEAF = re.compile(r"^(?:[a-z-]+-)?([0-9a-f]{64})(?:\.scope)?$")


class ContainerResolver:
    """Attributes a kernel event to a container by the cgroup id captured in the kernel, then by
    its mount namespace (agent/enrich/container_table.py keeps both indexes).

    The cgroup probe tells us every cgroup v2 directory as it is created, before any event from a
    process inside it; the table learns the container from containerd a little later. Events from a
    cgroup created less than `young_s` ago that the table does not know yet are held by the
    pipeline for up to `hold_s` and resolved again (agent/enrich/hold.py)."""

    def __init__(self, table, young_s: float = 5.0, max_young: int = 4096,
                 behind: Callable[[], bool] | None = None):
        self.table = table
        # True while the watcher has containerd events still to apply (ContainerWatcher.behind)
        self.behind = behind or (lambda: False)
        self.young_s = young_s
        self.max_young = max_young
        self._young: OrderedDict[int, tuple[str, float]] = OrderedDict()  # cgroup id -> (path, created)

    def resolve(self, ev: KernelEvent) -> ContainerInfo | None:
        info = self.table.lookup_by_cgroup(ev.cgroup_id)
        if info is not None:
            return info
        info = self.table.lookup_by_mntns(ev.mntns)
        if info is None or not info.cgroup_path:
            return info
        # nsfs reuses inode numbers: a container that just stopped (the watcher not told yet) may hold
        # the inode a new container's mount namespace now has. A process of that container lives in its
        # cgroup or below it; an event from a cgroup created elsewhere is not its (seen under load: a
        # neighbour's container named after one of ours).
        path = self._young.get(ev.cgroup_id, ("", 0.0))[0]
        if path and path != info.cgroup_path and not path.startswith(info.cgroup_path.rstrip("/") + "/"):
            return None
        return info

    def note_cgroup(self, ev: CgroupEvent) -> None:
        self.table.note_cgroup(ev.path, ev.new_cgroup_id)
        young = self._young
        young[ev.new_cgroup_id] = (ev.path, time.monotonic())
        while len(young) > self.max_young:
            young.popitem(last=False)

    def young_cgroups(self) -> dict:
        """cgroup id -> (path, created) of the cgroups noted lately (a bounded dict, live): the pipeline's
        compiled loop leaves an event of one of them to is_young() and the hold."""
        return self._young

    def is_young(self, cgroup_id: int) -> bool:
        """True when the cgroup was created moments ago: its container may not be known yet."""
        entry = self._young.get(cgroup_id)
        return entry is not None and time.monotonic() - entry[1] < self.young_s

    def fallback(self, cgroup_id: int) -> ContainerInfo | None:
        """After the hold: `unknown` when the cgroup's path names a container, else None (a host process)."""
        path = self._young.get(cgroup_id, ("", 0.0))[0]
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None
        if _CONTAINER_LEAF.match(parts[-1]):
            return UNKNOWN
        # Runtimes nest containers (/<containerd namespace>/<id> for ctr and the containerd API,
        # /kubepods/..., /docker/<id>); systemd keeps host services and sessions under *.slice.
        if len(parts) >= 2 and not parts[0].endswith(".slice") and parts[0] != "init.scope":
            return UNKNOWN
        return None


class Enricher:
    def __init__(self, table: ProcessTable, containers: ContainerResolver | None = None):
        self.table = table
        self.containers = containers

    def enrich(self, ev: KernelEvent) -> Enriched:
        table = self.table
        if isinstance(ev, ExecEvent):
            table.update(ev)  # the exec event describes the new image: record it first
            proc = table.get(ev.pid)
            parent = table.get(ev.ppid) if ev.ppid else None
            ancestors = self._ancestors(ev, proc, parent)
        else:
            proc = table.get(ev.pid)
            parent = table.get(ev.ppid) if ev.ppid else None
            ancestors = self._ancestors(ev, proc, parent)  # before exit forgets the pid
            table.update(ev)  # fork adds the child, exit removes the pid: after the lookup
        container = self.containers.resolve(ev) if self.containers is not None else None
        resolved = _resolve(ev, proc) if isinstance(ev, FileEvent) else ""
        return _make(ev, proc, parent, container, ancestors, resolved)

    def enrich_in_batch(self, ev: KernelEvent, memo: dict) -> Enriched:
        """enrich() for the events of one batch, in order, `memo` being the batch's own (empty at its start).

        Most events are not process events (file, net, system) and come in runs from one process; what the
        table and the container resolver say of one (pid, ppid, cgroup, mount namespace) cannot change
        within the batch except by a process event or a cgroup record (the pipeline clears the memo at
        those), so it is asked once per batch and taken again. A process event of pid X (an exec or exit
        of X, a fork whose child is X) forgets what the memo holds of X, of X's children and of every
        process with X in its ancestry: what the table now says of those may differ; of the others it
        says the same (an ancestry cache the table dropped is rebuilt equal). The one difference
        from enrich(): a container the watcher thread adds while a batch is worked on is seen from the next
        batch (a batch takes about a millisecond), as if the batch had come that much earlier; an event
        of a young cgroup without its container is held (agent/enrich/hold.py) and resolved again anyway.
        The pipeline asks the compiled memo reader first (agent/sensors/_native.c from_memo: a file or net
        event's hit whose path needs no cwd), which makes what the hit branch below makes."""
        table = self.table
        resets = table.chain_resets + table.evicted
        if isinstance(ev, _PROCESS_EVENTS):
            if memo:
                pid = ev.child_pid if isinstance(ev, ForkEvent) else ev.pid
                _forget(memo, pid, table.in_some_chain(pid))
            en = self.enrich(ev)
            if table.chain_resets + table.evicted != resets:
                memo.clear()  # the table dropped a process or its cached ancestries: see below
            # An exec's context is its process's from now on (the table's entry made from it, its ancestry
            # as the table now has it), a fork's is its parent's, unchanged by the child unless the child's
            # pid is one it names (a reused pid): what the memo would get at the process's next event, which
            # the compiled reader then takes (one follows most execs). Not an exit's: its ancestry was read
            # before the table forgot the pid.
            kind = type(ev)
            if en.process is not None and (kind is ExecEvent or (kind is ForkEvent and not _names(en, ev.child_pid))):
                memo[(ev.pid, ev.ppid, ev.cgroup_id, ev.mntns)] = en
            return en
        key = (ev.pid, ev.ppid, ev.cgroup_id, ev.mntns)
        hit = memo.get(key)
        if hit is None:
            en = self.enrich(ev)
            if table.chain_resets + table.evicted != resets:
                # The table dropped its cached ancestries (a pid some chain holds changed, or the cache was
                # full), or a process (full): a chain rebuilt now can be longer than the cached one was (it
                # had stopped at a pid the table did not know then), an evicted process is read from procfs
                # again, so what the memo holds is forgotten as the table forgot it.
                memo.clear()
            if en.process is not None:  # an unknown pid is asked again (procfs), as enrich() would
                memo[key] = en
            return en
        p = hit.process
        resolved = _resolve(ev, p) if isinstance(ev, FileEvent) else ""
        return _make(ev, p, hit.parent, hit.container, hit.ancestors, resolved)

    def _ancestors(self, ev: KernelEvent, proc: ProcInfo | None, parent: ProcInfo | None) -> tuple[ProcInfo, ...]:
        if parent is None:
            return ()
        if proc is not None and proc.ppid == ev.ppid:
            return self.table.ancestors(ev.pid)  # cached per pid: the common case costs one lookup
        # The kernel's parent differs from the table's (reparented, or the fork was not seen): its chain.
        return ((parent,) + self.table.ancestors(parent.pid))[: self.table.ancestry_max]


def _names(en: Enriched, pid: int) -> bool:
    """The context names `pid`: its process, its parent or an ancestor."""
    ev = en.event
    return ev.pid == pid or ev.ppid == pid or any(a.pid == pid for a in en.ancestors)


def _forget(memo: dict, pid: int, in_chains: bool) -> None:
    """enrich_in_batch's memo without what a process event of `pid` may have changed. An entry's ancestry
    is its parent (the key's ppid) and a chain the table cached; the memo is forgotten whenever the table
    drops its chains, so a pid that no cached chain holds (`in_chains` False: most execs and exits are of
    leaves, a fork's child is new) can only be in a key."""
    if not in_chains:
        stale = [key for key in memo if key[0] == pid or key[1] == pid]
    else:
        stale = [key for key, en in memo.items()
                 if key[0] == pid or key[1] == pid or any(a.pid == pid for a in en.ancestors)]
    for key in stale:
        del memo[key]


def _resolve(ev: FileEvent, proc: ProcInfo | None) -> str:
    """A relative path of a call relative to the cwd (dirfd AT_FDCWD), joined to the cwd the kernel
    sent with it (FileEvent.cwd), else (a rename) the process's cwd as the table knows it (from its exec,
    inherited at fork, or /proc at seed; a chdir since is not seen there).
    `..` is collapsed lexically, as Falco's fd.name is; a symlinked directory may name another file."""
    path = ev.path
    if not path or path[0] == "/" or ev.dirfd != AT_FDCWD:
        return ""
    cwd = ev.cwd or (proc.cwd if proc is not None else "")  # the kernel's at the call, else the table's
    if not cwd:
        return ""
    return posixpath.normpath(posixpath.join(cwd, path))
