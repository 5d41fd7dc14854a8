"""Folding in the kernel (issue 17): repeats of an open or a connect within probes.fold_window are counted,
not sent, and the counts make up exactly what was not sent.

The real file and net probes are loaded once, with a short window, and pointed at one child at a time
(target tgid); the child makes the real syscalls, and the test knows how many it made of each kind.
"""

import ctypes
import os
import socket

import pytest

from agent.events import Op
from agent.sensors.abi import Fold
from agent.sensors.loader import LoadError, ProbeConfig, ProbeSet
from tests.kernel.conftest import run_targeted

WINDOW = 0.3  # seconds: short, so the test can wait it out


@pytest.fixture(scope="module")
def probes():
    ps = ProbeSet(ProbeConfig(families=("file", "net"), ignore_prefixes=(), target_tgid=1 << 31,
                              fold_window=WINDOW))
    ps.start()
    reader = ps.reader()
    yield ps, reader
    reader.close()
    ps.stop()


def _folded(ps, kind: Fold) -> int:
    return int(ps.table(b"fold_counts").sum(ctypes.c_int(kind)).value)


def test_repeated_opens_fold_and_every_different_one_is_sent(probes, tmp_path):
    ps, _ = probes
    before = _folded(ps, Fold.FILE_OPEN)
    pid, _, events = run_targeted(probes, f"""
        import os, time
        w = os.O_WRONLY | os.O_CREAT
        for _ in range(50):
            os.close(os.open("{tmp_path}/a.log", w | os.O_APPEND, 0o644))   # 1 sent, 49 folded
        os.close(os.open("{tmp_path}/b.log", w | os.O_APPEND, 0o644))       # another path: sent
        os.close(os.open("{tmp_path}/a.log", w | os.O_TRUNC, 0o644))        # other flags: sent
        os.close(os.open("{tmp_path}/a.log2", w | os.O_APPEND, 0o644))      # a longer path, same head: sent
        os.chdir("{tmp_path}")
        for _ in range(3):
            os.close(os.open("a.log", w | os.O_APPEND, 0o644))   # relative (what the cwd says): sent each time
        for _ in range(3):
            try:
                os.open("{tmp_path}/missing/x", w)   # failed (ENOENT): sent each time
            except FileNotFoundError:
                pass
        time.sleep({WINDOW} + 0.2)
        os.close(os.open("{tmp_path}/a.log", w | os.O_APPEND, 0o644))       # the window has passed: sent
    """)
    opens = [(e.path, e.flags & os.O_TRUNC != 0, e.ret >= 0) for e in events if e.op is Op.FILE_OPEN]
    a, b = f"{tmp_path}/a.log", f"{tmp_path}/b.log"
    assert opens == [(a, False, True), (b, False, True), (a, True, True), (a + "2", False, True),
                     ("a.log", False, True), ("a.log", False, True), ("a.log", False, True),
                     *[(f"{tmp_path}/missing/x", False, False)] * 3, (a, False, True)]
    assert _folded(ps, Fold.FILE_OPEN) - before == 49
    assert ps.kernel_folded()["file_open_folded"] == _folded(ps, Fold.FILE_OPEN)  # what the drops report


def test_another_process_opening_the_same_path_is_sent(probes, tmp_path):
    ps, _ = probes
    code = f"""
        import os
        for _ in range(5):
            os.close(os.open("{tmp_path}/shared.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    """
    before = _folded(ps, Fold.FILE_OPEN)
    sent = [len([e for e in run_targeted(probes, code)[2] if e.op is Op.FILE_OPEN]) for _ in range(2)]
    assert sent == [1, 1]
    assert _folded(ps, Fold.FILE_OPEN) - before == 8


def test_a_folded_open_under_a_web_root_still_sends_each_close(probes, tmp_path):
    """The close mark (issue 11's web-shell watch) is made before the fold: every close is reported."""
    ps, _ = probes
    www = tmp_path / "www"
    www.mkdir()
    ps.set_close_prefixes([f"{www}/"])
    try:
        _, _, events = run_targeted(probes, f"""
            import os
            for i in range(4):
                fd = os.open("{www}/x.php", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.write(fd, b"<?php ")
                os.close(fd)
        """)
    finally:
        ps.set_close_prefixes([])
    ops = [e.op for e in events if e.op in (Op.FILE_OPEN, Op.FILE_CLOSE)]
    assert ops == [Op.FILE_OPEN, Op.FILE_CLOSE, Op.FILE_CLOSE, Op.FILE_CLOSE, Op.FILE_CLOSE]


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_repeated_connects_fold_per_peer_and_result(probes, family, host):
    ps, _ = probes
    srv = [socket.socket(family, socket.SOCK_STREAM) for _ in range(2)]
    for s in srv:
        s.bind((host, 0))
        s.listen(64)
    p1, p2 = (s.getsockname()[1] for s in srv)
    closed = socket.socket(family, socket.SOCK_STREAM)
    closed.bind((host, 0))
    p3 = closed.getsockname()[1]  # bound, not listening: connects are refused
    af = "AF_INET" if family == socket.AF_INET else "AF_INET6"
    before = _folded(ps, Fold.NET_CONNECT)
    try:
        _, _, events = run_targeted(probes, f"""
            import socket, time
            def connect(port, kind=socket.SOCK_STREAM):
                c = socket.socket(socket.{af}, kind)
                try:
                    c.connect(("{host}", port))
                except ConnectionRefusedError:
                    pass
                c.close()
            for _ in range(20):
                connect({p1})                       # 1 sent, 19 folded
            connect({p2})                           # another peer: sent
            connect({p1}, socket.SOCK_DGRAM)        # another socket type: sent
            connect({p3})                           # refused: sent
            connect({p3})                           # refused again: folded
            time.sleep({WINDOW} + 0.2)
            connect({p1})                           # the window has passed: sent
        """)
    finally:
        for s in (*srv, closed):
            s.close()
    got = [(e.port, e.ret == 0, e.transport) for e in events if e.op is Op.NET_CONNECT]
    assert got == [(p1, True, "tcp"), (p2, True, "tcp"), (p1, True, "udp"), (p3, False, "tcp"), (p1, True, "tcp")]
    assert _folded(ps, Fold.NET_CONNECT) - before == 20
    assert ps.kernel_folded()["net_connect_folded"] == _folded(ps, Fold.NET_CONNECT)


def test_a_window_of_zero_sends_every_repeat(probes, tmp_path):
    ps, _ = probes
    ps.set_fold_window(0)
    try:
        before = _folded(ps, Fold.FILE_OPEN)
        _, _, events = run_targeted(probes, f"""
            import os
            for _ in range(10):
                os.close(os.open("{tmp_path}/z.log", os.O_WRONLY | os.O_CREAT, 0o644))
        """)
    finally:
        ps.set_fold_window(WINDOW)
    assert len([e for e in events if e.op is Op.FILE_OPEN]) == 10
    assert _folded(ps, Fold.FILE_OPEN) == before


@pytest.mark.parametrize("bad", [-1.0, 61.0])
def test_a_fold_window_out_of_range_is_refused_in_one_line(bad):
    with pytest.raises(LoadError, match=r"probes.fold_window must be 0 \(off\) to 60 seconds"):
        ProbeSet(ProbeConfig(fold_window=bad))
