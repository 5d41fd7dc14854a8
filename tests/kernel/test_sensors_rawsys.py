"""File ops staged in task storage (issue 17, probes/file.bpf.c NW_TASK_STAGE) and every open syscall.

The real file probe is loaded once and pointed at one child at a time; the child makes each open syscall by
number (open, creat, openat with a directory fd, openat2) and prints what it got, and every record is checked
against it: path, dirfd, flags, mode, ret. Staging is per task: an open blocked in one thread while another
thread opens and unlinks keeps its own record, and a staged record is sent once, at its own call's exit.
"""

import os

import pytest

from agent.events import Op
from agent.kernel.btf import BTF
from agent.kernel.offsets import task_storage_available
from agent.sensors.loader import ProbeConfig, ProbeSet
from tests.kernel.conftest import run_targeted

O_WRONLY, O_CREAT, O_TRUNC, O_RDWR = 0o1, 0o100, 0o1000, 0o2
AT_FDCWD = -100


BPF_MAP_TYPE_TASK_STORAGE, BPF_MAP_TYPE_LRU_HASH = 29, 9


def _task_storage_expected() -> bool:
    return task_storage_available(BTF.load())


@pytest.fixture(scope="module")
def probes():
    ps = ProbeSet(ProbeConfig(families=("file",), ignore_prefixes=(), target_tgid=1 << 31))
    ps.start()
    reader = ps.reader()
    yield ps, reader
    reader.close()
    ps.stop()


def test_staging_is_in_task_storage_where_the_kernel_has_it(probes):
    ps, _ = probes
    want = BPF_MAP_TYPE_TASK_STORAGE if _task_storage_expected() else BPF_MAP_TYPE_LRU_HASH
    assert ps.table(b"file_inflight").map_type == want


def test_each_open_syscall_sends_its_record(probes, tmp_path):
    d = tmp_path
    (d / "sub").mkdir()
    pid, out, events = run_targeted(probes, f"""
        import ctypes, os, struct
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        SYS_open, SYS_creat, SYS_openat, SYS_openat2 = 2, 85, 257, 437
        def call(*a):
            r = libc.syscall(*a)
            return r if r >= 0 else -ctypes.get_errno()
        a = call(SYS_open, b"{d}/a", {O_WRONLY | O_CREAT}, 0o640)
        b = call(SYS_creat, b"{d}/b", 0o600)
        sub = os.open("{d}/sub", os.O_RDONLY | os.O_DIRECTORY)    # read-only: not sent
        c = call(SYS_openat, sub, b"c", {O_RDWR | O_CREAT | O_TRUNC}, 0o644)
        how = ctypes.create_string_buffer(struct.pack("<QQQ", {O_WRONLY | O_CREAT}, 0o604, 0), 24)
        e = call(SYS_openat2, -100, b"{d}/e", how, 24)
        r = call(SYS_openat, -100, b"{d}/a", 0, 0)                # read-only: not sent
        bad = call(SYS_openat, -100, b"{d}/missing/x", {O_WRONLY | O_CREAT}, 0o600)   # fails: sent, ret -ENOENT
        print(a, b, sub, c, e, r, bad)
    """)
    a, b, sub, c, e, r, bad = (int(x) for x in out)
    opens = [(ev.path, ev.dirfd, ev.flags & 0o3777, ev.mode, ev.ret) for ev in events if ev.op is Op.FILE_OPEN]
    assert opens == [
        (f"{d}/a", AT_FDCWD, O_WRONLY | O_CREAT, 0o640, a),
        (f"{d}/b", AT_FDCWD, O_WRONLY | O_CREAT | O_TRUNC, 0o600, b),
        ("c", sub, O_RDWR | O_CREAT | O_TRUNC, 0o644, c),
        (f"{d}/e", AT_FDCWD, O_WRONLY | O_CREAT, 0o604, e),
        (f"{d}/missing/x", AT_FDCWD, O_WRONLY | O_CREAT, 0o600, bad),
    ]
    assert min(a, b, c, e, r) >= 0 and bad == -2
    assert all(ev.pid == pid and ev.tid == pid for ev in events)


def test_staging_is_per_task_and_sent_once(probes, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _, out, events = run_targeted(probes, f"""
        import os, threading, time
        got = {{}}
        def blocked():
            got["fifo"] = os.open("{fifo}", os.O_WRONLY)   # blocks until the reader below opens it
            got["tid"] = threading.get_native_id()
        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)
        w = os.open("{tmp_path}/w", os.O_WRONLY | os.O_CREAT, 0o600)   # this thread, while the other is staged
        try:
            os.unlink("{tmp_path}/nothing")                   # a per-syscall entry, ended by the raw exit
        except FileNotFoundError:
            pass
        for _ in range(100):
            os.getpid()                                       # other syscalls end nothing
        rd = os.open("{fifo}", os.O_RDONLY | os.O_NONBLOCK)
        t.join()
        print(got["fifo"], got["tid"], w, threading.get_native_id())
    """)
    fifo_fd, fifo_tid, w, main_tid = (int(x) for x in out)
    mine = [(ev.op, ev.path, ev.ret, ev.tid) for ev in events if ev.op in (Op.FILE_OPEN, Op.FILE_UNLINK)
            and ev.path.startswith(str(tmp_path))]
    assert sorted(mine, key=lambda x: x[1]) == sorted([
        (Op.FILE_OPEN, str(fifo), fifo_fd, fifo_tid),
        (Op.FILE_OPEN, f"{tmp_path}/w", w, main_tid),
        (Op.FILE_UNLINK, f"{tmp_path}/nothing", -2, main_tid),
    ], key=lambda x: x[1])
