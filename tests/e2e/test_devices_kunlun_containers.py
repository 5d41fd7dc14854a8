"""Kunlun XPU users attributed to real containers: a process in a container of a private containerd holds
an XPU (the fake libxpuml of tests/devices/fake_xpuml.c lists its host pid as root_ns_pid, and its pid
inside the container as pid), and the real poller (agent/devices/poller.py) with the real Kunlun backend
reports it with that container, its pod and its image, in samples and as device.process start/stop."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from agent.config import DevicesConfig
from agent.devices import build
from agent.devices.kunlun import KunlunBackend
from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from agent.events import DeviceProcessEvent, DeviceSampleEvent
from tests.devices.records import Records
from tests.harness.containerd import unique_id, wait_until

pytestmark = pytest.mark.e2e

FAKE_C = os.path.join(os.path.dirname(__file__), "..", "devices", "fake_xpuml.c")
LABELS = {"io.kubernetes.pod.name": "infer-0", "io.kubernetes.pod.namespace": "ml",
          "io.kubernetes.container.name": "server"}
DEVICE = ("device 0 name=R200 uuid=KL-0a1b serial=02K00ABC0001 bus=0000:3d:00.0 mem_total=17179869184 "
          "mem_used=1073741824 util=35 temp=41 power_mw=72500 clock=1300 state=201\n")


def _write(path, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    st = os.stat(path)  # a rewrite of the same size in the same tick must still look changed
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture
def fake_lib(tmp_path, monkeypatch):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake libxpuml")
    so = tmp_path / "libxpuml.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(so), FAKE_C, "-lpthread"], check=True,
                   capture_output=True)
    conf = tmp_path / "xpuml.conf"
    _write(conf, DEVICE)
    monkeypatch.setenv("XPUML_FAKE_CONFIG", str(conf))
    return str(so), conf


def test_an_xpu_process_in_a_container_is_attributed(containerd, busybox_image, fake_lib):
    lib, conf = fake_lib
    table = ContainerTable()
    watcher = ContainerWatcher(ContainerdConfig(socket=str(containerd.socket), backoff_min=0.05, backoff_max=0.5),
                               table)
    watcher.start()
    cid = containerd.run(busybox_image, "sleep", "60", cid=unique_id("xpu"), labels=LABELS)
    rec = Records()
    poller = None
    try:
        info = wait_until(lambda: (i := table.lookup(containerd.namespace, cid)) is not None and i.cgroup_id
                          and i.state == "running" and i, 15)
        host_pid = containerd.task_pid(cid)
        assert host_pid > 1
        # pid 1 is what the process sees in its own namespace; root_ns_pid is the host's.
        _write(conf, DEVICE + f"process 0 pid=1 root_pid={host_pid} mem=536870912 l3=0\n")
        cfg = DevicesConfig(interval_s=0.2, call_timeout_s=2.0, inventory_interval_s=30.0)
        poller = build(cfg, rec, containers=table, backends=[KunlunBackend(library=lib, mode="xpuml")])
        poller.start()
        assert poller.wait_open(10)

        start = rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.change == "start", timeout=15)
        assert (start.device.vendor, start.device.uuid, start.device.model) == ("kunlun", "KL-0a1b", "R200")
        u = start.user
        assert (u.pid, u.used_memory, u.mig, u.comm) == (host_pid, 536870912, "", "sleep")
        assert u.container is not None and u.container.id == info.id == cid
        assert (u.container.pod_name, u.container.pod_namespace, u.container.name) == ("infer-0", "ml", "server")
        assert u.container.image == busybox_image.name
        sample = rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.processes, timeout=15)
        assert [(p.pid, p.container.id) for p in sample.processes] == [(host_pid, cid)]
        assert sample.values["gpu_util"] == 35 and sample.values["power_w"] == 72.5

        _write(conf, DEVICE)  # the process lets the XPU go
        stop = rec.wait(lambda e: isinstance(e, DeviceProcessEvent) and e.change == "stop", timeout=15)
        assert stop.user.pid == host_pid and stop.user.container.id == cid
    finally:
        if poller is not None:
            poller.stop()
        containerd.remove(cid)
        watcher.stop()
    assert sum(isinstance(e, DeviceProcessEvent) for e in rec.items) == 2
