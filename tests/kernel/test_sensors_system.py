"""The system family against real calls: each made by a child (raw syscalls through ctypes), every field of
its record checked against what the child knows; the calls the kernel drops (no-op set*id, ptrace reads,
bpf map commands, the agent's own loads) checked absent."""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from agent.config import ProbeConfig
from agent.events import Op
from agent.sensors.common import BootClock
from agent.sensors.loader import ProbeSet
from agent.sensors.system import SYSCALL_NAMES

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the children make raw syscalls by their x86-64 numbers")

# and the calls the tests make to set one up: capget, and the new mount API's steps before move_mount
NR = {name: nr for nr, name in SYSCALL_NAMES.items()} | {"capget": 125, "open_tree": 428, "fsopen": 430,
                                                         "fsconfig": 431, "fsmount": 432}
CLONE_NEWUTS = 0x04000000
MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
MFD_CLOEXEC = 1
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_PEEKUSER = 16, 17, 3

# Run in every child before it waits for the go byte: the probes are pointed at it only then, so what
# the interpreter does to start is not in the records.
PRELUDE = f"""
import ctypes, json, os, struct, sys
NR = {NR!r}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(name, *args):
    r = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r if r >= 0 else -ctypes.get_errno()
def addr(obj):
    return ctypes.addressof(obj)
# A BPF_PROG_LOAD attr (uapi union bpf_attr): a socket filter `r0 = 0; exit`, named `name`.
INSNS = (ctypes.c_uint64 * 2)(0xb7, 0x95)
LICENSE = ctypes.create_string_buffer(b"GPL")
def prog_attr(name=b""):
    attr = (ctypes.c_uint8 * 128)()
    struct.pack_into("<IIQQ", attr, 0, 1, 2, addr(INSNS), addr(LICENSE))
    struct.pack_into("16s", attr, 48, name)
    return attr
print("ready", flush=True)
sys.stdin.read(1)
"""


@pytest.fixture(scope="module")
def system_probes():
    ps = ProbeSet(ProbeConfig(families=("system",)))
    ps.start()
    ps.set_target_tgid(1 << 31)  # no process: each test points the probes at its child
    reader = ps.reader()
    yield ps, reader
    reader.close()
    ps.stop()


def _drain(ps, reader):
    clock = BootClock()
    return [ps.decoders[raw[0]](raw, clock) for raw in reader.read(100000)]


def _cgroup2_id(pid: int) -> int:
    """The cgroup v2 id (its directory's inode) of pid, as bpf_get_current_cgroup_id() gives it."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    root = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"  # hybrid, or v2
    return os.stat(root + path).st_ino


# Before the prelude of a child that mounts: its own mount namespace, nothing shared with the host's. A
# mount left behind by a failed run would otherwise stay in the host's namespace, and pytest's later
# cleanup of old tmp dirs would delete through it (seen: a bind under tmp_path emptied the real /tmp).
PRIVATE_MOUNTS = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
assert _libc.unshare(0x20000) == 0, "unshare(CLONE_NEWNS)"
assert _libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0, "mount --make-rprivate /"  # MS_REC|MS_PRIVATE
"""


