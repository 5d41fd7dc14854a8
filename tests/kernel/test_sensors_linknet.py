"""symlink/link, packet and raw sockets, sockets dup'ed onto stdio, unconnected UDP sends (issue 10).

The real probes (file and net families) are loaded once and pointed at one child at a time (target
tgid); the child makes the real syscalls and prints what it knows (fds, ports), and every field of each
typed event is checked against that. One test runs the whole agent for the flat record keys.
"""

import ctypes
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from agent.events import FileEvent, NetEvent, Op
from agent.sensors.loader import ProbeConfig, ProbeSet
from tests.kernel.conftest import run_targeted

AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
EEXIST = 17


@pytest.fixture(scope="module")
def probes():
    ps = ProbeSet(ProbeConfig(families=("file", "net"), ignore_prefixes=(), target_tgid=1 << 31))
    ps.start()
    reader = ps.reader()
    yield ps, reader
    reader.close()
    ps.stop()


def _file(ev: FileEvent) -> tuple:
    return (ev.op, ev.path, ev.path2, ev.ret, ev.dirfd, ev.flags, ev.fd, ev.mode, ev.owner_uid, ev.owner_gid,
            ev.cwd, ev.truncated)


LIBC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    r = fn(*[a.encode() if isinstance(a, str) else a for a in args])
    return r if r == 0 else -ctypes.get_errno()
