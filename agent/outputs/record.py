"""The flat record: one dict of dotted keys per event, the form every output starts from.

Keys follow OpenTelemetry semantic conventions where one exists (process.pid, file.path,
network.peer.address, ...). The JSON log prints it as is; the gRPC exporter maps it onto the
protobuf Event. Keys are only ever added, never renamed, save once (issue 15, README "Record keys"): so that a
record maps in Elasticsearch and OpenSearch as it is, no key is both a value and the parent of another
(`a.b` and `a.b.c`, in any event kind: one index holds them all), and the agent's own keys live under
`nodewarden.*`, not the log shipper's `agent.*`. tests/unit/test_record_keys.py checks every kind.
"""

from __future__ import annotations

import math
import sys
import time

from google.protobuf.descriptor import FieldDescriptor

from agent.devices.fields import FIELDS
from agent.events import (
    EVENT_NAMES,
    AgentReady,
    AlertEvent,
    BenchEvent,
    ContainerCreated,
    ContainerDeleted,
    ContainerExec,
    ContainerExited,
    ContainerInfo,
    ContainerLifecycleEvent,
    ContainerOOM,
    ContainerResourcesEvent,
    ContainerStarted,
    DeviceHealthEvent,
    DeviceInfoEvent,
    DeviceProcessEvent,
    DeviceRef,
    DeviceSampleEvent,
    DeviceUser,
    DropReport,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    HostResourcesEvent,
    ImageDeleted,
    ImageLifecycleEvent,
    ImagePulled,
    NetEvent,
    Op,
    PolicyEvent,
    PostureReport,
    ProfileChange,
    SysEvent,
    Verdict,
    VerdictEvent,
)
from agent.sensors import native
from agent.vocab import Severity
from nwwire.codec import kind_of, to_event
from nwwire.schema import SEVERITY_EXACT, key_of, pb

MAX_FINDINGS = 200  # a verdict record stays a log line: an image with thousands of CVEs is summarized

_sec_cache: dict[int, str] = {}


