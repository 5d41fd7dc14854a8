"""The bundled detection rules inside real containers (a private containerd, the real agent with its
bundled rules): alerts carry the container, its image and the process lineage; container-scoped rules
stay quiet on the host; a quiet container raises nothing.

The behaviour table runs each attacker behaviour for real in a container of its own (busybox applets,
small stand-ins named like the tool a rule keys on, and tests/behaviours' nwbehave for the syscalls
busybox cannot make) and asserts exactly one alert from that container, with the rule's id, severity
and MITRE technique, the container's id and image, and the ancestry: the container's shell chain
(the task's `sh`, the behaviour's `sh`) up to containerd's shim. Each rule has a benign look-alike in
the same image that must raise nothing. Network behaviour stays on the container's own loopback
(`ctr run` gives every container a network namespace of its own, `lo` up).

What the kernel refuses a container (mount, unshare, setns, module and BPF loads: no CAP_SYS_ADMIN,
CAP_SYS_MODULE or CAP_BPF in containerd's default set) is still the attempt a rule must see: the
system sensor reports the syscall with its return value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

APK = b"#!/bin/sh\n# stands in for Alpine's apk: the rule keys on the program name\nexit 0\n"
# Stand-ins for tools busybox lacks: the rules key on the program's name and arguments, not its work.
STAND_IN = b"#!/bin/sh\n# a stand-in: the rule keys on this program's name and arguments\nexit 0\n"
SHADOW = b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NWB = "/usr/local/bin/nwbehave"

# The task's shell runs the behaviour's shell, so every behaviour's process has the container's own
# shell chain above it. The script travels in the environment, not on a command line, so that only
# the behaviour's shell (and what it runs) carries it: a rule keyed on command lines sees it once.
# `exit \$?` after it keeps busybox's sh from exec'ing the last command in place.
OUTER = '/bin/sh -c "$NWB_SCRIPT; exit \\$?" nwb; rc=$?; /bin/true done-{cid}; exit $rc'
SHIM = "containerd-shim"


@dataclass(frozen=True)
class Behaviour:
    rule: str
    severity: str
    technique: str
    script: str  # run by the behaviour's sh in a fresh container; must exit 0
    benign: str  # the look-alike, in a fresh container too: no alert at all
    proc: str = ""  # process.name of the alert; "" = not checked (a memfd's name, say)
    parents: tuple[str, ...] = ()  # ancestors between the alert's process and the behaviour's sh
    fields: dict = field(default_factory=dict)  # more alert keys and the values they must have
    name: str = ""  # test id when a rule has more than one behaviour

    @property
    def id(self) -> str:
        return self.name or self.rule.removeprefix("nw.")

    @property
    def ancestors(self) -> list[str]:
        """The alert's process.ancestors.name: the inner sh itself acts (ancestors: the task's sh and the
        shim), or a program the inner sh ran (ancestors: the inner sh, the task's sh, the shim)."""
        if self.proc == "sh" and not self.parents:
            return ["sh", SHIM]
        return [*self.parents, "sh", "sh", SHIM]


def _listening(port: int, then: str) -> str:
    """`then` while busybox's httpd listens on the container's loopback at port (a peer for connects
    that must succeed; httpd itself is no rule's business)."""
    return (f"/bin/httpd -f -p 127.0.0.1:{port} -h /tmp & P=$!; /bin/sleep 0.3; {then}; r=$?; kill $P; "
            f"exit $r")


BEHAVIOURS = [
    Behaviour("nw.write_below_etc", "high", "T1543", "echo x > /etc/evil.conf",
              "/bin/cat /etc/hosts > /dev/null; echo x > /tmp/evil.conf", proc="sh",
              fields={"file.path": "/etc/evil.conf"}),
    Behaviour("nw.write_below_binary_dir", "high", "T1574", "echo x > /usr/bin/evil",
              "echo x > /usr/evil.txt", proc="sh", fields={"file.path": "/usr/bin/evil"}),
    Behaviour("nw.write_below_root", "medium", "T1546", "echo x > /root/notes.txt",
              "/bin/mkdir -p /root/.cache; echo x > /root/.cache/state", proc="sh"),
    Behaviour("nw.clear_shell_history", "high", "T1070.003", ": > /root/.ash_history",
              "echo ls >> /root/.ash_history", proc="sh", fields={"file.path": "/root/.ash_history"}),
    Behaviour("nw.setuid_setgid_bit", "high", "T1548.001", "/bin/chmod u+s /opt/app/tool",
              "/bin/chmod 0755 /opt/app/tool", proc="chmod"),
    Behaviour("nw.cron_systemd_persistence", "high", "T1053.003", "echo '* * * * * root /tmp/x' >> /etc/crontab",
              "/bin/cat /etc/crontab > /dev/null", proc="sh"),
    Behaviour("nw.authorized_keys_modified", "high", "T1098.004",
              "echo 'ssh-ed25519 AAAA x' >> /home/app/.ssh/authorized_keys",
              "echo 'host ssh-ed25519 AAAA' >> /home/app/.ssh/known_hosts", proc="sh"),
    Behaviour("nw.shell_rc_modified", "medium", "T1546.004", "echo 'export PATH=/tmp:$PATH' >> /home/app/.profile",
              "echo x > /home/app/profile.txt", proc="sh"),
    Behaviour("nw.exec_from_writable_dir", "high", "T1059", "/tmp/tool noop", f"{NWB} noop", proc="tool"),
    Behaviour("nw.network_tool_run", "medium", "T1046", "/bin/nc -h 2>/dev/null; :",
              "/bin/netstat -tn > /dev/null", proc="nc"),
    Behaviour("nw.package_manager_in_container", "medium", "T1072", "/sbin/apk add nmap", "/sbin/ldconfig",
              proc="apk"),
    Behaviour("nw.miner_command_line", "critical", "T1496", '/bin/true -o "stratum+""tcp://pool.example:3333"',
              '/bin/true -o "tcp://""pool.example:3333"', proc="true", name="miner_pool_url"),
    Behaviour("nw.miner_command_line", "critical", "T1496", "/usr/local/bin/xmrig --version",
              "/usr/local/bin/xmr-report --version", proc="xmrig", name="miner_by_name"),
    Behaviour("nw.miner_stratum_port", "medium", "T1496",
              _listening(3333, "/bin/wget -q -O /dev/null http://127.0.0.1:3333/ 2>/dev/null; :"),
              _listening(8080, "/bin/wget -q -O /dev/null http://127.0.0.1:8080/ 2>/dev/null; :"), proc="wget",
              fields={"network.peer.port": 3333}),
]


@pytest.fixture(scope="module")
def agent(containerd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a = AgentProcess("--containerd-socket", str(containerd.socket))
    yield a
    a.stop()


@pytest.fixture(scope="module")
def image(image_builder, tmp_path_factory):
    from tests.behaviours.build import build

    with open(build(str(tmp_path_factory.mktemp("nwbehave"))), "rb") as f:
        nwb = (f.read(), 0o755)
    return image_builder("nodewarden.test/detect:2", {
        "/sbin/apk": (APK, 0o755),
        "/sbin/ldconfig": (STAND_IN, 0o755),
        "/usr/sbin/useradd": (STAND_IN, 0o755),
        "/usr/bin/scp": (STAND_IN, 0o755),
        "/usr/local/bin/xmrig": (STAND_IN, 0o755),
        "/usr/local/bin/xmr-report": (STAND_IN, 0o755),
        NWB: nwb,
        "/tmp/tool": nwb,  # in the image: a program in /tmp that nobody copied up
        "/opt/app/tool": nwb,
        "/usr/sbin/nginx": nwb,  # a "web server" that runs a child (nwbehave spawn)
        "/usr/bin/strace": nwb,  # a "debugger" that traces its own child
        "/etc/shadow": (SHADOW, 0o640),
        "/etc/crontab": b"# m h dom mon dow user command\n",
        "/root/.ash_history": (b"ls\n", 0o600),
        "/root/.ssh/id_rsa": (KEY, 0o600),
        "/root/.ssh/id_rsa.pub": b"ssh-ed25519 AAAA root@x\n",
        "/home/app/.ssh/known_hosts": b"",
        "/home/app/notes.txt": b"hello\n",
        "/var/log/messages": b"boot\n",
        f"{SA_DIR}/token": (b"eyJhbGciOiJSUzI1NiJ9.e30.sig", 0o644),
        f"{SA_DIR}/namespace": b"default",
        "/opt/cgroup/release_agent": b"",
        "/opt/cgroup/tasks": b"",
    })


def _run(containerd, image, script: str) -> str:
    """Run script as the behaviour's shell in a fresh container, to its end; returns the container id."""
    cid = f"nw-det-{uuid.uuid4().hex[:8]}"
    p = containerd.ctr("run", "--rm", "--env", f"NWB_SCRIPT={script}", image.name, cid,
                       "/bin/sh", "-c", OUTER.format(cid=cid), check=False, timeout=60)
    assert p.returncode == 0, f"behaviour failed in {cid} (rc {p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}"
    return cid


def _alerts(agent, cid: str) -> list[dict]:
    """The alerts from container cid, once its last process (the done marker) has exited."""
    (done,) = agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("container.id") == cid
                             and r.get("process.args") == ["/bin/true", f"done-{cid}"], timeout=30)
    agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == done["process.pid"]
                   and r.get("container.id") == cid, timeout=10)
    return agent.find(lambda r: r["event.name"] == "alert" and r.get("container.id") == cid)


