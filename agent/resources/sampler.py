"""The resource sampler: every running container's cgroup counters and the host's, every interval, on one thread.

Thread `nw-resources` takes the container table's snapshot, reads each running container's cgroup files
(agent/resources/cgroupfs.py) and its network namespace's /proc/<pid>/net/dev, then the host through psutil
(agent/resources/host.py), and hands container.resources and host.resources records to the pipeline's emit.
It is the only thread that reads these files, and it reads nothing the event path waits on: a slow cgroupfs
or output delays the next sample, never a kernel event. A sample that overruns its interval is not caught up
with a burst: the samples missed are counted (resources.late), like the containers beyond max_containers
(resources.cut).

State is kept per running container only (the previous CPU time for cpu_percent, the memory-limit episode),
dropped when the container table reports the task's exit or the container's deletion and at every sample for
containers no longer running, so memory and the metric series (agent/outputs/resource_metrics.py reads
snapshot()) follow the containers that run now.

nw.container_memory_at_limit: a container whose working set stays at or above memory_alert_percent of its
memory limit for memory_alert_samples samples in a row raises one alert; the episode ends at the first sample
below the threshold, and only a new episode alerts again. (A container the kernel OOM-kills outright is the
lifecycle's nw.container_oom_killed, from containerd's /tasks/oom.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from agent.config import ResourcesConfig
from agent.events import AlertEvent, ContainerInfo, ContainerResourcesEvent, ContainerUsage, HostResourcesEvent
from agent.ratelog import RateLog
from agent.resources import cgroupfs
from agent.resources.cgroupfs import CgroupGone, Layout
from agent.vocab import Severity

log = logging.getLogger("nodewarden")

MEMORY_RULE = "nw.container_memory_at_limit"
# CRI's pause container holds the pod's namespaces and nothing else: a record and series per pod of it would only
# add cardinality (its network is the pod's, which every container of the pod reports).
_SANDBOX = ("io.cri-containerd.kind", "sandbox")
_MEMORY_NAME = "Container memory at its limit"
_MEMORY_DESCRIPTION = ("A container's working set (memory less inactive file pages, the kubelet's measure) stayed "
                       "at its memory limit for several samples: the kernel is reclaiming its memory and the next "
                       "allocation may be OOM-killed (raise the limit, or look for a leak).")


@dataclasses.dataclass
class _Tracked:
    """What the sampler remembers of one running container between samples."""

    pid: int = 0
    v1_paths: dict[str, str] = dataclasses.field(default_factory=dict)  # from /proc/<pid>/cgroup (v1)
    last_cpu_ns: int | None = None
    last_mono_ns: int = 0
    over: int = 0  # samples in a row at or above the alert threshold
    alerted: bool = False  # this episode raised its alert
    last: ContainerResourcesEvent | None = None


class LimitWatch:
    """The memory-limit episodes: N samples in a row at or above the threshold -> one alert per episode."""

    def __init__(self, percent: float, samples: int):
        self.percent = percent
        self.samples = max(1, samples)

    def update(self, t: _Tracked, memory_percent: float | None) -> bool:
        """One sample of a container; True when it completes an episode's N samples (raise the alert now)."""
        if self.percent <= 0 or memory_percent is None or memory_percent < self.percent:
            t.over, t.alerted = 0, False  # below (or no limit): the episode, if any, is over
            return False
        t.over += 1
        if t.over >= self.samples and not t.alerted:
            t.alerted = True
            return True
        return False


