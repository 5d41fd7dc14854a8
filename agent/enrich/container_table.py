"""The container table: containerd's containers keyed by the ids kernel events carry.

Kernel events carry the cgroup id captured in BPF (`bpf_get_current_cgroup_id()`) and the mount
namespace inode; the table maps both to a frozen `ContainerInfo`. Readers (the enrich stage, on every
event) take one lock and one dict lookup and get a prebuilt record, no allocation. The writer is the
containerd watcher (agent/enrich/containerd.py).

Deleted containers stay a while (`tombstone_ttl`) as state "deleted", because kernel events of a
short-lived container are often read after containerd already reported it gone. Their mount
namespace is unindexed at once: nsfs inode numbers are reused, cgroup ids are not.

Memory is bounded: at most `max_containers` live entries (a node runs a few hundred) and
`max_deleted` tombstones; a few cgroup ids per entry (a restarted task gets a new cgroup directory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.events import ContainerInfo
from agent.ratelog import RateLog

log = logging.getLogger("nodewarden.containers")

# CRI (containerd's Kubernetes plugin) sets these on every pod container and sandbox.
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
# nerdctl names its containers with this label; plain `ctr` containers have no name.
LABEL_NERDCTL_NAME = "nerdctl/name"

_MAX_LABELS = 256  # per container: labels come from users, a huge set must not cost unbounded memory
_MAX_LABEL_LEN = 4096
_MAX_CGROUPS_PER_ENTRY = 4
_MAX_EXECS_PER_ENTRY = 64
_MAX_NOTED_CGROUPS = 8192

Listener = Callable[[str, ContainerInfo], None]


def clean_labels(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Labels as sorted (key, value) pairs, bounded in count and length; junk entries dropped."""
    if not labels:
        return ()
    out = []
    try:
        items = list(labels.items())
    except (AttributeError, TypeError):
        return ()
    for k, v in items:
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            continue
        out.append((k[:_MAX_LABEL_LEN], v[:_MAX_LABEL_LEN]))
    out.sort()
    return tuple(out[:_MAX_LABELS])


def k8s_fields(labels: Mapping[str, str] | None) -> tuple[str, str, str]:
    """(container name, pod name, pod namespace) from CRI labels; "" for each one absent."""
    labels = labels or {}
    get = labels.get if hasattr(labels, "get") else dict(labels).get
    name = get(LABEL_CONTAINER_NAME) or get(LABEL_NERDCTL_NAME) or ""
    return str(name), str(get(LABEL_POD_NAME) or ""), str(get(LABEL_POD_NAMESPACE) or "")


@dataclass
class Entry:
    """One container as the watcher builds it (mutable; the table keeps it under its lock)."""

    namespace: str
    id: str
    image: str = ""
    image_digest: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    spec_cgroup_path: str = ""  # from the OCI spec's linux.cgroupsPath, before any task exists
    pid: int = 0
    cgroup_path: str = ""
    cgroup_id: int = 0
    mntns: int = 0
    created_ns: int = 0
    started_ns: int = 0
    state: str = ""
    execs: dict[str, int] = field(default_factory=dict)  # exec id -> pid (0 until started)
    old_cgroups: list[int] = field(default_factory=list)
    deleted_at: float = 0.0  # monotonic, 0 while alive

    def info(self) -> ContainerInfo:
        name, pod, pod_ns = k8s_fields(dict(self.labels))
        return ContainerInfo(
            id=self.id,
            name=name,
            image=self.image,
            image_digest=self.image_digest,
            namespace=self.namespace,
            pod_name=pod,
            pod_namespace=pod_ns,
            labels=self.labels,
            pid=self.pid,
            cgroup_id=self.cgroup_id,
            cgroup_path=self.cgroup_path,
            mntns=self.mntns,
            created_ns=self.created_ns,
            started_ns=self.started_ns,
            state=self.state,
        )


