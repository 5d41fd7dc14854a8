"""Typed events that cross stages.

The op codes mirror `enum nw_op` in probes/events.h (keep in sync with probes/events.h;
tests/unit/test_records.py checks them). Sensors decode kernel records into these frozen
dataclasses; `enrich` wraps them in `Enriched` with the process, parent and container they
belong to; outputs turn an `Enriched` into one flat record (agent/outputs/record.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import ClassVar

from agent.vocab import Severity


class Op(IntEnum):
    EXEC = 1
    FORK = 2
    EXIT = 3
    FILE_OPEN = 10
    FILE_UNLINK = 11
    FILE_RENAME = 12
    FILE_CHMOD = 13
    FILE_CHOWN = 14
    FILE_SYMLINK = 15
    FILE_LINK = 16
    FILE_CLOSE = 17
    NET_CONNECT = 20
    NET_ACCEPT = 21
    NET_BIND = 22
    NET_LISTEN = 23
    NET_SOCKET = 24
    NET_DUP = 25
    NET_SENDTO = 26
    CGROUP_MKDIR = 30
    PTRACE = 40
    SETUID = 41
    SETGID = 42
    CAPSET = 43
    MODULE_LOAD = 44
    MOUNT = 45
    UMOUNT = 46
    UNSHARE = 47
    SETNS = 48
    BPF_LOAD = 49
    MEMFD_CREATE = 50
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
    Op.FILE_SYMLINK: "file.symlink",
    Op.FILE_LINK: "file.link",
    Op.FILE_CLOSE: "file.close",
    Op.NET_CONNECT: "network.connect",
    Op.NET_ACCEPT: "network.accept",
    Op.NET_BIND: "network.bind",
    Op.NET_LISTEN: "network.listen",
    Op.NET_SOCKET: "network.socket",
    Op.NET_DUP: "network.dup",
    Op.NET_SENDTO: "network.sendto",
    Op.CGROUP_MKDIR: "cgroup.mkdir",
    # The system family: one record type (SysEvent), one event.name prefix.
    Op.PTRACE: "system.ptrace",
    Op.SETUID: "system.setuid",
    Op.SETGID: "system.setgid",
    Op.CAPSET: "system.capset",
    Op.MODULE_LOAD: "system.module_load",
    Op.MOUNT: "system.mount",
    Op.UMOUNT: "system.umount",
    Op.UNSHARE: "system.unshare",
    Op.SETNS: "system.setns",
    Op.BPF_LOAD: "system.bpf_load",
    Op.MEMFD_CREATE: "system.memfd_create",
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
    exe_ino: int = 0  # inode of the new executable (mm->exe_file), 0 when the kernel could not read it
    exe_dev: int = 0  # its device as stat(2) gives st_dev (the sensor converts the kernel's s_dev)
    # What the kernel says runs (issue 10), from mm->exe_file's dentry chain across mounts:
    kernel_path: str = ""  # as /proc/<pid>/exe reads: "/memfd:x (deleted)", "/tmp/a (deleted)"
    memfd: bool = False  # the file is a memfd (fileless exec)
    deleted: bool = False  # the file has no name left (unlinked, or a memfd)
    upper_layer: bool = False  # on overlayfs, in the upper (writable) layer: not from the image
    exe_mnt_id: int = 0  # mount id of its mount (/proc/<pid>/mountinfo's first column)
    cwd: str = ""  # the task's working directory at exec (task->fs->pwd)


@dataclass(frozen=True, slots=True)
class ForkEvent(KernelEvent):
    child_pid: int


@dataclass(frozen=True, slots=True)
class ExitEvent(KernelEvent):
    exit_code: int  # the status passed to exit(), valid when signal == 0
    signal: int  # the signal that killed the process, 0 if it exited


@dataclass(frozen=True, slots=True)
class FileEvent(KernelEvent):
    path: str  # symlink, link: the new name
    path2: str  # rename: the new path; symlink: what the link points to; link: the existing file; else ""
    ret: int
    flags: int
    mode: int
    dirfd: int
    fd: int
    owner_uid: int
    owner_gid: int
    cwd: str = ""  # the caller's cwd at the call when path is relative to it (not for rename), else ""


@dataclass(frozen=True, slots=True)
class NetEvent(KernelEvent):
    ret: int
    fd: int
    family: str  # "ipv4", "ipv6", "unix", or "" when unknown
    transport: str  # "tcp", "udp", "unix", "raw" or ""
    address: str  # peer (connect/accept/sendto/dup) or local (bind/listen) address; unix: the path
    port: int
    backlog: int
    fd2: int = -1  # dup: the new fd (0, 1 or 2)
    protocol: int = 0  # socket: the protocol argument as the caller passed it


@dataclass(frozen=True, slots=True)
class SysEvent(KernelEvent):
    """One call of the system family (probes/system.bpf.c); which members mean what depends on op
    (enum nw_op in probes/events.h). uid/gid are the caller's before the call."""

    ret: int
    call: str  # the syscall that made it: "setresuid", "finit_module", ... ("syscall<N>" if unknown)
    arg: int  # ptrace: request; setns: nstype; bpf_load: program type; else the call's flags
    target_pid: int = -1  # ptrace, capset: the target pid (0 = self)
    # setuid/setgid: real, effective, saved as the call asks (-1 = unchanged); setns: (fd, -1, -1)
    ids: tuple[int, int, int] = (-1, -1, -1)
    caps: tuple[int, int, int] = (0, 0, 0)  # capset: effective, permitted, inheritable bit masks
    # The call's string argument (not `name`: that is every record's event.name): mount/umount: the target;
    # module_load: the module file; bpf_load: the program's name; memfd_create: the memfd's name.
    arg_text: str = ""
    source: str = ""  # mount: the source
    fstype: str = ""  # mount: the filesystem type


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
class ProcInfo:
    """What the process table knows of one process."""

    pid: int
    ppid: int
    exe: str
    argv: tuple[str, ...]
    uid: int
    start_ns: int  # wall clock ns; 0 when unknown
    comm: str = ""
    cwd: str = ""  # working directory: from the exec record, inherited at fork, /proc/<pid>/cwd at seed


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
    # Added in issue 10. ancestors[0] is the parent, [1] the grandparent, ... up to agent.ancestry_max
    # (Falco's proc.aname[N] is ancestors[N-1]); from the process table, so as current as it is.
    ancestors: tuple[ProcInfo, ...] = ()
    path_resolved: str = ""  # file events: a relative path joined to the process's cwd, else ""