class ContainerReader:
    """Reads one container's counters with the node's cgroup layout; the network through its init pid."""

    def __init__(self, layout: Layout, proc_root: str = "/proc"):
        self.layout = layout
        self.proc_root = proc_root.rstrip("/") or "/"
        # The host's network namespace is pid 1's; where pid 1's namespaces are not ours to read (a sandbox whose
        # init refuses ptrace access), the agent's own: the host's when it runs with hostNetwork.
        self.host_netns = cgroupfs.netns_inode(self.proc_root, 1) or cgroupfs.netns_inode(self.proc_root, "self")

    def v1_paths(self, pid: int) -> dict[str, str]:
        """{controller: path} of a pid (read once per task: a process keeps its cgroups)."""
        try:
            with open(os.path.join(self.proc_root, str(pid), "cgroup")) as f:
                return cgroupfs.parse_proc_cgroup_v1(f.read())
        except OSError:
            return {}

    def read(self, info: ContainerInfo, t: _Tracked) -> tuple[ContainerUsage, str]:
        """(usage, the cgroup path read); CgroupGone when the container's cgroup is not there."""
        if self.layout.version == 2:
            if not info.cgroup_path:
                raise CgroupGone(info.id)
            usage, path = cgroupfs.read_v2(self.layout.v2, info.cgroup_path), info.cgroup_path
        elif self.layout.version == 1:
            if t.pid != info.pid or not t.v1_paths:
                t.pid, t.v1_paths = info.pid, self.v1_paths(info.pid)
                if any(p.startswith("/..") for p in t.v1_paths.values()):
                    # we run in a cgroup namespace of our own: the task's paths are relative to its root, not to
                    # the host hierarchy mounted here; containerd's path is the host's
                    t.v1_paths = {}
            # a task that is gone already: its cgroup path from containerd is the one runc uses in every hierarchy
            paths = t.v1_paths or ({c: info.cgroup_path for c, _ in self.layout.v1} if info.cgroup_path else {})
            usage = cgroupfs.read_v1(self.layout, paths)
            path = paths.get("memory") or next(iter(paths.values()), "")
        else:
            raise CgroupGone(info.id)
        return self._with_net(usage, info.pid), path

    def _with_net(self, usage: ContainerUsage, pid: int) -> ContainerUsage:
        if pid <= 0:
            return usage
        ns = cgroupfs.netns_inode(self.proc_root, pid)
        if not ns or ns == self.host_netns:  # hostNetwork: the host's counters are not the container's
            return usage
        net = cgroupfs.read_net(self.proc_root, pid)
        if net is None:
            return usage
        return dataclasses.replace(usage, net_rx_bytes=net.rx_bytes, net_tx_bytes=net.tx_bytes,
                                   net_rx_packets=net.rx_packets, net_tx_packets=net.tx_packets,
                                   net_rx_dropped=net.rx_dropped, net_tx_dropped=net.tx_dropped)


def memory_percent(usage: ContainerUsage) -> float | None:
    """The working set (else usage) against the limit, in percent; None without a limit."""
    limit = usage.memory_limit
    used = usage.memory_working_set if usage.memory_working_set is not None else usage.memory_usage
    if not limit or used is None:
        return None
    return round(100.0 * used / limit, 2)


