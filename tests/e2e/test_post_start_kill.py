"""Post-start enforcement: a container that violates a block policy and ran while the agent was down is
killed through containerd's Tasks API when the agent starts, and reported."""

import os
import time

import pytest

from tests.kernel.conftest import AgentProcess
from tests.unit.imagegate_helpers import EICAR

pytestmark = pytest.mark.e2e


def test_violating_container_started_while_agent_was_down_is_killed(containerd, image_builder, busybox_image,
                                                                    tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    bad = image_builder("nodewarden.test/post-start-eicar:1", extra_files={"/opt/eicar.com": EICAR})
    bad_id = containerd.run(bad, "/bin/sleep", "120")
    good_id = containerd.run(busybox_image, "/bin/sleep", "120")
    policy = tmp_path / "policy.yaml"
    policy.write_text("categories:\n  malware: {alert: low, block: high}\n")
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(tmp_path / "cache.db"))
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(policy))
    try:
        (verdict,) = agent.wait_for(lambda r: r["event.name"] == "image.verdict" and r.get("container.id") == bad_id,
                                    timeout=60)
        assert verdict["image.verdict"] == "block"
        assert any(f["category"] == "malware" for f in verdict["image.findings"])
        (block,) = agent.wait_for(lambda r: r["event.name"] == "enforcement.block"
                                  and r.get("container.id") == bad_id, timeout=30)
        assert block["enforcement.point"] == "containerd.kill" and block["enforcement.outcome"] == "killed"
        assert block["container.image.name"] == bad.name
        (ok,) = agent.wait_for(lambda r: r["event.name"] == "image.verdict" and r.get("container.id") == good_id,
                               timeout=60)
        assert ok["image.verdict"] in ("allow", "alert")  # busybox runs as root: a baseline alert
        def state(cid):
            for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
                if line.split()[0] == cid:
                    return line.split()[-1]
            return ""

        deadline = time.monotonic() + 20
        while state(bad_id) != "STOPPED" and time.monotonic() < deadline:  # the kill lands asynchronously
            time.sleep(0.1)
        assert state(bad_id) == "STOPPED"
        assert state(good_id) == "RUNNING"
    finally:
        agent.stop()
        containerd.remove(bad_id)
        containerd.remove(good_id)


def test_images_are_scanned_when_pulled_before_any_container(containerd, tmp_path, monkeypatch):
    """Proactive scanning: an image imported (pulled) while the agent runs is scanned at once, so the first
    container of it finds every layer in the cache."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from tests.harness.oci import build_image

    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(tmp_path / "cache.db"))
    (tmp_path / "policy.yaml").write_text("categories:\n  malware: {alert: low, block: high}\n")
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(tmp_path / "policy.yaml"))
    try:
        img = build_image(tmp_path / "img.tar", "nodewarden.test/prescan:1", {"/opt/data": os.urandom(4096)})
        containerd.import_image(img)
        time.sleep(3)  # the scan runs in the background, before any container exists
        cid = containerd.run(img, "/bin/sleep", "30")
        (v,) = agent.wait_for(lambda r: r["event.name"] == "image.verdict" and r.get("container.id") == cid,
                              timeout=30)
        assert v["image.scan.cache"] == "layers", v
        containerd.remove(cid)
    finally:
        agent.stop()
