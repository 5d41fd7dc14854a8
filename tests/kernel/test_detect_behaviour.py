"""The bundled detection rules against real behaviour on the host: the real probes, the real agent
(`nodewarden run --json`, no policy file: the bundled rules are on by default), real syscalls.

Each behaviour runs in its own child process and must raise exactly one alert from that process,
with the rule id, severity and MITRE technique of its rule and the ancestry the test knows (the
processes it put in between, then this test's own chain); each benign look-alike must raise none.
Attacker tools are tests/behaviours/nwbehave.c (one syscall-level behaviour per subcommand, built
static), copies of it under other names (the rules key on program names, as Falco's do), and
ordinary commands. Network behaviour stays on loopback. Everything a behaviour changes is put back.

57 behaviours for 31 rules: files (18): write, rename and chmod below /etc; write below /usr/lib and
/root; shell history truncated by cp and by sh, deleted, symlinked to /dev/null; setuid and setgid
bits (chmod u+s, g+s, a stat() mode); cron.d written and renamed into; a systemd timer;
authorized_keys; .bashrc, .profile. Processes (5): exec from /dev/shm, /tmp and /var/tmp (the last
two with nw.exec_from_tmp_on_host enabled), network tools, a miner command line. Network (2):
stratum port, interpreter listening. Credentials (7): /etc/shadow, an SSH private key, AWS
credentials, the service-account token by /var/run and /run, grep -r id_rsa, find -name *.pem.
Privilege and evasion (12): fileless exec from a memfd, setuid(0) by a non-root caller, capset
raising CAP_SYS_ADMIN as nobody, useradd / usermod / chpasswd / passwd USER, a log under /var/log
truncated and removed, symlinks to /etc/shadow and /proc/1/root and a hard link to /etc/passwd.
Escape (3): core_pattern (and the modprobe path where the kernel has one), release_agent and
notify_on_release of a cgroup v1 hierarchy. Execution (3): a shell run by nginx, `curl ... | sh`,
`wget -qO- ... | sh; echo done`. Tracing (3): PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_TRACEME. Sockets (3):
packet socket, raw socket, reverse shell (a socket dup'ed onto stdio). Kernel (1): a BPF program load.

Not here: the container-scoped rules (mounts, namespaces, unexpected UDP, drifted binaries,
interactive shells, remote copy tools, package managers, cloud metadata, module loads from a
container: tests/e2e/test_detect_containers.py; on the host their look-alikes must stay quiet, tested
below), and the host module-load rule (this kernel has no init_module/finit_module: CONFIG_MODULES
off, so no behaviour can reach it here).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import threading
import uuid

import pytest

from tests.behaviours.build import build
from tests.kernel.conftest import AgentProcess

TAG = f"nwdet-{uuid.uuid4().hex[:8]}"
# Seconds to wait for a record: the agent sees the whole machine, and on a loaded one (a parallel build,
# other agents) it can fall seconds behind without losing anything.
WAIT = 30.0


@pytest.fixture(scope="module")
def agent():
    a = AgentProcess("--no-containers")
    yield a
    if a.proc.poll() is None:
        a.stop()


@pytest.fixture
def scratch():
    """Paths the behaviours write to, removed afterwards by this process (its own events are not counted)."""
    made: list[str] = []
    yield made
    for p in reversed(made):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.unlink(p)


def _alerts(agent, argv: list[str], stdin: str | None = None) -> list[dict]:
    """Run argv to its end; the alerts raised by it and its children (its exit record follows them).

    The process is found by the pid it prints (a python snippet's last word, nwbehave's first line
    `pid N`), else by its exec record's command line."""
    cmd = " ".join(argv)
    seen = len(agent.find(_exec_of(cmd)))  # the same command may have run before: take the new one
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, input=stdin)
    assert p.returncode == 0, p.stderr
    if argv[0] == PY:
        return _after_exit(agent, int(p.stdout.split()[-1]))
    if p.stdout.startswith("pid "):
        return _after_exit(agent, int(p.stdout.split()[1]))
    return _after_exit(agent, agent.wait_for(_exec_of(cmd), WAIT, count=seen + 1)[-1]["process.pid"])


def _exec_of(cmd: str):
    return lambda r: r["event.name"] == "process.exec" and r.get("process.command_line") == cmd


def _after_exit(agent, pid: int) -> list[dict]:
    agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == pid, WAIT)
    _barrier(agent)
    found = Alerts(agent.find(lambda r: r["event.name"] == "alert" and (r["process.pid"] == pid
                                                                       or r.get("process.parent_pid") == pid)))
    found.drops = [r["nodewarden.drops.new"] for r in agent.find(lambda r: r["event.name"] == "agent.drops")]
    found.execs = [{k: v for k, v in r.items() if k.startswith(("process.", "event."))}
                   for r in agent.find(lambda r: r["event.name"] == "process.exec" and r["process.pid"] == pid)]
    return found


class Alerts(list):
    """The alerts of one behaviour, with what the agent said it lost so far (a missing alert under load
    may be a lost event: the assertion message says which)."""

    drops: list[dict] = []
    execs: list[dict] = []  # the behaviour's exec records, for the message when an alert is missing


