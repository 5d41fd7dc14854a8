"""The device poller (agent/devices/poller.py) over the real NVIDIA backend and the real pynvml, with the fake
libnvidia-ml.so.1 (tests/devices/fake_nvml.c) as the driver: inventory, samples, processes of real
processes attributed through the container table, Xid events, a hung driver call, a missing driver, a
full record queue. No root: the "container" is the test's own cgroup, entered in a real ContainerTable."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

import pytest

from agent.config import DevicesConfig
from agent.devices import NullDevices, build
from agent.devices.kunlun import KunlunBackend
from agent.devices.nvidia import NvidiaBackend
from agent.enrich.cgroups import CgroupResolver
from agent.enrich.container_table import ContainerTable, set_cgroup
from agent.events import DeviceHealthEvent, DeviceInfoEvent, DeviceProcessEvent, DeviceSampleEvent
from agent.vocab import Severity
from tests.devices.build import fake_nvml, missing_compiler
from tests.devices.records import Records

pytestmark = pytest.mark.skipif(bool(missing_compiler()), reason="gcc is needed for the fake NVML")

GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
GPU1 = "GPU-66666666-7777-8888-9999-000000000000"


def _config(path, events, procs=(), extra0="", extra1="") -> None:
    lines = [f"events {events}", "hang_max_ms 20000", "driver_version 550.54.15", "cuda_version 12040",
             "device", f"uuid {GPU0}", "name NVIDIA A100-SXM4-40GB", "serial 1563620001234",
             "pci_bus_id 00000000:3B:00.0", "minor 0", "mem_total 42949672960", "mem_used 1073741824",
             "gpu_util 37", "mem_util 12", "temperature 45", "power_mw 210500", "sm_clock 1410", "mem_clock 1215",
             *[f"process compute {pid} {used}" for pid, used in procs], extra0,
             "device", f"uuid {GPU1}", "name NVIDIA A100-SXM4-40GB", "serial 1563620005678",
             "pci_bus_id 00000000:86:00.0", "minor 1", "mem_total 42949672960", "mem_used 0", "gpu_util 0",
             "temperature 30", "power_mw 60000", extra1]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(x for x in lines if x) + "\n")
    os.replace(tmp, path)  # the fake re-reads on a changed mtime or size; never half a file
    st = os.stat(path)  # two writes in the same tick with the same size would look unchanged
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture
def nvml(tmp_path, monkeypatch):
    lib = fake_nvml()
    cfg, events = tmp_path / "nvml.conf", tmp_path / "events"
    events.write_text("")
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(cfg))
    return lib, cfg, events


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


def _own_container():
    """A ContainerTable holding one container whose cgroup is the test's own (the real lookup path:
    pid -> /proc/<pid>/cgroup -> cgroup id -> container)."""
    res = CgroupResolver()
    path, cgid, _ = res.resolve_pid(os.getpid())
    if not cgid:
        pytest.skip("no cgroup2 here")
    table = ContainerTable()

    def fill(e):
        e.image = "registry.example/train:1"
        e.labels = (("io.kubernetes.container.name", "trainer"), ("io.kubernetes.pod.name", "train-0"),
                    ("io.kubernetes.pod.namespace", "ml"))
        set_cgroup(e, path, cgid)
        e.state = "running"
        return "container"

    return table, table.update("k8s.io", "c" * 64, fill)


def _poller(lib, records, containers=None, **kw):
    cfg = DevicesConfig(**{"interval_s": 0.2, "call_timeout_s": 2.0, "inventory_interval_s": 30.0, **kw})
    p = build(cfg, records, containers=containers, backends=[NvidiaBackend(library=str(lib))])
    p.start()
    assert p.wait_open(10)
    return p


def test_inventory_samples_and_processes_attributed(nvml, sleeper, caplog):
    lib, cfg, events = nvml
    table, info = _own_container()
    _config(cfg, events, procs=[(sleeper.pid, 536870912)])
    rec = Records()
    caplog.set_level(logging.INFO, logger="nodewarden")
    p = _poller(lib, rec, containers=table)
    try:
        start = rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.change == "start")
        s0 = rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU0)
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU1)
        assert "devices: nvidia: 2 devices" in caplog.text
        infos = {e.device.uuid: e for e in rec.of(DeviceInfoEvent)}
        assert set(infos) == {GPU0, GPU1}
        i0 = infos[GPU0]
        assert (i0.device.vendor, i0.device.index, i0.device.model, i0.device.pci_bus_id, i0.device.minor) == \
            ("nvidia", 0, "NVIDIA A100-SXM4-40GB", "00000000:3B:00.0", 0)
        assert (i0.serial, i0.driver_version, i0.cuda_version, i0.memory_total) == \
            ("1563620001234", "550.54.15", "12.4", 42949672960)
        assert infos[GPU1].device.minor == 1
        v = s0.values
        assert (v["gpu_util"], v["mem_util"], v["temperature"], v["power_w"], v["sm_clock"], v["mem_clock"]) == \
            (37, 12, 45, 210.5, 1410, 1215)
        assert v["mem_used"] == 1073741824
        # the process: the real sleep, in the test's cgroup, attributed to the table's container
        assert start.device.uuid == GPU0 and start.user.pid == sleeper.pid and start.user.comm == "sleep"
        assert start.user.used_memory == 536870912
        assert start.user.container is not None and start.user.container.id == info.id
        assert (start.user.container.name, start.user.container.pod_name, start.user.container.pod_namespace) == \
            ("trainer", "train-0", "ml")
        assert [u.pid for u in s0.processes] in ([sleeper.pid], [])  # the first sample may predate the diff
        later = rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU0 and e.processes)
        assert later.processes[0].container.id == info.id
        # the process leaves the device: stop, once
        _config(cfg, events)
        stop = rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.change == "stop")
        assert stop.user.pid == sleeper.pid and stop.user.container.id == info.id
        st = {s.info.device.uuid: s for s in p.snapshot()}
        assert st[GPU0].health == "ok" and st[GPU0].samples >= 2 and not st[GPU0].users
        status = p.status()
        assert status["backends"] == [{"vendor": "nvidia", "state": "running", "reason": ""}]
        assert {d["uuid"] for d in status["devices"]} == {GPU0, GPU1}
    finally:
        p.stop()
    assert len(rec.of(DeviceProcessEvent)) == 2


def test_xid_becomes_health_with_severity_and_the_xid_metric(nvml):
    lib, cfg, events = nvml
    _config(cfg, events)
    rec = Records()
    p = _poller(lib, rec)
    try:
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent))
        with open(events, "a") as f:
            f.write("1 xid 79\n0 xid 13\n")
        x79 = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.xid == 79)
        x13 = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.xid == 13)
        assert x79.device.uuid == GPU1 and x79.kind == "xid" and x79.mnemonic.endswith("GPU_HAS_FALLEN_OFF_THE_BUS")
        assert x79.severity >= Severity.HIGH and x79.action not in ("none", "restart_app")
        assert x13.device.uuid == GPU0 and x13.severity == Severity.MEDIUM and x13.action == "restart_app"
        n = len(rec.items)
        s = rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU1
                     and rec.items.index(e) > n)
        assert s.values["xid_last"] == 79  # DCGM_FI_DEV_XID_ERRORS
        st = {s.info.device.uuid: s for s in p.snapshot()}
        assert st[GPU1].health == "xid" and st[GPU1].last_xid == 79 and st[GPU1].health_events["xid"] == 1
        assert st[GPU0].health == "ok"  # an application fault leaves the GPU healthy
    finally:
        p.stop()


def test_a_hung_call_reports_unresponsive_and_recovered(nvml):
    lib, cfg, events = nvml
    _config(cfg, events, extra1="hang nvmlDeviceGetTemperature")
    rec = Records()
    p = _poller(lib, rec, call_timeout_s=1.0)
    try:
        t0 = time.monotonic()
        un = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "unresponsive")
        assert un.device.uuid == GPU1 and un.severity == Severity.HIGH and "did not return" in un.detail
        assert time.monotonic() - t0 < 5
        time.sleep(1.0)  # the driver still holds the call: samples are skipped and counted, nothing stalls
        assert p.drops()["devices.skipped"] > 0
        assert {s.info.device.uuid: s.health for s in p.snapshot()}[GPU1] == "unresponsive"
        n_before = len(rec.of(DeviceSampleEvent, GPU0))
        _config(cfg, events)  # the hang ends
        rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "recovered" and e.device.uuid == GPU1)
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU1)
        deadline = time.monotonic() + 5
        while len(rec.of(DeviceSampleEvent, GPU0)) <= n_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(rec.of(DeviceSampleEvent, GPU0)) > n_before
        assert {s.info.device.uuid: s.health for s in p.snapshot()}[GPU1] == "ok"
        assert len(rec.of(DeviceHealthEvent)) == 2  # one unresponsive, one recovered: no repeats while hung
    finally:
        t1 = time.monotonic()
        p.stop()
        assert time.monotonic() - t1 < 3


def test_stop_while_the_driver_hangs_returns(nvml):
    lib, cfg, events = nvml
    _config(cfg, events, extra0="hang nvmlDeviceGetUtilizationRates")
    rec = Records()
    p = _poller(lib, rec, call_timeout_s=1.0)
    rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "unresponsive")
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 3  # the worker stays in the driver; nothing waits for it
    _config(cfg, events)  # let the fake's hung thread go


def test_no_driver_one_line_no_records(caplog):
    caplog.set_level(logging.INFO, logger="nodewarden")
    rec = Records()
    cfg = DevicesConfig(interval_s=0.1, call_timeout_s=1.0)
    p = build(cfg, rec, backends=[NvidiaBackend(library="/nonexistent/libnvidia-ml.so.1"),
                                  KunlunBackend(library="/nonexistent/libxpuml.so", mode="xpuml")])
    p.start()
    assert p.wait_open(5)
    time.sleep(0.3)
    p.stop()
    assert rec.items == []
    lines = [r.getMessage() for r in caplog.records if r.name == "nodewarden"]
    assert len(lines) == 1 and lines[0].startswith("devices: no device driver on this node")
    assert "nvidia:" in lines[0] and "kunlun:" in lines[0]
    assert [b["state"] for b in p.status()["backends"]] == ["absent", "absent"]
    assert p.snapshot() == [] and p.drops()["devices.queue"] == 0


def test_disabled_or_no_backends_is_the_null_object():
    assert isinstance(build(DevicesConfig(enabled=False)), NullDevices)
    assert isinstance(build(DevicesConfig(backends=())), NullDevices)
    with pytest.raises(ValueError, match="unknown backend 'amd'"):
        build(DevicesConfig(backends=("amd",)))


def test_a_full_queue_drops_and_counts(nvml):
    lib, cfg, events = nvml
    _config(cfg, events)
    held = threading.Event()
    got: list = []

    def slow_emit(ev):  # the pipeline not taking records
        got.append(ev)
        held.wait(10)

    p = _poller(lib, slow_emit, interval_s=0.05, queue_size=2)
    try:
        deadline = time.monotonic() + 5
        while p.drops()["devices.queue"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.drops()["devices.queue"] > 0
        seen = min(s.samples for s in p.snapshot())
        time.sleep(0.5)
        assert min(s.samples for s in p.snapshot()) > seen  # sampling goes on meanwhile
        assert len(got) == 1  # the one record the stuck emit holds
    finally:
        held.set()
        p.stop()


def test_config_section_from_file_and_environment(tmp_path):
    from agent import config

    path = tmp_path / "nw.yaml"
    path.write_text("devices:\n  interval_s: 2\n  backends: [nvidia]\n  queue_size: 16\n")
    c = config.load(str(path), env={"NODEWARDEN_DEVICES_CALL_TIMEOUT_S": "0.5"})
    assert (c.devices.interval_s, c.devices.backends, c.devices.queue_size, c.devices.call_timeout_s) == \
        (2.0, ("nvidia",), 16, 0.5)
    with pytest.raises(config.ConfigError, match="devices.interval_s"):
        config.load(env={"NODEWARDEN_DEVICES_INTERVAL_S": "often"})
    with pytest.raises(ValueError, match="must be positive"):
        build(DevicesConfig(interval_s=0), backends=[NvidiaBackend(library="/nonexistent")])


def test_a_driver_that_hangs_at_start_is_tried_again(nvml, caplog):
    lib, cfg, events = nvml
    _config(cfg, events, extra0="hang nvmlDeviceGetName")
    caplog.set_level(logging.INFO, logger="nodewarden")
    rec = Records()
    p = _poller(lib, rec, call_timeout_s=1.0, inventory_interval_s=0.5)
    try:
        assert [b["state"] for b in p.status()["backends"]] == ["failed"]
        assert "devices: no device answers yet (nvidia: inventory:" in caplog.text
        assert not rec.of(DeviceInfoEvent)
        _config(cfg, events)  # the driver answers again
        rec.wait(lambda e: isinstance(e, DeviceInfoEvent) and e.device.uuid == GPU1)
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == GPU0)
        assert [b["state"] for b in p.status()["backends"]] == ["running"]
        assert "devices: nvidia: opened after all, 2 devices" in caplog.text
    finally:
        p.stop()


def test_a_full_record_queue_gives_up_samples_first():
    from agent.devices.poller import RecordQueue
    from agent.events import DeviceRef

    d = DeviceRef("nvidia", 0, GPU0)
    q = RecordQueue(3)
    s1, s2 = DeviceSampleEvent(1, d, {}), DeviceSampleEvent(2, d, {})
    info = DeviceInfoEvent(3, d)
    assert q.put(s1) and q.put(info) and q.put(s2)
    xid = DeviceHealthEvent(4, d, "xid", Severity.HIGH, xid=48)
    dbe = DeviceHealthEvent(5, d, "ecc_dbe", Severity.CRITICAL)
    assert not q.put(xid)  # room made: the oldest sample went
    assert not q.put(dbe)  # and the next one
    assert not q.put(DeviceSampleEvent(6, d, {}))  # nothing but unrepeated records left: the new one goes
    assert [q.get(block=False) for _ in range(4)] == [info, xid, dbe, None]
    q.close()
    assert q.get() is None  # closed and empty: the emitter's end


def test_inventory_changes_send_info_and_a_vanished_gpu_is_unavailable(nvml, sleeper):
    lib, cfg, events = nvml
    _config(cfg, events, extra1=f"process compute {sleeper.pid} 4096")
    rec = Records()
    p = _poller(lib, rec, inventory_interval_s=0.4)
    try:
        rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.device.uuid == GPU1)
        assert len(rec.of(DeviceInfoEvent)) == 2
        time.sleep(1.0)  # re-reads of an unchanged inventory send nothing
        assert len(rec.of(DeviceInfoEvent)) == 2
        # GPU1 leaves the driver's list (fallen off the bus), GPU0's power limit changes
        text = cfg.read_text()
        keep = text[:text.index("device", text.index(f"uuid {GPU0}"))].rstrip() + "\npower_limit_mw 300000\n"
        with open(f"{cfg}.tmp", "w") as f:
            f.write(keep)
        os.replace(f"{cfg}.tmp", cfg)
        info = rec.wait(lambda e: isinstance(e, DeviceInfoEvent) and e.device.uuid == GPU0 and e.power_limit_w == 300)
        assert info.device.model == "NVIDIA A100-SXM4-40GB"
        gone = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.device.uuid == GPU1
                        and e.kind == "unavailable")
        assert gone.severity == Severity.CRITICAL
        stop = rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.change == "stop")
        assert stop.device.uuid == GPU1 and stop.user.pid == sleeper.pid
        deadline = time.monotonic() + 5
        while GPU1 in {s.info.device.uuid for s in p.snapshot()} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {s.info.device.uuid for s in p.snapshot()} == {GPU0}
        assert [e.kind for e in rec.of(DeviceHealthEvent)] == ["unavailable"]  # once
    finally:
        p.stop()
