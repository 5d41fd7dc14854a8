"""The enrich stage on decoded replay records: lineage from the process table (a procfs fixture tree for
what the table must read), container resolution by cgroup id, then mount namespace, then the fallback."""

from __future__ import annotations

import os
import time

import pytest

from agent.enrich.container_table import ContainerTable
from agent.enrich.enricher import UNKNOWN, ContainerResolver, Enricher
from agent.enrich.hold import Hold
from agent.enrich.proctable import ProcessTable, ProcFS
from agent.events import Enriched
from agent.sensors import REGISTRY
from agent.sensors.common import BootClock
from tests.unit.replay_records import PID, cgroup_rec, exec_rec, exit_rec, fork_rec, open_rec

_DECODERS = {op: dec for s in REGISTRY.values() for op, dec in s.decoders.items()}
_CLOCK = BootClock()
BTIME = 1_700_000_000


def _ev(raw: bytes):
    return _DECODERS[raw[0]](raw, _CLOCK)


def _proc(root, pid: int, ppid: int, comm: str, exe: str, argv: list[str], uid: int = 0, start_ticks: int = 100):
    d = root / str(pid)
    d.mkdir()
    fields = ["S", str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 10
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    os.symlink(exe, d / "exe")


@pytest.fixture
def procfs(tmp_path):
    """A procfs with init, a shell whose comm has a space and a parenthesis, and the shell's child."""
    (tmp_path / "stat").write_text(f"cpu 0 0 0 0\nbtime {BTIME}\n")
    _proc(tmp_path, 1, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"])
    _proc(tmp_path, PID - 1, 1, "my sh (x)", "/bin/bash", ["bash", "-l"], uid=1000, start_ticks=500)
    return ProcFS(str(tmp_path))


def test_seed_and_procfs_fields(procfs):
    t = ProcessTable(procfs=procfs)
    assert t.seed() == 2
    sh = t.get(PID - 1)
    assert (sh.ppid, sh.comm, sh.exe, sh.argv, sh.uid) == (1, "my sh (x)", "/bin/bash", ("bash", "-l"), 1000)
    assert sh.start_ns == BTIME * 1_000_000_000 + 500 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def test_lineage_through_exec_fork_and_exit(procfs):
    table = ProcessTable(procfs=procfs)
    table.seed()
    en = Enricher(table)
    ex = en.enrich(_ev(exec_rec("/usr/bin/python3", ["python3", "app.py"])))
    # exec: the event names the new image, and its parent comes from the seeded table
    assert (ex.process.exe, ex.process.argv) == ("/usr/bin/python3", ("python3", "app.py"))
    assert ex.parent.exe == "/bin/bash" and ex.parent.comm == "my sh (x)"
    fk = en.enrich(_ev(fork_rec(PID + 1)))
    assert fk.process.exe == "/usr/bin/python3"  # looked up before the fork is applied
    kid = en.enrich(_ev(open_rec("/tmp/out", pid=PID + 1, ppid=PID)))
    assert (kid.process.exe, kid.process.argv, kid.parent.exe) == ("/usr/bin/python3", ("python3", "app.py"),
                                                                   "/usr/bin/python3")
    bye = en.enrich(_ev(exit_rec(0)))
    assert bye.process.exe == "/usr/bin/python3"  # the exit still names what exited
    assert table._t.get(PID) is None  # and then it is gone
    reads = table.procfs_reads
    late = en.enrich(_ev(open_rec("/tmp/late", pid=PID + 1, ppid=PID)))  # its parent has exited
    assert late.parent.exe == "/usr/bin/python3" and table.procfs_reads == reads  # remembered, not read


def test_pid_the_table_never_saw_is_read_from_procfs_once(procfs):
    table = ProcessTable(procfs=procfs)  # not seeded: as if the process started before the agent
    en = Enricher(table)
    first = en.enrich(_ev(open_rec("/etc/x", pid=PID - 1, ppid=1)))
    assert first.process.exe == "/bin/bash" and first.parent.exe == "/usr/lib/systemd/systemd"
    reads = table.procfs_reads
    en.enrich(_ev(open_rec("/etc/y", pid=PID - 1, ppid=1)))
    assert table.procfs_reads == reads  # cached now


def _containers():
    table = ContainerTable()

    def fn(e):
        e.cgroup_id, e.mntns, e.state, e.image = 500, 4026532999, "running", "app:1"
        e.cgroup_path = "/k8s.io/" + "a" * 64
        e.labels = (("io.kubernetes.pod.name", "web-0"), ("io.kubernetes.pod.namespace", "shop"))
        return "task"

    table.update("k8s.io", "a" * 64, fn)
    return table


def test_container_by_cgroup_then_by_mount_namespace(procfs):
    en = Enricher(ProcessTable(procfs=procfs), ContainerResolver(_containers()))
    by_cg = en.enrich(_ev(open_rec("/a", cgroup_id=500)))
    assert (by_cg.container.id, by_cg.container.pod_name, by_cg.container.pod_namespace) == ("a" * 64, "web-0", "shop")
    by_ns = en.enrich(_ev(open_rec("/b", cgroup_id=12345, mntns=4026532999)))  # a cgroup the table lacks
    assert by_ns.container.id == "a" * 64
    host = en.enrich(_ev(open_rec("/c", cgroup_id=1, mntns=4026531840)))
    assert host.container is None


def test_young_cgroups_and_the_fallback_after_a_hold():
    r = ContainerResolver(ContainerTable(), young_s=0.2)
    for cg, path in ((11, "/k8s.io/" + "b" * 64), (12, "/system.slice/cron.service"),
                     (13, "/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + "c" * 64 + ".scope"),
                     (14, "/mynamespace/job-1")):
        r.note_cgroup(_ev(cgroup_rec(cg, path)))
    assert r.is_young(11) and not r.is_young(99)
    assert r.fallback(11) is UNKNOWN and r.fallback(13) is UNKNOWN and r.fallback(14) is UNKNOWN
    assert r.fallback(12) is None and r.fallback(99) is None
    time.sleep(0.25)
    assert not r.is_young(11)


def test_a_cgroup_noted_before_containerd_speaks_resolves_its_container_later():
    table = ContainerTable()
    r = ContainerResolver(table)
    path = "/k8s.io/" + "d" * 64
    r.note_cgroup(_ev(cgroup_rec(777, path)))
    ev = _ev(exec_rec("/bin/sh", ["sh"], cgroup_id=777))
    assert r.resolve(ev) is None

    def fn(e):
        e.spec_cgroup_path, e.state = path, "created"  # what the watcher knows from the spec
        return "container"

    table.update("k8s.io", "d" * 64, fn)
    table.note_cgroup(path, 777)  # a late cgroup event (or the notifier) completes the entry
    assert r.resolve(ev).id == "d" * 64


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_hold_waits_past_its_deadline_while_the_watcher_is_behind_up_to_the_cap():
    table, behind, clock = ContainerTable(), [True], _Clock()
    r = ContainerResolver(table, behind=lambda: behind[0])
    path = "/k8s.io/" + "e" * 64
    r.note_cgroup(_ev(cgroup_rec(888, path)))
    hold = Hold(r, hold_s=0.5, max_hold_s=5.0, clock=clock)
    first = _ev(exec_rec("/bin/sh", ["sh", "1"], cgroup_id=888))
    assert hold.hold(Enriched(first, None, None)) == []
    clock.t += 2.0  # past the deadline, but containerd's events still wait for the watcher
    assert hold.release() == [] and len(hold) == 1

    def fn(e):
        e.spec_cgroup_path, e.state = path, "created"
        return "container"

    table.update("k8s.io", "e" * 64, fn)  # the watcher gets to it
    table.note_cgroup(path, 888)
    (out,) = hold.release()
    assert out.container.id == "e" * 64 and hold.attribution == {"resolved_after_hold": 1}

    other = _ev(exec_rec("/bin/sh", ["sh", "2"], cgroup_id=999))
    r.note_cgroup(_ev(cgroup_rec(999, "/k8s.io/" + "9" * 64)))
    hold.hold(Enriched(other, None, None))
    clock.t += 4.9
    assert hold.release() == []  # still behind, under the cap
    clock.t += 0.2
    (late,) = hold.release()  # the cap: a watcher that never catches up does not hold events forever
    assert late.container is UNKNOWN
    behind[0] = False
    hold.hold(Enriched(other, None, None))
    clock.t += 0.6
    assert hold.release()[0].container is UNKNOWN  # an idle watcher: the deadline is the deadline


def test_a_reused_mount_namespace_inode_does_not_name_a_container_in_another_cgroup(procfs):
    table = _containers()  # "a"*64: cgroup 500 at /k8s.io/aaa..., mount namespace 4026532999
    r = ContainerResolver(table)
    en = Enricher(ProcessTable(procfs=procfs), r)
    r.note_cgroup(_ev(cgroup_rec(600, "/other-ns/job-7")))  # a neighbour's new container, same inode number
    assert en.enrich(_ev(open_rec("/x", cgroup_id=600, mntns=4026532999))).container is None
    r.note_cgroup(_ev(cgroup_rec(601, "/k8s.io/" + "a" * 64 + "/init.scope")))  # its own sub-cgroup: still it
    assert en.enrich(_ev(open_rec("/y", cgroup_id=601, mntns=4026532999))).container.id == "a" * 64
    assert en.enrich(_ev(open_rec("/z", cgroup_id=602, mntns=4026532999))).container.id == "a" * 64  # unnoted