_BARRIERS = iter(range(1, 1 << 30))


def _barrier(agent) -> None:
    """Each probe family writes its own ring buffer, so a process's exit record can come before its
    file, network or system records. One fresh event of each family from this process, awaited, means
    everything that family wrote before it has been read and judged: its rings are first in, first out."""
    n = next(_BARRIERS)
    me = os.getpid()
    mark = f"/run/{TAG}-barrier-{n}"
    memfd = f"{TAG}-b{n}"
    connect = lambda r: (r.get("process.pid") == me and r["event.name"] == "network.connect"  # noqa: E731
                         and r.get("network.peer.port") == 1)
    seen = len(agent.find(connect))
    with open(mark, "w"):
        pass
    os.unlink(mark)
    os.close(os.memfd_create(memfd))
    s = socket.socket()
    try:
        # refused: nothing listens on port 1; a new loopback address each time, or the kernel folds the repeat
        s.connect((f"127.0.{n // 250 % 250}.{n % 250 + 1}", 1))
    except OSError:
        pass
    finally:
        s.close()
    agent.wait_for(lambda r: r["event.name"] == "system.memfd_create" and r.get("memfd.name") == memfd, WAIT)
    agent.wait_for(lambda r: r["event.name"] == "file.unlink" and r.get("file.path") == mark, WAIT)
    agent.wait_for(connect, WAIT, count=seen + 1)


# The system interpreter (Debian's python3, which scripts/setup.sh installs), not the venv's: a checkout
# under /tmp (CI clones anywhere) would make every behaviour run from /tmp, which a bundled rule flags.
PY = "/usr/bin/python3"


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code) + "\nimport os; print(os.getpid())"]


def _sh(script: str) -> list[str]:
    # `; :` keeps dash from exec'ing the last command in place: every syscall is the shell's own pid
    return ["/bin/sh", "-c", f"{script}; :", TAG]


def _bundled() -> list[str]:
    from agent.policy.rules import default_section

    return [r.id for r in default_section()[0].ruleset.rules if r.enabled]  # not those off by default


def _one(alerts: list[dict], rule: str, severity: str, technique: str, via: tuple[str, ...] | None = ()) -> dict:
    """The one alert of `rule`, with its severity, technique and ancestry: `via` (the processes the test
    put between itself and the behaviour), then this test's own chain; None: an orphan, not checked."""
    # A string, not a tuple: pytest shortens a long repr to its first fields, and the exec record's ancestry,
    # the usual answer to "why no alert", comes after them.
    assert [a["rule.id"] for a in alerts] == [rule], str(([(a["rule.id"], a.get("alert.output")) for a in alerts],
                                                          "agent drops:", getattr(alerts, "drops", None),
                                                          "execs:", getattr(alerts, "execs", None)))
    a = alerts[0]
    assert a["event.severity"] == severity
    assert technique in a["threat.technique.id"]
    assert a["threat.tactic.name"] and a["rule.name"] and a["rule.description"]
    if via is not None:
        _ancestry(a, *via)
    return a


def _home(scratch) -> str:
    d = f"/tmp/{TAG}-home-{uuid.uuid4().hex[:6]}"
    os.makedirs(f"{d}/.ssh")
    scratch.append(d)
    return d


@pytest.fixture(scope="module")
def nwb():
    """nwbehave (tests/behaviours/nwbehave.c) built into a directory of its own below /run: a program run
    from /tmp is itself a bundled rule's business. Copies under other names go next to it (`_as`)."""
    d = f"/run/{TAG}-bin"
    path = build(d)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def _as(nwb: str, name: str, src: str | None = None) -> str:
    """A copy of nwbehave (or of src) named `name`: the rules key on program names, as Falco's do."""
    dst = os.path.join(os.path.dirname(nwb), name)
    if not os.path.exists(dst):
        shutil.copy(src or nwb, dst)
    return dst


