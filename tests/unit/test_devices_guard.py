"""The device guard (agent/devices/guard.py) and what it knows of allocations (agent/devices/alloc.py).

The kubelet is a real gRPC server this test starts on a unix socket, implementing the pod-resources v1
List (proto/k8s/podresources/v1/api.proto, the kubelet's package and field numbers); containerd's answer is
an OCI spec as containerd stores it (JSON). Events are the typed records the pipeline hands the guard.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from agent.config import DeviceGuardConfig
from agent.devices import alloc
from agent.devices.guard import OPEN_RULE, USE_RULE, DeviceGuard
from agent.devices.podresources import PodResources, PodResourcesError, pb
from agent.events import (
    ContainerInfo,
    DeviceInfoEvent,
    DeviceRef,
    DeviceSampleEvent,
    DeviceUser,
    Enriched,
    FileEvent,
    Op,
    ProcInfo,
)
from agent.outputs import record
from tests.devices.kubelet import FakeKubelet

UUID = ["GPU-0a0a0a0a-0000-0000-0000-000000000000", "GPU-1b1b1b1b-1111-1111-1111-111111111111",
        "GPU-2c2c2c2c-2222-2222-2222-222222222222", "GPU-3d3d3d3d-3333-3333-3333-333333333333"]
# minors deliberately not the indexes: the inventory, not the index, says which node is which GPU
REFS = [DeviceRef("nvidia", i, UUID[i], "NVIDIA H100 80GB HBM3", f"00000000:{0x10 + i:02X}:00.0", minor=3 - i)
        for i in range(4)]


def spec(env=(), devices=()) -> dict:
    return {"ociVersion": "1.0.2", "process": {"args": ["/bin/sh"], "env": ["PATH=/bin", *env]},
            "linux": {"devices": [{"path": p, "type": "c", "major": 195, "minor": 0} for p in devices]}}


# -- alloc --------------------------------------------------------------------------------------------------

def test_node_of():
    assert alloc.node_of("/dev/nvidia3") == ("nvidia", 3)
    assert alloc.node_of("/dev/nvidia12") == ("nvidia", 12)
    assert alloc.node_of("/dev/nvidiactl") == ("nvidia", None)
    assert alloc.node_of("/dev/nvidia-uvm") == ("nvidia", None)
    assert alloc.node_of("/dev/nvidia-caps/nvidia-cap1") == ("nvidia", None)
    assert alloc.node_of("/dev/xpu0") == ("kunlun", 0)
    assert alloc.node_of("/dev/xpuctrl") == ("kunlun", None)
    assert alloc.node_of("/dev/null") is None and alloc.node_of("/tmp/nvidia0") is None


def test_from_spec_env_and_devices():
    a = alloc.from_spec(spec(["NVIDIA_VISIBLE_DEVICES=1,GPU-3d3d3d3d-3333-3333-3333-333333333333::2"]))
    assert (a.source, dict(a.ids)) == ("oci", {"nvidia": frozenset({"1", UUID[3]})})  # the replica suffix dropped
    assert alloc.from_spec(spec(["NVIDIA_VISIBLE_DEVICES=all"])).every == {"nvidia"}
    none = alloc.from_spec(spec(["NVIDIA_VISIBLE_DEVICES=none"]))
    assert none.control == {"nvidia"} and not none.ids and none.has_vendor("nvidia")
    for empty in ("NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=", "CUDA_VISIBLE_DEVICES=0"):
        a = alloc.from_spec(spec([empty]))
        assert not a.has_vendor("nvidia") and a.describe() == "none", empty
    a = alloc.from_spec(spec(["XPU_VISIBLE_DEVICES=0,1"], devices=["/dev/nvidia2", "/dev/fuse"]))
    assert a.ids == {"kunlun": {"0", "1"}} and a.nodes == {"/dev/nvidia2"}
    # the device plugin's volume-mounts strategy: the ids are the mounts below the directory the variable names
    vm = spec(["NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices"])
    vm["mounts"] = [{"destination": f"/var/run/nvidia-container-devices/{UUID[2]}", "source": "/dev/null"},
                    {"destination": "/var/run/nvidia-container-devices/x/y"}, {"destination": "/etc/hosts"}, 7]
    assert alloc.from_spec(vm).ids == {"nvidia": {UUID[2]}}
    # the last definition wins, as in the process's environment; junk never raises
    assert alloc.from_spec(spec(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=2"])).ids == {"nvidia": {"2"}}
    for junk in ({}, {"process": []}, {"process": {"env": "x"}}, {"linux": {"devices": [1, {"path": 3}]}}):
        assert alloc.from_spec(junk).describe() == "none"


def test_node_allowed():
    inv = {("nvidia", r.minor): r for r in REFS}
    by_uuid = alloc.Allocation("kubelet", {"nvidia": frozenset({UUID[1]})})
    assert alloc.node_allowed(by_uuid, "/dev/nvidia2", inv) is True  # GPU 1 has minor 2
    assert alloc.node_allowed(by_uuid, "/dev/nvidia1", inv) is False
    assert alloc.node_allowed(by_uuid, "/dev/nvidiactl", inv) is True  # a GPU of its own: the control nodes too
    assert alloc.node_allowed(by_uuid, "/dev/xpu0", inv) is False
    assert alloc.node_allowed(by_uuid, "/dev/nvidia2", {}) is None  # a UUID no inventory places
    by_index = alloc.Allocation("oci", {"nvidia": frozenset({"3"})})
    assert alloc.node_allowed(by_index, "/dev/nvidia0", inv) is True  # index 3 is minor 0 here
    assert alloc.node_allowed(by_index, "/dev/nvidia3", {}) is True  # no inventory: minor N taken for index N
    assert alloc.node_allowed(by_index, "/dev/nvidia1", {}) is False
    nothing = alloc.Allocation("oci")
    assert alloc.node_allowed(nothing, "/dev/nvidiactl", inv) is False
    assert alloc.node_allowed(alloc.Allocation("oci", control=frozenset({"nvidia"})), "/dev/nvidia-uvm", inv)
    mig = alloc.Allocation("kubelet", {"nvidia": frozenset({"MIG-aaaa"})})
    assert mig.allows_device(REFS[0], "MIG-aaaa") and not mig.allows_device(REFS[0], "MIG-bbbb")
    assert alloc.Allocation("kubelet", {"nvidia": frozenset({UUID[0]})}).allows_device(REFS[0], "MIG-bbbb")


# -- a real kubelet pod-resources server (tests/devices/kubelet.py) ---------------------------------------------

@pytest.fixture
def kubelet(tmp_path):
    k = FakeKubelet(str(tmp_path / "kubelet.sock"))
    yield k
    k.stop()


def test_pod_resources_list(kubelet):
    kubelet.pods = [("ml", "train-0", {"trainer": [("nvidia.com/gpu", [UUID[1], UUID[2]]), ("example.com/nic", ["x"])],
                                       "sidecar": []}),
                    ("ai", "infer-1", {"server": [("kunlunxin.com/xpu", ["xpu-0"]),
                                                  ("nvidia.com/mig-1g.10gb", ["MIG-aaaa"])]})]
    client = PodResources(kubelet.sock)
    got = client.list()
    client.close()
    assert got[("ml", "train-0", "trainer")].ids == {"nvidia": {UUID[1], UUID[2]}}  # another vendor's resource left
    assert got[("ml", "train-0", "sidecar")].describe() == "none"
    assert dict(got[("ai", "infer-1", "server")].ids) == {"kunlun": {"xpu-0"}, "nvidia": {"MIG-aaaa"}}
    assert {a.source for a in got.values()} == {"kubelet"}


def test_pod_resources_dra_claims():
    api = pb()
    c = api.ContainerResources(name="c", dynamic_resources=[api.DynamicResource(claim_name="gpu", claim_resources=[
        api.ClaimResource(driver_name="gpu.nvidia.com", pool_name="node-a", device_name="gpu-2",
                          cdi_devices=[api.CDIDevice(name=f"nvidia.com/gpu={UUID[2]}")])])])
    assert alloc.from_container_resources(c).ids == {"nvidia": {"2", UUID[2]}}


def test_pod_resources_errors(kubelet, tmp_path):
    absent = PodResources(str(tmp_path / "none.sock"), timeout=0.5)
    assert not absent.present()
    with pytest.raises(PodResourcesError, match="UNAVAILABLE") as e:
        absent.list()
    assert "\n" not in str(e.value)
    kubelet.fail = True
    client = PodResources(kubelet.sock, timeout=2)
    with pytest.raises(PodResourcesError, match="UNAVAILABLE: kubelet is restarting"):
        client.list()
    client.close()


# -- the guard -------------------------------------------------------------------------------------------------

def _container(cid, name="app", pod="", ns="", image="registry.example/app:1") -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, image=image, namespace="k8s.io", pod_name=pod, pod_namespace=ns,
                         pid=4000, cgroup_id=77)


def _open(c, path, ret=3, pid=4242) -> Enriched:
    ev = FileEvent(Op.FILE_OPEN, time.time_ns(), pid, pid, 4000, 0, 0, 77, 4026532000, "python3", False,
                   path, "", ret, os.O_RDWR, 0, -100, -1, -1, -1)
    return Enriched(ev, ProcInfo(pid, 4000, "/usr/bin/python3", ("python3", "train.py"), 0, 0), None, c)


class _Run:
    """A started guard and the alerts it emitted."""

    def __init__(self, guard):
        self.guard, self.alerts = guard, []
        self.cond = threading.Condition()

    def emit(self, ev):
        with self.cond:
            self.alerts.append(ev)
            self.cond.notify_all()

    def settle(self):
        """Until the guard's queue is empty and the item it took is judged."""
        deadline = time.monotonic() + 5
        before = -1
        while time.monotonic() < deadline:
            n = self.guard.counts["opens"] + self.guard.counts["samples"]
            if self.guard._q.empty() and n == before:
                return
            before = n
            time.sleep(0.05)


