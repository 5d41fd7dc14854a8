"""The field registry: every getter on events decoded from packed kernel records, Falco's aliases,
indexed ancestors, and agreement with the flat record for every field both carry."""

from __future__ import annotations

import os

import pytest

from agent.detect.fields import ALIASES, EVENT_TYPES, FIELDS, FieldError, resolve
from agent.events import EVENT_NAMES, Enriched, Op, ProcInfo
from agent.outputs.record import from_enriched
from tests.unit.detect_events import (
    CID,
    CONTAINER,
    GRANDPARENT,
    PARENT,
    connect_en,
    enriched,
    exec_en,
    file_rec,
    net_rec,
    open_en,
    sys_en,
)
from tests.unit.replay_records import PID, exit_rec, fork_rec


def _get(name: str, en: Enriched, ancestors=None):
    return resolve(name, ancestors).get(en)


def _samples() -> list[Enriched]:
    extra = []
    if "ancestors" in Enriched.__dataclass_fields__:  # enrich's chain (issue 10), when it carries one
        import dataclasses

        extra.append(dataclasses.replace(exec_en("/bin/sh", ["sh"]), ancestors=(PARENT, GRANDPARENT)))
    return extra + [
        exec_en("/usr/bin/curl", ["curl", "-s", "http://x"], comm=b"curl"),
        open_en("/etc/shadow", flags=os.O_RDONLY),
        open_en("/etc/passwd", flags=os.O_WRONLY | os.O_CREAT, container=None, parent=None),
        enriched(file_rec(Op.FILE_RENAME, "/tmp/a", "/usr/bin/a")),
        enriched(file_rec(Op.FILE_CHMOD, "/tmp/x", mode=0o4755)),
        enriched(file_rec(Op.FILE_UNLINK, "/root/.bash_history")),
        connect_en("10.0.0.7", 3333),
        enriched(net_rec(Op.NET_ACCEPT, "10.0.0.9", 40000, ret=5)),
        enriched(net_rec(Op.NET_BIND, "0.0.0.0", 8080)),
        enriched(net_rec(Op.NET_LISTEN, "0.0.0.0", 8080)),
        enriched(fork_rec(PID + 1)),
        enriched(exit_rec(0)),
        *_new_op_samples(),
    ]


def _new_op_samples() -> list[Enriched]:
    """One event of every op issue 10 added (symlink, link, socket, dup, sendto, the system family)."""
    import socket

    return [
        enriched(file_rec(Op.FILE_SYMLINK, "/tmp/s", "/etc/shadow")),
        enriched(file_rec(Op.FILE_LINK, "/tmp/l", "/etc/passwd")),
        enriched(net_rec(Op.NET_SOCKET, "", 0, sock_type=3, ret=4, fd=-1, protocol=768, family=socket.AF_PACKET)),
        enriched(net_rec(Op.NET_DUP, "10.0.0.5", 4444, fd=3, fd2=1)),
        enriched(net_rec(Op.NET_SENDTO, "10.0.0.53", 9999, sock_type=2, ret=12)),
        sys_en(Op.PTRACE, "ptrace", arg=0x4206, target_pid=77),
        sys_en(Op.SETUID, "setresuid", ids=(0, 0, -1)),
        sys_en(Op.SETGID, "setgid", ids=(0, 0, 0), uid=0),
        sys_en(Op.CAPSET, "capset", caps=(1 << 21, 1 << 21 | 1 << 19, 0), target_pid=0),
        sys_en(Op.MODULE_LOAD, "finit_module", name="/tmp/rootkit.ko", arg=0),
        sys_en(Op.MODULE_LOAD, "init_module"),  # no file: module.path is ""
        sys_en(Op.MOUNT, "mount", name="/mnt/host", source="/dev/sda1", fstype="ext4", arg=0),
        sys_en(Op.UMOUNT, "umount2", name="/mnt/host", arg=2),
        sys_en(Op.UNSHARE, "unshare", arg=0x10000000 | 0x00020000 | 0x40000000),
        sys_en(Op.SETNS, "setns", arg=0x20000000, ids=(5, -1, -1)),
        sys_en(Op.BPF_LOAD, "bpf", arg=2, name="kprobe_hide"),
        sys_en(Op.MEMFD_CREATE, "memfd_create", name="payload", arg=1, ret=3),
    ]


