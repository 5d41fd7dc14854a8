"""Which GPUs and XPUs a container was given, and which device node a path names (the device guard's facts).

Where an allocation comes from, in order (agent/devices/guard.py asks):
- the kubelet's pod-resources API (agent/devices/podresources.py): the device plugin's device ids per pod
  container, by resource name ("nvidia.com/gpu": GPU UUIDs, "nvidia.com/mig-1g.10gb": MIG UUIDs,
  "kunlunxin.com/xpu" ...), and DRA claims' CDI devices ("nvidia.com/gpu=0"). When the kubelet lists the
  container, that is the whole truth: a pod that sets NVIDIA_VISIBLE_DEVICES=all itself, to have the NVIDIA
  runtime hand it every GPU without asking the scheduler, is exactly what the guard must catch;
- else the container's OCI spec: linux.devices entries that are device nodes of ours (/dev/nvidia3, CDI and
  `--device` put them there) and the environment the vendor runtime reads: NVIDIA_VISIBLE_DEVICES (indexes,
  GPU/MIG UUIDs, "all", "none": the driver's control nodes but no GPU, "void"/empty: nothing, a directory: the
  device plugin's volume-mounts strategy, one mount per device id below it) and, for Kunlun,
  XPU_VISIBLE_DEVICES (an assumption: Kunlun's container toolkit is configured the same way; say so when wrong).

Device ids are matched against a device's UUID, its MIG UUIDs, its index and its minor number as text; a
replica suffix ("GPU-x::2", time-slicing) is dropped. A per-device node (/dev/nvidiaN, /dev/xpuN) is
allowed when the device with minor N (from the inventory, else index N) is allocated; a control node
(/dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-caps/..., any other /dev/xpu*) when any device of its vendor is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.events import DeviceRef

NVIDIA, KUNLUN = "nvidia", "kunlun"

_PER_DEVICE = {NVIDIA: re.compile(r"/dev/nvidia(\d+)"), KUNLUN: re.compile(r"/dev/xpu(\d+)")}
_PREFIXES = ((NVIDIA, "/dev/nvidia"), (KUNLUN, "/dev/xpu"))

# Resource names (kubelet, device plugins) -> vendor, by prefix.
RESOURCE_VENDORS: tuple[tuple[str, str], ...] = (
    ("nvidia.com/", NVIDIA),
    ("kunlunxin.com/", KUNLUN),
    ("baidu.com/xpu", KUNLUN),
    ("baidu.com/kunlun", KUNLUN),
)
# DRA drivers (ClaimResource.driver_name) -> vendor.
DRA_DRIVERS = {"gpu.nvidia.com": NVIDIA, "kunlunxin.com": KUNLUN, "xpu.kunlunxin.com": KUNLUN}
# The environment each vendor's container runtime reads to hand a container its devices.
VISIBLE_ENV = {NVIDIA: "NVIDIA_VISIBLE_DEVICES", KUNLUN: "XPU_VISIBLE_DEVICES"}

_MAX_IDS = 256  # ids kept per vendor and container: a spec or kubelet answer with more is cut


def node_of(path: str) -> tuple[str, int | None] | None:
    """(vendor, minor) of a device node path; minor None for a control node; None when not ours."""
    for vendor, prefix in _PREFIXES:
        if path.startswith(prefix):
            m = _PER_DEVICE[vendor].fullmatch(path)
            return vendor, (int(m.group(1)) if m else None)
    return None


def resource_vendor(resource: str) -> str:
    """The vendor of a resource name ("nvidia.com/gpu" -> "nvidia"), "" when it is not a device of ours."""
    for prefix, vendor in RESOURCE_VENDORS:
        if resource.startswith(prefix):
            return vendor
    return ""


def _id(raw: str) -> str:
    """A device id as the inventory names it: a time-slicing replica suffix ("GPU-x::2") dropped."""
    return raw.strip().split("::", 1)[0]


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one container was given. `ids`: vendor -> device ids (UUIDs, MIG UUIDs, indexes); `every`: vendors
    whose every device it has ("all"); `control`: vendors whose control nodes it may open with no device
    ("none"); `nodes`: device node paths its OCI spec lists. `source`: kubelet, oci."""

    source: str
    ids: Mapping[str, frozenset[str]] = field(default_factory=dict)
    every: frozenset[str] = frozenset()
    control: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()

    def has_vendor(self, vendor: str) -> bool:
        return (vendor in self.every or vendor in self.control or bool(self.ids.get(vendor))
                or any(node_of(p) and node_of(p)[0] == vendor for p in self.nodes))

    def describe(self) -> str:
        """One line for the alert: what the container has ("none" when nothing)."""
        parts = [f"{v}: all" for v in sorted(self.every)]
        parts += [f"{v}: {','.join(sorted(ids))}" for v, ids in sorted(self.ids.items()) if ids]
        parts += [f"node {p}" for p in sorted(self.nodes)]
        parts += [f"{v}: control nodes only" for v in sorted(self.control - self.every) if not self.ids.get(v)]
        return "; ".join(parts) or "none"

    def allows_device(self, dev: DeviceRef, mig: str = "") -> bool:
        """Whether a device (or one MIG instance of it, `mig`) is the container's."""
        v = dev.vendor
        if v in self.every:
            return True
        ids = self.ids.get(v, frozenset())
        names = {dev.uuid, dev.mig, mig, str(dev.index)} - {""}  # an index is NVML's order, not the minor
        if dev.minor >= 0:
            prefix = "/dev/nvidia" if v == NVIDIA else "/dev/xpu"
            if f"{prefix}{dev.minor}" in self.nodes:
                return True
        # a whole GPU allocated covers its MIG instances; a MIG instance does not cover its GPU's others
        return bool(names & ids) or (bool(mig or dev.mig) and dev.uuid in ids)


