"""Prometheus metrics and the /healthz, /readyz endpoints beside them.

A registry per agent (never prometheus_client's global one), so tests can run several agents.
Every count is a counter (exposed as `<name>_total`); docs/metrics.md lists each metric, its type and
labels. The exporter's and the image gate's counts are read from their own counters at scrape time
(collectors below), so the hot paths keep a plain integer increment and nothing is counted twice.
"""

from __future__ import annotations

import collections
import platform
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent import __version__

# No `<name>_created` gauge beside each counter and histogram: a second series per label set that no
# dashboard reads (the process start time is process_start_time_seconds). Process-wide, set once here.
disable_created_metrics()

# Kubernetes namespaces are few and long-lived on a node, pods are not (every rollout makes new names):
# a namespace label is bounded by this cap (past it: "_other"), a pod label is never used.
MAX_NAMESPACES = 200
OTHER_NAMESPACE = "_other"
# Image scans take from milliseconds (every layer cached) to minutes (a large image, cold).
SCAN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("nodewarden_events", "Events emitted, by event name", ["event"], registry=r)
        # Counters, not gauges set from totals: rate() and increase() work, and a restart is a reset
        # Prometheus understands. The pipeline increments them by what grew since its last check.
        self.drops = Counter(
            "nodewarden_drops", "Events lost, by stage (kernel.<probe>, queue, decode, output, crash, "
            "exporter.<reason>, containerd.<reason>, imagegate.<reason>)", ["stage"], registry=r,
        )
        self.attribution = Counter(
            "nodewarden_attribution", "Events held for their container, by how the hold ended "
            "(resolved_after_hold, unknown, host_after_hold, held_overflow)", ["result"], registry=r,
        )
        # Detection (agent/detect/engine.py): alerts raised, and rule evaluations (an event meets only the
        # rules of its kind, so evaluations per rule show what each rule costs).
        self.alerts = Counter("nodewarden_alerts", "Alerts raised, by rule id and severity", ["rule", "severity"],
                              registry=r)
        self.rule_evaluations = Counter("nodewarden_rule_evaluations", "Events a detection rule was evaluated on, "
                                        "by rule id", ["rule"], registry=r)
        self.proctable = Gauge("nodewarden_proctable_entries", "Processes in the process table", registry=r)
        self.ready = Gauge("nodewarden_ready", "1 once every probe is attached", registry=r)
        self.build_info = Gauge("nodewarden_build_info", "Always 1: the agent's version, Python and kernel",
                                ["version", "python", "kernel"], registry=r)
        self.build_info.labels(__version__, platform.python_version(), platform.release()).set(1)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (from /proc/self)
        # and python_info; the GC collector is left out: it hooks gc.callbacks once per registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # enforcement.block records, counted where every record passes (count_records).
        self.blocks = Counter("nodewarden_enforcement_blocks", "Enforcement blocks, by enforcement point, action "
                              "and Kubernetes namespace (\"\" outside a pod; at most MAX_NAMESPACES, then "
                              "\"_other\")", ["point", "action", "namespace"], registry=r)
        self.scans = Counter("nodewarden_imagegate_scans", "Image scans, by result (scanned: every layer read, "
                             "partial: some layers from the cache, cached: all from the cache, error)", ["result"],
                             registry=r)
        self.scan_seconds = Histogram("nodewarden_imagegate_scan_duration_seconds", "Time to scan one image "
                                      "(fetching and reading its layers, or their cached results)",
                                      buckets=SCAN_BUCKETS, registry=r)
        self._namespaces: set[str] = set()
        self._ns_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.is_ready = False

    def count_records(self, records: list[dict]) -> None:
        """Per delivered batch (the pipeline's outputs): events by name; enforcement blocks by point."""
        counts = collections.Counter(r["event.name"] for r in records)
        for name, n in counts.items():
            self.events.labels(name).inc(n)
        if "enforcement.block" in counts:  # rare: only then a second look at the batch
            for r in records:
                if r["event.name"] == "enforcement.block":
                    self.blocks.labels(r.get("enforcement.point", ""), r.get("enforcement.action", ""),
                                       self.namespace_label(r.get("k8s.namespace.name", ""))).inc()

    def namespace_label(self, ns) -> str:
        """A Kubernetes namespace as a label value, bounded: the first MAX_NAMESPACES seen, then _other."""
        ns = str(ns or "")
        if not ns or ns in self._namespaces:
            return ns
        with self._ns_lock:
            if len(self._namespaces) >= MAX_NAMESPACES:
                return OTHER_NAMESPACE
            self._namespaces.add(ns)
        return ns

    def observe_scan(self, seconds: float, result: str) -> None:
        """The image gate's hook (GateService.observe_scan): one image scanned."""
        self.scans.labels(result).inc()
        self.scan_seconds.observe(seconds)

    def add_exporter(self, exporter) -> None:
        """Export the gRPC exporter's counters (agent/outputs/grpc_exporter.py), read at each scrape."""
        self.registry.register(_ExporterCollector(exporter))

    def add_gate(self, gate) -> None:
        """Export the image gate's verdict and cache counters, and time its scans."""
        self.registry.register(_GateCollector(gate))
        gate.observe_scan = self.observe_scan

    def summary(self, elapsed_s: float, width: int = 8) -> str:
        """What `nodewarden run` prints on exit: events by kind, alerts by rule, blocks by point, drops by
        stage, from the counters above (so it says what /metrics said). At most `width` items a line."""
        def line(title: str, counts: collections.Counter) -> str:
            total = sum(counts.values())
            items = ", ".join(f"{k} {v:,}" for k, v in counts.most_common(width))
            more = f", +{len(counts) - width} more" if len(counts) > width else ""
            return f"  {title:<7}{total:>10,}" + (f"  {items}{more}" if total else "")

        alerts = collections.Counter({f"{rule}({sev})": n for (rule, sev), n in _counts(self.alerts).items()})
        blocks: collections.Counter = collections.Counter()
        for (point, _action, _ns), n in _counts(self.blocks).items():
            blocks[point] += n
        return "\n".join([
            f"nodewarden: ran {elapsed_s:,.1f} s since agent.ready",
            line("events", collections.Counter({k[0]: n for k, n in _counts(self.events).items()})),
            line("alerts", alerts),
            line("blocks", blocks),
            line("drops", collections.Counter({k[0]: n for k, n in _counts(self.drops).items()})),
        ])

    def add_devices(self, source, hostname: str) -> None:
        """Export the device poller's state (agent/outputs/device_metrics.py: dcgm-exporter's DCGM_* names)."""
        from agent.outputs.device_metrics import DeviceCollector

        self.registry.register(DeviceCollector(source, hostname))

    def add_resources(self, sampler) -> None:
        """Export the resource sampler's last sample (agent/outputs/resource_metrics.py): nodewarden_container_*
        labelled by namespace, pod and container (running containers only), nodewarden_host_*."""
        from agent.outputs.resource_metrics import ResourceCollector

        self.registry.register(ResourceCollector(sampler.snapshot, sampler.status, self.namespace_label))

    def serve(self, listen: str) -> tuple[str, int]:
        host, _, port = listen.rpartition(":")
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    body, ctype, code = b"ok\n", "text/plain", 200
                elif self.path == "/readyz":
                    ok = metrics.is_ready
                    body, ctype, code = (b"ready\n" if ok else b"not ready\n"), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # requests are not events; keep stdout for events
                pass

        self._server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        threading.Thread(target=self._server.serve_forever, name="nw-metrics", daemon=True).start()
        return self._server.server_address[:2]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _counts(counter: Counter) -> collections.Counter:
    """A labelled counter's values by label tuple, the zeros left out."""
    out: collections.Counter = collections.Counter()
    for fam in counter.collect():
        for sample in fam.samples:
            if sample.name.endswith("_total") and sample.value:
                out[tuple(sample.labels.values())] += int(sample.value)
    return out


