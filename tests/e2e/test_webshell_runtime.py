"""Web shells written at run time in a real container (a private containerd, the real agent, issue 11).

A process in the container writes a PHP web shell under /var/www/html the way an attacker's one-liner
does (`sh -c 'echo ... > /var/www/html/x.php'`): the agent raises one `malware.webshell` alert carrying
the container's id, the file's path and the MITRE technique; a benign PHP file written the same way
raises nothing; one written elsewhere and moved in is found at the rename. With the policy's
`webshell.action: block`, the writer (a shell that stays alive after writing) is killed and the file
renamed aside with mode 000, each an enforcement.block; the file is checked through the container's
init, /proc/<pid>/root, where the container sees it.

The shell is known to the agent two ways: the web-shell detector reads it, and its sha256 is in a
known-bad hash store the test writes (agent/imagegate/hashdb.py), so the alert holds whichever finds it.
The queue's bound and its counted drops are unit-tested (tests/unit/test_webshell_watch.py).
"""

from __future__ import annotations

import calendar
import hashlib
import os
import subprocess
import time

import pytest
import yaml

from agent.imagegate.hashdb import write_store
from tests.harness.containerd import CTR, unique_id
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

SHELL = "<?php @eval($_POST['x']); ?>"
BENIGN = "<?php echo 'hello from php'; ?>"
WWW = "/var/www/html"
LINGER = 2.0  # webshell.linger_s


@pytest.fixture(scope="module")
def image(image_builder):
    return image_builder("nodewarden.test/webshell:1", {f"{WWW}/index.html": b"<html>hello</html>\n"})


def _agent(containerd, tmp_path, action: str) -> AgentProcess:
    store = tmp_path / "bad.hashdb"
    write_store(str(store), {hashlib.sha256((SHELL + "\n").encode()).digest(): "test: php one-liner"})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"state_dir": str(tmp_path / "state")},
        "imagegate": {"enabled": False, "hash_db": str(store)},
        "enforce": {"nri": False, "oci_gate": False},
        "webshell": {"linger_s": LINGER},
    }))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"webshell": {"action": action}}))
    return AgentProcess("--containerd-socket", str(containerd.socket), "--config", str(cfg), "--policy", str(policy))


@pytest.fixture
def alert_agent(containerd, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = _agent(containerd, tmp_path, "alert")
    yield a
    a.stop()


@pytest.fixture
def block_agent(containerd, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = _agent(containerd, tmp_path, "block")
    yield a
    a.stop()


def _ns(rfc3339: str) -> int:
    head, frac = rfc3339.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1_000_000_000 + int(frac)


def _webshell_alerts(agent, cid: str) -> list[dict]:
    return agent.find(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "malware.webshell"
                      and r.get("container.id") == cid)


def test_a_web_shell_written_in_a_container_is_an_alert_a_benign_file_is_not(alert_agent, containerd, image):
    cid = containerd.run(image, "/bin/sh", "-c", "sleep 600; exit 0", cid=unique_id("nw-ws"))
    try:
        containerd.exec(cid, "/bin/sh", "-c", f'echo "$0" > {WWW}/x.php; echo "$1" > {WWW}/ok.php; exit 0',
                        SHELL, BENIGN)
        (a,) = alert_agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "malware.webshell"
                                    and r.get("container.id") == cid, timeout=20)
        assert a["file.path"] == f"{WWW}/x.php" and a["threat.technique.id"] == ["T1505.003"]
        assert a["threat.tactic.name"] == ["persistence"] and a["alert.action"] == "alert"
        assert a["container.image.name"] == image.name and a["process.name"] == "sh"
        assert a["alert.findings"] and all(f["path"] == f"{WWW}/x.php" for f in a["alert.findings"])
        # found at the writer's close (the dup2 that ends `> x.php`), not by the linger after the open
        assert a["trigger.name"] == "file.close"
        close = alert_agent.find(lambda r: r["event.name"] == "file.close" and r.get("container.id") == cid
                                 and r.get("file.path") == f"{WWW}/x.php")[-1]
        print(f"\nlast close of x.php to its alert: {(_ns(a['timestamp']) - _ns(close['timestamp'])) / 1e6:.1f} ms")
        # the benign file's close came, and its linger passed: still only the one alert
        alert_agent.wait_for(lambda r: r["event.name"] == "file.close" and r.get("container.id") == cid
                             and r.get("file.path") == f"{WWW}/ok.php", timeout=10)
        time.sleep(LINGER + 1.0)
        assert [r["file.path"] for r in _webshell_alerts(alert_agent, cid)] == [f"{WWW}/x.php"]
        # written elsewhere, then moved in: found at the rename (the alert's file is the rename's target)
        containerd.exec(cid, "/bin/sh", "-c", f'echo "$0" > /tmp/y.php; mv /tmp/y.php {WWW}/y.php; exit 0', SHELL)
        (moved,) = alert_agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "malware.webshell"
                                        and r.get("container.id") == cid and r.get("trigger.name") == "file.rename",
                                        timeout=20)
        assert moved["file.target.path"] == f"{WWW}/y.php" and moved["alert.findings"][0]["path"] == f"{WWW}/y.php"
        root = f"/proc/{containerd.task_pid(cid)}/root{WWW}"
        assert sorted(os.listdir(root)) == ["index.html", "ok.php", "x.php", "y.php"]  # alert only: nothing moved
    finally:
        containerd.remove(cid)


def test_block_kills_the_writer_and_quarantines_the_file(block_agent, containerd, image):
    cid = containerd.run(image, "/bin/sh", "-c", "sleep 600; exit 0", cid=unique_id("nw-ws"))
    writer = subprocess.Popen(
        [CTR, "-a", str(containerd.socket), "-n", containerd.namespace, "tasks", "exec", "--exec-id", unique_id("x"),
         cid, "/bin/sh", "-c", f'echo "$0" > {WWW}/x.php; sleep 300; exit $?', SHELL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (kill,) = block_agent.wait_for(lambda r: r["event.name"] == "enforcement.block"
                                       and r.get("enforcement.point") == "user.kill" and r.get("container.id") == cid,
                                       timeout=20)
        (quarantine,) = block_agent.wait_for(lambda r: r["event.name"] == "enforcement.block"
                                             and r.get("enforcement.point") == "file.quarantine"
                                             and r.get("container.id") == cid, timeout=10)
        (alert,) = _webshell_alerts(block_agent, cid)
        assert alert["alert.action"] == "kill" and alert["file.path"] == f"{WWW}/x.php"
        assert kill["enforcement.outcome"] == "killed" and kill["rule.name"] == "malware.webshell"
        assert writer.wait(timeout=10) != 0  # ctr exec reports its process's death by SIGKILL
        writer_pid = kill["process.pid"]
        block_agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == writer_pid
                             and r.get("process.exit.signal") == 9, timeout=10)
        moved = quarantine["file.quarantine.path"]
        assert quarantine["file.path"] == f"{WWW}/x.php" and quarantine["enforcement.outcome"].startswith("quarantined")
        assert os.path.dirname(moved) == WWW and os.path.basename(moved).startswith(".x.php.nw-quarantine-")
        root = f"/proc/{containerd.task_pid(cid)}/root"  # the container's init: what the container sees
        assert not os.path.lexists(f"{root}{WWW}/x.php")
        st = os.stat(f"{root}{moved}")
        assert st.st_mode & 0o7777 == 0 and st.st_size == len(SHELL) + 1
    finally:
        writer.kill()
        writer.wait()
        containerd.remove(cid)
