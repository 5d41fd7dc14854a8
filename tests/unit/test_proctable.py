"""The process table on a fixture procfs tree, and kept by fork/exec/exit events."""

import dataclasses
import os

import pytest

from agent.enrich.proctable import ProcessTable, ProcFS
from agent.events import ExecEvent, ExitEvent, ForkEvent, Op


def _proc(root, pid, ppid, comm, argv, uid=0, exe="/bin/x", cwd="/"):
    d = root / str(pid)
    d.mkdir()
    # comm with a space and a parenthesis: the parser must cut at the last ')'
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} " + " ".join(["0"] * 17) + " 500 0 0\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    os.symlink(exe, d / "exe")
    os.symlink(cwd, d / "cwd")


@pytest.fixture
def procfs(tmp_path):
    (tmp_path / "stat").write_text("cpu 0\nbtime 1700000000\n")
    _proc(tmp_path, 1, 0, "init", ["/sbin/init"], exe="/sbin/init")
    _proc(tmp_path, 42, 1, "we (ird) name", ["/usr/bin/app", "--flag"], uid=1000, exe="/usr/bin/app", cwd="/srv")
    # a web server that started a shell that started python: the lineage a rule asks about
    _proc(tmp_path, 100, 1, "nginx", ["nginx"], exe="/usr/sbin/nginx")
    _proc(tmp_path, 101, 100, "sh", ["sh", "-c", "x"], exe="/bin/dash", cwd="/var/www")
    _proc(tmp_path, 102, 101, "python3", ["python3"], exe="/usr/bin/python3.11")
    (tmp_path / "self").mkdir()
    return ProcFS(str(tmp_path))


def test_seed_reads_every_pid(procfs):
    t = ProcessTable(procfs=procfs)
    assert t.seed() == 2 + 3
    p = t.get(42)
    assert (p.ppid, p.exe, p.argv, p.uid, p.comm) == (1, "/usr/bin/app", ("/usr/bin/app", "--flag"), 1000,
                                                       "we (ird) name")
    assert p.start_ns == 1700000000 * 10**9 + 500 * 10**9 // os.sysconf("SC_CLK_TCK")
    assert p.cwd == "/srv" and t.get(1).cwd == "/"


def _ev(cls, op, pid, ppid, **kw):
    return cls(op, 1, pid, pid, ppid, 0, 0, 1, 1, "c", False, **kw)


def test_fork_exec_exit_keep_the_table(procfs):
    t = ProcessTable(procfs=procfs)
    t.seed()
    t.update(_ev(ForkEvent, Op.FORK, 42, 1, child_pid=43))
    assert t.get(43).exe == "/usr/bin/app" and t.get(43).ppid == 42
    t.update(_ev(ExecEvent, Op.EXEC, 43, 42, filename="/bin/true", argv=("true",)))
    assert t.get(43).exe == "/bin/true" and t.get(43).argv == ("true",)
    n = len(t)
    t.update(_ev(ExitEvent, Op.EXIT, 43, 42, exit_code=0, signal=0))
    assert len(t) == n - 1 and 43 not in [p.pid for p in t.snapshot()]
    # gone, but still known for a child's event that follows the exit record (see the next test)
    assert t.get(43).exe == "/bin/true"
    t.update(_ev(ForkEvent, Op.FORK, 1, 0, child_pid=43))  # the pid reused: what it was is forgotten
    assert t.get(43).exe == "/sbin/init"


def test_a_child_event_after_its_parents_exit_still_finds_the_parent(procfs):
    """The exit tracepoint fires before the kernel reparents the children, so a child's exec record can
    carry the pid of a parent whose exit record came first (runc exec: runc exits as the shell starts)."""
    t = ProcessTable(procfs=procfs)
    t.seed()
    t.update(_ev(ForkEvent, Op.FORK, 42, 1, child_pid=50))
    t.update(_ev(ExecEvent, Op.EXEC, 50, 42, filename="/usr/bin/runc", argv=("runc", "exec")))
    t.update(_ev(ForkEvent, Op.FORK, 50, 42, child_pid=51))
    t.update(_ev(ExitEvent, Op.EXIT, 50, 42, exit_code=0, signal=0))
    t.update(_ev(ExecEvent, Op.EXEC, 51, 50, filename="/bin/sh", argv=("/bin/sh",)))
    assert t.get(t.get(51).ppid).exe == "/usr/bin/runc"
    assert [p.pid for p in t.ancestors(51)] == [50, 42, 1]
    small = ProcessTable(max_entries=16, procfs=procfs)
    for pid in range(200, 240):  # the memory of exited processes is bounded too
        small.update(_ev(ForkEvent, Op.FORK, 1, 0, child_pid=pid))
        small.update(_ev(ExitEvent, Op.EXIT, pid, 1, exit_code=0, signal=0))
    assert len(small._gone) == small.gone_max == 16