@pytest.fixture
def run(kubelet):
    specs = {}
    holder = {}

    def make(**kw):
        cfg = DeviceGuardConfig(pod_resources_socket=kubelet.sock, **kw)
        r = _Run(None)
        g = DeviceGuard(cfg, r.emit, spec_source=lambda ns, cid: specs.get(cid))
        r.guard, r.specs = g, specs
        for ref in REFS:
            g.observe_device(DeviceInfoEvent(time.time_ns(), ref))
        g.start()
        holder["g"] = g
        return r

    yield make
    if "g" in holder:
        holder["g"].stop()


def test_unallocated_open_alerts_with_the_container(run):
    r = run()
    c = _container("c0ffee" * 8)
    r.specs[c.id] = spec()  # nothing given
    r.guard.observe(_open(c, "/dev/nvidia3"))
    r.guard.observe(_open(c, "/dev/null"))  # not a device of ours: never queued
    r.settle()
    (a,) = r.alerts
    assert (a.rule_id, a.severity.label, a.techniques, a.subject.container.id) == (OPEN_RULE, "high", ("T1611",), c.id)
    assert "/dev/nvidia3" in a.output and "allocated from oci: none" in a.output and "pid 4242" in a.output
    flat = record.flatten(a)
    assert (flat["event.name"], flat["rule.id"], flat["container.id"], flat["file.path"]) == (
        "alert", OPEN_RULE, c.id, "/dev/nvidia3")
    assert flat["trigger.name"] == "file.open" and flat["threat.technique.id"] == ["T1611"]
    assert (flat["device.uuid"], flat["device.path"]) == (UUID[0], "/dev/nvidia3")  # minor 3 is GPU 0 here
    assert r.guard.status()["opens"][0]["path"] == "/dev/nvidia3"


