"""Device metrics at scrape time, from the poller's last sample of each device.

NVIDIA readings are exported under dcgm-exporter's names (agent/devices/fields.py), scaled to its units
(frame buffer in MiB), with its labels: gpu, UUID, pci_bus_id, device (nvidiaN), modelName, Hostname,
and pod, namespace, container when a container uses the device (one series per such container, as
dcgm-exporter does with the kubelet's pod-resources; ours come from the processes the driver lists), so
dashboards built for dcgm-exporter work unchanged. Kunlun readings are nodewarden_xpu_<reading> in our
units (bytes, %, C, W) with the same labels, the index under `xpu`. The agent's own view of each device
(up, samples, failed readings, health events, sampling time) is nodewarden_device_*.

A device whose last sample failed exports no readings (a stale value would read as a live one).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.devices.fields import FIELDS

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a backend's own reading names become metric names only if they fit
_WHO = ("pod", "namespace", "container")
_OWN = ("vendor", "gpu", "UUID", "device", "modelName", "Hostname")


def _node_name(vendor: str, minor: int, index: int) -> str:
    prefix = "xpu" if vendor == "kunlun" else "nvidia"
    return f"{prefix}{minor if minor >= 0 else index}"


def _who(st) -> list[tuple[str, str, str]]:
    """(pod, namespace, container) of each container using the device; one empty triple when none does."""
    seen = []
    for u in st.users.values():
        c = u.container
        if c is None:
            continue
        who = (c.pod_name, c.pod_namespace, c.name or c.id)  # outside Kubernetes: the id
        if who not in seen:
            seen.append(who)
    return seen or [("", "", "")]


class DeviceCollector:
    """A prometheus_client collector over `source()` (Poller.snapshot: a list of DeviceState)."""

    def __init__(self, source: Callable[[], list], hostname: str):
        self.source = source
        self.hostname = hostname

    def describe(self):
        return []  # names vary with the devices present: not checked for clashes at registration

    def collect(self):
        states = self.source()
        gpu_labels = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", *_WHO]
        xpu_labels = ["xpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", *_WHO]
        families: dict[str, GaugeMetricFamily] = {}
        up = GaugeMetricFamily("nodewarden_device_up", "1 while the device answers its driver's calls "
                               "(0: unresponsive or unavailable)", labels=_OWN)
        procs = GaugeMetricFamily("nodewarden_device_processes", "Processes using the device", labels=_OWN)
        took = GaugeMetricFamily("nodewarden_device_sample_seconds", "Time the last sample took in the driver",
                                 labels=_OWN)
        samples = CounterMetricFamily("nodewarden_device_samples", "Samples taken", labels=_OWN)
        errors = CounterMetricFamily("nodewarden_device_errors", "Failed driver calls and readings, by what "
                                     "failed (a reading's name, sample, health, inventory, timeout)",
                                     labels=[*_OWN, "reading"])
        health = CounterMetricFamily("nodewarden_device_health_events", "device.health events, by kind",
                                     labels=[*_OWN, "kind"])
        for st in states:
            d = st.info.device
            name = _node_name(d.vendor, d.minor, d.index)
            own = [d.vendor, str(d.index), d.uuid, name, d.model, self.hostname]
            up.add_metric(own, 0.0 if st.health in ("unresponsive", "unavailable") else 1.0)
            procs.add_metric(own, float(len(st.users)))
            took.add_metric(own, st.sample_s)
            samples.add_metric(own, float(st.samples))
            for what, n in sorted(st.errors.items()):
                errors.add_metric([*own, what], float(n))
            for kind, n in sorted(st.health_events.items()):
                health.add_metric([*own, kind], float(n))
            s = st.sample
            if s is None or (not s.values and s.errors):
                continue
            base = [str(d.index), d.uuid, d.pci_bus_id, name, d.model, self.hostname]
            who = _who(st)
            for key, val in s.values.items():
                f = FIELDS.get(key)
                if val is None or isinstance(val, bool):
                    continue
                if d.vendor == "nvidia":
                    if f is None or not f.dcgm:
                        continue
                    metric, value, labels, help_ = f.dcgm, float(val) * f.scale, gpu_labels, f.help
                else:
                    if not _NAME.match(key):
                        continue
                    metric, value, labels = f"nodewarden_xpu_{key}", float(val), xpu_labels
                    help_ = f"{f.help} ({f.unit})" if f is not None else key
                fam = families.get(metric)
                if fam is None:
                    fam = families[metric] = GaugeMetricFamily(metric, help_ or metric, labels=labels)
                for w in who:
                    fam.add_metric([*base, *w], value)
        yield from families.values()
        yield from (up, procs, took, samples, errors, health)
