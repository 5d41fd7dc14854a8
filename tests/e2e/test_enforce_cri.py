"""Runtime exec rules from a container's create on, through the real CRI + NRI path (containerd 2.x from
../shared/containerd2, driven with crictl; tests/harness/containerd2.py): NRI CreateContainer carries the
container's linux.cgroups_path, the agent covers that cgroup from its mkdir on, and an entrypoint denied by
path is killed before its first instruction (it writes nothing to its log) and reported with the container."""

from __future__ import annotations

import json

import pytest

from tests.harness.containerd import unique_id, wait_until
from tests.harness.containerd2 import Agent, missing_requirements, running_containerd2
from tests.harness.oci import build_image

_WHY = missing_requirements()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_WHY is not None, reason=f"containerd 2.x CRI + NRI: {_WHY}")]

ENTRY = b"#!/bin/sh\necho ran\nsleep 600\n"  # its first act: a line in the container's log
POLICY = "on_timeout: {after: 10s, action: allow}\nruntime:\n  deny_exec:\n    - path: /opt/deny/*\n"


@pytest.fixture(scope="module")
def cd(tmp_path_factory):
    with running_containerd2(tmp_path_factory.mktemp("cd2-exec")) as c:
        yield c


@pytest.mark.parametrize("watcher", ["live", "blind"])
def test_denied_entrypoint_killed_before_its_first_instruction(cd, tmp_path, watcher):
    """blind: the agent's containerd watcher never sees the container (a second --containerd-socket, the
    one argparse keeps, points nowhere), so only the cover at NRI CreateContainer can catch the entrypoint."""
    image = cd.import_image(build_image(tmp_path / "entry.tar", "nodewarden.test/cri-entry:1",
                                        {"/opt/deny/start": (ENTRY, 0o755), "/usr/bin/start": (ENTRY, 0o755)}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    extra = () if watcher == "live" else ("--containerd-socket", str(tmp_path / "nowhere.sock"))
    agent = Agent(cd, policy, tmp_path / "agent", *extra)
    pod = cd.run_pod()
    try:
        denied = cd.create(pod, image, "/opt/deny/start", name=unique_id("deny"))
        allowed = cd.create(pod, image, "/usr/bin/start", name=unique_id("ok"))
        assert denied.ok and allowed.ok, (denied.error, allowed.error)
        for c in (denied, allowed):
            cd.start_container(c.id, check=False)
        status = wait_until(lambda: (s := cd.inspect(denied.id)["status"])["state"] == "CONTAINER_EXITED" and s,
                            timeout=20, interval=0.1)
        assert status and status["exitCode"] == 137, status
        with open(status["logPath"]) as f:
            assert f.read() == ""  # not one instruction of the script ran
        assert wait_until(lambda: cd.state(allowed.id) == "CONTAINER_RUNNING", timeout=20, interval=0.1)
        assert wait_until(lambda: "ran" in open(cd.inspect(allowed.id)["status"]["logPath"]).read(), timeout=10)
        block = agent.wait_for(lambda r: r.get("event.name") == "enforcement.block"
                               and r.get("process.executable.path") == "/opt/deny/start", timeout=20)
        assert block["enforcement.point"] == "kernel.exec" and block["rule.category"] == "deny_exec"
        if watcher == "live":
            assert block.get("container.id") == denied.id, json.dumps(block)
    finally:
        cd.remove_pod(pod)
        agent.stop()
