"""Resource metrics at scrape time, from the resource sampler's last sample (agent/resources/sampler.py).

Per container: nodewarden_container_*{namespace, pod, container} (the Kubernetes namespace and pod; outside
Kubernetes both empty and `container` the container's name, else its id). Only these three labels, and only
containers running at the last sample: a container that exits or is deleted leaves /metrics with its record,
so the series follow what runs on the node (a few hundred containers), never the history of pods. Two records
with the same three labels (a restarted container whose old task is still being reaped) give one series: the
latest started.

Per host: nodewarden_host_* (psutil), filesystems labelled by the path given in resources.filesystems.
A counter the kernel does not offer for a container (a controller not enabled) has no series, never a 0.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_WHO = ["namespace", "pod", "container"]
_NS = 1_000_000_000

# (metric, help, kind, ContainerUsage field, scale): kind "c" counter, "g" gauge.
_CONTAINER = (
    ("cpu_seconds", "CPU time used by the container's processes", "c", "cpu_usage_ns", 1 / _NS),
    ("cpu_throttled_seconds", "Time the container's processes were throttled by their CPU quota", "c",
     "cpu_throttled_ns", 1 / _NS),
    ("cpu_throttled_periods", "CFS periods in which the container was throttled", "c", "cpu_throttled_periods", 1),
    ("memory_bytes", "Memory charged to the container's cgroup (page cache included)", "g", "memory_usage", 1),
    ("memory_working_set_bytes", "Memory usage less inactive file pages (what the kubelet evicts on)", "g",
     "memory_working_set", 1),
    ("memory_limit_bytes", "The container's memory limit (no series: no limit)", "g", "memory_limit", 1),
    ("memory_rss_bytes", "Anonymous memory of the container", "g", "memory_rss", 1),
    ("memory_cache_bytes", "File pages charged to the container", "g", "memory_cache", 1),
    ("memory_limit_hits", "Times the container's memory reached its limit (v2 memory.events max, v1 failcnt)", "c",
     "memory_limit_hits", 1),
    ("oom_kills", "Processes of the container killed by the OOM killer", "c", "oom_kills", 1),
    ("pids", "Tasks in the container's cgroup", "g", "pids", 1),
    ("pids_limit", "The container's pids limit (no series: no limit)", "g", "pids_limit", 1),
    ("io_read_bytes", "Bytes read from block devices", "c", "io_read_bytes", 1),
    ("io_write_bytes", "Bytes written to block devices", "c", "io_write_bytes", 1),
    ("io_read_ops", "Block device reads", "c", "io_read_ops", 1),
    ("io_write_ops", "Block device writes", "c", "io_write_ops", 1),
    ("network_receive_bytes", "Bytes received in the container's network namespace (loopback not counted; "
     "a pod's containers share one)", "c", "net_rx_bytes", 1),
    ("network_transmit_bytes", "Bytes sent from the container's network namespace", "c", "net_tx_bytes", 1),
    ("network_receive_packets", "Packets received in the container's network namespace", "c", "net_rx_packets", 1),
    ("network_transmit_packets", "Packets sent from the container's network namespace", "c", "net_tx_packets", 1),
)

_HOST = (
    ("memory_total_bytes", "Physical memory", "g", "memory_total", 1),
    ("memory_available_bytes", "Memory available to new processes without swapping", "g", "memory_available", 1),
    ("memory_used_bytes", "Memory in use (psutil's used)", "g", "memory_used", 1),
    ("swap_total_bytes", "Swap space", "g", "swap_total", 1),
    ("swap_used_bytes", "Swap in use", "g", "swap_used", 1),
    ("load1", "Load average over 1 minute", "g", "load1", 1),
    ("load5", "Load average over 5 minutes", "g", "load5", 1),
    ("load15", "Load average over 15 minutes", "g", "load15", 1),
    ("cpus", "Logical CPUs", "g", "cpu_count", 1),
    ("disk_read_bytes", "Bytes read from every disk", "c", "disk_read_bytes", 1),
    ("disk_write_bytes", "Bytes written to every disk", "c", "disk_write_bytes", 1),
    ("disk_read_ops", "Reads from every disk", "c", "disk_read_ops", 1),
    ("disk_write_ops", "Writes to every disk", "c", "disk_write_ops", 1),
    ("network_receive_bytes", "Bytes received on every interface but loopback", "c", "net_rx_bytes", 1),
    ("network_transmit_bytes", "Bytes sent on every interface but loopback", "c", "net_tx_bytes", 1),
    ("network_receive_packets", "Packets received on every interface but loopback", "c", "net_rx_packets", 1),
    ("network_transmit_packets", "Packets sent on every interface but loopback", "c", "net_tx_packets", 1),
)


def _family(name: str, doc: str, kind: str, labels: list[str]):
    cls = CounterMetricFamily if kind == "c" else GaugeMetricFamily
    return cls(name, doc, labels=labels)


class ResourceCollector:
    """A prometheus_client collector over `source()` (Sampler.snapshot) and `stats()` (the sampler's counts)."""

    def __init__(self, source: Callable[[], tuple], stats: Callable[[], dict], namespace_label=None):
        self.source = source
        self.stats = stats
        self.namespace_label = namespace_label or (lambda ns: ns)  # Metrics.namespace_label: bounded

    def describe(self):
        return []

    def collect(self):
        records, host = self.source()
        yield from self._containers(records)
        if host is not None:
            yield from self._host(host)
        s = self.stats()
        yield CounterMetricFamily("nodewarden_resources_samples", "Resource samples taken", value=s.get("samples", 0))
        yield CounterMetricFamily("nodewarden_resources_read_errors", "Container cgroup reads that failed (other "
                                  "than a container gone meanwhile)", value=s.get("read_errors", 0))
        yield GaugeMetricFamily("nodewarden_resources_sample_seconds", "Time the last sample took",
                                value=s.get("sample_s", 0.0))
        yield GaugeMetricFamily("nodewarden_resources_containers", "Running containers sampled",
                                value=s.get("containers", 0))

    def _containers(self, records):
        best: dict[tuple[str, str, str], object] = {}
        for ev in records:
            c = ev.container
            who = (self.namespace_label(c.pod_namespace), c.pod_name, c.name or c.id)
            old = best.get(who)
            if old is None or (c.started_ns, ev.ts_ns) > (old.container.started_ns, old.ts_ns):
                best[who] = ev
        fams = [(_family(f"nodewarden_container_{m}", doc, kind, _WHO), field, scale)
                for m, doc, kind, field, scale in _CONTAINER]
        cpu_pct = GaugeMetricFamily("nodewarden_container_cpu_percent", "CPU use over the last sample interval "
                                    "(100 = one CPU)", labels=_WHO)
        mem_pct = GaugeMetricFamily("nodewarden_container_memory_limit_percent", "Working set against the memory "
                                    "limit (no series: no limit)", labels=_WHO)
        for who, ev in sorted(best.items()):
            u, labels = ev.usage, list(who)
            for fam, field, scale in fams:
                v = getattr(u, field)
                if v is not None:
                    fam.add_metric(labels, v * scale)
            if ev.cpu_percent is not None:
                cpu_pct.add_metric(labels, ev.cpu_percent)
            if ev.memory_percent is not None:
                mem_pct.add_metric(labels, ev.memory_percent)
        yield from (f for f, _, _ in fams)
        yield cpu_pct
        yield mem_pct

    def _host(self, h):
        cpu = CounterMetricFamily("nodewarden_host_cpu_seconds", "CPU time of all CPUs, by mode", labels=["mode"])
        for mode in ("user", "system", "idle", "iowait"):
            cpu.add_metric([mode], getattr(h, f"cpu_{mode}_s"))
        yield cpu
        if h.cpu_percent is not None:
            yield GaugeMetricFamily("nodewarden_host_cpu_percent", "Busy share of all CPUs over the last sample "
                                    "interval", value=h.cpu_percent)
        for m, doc, kind, field, scale in _HOST:
            v = getattr(h, field)
            if v is not None:
                fam = _family(f"nodewarden_host_{m}", doc, kind, [])
                fam.add_metric([], v * scale)
                yield fam
        size = GaugeMetricFamily("nodewarden_host_filesystem_size_bytes", "Filesystem size", labels=["path"])
        free = GaugeMetricFamily("nodewarden_host_filesystem_free_bytes", "Filesystem space free to unprivileged "
                                 "users", labels=["path"])
        used = GaugeMetricFamily("nodewarden_host_filesystem_used_bytes", "Filesystem space used", labels=["path"])
        for fs in h.filesystems:
            size.add_metric([fs.path], fs.total)
            free.add_metric([fs.path], fs.free)
            used.add_metric([fs.path], fs.used)
        yield from (size, free, used)