def test_relative_open_judged_by_its_resolved_path(run):
    """`cd /dev && echo x > nvidia1`: a writing open with a relative path is sent by the probe (the ignored
    prefixes match absolute paths only) and the enricher joins it to the cwd."""
    r = run()
    c = _container("5e1a71" * 8)
    r.specs[c.id] = spec()
    en = _open(c, "nvidia1")
    r.guard.observe(Enriched(en.event, en.process, None, c, path_resolved="/dev/nvidia1"))
    r.guard.observe(Enriched(en.event, en.process, None, c, path_resolved="/srv/nvidia1"))
    r.settle()
    (a,) = r.alerts
    assert "opened /dev/nvidia1" in a.output


def test_allocated_open_is_quiet(run):
    r = run()
    c = _container("a110c8" * 8)
    r.specs[c.id] = spec(["NVIDIA_VISIBLE_DEVICES=3"])  # index 3: minor 0 in this inventory
    for path in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps/nvidia-cap1"):
        r.guard.observe(_open(c, path))
    r.settle()
    assert r.alerts == []
    r.guard.observe(_open(c, "/dev/nvidia3"))  # GPU 0, not its own
    r.settle()
    assert [a.output.split(" opened ")[1].split()[0] for a in r.alerts] == ["/dev/nvidia3"]


