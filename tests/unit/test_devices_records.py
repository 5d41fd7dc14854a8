"""Device records (agent/events.py Device*Event) through the one flattener, the protobuf Event and back,
the text log, and /metrics (dcgm-exporter's names and labels). Synthetic typed records, as a replay
source would hand them; the poller and the drivers are tested in tests/unit/test_devices_poller.py."""

from __future__ import annotations

import io
from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.devices.fields import FIELDS, MIB
from agent.devices.poller import DeviceState, state_dict
from agent.events import (
    ContainerInfo,
    DeviceHealthEvent,
    DeviceInfoEvent,
    DeviceProcessEvent,
    DeviceRef,
    DeviceSampleEvent,
    DeviceUser,
)
from agent.outputs import record
from agent.outputs.device_metrics import DeviceCollector
from agent.outputs.log import TextLog
from agent.vocab import Severity
from nwwire.codec import to_event, to_record

T = 1_764_000_000_123_456_789
GPU = DeviceRef("nvidia", 1, "GPU-4b1c", "NVIDIA A100-SXM4-40GB", "00000000:3B:00.0", 3)
MIG = DeviceRef("nvidia", 0, "MIG-77aa", "1g.5gb", minor=-1)
C = ContainerInfo(id="c" * 64, name="trainer", image="registry/train:1", pod_name="train-0", pod_namespace="ml")
USER = DeviceUser(pid=4242, used_memory=512 * MIB, mig="MIG-77aa", comm="python3", container=C)
HOST_USER = DeviceUser(pid=77, used_memory=None, comm="Xorg")

ALL_VALUES = {name: (37.5 if f.unit in ("%", "C", "W") else 3 * MIB if f.unit == "bytes" else 7)
              for name, f in FIELDS.items()}


def _back(rec: dict) -> dict:
    ev = to_event(rec)
    assert ev.extra_json == b"", f"keys without a field: {ev.extra_json!r}"
    out = to_record(ev)
    for k in ("host.name", "nodewarden.agent_id", "nodewarden.boot_id", "seq"):
        out.pop(k)
    return out


def test_device_info_every_field_and_round_trip():
    ev = DeviceInfoEvent(T, GPU, serial="1563620001234", driver_version="550.54.15", cuda_version="12.4",
                         memory_total=40 * 1024 * MIB, power_limit_w=400.0, ecc_mode="enabled", mig_mode="enabled",
                         mig_devices=(MIG,))
    rec = record.flatten(ev)
    assert rec == {
        "event.name": "device.info", "timestamp": "2025-11-24T16:00:00.123456789Z", "event.severity": "info",
        "device.vendor": "nvidia", "device.index": 1, "device.uuid": "GPU-4b1c",
        "device.model": "NVIDIA A100-SXM4-40GB",
        "device.pci_bus_id": "00000000:3B:00.0", "device.minor": 3, "device.path": "/dev/nvidia3",
        "device.serial": "1563620001234", "device.driver_version": "550.54.15", "device.cuda_version": "12.4",
        "device.memory.total": 40 * 1024 * MIB, "device.power_limit_w": 400.0, "device.ecc_mode": "enabled",
        "device.mig_mode": "enabled", "device.mig_devices": [{"index": 0, "uuid": "MIG-77aa", "name": "1g.5gb"}],
    }
    assert to_event(rec).WhichOneof("kind") == "device_info"
    assert _back(rec) == rec


def test_device_info_unknowns_are_absent():
    rec = record.flatten(DeviceInfoEvent(T, DeviceRef("kunlun", 0, "XPU-1")))
    assert rec == {"event.name": "device.info", "timestamp": "2025-11-24T16:00:00.123456789Z",
                   "event.severity": "info", "device.vendor": "kunlun", "device.index": 0, "device.uuid": "XPU-1",
                   "device.mig_devices": []}
    assert _back(rec) == rec


def test_device_sample_every_reading_typed_and_round_trip():
    ev = DeviceSampleEvent(T, GPU, ALL_VALUES, throttle=("sw_power_cap", "hw_slowdown"),
                           processes=(USER, HOST_USER), errors=("ecc_sbe_volatile: Not Supported",))
    rec = record.flatten(ev)
    for name, f in FIELDS.items():
        v = rec[f"device.{name}"]
        assert type(v) is (float if f.unit in ("%", "C", "W") else int), name  # the proto field's type
    assert rec["device.gpu_util"] == 37.5 and rec["device.mem_used"] == 3 * MIB and rec["device.xid_last"] == 7
    assert rec["device.throttle"] == ["sw_power_cap", "hw_slowdown"]
    assert rec["device.errors"] == ["ecc_sbe_volatile: Not Supported"]
    assert rec["device.processes"] == [
        {"pid": 4242, "used_memory": 512 * MIB, "mig": "MIG-77aa", "name": "python3", "container.id": C.id,
         "container.name": "trainer", "container.image.name": "registry/train:1", "k8s.pod.name": "train-0",
         "k8s.namespace.name": "ml"},
        {"pid": 77, "name": "Xorg"},
    ]
    assert "container.id" not in rec  # a sample is about a device: its users are in device.processes
    assert _back(rec) == rec


