"""Unauthorized device access in real containers (issue 12): the real agent, a private containerd, busybox.

There is no GPU here: the device node is a character device this test makes on the host (1:3, the null
device, so the device cgroup lets the container open it and nothing is touched) and bind-mounts into the
container as /dev/nvidia3. A container that was given no GPU opens it: the file probe sends the open
although /dev/ is ignored (probes.watch_devices), and the device guard raises device.unauthorized_open with
the container's id. A container given GPU 3 through NVIDIA_VISIBLE_DEVICES (its OCI spec, as the NVIDIA
container runtime reads it) opens the same node: its open is reported, and no alert. No kubelet socket
here for the first two: allocations come from each container's spec, read from containerd. The third runs
its own agent with a kubelet (a real pod-resources gRPC server this test serves) and the fake NVML for the
inventory: a pod container that set NVIDIA_VISIBLE_DEVICES=all itself, which the kubelet gave no GPU, is
alerted; the pod container the kubelet gave that GPU (by UUID, as NVIDIA's device plugin does) is not.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.devices.build import fake_nvml, missing_compiler
from tests.devices.kubelet import FakeKubelet
from tests.harness.containerd import wait_until
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(containerd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = AgentProcess("--containerd-socket", str(containerd.socket), "--families", "process,file,cgroup")
    yield a
    a.stop()


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "nvidia3"
    os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
    return str(path)


def _run(containerd, image, node: str, env: tuple[str, ...] = (), labels: dict | None = None) -> str:
    """A detached container that opens /dev/nvidia3 for writing and reading, then sleeps (it stays until the
    test removes it, so its spec is there whenever the guard asks)."""
    cid = f"nw-dev-{uuid.uuid4().hex[:8]}"
    env_args = [a for e in env for a in ("--env", e)]
    env_args += [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
    containerd.ctr("run", "-d", "--null-io", "--mount", f"type=bind,src={node},dst=/dev/nvidia3,options=rbind:rw",
                   *env_args, image.name, cid, "/bin/sh", "-c",
                   f"echo x > /dev/nvidia3; /bin/cat /dev/nvidia3; /bin/true done-{cid}; exec /bin/sleep 60")
    return cid


def _done(agent, cid: str) -> None:
    agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("container.id") == cid
                   and r.get("process.args") == ["/bin/true", f"done-{cid}"], timeout=30)


def _opens(agent, cid: str) -> list[dict]:
    return agent.find(lambda r: r["event.name"] == "file.open" and r.get("container.id") == cid
                      and r.get("file.path") == "/dev/nvidia3")


def test_unallocated_device_node_open_alerts(agent, containerd, busybox_image, node):
    cid = _run(containerd, busybox_image, node)
    try:
        _done(agent, cid)
        (alert,) = agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("container.id") == cid, timeout=15)
        assert alert["rule.id"] == "device.unauthorized_open"
        assert alert["event.severity"] == "high" and alert["threat.technique.id"] == ["T1611"]
        assert alert["file.path"] == "/dev/nvidia3" and alert["trigger.name"] == "file.open"
        assert alert["container.image.name"] == busybox_image.name
        assert "allocated from oci: none" in alert["alert.output"]
        # both opens reached user space below the ignored /dev/; the second folded into the first alert
        opens = _opens(agent, cid)
        assert sorted(r["file.open.flags"] & 3 for r in opens) == [os.O_RDONLY, os.O_WRONLY], opens
        assert len(agent.find(lambda r: r["event.name"] == "alert" and r.get("container.id") == cid)) == 1
    finally:
        containerd.remove(cid)


def test_allocated_device_node_open_is_quiet(agent, containerd, busybox_image, node):
    cid = _run(containerd, busybox_image, node, env=("NVIDIA_VISIBLE_DEVICES=3",))
    try:
        _done(agent, cid)
        agent.wait_for(lambda r: r["event.name"] == "file.open" and r.get("container.id") == cid
                       and r.get("file.path") == "/dev/nvidia3", count=2, timeout=10)  # both reported
        other = _run(containerd, busybox_image, node)  # a container after it that is alerted: the guard has judged
        try:
            _done(agent, other)
            agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("container.id") == other, timeout=15)
        finally:
            containerd.remove(other)
        assert agent.find(lambda r: r["event.name"] == "alert" and r.get("container.id") == cid) == []
    finally:
        containerd.remove(cid)


UUID3 = "GPU-3d3d3d3d-3333-4333-8333-333333333333"


def _pod(ns: str, pod: str, name: str) -> dict:
    return {"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": pod, "io.kubernetes.container.name": name}


@pytest.mark.skipif(bool(missing_compiler()), reason=missing_compiler() or "ok")
def test_kubelet_allocation_wins_over_a_self_granted_env(containerd, busybox_image, node, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    kubelet = FakeKubelet(str(tmp_path / "kubelet.sock"))
    kubelet.pods = [("ml", "train-0", {"trainer": [("nvidia.com/gpu", [UUID3])]}),
                    ("shop", "web-0", {"web": []})]
    nvml = tmp_path / "nvml.conf"
    nvml.write_text("\n".join(["driver_version 550.54.15", "cuda_version 12040", "device", f"uuid {UUID3}",
                               "name NVIDIA H100 80GB HBM3", "pci_bus_id 00000000:17:00.0", "minor 3"]) + "\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent: {{state_dir: {tmp_path / 'state'}}}\ndevices: {{backends: [nvidia]}}\n"
                   f"device_guard: {{pod_resources_socket: {kubelet.sock}}}\n")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml().parent))
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(nvml))
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--config", str(cfg),
                         "--families", "process,file,cgroup")
    cids = []
    try:
        agent.wait_for(lambda r: r["event.name"] == "device.info" and r.get("device.uuid") == UUID3, timeout=20)
        thief = _run(containerd, busybox_image, node, env=("NVIDIA_VISIBLE_DEVICES=all",),
                     labels=_pod("shop", "web-0", "web"))
        owner = _run(containerd, busybox_image, node, labels=_pod("ml", "train-0", "trainer"))
        cids += [thief, owner]
        for cid in cids:
            _done(agent, cid)
        (alert,) = agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("container.id") == thief,
                                  timeout=15)
        assert alert["rule.id"] == "device.unauthorized_open" and alert["k8s.pod.name"] == "web-0"
        assert "allocated from kubelet: none" in alert["alert.output"]
        assert (alert["device.uuid"], alert["device.path"]) == (UUID3, "/dev/nvidia3")
        agent.wait_for(lambda r: r["event.name"] == "file.open" and r.get("container.id") == owner
                       and r.get("file.path") == "/dev/nvidia3", count=2, timeout=10)
        assert kubelet.calls >= 1
        # status.json is rewritten every 5 s: the guard's state once it has asked the kubelet
        assert wait_until(lambda: agent.status(str(tmp_path / "state"))["device_guard"]["kubelet"] == "connected",
                          timeout=12, interval=0.5)
        assert agent.find(lambda r: r["event.name"] == "alert" and r.get("container.id") == owner) == []
    finally:
        agent.stop()
        for cid in cids:
            containerd.remove(cid)
        kubelet.stop()
