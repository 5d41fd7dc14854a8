"""Typed events that cross stages.

The op codes mirror `enum nw_op` in probes/events.h (keep in sync with probes/events.h;
tests/unit/test_records.py checks them). Sensors decode kernel records into these frozen
dataclasses; `enrich` wraps them in `Enriched` with the process, parent and container they
belong to; outputs turn an `Enriched` into one flat record (agent/outputs/record.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Op(IntEnum):
    EXEC = 1
    FORK = 2
    EXIT = 3
    FILE_OPEN = 10
    FILE_UNLINK = 11
    FILE_RENAME = 12
    FILE_CHMOD = 13
    FILE_CHOWN = 14
    NET_CONNECT = 20
    NET_ACCEPT = 21
    NET_BIND = 22
    NET_LISTEN = 23
    CGROUP_MKDIR = 30
    BENCH = 99


# The `event.name` each op is published under.
EVENT_NAMES: dict[Op, str] = {
    Op.EXEC: "process.exec",
    Op.FORK: "process.fork",
    Op.EXIT: "process.exit",
    Op.FILE_OPEN: "file.open",
    Op.FILE_UNLINK: "file.unlink",
    Op.FILE_RENAME: "file.rename",
    Op.FILE_CHMOD: "file.chmod",
    Op.FILE_CHOWN: "file.chown",
    Op.NET_CONNECT: "network.connect",
    Op.NET_ACCEPT: "network.accept",
    Op.NET_BIND: "network.bind",
    Op.NET_LISTEN: "network.listen",
    Op.CGROUP_MKDIR: "cgroup.mkdir",
    Op.BENCH: "bench.tick",
}


@dataclass(frozen=True, slots=True)
class KernelEvent:
    """Fields every kernel record carries (struct event_header)."""

    op: Op
    ts_ns: int  # wall clock, ns since the epoch (converted from CLOCK_BOOTTIME by the sensor)
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    cgroup_id: int
    mntns: int
    comm: str
    truncated: bool

    @property
    def name(self) -> str:
        return EVENT_NAMES[self.op]


@dataclass(frozen=True, slots=True)
class ExecEvent(KernelEvent):
    filename: str
    argv: tuple[str, ...]
    action: int = 0  # enum nw_action: 0 none, 1 a runtime rule matched (alert), 2 killed in the kernel
    rule: int = 0  # (enum nw_reason << 16) | rule index, when action != 0


@dataclass(frozen=True, slots=True)
class ForkEvent(KernelEvent):
    child_pid: int


@dataclass(frozen=True, slots=True)
class ExitEvent(KernelEvent):
    exit_code: int  # the status passed to exit(), valid when signal == 0
    signal: int  # the signal that killed the process, 0 if it exited


@dataclass(frozen=True, slots=True)
class FileEvent(KernelEvent):
    path: str
    path2: str  # rename: the new path, else ""
    ret: int
    flags: int
    mode: int
    dirfd: int
    fd: int
    owner_uid: int
    owner_gid: int


@dataclass(frozen=True, slots=True)
class NetEvent(KernelEvent):
    ret: int
    fd: int
    family: str  # "ipv4", "ipv6", "unix", or "" when unknown
    transport: str  # "tcp", "udp", "unix", "raw" or ""
    address: str  # peer (connect/accept) or local (bind/listen) address; unix: the path
    port: int
    backlog: int


@dataclass(frozen=True, slots=True)
class CgroupEvent(KernelEvent):
    """A cgroup v2 directory was created (internal: feeds the container resolver, not printed)."""

    new_cgroup_id: int
    level: int
    path: str


@dataclass(frozen=True, slots=True)
class BenchEvent(KernelEvent):
    counter: int


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """An event the agent makes itself: agent.ready, agent.drops, ..."""

    name: str
    ts_ns: int
    attrs: dict = field(default_factory=dict)
    severity: str = "info"


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """What the process table knows of one process."""

    pid: int
    ppid: int
    exe: str
    argv: tuple[str, ...]
    uid: int
    start_ns: int  # wall clock ns; 0 when unknown
    comm: str = ""


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the container resolver knows of one container (filled by agent/enrich)."""

    id: str
    name: str = ""
    image: str = ""
    image_digest: str = ""
    runtime: str = "containerd"
    namespace: str = ""  # containerd namespace
    pod_name: str = ""
    pod_namespace: str = ""
    # Filled by agent/enrich/containerd.py. labels: the containerd labels as sorted (key, value)
    # pairs, a tuple so the record stays immutable and hashable.
    labels: tuple[tuple[str, str], ...] = ()
    pid: int = 0  # init process of the task, 0 when there is no task
    cgroup_id: int = 0  # inode of the task's cgroup2 directory = bpf_get_current_cgroup_id()
    cgroup_path: str = ""  # relative to the cgroup2 mount
    mntns: int = 0  # inode of the task's mount namespace (fallback key)
    created_ns: int = 0  # container record created, wall clock ns
    started_ns: int = 0  # task started, wall clock ns
    state: str = ""  # "", created, running, stopped, deleted (kept a while for late events)


@dataclass(frozen=True, slots=True)
class Enriched:
    """A kernel event with its process, parent and container, as enrich saw them."""

    event: KernelEvent
    process: ProcInfo | None
    parent: ProcInfo | None
    container: ContainerInfo | None = None