def _describe(alerts: list[dict]) -> list:
    return [(a["rule.id"], a.get("alert.output")) for a in alerts]


@pytest.mark.parametrize("b", BEHAVIOURS, ids=lambda b: b.id)
def test_behaviour_raises_one_alert(agent, containerd, image, b: Behaviour):
    cid = _run(containerd, image, b.script)
    alerts = _alerts(agent, cid)
    assert [a["rule.id"] for a in alerts] == [b.rule], _describe(alerts)
    a = alerts[0]
    assert a["event.severity"] == b.severity
    assert any(t.startswith(b.technique) for t in a["threat.technique.id"]), a["threat.technique.id"]
    assert a["threat.tactic.name"] and a["rule.name"] and a["rule.description"] and a["alert.output"]
    assert (a["container.id"], a["container.image.name"], a["container.runtime"]) == (cid, image.name, "containerd")
    if b.proc:
        assert a["process.name"] == b.proc
    assert a["process.ancestors.name"] == b.ancestors, a["process.ancestors.name"]
    for k, v in b.fields.items():
        assert a.get(k) == v, (k, a.get(k))


@pytest.mark.parametrize("b", BEHAVIOURS, ids=lambda b: b.id)
def test_benign_lookalike_is_quiet(agent, containerd, image, b: Behaviour):
    cid = _run(containerd, image, b.benign)
    assert _describe(_alerts(agent, cid)) == []


# -- the first tests of this file ------------------------------------------------------------------------


def _run_simple(containerd, image, script: str) -> str:
    cid = f"nw-det-{uuid.uuid4().hex[:8]}"
    containerd.run_once(image, "/bin/sh", "-c", f"{script}; /bin/true done-{cid}", cid=cid)
    return cid


def test_package_manager_in_a_container(agent, containerd, image):
    cid = _run_simple(containerd, image, "/sbin/apk add nmap")
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
    cid = _run_simple(containerd, image, "echo x > /etc/evil.conf")
    alerts = _alerts(agent, cid)
    assert [a["rule.id"] for a in alerts] == ["nw.write_below_etc"]
    assert alerts[0]["file.path"] == "/etc/evil.conf" and alerts[0]["container.id"] == cid


def test_a_quiet_container_raises_nothing(agent, containerd, image):
    cid = _run_simple(containerd, image, "ls / >/dev/null; cat /etc/hostname >/dev/null; echo x > /tmp/scratch")
    assert _alerts(agent, cid) == []