class ContainerTable:
    """Thread-safe map of containers, looked up by cgroup id or mount namespace."""

    def __init__(self, max_containers: int = 16384, max_deleted: int = 4096, tombstone_ttl: float = 120.0):
        self.max_containers = max(1, max_containers)
        self.max_deleted = max(0, max_deleted)
        self.tombstone_ttl = tombstone_ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], Entry] = {}
        self._infos: dict[tuple[str, str], ContainerInfo] = {}
        self._by_cgroup: dict[int, tuple[str, str]] = {}
        self._by_mntns: dict[int, tuple[str, str]] = {}
        self._by_path: dict[str, tuple[str, str]] = {}  # cgroup path (spec's or the task's) -> key
        self._noted: OrderedDict[str, int] = OrderedDict()  # path -> id, told by note_cgroup()
        self._deleted: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> deleted_at, oldest first
        self._listeners: list[Listener] = []
        self._counters = {"refused_full": 0, "listener_errors": 0, "expired": 0}
        self._rlog = RateLog(log)

    # --- readers: called on every kernel event, keep them a lock and a dict lookup --------------

    def lookup_by_cgroup(self, cgroup_id: int) -> ContainerInfo | None:
        if not cgroup_id:
            return None
        with self._lock:
            key = self._by_cgroup.get(cgroup_id)
            return self._infos.get(key) if key else None

    def lookup_by_mntns(self, inode: int) -> ContainerInfo | None:
        if not inode:
            return None
        with self._lock:
            key = self._by_mntns.get(inode)
            return self._infos.get(key) if key else None

    def cgroup_for_path(self, path: str) -> int:
        """The id note_cgroup() was told for a cgroup path; 0 when never told."""
        with self._lock:
            return self._noted.get(path, 0)

    def note_cgroup(self, path: str, cgroup_id: int) -> ContainerInfo | None:
        """A cgroup was created: path relative to the cgroup2 root, id its inode (kernfs id).

        Fed from the cgroup:cgroup_mkdir tracepoint (the pipeline's cgroup probe) and from the watcher's
        fanotify notifier (agent/enrich/cgroupnotify.py) to make attribution race-free: the watcher
        learns a cgroup id by stat() after containerd's event, and a container living a few ms may
        have had its cgroup removed by then on a loaded node. Returns the record of
        the container this completed, if any."""
        if not path or not cgroup_id:
            return None
        with self._lock:
            self._noted[path] = cgroup_id
            self._noted.move_to_end(path)
            while len(self._noted) > _MAX_NOTED_CGROUPS:
                self._noted.popitem(last=False)
            key = self._by_path.get(path)
            entry = self._entries.get(key) if key else None
            if entry is None or entry.deleted_at or entry.cgroup_id == cgroup_id:
                return None
            set_cgroup(entry, path, cgroup_id)
            info = self._reindex(key, entry)
        self._notify("task", info)
        return info

    def lookup(self, namespace: str, container_id: str) -> ContainerInfo | None:
        with self._lock:
            return self._infos.get((namespace, container_id))

    def snapshot(self, include_deleted: bool = False) -> list[ContainerInfo]:
        """Every container, sorted by namespace and id; tombstones only when asked."""
        with self._lock:
            infos = [i for i in self._infos.values() if include_deleted or i.state != "deleted"]
        return sorted(infos, key=lambda i: (i.namespace, i.id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) - len(self._deleted)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "containers": len(self._entries) - len(self._deleted),
                "deleted": len(self._deleted),
                "cgroups": len(self._by_cgroup),
                **self._counters,
            }

    # --- listeners ------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call fn(kind, info) after each change: kind is "container" (record known), "task" (task pid
        and cgroup id known: buffered events of that cgroup can be resolved now), "exec" (a process
        added with exec started), "exit", "delete". Called on the watcher thread, outside the lock:
        keep it short. Exceptions are caught and counted."""
        with self._lock:
            self._listeners = [*self._listeners, fn]

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self, kind: str, info: ContainerInfo | None) -> None:
        if info is None:
            return
        for fn in self._listeners:  # a copy-on-write list: no lock needed to iterate
            try:
                fn(kind, info)
            except Exception:  # a listener bug must not stop the watcher
                self._counters["listener_errors"] += 1
                self._rlog.exception("listener", "container table listener failed (counted in listener_errors)")

    # --- writers: the watcher -------------------------------------------------------------------

    def update(
        self, namespace: str, container_id: str, fn: Callable[[Entry], str | None], revive: bool = False
    ) -> ContainerInfo | None:
        """Create or change one entry with fn(entry) under the lock; fn returns the listener kind to
        send (or None). revive: a tombstone of that id is a new container now (an id reused after a
        delete). Returns the new record, or None when the table is full."""
        key = (namespace, container_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.deleted_at and revive:
                old_cgroups = [c for c in (*entry.old_cgroups, entry.cgroup_id) if c]
                self._deleted.pop(key, None)
                entry = Entry(
                    namespace=namespace, id=container_id, old_cgroups=old_cgroups[-_MAX_CGROUPS_PER_ENTRY:]
                )
                self._entries[key] = entry
            if entry is None:
                if len(self._entries) - len(self._deleted) >= self.max_containers:
                    self._counters["refused_full"] += 1
                    return None
                entry = Entry(namespace=namespace, id=container_id)
                self._entries[key] = entry
            kind = fn(entry)
            info = self._reindex(key, entry)
        if kind:
            self._notify(kind, info)
        return info

    def get_entry(self, namespace: str, container_id: str) -> Entry | None:
        """A copy of the watcher's entry (for decisions outside the lock)."""
        with self._lock:
            e = self._entries.get((namespace, container_id))
            if e is None:
                return None
            return Entry(**{**e.__dict__, "execs": dict(e.execs), "old_cgroups": list(e.old_cgroups)})

    def mark_deleted(self, namespace: str, container_id: str) -> ContainerInfo | None:
        key = (namespace, container_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.deleted_at:
                return None
            entry.state, entry.deleted_at = "deleted", time.monotonic()
            entry.execs.clear()
            info = self._reindex(key, entry)
            self._deleted[key] = entry.deleted_at
            self._evict_deleted(time.monotonic())
        self._notify("delete", info)
        return info

    def replace_all(self, entries: Iterable[Entry]) -> int:
        """Make the table what a fresh listing says (after a (re)connect): entries absent from it are
        tombstoned, the rest replaced. Returns how many are live."""
        fresh = {(e.namespace, e.id): e for e in entries}
        now = time.monotonic()
        with self._lock:
            for key, old in list(self._entries.items()):
                if key not in fresh and not old.deleted_at:
                    old.state, old.deleted_at = "deleted", now
                    self._deleted[key] = now
                    self._reindex(key, old)
            for key, e in list(fresh.items())[: self.max_containers]:
                old = self._entries.get(key)
                if old is not None:
                    if old.cgroup_id and old.cgroup_id != e.cgroup_id:
                        e.old_cgroups = [*old.old_cgroups, old.cgroup_id][-_MAX_CGROUPS_PER_ENTRY:]
                    self._deleted.pop(key, None)
                self._entries[key] = e
                self._reindex(key, e)
            self._counters["refused_full"] += max(0, len(fresh) - self.max_containers)
            self._evict_deleted(now)
            infos = [self._infos[k] for k in fresh if k in self._infos]
        for info in infos:
            self._notify("task" if info.cgroup_id else "container", info)
        return len(infos)

    def expire(self) -> int:
        """Drop tombstones older than the TTL; returns how many."""
        with self._lock:
            return self._evict_deleted(time.monotonic())

    # --- internals, lock held -------------------------------------------------------------------

    def _reindex(self, key: tuple[str, str], entry: Entry) -> ContainerInfo:
        """Rebuild the cached record and the indexes of one entry."""
        info = entry.info()
        self._infos[key] = info
        for cg in (entry.cgroup_id, *entry.old_cgroups):
            if cg:
                self._by_cgroup[cg] = key
        for p in (entry.spec_cgroup_path, entry.cgroup_path):
            if p:
                self._by_path[p] = key
        if entry.mntns:
            if entry.deleted_at or entry.state == "stopped":
                # The namespace dies with the task and its inode number may be given to a new one.
                if self._by_mntns.get(entry.mntns) == key:
                    del self._by_mntns[entry.mntns]
            else:
                self._by_mntns[entry.mntns] = key
        return info

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        self._infos.pop(key, None)
        self._deleted.pop(key, None)
        if entry is None:
            return
        for cg in (entry.cgroup_id, *entry.old_cgroups):
            if self._by_cgroup.get(cg) == key:
                del self._by_cgroup[cg]
        if entry.mntns and self._by_mntns.get(entry.mntns) == key:
            del self._by_mntns[entry.mntns]
        for p in (entry.spec_cgroup_path, entry.cgroup_path):
            if self._by_path.get(p) == key:
                del self._by_path[p]

    def _evict_deleted(self, now: float) -> int:
        n = 0
        while self._deleted:
            key, at = next(iter(self._deleted.items()))
            if len(self._deleted) <= self.max_deleted and now - at < self.tombstone_ttl:
                break
            self._drop(key)
            n += 1
        self._counters["expired"] += n
        return n


def add_exec(entry: Entry, exec_id: str, pid: int) -> None:
    """Record an exec'd process on an entry, bounded (oldest forgotten first)."""
    if exec_id not in entry.execs and len(entry.execs) >= _MAX_EXECS_PER_ENTRY:
        entry.execs.pop(next(iter(entry.execs)))
    entry.execs[exec_id] = pid


def set_cgroup(entry: Entry, path: str, cgroup_id: int) -> None:
    """A task's cgroup; the previous id stays indexed (late events of the old task still resolve)."""
    if entry.cgroup_id and cgroup_id and entry.cgroup_id != cgroup_id:
        entry.old_cgroups = [*entry.old_cgroups, entry.cgroup_id][-_MAX_CGROUPS_PER_ENTRY:]
    entry.cgroup_path = path or entry.cgroup_path
    entry.cgroup_id = cgroup_id or entry.cgroup_id