def test_kubelet_wins_over_the_spec(run, kubelet):
    """A pod that set NVIDIA_VISIBLE_DEVICES=all itself: the kubelet, which gave it GPU 1 only, is believed."""
    kubelet.pods = [("ml", "train-0", {"trainer": [("nvidia.com/gpu", [UUID[1]])]})]
    r = run()
    c = _container("beef01" * 8, name="trainer", pod="train-0", ns="ml")
    r.specs[c.id] = spec(["NVIDIA_VISIBLE_DEVICES=all"])
    r.guard.observe(_open(c, "/dev/nvidia2"))  # GPU 1's minor
    r.guard.observe(_open(c, "/dev/nvidia1"))  # GPU 2's
    r.settle()
    (a,) = r.alerts
    assert "/dev/nvidia1" in a.output and f"allocated from kubelet: nvidia: {UUID[1]}" in a.output
    assert r.guard.status()["kubelet"] == "connected"
    # a pod the kubelet does not list (started after the last List): asked again, then its spec is used
    kubelet.pods.append(("ml", "new-0", {"c": [("nvidia.com/gpu", [UUID[0]])]}))
    n = kubelet.calls
    time.sleep(1.05)
    late = _container("beef02" * 8, name="c", pod="new-0", ns="ml")
    r.guard.observe(_open(late, "/dev/nvidia3"))  # GPU 0's minor: its own
    r.settle()
    assert kubelet.calls == n + 1 and len(r.alerts) == 1


def test_kubelet_down_falls_back_to_the_spec(run, kubelet):
    kubelet.fail = True
    r = run()
    c = _container("d0d0d0" * 8, pod="p", ns="n")
    r.specs[c.id] = spec(["NVIDIA_VISIBLE_DEVICES=0"])
    r.guard.observe(_open(c, "/dev/nvidia3"))  # index 0 is minor 3: its own
    r.guard.observe(_open(c, "/dev/nvidia2"))
    r.settle()
    assert len(r.alerts) == 1 and "allocated from oci: nvidia: 0" in r.alerts[0].output
    st = r.guard.status()
    assert st["kubelet"].startswith("error: kubelet pod-resources List") and r.guard.counts["kubelet_errors"] == 1


def test_refused_open_is_medium(run):
    r = run()
    c = _container("e9e9e9" * 8)
    r.specs[c.id] = spec()
    r.guard.observe(_open(c, "/dev/nvidia1", ret=-1))  # EPERM from the device cgroup
    r.settle()
    (a,) = r.alerts
    assert a.severity.label == "medium" and a.output.endswith("the kernel refused it: errno 1")


def test_unallocated_use_from_a_sample(run, kubelet):
    kubelet.pods = [("ml", "train-0", {"trainer": [("nvidia.com/gpu", [UUID[1]])]})]
    r = run()
    own = _container("f1f1f1" * 8, name="trainer", pod="train-0", ns="ml")
    thief = _container("f2f2f2" * 8, name="miner", pod="web-0", ns="shop")
    r.specs[thief.id] = spec()
    users = (DeviceUser(100, 1 << 30, comm="python3", container=own), DeviceUser(200, 2 << 30, comm="xmrig",
                                                                                 container=thief),
             DeviceUser(300, 1 << 20, comm="nvidia-smi"))  # a host process: not judged
    r.guard.observe_device(DeviceSampleEvent(time.time_ns(), REFS[1], {"gpu_util": 97}, processes=users))
    r.settle()
    (a,) = r.alerts
    assert (a.rule_id, a.severity.label, a.techniques) == (USE_RULE, "high", ("T1496",))
    assert "pid 200 xmrig" in a.output and UUID[1] in a.output and "shop/web-0" in a.output
    flat = record.flatten(a)
    assert {k: flat[k] for k in ("rule.id", "container.id", "container.name", "k8s.pod.name", "k8s.namespace.name",
                                 "process.pid", "process.name", "device.vendor", "device.index", "device.uuid",
                                 "device.path")} == {
        "rule.id": USE_RULE, "container.id": thief.id, "container.name": "miner", "k8s.pod.name": "web-0",
        "k8s.namespace.name": "shop", "process.pid": 200, "process.name": "xmrig", "device.vendor": "nvidia",
        "device.index": 1, "device.uuid": UUID[1], "device.path": "/dev/nvidia2"}
    # its own GPU, seen on another device: that is unallocated use too
    r.guard.observe_device(DeviceSampleEvent(time.time_ns(), REFS[2], {}, processes=users[:1]))
    r.settle()
    assert [x.rule_id for x in r.alerts] == [USE_RULE, USE_RULE] and "pid 100 python3" in r.alerts[1].output
    # a sample without container processes is never queued
    r.guard.observe_device(DeviceSampleEvent(time.time_ns(), REFS[3], {}, processes=users[2:]))
    assert r.guard._q.empty()


