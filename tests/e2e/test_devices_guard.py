"""Unauthorized device access in real containers (issue 12): the real agent, a private containerd, busybox.

There is no GPU here: the device node is a character device this test makes on the host (1:3, the null
device, so the device cgroup lets the container open it and nothing is touched) and bind-mounts into the
container as /dev/nvidia3. A container that was given no GPU opens it: the file probe sends the open
although /dev/ is ignored (probes.watch_devices), and the device guard raises device.unauthorized_open with
the container's id. A container given GPU 3 through NVIDIA_VISIBLE_DEVICES (its OCI spec, as the NVIDIA
container runtime reads it) opens the same node: its open is reported, and no alert. No kubelet socket
here: allocations come from each container's spec, read from containerd.
"""

from __future__ import annotations

import os
import uuid

import pytest

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


def _run(containerd, image, node: str, env: tuple[str, ...] = ()) -> str:
    """A detached container that opens /dev/nvidia3 for writing and reading, then sleeps (it stays until the
    test removes it, so its spec is there whenever the guard asks)."""
    cid = f"nw-dev-{uuid.uuid4().hex[:8]}"
    env_args = [a for e in env for a in ("--env", e)]
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