def run_child(system_probes, code: str, private_mounts: bool = False, **popen):
    """Run `code` in a child the probes target; (its pid, what it printed as JSON, the records).
    private_mounts: the child gets a mount namespace of its own first (every test that mounts)."""
    ps, reader = system_probes
    _drain(ps, reader)
    prefix = PRIVATE_MOUNTS if private_mounts else ""
    p = subprocess.Popen([sys.executable, "-c", prefix + PRELUDE + textwrap.dedent(code)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    assert p.stdout.readline() == "ready\n"
    mntns = os.stat(f"/proc/{p.pid}/ns/mnt").st_ino
    cgroup_id = _cgroup2_id(p.pid)
    ps.set_target_tgid(p.pid)
    t0 = time.time_ns()
    out, err = p.communicate("x", timeout=60)
    t1 = time.time_ns()
    ps.set_target_tgid(1 << 31)
    assert p.returncode == 0, err
    events = _drain(ps, reader)
    for e in events:  # the header of every record, and only the child's records (target_tgid)
        assert (e.pid, e.tid, e.ppid) == (p.pid, p.pid, os.getpid())
        assert (e.cgroup_id, e.mntns, e.comm) == (cgroup_id, mntns, os.path.basename(sys.executable)[:15])
        assert t0 - 50_000_000 <= e.ts_ns <= t1 + 50_000_000  # the boot-clock conversion's slack
    return p.pid, json.loads(out), events


def fields(e, *names):
    return tuple(getattr(e, n) for n in names)


def _untouched(e, *except_):
    """The members the op does not use keep their defaults."""
    defaults = {"target_pid": -1, "ids": (-1, -1, -1), "caps": (0, 0, 0), "arg_text": "", "source": "", "fstype": ""}
    for k, v in defaults.items():
        if k not in except_:
            assert getattr(e, k) == v, k


def test_ptrace_attach_is_reported_and_the_debuggers_reads_and_detach_are_not(system_probes):
    pid, out, events = run_child(system_probes, f"""
        import signal, time
        tracee = os.fork()
        if tracee == 0:
            time.sleep(30)
            os._exit(0)
        attach = sc("ptrace", {PTRACE_ATTACH}, tracee, 0, 0)
        os.waitpid(tracee, 0)
        word = ctypes.c_long()
        peek = sc("ptrace", {PTRACE_PEEKUSER}, tracee, 0, addr(word))
        detach = sc("ptrace", {PTRACE_DETACH}, tracee, 0, 0)
        os.kill(tracee, signal.SIGKILL)
        os.waitpid(tracee, 0)
        missing = sc("ptrace", {PTRACE_ATTACH}, 0x3ffffff0, 0, 0)
        print(json.dumps(dict(tracee=tracee, attach=attach, peek=peek, detach=detach, missing=missing)))
    """)
    assert (out["attach"], out["peek"], out["detach"], out["missing"]) == (0, 0, 0, -3)  # ESRCH
    assert [fields(e, "op", "call", "arg", "target_pid", "ret") for e in events] == [
        (Op.PTRACE, "ptrace", PTRACE_ATTACH, out["tracee"], 0),
        (Op.PTRACE, "ptrace", PTRACE_ATTACH, 0x3ffffff0, -3),
    ]
    for e in events:
        assert (e.uid, e.gid, e.truncated) == (0, 0, False)
        _untouched(e, "target_pid")


def test_setuid_family_ids_as_asked_uid_before_the_call_and_no_ops_dropped(system_probes):
    pid, out, events = run_child(system_probes, """
        r = {}
        r["noop_setuid"] = sc("setuid", 0)               # root asking for root: nothing changes
        r["noop_setresuid"] = sc("setresuid", -1, 0, -1)
        r["noop_setreuid"] = sc("setreuid", 0, 0)
        r["noop_setgid"] = sc("setgid", 0)
        r["fs_query"] = sc("setfsuid", -1)                # only asks for the fs uid
        r["to_nobody"] = sc("setresuid", -1, 65534, -1)   # effective only
        r["back"] = sc("setresuid", -1, 0, -1)
        r["fs"] = sc("setfsuid", 65534)                   # returns the old fs uid
        r["fs_back"] = sc("setfsuid", 0)
        r["real"] = sc("setreuid", 65534, -1)             # real 65534; saved follows the effective (0)
        r["real_back"] = sc("setreuid", 0, -1)            # allowed: effective is still 0
        r["bad"] = sc("setuid", -1)                       # EINVAL, still reported
        r["gid"] = sc("setresgid", -1, 65534, -1)
        r["gid_re"] = sc("setregid", 0, 0)
        r["gid_fs"] = sc("setfsgid", 65534)
        r["gid_one"] = sc("setgid", 0)
        print(json.dumps(r))
    """)
    assert out == {"noop_setuid": 0, "noop_setresuid": 0, "noop_setreuid": 0, "noop_setgid": 0, "fs_query": 0,
                   "to_nobody": 0, "back": 0, "fs": 0, "fs_back": 65534, "real": 0, "real_back": 0,
                   "bad": -22, "gid": 0, "gid_re": 0, "gid_fs": 0, "gid_one": 0}
    got = [fields(e, "op", "call", "ids", "ret", "uid", "gid") for e in events]
    assert got == [
        (Op.SETUID, "setresuid", (-1, 65534, -1), 0, 0, 0),
        (Op.SETUID, "setresuid", (-1, 0, -1), 0, 0, 0),
        (Op.SETUID, "setfsuid", (-1, 65534, -1), 0, 0, 0),
        (Op.SETUID, "setfsuid", (-1, 0, -1), 65534, 0, 0),
        (Op.SETUID, "setreuid", (65534, -1, -1), 0, 0, 0),
        (Op.SETUID, "setreuid", (0, -1, -1), 0, 65534, 0),  # uid: the caller's before the call
        (Op.SETUID, "setuid", (-1, -1, -1), -22, 0, 0),
        (Op.SETGID, "setresgid", (-1, 65534, -1), 0, 0, 0),
        (Op.SETGID, "setregid", (0, 0, -1), 0, 0, 0),  # the header's gid is the real one, still 0
        (Op.SETGID, "setfsgid", (-1, 65534, -1), 0, 0, 0),
        (Op.SETGID, "setgid", (-1, 0, -1), 0, 0, 0),  # fs gid is 65534: not a no-op
    ]
    for e in events:
        assert (e.arg, e.truncated) == (0, False)
        _untouched(e, "ids")


def test_setuid_refused_is_reported_with_eperm(system_probes):
    pid, out, events = run_child(system_probes, """
        print(json.dumps([sc("setresuid", 65534, 65534, 65534), sc("setuid", 0)]))
    """)
    assert out == [0, -1]
    assert [fields(e, "call", "ids", "ret", "uid") for e in events] == [
        ("setresuid", (65534, 65534, 65534), 0, 0),
        ("setuid", (-1, 0, -1), -1, 65534),  # EPERM
    ]


def test_capset_both_capability_versions_and_failures(system_probes):
    pid, out, events = run_child(system_probes, """
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two data structs
        d = (ctypes.c_uint32 * 6)()
        assert sc("capget", addr(hdr), addr(d)) == 0
        eff, perm = d[0] | d[3] << 32, d[1] | d[4] << 32
        new_eff = eff & ~(1 << 13) & ~(1 << 39)  # without CAP_NET_RAW and CAP_BPF (a high word bit)
        v3 = (ctypes.c_uint32 * 6)(new_eff & 0xffffffff, d[1], 0, new_eff >> 32, d[4], 0)
        r3 = sc("capset", addr(hdr), addr(v3))
        other = (ctypes.c_uint32 * 2)(0x20080522, os.getppid())   # another process: EPERM
        rother = sc("capset", addr(other), addr(v3))
        bad = (ctypes.c_uint32 * 2)(0x1234, 0)                    # no such version: EINVAL
        rbad = sc("capset", addr(bad), addr(v3))
        v1hdr = (ctypes.c_uint32 * 2)(0x19980330, 0)              # version 1: one struct, 32 bits
        v1 = (ctypes.c_uint32 * 6)(new_eff & 0xffffffff, d[1], 0, 0xdead, 0xbeef, 0xf00d)
        r1 = sc("capset", addr(v1hdr), addr(v1))
        print(json.dumps(dict(eff=new_eff, perm=perm, low_perm=d[1], r3=r3, rother=rother, rbad=rbad, r1=r1,
                              ppid=os.getppid())))
    """)
    assert (out["r3"], out["rother"], out["rbad"], out["r1"]) == (0, -1, -22, 0)
    eff, perm = out["eff"], out["perm"]
    assert [fields(e, "op", "call", "caps", "target_pid", "ret") for e in events] == [
        (Op.CAPSET, "capset", (eff, perm, 0), 0, 0),
        (Op.CAPSET, "capset", (eff, perm, 0), out["ppid"], -1),
        (Op.CAPSET, "capset", (eff, perm, 0), 0, -22),
        (Op.CAPSET, "capset", (eff & 0xffffffff, out["low_perm"], 0), 0, 0),  # the high words are not read
    ]
    for e in events:
        _untouched(e, "caps", "target_pid")
        assert e.arg == 0


def test_mount_tmpfs_and_umount2(system_probes, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    long_target = "/" + "x" * 300
    pid, out, events = run_child(system_probes, f"""
        data = ctypes.create_string_buffer(b"size=1m")
        m = sc("mount", b"nwtest-src", {str(target).encode()!r}, b"tmpfs", {MS_NOSUID | MS_NODEV}, addr(data))
        inside = os.path.ismount({str(target)!r})
        u = sc("umount2", {str(target).encode()!r}, 0)
        again = sc("umount2", {str(target).encode()!r}, {MNT_DETACH})   # not mounted any more: EINVAL
        bind = sc("mount", {str(tmp_path).encode()!r}, {str(target).encode()!r}, None, 4096, None)   # MS_BIND
        ub = sc("umount2", {str(target).encode()!r}, 0)
        far = sc("mount", b"none", {long_target.encode()!r}, b"tmpfs", 0, None)
        print(json.dumps([m, inside, u, again, bind, ub, far]))
    """, private_mounts=True)
    assert out == [0, True, 0, -22, 0, 0, -36]  # the last: ENAMETOOLONG
    t = str(target)
    assert [fields(e, "op", "call", "arg_text", "source", "fstype", "arg", "ret") for e in events] == [
        (Op.MOUNT, "mount", t, "nwtest-src", "tmpfs", MS_NOSUID | MS_NODEV, 0),
        (Op.UMOUNT, "umount2", t, "", "", 0, 0),
        (Op.UMOUNT, "umount2", t, "", "", MNT_DETACH, -22),
        (Op.MOUNT, "mount", t, str(tmp_path), "", 4096, 0),  # no fstype: a NULL pointer is ""
        (Op.UMOUNT, "umount2", t, "", "", 0, 0),
        (Op.MOUNT, "mount", long_target[:255], "none", "tmpfs", 0, -36),
    ]
    assert [e.truncated for e in events] == [False] * 5 + [True]
    for e in events:
        _untouched(e, "arg_text", "source", "fstype")
    _no_mount_below(tmp_path)


def _mount_of(path: str) -> tuple[str, str]:
    """(source, fstype) of the mount holding path, from /proc/self/mountinfo (the last, topmost one wins);
    the child's private namespace is a copy of ours, so the mount holding tmp_path is the same there."""
    best = ("", "", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ")
            point = left.split()[4]
            fstype, source = right.split()[:2]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, source, fstype)
    return best[1], best[2]


def test_move_mount_of_the_new_mount_api(system_probes, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    t = str(target).encode()
    pid, out, events = run_child(system_probes, f"""
        fs = sc("fsopen", b"tmpfs", 0)
        assert sc("fsconfig", fs, 1, b"source", b"nwtest-new", 0) == 0   # FSCONFIG_SET_STRING
        assert sc("fsconfig", fs, 6, None, None, 0) == 0                 # FSCONFIG_CMD_CREATE
        mfd = sc("fsmount", fs, 0, 0)
        mv = sc("move_mount", mfd, b"", -100, {t!r}, 4)                # MOVE_MOUNT_F_EMPTY_PATH
        os.close(mfd)                                                   # else the umount is EBUSY
        u = sc("umount2", {t!r}, 0)
        tree = sc("open_tree", -100, {str(tmp_path).encode()!r}, 1)    # OPEN_TREE_CLONE: a bind
        tfd = os.open({str(target)!r}, os.O_PATH)
        bind = sc("move_mount", tree, b"", tfd, b"", 4 | 0x40)         # and MOVE_MOUNT_T_EMPTY_PATH
        os.close(tree)
        os.close(tfd)
        ub = sc("umount2", {t!r}, 0)
        gone = sc("move_mount", -100, b"/nonexistent-nw", -100, {t!r}, 0)
        print(json.dumps(dict(mfd=mfd, mv=mv, u=u, tree=tree, bind=bind, ub=ub, gone=gone)))
    """, private_mounts=True)
    assert out["mfd"] >= 0 and out["tree"] >= 0
    assert (out["mv"], out["u"], out["bind"], out["ub"], out["gone"]) == (0, 0, 0, 0, -2)
    src, fstype = _mount_of(str(tmp_path))
    assert [fields(e, "op", "call", "arg_text", "source", "fstype", "arg", "ret") for e in events] == [
        (Op.MOUNT, "move_mount", str(target), "nwtest-new", "tmpfs", 4, 0),
        (Op.UMOUNT, "umount2", str(target), "", "", 0, 0),
        (Op.MOUNT, "move_mount", str(target), src, fstype, 0x44, 0),  # the target from its fd
        (Op.UMOUNT, "umount2", str(target), "", "", 0, 0),
        (Op.MOUNT, "move_mount", str(target), "/nonexistent-nw", "", 0, -2),
    ]
    for e in events:
        _untouched(e, "arg_text", "source", "fstype")
    _no_mount_below(tmp_path)


def _no_mount_below(path) -> None:
    """The child's mounts stayed in its own namespace: none below path in the test's."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    assert [p for p in points if p.startswith(str(path))] == []


def test_unshare_and_setns(system_probes):
    pid, out, events = run_child(system_probes, f"""
        u = sc("unshare", {CLONE_NEWUTS})
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        s = sc("setns", fd, {CLONE_NEWUTS})
        wrong = sc("setns", fd, 0x20000000)   # CLONE_NEWCGROUP: not what the fd is, EINVAL
        bad = sc("setns", 999, 0)             # EBADF
        print(json.dumps(dict(u=u, fd=fd, s=s, wrong=wrong, bad=bad)))
    """)
    assert (out["u"], out["s"], out["wrong"], out["bad"]) == (0, 0, -22, -9)
    fd = out["fd"]
    assert [fields(e, "op", "call", "arg", "ids", "ret") for e in events] == [
        (Op.UNSHARE, "unshare", CLONE_NEWUTS, (-1, -1, -1), 0),
        (Op.SETNS, "setns", CLONE_NEWUTS, (fd, -1, -1), 0),
        (Op.SETNS, "setns", 0x20000000, (fd, -1, -1), -22),
        (Op.SETNS, "setns", 0, (999, -1, -1), -9),
    ]
    for e in events:
        _untouched(e, "ids")


def test_bpf_prog_load_only(system_probes):
    pid, out, events = run_child(system_probes, """
        attr = prog_attr(b"nwtest")
        fd = sc("bpf", 5, addr(attr), 128)
        short = sc("bpf", 5, addr(attr), 48)     # an attr that ends before prog_name: no name
        m = (ctypes.c_uint32 * 8)(2, 4, 4, 1)   # BPF_MAP_CREATE of an array: not reported
        mfd = sc("bpf", 0, addr(m), 32)
        bad = prog_attr(b"nwtest-bad")
        struct.pack_into("<I", bad, 0, 0x7fff)  # no such program type: EINVAL
        rbad = sc("bpf", 5, addr(bad), 128)
        print(json.dumps(dict(fd=fd, short=short, mfd=mfd, rbad=rbad)))
    """)
    assert out["fd"] >= 0 and out["short"] >= 0 and out["mfd"] >= 0 and out["rbad"] == -22
    assert [fields(e, "op", "call", "arg", "arg_text", "ret") for e in events] == [
        (Op.BPF_LOAD, "bpf", 1, "nwtest", out["fd"]),
        (Op.BPF_LOAD, "bpf", 1, "", out["short"]),
        (Op.BPF_LOAD, "bpf", 0x7fff, "nwtest-bad", -22),
    ]
    for e in events:
        _untouched(e, "arg_text")


def test_the_agents_own_bpf_loads_are_not_reported(system_probes):
    """The agent's tgid is in ignore_tgid: its loads (raw and through bcc) are dropped, another process's are not."""
    import ctypes
    import struct

    from bcc import BPF

    from agent.kernel import headers

    ps, reader = system_probes
    # The probes compile in the loader child (issue 17); this process compiles with bcc itself, so it needs
    # the kernel source the child was given.
    if src := headers.kernel_source(ps.cfg.cache_dir):
        os.environ["BCC_KERNEL_SOURCE"] = src
    _drain(ps, reader)
    ps.set_target_tgid(0)  # every process
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        insns = (ctypes.c_uint64 * 2)(0xb7, 0x95)
        lic = ctypes.create_string_buffer(b"GPL")
        attr = (ctypes.c_uint8 * 128)()
        struct.pack_into("<IIQQ24x16s", attr, 0, 1, 2, ctypes.addressof(insns), ctypes.addressof(lic), b"nwself")
        fd = libc.syscall(ctypes.c_long(NR["bpf"]), ctypes.c_long(5), ctypes.c_void_p(ctypes.addressof(attr)),
                          ctypes.c_long(128))
        assert fd >= 0, ctypes.get_errno()
        os.close(fd)
        b = BPF(text=b"int nwself_bcc(void *ctx) { return 0; }")
        b.load_func(b"nwself_bcc", BPF.SOCKET_FILTER)
        other = subprocess.run([sys.executable, "-c", PRELUDE.replace('sys.stdin.read(1)', '') +
                                "print(os.getpid(), sc('bpf', 5, addr(prog_attr(b'nwother')), 128))"],
                               capture_output=True, text=True, check=True)
        b.cleanup()
    finally:
        ps.set_target_tgid(1 << 31)
    loads = [e for e in _drain(ps, reader) if e.op == Op.BPF_LOAD]
    assert [e for e in loads if e.pid == os.getpid()] == []
    other_pid, other_fd = (int(x) for x in other.stdout.split()[-2:])
    assert [(e.arg_text, e.ret) for e in loads if e.pid == other_pid] == [("nwother", other_fd)]


def test_memfd_create(system_probes):
    pid, out, events = run_child(system_probes, f"""
        fd = sc("memfd_create", b"nwtest-memfd", {MFD_CLOEXEC})
        long = sc("memfd_create", b"m" * 300, 0)   # longer than a memfd name may be: EINVAL
        print(json.dumps([fd, long]))
    """)
    fd, long = out
    assert fd >= 3 and long == -22
    assert [fields(e, "op", "call", "arg_text", "arg", "ret", "truncated") for e in events] == [
        (Op.MEMFD_CREATE, "memfd_create", "nwtest-memfd", MFD_CLOEXEC, fd, False),
        (Op.MEMFD_CREATE, "memfd_create", "m" * 255, 0, -22, True),
    ]
    for e in events:
        _untouched(e, "arg_text")


def test_module_loads(system_probes):
    """init_module from memory, finit_module from a fd. A kernel without modules has neither syscall's
    tracepoint: the family says so (tracepoints_missing) and the calls fail with ENOSYS, unseen."""
    ps, _ = system_probes
    have = "syscalls:finit_module" not in ps.tracepoints_missing
    assert have == ("syscalls:init_module" not in ps.tracepoints_missing)
    pid, out, events = run_child(system_probes, """
        junk = b"not an ELF module"
        init = sc("init_module", junk, len(junk), b"")
        ebadf = sc("finit_module", 12345, b"", 0)
        with open("/proc/self/exe", "rb") as f:
            path = os.readlink("/proc/self/exe")
            notmod = sc("finit_module", f.fileno(), b"", 2)   # MODULE_INIT_IGNORE_VERMAGIC; not a module
        print(json.dumps(dict(init=init, ebadf=ebadf, notmod=notmod, path=path)))
    """)
    if not have:
        assert (out["init"], out["ebadf"], out["notmod"]) == (-38, -38, -38)
        assert events == []
        return
    assert out["ebadf"] == -9 and out["init"] in (-1, -8) and out["notmod"] < 0  # EPERM or ENOEXEC
    assert [fields(e, "op", "call", "arg", "arg_text", "ret") for e in events] == [
        (Op.MODULE_LOAD, "init_module", 0, "", out["init"]),
        (Op.MODULE_LOAD, "finit_module", 0, "", -9),
        (Op.MODULE_LOAD, "finit_module", 2, out["path"], out["notmod"]),
    ]


def test_finit_module_fd_path_on_a_stand_in_hook(system_probes, tmp_path):
    """Where this kernel has no module syscalls, finit_module's own C (the fd's path from current->files,
    by BTF offsets) is loaded on setns's tracepoints, which carry the same (fd, flags) arguments: the
    verifier takes it, and it names the file behind the fd, or nothing for a fd that is not open."""
    ps, _ = system_probes
    if "syscalls:finit_module" not in ps.tracepoints_missing:
        pytest.skip("this kernel has finit_module: test_module_loads runs the real hook")
    probes = tmp_path / "probes"
    shutil.copytree(ps.cfg.probes_dir, probes)
    src = (probes / "system.bpf.c").read_text()
    src, n = re.subn(r"TRACEPOINT_PROBE\(syscalls, sys_enter_setns\).*?sys_exit_setns\)[^\n]*\n", "", src, flags=re.S)
    assert n == 1
    src = src.replace("#ifdef NW_HAVE_finit_module", "#if 1").replace("_finit_module)", "_setns)")
    (probes / "system.bpf.c").write_text(src)
    stand_in = ProbeSet(ProbeConfig(families=("system",), probes_dir=str(probes)))
    stand_in.start()
    reader = stand_in.reader()
    try:
        mod = tmp_path / "dir" / "fake.ko"
        mod.parent.mkdir()
        mod.write_bytes(b"not a module")
        pid, out, events = run_child((stand_in, reader), f"""
            fd = os.open({str(mod)!r}, os.O_RDONLY)
            print(json.dumps([fd, sc("setns", fd, 1), sc("setns", 50, 2), sc("setns", 12345, 0), sc("setns", -1, 0)]))
        """)
    finally:
        reader.close()
        stand_in.stop()
    fd, *rets = out
    assert rets == [-22, -9, -9, -9]
    assert [fields(e, "op", "call", "arg", "arg_text", "ret", "truncated") for e in events] == [
        (Op.MODULE_LOAD, "finit_module", 1, str(mod), -22, False),
        (Op.MODULE_LOAD, "finit_module", 2, "", -9, False),  # inside the fd table, not open
        (Op.MODULE_LOAD, "finit_module", 0, "", -9, False),  # past the fd table's end
        (Op.MODULE_LOAD, "finit_module", 0, "", -9, False),
    ]


def test_system_events_reach_the_record_with_their_keys(agent):
    """The default families include system: through the whole agent, the flat keys the rules read."""
    p = subprocess.run([sys.executable, "-c", PRELUDE.replace("sys.stdin.read(1)", "") + """
fd = sc("memfd_create", b"nwtest-rec", 3)
r = sc("setresuid", -1, 65534, -1)
print(os.getpid(), fd, r)
"""], capture_output=True, text=True, check=True)
    pid, fd, r = (int(x) for x in p.stdout.split()[-3:])
    assert r == 0
    (mf,) = agent.wait_for(lambda x: x.get("memfd.name") == "nwtest-rec" and x["process.pid"] == pid)
    assert (mf["event.name"], mf["memfd.flags"], mf["syscall.name"], mf["syscall.return"]) == (
        "system.memfd_create", 3, "memfd_create", fd)
    (su,) = agent.wait_for(lambda x: x["event.name"] == "system.setuid" and x["process.pid"] == pid)
    assert (su["setid.real"], su["setid.effective"], su["setid.saved"]) == (-1, 65534, -1)
    assert (su["user.id"], su["syscall.name"], su["syscall.return"]) == (0, "setresuid", 0)


def test_the_agents_own_loads_at_start_are_not_reported():
    """bcc attaches one program after another, before ignore_tgid can hold the agent: the loader passes
    its tgid to the compiler (NW_AGENT_TGID), so the loads of its own start are skipped in the kernel."""
    ps = ProbeSet(ProbeConfig())  # the default families, system among them
    ps.start()
    reader = ps.reader()
    try:
        mine = [e for e in _drain(ps, reader) if e.op == Op.BPF_LOAD and e.pid == os.getpid()]
    finally:
        reader.close()
        ps.stop()
    assert mine == []