def test_repeats_fold_then_alert_again(run):
    now = [1000.0]
    r = run(realert_s=60.0)
    r.guard._clock = lambda: now[0]
    c = _container("abab01" * 8)
    r.specs[c.id] = spec()
    for _ in range(3):
        r.guard.observe(_open(c, "/dev/nvidia0"))
    r.settle()
    assert len(r.alerts) == 1 and r.guard.drops()["devguard.folded"] == 2
    now[0] += 61
    r.guard.observe(_open(c, "/dev/nvidia0"))
    r.settle()
    assert [a.count for a in r.alerts] == [1, 3]  # the one now and the two it held back


def test_exempt_and_unknown(run):
    r = run(exempt=("gpu-operator/*", "nvcr.io/nvidia/k8s/dcgm-exporter:*"))
    plugin = _container("0e0e01" * 8, name="plugin", pod="nvidia-device-plugin-x", ns="gpu-operator")
    dcgm = _container("0e0e02" * 8, image="nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5")
    stranger = _container("0e0e03" * 8)  # containerd has no spec for it: cannot be judged
    for c in (plugin, dcgm, stranger):
        r.guard.observe(_open(c, "/dev/nvidia0"))
    r.guard.observe(_open(None, "/dev/nvidia0"))  # the host: not judged
    r.settle()
    assert r.alerts == [] and r.guard.drops()["devguard.unjudged"] == 1


def test_full_queue_drops_and_counts():
    g = DeviceGuard(DeviceGuardConfig(pod_resources_socket="", queue_size=2), lambda ev: None)
    c = _container("0f0f0f" * 8)
    for _ in range(5):
        g.observe(_open(c, "/dev/nvidia0"))
    assert g.drops()["devguard.queue"] == 3  # never started: nothing taken off the queue


@pytest.mark.parametrize("bad,match", [({"refresh_s": 0}, "device_guard.refresh_s"),
                                       ({"rpc_timeout_s": -1}, "device_guard.rpc_timeout_s"),
                                       ({"realert_s": -5}, "device_guard.realert_s"),
                                       ({"queue_size": 0}, "device_guard.queue_size"),
                                       ({"exempt": ("ok/*", " ")}, "device_guard.exempt")])
def test_bad_settings_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        DeviceGuard(DeviceGuardConfig(pod_resources_socket="", **bad), lambda ev: None)
    assert "\n" not in str(e.value)


def test_config_section_from_yaml(tmp_path):
    from agent import config

    f = tmp_path / "c.yaml"
    f.write_text("device_guard: {exempt: [gpu-operator/*], refresh_s: 3}\nprobes: {watch_devices: [/dev/nvidia]}\n")
    cfg = config.load(str(f), env={})
    assert cfg.device_guard.exempt == ("gpu-operator/*",) and cfg.device_guard.refresh_s == 3.0
    assert cfg.probes.watch_devices == ("/dev/nvidia",)
    f.write_text("device_guard: {queue: 3}\n")
    with pytest.raises(config.ConfigError, match="unknown config key 'device_guard.queue'"):
        config.load(str(f), env={})


def test_daemonset_mounts_the_kubelet_pod_resources_socket(tmp_path):
    """packaging/daemonset.yaml: the pod-resources directory from the host at the same path, read-only, and
    its shipped config loads with the guard's exemptions."""
    from pathlib import Path

    import yaml

    from agent import config

    root = Path(__file__).resolve().parents[2]
    docs = list(yaml.safe_load_all((root / "packaging" / "daemonset.yaml").read_text()))
    (ds,) = [d for d in docs if d.get("kind") == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    sock_dir = os.path.dirname(DeviceGuardConfig().pod_resources_socket)
    (mount,) = [m for c in pod["containers"] for m in c["volumeMounts"] if m["mountPath"] == sock_dir]
    assert mount.get("readOnly") is True
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert vol["hostPath"]["path"] == sock_dir
    (cm,) = [d for d in docs if d.get("kind") == "ConfigMap"]
    (tmp_path / "config.yaml").write_text(cm["data"]["config.yaml"])
    cfg = config.load(str(tmp_path / "config.yaml"), env={})
    assert cfg.device_guard.pod_resources_socket == DeviceGuardConfig().pod_resources_socket
    assert "gpu-operator/*" in cfg.device_guard.exempt