def test_every_record_key_we_share_reads_the_same_value():
    """For each field whose name is also a key of the flat record, the getter gives what
    from_enriched prints, on every event kind (and None exactly when the record has no key)."""
    for en in _samples():
        rec = from_enriched(en)
        for name, field in FIELDS.items():
            if name in rec:
                assert field.get(en) == rec[name], (en.event.name, name)
            elif name in ("process.executable.path", "process.command_line"):
                continue  # the record omits them without a process; the getter agrees (None) below
            if field.kinds is not None and en.event.name not in field.kinds:
                assert field.get(en) is None, (en.event.name, name)


def test_process_fields_on_an_exec():
    en = exec_en("/usr/bin/curl", ["curl", "-s", "http://x"], comm=b"curl")
    assert _get("process.name", en) == "curl"
    assert _get("process.executable.path", en) == "/usr/bin/curl"
    assert _get("process.executable.name", en) == "curl"
    assert _get("process.command_line", en) == "curl -s http://x"
    assert _get("process.args", en) == ["curl", "-s", "http://x"]
    assert _get("proc.args", en) == "-s http://x"  # Falco's: the arguments after argv[0]
    assert _get("process.args_count", en) == 3
    assert _get("process.pid", en) == PID and _get("proc.ppid", en) == PID - 1
    assert _get("process.parent.name", en) == "nginx" == _get("proc.pname", en)
    assert _get("proc.pexepath", en) == "/usr/sbin/nginx"
    assert _get("proc.pcmdline", en) == "nginx -g daemon off;"
    assert _get("user.uid", en) == 1000
    assert _get("event.name", en) == "process.exec"