class _ExporterCollector:
    """nodewarden_exporter_*: the exporter keeps plain integers under its lock; they become series here."""

    def __init__(self, exporter) -> None:
        self.exporter = exporter

    def describe(self):  # no collect() at register time (the exporter may not be started yet)
        return []

    def collect(self):
        m = self.exporter.metrics()
        p = "nodewarden_exporter_"
        yield CounterMetricFamily(p + "submitted", "Records handed to the exporter", value=m["submitted"])
        yield CounterMetricFamily(p + "spooled", "Records written to the on-disk spool", value=m["spooled"])
        yield CounterMetricFamily(p + "acked", "Records the collector acknowledged (sent and stored)", value=m["acked"])
        drops = CounterMetricFamily(p + "drops", "Records lost, by reason (queue_full, spool_full, "
                                    "encode_error; spool_corrupt_segments counts segments)", labels=["reason"])
        for reason, n in sorted(m["drops"].items()):
            drops.add_metric([reason], n)
        yield drops
        yield CounterMetricFamily(p + "reconnects", "Sessions to the collector opened again", value=m["reconnects"])
        yield GaugeMetricFamily(p + "queue_length", "Records in the memory queue, not yet spooled",
                                value=m["queued"])
        yield GaugeMetricFamily(p + "spool_bytes", "Bytes in the spool", value=m["spool_bytes"])
        yield GaugeMetricFamily(p + "spool_pending_events", "Spooled records not yet acknowledged",
                                value=m["spool_pending_events"])
        yield GaugeMetricFamily(p + "connected", "1 while a session to the collector is open",
                                value=1 if m["connected"] else 0)


class _GateCollector:
    """nodewarden_imagegate_*: verdicts, timeouts and cache hits from the gate's own counters."""

    def __init__(self, gate) -> None:
        self.gate = gate

    def describe(self):
        return []

    def collect(self):
        s = self.gate.stats()
        p = "nodewarden_imagegate_"
        v = CounterMetricFamily(p + "verdicts", "Verdicts on started containers, by result", labels=["result"])
        for result in ("allow", "alert", "block"):
            v.add_metric([result], s.get(result, 0))
        yield v
        yield CounterMetricFamily(p + "errors", "Evaluations that failed (the verdict then follows on_error)",
                                  value=s.get("errors", 0))
        yield CounterMetricFamily(p + "timeouts", "Verdicts given by on_timeout while the scan went on",
                                  value=s.get("timeouts", 0))
        yield CounterMetricFamily(p + "queued", "Containers queued for a verdict", value=s.get("queued", 0))
        for what in ("hits", "misses"):
            c = CounterMetricFamily(p + f"cache_{what}", f"Scan cache {what}, by level (image: a whole image's "
                                    "result, layer: one layer's findings)", labels=["level"])
            for level in ("image", "layer"):
                c.add_metric([level], s.get(f"{level}_{what}", 0))
            yield c
        yield GaugeMetricFamily(p + "queue_length", "Containers waiting for a verdict", value=s.get("queue", 0))
