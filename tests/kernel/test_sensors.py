"""Each sensor against real syscalls: every field checked against what the test itself knows."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest


def _execs(agent, pid):
    return agent.wait_for(lambda r: r["event.name"] == "process.exec" and r["process.pid"] == pid)


def test_process_tree_lineage_uid_argv_and_exit_codes(agent, tmp_path):
    me = os.getpid()
    sh = subprocess.Popen(["/bin/sh", "-c", "/bin/echo one 'two three' >/dev/null; exit 7"])
    sh.wait()
    nobody = subprocess.Popen(["/bin/sleep", "0.01"], user=65534, group=65534)
    nobody.wait()

    (ex,) = _execs(agent, sh.pid)
    assert ex["process.parent_pid"] == me
    assert ex["user.id"] == 0
    assert ex["process.executable.path"] == "/bin/sh"
    assert ex["process.args"] == ["/bin/sh", "-c", "/bin/echo one 'two three' >/dev/null; exit 7"]
    assert ex["process.parent.executable.path"] == os.readlink("/proc/self/exe")
    assert ex["process.mount_ns"] == os.stat("/proc/self/ns/mnt").st_ino

    (echo,) = agent.wait_for(lambda r: r["event.name"] == "process.exec"
                             and r["process.parent_pid"] == sh.pid and r["process.executable.path"] == "/bin/echo")
    assert echo["process.args"] == ["/bin/echo", "one", "two three"]
    assert echo["process.parent.executable.path"] == "/bin/sh"
    forks = agent.wait_for(lambda r: r["event.name"] == "process.fork" and r["process.pid"] == sh.pid)
    assert echo["process.pid"] in [f["process.child.pid"] for f in forks]

    (nb,) = _execs(agent, nobody.pid)
    assert nb["user.id"] == 65534 and nb["group.id"] == 65534
    assert nb["process.parent_pid"] == me
    assert nb["process.args"] == ["/bin/sleep", "0.01"]

    (ex_sh,) = agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == sh.pid)
    assert ex_sh["process.exit.code"] == 7 and "process.exit.signal" not in ex_sh
    assert ex_sh["process.executable.path"] == "/bin/sh"  # the table still knew it at exit


def test_exit_by_signal(agent):
    p = subprocess.Popen(["/bin/sleep", "30"])
    _execs(agent, p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (ex,) = agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == p.pid)
    assert ex["process.exit.signal"] == signal.SIGKILL


def _child(code: str) -> int:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True)
    return int(p.stdout.strip())


def test_file_write_create_unlink_rename_chmod(agent, tmp_path):
    d = str(tmp_path)
    pid = _child(f"""
        import os
        fd = os.open("{d}/new", os.O_WRONLY | os.O_CREAT, 0o640); os.close(fd)
        fd = os.open("{d}/new", os.O_RDONLY); os.close(fd)            # read-only: not reported
        os.rename("{d}/new", "{d}/moved")
        os.chmod("{d}/moved", 0o600)
        os.unlink("{d}/moved")
        try: os.unlink("{d}/absent")
        except FileNotFoundError: pass
        print(os.getpid())
    """)
    mine = lambda name: lambda r: r["event.name"] == name and r["process.pid"] == pid  # noqa: E731
    (op,) = agent.wait_for(mine("file.open"))
    assert op["file.path"] == f"{d}/new"
    assert op["file.open.flags"] & (os.O_WRONLY | os.O_CREAT) == os.O_WRONLY | os.O_CREAT
    assert op["file.mode"] == 0o640 and op["syscall.return"] >= 0
    (rn,) = agent.wait_for(mine("file.rename"))
    assert (rn["file.path"], rn["file.target.path"], rn["syscall.return"]) == (f"{d}/new", f"{d}/moved", 0)
    (ch,) = agent.wait_for(mine("file.chmod"))
    assert (ch["file.path"], ch["file.mode"]) == (f"{d}/moved", 0o600)
    unl = agent.wait_for(mine("file.unlink"), count=2)
    assert [(u["file.path"], u["syscall.return"]) for u in unl] == [(f"{d}/moved", 0), (f"{d}/absent", -2)]
    assert len(agent.find(mine("file.open"))) == 1


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_loopback_connect_accept_bind_listen(agent, family, host):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    af = "AF_INET" if family == socket.AF_INET else "AF_INET6"
    pid = _child(f"""
        import os, socket
        c = socket.socket(socket.{af}, socket.SOCK_STREAM)
        c.connect(("{host}", {port}))
        print(os.getpid())
    """)
    conn, peer = srv.accept()
    conn.close()
    srv.close()
    kind = "ipv4" if family == socket.AF_INET else "ipv6"
    (co,) = agent.wait_for(lambda r: r["event.name"] == "network.connect" and r["process.pid"] == pid)
    assert (co["network.peer.address"], co["network.peer.port"]) == (host, port)
    assert (co["network.type"], co["network.transport"], co["syscall.return"]) == (kind, "tcp", 0)
    me = os.getpid()
    (li,) = agent.wait_for(lambda r: r["event.name"] == "network.listen" and r["process.pid"] == me
                           and r["network.local.port"] == port)
    assert li["network.local.address"] == host and li["network.listen.backlog"] == 4
    (bi,) = agent.wait_for(lambda r: r["event.name"] == "network.bind" and r["process.pid"] == me
                           and r["network.type"] == kind and r["network.local.address"] == host)
    assert bi["network.local.port"] == 0  # what the caller asked for: any port
    assert bi["syscall.return"] == 0
    (ac,) = agent.wait_for(lambda r: r["event.name"] == "network.accept" and r["process.pid"] == me
                           and r["network.peer.port"] == peer[1])
    assert ac["network.peer.address"] == host and ac["syscall.return"] >= 0


def test_sigterm_stops_cleanly():
    from tests.kernel.conftest import AgentProcess

    a = AgentProcess("--duration", "60")
    assert a.stop(signal.SIGTERM) == 0
    assert b"Traceback" not in a.stderr


def test_exec_record_carries_the_executables_inode_and_device(agent):
    p = subprocess.Popen(["/bin/sh", "-c", "exit 0"])
    p.wait()
    (ex,) = _execs(agent, p.pid)
    st = os.stat("/bin/sh")  # follows the symlink, as mm->exe_file does
    assert ex["process.executable.inode"] == st.st_ino
    # The kernel sends super_block.s_dev (MKDEV: major << 20 | minor); the record says st_dev,
    # stat(2)'s new_encode_dev() of it, so the two compare directly.
    assert ex["process.executable.device"] == st.st_dev
    assert (os.major(ex["process.executable.device"]), os.minor(ex["process.executable.device"])) == (
        os.major(st.st_dev), os.minor(st.st_dev))


def test_undecodable_bytes_and_a_literal_backslash_x_stay_distinct(agent, tmp_path):
    from agent.sensors.common import unescape

    d = os.fsencode(str(tmp_path))
    raw = d + b"/a\xff"  # a name with the byte 0xff, which is not UTF-8
    lit = d + b"/a\\xff"  # a valid name holding the four characters \ x f f
    pid = _child(f"""
        import os
        for name in ({raw!r}, {lit!r}):
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o600))
        print(os.getpid())
    """)
    opens = agent.wait_for(lambda r: r["event.name"] == "file.open" and r["process.pid"] == pid, count=2)
    paths = [o["file.path"] for o in opens]
    assert paths == [str(tmp_path) + "/a\\xff", str(tmp_path) + "/a\\\\xff"]
    assert [unescape(p) for p in paths] == [raw, lit]
    assert sorted(os.listdir(d)) == sorted([b"a\xff", b"a\\xff"])

    ex = subprocess.Popen([b"/bin/true", b"x\xff", b"x\\xff"])
    ex.wait()
    (rec,) = _execs(agent, ex.pid)
    assert rec["process.args"] == ["/bin/true", "x\\xff", "x\\\\xff"]
    assert [unescape(a) for a in rec["process.args"][1:]] == [b"x\xff", b"x\\xff"]
