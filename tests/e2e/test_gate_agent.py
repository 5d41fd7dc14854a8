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