# -- records that are not kernel events: the image gate's verdicts, enforcement, alerts, agent reports --
# Each has a class-level `name` (its event.name); agent/outputs/record.py flattens each kind, and
# agent/outputs/pbcodec.py maps each onto its own protobuf message.


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the image gate found. `rule` is the detection rule (YARA rule, hash list, check id);
    `path` the file in the image ("" for image-wide findings); `detail` a human sentence that never
    contains a secret's value."""

    category: str  # one of agent.vocab.CATEGORIES
    severity: Severity
    rule: str
    path: str = ""
    detail: str = ""
    layer: str = ""  # blob digest of the layer the file came from
    cis: str = ""  # CIS Docker Benchmark section (baseline)
    advisory: str = ""  # advisory id (vulnerability)
    package: str = ""
    installed: str = ""
    fixed: str = ""
    # Evidence of a web-shell finding (issue 11): the request data, what runs it, the decoded code
    # that shows it, the detector's confidence in [0, 1] and the family it looks like.
    source: str = ""
    sink: str = ""
    snippet: str = ""
    confidence: float = 0.0
    family: str = ""

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in ("", None, 0.0)}
        d["severity"] = self.severity.label
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        d = dict(d)
        d["severity"] = Severity.parse(d["severity"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Decided:
    """A finding with what the policy made of it: action "block", "alert" or "none", and the
    policy rule that decided it ("categories.malware.block >= high")."""

    finding: Finding
    action: str
    decided_by: str

    def to_dict(self) -> dict:
        return {**self.finding.to_dict(), "action": self.action, "decided_by": self.decided_by}


@dataclass
class Verdict:
    """The image gate's answer for one container start."""

    verdict: str  # "allow", "alert" or "block"
    reason: str  # one line: why (the deciding finding, whitelist, scope, timeout, error)
    findings: list[Decided] = field(default_factory=list)
    image: str = ""
    digest: str = ""
    duration_ms: float = 0.0
    cache_hit: str = "none"
    timed_out: bool = False
    error: str = ""
    policy: str = ""  # fingerprint of the policy that decided (changes on every reload)
    # Re-judged while running (agent/imagegate/service.py rejudge): the verdict this one replaces, and what
    # changed ("advisories", "rules" or "policy"); both "" for the judgement at start.
    previous: str = ""
    trigger: str = ""


@dataclass(frozen=True, slots=True)
class VerdictEvent:
    """image.verdict: the gate judged the image of a container (container set) or an image by
    reference (container None: NRI before containerd has a record, `nodewarden scan`)."""

    name: ClassVar[str] = "image.verdict"
    ts_ns: int
    verdict: Verdict
    container: ContainerInfo | None = None
    namespace: str = ""  # containerd namespace, when there is no container record


@dataclass(frozen=True, slots=True)
class EnforcementEvent:
    """enforcement.block: the agent stopped something, at one enforcement point."""

    name: ClassVar[str] = "enforcement.block"
    ts_ns: int
    # "kernel.exec", "nri.create_container", "nri.start_container", "oci.runc_create", "containerd.kill", "user.kill",
    # "file.quarantine"
    point: str
    action: str  # "kill", "deny" or "quarantine"
    reason: str  # one line: the rule or verdict behind it
    severity: Severity = Severity.CRITICAL
    outcome: str = ""  # what happened: "killed", "denied", "kill failed: ...", "" when implied
    verdict: str = ""  # the image verdict behind it ("block"), "" when a runtime rule
    container: ContainerInfo | None = None  # what is known of the container (NRI: name, image, pod only)
    subject: Enriched | None = None  # the process event that was stopped (kernel.exec, user.kill)
    duration_ms: float | None = None  # from the decision to the act, when measured
    rule_name: str = ""  # kernel.exec: the runtime rule that matched ("deny_exec[0] name=xmrig")
    rule_category: str = ""  # kernel.exec: "deny_exec", "drift" or "image" (a file the image gate flagged)
    quarantine_path: str = ""  # file.quarantine: where the file was moved (the subject's file.path is the old name)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """alert: a detection rule matched an event (agent/detect)."""

    name: ClassVar[str] = "alert"
    ts_ns: int
    rule_id: str
    rule_name: str
    description: str
    severity: Severity
    tactics: tuple[str, ...] = ()  # MITRE ATT&CK tactic names
    techniques: tuple[str, ...] = ()  # MITRE ATT&CK technique ids, e.g. T1059.004
    subject: Enriched | None = None  # the triggering event, with its process and container
    output: str = ""  # the rule's output line, fields filled in
    count: int = 1  # identical alerts folded into this one
    action: str = "alert"  # "alert" or "kill"
    findings: tuple[Finding, ...] = ()  # malware.webshell: the detector's evidence (source, sink, snippet ...)
    # Device alerts (agent/devices/guard.py): the device, and the process using it when no kernel event is
    # the subject (a use seen in a device.sample).
    device: DeviceRef | None = None
    user: DeviceUser | None = None
    # Alerts about a container with no kernel event behind them (agent/resources: memory at its limit;
    # container lifecycle: OOM kills, restart loops): the container they are about.
    container: ContainerInfo | None = None


@dataclass(frozen=True, slots=True)
class AgentReady:
    """agent.ready: every probe is attached."""

    name: ClassVar[str] = "agent.ready"
    ts_ns: int
    host: str
    pid: int
    probes: tuple[str, ...]
    tracepoints_missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DropReport:
    """agent.drops: what each stage lost, keyed by stage ("kernel.file", "queue", "exporter.spool_full", ...)."""

    name: ClassVar[str] = "agent.drops"
    ts_ns: int
    new: Mapping[str, int]  # since the previous report
    total: Mapping[str, int]  # since the agent started
    severity: Severity = Severity.MEDIUM


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """agent.policy: a policy file was loaded (or a reload was refused: error set, the old one stays)."""

    name: ClassVar[str] = "agent.policy"
    ts_ns: int
    source: str
    fingerprint: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """profile.change: a workload's behaviour profile (agent/detect/profile) changed mode, or reports a
    problem while it stays in its mode (a kind over its cap: reason "overflow exec 512"). The workload's
    fields are the profile key's parts (agent/detect/profile/key.py Workload)."""

    name: ClassVar[str] = "profile.change"
    ts_ns: int
    key: str
    mode: str  # learning, monitoring, protecting
    previous_mode: str
    reason: str  # one line: "learned 3600 s", "quiet 600 s", "locked by user", "overflow exec 512", ...
    items: tuple[tuple[str, int], ...] = ()  # learned items per kind: (("exec", 12), ("edge", 20), ...)
    namespace: str = ""  # pod namespace, or the containerd namespace outside a pod
    kind: str = ""  # Deployment, StatefulSet, DaemonSet, Job, Pod; "" outside a pod
    owner: str = ""
    container: str = ""
    image: str = ""
    image_digest: str = ""
    severity: Severity = Severity.INFO  # medium for an overflow or a refused profile


# -- posture (agent/imagegate/posture.py): the node's running containers against the practice guides -------


@dataclass(frozen=True, slots=True)
class PostureFinding:
    """One posture check that failed: check (one of posture.CHECKS), one line of detail, the containers concerned."""

    check: str
    detail: str
    containers: tuple[ContainerInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class PostureReport:
    """posture.report: every check over every running container, on an interval and on request."""

    name: ClassVar[str] = "posture.report"
    ts_ns: int
    findings: tuple[PostureFinding, ...] = ()
    containers: int = 0  # running containers assessed (pod sandboxes not counted)
    unreadable: int = 0  # containers or images that could not be read this time (not judged)
    severity: Severity = Severity.INFO  # low when any check failed


# -- devices (agent/devices): NVIDIA GPUs through NVML, Kunlun XPUs through xpuml / xpu_smi ------------
# A reading that the driver does not support, or that failed, is None (never a made-up 0).


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """Which device a record is about. `minor` is N of /dev/nvidiaN or /dev/xpuN (-1 unknown); `mig`
    the MIG device's UUID when the record is about one MIG instance of `uuid`."""

    vendor: str  # "nvidia" or "kunlun"
    index: int
    uuid: str
    model: str = ""
    pci_bus_id: str = ""
    minor: int = -1
    mig: str = ""


@dataclass(frozen=True, slots=True)
class DeviceUser:
    """A process using a device: host pid (the root pid namespace's), the device memory it holds, its
    MIG instance, and what the container table knows of it (host processes: container None)."""

    pid: int
    used_memory: int | None = None  # bytes
    mig: str = ""
    comm: str = ""
    container: ContainerInfo | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfoEvent:
    """device.info: one device's inventory, at start and whenever it changes."""

    name: ClassVar[str] = "device.info"
    ts_ns: int
    device: DeviceRef
    serial: str = ""
    driver_version: str = ""
    cuda_version: str = ""  # NVML's CUDA driver version ("12.4"); Kunlun: the firmware/SDK version
    memory_total: int | None = None  # bytes
    power_limit_w: float | None = None
    ecc_mode: str = ""  # "enabled", "disabled", "" unknown or unsupported
    mig_mode: str = ""  # likewise
    mig_devices: tuple[DeviceRef, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceSampleEvent:
    """device.sample: one device's readings at one moment. `values` holds what the driver answered, by
    the names in agent/devices/fields.py (gpu_util, mem_used, temperature, power_w, ...); `throttle` the
    clock-event reasons by name; `errors` the readings that failed this time (name: reason)."""

    name: ClassVar[str] = "device.sample"
    ts_ns: int
    device: DeviceRef
    values: Mapping[str, float | int]
    throttle: tuple[str, ...] = ()
    processes: tuple[DeviceUser, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceHealthEvent:
    """device.health: something happened to a device. kind: "xid" (with xid, mnemonic and the
    recommended action), "ecc_dbe", "ecc_sbe", "unavailable" (fell off the bus, lost), "unresponsive"
    (a driver call did not return in time), "recovered" (answering again), "state" (Kunlun: the state
    polled from xpumlDeviceGetState left running/unused: in_reset, error, in_exception, or the driver
    answered "reset required"; the detail starts with that word)."""

    name: ClassVar[str] = "device.health"
    ts_ns: int
    device: DeviceRef
    kind: str
    severity: Severity
    detail: str = ""
    xid: int | None = None
    mnemonic: str = ""
    action: str = ""  # "none", "restart_app", "reset_gpu", "drain_and_reset", "reboot", "contact_support"


@dataclass(frozen=True, slots=True)
class DeviceProcessEvent:
    """device.process: a process started or stopped using a device (change "start" / "stop")."""

    name: ClassVar[str] = "device.process"
    ts_ns: int
    device: DeviceRef
    change: str
    user: DeviceUser


# -- resources (agent/resources): per-container cgroup counters and the host's, sampled on an interval -------
# A counter the kernel does not offer here (a controller not enabled, a file absent) is None, never a made-up 0.


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    """One container's counters at one moment, from its cgroup files (agent/resources/cgroupfs.py) and its
    network namespace (/proc/<pid>/net/dev, loopback left out). Counters are cumulative since the cgroup
    was made; memory_limit and pids_limit None: no limit."""

    cgroup_version: int  # 1 or 2
    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cpu_periods: int | None = None  # CFS quota periods elapsed (a CPU limit is set)
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    memory_usage: int | None = None  # bytes charged to the cgroup (page cache included)
    memory_limit: int | None = None
    memory_working_set: int | None = None  # usage less inactive file pages (the kubelet's working set)
    memory_rss: int | None = None  # anonymous memory
    memory_cache: int | None = None  # file pages
    memory_limit_hits: int | None = None  # v2 memory.events max, v1 memory.failcnt
    oom_kills: int | None = None  # processes the OOM killer killed in the cgroup
    pids: int | None = None
    pids_limit: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    io_read_ops: int | None = None
    io_write_ops: int | None = None
    net_rx_bytes: int | None = None  # None: the container shares the host's network namespace
    net_tx_bytes: int | None = None
    net_rx_packets: int | None = None
    net_tx_packets: int | None = None
    net_rx_dropped: int | None = None
    net_tx_dropped: int | None = None


@dataclass(frozen=True, slots=True)
class ContainerResourcesEvent:
    """container.resources: one running container's usage at one sample; cpu_percent over the last interval
    (100 = one CPU busy), memory_percent the working set against the limit (None: no limit)."""

    name: ClassVar[str] = "container.resources"
    ts_ns: int
    container: ContainerInfo
    usage: ContainerUsage
    cpu_percent: float | None = None
    memory_percent: float | None = None
    cgroup_path: str = ""  # the memory controller's path (v1) or the unified one (v2)


@dataclass(frozen=True, slots=True)
class HostFilesystem:
    """One mounted filesystem's space (psutil.disk_usage)."""

    path: str
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True, slots=True)
class HostResourcesEvent:
    """host.resources: the node's CPU, memory, disks and network at one sample (psutil). Counters are
    cumulative since boot; cpu_percent is over the last interval, all CPUs together (100 = all busy)."""

    name: ClassVar[str] = "host.resources"
    ts_ns: int
    cpu_count: int
    cpu_percent: float | None = None
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    cpu_idle_s: float = 0.0
    cpu_iowait_s: float = 0.0
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    memory_total: int = 0
    memory_available: int = 0
    memory_used: int = 0
    memory_percent: float = 0.0
    swap_total: int = 0
    swap_used: int = 0
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    disk_read_ops: int | None = None
    disk_write_ops: int | None = None
    net_rx_bytes: int | None = None  # every interface but loopback
    net_tx_bytes: int | None = None
    net_rx_packets: int | None = None
    net_tx_packets: int | None = None
    filesystems: tuple[HostFilesystem, ...] = ()
    errors: tuple[str, ...] = ()  # readings that failed this time ("disk_io: reason")


# -- container lifecycle (issue 16, agent/enrich/lifecycle.py): containerd's event stream as typed records ------
# One record type per family, one subclass per event.name (container.created, ...), so an output or a rule
# tells them apart by name as it does process.exec from process.exit.


@dataclass(frozen=True, slots=True)
class ContainerLifecycleEvent:
    """container.*: one step of a container's life as containerd reported it. `container` is the container
    table's record at that moment (the id alone when the table never knew it). Which other fields mean
    something depends on the kind: pid (started: the init process; exec: the exec'd process); exit_code,
    signal, oom_killed (exited); exec_id, argv, via (exec)."""

    name: ClassVar[str] = "container.lifecycle"  # the family; records are always one of the subclasses
    ts_ns: int
    container: ContainerInfo
    pid: int = 0
    exit_code: int | None = None  # the task's exit status as containerd reports it (128 + n: killed by signal n)
    signal: int = 0  # the signal that killed the init process, when the status says one did (0: none)
    oom_killed: bool = False  # the kernel OOM-killed a process of the container during this task's life
    exec_id: str = ""
    argv: tuple[str, ...] = ()  # exec: the command, when the agent could read it ((): exited too soon)
    via: str = ""  # exec: "cri" (an exec id of the CRI's form), "direct" (a CRI container, another id), "containerd"


@dataclass(frozen=True, slots=True)
class ContainerCreated(ContainerLifecycleEvent):
    name: ClassVar[str] = "container.created"


@dataclass(frozen=True, slots=True)
class ContainerStarted(ContainerLifecycleEvent):
    name: ClassVar[str] = "container.started"


@dataclass(frozen=True, slots=True)
class ContainerExited(ContainerLifecycleEvent):
    name: ClassVar[str] = "container.exited"


@dataclass(frozen=True, slots=True)
class ContainerOOM(ContainerLifecycleEvent):
    """container.oom: the kernel's OOM killer killed a process in the container's cgroup (containerd's
    /tasks/oom); the container lives on when that was not its init process."""

    name: ClassVar[str] = "container.oom"


@dataclass(frozen=True, slots=True)
class ContainerDeleted(ContainerLifecycleEvent):
    name: ClassVar[str] = "container.deleted"


@dataclass(frozen=True, slots=True)
class ContainerExec(ContainerLifecycleEvent):
    name: ClassVar[str] = "container.exec"


@dataclass(frozen=True, slots=True)
class ImageLifecycleEvent:
    """image.pulled / image.deleted: containerd created or moved an image record (a pull, an import or a tag:
    its events do not tell them apart), or deleted one. previous_digest: the digest the name had before, when
    a tag moved to new content."""

    name: ClassVar[str] = "image.lifecycle"  # the family; records are always one of the subclasses
    ts_ns: int
    image: str
    namespace: str  # containerd namespace
    digest: str = ""
    previous_digest: str = ""


@dataclass(frozen=True, slots=True)
class ImagePulled(ImageLifecycleEvent):
    name: ClassVar[str] = "image.pulled"


@dataclass(frozen=True, slots=True)
class ImageDeleted(ImageLifecycleEvent):
    name: ClassVar[str] = "image.deleted"


# Everything a stage may hand to the outputs.
Record = (Enriched | VerdictEvent | EnforcementEvent | AlertEvent | AgentReady | DropReport | PolicyEvent
          | DeviceInfoEvent | DeviceSampleEvent | DeviceHealthEvent | DeviceProcessEvent | ProfileChange
          | PostureReport | ContainerResourcesEvent | HostResourcesEvent
          | ContainerCreated | ContainerStarted | ContainerExited | ContainerOOM | ContainerDeleted | ContainerExec
          | ImagePulled | ImageDeleted)