def test_bounded(procfs):
    t = ProcessTable(max_entries=16, procfs=procfs)
    for pid in range(100, 200):
        t.update(_ev(ForkEvent, Op.FORK, 42, 1, child_pid=pid))
    assert len(t) == 16 and t.evicted > 0


def _names(chain):
    return [(p.pid, p.comm, p.exe) for p in chain]


def test_ancestors_parent_first_bounded_and_cached(procfs):
    t = ProcessTable(procfs=procfs)
    t.seed()
    assert _names(t.ancestors(102)) == [(101, "sh", "/bin/dash"), (100, "nginx", "/usr/sbin/nginx"),
                                        (1, "init", "/sbin/init")]
    builds = t.chain_builds
    assert t.ancestors(102) is t.ancestors(102) and t.chain_builds == builds  # cached
    t.update(_ev(ForkEvent, Op.FORK, 102, 101, child_pid=103))
    assert [p.pid for p in t.ancestors(103)] == [102, 101, 100, 1]
    assert t.ancestors(1) == () and t.ancestors(99999) == ()
    short = ProcessTable(procfs=procfs, ancestry_max=2)
    short.seed()
    assert [p.pid for p in short.ancestors(102)] == [101, 100]
    assert ProcessTable(procfs=procfs, ancestry_max=0).ancestors(102) == ()


def test_ancestors_follow_exec_and_exit(procfs):
    t = ProcessTable(procfs=procfs)
    t.seed()
    t.update(_ev(ForkEvent, Op.FORK, 102, 101, child_pid=103))
    assert [p.comm for p in t.ancestors(103)] == ["python3", "sh", "nginx", "init"]
    # the middle one execs: chains holding its old image are rebuilt
    t.update(_ev(ExecEvent, Op.EXEC, 102, 101, filename="/usr/bin/perl", argv=("perl",)))
    assert [(p.comm, p.exe) for p in t.ancestors(103)][0] == ("c", "/usr/bin/perl")
    # a leaf's own exec drops only its chain; the others stay cached
    builds = t.chain_builds
    t.update(_ev(ExecEvent, Op.EXEC, 103, 102, filename="/bin/true", argv=("true",)))
    assert [p.pid for p in t.ancestors(103)] == [102, 101, 100, 1] and t.chain_builds == builds + 1
    t.update(_ev(ExitEvent, Op.EXIT, 103, 102, exit_code=0, signal=0))
    assert t.ancestors(103) == ()  # gone from the table (and the fixture)


def test_ancestors_stop_on_a_loop():
    class Loop:  # pid reuse can leave a ppid loop in stale data
        def process(self, pid):
            from agent.events import ProcInfo
            return ProcInfo(pid, 8 if pid == 7 else 7, "/x", (), 0, 0, "x")

        def pids(self):
            return [7, 8]

    t = ProcessTable(procfs=Loop())
    t.seed()
    assert [p.pid for p in t.ancestors(7)] == [8]


def test_enricher_names_ancestors_and_resolves_relative_paths(procfs):
    from agent.enrich.enricher import Enricher
    from agent.events import FileEvent
    from agent.outputs.record import flatten

    t = ProcessTable(procfs=procfs)
    t.seed()
    en = Enricher(t)
    f = _ev(FileEvent, Op.FILE_OPEN, 101, 100, path="../html/x.php", path2="", ret=3, flags=0, mode=0,
            dirfd=-100, fd=-1, owner_uid=-1, owner_gid=-1)
    rec = flatten(en.enrich(f))
    assert rec["file.path"] == "../html/x.php" and rec["file.resolved_path"] == "/var/html/x.php"
    assert rec["process.ancestors.name"] == ["nginx", "init"]
    assert rec["process.ancestors.executable.path"] == ["/usr/sbin/nginx", "/sbin/init"]
    absolute = en.enrich(dataclasses.replace(f, path="/etc/x"))
    assert absolute.path_resolved == "" and "file.resolved_path" not in flatten(absolute)
    at_dir = en.enrich(dataclasses.replace(f, dirfd=5))
    assert at_dir.path_resolved == ""  # relative to a directory fd we cannot name
    ex = _ev(ExecEvent, Op.EXEC, 102, 101, filename="/bin/true", argv=("true",), cwd="/tmp")
    en.enrich(ex)
    assert t.get(102).cwd == "/tmp"