def test_device_sample_int_readings_from_a_driver_become_the_fields_type():
    rec = record.flatten(DeviceSampleEvent(T, GPU, {"temperature": 45, "power_w": 210, "sm_clock": 1410.0}))
    assert (rec["device.temperature"], rec["device.power_w"], rec["device.sm_clock"]) == (45.0, 210.0, 1410)
    assert rec["device.processes"] == [] and rec["device.throttle"] == [] and rec["device.errors"] == []
    assert _back(rec) == rec


def test_device_health_xid_every_field():
    ev = DeviceHealthEvent(T, GPU, "xid", Severity.CRITICAL, "GPU has fallen off the bus", xid=79,
                           mnemonic="GPU_HAS_FALLEN_OFF_THE_BUS", action="reset_gpu")
    rec = record.flatten(ev)
    assert rec == {
        "event.name": "device.health", "timestamp": "2025-11-24T16:00:00.123456789Z", "event.severity": "critical",
        "device.vendor": "nvidia", "device.index": 1, "device.uuid": "GPU-4b1c",
        "device.model": "NVIDIA A100-SXM4-40GB",
        "device.pci_bus_id": "00000000:3B:00.0", "device.minor": 3, "device.path": "/dev/nvidia3",
        "device.health.kind": "xid", "device.health.detail": "GPU has fallen off the bus", "device.xid": 79,
        "device.xid_mnemonic": "GPU_HAS_FALLEN_OFF_THE_BUS", "device.health.action": "reset_gpu",
    }
    assert _back(rec) == rec
    line = TextLog.format(rec)
    assert "device.health" in line and "CRITICAL nvidia3 GPU-4b1c xid 79 GPU_HAS_FALLEN_OFF_THE_BUS" in line
    assert "action=reset_gpu" in line


def test_device_health_unresponsive():
    rec = record.flatten(DeviceHealthEvent(T, GPU, "unresponsive", Severity.HIGH, "sample did not return in 2 s"))
    assert rec["event.severity"] == "high" and rec["device.health.kind"] == "unresponsive"
    assert "device.xid" not in rec and "device.health.action" not in rec
    assert _back(rec) == rec


def test_device_process_carries_the_process_and_its_container():
    rec = record.flatten(DeviceProcessEvent(T, GPU, "start", USER))
    assert rec == {
        "event.name": "device.process", "timestamp": "2025-11-24T16:00:00.123456789Z", "event.severity": "info",
        "device.vendor": "nvidia", "device.index": 1, "device.uuid": "GPU-4b1c",
        "device.model": "NVIDIA A100-SXM4-40GB",
        "device.pci_bus_id": "00000000:3B:00.0", "device.minor": 3, "device.path": "/dev/nvidia3",
        "device.process.change": "start", "process.pid": 4242, "process.name": "python3",
        "device.process.used_memory": 512 * MIB, "device.mig.uuid": "MIG-77aa", "container.id": C.id,
        "container.name": "trainer", "container.image.name": "registry/train:1", "container.runtime": "containerd",
        "k8s.pod.name": "train-0", "k8s.namespace.name": "ml",
    }
    ev = to_event(rec)
    assert ev.process.pid == 4242 and ev.container.id == C.id and ev.container.pod_name == "train-0"
    assert _back(rec) == rec
    line = TextLog.format(rec)
    assert "start pid=4242 python3 on nvidia3 GPU-4b1c mig=MIG-77aa mem=512MiB" in line and "pod=ml/train-0" in line


def test_kunlun_device_node_and_text_line():
    x = DeviceRef("kunlun", 2, "XPU-9", "R200", "0000:5e:00.0", 2)
    rec = record.flatten(DeviceSampleEvent(T, x, {"gpu_util": 12, "mem_used": 2 * MIB, "mem_total": 16 * 1024 * MIB,
                                                   "temperature": 51, "power_w": 80.5}, processes=(USER,)))
    assert rec["device.path"] == "/dev/xpu2"
    out = io.BytesIO()
    TextLog(out).emit([rec])
    line = out.getvalue().decode()
    assert "device.sample" in line and "xpu2 XPU-9 util=12% temp=51C power=80.5W mem=2MiB/16384MiB" in line
    assert f"procs=4242@{C.id[:12]}" in line


