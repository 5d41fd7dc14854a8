"""The bundled detection rules inside real containers (a private containerd, the real agent with its
bundled rules): alerts carry the container, its image and the process lineage; container-scoped rules
stay quiet on the host; a quiet container raises nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

APK = b"#!/bin/sh\n# stands in for Alpine's apk: the rule keys on the program name\nexit 0\n"


@pytest.fixture(scope="module")
def agent(containerd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = AgentProcess("--containerd-socket", str(containerd.socket))
    yield a
    a.stop()


@pytest.fixture(scope="module")
def image(image_builder):
    return image_builder("nodewarden.test/detect:1", {"/sbin/apk": (APK, 0o755)})


def _run(containerd, image, script: str) -> str:
    cid = f"nw-det-{uuid.uuid4().hex[:8]}"
    containerd.run_once(image, "/bin/sh", "-c", f"{script}; /bin/true done-{cid}", cid=cid)
    return cid


def _alerts(agent, cid: str) -> list[dict]:
    agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("process.args") == ["/bin/true",
                                                                                             f"done-{cid}"],
                   timeout=30)
    return agent.find(lambda r: r["event.name"] == "alert" and r.get("container.id") == cid)


def test_package_manager_in_a_container(agent, containerd, image):
    cid = _run(containerd, image, "/sbin/apk add nmap")
    alerts = _alerts(agent, cid)
    assert [(a["rule.id"], a["event.severity"]) for a in alerts] == [("nw.package_manager_in_container", "medium")]
    a = alerts[0]
    assert "T1072" in a["threat.technique.id"] and a["container.image.name"] == image.name
    assert a["process.executable.path"] == "/sbin/apk" and a["process.parent.executable.path"] == "/bin/sh"


def test_package_manager_on_the_host_is_not_this_rule(agent, tmp_path):
    d = f"/run/nw-det-{uuid.uuid4().hex[:8]}"
    os.makedirs(d)
    try:
        with open(f"{d}/apk", "wb") as f:
            f.write(APK)
        os.chmod(f"{d}/apk", 0o755)
        p = subprocess.run([f"{d}/apk", "add", "nmap"], timeout=10)
        assert p.returncode == 0
        (ex,) = agent.wait_for(lambda r: r["event.name"] == "process.exec"
                               and r.get("process.executable.path") == f"{d}/apk", timeout=10)
        agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == ex["process.pid"])
        assert agent.find(lambda r: r["event.name"] == "alert" and r["process.pid"] == ex["process.pid"]) == []
    finally:
        shutil.rmtree(d)


def test_write_below_etc_in_a_container_names_the_container(agent, containerd, image):
    cid = _run(containerd, image, "echo x > /etc/evil.conf")
    alerts = _alerts(agent, cid)
    assert [a["rule.id"] for a in alerts] == ["nw.write_below_etc"]
    assert alerts[0]["file.path"] == "/etc/evil.conf" and alerts[0]["container.id"] == cid


def test_a_quiet_container_raises_nothing(agent, containerd, image):
    cid = _run(containerd, image, "ls / >/dev/null; cat /etc/hostname >/dev/null; echo x > /tmp/scratch")
    assert _alerts(agent, cid) == []