"""


def test_symlink_and_link_absolute_relative_at_and_failing(probes, tmp_path):
    d = str(tmp_path)
    (tmp_path / "orig").write_text("x")
    pid, out, events = run_targeted(probes, LIBC + textwrap.dedent(f"""
        dfd = os.open("{d}", os.O_RDONLY | os.O_DIRECTORY)
        rs = [call(libc.symlink, "/etc/hostname", "{d}/abs_sym"),
              call(libc.symlink, "orig", "rel_sym"),
              call(libc.symlinkat, "../orig", dfd, "at_sym"),
              call(libc.symlink, "/elsewhere", "{d}/abs_sym"),
              call(libc.link, "{d}/orig", "{d}/hard"),
              call(libc.link, "orig", "hard_rel"),
              call(libc.linkat, dfd, "orig", {AT_FDCWD}, "{d}/hard_at", {AT_SYMLINK_FOLLOW}),
              call(libc.link, "{d}/orig", "{d}/hard")]
        print(dfd, *rs)
    """), cwd=d)
    dfd, *rets = (int(x) for x in out)
    assert rets == [0, 0, 0, -EEXIST, 0, 0, 0, -EEXIST]
    mine = [_file(e) for e in events if e.op in (Op.FILE_SYMLINK, Op.FILE_LINK)]
    S, L, n = Op.FILE_SYMLINK, Op.FILE_LINK, False
    assert mine == [
        # op, path (the new name), path2 (target / existing file), ret, dirfd, flags, fd, mode, uid, gid, cwd
        (S, f"{d}/abs_sym", "/etc/hostname", 0, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
        (S, "rel_sym", "orig", 0, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),  # no cwd: path2 is taken
        (S, "at_sym", "../orig", 0, dfd, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
        (S, f"{d}/abs_sym", "/elsewhere", -EEXIST, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
        (L, f"{d}/hard", f"{d}/orig", 0, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
        (L, "hard_rel", "orig", 0, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
        (L, f"{d}/hard_at", "orig", 0, AT_FDCWD, AT_SYMLINK_FOLLOW, dfd, 0, 2**32 - 1, 2**32 - 1, "", n),
        (L, f"{d}/hard", f"{d}/orig", -EEXIST, AT_FDCWD, 0, -1, 0, 2**32 - 1, 2**32 - 1, "", n),
    ]
    assert os.readlink(tmp_path / "at_sym") == "../orig" and os.stat(tmp_path / "hard").st_nlink == 4


def test_links_under_an_ignored_prefix_dropped_unless_they_point_outside(probes, tmp_path):
    ps, _ = probes
    ign = tmp_path / "ign"
    ign.mkdir()
    (ign / "orig").write_text("x")
    ps.set_ignored_prefixes([f"{ign}/"])
    try:
        pid, _, events = run_targeted(probes, f"""
            import os
            os.symlink("orig", "{ign}/quiet")           # relative target: under the link's prefix
            os.symlink("{ign}/orig", "{ign}/quiet2")    # absolute, ignored too
            os.link("{ign}/orig", "{ign}/quiet3")
            os.symlink("/etc/shadow", "{ign}/loud")     # points outside: reported
            os.link("{ign}/orig", "{tmp_path}/loud2")   # the new name is outside: reported
        """)
    finally:
        ps.set_ignored_prefixes([])
    got = [(e.op, e.path, e.path2, e.ret) for e in events if e.op in (Op.FILE_SYMLINK, Op.FILE_LINK)]
    assert got == [(Op.FILE_SYMLINK, f"{ign}/loud", "/etc/shadow", 0),
                   (Op.FILE_LINK, f"{tmp_path}/loud2", f"{ign}/orig", 0)]


def _net(ev: NetEvent) -> tuple:
    return (ev.op, ev.ret, ev.fd, ev.family, ev.transport, ev.address, ev.port, ev.backlog, ev.fd2, ev.protocol)


def test_packet_and_raw_sockets_reported_ordinary_ones_not(probes):
    _, out, events = run_targeted(probes, """
        import socket
        p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))   # ETH_P_ALL
        i = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        d = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, 0)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)                          # not reported
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)                          # not reported
        print(p.fileno(), i.fileno(), d.fileno())
    """)
    pfd, ifd, dfd = (int(x) for x in out)
    got = [_net(e) for e in events if e.op == Op.NET_SOCKET]
    # Python adds SOCK_CLOEXEC to every socket: the probe masks it (and SOCK_NONBLOCK) off the type.
    assert got == [
        (Op.NET_SOCKET, pfd, -1, "packet", "raw", "", 0, 0, -1, socket.htons(0x0003)),
        (Op.NET_SOCKET, ifd, -1, "ipv4", "raw", "", 0, 0, -1, socket.IPPROTO_ICMP),
        (Op.NET_SOCKET, dfd, -1, "packet", "", "", 0, 0, -1, 0),  # a cooked packet socket is not UDP
    ]


def test_connect_on_a_non_socket_carries_no_socket_type(probes):
    _, out, events = run_targeted(probes, """
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        r, w = os.pipe()
        sa = socket.AF_INET.to_bytes(2, "little") + (9).to_bytes(2, "big") + bytes([127, 0, 0, 1]) + bytes(8)
        print(r, libc.connect(r, sa, 16), ctypes.get_errno())
    """)
    fd, rc, errno = (int(x) for x in out)
    assert (rc, errno) == (-1, 88)  # ENOTSOCK
    got = [_net(e) for e in events if e.op == Op.NET_CONNECT]
    assert got == [(Op.NET_CONNECT, -88, fd, "ipv4", "", "127.0.0.1", 9, 0, -1, 0)]


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_dup_of_a_socket_onto_stdio_reported_with_its_peer(probes, family, host):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        _, out, events = run_targeted(probes, f"""
            import os, socket
            keep = os.dup(1)                       # the test's pipe, for the answer
            c = socket.create_connection(("{host}", {port}))
            r, w = os.pipe()
            os.dup2(w, 1)                          # a pipe onto stdout: not reported
            os.dup2(c.fileno(), 5)                 # a socket onto fd 5: not reported
            try:
                os.dup2(1 << 20, 1)                # past the fd table (EBADF): not reported
            except OSError:
                pass
            os.dup2(c.fileno(), 0)                 # dup2
            os.dup2(c.fileno(), 1, inheritable=False)   # dup3(O_CLOEXEC)
            os.dup2(c.fileno(), 2)
            os.write(keep, f"{{c.fileno()}}\\n".encode())
        """)
    finally:
        srv.close()
    (cfd,) = (int(x) for x in out)
    kind = "ipv4" if family == socket.AF_INET else "ipv6"
    got = [_net(e) for e in events if e.op == Op.NET_DUP]
    assert got == [(Op.NET_DUP, fd2, cfd, kind, "tcp", host, port, 0, fd2, 0) for fd2 in (0, 1, 2)]


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_unconnected_udp_sends_reported_once_a_second_per_destination(probes, family, host):
    ps, _ = probes
    sinks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    for s in sinks:
        s.bind((host, 0))
    p1, p2, p3 = (s.getsockname()[1] for s in sinks)
    af = "AF_INET" if family == socket.AF_INET else "AF_INET6"
    folded = ps.table(b"sendto_folded")
    before = int(folded.sum(ctypes.c_int(0)).value)
    try:
        _, out, events = run_targeted(probes, f"""
            import socket, time
            u = socket.socket(socket.{af}, socket.SOCK_DGRAM)
            u.sendto(b"a", ("{host}", {p1}))
            u.sendto(b"b", ("{host}", {p1}))       # the same destination within 1 s: folded
            u.sendto(b"cc", ("{host}", {p2}))      # another port: reported
            u.sendmsg([b"ddd"], [], 0, ("{host}", {p3}))
            u.sendto(b"x", ("{host}", {p3}))       # folded: sendmsg reported this destination
            c = socket.socket(socket.{af}, socket.SOCK_DGRAM)
            c.connect(("{host}", {p1}))
            c.send(b"e")                           # connected: no destination, not reported
            time.sleep(1.1)
            u.sendto(b"ffff", ("{host}", {p1}))    # the window has passed: reported again
            print(u.fileno())
        """)
    finally:
        for s in sinks:
            s.close()
    (ufd,) = (int(x) for x in out)
    kind = "ipv4" if family == socket.AF_INET else "ipv6"
    got = [_net(e) for e in events if e.op == Op.NET_SENDTO]
    assert got == [(Op.NET_SENDTO, n, ufd, kind, "udp", host, port, 0, -1, 0)
                   for n, port in ((1, p1), (2, p2), (3, p3), (4, p1))]
    assert int(folded.sum(ctypes.c_int(0)).value) - before == 2
    assert ps.kernel_folded()["net_sendto_folded"] == int(folded.sum(ctypes.c_int(0)).value)  # what drops report


SENDMMSG = """
import ctypes, socket
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
libc = ctypes.CDLL(None, use_errno=True)
def sendmmsg(fd, dest, datas):
    sa = ctypes.create_string_buffer(socket.AF_INET.to_bytes(2, "little") + dest[1].to_bytes(2, "big")
                                     + socket.inet_aton(dest[0]) + bytes(8))
    bufs = [ctypes.create_string_buffer(d, len(d)) for d in datas]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(d)) for b, d in zip(bufs, datas)]
    msgs = (mmsghdr * len(datas))()
    for m, iov in zip(msgs, iovs):
        m.hdr.name, m.hdr.namelen = ctypes.cast(sa, ctypes.c_void_p), 16
        m.hdr.iov, m.hdr.iovlen = ctypes.pointer(iov), 1
    return libc.sendmmsg(fd, msgs, len(datas), 0)