def _scrape(states, host="node-1") -> dict:
    reg = CollectorRegistry()
    reg.register(DeviceCollector(lambda: states, host))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_dcgm_names_units_and_labels():
    info = DeviceInfoEvent(T, GPU)
    sample = DeviceSampleEvent(T, GPU, ALL_VALUES, processes=(USER, HOST_USER))
    st = DeviceState(info, sample, users={(USER.pid, USER.mig): USER, (77, ""): HOST_USER}, last_xid=7,
                     errors=Counter({"ecc_sbe_volatile": 2}), health_events=Counter({"xid": 1}), samples=5,
                     sample_s=0.0012)
    got = _scrape([st])
    labels = {"gpu": "1", "UUID": "GPU-4b1c", "pci_bus_id": "00000000:3B:00.0", "device": "nvidia3",
              "modelName": "NVIDIA A100-SXM4-40GB", "Hostname": "node-1", "pod": "train-0", "namespace": "ml",
              "container": "trainer"}
    for name, f in FIELDS.items():
        assert got[f.dcgm] == [(labels, ALL_VALUES[name] * f.scale)], f.dcgm
    assert got["DCGM_FI_DEV_FB_USED"][0][1] == 3.0  # MiB, as dcgm-exporter
    own = {"vendor": "nvidia", "gpu": "1", "UUID": "GPU-4b1c", "device": "nvidia3",
           "modelName": "NVIDIA A100-SXM4-40GB", "Hostname": "node-1"}
    assert got["nodewarden_device_up"] == [(own, 1.0)]
    assert got["nodewarden_device_processes"] == [(own, 2.0)]
    assert got["nodewarden_device_samples_total"] == [(own, 5.0)]
    assert got["nodewarden_device_errors_total"] == [({**own, "reading": "ecc_sbe_volatile"}, 2.0)]
    assert got["nodewarden_device_health_events_total"] == [({**own, "kind": "xid"}, 1.0)]
    assert got["nodewarden_device_sample_seconds"] == [(own, 0.0012)]


def test_metrics_unused_device_kunlun_and_failed_sample():
    x = DeviceRef("kunlun", 0, "XPU-1", "R200", "0000:5e:00.0", 0)
    xs = DeviceState(DeviceInfoEvent(T, x), DeviceSampleEvent(T, x, {"gpu_util": 12, "mem_used": 2 * MIB,
                                                                      "odd-name": 1}))
    bad = DeviceState(DeviceInfoEvent(T, GPU), DeviceSampleEvent(T, GPU, {}, errors=("sample: GPU is lost",)),
                      health="unresponsive")
    got = _scrape([xs, bad])
    xl = {"xpu": "0", "UUID": "XPU-1", "pci_bus_id": "0000:5e:00.0", "device": "xpu0", "modelName": "R200",
          "Hostname": "node-1", "pod": "", "namespace": "", "container": ""}
    assert got["nodewarden_xpu_gpu_util"] == [(xl, 12.0)]
    assert got["nodewarden_xpu_mem_used"] == [(xl, 2.0 * MIB)]  # our unit (bytes)
    assert not any(k.startswith("DCGM_") for k in got)  # the failed GPU sample exports no stale readings
    assert not any("odd" in k for k in got)
    up = {lab["UUID"]: v for lab, v in got["nodewarden_device_up"]}
    assert up == {"XPU-1": 1.0, "GPU-4b1c": 0.0}


def test_state_dict_for_the_status_file():
    st = DeviceState(DeviceInfoEvent(T, GPU, driver_version="550"), DeviceSampleEvent(T, GPU, {"gpu_util": 3}),
                     users={(USER.pid, USER.mig): USER}, health="xid", last_xid=48)
    d = state_dict(st)
    assert d["uuid"] == "GPU-4b1c" and d["minor"] == 3 and d["health"] == "xid" and d["last_xid"] == 48
    assert d["values"] == {"gpu_util": 3} and d["driver_version"] == "550"
    assert d["processes"] == [{"pid": 4242, "comm": "python3", "used_memory": 512 * MIB, "mig": "MIG-77aa",
                               "container_id": C.id, "container_name": "trainer", "image": "registry/train:1",
                               "pod": "train-0", "namespace": "ml"}]


def test_odd_readings_from_a_backend_never_fail_the_record():
    rec = record.flatten(DeviceSampleEvent(T, GPU, {"gpu_util": 5, "mem_used": float("inf"), "sm_clock": 1410.0,
                                                   "power_w": "n/a", "temperature": True}))
    assert rec["device.gpu_util"] == 5.0 and rec["device.sm_clock"] == 1410
    assert "device.mem_used" not in rec and "device.power_w" not in rec and "device.temperature" not in rec
    assert _back(rec) == rec
