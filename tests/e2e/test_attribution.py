"""The agent with a real private containerd: container events carry their container, host events none."""

import os
import uuid

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent_with_containers(containerd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = AgentProcess("--containerd-socket", str(containerd.socket))
    yield a
    a.stop()


def test_exec_and_file_events_carry_the_container(agent_with_containers, containerd, busybox_image):
    a = agent_with_containers
    cid = "nw-attr-" + uuid.uuid4().hex[:8]
    # The sleep gives the watcher time to learn the cgroup: events before that are not yet buffered
    # and re-resolved (issue 4 keeps that open).
    containerd.run_once(busybox_image, "/bin/sh", "-c", "sleep 1; echo hi > /tmp/f; /bin/true marker-" + cid, cid=cid)
    (ex,) = a.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("process.args", [])[-1:] == [
        "marker-" + cid], timeout=20)
    assert ex["container.id"] == cid
    assert ex["container.image.name"] == busybox_image.name
    (fo,) = a.wait_for(lambda r: r["event.name"] == "file.open" and r.get("container.id") == cid
                       and r["file.path"] == "/tmp/f", timeout=20)
    host = a.find(lambda r: r["event.name"] == "process.exec" and r["process.pid"] == os.getpid())
    assert all("container.id" not in r for r in host)
