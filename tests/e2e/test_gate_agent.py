"""The whole pre-start path with the real containerd 1.6 and runc: `nodewarden run --policy` serves the OCI
gate, nodewarden-runc asks it at `runc create`, the image gate's verdict decides. A container from an image
with EICAR or a miner never runs an instruction and the error names the verdict; a clean and a whitelisted
image start."""

import os
import tempfile
from pathlib import Path

import pytest

from agent.enforce.runc_wrapper import install
from tests.e2e.test_ocigate import MARK_CMD, _run
from tests.harness.containerd import unique_id
from tests.kernel.conftest import AgentProcess
from tests.unit.imagegate_helpers import EICAR

pytestmark = pytest.mark.e2e

MINER = b"\x7fELF" + b"\0" * 64 + b"xmrig " + b"stratum+tcp://pool.example.com:3333 --donate-level 1 " + b"\0" * 64

POLICY = """
categories:
  malware: {alert: low, block: high}
whitelist: {images: ["nodewarden.test/allowed-*"]}
on_timeout: {after: 10s, action: block}
"""


@pytest.fixture(scope="module")
def images(image_builder):
    return {
        "eicar": image_builder("nodewarden.test/agentgate-eicar:1", extra_files={"/opt/eicar.com": EICAR},
                               cmd=MARK_CMD),
        "miner": image_builder("nodewarden.test/agentgate-miner:1", extra_files={"/usr/bin/xmrig": (MINER, 0o755)},
                               cmd=MARK_CMD),
        "clean": image_builder("nodewarden.test/agentgate-clean:1", cmd=MARK_CMD),
        "allowed": image_builder("nodewarden.test/allowed-eicar:1", extra_files={"/opt/eicar.com": EICAR},
                                 cmd=MARK_CMD),
    }


def test_blocked_before_it_runs_through_the_agent(containerd, images, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with tempfile.TemporaryDirectory(prefix="nwga-", dir="/tmp") as d:
        d = Path(d)
        (d / "policy.yaml").write_text(POLICY)
        sock = str(d / "gate.sock")
        monkeypatch.setenv("NODEWARDEN_ENFORCE_GATE_SOCKET", sock)
        monkeypatch.setenv("NODEWARDEN_ENFORCE_NRI", "false")
        monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(d / "state"))
        monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(d / "cache.db"))
        wrapper = install(str(d / "bin"), socket_path=sock, timeout=12.0, fail="closed")
        agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(d / "policy.yaml"))
        try:
            for bad in ("eicar", "miner"):
                cid = unique_id(bad)
                r, _, ran = _run(containerd, wrapper, images[bad], d / "mark", cid=cid)
                assert r.returncode != 0 and not ran, r.stderr
                assert f"nodewarden: container {cid} blocked: image verdict block" in r.stderr, r.stderr
                (ev,) = agent.wait_for(lambda r, cid=cid: r["event.name"] == "enforcement.block"
                                       and r.get("container.id") == cid, timeout=20)
                assert ev["enforcement.point"] == "oci.runc_create"
            for good in ("clean", "allowed"):
                r, _, ran = _run(containerd, wrapper, images[good], d / "mark")
                assert r.returncode == 0 and ran, r.stderr
        finally:
            agent.stop()


ENTRY = b"#!/bin/sh\necho ran > /mark/ran\n"  # the entrypoint's first act: a marker on the host


@pytest.mark.parametrize("watcher", ["live", "blind"])
def test_denied_entrypoint_dies_before_its_first_instruction(containerd, image_builder, monkeypatch, watcher):
    """Runtime exec rules from a container's create on: the OCI gate hears of the container at `runc
    create`, before its first exec, and covers its cgroup in the kernel from the mkdir on; an entrypoint
    denied by name or by path is killed before it runs an instruction (no marker), and reported.
    blind: the agent's containerd watcher never sees the container (its socket points nowhere, as when
    containerd's event stream lags or the watcher reconnects), so only the create-time cover can catch
    the entrypoint; this is the race the watcher-only cover lost."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    image = image_builder("nodewarden.test/agentgate-entry:1",
                          extra_files={"/usr/bin/nwentry": (ENTRY, 0o755), "/opt/deny/start": (ENTRY, 0o755),
                                       "/usr/bin/fine": (ENTRY, 0o755)})
    with tempfile.TemporaryDirectory(prefix="nwga-", dir="/tmp") as d:
        d = Path(d)
        (d / "policy.yaml").write_text(POLICY + "runtime:\n  deny_exec:\n    - name: nwentry\n"
                                                "    - path: /opt/deny/*\n")
        sock = str(d / "gate.sock")
        monkeypatch.setenv("NODEWARDEN_ENFORCE_GATE_SOCKET", sock)
        monkeypatch.setenv("NODEWARDEN_ENFORCE_NRI", "false")
        monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(d / "state"))
        monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(d / "cache.db"))
        wrapper = install(str(d / "bin"), socket_path=sock, timeout=12.0, fail="closed")
        mark = d / "mark"
        mark.mkdir()
        socket_path = str(containerd.socket) if watcher == "live" else str(d / "no-containerd.sock")
        agent = AgentProcess("--containerd-socket", socket_path, "--policy", str(d / "policy.yaml"))
        try:
            for entry in ("/usr/bin/nwentry", "/opt/deny/start", "/usr/bin/fine"):
                cid = unique_id("entry")
                try:
                    r = containerd.ctr("run", "--rm", "--runc-binary", wrapper, "--mount",
                                       f"type=bind,src={mark},dst=/mark,options=rbind:rw", image.name, cid, entry,
                                       check=False, timeout=60)
                finally:
                    containerd.remove(cid)
                ran = (mark / "ran").exists()
                if entry == "/usr/bin/fine":  # the control: the same script, under a name no rule denies
                    assert r.returncode == 0 and ran, r.stderr
                    continue
                assert r.returncode == 128 + 9 and not ran, (entry, r.returncode, r.stderr)
                (ev,) = agent.wait_for(lambda r, entry=entry: r["event.name"] == "enforcement.block"
                                       and r.get("process.executable.path") == entry, timeout=20)
                assert ev["enforcement.point"] == "kernel.exec" and ev["rule.category"] == "deny_exec"
                if watcher == "live":
                    assert ev.get("container.id") == cid, ev
        finally:
            agent.stop()
