"""Runtime exec rules inside a real container: denied programs die by SIGKILL, with enforcement.block."""

import os

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

POLICY = """
runtime:
  deny_exec:
    - name: xmrig
    - path: /opt/bad/*
  drift: block
"""


@pytest.fixture(scope="module")
def image(image_builder):
    script = b"#!/bin/sh\ntouch /tmp/ran\n"
    return image_builder("nodewarden.test/exec-rules:1",
                         extra_files={"/usr/bin/xmrig": (script, 0o755), "/opt/bad/tool": (script, 0o755)})


def test_denied_exec_killed_allowed_runs_drift_killed(containerd, image, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    cid = containerd.run(image, "/bin/sleep", "120")
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(policy))
    try:
        containerd.exec(cid, "/bin/true", "ready")
        agent.wait_for(lambda r: r.get("container.id") == cid and r.get("process.args") == ["/bin/true", "ready"],
                       timeout=20)

        def run(*argv):
            return containerd.exec(cid, *argv, check=False).returncode

        assert run("/usr/bin/xmrig") == 128 + 9
        assert run("/opt/bad/tool") == 128 + 9
        assert run("/bin/ls", "/tmp/ran") != 0  # neither script ran a single instruction
        assert run("/bin/true") == 0
        assert run("/bin/cp", "/bin/busybox", "/tmp/dropped") == 0
        assert run("/tmp/dropped", "true") == 128 + 9
        blocks = agent.wait_for(lambda r: r["event.name"] == "enforcement.block" and r.get("container.id") == cid,
                                count=3, timeout=20)
        assert {b["process.executable.path"]: b["rule.category"] for b in blocks} == {
            "/usr/bin/xmrig": "deny_exec", "/opt/bad/tool": "deny_exec", "/tmp/dropped": "drift"}
        for b in blocks:
            assert b["enforcement.point"] == "kernel.exec" and b["container.image.name"] == image.name
        assert "name=xmrig" in blocks[0]["rule.name"]

        # Hot reload: a new rule takes effect without a restart; a broken file is refused and the rules stay.
        policy.write_text("runtime:\n  deny_exec:\n    - name: ls\n")
        agent.wait_for(lambda r: r["event.name"] == "agent.policy", timeout=20)
        assert run("/bin/ls", "/") == 128 + 9
        assert run("/usr/bin/xmrig") == 0  # no longer denied (the script just runs)
        policy.write_text("runtime:\n  deny_exec:\n    - path: not/absolute\n")
        (refused,) = agent.wait_for(lambda r: r["event.name"] == "agent.policy" and "policy.error" in r, timeout=20)
        assert "must be absolute" in refused["policy.error"] and refused["event.severity"] == "warning"
        assert run("/bin/ls", "/") == 128 + 9
        assert agent.proc.poll() is None
    finally:
        agent.stop()
        containerd.remove(cid)


def test_bad_policy_is_refused_with_one_line(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    policy = tmp_path / "policy.yaml"
    policy.write_text("runtime:\n  deny_exec:\n    - path: relative/x\n")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--no-containers", "--policy", str(policy),
                        "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "must be absolute" in p.stderr and "Traceback" not in p.stderr


def test_host_scoped_rule_kills_a_host_process_through_the_agent(tmp_path):
    """scope: host: a process outside every container dies at exec and is reported without a container;
    the same rule leaves containers alone (tests/kernel/test_exec_kill.py checks each scope)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import shutil
    import subprocess
    import uuid

    program = tmp_path / ("nwh" + uuid.uuid4().hex[:10])  # its own name: the rule kills nothing else
    shutil.copy("/bin/true", program)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"runtime:\n  deny_exec:\n    - {{name: {program.name}, scope: host}}\n")
    agent = AgentProcess("--no-containers", "--policy", str(policy))
    try:
        assert subprocess.run([str(program)]).returncode == -9
        (b,) = agent.wait_for(lambda r: r["event.name"] == "enforcement.block"
                              and r.get("process.executable.path") == str(program), timeout=20)
        assert b["enforcement.point"] == "kernel.exec" and b["enforcement.outcome"] == "killed"
        assert "container.id" not in b and f"name={program.name}" in b["rule.name"]
    finally:
        agent.stop()
    assert subprocess.run([str(program)]).returncode == 0  # rules go with the agent's probes
