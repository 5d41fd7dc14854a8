"""The process table on a fixture procfs tree, and kept by fork/exec/exit events."""

import os

import pytest

from agent.enrich.proctable import ProcessTable, ProcFS
from agent.events import ExecEvent, ExitEvent, ForkEvent, Op


def _proc(root, pid, ppid, comm, argv, uid=0, exe="/bin/x"):
    d = root / str(pid)
    d.mkdir()
    # comm with a space and a parenthesis: the parser must cut at the last ')'
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} " + " ".join(["0"] * 17) + " 500 0 0\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    os.symlink(exe, d / "exe")


@pytest.fixture
def procfs(tmp_path):
    (tmp_path / "stat").write_text("cpu 0\nbtime 1700000000\n")
    _proc(tmp_path, 1, 0, "init", ["/sbin/init"], exe="/sbin/init")
    _proc(tmp_path, 42, 1, "we (ird) name", ["/usr/bin/app", "--flag"], uid=1000, exe="/usr/bin/app")
    (tmp_path / "self").mkdir()
    return ProcFS(str(tmp_path))


def test_seed_reads_every_pid(procfs):
    t = ProcessTable(procfs=procfs)
    assert t.seed() == 2
    p = t.get(42)
    assert (p.ppid, p.exe, p.argv, p.uid, p.comm) == (1, "/usr/bin/app", ("/usr/bin/app", "--flag"), 1000,
                                                       "we (ird) name")
    assert p.start_ns == 1700000000 * 10**9 + 500 * 10**9 // os.sysconf("SC_CLK_TCK")


def _ev(cls, op, pid, ppid, **kw):
    return cls(op, 1, pid, pid, ppid, 0, 0, 1, 1, "c", False, **kw)


def test_fork_exec_exit_keep_the_table(procfs):
    t = ProcessTable(procfs=procfs)
    t.seed()
    t.update(_ev(ForkEvent, Op.FORK, 42, 1, child_pid=43))
    assert t.get(43).exe == "/usr/bin/app" and t.get(43).ppid == 42
    t.update(_ev(ExecEvent, Op.EXEC, 43, 42, filename="/bin/true", argv=("true",)))
    assert t.get(43).exe == "/bin/true" and t.get(43).argv == ("true",)
    t.update(_ev(ExitEvent, Op.EXIT, 43, 42, exit_code=0, signal=0))
    assert t.get(43) is None  # not in the fixture procfs either


def test_bounded(procfs):
    t = ProcessTable(max_entries=16, procfs=procfs)
    for pid in range(100, 200):
        t.update(_ev(ForkEvent, Op.FORK, 42, 1, child_pid=pid))
    assert len(t) == 16 and t.evicted > 0