def _env(spec: Mapping) -> dict[str, str]:
    proc = spec.get("process") if isinstance(spec, Mapping) else None
    env = proc.get("env") if isinstance(proc, Mapping) else None
    out = {}
    for item in env if isinstance(env, list) else ():
        if isinstance(item, str) and "=" in item:
            k, _, v = item.partition("=")
            if k in VISIBLE_ENV.values():
                out[k] = v  # the last one wins, as in execve's environment
    return out


def _mounted_ids(spec: Mapping, root: str) -> frozenset[str]:
    """NVIDIA's device plugin with deviceListStrategy volume-mounts: the variable names a directory
    (/var/run/nvidia-container-devices) and each device is a mount below it named by its id, so that an
    unprivileged pod cannot name devices through its environment."""
    mounts = spec.get("mounts") if isinstance(spec, Mapping) else None
    prefix = root.rstrip("/") + "/"
    out = set()
    for m in mounts if isinstance(mounts, list) else ():
        dest = m.get("destination") if isinstance(m, Mapping) else None
        if isinstance(dest, str) and dest.startswith(prefix) and "/" not in dest[len(prefix):]:
            out.add(_id(dest[len(prefix):]))
    return frozenset(sorted(out)[:_MAX_IDS])


def from_spec(spec: Mapping) -> Allocation:
    """A container's allocation from its OCI spec (the JSON as a dict): linux.devices and the environment."""
    nodes = set()
    linux = spec.get("linux") if isinstance(spec, Mapping) else None
    devices = linux.get("devices") if isinstance(linux, Mapping) else None
    for d in devices if isinstance(devices, list) else ():
        path = d.get("path") if isinstance(d, Mapping) else None
        if isinstance(path, str) and node_of(path) is not None:
            nodes.add(path)
    ids: dict[str, frozenset[str]] = {}
    every, control = set(), set()
    env = _env(spec)
    for vendor, var in VISIBLE_ENV.items():
        value = env.get(var)
        if value is None:
            continue
        value = value.strip()
        if value == "all":
            every.add(vendor)
        elif value == "none":
            control.add(vendor)  # the runtime mounts the driver's control nodes, no device
        elif value.startswith("/"):
            ids[vendor] = _mounted_ids(spec, value)
        elif value and value != "void":
            ids[vendor] = frozenset(_id(x) for x in value.split(",")[:_MAX_IDS] if x.strip())
    return Allocation("oci", ids, frozenset(every), frozenset(control), frozenset(sorted(nodes)[:_MAX_IDS]))


def _cdi(name: str) -> tuple[str, str] | None:
    """(vendor, id) of a CDI device name "nvidia.com/gpu=0"; None when not a device of ours."""
    kind, sep, dev = name.partition("=")
    vendor = resource_vendor(kind) if sep else ""
    return (vendor, dev) if vendor and dev else None


def from_container_resources(c) -> Allocation:
    """A kubelet ContainerResources message (podresources v1) -> the container's allocation."""
    ids: dict[str, set[str]] = {}
    every: set[str] = set()
    for d in c.devices:
        vendor = resource_vendor(d.resource_name)
        if vendor:
            ids.setdefault(vendor, set()).update(_id(x) for x in list(d.device_ids)[:_MAX_IDS])
    for dyn in c.dynamic_resources:
        for claim in dyn.claim_resources:
            got = [_cdi(x.name) for x in claim.cdi_devices]
            vendor = DRA_DRIVERS.get(claim.driver_name, "")
            if vendor and claim.device_name:  # "gpu-0": the driver's name for index 0
                m = re.fullmatch(r"[a-z]+-(\d+)", claim.device_name)
                got.append((vendor, m.group(1) if m else claim.device_name))
            for vendor, dev in filter(None, got):
                if dev == "all":
                    every.add(vendor)
                else:
                    ids.setdefault(vendor, set()).add(_id(dev))
    return Allocation("kubelet", {v: frozenset(s) for v, s in ids.items()}, frozenset(every))


def per_container(pods: Iterable) -> dict[tuple[str, str, str], Allocation]:
    """ListPodResourcesResponse.pod_resources -> {(pod namespace, pod name, container name): Allocation}."""
    out = {}
    for pod in pods:
        for c in pod.containers:
            out[(pod.namespace, pod.name, c.name)] = from_container_resources(c)
    return out


def node_allowed(alloc: Allocation, path: str, inventory: Mapping[tuple[str, int], DeviceRef]) -> bool | None:
    """Whether a container with `alloc` may open device node `path`: True, False, or None when it cannot be
    told (the allocation names devices by UUID and no inventory says which minor they have)."""
    got = node_of(path)
    if got is None:
        return True
    vendor, minor = got
    if vendor in alloc.every or path in alloc.nodes:
        return True
    if minor is None:
        return alloc.has_vendor(vendor)
    dev = inventory.get((vendor, minor))
    if dev is not None:
        return alloc.allows_device(dev)
    ids = alloc.ids.get(vendor, frozenset())
    if str(minor) in ids:
        return True  # an index, and no inventory: minor N is taken for index N (the common case)
    if any(not x.isdigit() for x in ids):
        return None  # UUIDs we cannot place without the inventory
    return False