def _comm(pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _ppid(pid: int | str) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _my_chain() -> list[str]:
    """This test process and its ancestors by name, nearest first (what a child's ancestry continues with)."""
    names, pid = [], os.getpid()
    while pid > 0 and len(names) < 16:
        name = _comm(pid)
        if name is None:
            break
        names.append(name)
        pid = _ppid(pid)
    return names


def _ancestry(alert: dict, *via: str) -> None:
    """The alert names its ancestry, parent first: the processes the test put in between (`via`), then
    this test process and its own ancestors (cut where the agent's ancestry_max cuts)."""
    names = alert["process.ancestors.name"]
    # three of this test's own: further up, a shell that started this test may have exited since, and the
    # agent keeps the lineage as it was at fork while /proc shows the reparented process
    want = [*via, *_my_chain()][:len(via) + 3]
    assert names[:len(want)] == want, (names, want)


_DETACH = """
import os, sys
argv = sys.argv[1:]
r, w = os.pipe()
mid = os.fork()
if mid == 0:
    me = os.getpid()  # not `mid`, which is 0 in this process: the wait below never waited with it
    if os.fork() == 0:
        os.close(r)
        while os.getppid() == me:  # until the middle process is gone and this one is reparented
            os.sched_yield()
        os.write(w, str(os.getpid()).encode())
        os.execv(argv[0], argv)  # the pipe is close-on-exec: the reader sees EOF at the exec
    os._exit(0)
os.close(w)
os.waitpid(mid, 0)
pid = b""
while chunk := os.read(r, 64):
    pid += chunk
print(pid.decode())
"""


def _detached(argv: list[str]) -> list[str]:
    """A python snippet that runs argv orphaned (reparented to init or a subreaper before it execs) and
    prints its pid: its ancestry is then not this test's. Under `make test` a build tool is among this
    test's ancestors, which a bundled rule reads as a build running what it built."""
    return [PY, "-c", _DETACH, *argv]


# -- files -----------------------------------------------------------------------------------------------


def test_write_below_etc(agent, scratch):
    f = f"/etc/{TAG}-{uuid.uuid4().hex[:6]}.conf"
    scratch.append(f)
    a = _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_etc", "high", "T1543")
    assert a["file.path"] == f and a["trigger.name"] == "file.open"
    assert _alerts(agent, _sh(f"cat {f} >/dev/null; echo x > /tmp/{TAG}-etc-lookalike")) == []
    scratch.append(f"/tmp/{TAG}-etc-lookalike")


def test_rename_and_chmod_below_etc(agent, scratch):
    f = f"/etc/{TAG}-{uuid.uuid4().hex[:6]}"
    scratch += [f, f + ".moved"]
    with open(f, "w"):
        pass
    a = _one(_alerts(agent, ["/bin/mv", f, f + ".moved"]), "nw.write_below_etc", "high", "T1543")
    assert (a["trigger.name"], a["file.target.path"]) == ("file.rename", f + ".moved")
    a = _one(_alerts(agent, ["/bin/chmod", "0600", f + ".moved"]), "nw.write_below_etc", "high", "T1543")
    assert a["trigger.name"] == "file.chmod"


def test_write_below_binary_dir(agent, scratch):
    f = f"/usr/lib/{TAG}-{uuid.uuid4().hex[:6]}.so"
    scratch += [f, f + "c.pyc"]
    _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_binary_dir", "high", "T1574")
    assert _alerts(agent, _sh(f"echo x > {f}c.pyc")) == []  # python bytecode: the exception


def test_write_below_root(agent, scratch):
    f = f"/root/{TAG}-{uuid.uuid4().hex[:6]}"
    os.makedirs("/root/.cache", exist_ok=True)
    scratch += [f, f"/root/.cache/{TAG}"]
    _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_root", "medium", "T1546")
    assert _alerts(agent, _sh(f"echo x > /root/.cache/{TAG}")) == []


def test_shell_history_truncated_or_deleted(agent, scratch):
    h = _home(scratch)
    with open(f"{h}/.bash_history", "w") as f:
        f.write("ls\n")
    assert _alerts(agent, _sh(f"echo whoami >> {h}/.bash_history")) == []  # appending: what shells do
    a = _one(_alerts(agent, ["/bin/cp", "/dev/null", f"{h}/.bash_history"]), "nw.clear_shell_history", "high",
             "T1070.003")  # cp opens its target with O_TRUNC (truncate(1) calls ftruncate instead)
    assert a["file.path"] == f"{h}/.bash_history"
    # a shell running -c keeps no history: its truncating one is an exploit's payload
    _one(_alerts(agent, _sh(f": > {h}/.bash_history")), "nw.clear_shell_history", "high", "T1070.003")
    # look-alike: bash reading its commands (not -c) truncating its own history is what it does at exit and
    # on `history -w`; by choice not flagged (the rule's description says so), though `: > ~/.bash_history`
    # typed at its prompt looks the same
    assert _alerts(agent, ["/bin/bash", "--norc", "-s"], stdin=f": > {h}/.bash_history\n") == []
    a = _one(_alerts(agent, ["/bin/rm", f"{h}/.bash_history"]), "nw.clear_shell_history", "high", "T1070.003")
    assert a["trigger.name"] == "file.unlink"
    a = _one(_alerts(agent, ["/bin/ln", "-sf", "/dev/null", f"{h}/.bash_history"]), "nw.clear_shell_history",
             "high", "T1070.003")
    assert a["trigger.name"] == "file.symlink"  # history sent to /dev/null from now on


def test_setuid_bit_set_by_chmod(agent, scratch):
    f = f"/tmp/{TAG}-suid-{uuid.uuid4().hex[:6]}"
    scratch.append(f)
    shutil.copy("/bin/true", f)
    assert _alerts(agent, ["/bin/chmod", "0755", f]) == []
    a = _one(_alerts(agent, ["/bin/chmod", "u+s", f]), "nw.setuid_setgid_bit", "high", "T1548.001")
    assert a["file.mode"] & 0o4000
    _one(_alerts(agent, ["/bin/chmod", "g+s", f]), "nw.setuid_setgid_bit", "high", "T1548.001")
    # a mode with the file type bits, as git passes a stat() mode: the kernel keeps the permission bits
    assert _alerts(agent, _py(f"import os; os.chmod({f!r}, 0o100744)")) == []
    _one(_alerts(agent, _py(f"import os; os.chmod({f!r}, 0o104755)")), "nw.setuid_setgid_bit", "high", "T1548.001")


def test_cron_persistence(agent, scratch):
    if not os.path.isdir("/etc/cron.d"):
        os.makedirs("/etc/cron.d")
        scratch.append("/etc/cron.d")
    f = f"/etc/cron.d/{TAG}-{uuid.uuid4().hex[:6]}"
    scratch.append(f)
    _one(_alerts(agent, _sh(f"echo '* * * * * root true' > {f}")), "nw.cron_systemd_persistence", "high",
         "T1053.003")
    staged = f"/etc/{TAG}-job-{uuid.uuid4().hex[:6]}"
    with open(staged, "w") as fh:
        fh.write("* * * * * root true\n")
    scratch += [staged, f + ".moved"]
    a = _one(_alerts(agent, ["/bin/mv", staged, f + ".moved"]), "nw.cron_systemd_persistence", "high", "T1053.003")
    assert (a["trigger.name"], a["file.target.path"]) == ("file.rename", f + ".moved")  # caught where it goes
    os.makedirs(f"/tmp/{TAG}-cron.d", exist_ok=True)
    scratch.append(f"/tmp/{TAG}-cron.d")
    assert _alerts(agent, _sh(f"echo x > /tmp/{TAG}-cron.d/job")) == []


def test_systemd_timer_persistence(agent, scratch):
    f = f"/etc/systemd/system/{TAG}-{uuid.uuid4().hex[:6]}.timer"
    if not os.path.isdir("/etc/systemd/system"):
        pytest.skip("no /etc/systemd/system here")
    scratch.append(f)
    _one(_alerts(agent, _sh(f"echo '[Timer]' > {f}")), "nw.cron_systemd_persistence", "high", "T1053.003")


def test_authorized_keys_changed(agent, scratch):
    h = _home(scratch)
    a = _one(_alerts(agent, _sh(f"echo 'ssh-ed25519 AAAA x' >> {h}/.ssh/authorized_keys")),
             "nw.authorized_keys_modified", "high", "T1098.004")
    assert a["file.path"] == f"{h}/.ssh/authorized_keys"
    assert _alerts(agent, _sh(f"echo 'host ssh-ed25519 AAAA' >> {h}/.ssh/known_hosts")) == []


def test_shell_rc_modified(agent, scratch):
    h = _home(scratch)
    _one(_alerts(agent, _sh(f"echo 'curl x | sh' >> {h}/.bashrc")), "nw.shell_rc_modified", "medium", "T1546.004")
    _one(_alerts(agent, _sh(f"echo x > {h}/.profile")), "nw.shell_rc_modified", "medium", "T1546.004")
    assert _alerts(agent, _sh(f"echo x > {h}/bashrc.txt")) == []


# -- processes -------------------------------------------------------------------------------------------


def _drop(scratch, d: str) -> str:
    f = f"{d}/{TAG}-drop-{uuid.uuid4().hex[:6]}"
    scratch.append(f)
    shutil.copy("/bin/true", f)
    return f


def test_exec_from_dev_shm(agent, scratch):
    for d in ("/dev/shm", "/run/shm"):
        if not os.path.isdir(d) or (d == "/run/shm" and os.path.realpath(d) == "/dev/shm"):
            continue
        f = _drop(scratch, d)
        a = _one(_alerts(agent, [f, "--beacon"]), "nw.exec_from_writable_dir", "high", "T1059")
        assert a["process.executable.path"] == f  # memory-backed: flagged whoever runs it, a build as well
    # look-alikes: on a host /tmp and /var/tmp belong to nw.exec_from_tmp_on_host, off by default
    # (CI checkouts, venvs and builds run programs from there all day); /tmp in an argument only
    for d in ("/tmp", "/var/tmp"):
        assert _alerts(agent, _detached([_drop(scratch, d), "--beacon"])) == []
    assert _alerts(agent, ["/bin/true", f"/tmp/{TAG}-not-run"]) == []


def test_exec_from_tmp_on_host_when_enabled(tmp_path, scratch, nwb):
    pol = tmp_path / "policy.yaml"
    pol.write_text("detect:\n  enable: {ids: [nw.exec_from_tmp_on_host]}\n")
    a = AgentProcess("--no-containers", "--policy", str(pol))
    try:
        for d in ("/tmp", "/var/tmp"):
            f = _drop(scratch, d)
            # orphaned: under `make test` a build tool is among this test's ancestors, which exempts it
            al = _one(_alerts(a, _detached([f, "--beacon"])), "nw.exec_from_tmp_on_host", "medium", "T1059",
                      via=None)
            assert al["process.executable.path"] == f
            # reparented before its exec (to init, which may be all its ancestry): not this test's chain
            assert not set(al.get("process.ancestors.name", ())) & {"make", "python"}
        # look-alike: a build (make here) running what it built in /tmp
        assert _alerts(a, [_as(nwb, "make"), "spawn", _drop(scratch, "/tmp")]) == []
    finally:
        a.stop()


def test_network_tools_run(agent, scratch):
    d = f"/run/{TAG}-tools"
    os.makedirs(d, exist_ok=True)
    scratch.append(d)
    for name in ("nc", "ncat", "socat", "nmap"):
        shutil.copy("/bin/true", f"{d}/{name}")  # the rule keys on the program name, as Falco's does
        a = _one(_alerts(agent, [f"{d}/{name}", "-h"]), "nw.network_tool_run", "medium", "T1046")
        assert a["process.name"] == name
    shutil.copy("/bin/true", f"{d}/ncdu")
    assert _alerts(agent, [f"{d}/ncdu"]) == []


def test_miner_command_line(agent):
    a = _one(_alerts(agent, ["/bin/true", "-o", "stratum+tcp://127.0.0.1:3333", "-u", "wallet"]),
             "nw.miner_command_line", "critical", "T1496")
    assert "stratum+tcp://" in a["process.command_line"]
    assert _alerts(agent, ["/bin/echo", "the stratum of rock"]) == []


# -- network (loopback only) -----------------------------------------------------------------------------


def _listener(ports) -> socket.socket:
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        s.listen(8)
        return s
    pytest.skip(f"none of the ports {ports} is free on loopback")


def test_connect_to_a_stratum_port(agent):
    srv = _listener((3333, 14444, 45700, 7777))
    port = srv.getsockname()[1]
    try:
        connect = "import socket; c = socket.create_connection(('127.0.0.1', {})); c.close()"
        a = _one(_alerts(agent, _py(connect.format(port))), "nw.miner_stratum_port", "medium", "T1496")
        assert (a["network.peer.address"], a["network.peer.port"]) == ("127.0.0.1", port)
        other = _listener((0,))
        try:
            assert _alerts(agent, _py(connect.format(other.getsockname()[1]))) == []
        finally:
            other.close()
    finally:
        srv.close()


def test_interpreter_listening(agent):
    a = _one(_alerts(agent, _py("""
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1); s.close()
    """)), "nw.interpreter_listening", "high", "T1059")
    assert a["network.local.address"] == "127.0.0.1"
    assert _alerts(agent, _py("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.close()
    """)) == []  # bound, never listening


# -- credentials (read-only opens of probes.watch_reads) -------------------------------------------------


@pytest.fixture
def made(scratch):
    """makedirs that records what it created (top first), so only that is removed afterwards."""
    def mk(path: str) -> str:
        missing = []
        p = path
        while not os.path.exists(p):
            missing.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, exist_ok=True)
        scratch.extend(reversed(missing))  # removed in reverse: deepest first ... the top last
        return path
    return mk


def _write(path: str, text: str, mode: int = 0o600) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_shadow_read(agent, nwb):
    a = _one(_alerts(agent, ["/bin/cat", "/etc/shadow"]), "nw.sensitive_file_read", "high", "T1003.008")
    assert (a["trigger.name"], a["file.path"]) == ("file.open", "/etc/shadow")
    assert _alerts(agent, ["/bin/cat", "/etc/passwd"]) == []
    assert _alerts(agent, [_as(nwb, "sshd", "/bin/cat"), "/etc/shadow"]) == []  # an auth daemon: its job


def test_private_key_and_cloud_credentials_read(agent, nwb, scratch, made):
    ssh = made(f"/home/{TAG}-u/.ssh")  # /home/*/.ssh/ is watched
    key = _write(f"{ssh}/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    _write(f"{ssh}/id_ed25519.pub", "ssh-ed25519 AAAA x\n", 0o644)
    a = _one(_alerts(agent, ["/bin/cat", key]), "nw.sensitive_file_read", "high", "T1552.004")
    assert a["file.path"] == key
    assert _alerts(agent, ["/bin/cat", f"{ssh}/id_ed25519.pub"]) == []  # the public half
    assert _alerts(agent, [_as(nwb, "ssh-add", "/bin/cat"), key]) == []  # the client that uses keys
    if os.path.exists("/root/.aws"):
        return  # real credentials here: never touched
    creds = _write(f"{made('/root/.aws')}/credentials", "[default]\naws_access_key_id = AKIAEXAMPLE\n")
    a = _one(_alerts(agent, ["/bin/cat", creds]), "nw.sensitive_file_read", "high", "T1552.001")
    assert a["file.path"] == creds
    assert _alerts(agent, [_as(nwb, "aws", "/bin/cat"), creds]) == []


def test_service_account_token_read(agent, nwb, made):
    d = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = f"{d}/token"
    if not os.path.exists(token):  # on a real node: read it, never replace it
        _write(f"{made(d)}/token", "eyJhbGciOi.not-a-token\n")
    for path in (token, token.replace("/var/run/", "/run/")):
        a = _one(_alerts(agent, ["/bin/cat", path]), "nw.sa_token_read", "medium", "T1528")
        assert a["file.path"] == path
    assert _alerts(agent, [_as(nwb, "kubectl", "/bin/cat"), token]) == []


def test_search_for_secrets(agent, scratch):
    d = f"/run/{TAG}-search-{uuid.uuid4().hex[:6]}"
    os.makedirs(d)
    scratch.append(d)
    _write(f"{d}/notes", "hello id_rsa\nhello\n", 0o644)
    _write(f"{d}/a.pem", "x\n", 0o644)
    a = _one(_alerts(agent, ["/bin/grep", "-r", "id_rsa", d]), "nw.search_for_secrets", "medium", "T1552.001")
    assert a["process.name"] == "grep"
    _one(_alerts(agent, ["/usr/bin/find", d, "-name", "*.pem"]), "nw.search_for_secrets", "medium", "T1552.001")
    assert _alerts(agent, ["/bin/grep", "-r", "hello", d]) == []
    assert _alerts(agent, ["/usr/bin/find", d, "-name", "*.txt"]) == []


# -- fileless, privilege, users --------------------------------------------------------------------------


def test_fileless_exec(agent, nwb):
    a = _one(_alerts(agent, [nwb, "memfd-exec"]), "nw.fileless_exec", "critical", "T1620")
    assert a["process.executable.memfd"] is True and a["trigger.name"] == "process.exec"
    assert _alerts(agent, [nwb, "memfd-noexec"]) == []  # a memfd filled, never run


def test_setuid_to_root(agent, nwb):
    a = _one(_alerts(agent, [nwb, "setuid-root"]), "nw.setuid_to_root", "high", "T1548")
    assert (a["user.id"], a["setid.effective"], a["syscall.return"]) == (65534, 0, 0)
    assert _alerts(agent, [nwb, "setuid-drop"]) == []  # root dropping to nobody
    assert _alerts(agent, [_as(nwb, "sudo"), "setuid-root"]) == []  # a setuid program whose job it is


def test_capset_raise(agent, nwb):
    a = _one(_alerts(agent, [nwb, "capset"]), "nw.capset_raise", "medium", "T1548")
    assert a["user.id"] == 65534
    assert a["capabilities.effective"] & (1 << 21)  # CAP_SYS_ADMIN
    assert _alerts(agent, [nwb, "capset-bind"]) == []  # nobody keeping only CAP_NET_BIND_SERVICE


def test_user_management(agent, nwb):
    for name in ("useradd", "usermod", "chpasswd"):
        a = _one(_alerts(agent, [_as(nwb, name, "/bin/true"), "-m", f"{TAG}-eve"]), "nw.user_management",
                 "medium", "T1136.001")
        assert a["process.name"] == name
    passwd = _as(nwb, "passwd", "/bin/true")
    _one(_alerts(agent, [passwd, f"{TAG}-eve"]), "nw.user_management", "medium", "T1136.001")
    assert _alerts(agent, [passwd]) == []  # changing one's own password
    assert _alerts(agent, [_as(nwb, "users", "/bin/true")]) == []


# -- defense evasion -------------------------------------------------------------------------------------


def test_log_cleared(agent, nwb, scratch):
    log = f"/var/log/{TAG}-{uuid.uuid4().hex[:6]}.log"
    scratch += [log, log + ".1"]
    _write(log, "line\n", 0o644)
    _write(log + ".1", "old\n", 0o644)
    a = _one(_alerts(agent, _sh(f": > {log}")), "nw.log_cleared", "high", "T1070.002")
    assert (a["trigger.name"], a["file.path"]) == ("file.open", log)
    assert _alerts(agent, _sh(f"echo more >> {log}")) == []  # appending: what loggers do
    assert _alerts(agent, [nwb, "truncate", log + ".1"]) == []  # a rotated file
    assert _alerts(agent, [_as(nwb, "logrotate"), "truncate", log]) == []
    a = _one(_alerts(agent, ["/bin/rm", log]), "nw.log_cleared", "high", "T1070.002")
    assert a["trigger.name"] == "file.unlink"


def test_link_to_sensitive_file(agent, nwb, scratch):
    d = f"/var/tmp/{TAG}-links-{uuid.uuid4().hex[:6]}"  # the root filesystem's: a hard link needs /etc's
    os.makedirs(d)
    scratch.append(d)
    a = _one(_alerts(agent, ["/bin/ln", "-s", "/etc/shadow", f"{d}/s"]), "nw.link_to_sensitive_file", "high",
             "T1222")
    assert (a["trigger.name"], a["file.path"], a["file.link.target"]) == ("file.symlink", f"{d}/s", "/etc/shadow")
    a = _one(_alerts(agent, [nwb, "hardlink", "/etc/passwd", f"{d}/p"]), "nw.link_to_sensitive_file", "high",
             "T1222")
    assert (a["trigger.name"], a["file.link.target"]) == ("file.link", "/etc/passwd")
    _one(_alerts(agent, [nwb, "symlink", "/proc/1/root", f"{d}/r"]), "nw.link_to_sensitive_file", "high", "T1222")
    assert _alerts(agent, ["/bin/ln", "-s", "/etc/hostname", f"{d}/h"]) == []
    _write(f"{d}/plain", "x\n", 0o644)
    assert _alerts(agent, [nwb, "hardlink", f"{d}/plain", f"{d}/plain2"]) == []


def test_container_escape_write_to_kernel_hooks(agent, nwb):
    """core_pattern and the modprobe path opened for writing and closed unwritten (nwbehave write): the
    kernel's settings stay as they were. probes.watch_writes reports them below the ignored /proc/."""
    for hook in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe"):
        if not os.path.exists(hook):
            continue  # /proc/sys/kernel/modprobe exists only with CONFIG_MODULES
        a = _one(_alerts(agent, [nwb, "write", hook]), "nw.container_escape_write", "critical", "T1611")
        assert (a["trigger.name"], a["file.path"]) == ("file.open", hook)
    assert _alerts(agent, [nwb, "read", "/proc/sys/kernel/core_pattern"]) == []  # reading it is harmless
    assert _alerts(agent, [nwb, "write", "/proc/sys/kernel/domainname"]) == []  # a sysctl, not a hook


def test_container_escape_write(agent, nwb, scratch):
    """A release_agent of a cgroup v1 hierarchy mounted by the test (the classic escape mounts one), opened
    for writing and closed unwritten: the kernel's hooks stay as they were."""
    d = f"/run/{TAG}-cg-{uuid.uuid4().hex[:6]}"
    os.makedirs(d)
    scratch.append(d)
    if subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={TAG}", "cgroup", d]).returncode != 0:
        pytest.skip("this kernel mounts no cgroup v1 hierarchy")
    try:
        a = _one(_alerts(agent, [nwb, "write", f"{d}/release_agent"]), "nw.container_escape_write", "critical",
                 "T1611")
        assert (a["trigger.name"], a["file.path"]) == ("file.open", f"{d}/release_agent")
        _one(_alerts(agent, [nwb, "write", f"{d}/notify_on_release"]), "nw.container_escape_write", "critical",
             "T1611")
        assert _alerts(agent, [nwb, "write", f"{d}/cgroup.clone_children"]) == []
    finally:
        subprocess.run(["umount", d])


# -- execution -------------------------------------------------------------------------------------------


def test_shell_from_a_server(agent, nwb):
    a = _one(_alerts(agent, [_as(nwb, "nginx"), "spawn", "/bin/sh", "-c", "echo hi"]), "nw.shell_from_server",
             "high", "T1505.003", via=("nginx",))  # the shell's parent: the "server"
    assert a["process.name"] == "sh"
    assert a["process.ancestors.executable.path"][0] == os.path.join(os.path.dirname(nwb), "nginx")
    assert _alerts(agent, [_as(nwb, "myapp"), "spawn", "/bin/sh", "-c", "echo hi"]) == []


def test_download_piped_to_shell(agent):
    # nothing listens on the discard port: curl fails at once and sh reads an empty script
    a = _one(_alerts(agent, ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:9/i.sh | sh"]),
             "nw.download_piped_to_shell", "high", "T1105")
    assert a["process.command_line"] == "/bin/sh -c curl -fsS http://127.0.0.1:9/i.sh | sh"
    # and with more after it, as an exploit's payload has
    _one(_alerts(agent, ["/bin/sh", "-c", "wget -qO- http://127.0.0.1:9/i.sh | sh; echo done"]),
         "nw.download_piped_to_shell", "high", "T1105")
    assert _alerts(agent, ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:9/i.sh | grep -c x; :"]) == []
    assert _alerts(agent, ["/bin/sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:9/shell.sh; :"]) == []


# -- processes tracing each other ------------------------------------------------------------------------


def test_ptrace_attach(agent, nwb):
    a = _one(_alerts(agent, [nwb, "ptrace-attach"]), "nw.ptrace_attach", "high", "T1055.008")
    assert a["ptrace.request"] == 16 and a["target.pid"] > 0  # PTRACE_ATTACH to its own child
    a = _one(_alerts(agent, [nwb, "ptrace-seize"]), "nw.ptrace_attach", "high", "T1055.008")
    assert a["ptrace.request"] == 0x4206
    assert _alerts(agent, [_as(nwb, "gdb"), "ptrace-attach"]) == []  # a debugger
    assert _alerts(agent, [_as(nwb, "strace"), "ptrace-seize"]) == []


def test_ptrace_anti_debug(agent, nwb):
    a = _one(_alerts(agent, [nwb, "ptrace-traceme"]), "nw.ptrace_anti_debug", "medium", "T1622")
    assert a["ptrace.request"] == 0
    # a debugger's child asks to be traced: how gdb and strace start their target
    assert _alerts(agent, [_as(nwb, "gdb"), "spawn", nwb, "ptrace-traceme"]) == []


# -- network (loopback only) -----------------------------------------------------------------------------


def test_packet_and_raw_sockets(agent, nwb):
    a = _one(_alerts(agent, [nwb, "packet-socket"]), "nw.packet_socket", "medium", "T1040")
    assert a["network.type"] == "packet"
    a = _one(_alerts(agent, [nwb, "raw-socket"]), "nw.packet_socket", "medium", "T1040")
    assert a["network.transport"] == "raw"
    assert _alerts(agent, [nwb, "tcp-socket"]) == [] and _alerts(agent, [nwb, "udp-socket"]) == []
    assert _alerts(agent, [_as(nwb, "dhclient"), "packet-socket"]) == []  # a DHCP client's job


def test_reverse_shell(agent, nwb):
    srv = _listener((0,))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def serve():
        c, _ = srv.accept()
        with c:
            got.append(c.recv(100))

    def run(sub: str) -> list[dict]:
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            return _alerts(agent, [nwb, sub, "127.0.0.1", str(port)])
        finally:
            t.join(10)

    try:
        # dup2 onto 0, 1 and 2: the first raises the alert, the other two fold into it
        a = _one(run("reverse-shell"), "nw.reverse_shell", "critical", "T1059.004")
        assert (a["network.peer.address"], a["network.peer.port"]) == ("127.0.0.1", port)
        assert (a["trigger.name"], a["network.dup.new_fd"]) == ("network.dup", 0)
        assert got == [b"hi\n"]  # the shell ran on the socket
        assert run("dup-socket-high") == []  # a socket onto fd 10, not stdio
    finally:
        srv.close()
    assert _alerts(agent, [nwb, "dup-pipe"]) == []  # a pipe onto stdout: every shell pipeline


# -- kernel ----------------------------------------------------------------------------------------------


def test_bpf_program_load(agent, nwb):
    a = _one(_alerts(agent, [nwb, "bpf-load"]), "nw.bpf_program_load", "medium", "T1014")
    assert (a["bpf.program.name"], a["bpf.program.type"]) == ("nwbehave", 1)  # BPF_PROG_TYPE_SOCKET_FILTER
    assert _alerts(agent, [_as(nwb, "bpftool"), "bpf-load"]) == []


def test_container_only_rules_stay_quiet_on_the_host(agent, nwb, scratch):
    """The look-alikes of the container-scoped rules: mounts, namespaces and UDP to any port are an admin's
    ordinary work on a host (the container suite, tests/e2e/test_detect_containers.py, raises them)."""
    d = f"/run/{TAG}-mnt-{uuid.uuid4().hex[:6]}"
    os.makedirs(d)
    scratch.append(d)
    assert _alerts(agent, [nwb, "mount-tmpfs", d]) == []
    assert _alerts(agent, [nwb, "unshare-net"]) == [] and _alerts(agent, [nwb, "unshare-mnt"]) == []
    assert _alerts(agent, [nwb, "setns-self"]) == []
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    try:
        assert _alerts(agent, [nwb, "udp-send", "127.0.0.1", str(u.getsockname()[1])]) == []
    finally:
        u.close()


# -- the rules as policy, hot-reloaded in the running agent ----------------------------------------------


def test_policy_reload_swaps_the_rules_and_a_broken_rule_keeps_them(tmp_path, scratch):
    pol = tmp_path / "policy.yaml"
    pol.write_text("detect:\n  disable: {ids: [nw.write_below_etc]}\n")
    # A state dir of its own: the module's agent writes the default status.json every 5 s too (seen in CI: a
    # poll that kept reading the other agent's file)
    state = tmp_path / "state"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent:\n  state_dir: {state}\n")
    a = AgentProcess("--no-containers", "--config", str(cfg), "--policy", str(pol))
    try:
        f = f"/etc/{TAG}-reload-{uuid.uuid4().hex[:6]}"
        scratch.append(f)
        assert _alerts(a, _sh(f"echo x > {f}")) == []  # disabled by id
        status = a.status(str(state))
        assert status["detection"]["enabled"] and status["detection"]["not_loaded"] == []
        assert status["detection"]["rules"] == len([r for r in _bundled() if r != "nw.write_below_etc"])
        pol.write_text("detect:\n  rules:\n    - rule: t.mine\n      condition: event.name = process.exec and "
                       f"process.command_line contains {TAG}-mine\n      severity: low\n"
                       "      tags: [execution, T1059]\n      description: mine\n"
                       "      output: [process.command_line]\n")
        loaded = lambda r: r["event.name"] == "agent.policy" and not r.get("policy.error")  # noqa: E731
        a.wait_for(loaded, timeout=15, count=len(a.find(loaded)) + 1)
        _one(_alerts(a, _sh(f"echo x > {f}")), "nw.write_below_etc", "high", "T1543")
        _one(_alerts(a, ["/bin/true", f"{TAG}-mine"]), "t.mine", "low", "T1059")
        pol.write_text("detect:\n  rules:\n    - rule: t.broken\n      condition: process.name ===\n"
                       "      severity: low\n")
        (rej,) = a.wait_for(lambda r: r["event.name"] == "agent.policy" and r.get("policy.error"), timeout=15)
        assert f"{pol}:4:33: rule t.broken" in rej["policy.error"]  # the third = of ===
        # the rules in force stayed (another command line: an identical alert would fold into the first)
        _one(_alerts(a, ["/bin/true", f"{TAG}-mine", "again"]), "t.mine", "low", "T1059")
    finally:
        a.stop()