def test_file_fields():
    en = open_en("/etc/ssh/sshd_config", flags=os.O_RDWR | os.O_CREAT)
    assert _get("fd.name", en) == "/etc/ssh/sshd_config"
    assert _get("fd.directory", en) == "/etc/ssh"
    assert _get("fd.filename", en) == "sshd_config"
    assert _get("file.open.flags", en) == os.O_RDWR | os.O_CREAT
    assert _get("evt.is_open_write", en) is True and _get("evt.is_open_read", en) is True
    ro = open_en("/etc/shadow", flags=os.O_RDONLY)
    assert _get("evt.is_open_write", ro) is False and _get("evt.is_open_read", ro) is True
    wo = open_en("/etc/x", flags=os.O_WRONLY)
    assert _get("evt.is_open_read", wo) is False
    assert _get("fd.typechar", en) == "f" and _get("fd.type", en) == "file"
    assert _get("fd.num", en) == 3  # the descriptor the open returned
    assert _get("evt.arg.flags", en) == ("O_RDWR", "O_CREAT")
    assert _get("evt.arg.flags", ro) == ("O_RDONLY",)
    trunc = open_en("/x", flags=os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    assert set(_get("file.open.flag_names", trunc)) == {"O_WRONLY", "O_TRUNC", "O_CLOEXEC"}
    suid = enriched(file_rec(Op.FILE_CHMOD, "/tmp/x", mode=0o4755))
    assert "S_ISUID" in _get("evt.arg.mode", suid) and "S_ISGID" not in _get("evt.arg.mode", suid)
    ren = enriched(file_rec(Op.FILE_RENAME, "/tmp/a", "/usr/bin/a"))
    assert _get("file.target.path", ren) == "/usr/bin/a"
    assert _get("file.open.flags", ren) is None  # not an open
    assert _get("file.mode", enriched(file_rec(Op.FILE_CHMOD, "/tmp/x", mode=0o4755))) == 0o4755


def test_network_fields_follow_falco_server_and_client():
    c = connect_en("10.0.0.7", 3333, sock_type=2)
    assert _get("fd.rip", c) == "10.0.0.7" and _get("fd.rport", c) == 3333
    assert _get("fd.sip", c) == "10.0.0.7" and _get("fd.sport", c) == 3333  # a connect's peer is the server
    assert _get("fd.cip", c) is None
    assert _get("fd.l4proto", c) == "udp" and _get("network.type", c) == "ipv4"
    assert _get("fd.typechar", c) == "4"
    a = enriched(net_rec(Op.NET_ACCEPT, "10.0.0.9", 40000, ret=5))
    assert _get("fd.cip", a) == "10.0.0.9" and _get("fd.cport", a) == 40000
    assert _get("fd.sip", a) is None  # an accept's local end is not in the record
    assert _get("fd.num", a) == 5
    assert _get("fd.sockfamily", c) == "ip"
    assert _get("evt.res", c) == "SUCCESS"
    refused = enriched(net_rec(Op.NET_CONNECT, "10.0.0.7", 1, ret=-111))
    assert _get("evt.res", refused) == "ECONNREFUSED" and _get("evt.rawres", refused) == -111
    b = enriched(net_rec(Op.NET_BIND, "0.0.0.0", 8080))
    assert _get("fd.lport", b) == 8080 and _get("fd.sport", b) == 8080 and _get("fd.rport", b) is None


def test_container_fields_and_image_split():
    en = exec_en("/bin/sh", ["sh"])
    assert _get("container.id", en) == CID
    assert _get("container.image.repository", en) == "registry.local/team/nginx"
    assert _get("container.image.tag", en) == "1.25"
    assert _get("container.image", en) == CONTAINER.image
    assert _get("k8s.ns.name", en) == "shop" and _get("k8s.pod.name", en) == "web-0"
    host = exec_en("/bin/sh", ["sh"], container=None)
    assert _get("container.id", host) is None and _get("container.image.tag", host) is None
    assert _get("falco.container.id", en) == CID
    assert resolve("container.id").name == "container.id"  # ours: absent outside a container
    assert _get("falco.container.id", host) == "host"  # Falco's, by its explicit name
    port_only = exec_en("/bin/sh", ["sh"], container=CONTAINER.__class__(id="x", image="localhost:5000/app"))
    assert _get("container.image.repository", port_only) == "localhost:5000/app"
    assert _get("container.image.tag", port_only) is None


def test_user_name_from_the_passwd_database():
    assert _get("user.name", open_en("/x", uid=0)) == "root"
    assert _get("user.name", open_en("/x", uid=3_999_999)) is None  # no passwd entry


def test_ancestors_parent_first_then_the_callable():
    en = exec_en("/bin/sh", ["sh"])
    assert _get("process.ancestors[0].name", en) == "nginx"
    assert _get("process.ancestors[0].executable.path", en) == "/usr/sbin/nginx"
    assert _get("process.ancestors[1].name", en) is None  # only the parent is known
    chain = (PARENT, GRANDPARENT)
    assert _get("process.ancestors[1].name", en, lambda e: chain) == "containerd-shim"
    assert _get("proc.aname[2]", en, lambda e: chain) == "containerd-shim"  # Falco: 1 is the parent
    assert _get("proc.aname[1]", en) == "nginx"
    assert _get("proc.aname[0]", en) == "sh"  # Falco: 0 is the process itself
    assert _get("proc.aexepath[2]", en, lambda e: chain) == "/usr/bin/containerd-shim-runc-v2"
    assert _get("proc.aname", en, lambda e: chain) == ["nginx", "containerd-shim"]
    assert _get("proc.aexe[1]", en) == "nginx" and _get("proc.aexe[2]", en, lambda e: chain) == "shim"
    assert _get("proc.aexe", en, lambda e: chain) == ["nginx", "shim"]
    assert _get("process.ancestors[0].argv0", en) == "nginx" and _get("proc.aexe[0]", en) == "sh"
    nameless = ProcInfo(pid=5, ppid=1, exe="/usr/lib/jvm/bin/java", argv=(), uid=0, start_ns=0)
    orphan = exec_en("/bin/sh", ["sh"], parent=nameless)
    assert _get("proc.pname", orphan) == "java"  # no comm known: the executable's base name


def test_ancestors_from_the_enriched_record_when_it_carries_them():
    """Once enrich adds `ancestors` to Enriched, the getters read it without a callable."""

    class WithChain:
        __slots__ = ("event", "process", "parent", "container", "ancestors")

        def __init__(self, en: Enriched):
            self.event, self.process, self.parent, self.container = en.event, en.process, en.parent, en.container
            self.ancestors = (PARENT, GRANDPARENT)

    en = WithChain(exec_en("/bin/sh", ["sh"]))
    assert _get("process.ancestors[1].executable.path", en) == "/usr/bin/containerd-shim-runc-v2"


def test_unknown_and_malformed_names_are_refused_by_name():
    for bad in ("proc.nope", "process.ancestors[x].name", "process.ancestors[1].uid", "fd.name[2]",
                "process.ancestors[99].name"):
        with pytest.raises(FieldError, match=r"'.+'"):
            resolve(bad)


def test_aliases_and_event_types_point_at_what_exists():
    assert all(target in FIELDS for target in ALIASES.values())
    assert set(EVENT_TYPES.values()) <= set(EVENT_NAMES.values())
    for f in FIELDS.values():
        assert f.type in ("str", "int", "bool", "list[str]", "net")
        assert f.kinds is None or f.kinds <= set(EVENT_NAMES.values())


def test_falco_proc_exe_is_the_first_argument():
    en = exec_en("/usr/bin/python3.11", ["python3", "-c", "1"])
    assert _get("proc.exe", en) == "python3" and _get("proc.exepath", en) == "/usr/bin/python3.11"


@pytest.mark.skipif("path_resolved" not in Enriched.__dataclass_fields__, reason="enrich has no path_resolved yet")
def test_fd_name_reads_the_resolved_path():
    import dataclasses

    en = dataclasses.replace(open_en("shadow"), path_resolved="/etc/shadow")
    assert _get("file.path", en) == "shadow"  # the record's: as the syscall gave it
    assert _get("fd.name", en) == "/etc/shadow" and _get("fd.directory", en) == "/etc"


def test_link_fields():
    sym = enriched(file_rec(Op.FILE_SYMLINK, "/tmp/s", "/etc/shadow"))
    assert _get("file.path", sym) == "/tmp/s" and _get("fd.name", sym) == "/tmp/s"
    assert _get("file.link.target", sym) == "/etc/shadow" == _get("evt.arg.target", sym)
    assert _get("file.name", sym) == "s" and _get("file.directory", sym) == "/tmp"
    assert _get("file.target.path", sym) is None  # a rename's destination only
    hard = enriched(file_rec(Op.FILE_LINK, "/tmp/l", "/etc/passwd"))
    assert _get("file.link.target", hard) == "/etc/passwd" and _get("event.name", hard) == "file.link"
    assert _get("file.link.target", enriched(file_rec(Op.FILE_RENAME, "/tmp/a", "/tmp/b"))) is None


def test_socket_dup_and_sendto_fields():
    import socket

    raw = enriched(net_rec(Op.NET_SOCKET, "", 0, sock_type=3, ret=4, fd=-1, protocol=768, family=socket.AF_PACKET))
    assert _get("network.type", raw) == "packet" and _get("network.transport", raw) == "raw"
    assert _get("network.fd", raw) == 4 and _get("fd.num", raw) == 4 and _get("network.protocol", raw) == 768
    assert _get("network.peer.address", raw) is None and _get("network.local.port", raw) is None
    dup = enriched(net_rec(Op.NET_DUP, "10.0.0.5", 4444, fd=3, fd2=1))
    assert _get("network.dup.new_fd", dup) == 1 and _get("network.fd", dup) == 3
    assert _get("fd.rip", dup) == "10.0.0.5" and _get("fd.rport", dup) == 4444
    assert _get("fd.sip", dup) is None and _get("fd.cip", dup) is None  # either end: no server or client
    assert _get("network.protocol", dup) is None and _get("network.dup.new_fd", raw) is None
    send = enriched(net_rec(Op.NET_SENDTO, "10.0.0.53", 9999, sock_type=2, ret=12))
    assert _get("network.peer.port", send) == 9999 and _get("fd.sport", send) == 9999  # its server: the destination
    assert _get("fd.l4proto", send) == "udp" and _get("network.fd", send) is None
    assert _get("fd.rnet", send) == "10.0.0.53"


def test_system_fields_by_op():
    seize = sys_en(Op.PTRACE, "ptrace", arg=0x4206, target_pid=77)
    assert _get("ptrace.request", seize) == 0x4206 and _get("ptrace.request_name", seize) == "PTRACE_SEIZE"
    assert _get("evt.arg.request", seize) == "PTRACE_SEIZE" and _get("target.pid", seize) == 77
    assert _get("syscall.name", seize) == "ptrace" == _get("syscall.type", seize)
    assert _get("evt.type", seize) == "system.ptrace" and _get("evt.res", seize) == "SUCCESS"
    assert _get("ptrace.request_name", sys_en(Op.PTRACE, "ptrace", arg=0)) == "PTRACE_TRACEME"
    assert _get("ptrace.request_name", sys_en(Op.PTRACE, "ptrace", arg=0x7777)) == "PTRACE_30583"
    assert _get("setid.real", seize) is None and _get("mount.target", seize) is None
    su = sys_en(Op.SETUID, "setresuid", ids=(0, 0, -1))
    assert (_get("setid.real", su), _get("setid.effective", su), _get("setid.saved", su)) == (0, 0, -1)
    assert _get("user.id", su) == 1000 and _get("target.pid", su) is None  # the caller's uid before the call
    cap = sys_en(Op.CAPSET, "capset", caps=(1 << 21 | 1, 1 << 21 | 1 << 19, 1 << 45), target_pid=0)
    assert _get("capabilities.effective", cap) == 1 << 21 | 1
    assert _get("capabilities.effective_names", cap) == ("CAP_CHOWN", "CAP_SYS_ADMIN")
    assert _get("capabilities.permitted_names", cap) == ("CAP_SYS_PTRACE", "CAP_SYS_ADMIN")
    assert _get("capabilities.inheritable_names", cap) == ("CAP_45",)  # past the table: by its bit
    assert _get("capabilities.effective_names", sys_en(Op.CAPSET, "capset")) == ()
    mod = sys_en(Op.MODULE_LOAD, "finit_module", name="/tmp/rootkit.ko", arg=4)
    assert _get("module.path", mod) == "/tmp/rootkit.ko" and _get("module.flags", mod) == 4
    assert _get("evt.type", mod) == "system.module_load"
    mnt = sys_en(Op.MOUNT, "mount", name="/mnt/host", source="/dev/sda1", fstype="ext4", arg=4096)
    assert (_get("mount.target", mnt), _get("mount.source", mnt), _get("mount.fstype", mnt)) == (
        "/mnt/host", "/dev/sda1", "ext4")
    assert _get("mount.flags", mnt) == 4096
    um = sys_en(Op.UMOUNT, "umount2", name="/mnt/host", arg=2)
    assert _get("mount.target", um) == "/mnt/host" and _get("mount.source", um) is None
    ns = sys_en(Op.UNSHARE, "unshare", arg=0x10000000 | 0x00020000 | 0x40000000 | 0x80 | 0x02000000)
    assert set(_get("namespace.types", ns)) == {"user", "mnt", "net", "time", "cgroup"}
    assert _get("namespace.fd", ns) is None
    setns = sys_en(Op.SETNS, "setns", arg=0x20000000, ids=(5, -1, -1))
    assert _get("namespace.types", setns) == ("pid",) and _get("namespace.fd", setns) == 5
    assert _get("namespace.types", sys_en(Op.SETNS, "setns", arg=0)) == ()  # nstype 0: any
    bpf = sys_en(Op.BPF_LOAD, "bpf", arg=2, name="kprobe_hide")
    assert _get("bpf.program.type", bpf) == 2 and _get("bpf.program.name", bpf) == "kprobe_hide"
    memfd = sys_en(Op.MEMFD_CREATE, "memfd_create", name="payload", arg=1, ret=3)
    assert _get("memfd.name", memfd) == "payload" and _get("memfd.flags", memfd) == 1
    assert _get("syscall.return", memfd) == 3
    assert _get("file.path", memfd) is None and _get("network.fd", memfd) is None


def test_fast_getters_agree_with_the_checked_ones_on_their_kinds():
    """agent/detect/index.py uses `fast` where it knows the kind: it must read what `get` reads there."""
    for en in _samples():
        for name, field in FIELDS.items():
            fast = field.fast_on(en.event.name)
            if fast is not None:
                assert fast(en) == field.get(en), (en.event.name, name)


def test_every_new_event_type_maps_to_its_event():
    for syscalls, event in (
        (("symlink", "symlinkat"), "file.symlink"), (("link", "linkat"), "file.link"),
        (("dup2", "dup3"), "network.dup"), (("socket",), "network.socket"), (("sendto",), "network.sendto"),
        (("ptrace",), "system.ptrace"), (("setuid", "setresuid"), "system.setuid"),
        (("setgid", "setresgid"), "system.setgid"), (("capset",), "system.capset"),
        (("init_module", "finit_module"), "system.module_load"), (("mount",), "system.mount"),
        (("umount2",), "system.umount"), (("unshare",), "system.unshare"), (("setns",), "system.setns"),
        (("bpf",), "system.bpf_load"), (("memfd_create",), "system.memfd_create"),
    ):
        for sc in syscalls:
            assert EVENT_TYPES[sc] == event, sc


def test_every_inline_getter_reads_what_its_function_reads():
    """agent/detect/index.py inlines a getter's `inline` text in place of calling it: the two must agree."""
    import dataclasses

    from agent.detect.fields import FIELDS
    from tests.unit.detect_events import connect_en, exec_en, open_en

    samples = [open_en("/etc/x.conf", flags=0o101), open_en("rel/y.txt"), connect_en("10.0.0.9", 443),
               exec_en("/bin/sh", ["sh", "-c", "id"])]
    samples.append(dataclasses.replace(samples[1], path_resolved="/srv/rel/y.txt"))
    checked = 0
    for f in FIELDS.values():
        for get in (f.get, f.fast):
            text = getattr(get, "inline", None)
            if text is None:
                continue
            for en in samples:
                if f.kinds is not None and en.event.name not in f.kinds:
                    continue
                if get is f.fast and f.fast_on(en.event.name) is None:
                    continue  # a fast getter is valid on its fast_kinds only (process.executable.path: execs)
                assert eval(f"lambda en: {text}")(en) == get(en), (f.name, text)  # noqa: S307
                checked += 1
    assert checked >= 20


def test_falco_oldpath_newpath_and_socket_domain():
    """evt.arg.oldpath/newpath: a rename's source and destination, a hard link's existing file and new name;
    evt.arg.domain: a socket's family by its C name (Falco's `evt.arg.domain contains AF_PACKET`)."""
    from agent.detect.fields import resolve
    from agent.events import Op
    from tests.unit.detect_events import enriched, file_rec, net_rec

    old, new = resolve("evt.arg.oldpath"), resolve("evt.arg.newpath")
    link = enriched(file_rec(Op.FILE_LINK, "/tmp/x", "/etc/shadow"))
    ren = enriched(file_rec(Op.FILE_RENAME, "/tmp/a", "/etc/b"))
    assert (old.get(link), new.get(link)) == ("/etc/shadow", "/tmp/x")
    assert (old.get(ren), new.get(ren)) == ("/tmp/a", "/etc/b")
    assert old.get(enriched(file_rec(Op.FILE_OPEN, "/tmp/a"))) is None
    domain = resolve("evt.arg.domain")
    sock = enriched(net_rec(Op.NET_SOCKET, "", 0, sock_type=3, family=17))
    assert domain.get(sock) == "AF_PACKET" and domain.kinds == {"network.socket"}