def rfc3339(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. 2026-11-24T11:25:20.123456789Z."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    head = _sec_cache.get(sec)
    if head is None:
        head = _second_text(sec)
    return f"{head}.{ns:09d}Z"


def _second_text(sec: int) -> str:
    """The date and time of a second (rfc3339's, and the compiled flattener's, agent/sensors/_native.c)."""
    head = _sec_cache.get(sec)
    if head is None:  # events come in bursts within a few seconds (and their processes' start times)
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        head = _sec_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return head


def command_line(argv: tuple[str, ...]) -> str:
    return " ".join(argv)


def flatten(ev) -> dict:
    """Any typed record (agent.events.Record) -> its flat record. The one flattener."""
    if isinstance(ev, Enriched):
        return from_enriched(ev)
    fn = _FLATTENERS.get(type(ev))
    if fn is None:
        raise TypeError(f"no flat form for {type(ev).__name__}")
    return fn(ev)


def _head(name: str, ts_ns: int, severity: str) -> dict:
    return {"event.name": name, "timestamp": rfc3339(ts_ns), "event.severity": severity}


def _ready(ev: AgentReady) -> dict:
    rec = _head(ev.name, ev.ts_ns, "info")
    rec.update({"nodewarden.probes": list(ev.probes), "nodewarden.tracepoints_missing": list(ev.tracepoints_missing),
                "host.name": ev.host, "process.pid": ev.pid})
    return rec


def _drops(ev: DropReport) -> dict:
    rec = _head(ev.name, ev.ts_ns, "warning" if ev.severity == Severity.MEDIUM else ev.severity.label)
    rec.update({"nodewarden.drops.new": dict(ev.new), "nodewarden.drops.total": dict(ev.total)})
    return rec


def _policy(ev: PolicyEvent) -> dict:
    rec = _head(ev.name, ev.ts_ns, "warning" if ev.error else "info")
    rec.update({"policy.source": ev.source, "policy.fingerprint": ev.fingerprint})
    if ev.error:
        rec["policy.error"] = ev.error
    return rec


def _container_keys(rec: dict, c: ContainerInfo, image: str = "", digest: str = "", namespace: str = "") -> None:
    if c.id:
        rec["container.id"] = c.id
    for key, val in (
        ("container.name", c.name),
        ("container.image.name", c.image or image),
        ("container.image.digest", c.image_digest or digest),
        ("container.runtime", c.runtime if c.id else ""),
        ("k8s.pod.name", c.pod_name),
        ("k8s.namespace.name", c.pod_namespace),
        ("containerd.namespace", c.namespace or namespace),
    ):
        if val:
            rec[key] = val


def _verdict_severity(v: Verdict) -> str:
    acted = [d.finding.severity for d in v.findings if d.action != "none"]
    if acted:
        return max(acted).label
    if v.verdict == "block":
        return Severity.HIGH.label  # blocked on timeout or error: no finding to borrow from
    return "info"


def _verdict(ev: VerdictEvent) -> dict:
    v = ev.verdict
    rec = _head(ev.name, ev.ts_ns, _verdict_severity(v))
    if ev.container is not None:
        _container_keys(rec, ev.container, v.image, v.digest, ev.namespace)
    else:
        if v.image:
            rec["container.image.name"] = v.image
        if v.digest:
            rec["container.image.digest"] = v.digest
        if ev.namespace:
            rec["containerd.namespace"] = ev.namespace
    acted = [d for d in v.findings if d.action != "none"]
    shown = (acted + [d for d in v.findings if d.action == "none"])[:MAX_FINDINGS]
    rec.update({
        "image.verdict": v.verdict,
        "image.reason": v.reason,
        "image.findings": [d.to_dict() for d in shown],
        "image.findings_count": len(v.findings),
        "image.scan.duration_ms": round(v.duration_ms, 3),
        "image.scan.cache_hit": v.cache_hit == "verdict",
        "image.scan.cache": v.cache_hit,
        "image.scan.timed_out": v.timed_out,
        "image.policy": v.policy,
    })
    if len(v.findings) > len(shown):  # the log line keeps its cap; reports (nodewarden scan) list them all
        rec["image.findings_omitted"] = len(v.findings) - len(shown)
    if v.error:
        rec["image.scan.error"] = v.error
    if v.previous:  # judged again while running (agent/imagegate/service.py rejudge): what it was, and why again
        rec["image.previous_verdict"] = v.previous
        rec["image.rejudge_trigger"] = v.trigger
    return rec


def _enforcement(ev: EnforcementEvent) -> dict:
    # A block of a process event carries that event's own fields (and its container), then ours.
    rec = from_enriched(ev.subject) if ev.subject is not None else {}
    rec.update(_head(ev.name, ev.ts_ns, ev.severity.label))
    if ev.container is not None and ev.subject is None:
        _container_keys(rec, ev.container)
    rec["enforcement.point"] = ev.point
    rec["enforcement.action"] = ev.action
    rec["enforcement.reason"] = ev.reason
    if ev.outcome:
        rec["enforcement.outcome"] = ev.outcome
    if ev.verdict:
        rec["image.verdict"] = ev.verdict
    if ev.duration_ms is not None:
        rec["enforcement.duration_ms"] = round(ev.duration_ms, 3)
    if ev.rule_name:
        rec["rule.name"] = ev.rule_name
    if ev.rule_category:
        rec["rule.category"] = ev.rule_category
    if ev.quarantine_path:
        rec["file.quarantine.path"] = ev.quarantine_path
    return rec


def _alert(ev: AlertEvent) -> dict:
    rec = from_enriched(ev.subject) if ev.subject is not None else {}
    rec["trigger.name"] = rec.get("event.name", "")
    rec.update(_head(ev.name, ev.ts_ns, ev.severity.label))
    rec.update({"rule.id": ev.rule_id, "rule.name": ev.rule_name, "rule.description": ev.description,
                "threat.tactic.name": list(ev.tactics), "threat.technique.id": list(ev.techniques),
                "alert.action": ev.action})
    if ev.output:
        rec["alert.output"] = ev.output
    if ev.count != 1:
        rec["alert.count"] = ev.count
    rec["alert.findings"] = [f.to_dict() for f in ev.findings]  # a list is always written (nwwire/codec.py)
    if ev.subject is None and ev.user is not None:  # a device use seen in a sample: no kernel event behind it
        rec["process.pid"] = ev.user.pid
        if ev.user.comm:
            rec["process.name"] = ev.user.comm
        if ev.user.container is not None:
            _container_keys(rec, ev.user.container)
    if ev.subject is None and ev.user is None and ev.container is not None:  # resources, lifecycle alerts
        _container_keys(rec, ev.container)
    if ev.device is not None:
        _device_keys(rec, ev.device)
    return rec


# -- devices (agent/devices): the device a record is about, then its kind's keys ---------------------------

# Readings in these units are doubles in the record and the Event (proto DeviceSample); the others integers.
_FLOAT_UNITS = frozenset({"%", "C", "W"})
_FLOAT_READINGS = frozenset(name for name, f in FIELDS.items() if f.unit in _FLOAT_UNITS)


def _device_head(ev, severity: str = "info") -> dict:
    rec = _head(ev.name, ev.ts_ns, severity)
    _device_keys(rec, ev.device)
    return rec


def _device_keys(rec: dict, d: DeviceRef) -> None:
    rec["device.vendor"] = d.vendor
    rec["device.index"] = d.index
    rec["device.uuid"] = d.uuid
    if d.model:
        rec["device.model"] = d.model
    if d.pci_bus_id:
        rec["device.pci_bus_id"] = d.pci_bus_id
    if d.minor >= 0:
        rec["device.minor"] = d.minor
        rec["device.path"] = f"/dev/{'xpu' if d.vendor == 'kunlun' else 'nvidia'}{d.minor}"
    if d.mig:
        rec["device.mig.uuid"] = d.mig


def _device_info(ev: DeviceInfoEvent) -> dict:
    rec = _device_head(ev)
    for key, val in (("device.serial", ev.serial), ("device.driver_version", ev.driver_version),
                     ("device.cuda_version", ev.cuda_version), ("device.ecc_mode", ev.ecc_mode),
                     ("device.mig_mode", ev.mig_mode)):
        if val:
            rec[key] = val
    if ev.memory_total is not None:
        rec["device.memory.total"] = int(ev.memory_total)
    if ev.power_limit_w is not None:
        rec["device.power_limit_w"] = float(ev.power_limit_w)
    rec["device.mig_devices"] = [_mig(m) for m in ev.mig_devices]  # a list is always written (nwwire/codec.py)
    return rec


def _mig(m: DeviceRef) -> dict:
    out = {"index": m.index, "uuid": m.uuid}
    if m.model:
        out["name"] = m.model
    if m.minor >= 0:
        out["minor"] = m.minor
    return out


def _device_user(u: DeviceUser) -> dict:
    """One process of device.processes (proto DeviceProcessUse): what is known, nothing empty."""
    out: dict = {"pid": u.pid}
    if u.used_memory is not None:
        out["used_memory"] = int(u.used_memory)
    if u.mig:
        out["mig"] = u.mig
    if u.comm:
        out["name"] = u.comm
    c = u.container
    if c is not None:
        for key, val in (("container.id", c.id), ("container.name", c.name), ("container.image.name", c.image),
                         ("k8s.pod.name", c.pod_name), ("k8s.namespace.name", c.pod_namespace)):
            if val:
                out[key] = val
    return out


def _device_sample(ev: DeviceSampleEvent) -> dict:
    rec = _device_head(ev)
    for name, val in ev.values.items():
        if isinstance(val, bool) or not isinstance(val, int | float):  # a backend's oddity never fails the record
            continue
        if name in _FLOAT_READINGS:
            rec[f"device.{name}"] = float(val)
        elif not isinstance(val, float) or math.isfinite(val):
            rec[f"device.{name}"] = int(val)
    rec["device.throttle"] = list(ev.throttle)
    rec["device.processes"] = [_device_user(u) for u in ev.processes]
    rec["device.errors"] = list(ev.errors)
    return rec


def _device_health(ev: DeviceHealthEvent) -> dict:
    rec = _device_head(ev, ev.severity.label)
    rec["device.health.kind"] = ev.kind
    if ev.detail:
        rec["device.health.detail"] = ev.detail
    if ev.xid is not None:
        rec["device.xid"] = ev.xid
    if ev.mnemonic:
        rec["device.xid_mnemonic"] = ev.mnemonic
    if ev.action:
        rec["device.health.action"] = ev.action
    return rec


def _device_process(ev: DeviceProcessEvent) -> dict:
    rec = _device_head(ev)
    u = ev.user
    rec["device.process.change"] = ev.change
    rec["process.pid"] = u.pid
    if u.comm:
        rec["process.name"] = u.comm
    if u.used_memory is not None:
        rec["device.process.used_memory"] = int(u.used_memory)
    if u.mig:
        rec["device.mig.uuid"] = u.mig
    if u.container is not None:
        _container_keys(rec, u.container)
    return rec


def _profile_change(ev: ProfileChange) -> dict:
    """profile.change: the profile's key, modes, reason and item counts; the workload's namespace, container and
    image under the container keys every other record uses (so one filter finds both), its kind and owner
    under profile.*."""
    rec = _head(ev.name, ev.ts_ns, ev.severity.label)
    rec.update({"profile.key": ev.key, "profile.mode": ev.mode, "profile.previous_mode": ev.previous_mode,
                "profile.reason": ev.reason})
    for kind, n in ev.items:
        rec[f"profile.items.{kind}"] = n
    for key, val in (("profile.workload.kind", ev.kind), ("profile.workload.owner", ev.owner),
                     ("container.name", ev.container), ("container.image.name", ev.image),
                     ("container.image.digest", ev.image_digest),
                     # a pod's namespace, or outside a pod (no kind) the containerd namespace
                     ("k8s.namespace.name" if ev.kind else "containerd.namespace", ev.namespace)):
        if val:
            rec[key] = val
    return rec


def _posture(ev: PostureReport) -> dict:
    """posture.report: each failed check with its detail and the containers concerned (their keys as every record
    has them), a count per check, how many containers were judged and how many could not be read."""
    rec = _head(ev.name, ev.ts_ns, ev.severity.label)
    findings, counts = [], {}
    for f in ev.findings:
        refs = []
        for c in f.containers:
            ref: dict = {}
            _container_keys(ref, c)
            refs.append(ref)
        findings.append({"check": f.check, "detail": f.detail, "containers": refs})
        counts[f.check] = counts.get(f.check, 0) + 1
    rec.update({"posture.findings": findings, "posture.containers": ev.containers, "posture.unreadable": ev.unreadable})
    for check, n in counts.items():
        rec[f"posture.count.{check}"] = n
    return rec


# -- resources (agent/resources): a running container's cgroup counters, the host's through psutil --------------

# ContainerUsage field -> record key (ints); a counter the node does not offer (None) is left out.
_USAGE_KEYS = (
    ("cpu_usage_ns", "container.cpu.usage_ns"), ("cpu_user_ns", "container.cpu.user_ns"),
    ("cpu_system_ns", "container.cpu.system_ns"), ("cpu_periods", "container.cpu.periods"),
    ("cpu_throttled_periods", "container.cpu.throttled_periods"), ("cpu_throttled_ns", "container.cpu.throttled_ns"),
    ("memory_usage", "container.memory.usage"), ("memory_limit", "container.memory.limit"),
    ("memory_working_set", "container.memory.working_set"), ("memory_rss", "container.memory.rss"),
    ("memory_cache", "container.memory.cache"), ("memory_limit_hits", "container.memory.limit_hits"),
    ("oom_kills", "container.memory.oom_kills"), ("pids", "container.pids.current"),
    ("pids_limit", "container.pids.limit"), ("io_read_bytes", "container.disk.read.bytes"),
    ("io_write_bytes", "container.disk.write.bytes"), ("io_read_ops", "container.disk.read.ops"),
    ("io_write_ops", "container.disk.write.ops"), ("net_rx_bytes", "container.network.ingress.bytes"),
    ("net_tx_bytes", "container.network.egress.bytes"), ("net_rx_packets", "container.network.ingress.packets"),
    ("net_tx_packets", "container.network.egress.packets"), ("net_rx_dropped", "container.network.ingress.dropped"),
    ("net_tx_dropped", "container.network.egress.dropped"),
)
# HostResourcesEvent field -> record key, type.
_HOST_KEYS = (
    ("cpu_percent", "host.cpu.percent", float), ("cpu_user_s", "host.cpu.user_seconds", float),
    ("cpu_system_s", "host.cpu.system_seconds", float), ("cpu_idle_s", "host.cpu.idle_seconds", float),
    ("cpu_iowait_s", "host.cpu.iowait_seconds", float), ("load1", "host.load.1m", float),
    ("load5", "host.load.5m", float), ("load15", "host.load.15m", float), ("memory_total", "host.memory.total", int),
    ("memory_available", "host.memory.available", int), ("memory_used", "host.memory.used", int),
    ("memory_percent", "host.memory.percent", float), ("swap_total", "host.swap.total", int),
    ("swap_used", "host.swap.used", int), ("disk_read_bytes", "host.disk.read.bytes", int),
    ("disk_write_bytes", "host.disk.write.bytes", int), ("disk_read_ops", "host.disk.read.ops", int),
    ("disk_write_ops", "host.disk.write.ops", int), ("net_rx_bytes", "host.network.ingress.bytes", int),
    ("net_tx_bytes", "host.network.egress.bytes", int), ("net_rx_packets", "host.network.ingress.packets", int),
    ("net_tx_packets", "host.network.egress.packets", int),
)


def _container_resources(ev: ContainerResourcesEvent) -> dict:
    rec = _head(ev.name, ev.ts_ns, "info")
    _container_keys(rec, ev.container)
    u = ev.usage
    rec["container.cgroup.version"] = u.cgroup_version
    if ev.cgroup_path:
        rec["container.cgroup.path"] = ev.cgroup_path
    for field, key in _USAGE_KEYS:
        val = getattr(u, field)
        if val is not None:
            rec[key] = int(val)
    if ev.cpu_percent is not None:
        rec["container.cpu.percent"] = float(ev.cpu_percent)
    if ev.memory_percent is not None:
        rec["container.memory.percent"] = float(ev.memory_percent)
    return rec


def _host_resources(ev: HostResourcesEvent) -> dict:
    rec = _head(ev.name, ev.ts_ns, "info")
    rec["host.cpu.count"] = ev.cpu_count
    for field, key, typ in _HOST_KEYS:
        val = getattr(ev, field)
        if val is not None:
            rec[key] = typ(val)
    # lists are always written (nwwire/codec.py)
    rec["host.filesystems"] = [{"path": f.path, "total": f.total, "used": f.used, "free": f.free,
                                "percent": float(f.percent)} for f in ev.filesystems]
    rec["host.resources.errors"] = list(ev.errors)
    return rec


# -- container lifecycle (issue 16, agent/enrich/lifecycle.py): the container keys, then the step's own ----------

def _container_lifecycle(ev: ContainerLifecycleEvent) -> dict:
    """container.*: the container as every record names it; the init (started, exited) or exec'd process's pid
    and command under process.*; the exit's status, signal and OOM kill; the exec's id and path."""
    if isinstance(ev, ContainerOOM) or (isinstance(ev, ContainerExited) and ev.oom_killed):
        severity = Severity.MEDIUM.label
    elif isinstance(ev, ContainerExec) or (isinstance(ev, ContainerExited) and ev.exit_code):
        severity = Severity.LOW.label
    else:
        severity = "info"
    rec = _head(ev.name, ev.ts_ns, severity)
    _container_keys(rec, ev.container)
    if ev.pid:
        rec["process.pid"] = ev.pid
    if isinstance(ev, ContainerExited):
        if ev.exit_code is not None:
            rec["container.exit.code"] = ev.exit_code
        if ev.signal:
            rec["container.exit.signal"] = ev.signal
        rec["container.exit.oom_killed"] = ev.oom_killed
    elif isinstance(ev, ContainerExec):
        rec["container.exec.id"] = ev.exec_id
        if ev.via:
            rec["container.exec.via"] = ev.via
        if ev.argv:
            rec["process.command_line"] = command_line(ev.argv)
    return rec


def _image_lifecycle(ev: ImageLifecycleEvent) -> dict:
    """image.pulled / image.deleted: the image under the container image keys (as image.verdict), so one filter
    finds an image's pulls, verdicts and containers."""
    rec = _head(ev.name, ev.ts_ns, "info")
    rec["container.image.name"] = ev.image
    for key, val in (("container.image.digest", ev.digest), ("image.previous_digest", ev.previous_digest),
                     ("containerd.namespace", ev.namespace)):
        if val:
            rec[key] = val
    return rec


_FLATTENERS = {
    **dict.fromkeys((ContainerCreated, ContainerStarted, ContainerExited, ContainerOOM, ContainerDeleted,
                     ContainerExec), _container_lifecycle),
    **dict.fromkeys((ImagePulled, ImageDeleted), _image_lifecycle),
    DeviceInfoEvent: _device_info,
    DeviceSampleEvent: _device_sample,
    DeviceHealthEvent: _device_health,
    DeviceProcessEvent: _device_process,
    AgentReady: _ready,
    DropReport: _drops,
    PolicyEvent: _policy,
    VerdictEvent: _verdict,
    EnforcementEvent: _enforcement,
    AlertEvent: _alert,
    ProfileChange: _profile_change,
    PostureReport: _posture,
    ContainerResourcesEvent: _container_resources,
    HostResourcesEvent: _host_resources,
}


def _from_enriched(en: Enriched) -> dict:
    """The flat record of a kernel event (from_enriched: this, or the compiled flattener with this as its
    reference and for the kinds it leaves to Python). Hot (every event): what comes from the process, its parent and
    ancestry, and what comes from the container, is the same for every event of that process or container,
    so each is made once into a fragment (_process_part, _container_part) and merged; only the event's own
    keys are made per event. The keys and their order are those of the record as it always was
    (tests/unit/test_flatten_fragments.py holds the plain flattener as the reference)."""
    ev = en.event
    rec = {
        "event.name": EVENT_NAMES[ev.op],
        "timestamp": rfc3339(ev.ts_ns),
        "event.severity": "info",
        "process.pid": ev.pid,
        "process.thread.id": ev.tid,
        "process.parent_pid": ev.ppid,
        "process.name": ev.comm,
        "user.id": ev.uid,
        "group.id": ev.gid,
        "cgroup.id": ev.cgroup_id,
        "process.mount_ns": ev.mntns,
    }
    p, parent, chain = en.process, en.parent, en.ancestors
    if p is not None or parent is not None or chain:
        hit = _proc_parts.get((id(p), id(parent), id(chain)))
        if hit is None or hit[0] is not p or hit[1] is not parent or hit[2] is not chain:
            hit = _process_part(p, parent, chain)
        rec.update(hit[3])
        if chain:  # parent first; two parallel lists (proto/nodewarden/v1/event.proto Process), the record's own
            rec["process.ancestors.name"] = hit[4].copy()
            rec["process.ancestors.executable.path"] = hit[5].copy()
    if en.path_resolved:
        rec["file.resolved_path"] = en.path_resolved
    if ev.truncated:
        rec["event.truncated"] = True
    kind = _KIND_KEYS.get(type(ev))
    if kind is not None:
        kind(rec, ev)
    else:
        _add_kind(rec, ev)
    c = en.container
    if c is not None:
        hit = _container_parts.get(id(c))
        if hit is None or hit[0] is not c:
            hit = _container_part(c)
        rec.update(hit[1])
    return rec


# Fragments by the identity of what they were made from: the process table hands out one ProcInfo per
# process and one ancestry tuple per pid until they change, the container table one ContainerInfo per
# container state. Each entry holds its objects, so an id is not reused while it is cached; bounded by
# clearing, as the ancestry cache was. Measured (bench/pipeline.py mix): flatten went from ~3.4 us to ~1.3 us.
_PART_MAX = 4096
_FRAGMENT_MAX = 4096  # characters of a process fragment's strings, at most, for it to be cached
_proc_parts: dict[tuple[int, int, int], tuple] = {}
# The bytes the entries keep alive are bounded too: an entry holds its process, parent and ancestry, and
# their argv (an ancestor's is not in the fragment); _native.c PART_BYTES_MAX says why, with the same bound.
_PART_BYTES_MAX = 8 << 20
_proc_parts_bytes = [0]  # what _proc_parts' entries keep alive, about (_held_bytes each)


def _held_bytes(p, parent, chain: tuple, keys: dict) -> int:
    """About what an entry keeps alive: its strings and its processes' (sys.getsizeof of each)."""
    n = sum(sys.getsizeof(v) for v in keys.values()) + 512
    for pi in (p, parent, *chain):
        if pi is not None:
            n += sys.getsizeof(pi.exe) + sys.getsizeof(pi.comm) + sys.getsizeof(pi.cwd)
            n += sum(map(sys.getsizeof, pi.argv))
    return n


_container_parts: dict[int, tuple] = {}


def _process_part(p, parent, chain: tuple) -> tuple:
    """(p, parent, chain, keys, ancestor names, ancestor executables) of one process context."""
    keys: dict = {}
    if p is not None:
        keys["process.executable.path"] = p.exe
        keys["process.command_line"] = command_line(p.argv)
        if p.start_ns:
            keys["process.start_time"] = rfc3339(p.start_ns)
    if parent is not None:
        keys["process.parent.executable.path"] = parent.exe
        keys["process.parent.command_line"] = command_line(parent.argv)
    hit = (p, parent, chain, keys, [a.comm for a in chain], [a.exe for a in chain])
    # Only fragments of ordinary size are kept: hostile records (4 KB command lines of escaped bytes) would
    # otherwise make the cache hold ~25 MB; the compiled cache has the same bound (_native.c FRAGMENT_CACHE_MAX).
    if sum(len(v) for v in keys.values() if type(v) is str) <= _FRAGMENT_MAX:
        held = _held_bytes(p, parent, chain, keys)
        if len(_proc_parts) >= _PART_MAX or _proc_parts_bytes[0] + held > _PART_BYTES_MAX:
            _proc_parts.clear()
            _proc_parts_bytes[0] = 0
        _proc_parts[(id(p), id(parent), id(chain))] = hit
        _proc_parts_bytes[0] += held  # a replaced entry's count stays until the next clear: an overcount
    return hit


def _container_part(c: ContainerInfo) -> tuple:
    keys = {"container.id": c.id}
    for key, val in (
        ("container.name", c.name),
        ("container.image.name", c.image),
        ("container.image.digest", c.image_digest),
        ("container.runtime", c.runtime),
        ("k8s.pod.name", c.pod_name),
        ("k8s.namespace.name", c.pod_namespace),
    ):
        if val:
            keys[key] = val
    if len(_container_parts) >= _PART_MAX:
        _container_parts.clear()
    hit = _container_parts[id(c)] = (c, keys)
    return hit


# Network ops whose address is the peer's (the others carry the local end).
_PEER_OPS = (Op.NET_CONNECT, Op.NET_ACCEPT, Op.NET_SENDTO, Op.NET_DUP)


def _sys_keys(ev: SysEvent) -> tuple[tuple[str, object], ...]:
    """The record keys of one system-family event, by op (proto/nodewarden/v1/event.proto SystemOp)."""
    op = ev.op
    if op is Op.PTRACE:
        return ("ptrace.request", ev.arg), ("target.pid", ev.target_pid)
    if op in (Op.SETUID, Op.SETGID):
        return ("setid.real", ev.ids[0]), ("setid.effective", ev.ids[1]), ("setid.saved", ev.ids[2])
    if op is Op.CAPSET:
        return (("capabilities.effective", ev.caps[0]), ("capabilities.permitted", ev.caps[1]),
                ("capabilities.inheritable", ev.caps[2]), ("target.pid", ev.target_pid))
    if op is Op.MODULE_LOAD:
        return ("module.path", ev.arg_text), ("module.flags", ev.arg)
    if op is Op.MOUNT:
        return (("mount.target", ev.arg_text), ("mount.source", ev.source), ("mount.fstype", ev.fstype),
                ("mount.flags", ev.arg))
    if op is Op.UMOUNT:
        return ("mount.target", ev.arg_text), ("mount.flags", ev.arg)
    if op is Op.UNSHARE:
        return (("namespace.flags", ev.arg),)
    if op is Op.SETNS:
        return ("namespace.flags", ev.arg), ("namespace.fd", ev.ids[0])
    if op is Op.BPF_LOAD:
        return ("bpf.program.type", ev.arg), ("bpf.program.name", ev.arg_text)
    if op is Op.MEMFD_CREATE:
        return ("memfd.name", ev.arg_text), ("memfd.flags", ev.arg)
    return ()


def _exec_keys(rec: dict, ev: ExecEvent) -> None:
    rec["process.executable.path"] = ev.filename
    rec["process.command_line"] = command_line(ev.argv)
    rec["process.args"] = list(ev.argv)
    rec["process.args_count"] = len(ev.argv)
    if ev.exe_ino:  # st_ino and st_dev of the file that runs, as stat(2) reports them
        rec["process.executable.inode"] = ev.exe_ino
        rec["process.executable.device"] = ev.exe_dev
    if ev.kernel_path:
        rec["process.executable.kernel_path"] = ev.kernel_path
        rec["process.executable.mount_id"] = ev.exe_mnt_id
    if ev.cwd:
        rec["process.working_directory"] = ev.cwd
    # the flags are present only when true: a rule tests `exists` or `= true`, a log stays short
    if ev.memfd:
        rec["process.executable.memfd"] = True
    if ev.deleted:
        rec["process.executable.deleted"] = True
    if ev.upper_layer:
        rec["process.executable.upper_layer"] = True


def _exit_keys(rec: dict, ev: ExitEvent) -> None:
    rec["process.exit.code"] = ev.exit_code
    if ev.signal:
        rec["process.exit.signal"] = ev.signal


def _fork_keys(rec: dict, ev: ForkEvent) -> None:
    rec["process.child.pid"] = ev.child_pid


_OPEN, _RENAME, _CHMOD, _CHOWN = Op.FILE_OPEN, Op.FILE_RENAME, Op.FILE_CHMOD, Op.FILE_CHOWN
_LINKS = (Op.FILE_SYMLINK, Op.FILE_LINK)


def _file_keys(rec: dict, ev: FileEvent) -> None:
    rec["file.path"] = ev.path
    rec["syscall.return"] = ev.ret
    op = ev.op
    if op is _OPEN:
        rec["file.open.flags"] = ev.flags
        rec["file.mode"] = ev.mode
    elif op is _RENAME:
        rec["file.target.path"] = ev.path2
    elif op is _CHMOD:
        rec["file.mode"] = ev.mode
    elif op is _CHOWN:
        rec["file.owner.id"] = ev.owner_uid
        rec["file.group.id"] = ev.owner_gid
    elif op in _LINKS:
        rec["file.link.target"] = ev.path2
    if ev.fd >= 0:
        rec["file.descriptor"] = ev.fd


def _net_keys(rec: dict, ev: NetEvent) -> None:
    rec["network.type"] = ev.family
    rec["network.transport"] = ev.transport
    rec["syscall.return"] = ev.ret
    op = ev.op
    if op in _PEER_OPS:
        rec["network.peer.address"] = ev.address
        rec["network.peer.port"] = ev.port
    elif op is not Op.NET_SOCKET:  # a new socket has no address yet
        rec["network.local.address"] = ev.address
        rec["network.local.port"] = ev.port
    if op is Op.NET_LISTEN:
        rec["network.listen.backlog"] = ev.backlog
    elif op is Op.NET_SOCKET:
        rec["network.fd"] = ev.ret
        rec["network.protocol"] = ev.protocol
    elif op is Op.NET_DUP:
        rec["network.fd"] = ev.fd
        rec["network.dup.new_fd"] = ev.fd2


def _system_keys(rec: dict, ev: SysEvent) -> None:
    rec["syscall.name"] = ev.call
    rec["syscall.return"] = ev.ret
    for key, val in _sys_keys(ev):
        rec[key] = val


def _bench_keys(rec: dict, ev: BenchEvent) -> None:
    rec["bench.counter"] = ev.counter


# The kind's own keys by the event's type: one lookup instead of a chain of isinstance tests.
_KIND_KEYS = {ExecEvent: _exec_keys, ExitEvent: _exit_keys, ForkEvent: _fork_keys, FileEvent: _file_keys,
              NetEvent: _net_keys, SysEvent: _system_keys, BenchEvent: _bench_keys}


def _add_kind(rec: dict, ev) -> None:
    """A subclass of a kernel event type (none in the agent; a test's, a plugin's): its base's keys."""
    for cls, keys in _KIND_KEYS.items():
        if isinstance(ev, cls):
            keys(rec, ev)
            return


def _compiled_flattener():
    """from_enriched: the compiled flattener of file, net, fork and exit events when the native module is
    loaded (agent/sensors/native.py; it hands every other kind to _from_enriched, and takes the fragments
    from _process_part and _container_part), else _from_enriched. Measured on bench/pipeline.py's mix:
    ~2.5 us a record in Python, ~0.6 us compiled."""
    mod = native.MODULE
    if mod is None:
        return _from_enriched
    mod.configure_flatten({int(op): name for op, name in EVENT_NAMES.items()}, _process_part, _container_part,
                          _second_text, _from_enriched)
    return mod.flatten


from_enriched = _compiled_flattener()


# What an output may take instead of a kernel event's dict (agent/pipeline.py _encodings): its JSON line,
# its Event's bytes without the identity fields (the exporter stamps them), made by the compiled module.
ENCODE_JSON, ENCODE_PROTOBUF = 1, 2

# protobuf's field types -> configure_pb's names; a field of another type is left out of its table, so
# the compiled encoder never writes its key (the record goes the dict way: to_event)
_PB_TYPES = {FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_UINT64: "uint64",
             FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_BOOL: "bool",
             FieldDescriptor.TYPE_STRING: "string"}


def _pb_table(desc) -> dict[str, tuple[int, str]]:
    """record key -> (field number, type name) of a message's scalar and repeated-string fields."""
    out = {}
    for fd in desc.fields:
        key, typ = key_of(fd), _PB_TYPES.get(fd.type)
        if not key or typ is None or fd.message_type is not None:
            continue
        if fd.is_repeated:
            if typ != "string":
                continue
            typ = "strings"
        out[key] = (fd.number, typ)
    return out


def _container_message(keys: dict) -> bytes | None:
    """A container's record keys as to_event writes them: Event.container's bytes, or None when to_event
    would put one elsewhere (extra_json)."""
    ev = to_event(keys)
    if ev.extra_json or ev.ListFields() != ([(ev.DESCRIPTOR.fields_by_name["container"], ev.container)]
                                            if ev.HasField("container") else []):
        return None
    return ev.container.SerializeToString()


def _configure_event_encoder() -> bool:
    """Give the compiled module the Event's field numbers and types from the descriptors (nwwire.schema
    reads the record keys from the .proto options), so that `encoded(en, 2)` writes a kernel event's Event
    without its dict (agent/pipeline.py, when an exporter is among the outputs). False without the module."""
    mod = native.MODULE
    if mod is None:
        return False
    desc = pb.Event.DESCRIPTOR
    by_key = {key_of(fd): fd.number for fd in desc.fields if key_of(fd)}
    event = {"time": by_key["timestamp"], "name": by_key["event.name"], "severity": by_key["event.severity"],
             "process": desc.fields_by_name["process"].number,
             "container": desc.fields_by_name["container"].number, "info": SEVERITY_EXACT["info"]}
    members = {}
    for op, name in EVENT_NAMES.items():
        member = kind_of(name)
        if member is not None:
            fd = desc.fields_by_name[member]
            members[int(op)] = (fd.number, _pb_table(fd.message_type))
    mod.configure_pb(event, _pb_table(desc), _pb_table(pb.Process.DESCRIPTOR), members, _container_message)
    return True


_configure_event_encoder()
