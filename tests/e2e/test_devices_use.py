"""A GPU used from a container that was not given one (issue 12), end to end: the real agent with its device
poller on the real pynvml over the fake libnvidia-ml.so.1 (tests/devices/fake_nvml.c), whose process list
names the host pids of two real containers' processes. The poller attributes them to their containers (host
pid -> cgroup -> the container table); the device guard finds the one without an allocation and raises
device.unallocated_use with its container, pid and device; the one given GPU 0 (NVIDIA_VISIBLE_DEVICES=0 in
its OCI spec) raises nothing. `nodewarden devices` then shows both from the agent's status.json.
"""

from __future__ import annotations

import os
import uuid

import pytest

from agent.commands import devices as devices_cmd
from tests.devices.build import fake_nvml, missing_compiler
from tests.harness.containerd import wait_until
from tests.kernel.conftest import AgentProcess

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(missing_compiler()), reason=missing_compiler() or "ok")]

UUID0 = "GPU-6a1b2c3d-0000-4000-8000-000000000000"


def _sleeper(containerd, image, env: tuple[str, ...] = ()) -> tuple[str, int]:
    cid = f"nw-gpu-{uuid.uuid4().hex[:8]}"
    containerd.ctr("run", "-d", "--null-io", *[a for e in env for a in ("--env", e)], image.name, cid,
                   "/bin/sleep", "120")
    pid = wait_until(lambda: containerd.task_pid(cid), timeout=10)
    return cid, pid


def test_gpu_use_from_a_container_without_one(containerd, busybox_image, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    thief, thief_pid = _sleeper(containerd, busybox_image)
    owner, owner_pid = _sleeper(containerd, busybox_image, env=("NVIDIA_VISIBLE_DEVICES=0",))
    agent = None
    try:
        nvml = tmp_path / "nvml.conf"
        nvml.write_text("\n".join([
            "driver_version 550.54.15", "cuda_version 12040", "device", f"uuid {UUID0}",
            "name NVIDIA H100 80GB HBM3", "pci_bus_id 00000000:17:00.0", "minor 0", f"mem_total {80 << 30}",
            f"mem_used {3 << 30}", "temperature 40", "power_mw 90000", "gpu_util 99",
            f"process compute {thief_pid} {2 << 30}", f"process compute {owner_pid} {1 << 30}"]) + "\n")
        state = tmp_path / "state"
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(f"agent: {{state_dir: {state}}}\ndevices: {{interval_s: 1, backends: [nvidia]}}\n")
        monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml().parent))
        monkeypatch.setenv("FAKE_NVML_CONFIG", str(nvml))
        agent = AgentProcess("--containerd-socket", str(containerd.socket), "--config", str(cfg),
                             "--families", "process,file,cgroup")
        (alert,) = agent.wait_for(lambda r: r["event.name"] == "alert" and r["rule.id"] == "device.unallocated_use",
                                  timeout=30)
        assert (alert["container.id"], alert["process.pid"], alert["process.name"]) == (thief, thief_pid, "sleep")
        assert (alert["device.uuid"], alert["device.index"], alert["device.path"]) == (UUID0, 0, "/dev/nvidia0")
        assert alert["event.severity"] == "high" and alert["threat.technique.id"] == ["T1496"]
        assert "allocated from oci: none" in alert["alert.output"]
        # the owner's process is in the same samples, attributed to its container, and raises nothing
        agent.wait_for(lambda r: r["event.name"] == "device.sample", count=3, timeout=10)
        assert [a for a in agent.find(lambda r: r["event.name"] == "alert") if a.get("container.id") == owner] == []
        assert len(agent.find(lambda r: r["event.name"] == "alert" and r["rule.id"] == "device.unallocated_use")) == 1
        # nodewarden devices, from the running agent's status file
        agent.status(str(state))
        rep = wait_until(lambda: (r := devices_cmd.from_agent(str(state))) and r["devices"] and
                         r["devices"][0]["processes"] and r, timeout=15)
        text = devices_cmd.render(rep)
        assert "NVIDIA H100 80GB HBM3" in text and "40C" in text and "99%" in text
        assert f"pid {thief_pid}" in text and f"({thief[:12]})" in text and f"({owner[:12]})" in text
    finally:
        if agent is not None:
            agent.stop()
        containerd.remove(thief)
        containerd.remove(owner)