"""


def test_sendmmsg_reported_with_its_first_destination(probes):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    try:
        _, out, events = run_targeted(probes, SENDMMSG + textwrap.dedent(f"""
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            print(u.fileno(), sendmmsg(u.fileno(), ("127.0.0.1", {port}), [b"a", b"bb", b"ccc"]))
        """))
    finally:
        sink.close()
    ufd, sent = (int(x) for x in out)
    assert sent == 3
    got = [_net(e) for e in events if e.op == Op.NET_SENDTO]
    assert got == [(Op.NET_SENDTO, 3, ufd, "ipv4", "udp", "127.0.0.1", port, 0, -1, 0)]


def test_the_agent_records_carry_link_target_resolved_name_peer_and_protocol(tmp_path):
    from tests.kernel.conftest import AgentProcess

    d = str(tmp_path)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    agent = AgentProcess()
    try:
        # The resolved name needs the child's exec record (its cwd goes into the process table). Other
        # load on the node can make the kernel drop it (counted, in agent.drops); then a new child tries.
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
                import os, socket
                try: os.unlink("rel_sym")
                except FileNotFoundError: pass
                os.symlink("/etc/passwd", "rel_sym")
                r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                keep = os.dup(1)
                c = socket.create_connection(("127.0.0.1", {port}))
                os.dup2(c.fileno(), 0)
                os.write(keep, f"{{os.getpid()}} {{r.fileno()}} {{c.fileno()}}".encode())
            """)], cwd=d, check=True, capture_output=True, text=True)
            pid, rfd, cfd = (int(x) for x in p.stdout.split())
            mine = lambda name, pid=pid: lambda r: r["event.name"] == name and r["process.pid"] == pid  # noqa: E731
            (sl,) = agent.wait_for(mine("file.symlink"))
            (so,) = agent.wait_for(mine("network.socket"))
            (du,) = agent.wait_for(mine("network.dup"))
            if agent.find(mine("process.exec")):
                break
        else:
            drops = agent.find(lambda r: r["event.name"] == "agent.drops")
            raise AssertionError(f"three children's exec records lost: {drops}")
    finally:
        agent.stop()
        srv.close()
    assert (sl["file.path"], sl["file.link.target"], sl["syscall.return"]) == ("rel_sym", "/etc/passwd", 0)
    assert sl["file.resolved_path"] == f"{d}/rel_sym"  # from the process table's cwd (the exec's)
    assert (so["network.type"], so["network.transport"], so["network.protocol"], so["network.fd"],
            so["syscall.return"]) == ("ipv4", "raw", socket.IPPROTO_ICMP, rfd, rfd)
    assert "network.peer.address" not in so and "network.local.address" not in so
    assert (du["network.fd"], du["network.dup.new_fd"], du["syscall.return"]) == (cfd, 0, 0)
    assert (du["network.peer.address"], du["network.peer.port"], du["network.transport"]) == ("127.0.0.1", port, "tcp")