class Sampler:
    """The sampling thread; `emit` takes each typed record (the pipeline's emit)."""

    enabled = True

    def __init__(self, cfg: ResourcesConfig, emit: Callable[[object], None], containers=None,
                 proc_root: str = "/proc", layout: Layout | None = None, host=None):
        self.cfg = cfg
        self.emit = emit
        self.table = containers
        self.layout = layout if layout is not None else cgroupfs.discover(proc_root)
        self.reader = ContainerReader(self.layout, proc_root)
        self.host = host  # HostSampler, or None (resources.host off)
        self.watch = LimitWatch(cfg.memory_alert_percent, cfg.memory_alert_samples)
        self.lock = threading.Lock()
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._host_last: HostResourcesEvent | None = None
        self._counts: Counter = Counter()  # drops: resources.cut, resources.late, resources.emit
        self.stats: Counter = Counter()  # samples, reads (containers read), gone, read_errors, alerts, errors
        self.sample_s = 0.0
        self.stopping = threading.Event()
        self.rlog = RateLog(log)
        self._thread = threading.Thread(target=self._run, name="nw-resources", daemon=True)
        if containers is not None:
            containers.add_listener(self._on_container)

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        where = {2: f"cgroup v2 at {self.layout.v2}", 1: f"cgroup v1 (memory at {self.layout.v1_mount('memory')})",
                 0: "no cgroup filesystem (host only)"}[self.layout.version]
        host = ", host through psutil" if self.host else ""
        log.info("resources: %s, every %g s%s", where, self.cfg.interval_s, host)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.ident is not None:
            self._thread.join(self.cfg.interval_s + 5.0)

    def _run(self) -> None:
        interval = self.cfg.interval_s
        next_at = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < next_at:
                self.stopping.wait(next_at - now)
                continue
            missed = int((now - next_at) // interval)  # whole intervals the last sample overran
            if missed:
                self._counts["resources.late"] += missed
            next_at += (missed + 1) * interval
            try:
                self.sample_once()
            except Exception as e:  # a bug of ours: this sample is lost (counted), the next one is tried
                self.stats["errors"] += 1
                self.rlog.exception("resources:sample", "resources: sample failed: %r", e)

    # -- one sample ----------------------------------------------------------------------------------

    def sample_once(self) -> list:
        """Read every running container and the host, emit the records; returns them (tests, the bench)."""
        t0 = time.monotonic()
        out: list = []
        running = [c for c in (self.table.snapshot() if self.table is not None else ())
                   if c.state == "running" and c.pid > 0 and _SANDBOX not in c.labels]
        if len(running) > self.cfg.max_containers:
            self._counts["resources.cut"] += len(running) - self.cfg.max_containers
            self.rlog.warning("resources:cut", "resources: %d containers run, reading %d (resources.max_containers)",
                              len(running), self.cfg.max_containers)
            running = running[: self.cfg.max_containers]
        live = {(c.namespace, c.id) for c in running}
        with self.lock:
            for key in [k for k in self._tracked if k not in live]:
                del self._tracked[key]
        for info in running:
            out.extend(self._sample_container(info))
        if self.host is not None:
            ev = self.host.sample()
            with self.lock:
                self._host_last = ev
            out.append(ev)
        self.sample_s = time.monotonic() - t0
        self.stats["samples"] += 1
        for ev in out:
            self._emit(ev)
        return out

    def _sample_container(self, info: ContainerInfo) -> list:
        key = (info.namespace, info.id)
        with self.lock:
            t = self._tracked.get(key)
            if t is None:
                t = self._tracked[key] = _Tracked()
        try:
            usage, path = self.reader.read(info, t)
        except CgroupGone:  # the task exited between the snapshot and the read
            self.stats["gone"] += 1
            return []
        except Exception as e:  # unreadable in a way we did not expect: counted, the others still read
            self.stats["read_errors"] += 1
            self.rlog.warning("resources:read", "resources: reading container %s: %r", info.id[:12], e)
            return []
        mono = time.monotonic_ns()
        cpu_pct = None
        if usage.cpu_usage_ns is not None and t.last_cpu_ns is not None and mono > t.last_mono_ns:
            cpu_pct = round(max(0.0, 100.0 * (usage.cpu_usage_ns - t.last_cpu_ns) / (mono - t.last_mono_ns)), 2)
        t.last_cpu_ns, t.last_mono_ns = usage.cpu_usage_ns, mono
        mem_pct = memory_percent(usage)
        ev = ContainerResourcesEvent(time.time_ns(), info, usage, cpu_pct, mem_pct, path)
        out: list = [ev]
        with self.lock:
            if self._tracked.get(key) is t:  # not dropped meanwhile by the container's exit
                t.last = ev
            alert = self.watch.update(t, mem_pct)
        if alert:
            self.stats["alerts"] += 1
            out.append(self._memory_alert(ev))
        self.stats["reads"] += 1
        return out

    def _memory_alert(self, ev: ContainerResourcesEvent) -> AlertEvent:
        u, c = ev.usage, ev.container
        used = u.memory_working_set if u.memory_working_set is not None else u.memory_usage
        who = "/".join(x for x in (c.pod_namespace, c.pod_name, c.name) if x) or c.id[:12]
        output = (f"container {who} ({c.id[:12]}) memory {_mib(used)} of its {_mib(u.memory_limit)} limit "
                  f"({ev.memory_percent:g}%) for {self.watch.samples} samples")
        return AlertEvent(ev.ts_ns, MEMORY_RULE, _MEMORY_NAME, _MEMORY_DESCRIPTION, Severity.MEDIUM,
                          output=output, container=c)

    def _emit(self, ev) -> None:
        try:
            self.emit(ev)
        except Exception as e:  # the pipeline counts its outputs' failures; this one failed before them
            self._counts["resources.emit"] += 1
            self.rlog.error("resources:emit", "resources: emit failed: %r", e)

    # -- the container table's notices ---------------------------------------------------------------

    def _on_container(self, kind: str, info: ContainerInfo) -> None:
        if kind in ("exit", "delete"):  # its series leave /metrics now, not at the next sample
            with self.lock:
                self._tracked.pop((info.namespace, info.id), None)

    # -- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[ContainerResourcesEvent], HostResourcesEvent | None]:
        """The last record of every running container and of the host (metrics read it at each scrape)."""
        with self.lock:
            return [t.last for t in self._tracked.values() if t.last is not None], self._host_last

    def drops(self) -> dict[str, int]:
        """Loss counters for the pipeline's agent.drops and nodewarden_drops_total."""
        return {k: self._counts.get(k, 0) for k in ("resources.cut", "resources.late", "resources.emit")}

    def status(self) -> dict:
        with self.lock:
            n = len(self._tracked)
        return {**dict(self.stats), "cgroup_version": self.layout.version, "containers": n,
                "sample_s": round(self.sample_s, 4)}


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f} MiB"
