"""Container resolver pieces without containerd: cgroup/mountinfo parsing on fixture files, CRI
labels, the container table, event decoding on bad input, and a watcher with no containerd at all."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from agent.enrich.cgroups import (
    CgroupResolver,
    cgroup_path_from_spec,
    expand_systemd_slice,
    parse_cgroup2_mount,
    parse_proc_cgroup,
)
from agent.enrich.container_table import ContainerTable, Entry, clean_labels, k8s_fields
from agent.enrich.containerd import ContainerdConfig, ContainerWatcher
from agent.enrich.containerd_client import pb_module, spec_cgroups_path

FIX = Path(__file__).resolve().parent.parent / "harness" / "fixtures" / "cgroups"


def fx(name: str) -> str:
    return (FIX / name).read_text()


# --- mountinfo and /proc/<pid>/cgroup --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, want",
    [
        ("mountinfo-hybrid", "/sys/fs/cgroup/unified"),
        ("mountinfo-v2", "/sys/fs/cgroup"),
        ("mountinfo-v2-bind", "/host/sys fs/cgroup"),  # root mount wins over a bind of a sub-cgroup; \040
        ("mountinfo-v1-only", None),
    ],
)
def test_cgroup2_mount(name, want):
    assert parse_cgroup2_mount(fx(name)) == want


def test_cgroup2_mount_garbage():
    assert parse_cgroup2_mount("") is None
    assert parse_cgroup2_mount("no separator here\n - cgroup2\n1 2 3 - cgroup2 x\n\x00\xff") is None


@pytest.mark.parametrize(
    "name, want",
    [
        ("cgroup-hybrid", "/nwtest-1/c1"),
        ("cgroup-deleted", "/k8s.io/abc"),
        ("cgroup-v1-only", None),
        ("cgroup-garbage", None),
    ],
)
def test_proc_cgroup(name, want):
    assert parse_proc_cgroup(fx(name)) == want


def test_proc_cgroup_cri_systemd():
    path = parse_proc_cgroup(fx("cgroup-v2-cri"))
    assert path.startswith("/kubepods.slice/kubepods-burstable.slice/") and path.endswith(".scope")


def test_spec_cgroups_path_to_v2_path():
    assert cgroup_path_from_spec("/nwtest-1/c1") == "/nwtest-1/c1"
    assert cgroup_path_from_spec("/k8s.io/../x") == "/x"
    # The systemd form CRI uses with SystemdCgroup = true maps to the path /proc/<pid>/cgroup shows.
    pod_slice = "kubepods-burstable-pod0d5e3c1a_2b3f_4c9e_9f7a_1c2d3e4f5a6b.slice"
    spec = f"{pod_slice}:cri-containerd:4f1c9a0e8b7d6c5b4a392817161514131211100f0e0d0c0b0a09080706050403"
    assert cgroup_path_from_spec(spec) == parse_proc_cgroup(fx("cgroup-v2-cri"))
    assert cgroup_path_from_spec(":cri-containerd:abc") == "/system.slice/cri-containerd-abc.scope"
    for bad in ("", "relative/path", "a:b", "a:b:c:d", "bad-.slice:p:n", "x.slice:p:"):
        assert cgroup_path_from_spec(bad) == ""


def test_expand_slice():
    assert expand_systemd_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_systemd_slice("-.slice") == "/"
    assert expand_systemd_slice("a--b.slice") == ""
    assert expand_systemd_slice("nope") == ""


@pytest.fixture
def fake_proc(tmp_path):
    """/proc with a pid 4242 in cgroup /ns/c1 and a cgroup2 'mount' that is a plain directory here."""
    cg = tmp_path / "cgroup2"
    (cg / "ns" / "c1").mkdir(parents=True)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(f"41 31 0:38 / {cg} rw - cgroup2 cgroup2 rw\n")
    (proc / "4242" / "ns").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text("1:cpu:/ns/c1\n0::/ns/c1\n")
    (proc / "4242" / "ns" / "mnt").write_text("")  # stands in for the nsfs inode
    (proc / "4242" / "stat").write_text("4242 (sh (x)) S 1 " + " ".join(["0"] * 17) + " 250 0\n")
    (proc / "stat").write_text("cpu 0\nbtime 1700000000\n")
    return proc, cg


def test_resolver_on_fixture_tree(fake_proc):
    proc, cg = fake_proc
    r = CgroupResolver(str(proc))
    assert r.cgroup2_mount == str(cg)
    path, cgid, mnt = r.resolve_pid(4242)
    assert path == "/ns/c1"
    assert cgid == os.stat(cg / "ns" / "c1").st_ino
    assert mnt == os.stat(proc / "4242" / "ns" / "mnt").st_ino
    assert r.start_ns(4242) == 1700000000 * 10**9 + 250 * 10**9 // os.sysconf("SC_CLK_TCK")
    assert r.resolve_pid(999999) == ("", 0, 0)
    assert r.resolve_pid(-1) == ("", 0, 0)
    assert r.cgroup_id("/../../etc") == 0  # a path from a spec may not leave the cgroup2 mount
    assert r.start_ns(999999) == 0


def test_resolver_without_cgroup2(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(fx("mountinfo-v1-only"))
    r = CgroupResolver(str(tmp_path))
    assert r.cgroup2_mount is None and r.cgroup_id("/x") == 0


# --- labels ---------------------------------------------------------------------------------------


def test_cri_labels():
    labels = json.loads(fx("labels-cri.json"))
    assert k8s_fields(labels) == ("web", "web-7d9f8c-abcde", "shop")
    assert k8s_fields(json.loads(fx("labels-sandbox.json"))) == ("", "web-7d9f8c-abcde", "shop")
    assert k8s_fields({"nerdctl/name": "db"}) == ("db", "", "")
    assert k8s_fields(None) == ("", "", "")
    assert k8s_fields({}) == ("", "", "")


def test_clean_labels_bounded_and_sorted():
    assert clean_labels({"b": "2", "a": "1"}) == (("a", "1"), ("b", "2"))
    assert clean_labels({"": "x", "k": 3, 4: "v"}) == ()
    assert clean_labels("not a mapping") == ()
    big = clean_labels({f"k{i:05}": "v" * 10_000 for i in range(1000)})
    assert len(big) == 256 and all(len(v) == 4096 for _, v in big)


# --- the table --------------------------------------------------------------------------------------


def _put(table, cid, cg=0, mnt=0, ns="ns", **kw):
    def fn(e):
        e.cgroup_id, e.mntns, e.image = cg, mnt, kw.get("image", "img")
        e.state = kw.get("state", "running")
        return "task"

    return table.update(ns, cid, fn)


def test_table_lookup_and_tombstones():
    t = ContainerTable(tombstone_ttl=0.2)
    seen = []
    t.add_listener(lambda kind, info: seen.append((kind, info.id)))
    info = _put(t, "c1", cg=101, mnt=9001)
    assert t.lookup_by_cgroup(101) is info and t.lookup_by_mntns(9001) is info
    assert t.lookup_by_cgroup(0) is None and t.lookup_by_mntns(0) is None and t.lookup_by_cgroup(5) is None
    t.mark_deleted("ns", "c1")
    # Late kernel events of a deleted container still resolve by cgroup id, never by mount ns (reused).
    assert t.lookup_by_cgroup(101).state == "deleted"
    assert t.lookup_by_mntns(9001) is None
    assert t.snapshot() == [] and len(t.snapshot(include_deleted=True)) == 1
    time.sleep(0.25)
    assert t.expire() == 1 and t.lookup_by_cgroup(101) is None
    assert seen == [("task", "c1"), ("delete", "c1")]


def test_table_revive_keeps_old_cgroup():
    t = ContainerTable()
    _put(t, "c1", cg=101)
    t.mark_deleted("ns", "c1")
    t.update("ns", "c1", lambda e: setattr(e, "cgroup_id", 202), revive=True)
    assert t.lookup_by_cgroup(202).state == "" and t.lookup_by_cgroup(101).id == "c1"
    assert len(t) == 1


def test_table_bounded():
    t = ContainerTable(max_containers=3, max_deleted=2)
    for i in range(5):
        _put(t, f"c{i}", cg=100 + i)
    assert len(t) == 3 and t.stats()["refused_full"] == 2
    for i in range(3):
        t.mark_deleted("ns", f"c{i}")
    assert t.stats()["deleted"] == 2 and t.lookup_by_cgroup(100) is None  # oldest tombstone evicted


def test_table_replace_all_tombstones_missing():
    t = ContainerTable()
    _put(t, "gone", cg=1)
    _put(t, "kept", cg=2)
    n = t.replace_all([Entry(namespace="ns", id="kept", cgroup_id=3), Entry(namespace="ns", id="new")])
    assert n == 2
    assert t.lookup("ns", "gone").state == "deleted"
    # A task that restarted while we were away: the new cgroup id and the old one both resolve.
    assert t.lookup_by_cgroup(3).id == "kept" and t.lookup_by_cgroup(2).id == "kept"


def test_listener_errors_are_counted():
    t = ContainerTable()
    t.add_listener(lambda kind, info: 1 / 0)
    _put(t, "c1", cg=1)
    _put(t, "c2", cg=2)
    assert t.stats()["listener_errors"] == 2 and len(t) == 2


def test_table_threadsafe_reads_during_writes():
    t = ContainerTable()
    stop = threading.Event()
    started = threading.Event()
    errors: list = []
    wrong: list = []
    reads = {"passes": 0, "hits": 0, "during_writes": 0}
    writing = threading.Event()

    def reader():
        started.set()
        while not stop.is_set():
            try:
                for cg in range(1, 101):
                    info = t.lookup_by_cgroup(cg)
                    if info is not None:
                        reads["hits"] += 1
                        if info.id != f"c{cg - 1}" or info.cgroup_id != cg:  # a torn or mixed-up entry
                            wrong.append((cg, info.id, info.cgroup_id))
                t.snapshot(include_deleted=True)
            except Exception as e:  # pragma: no cover - the failure being tested for
                errors.append(e)
            reads["passes"] += 1
            reads["during_writes"] += writing.is_set()

    th = threading.Thread(target=reader)
    th.start()
    assert started.wait(5), "the reader thread never ran"
    writing.set()
    i = 0
    # Write until the reader has made several whole passes while writes were going on, so the
    # test cannot pass with a reader that never overlapped them.
    while i < 2000 or reads["during_writes"] < 5:
        _put(t, f"c{i % 100}", cg=i % 100 + 1)
        if i % 7 == 0:
            t.mark_deleted("ns", f"c{i % 100}")
        i += 1
        assert i < 2_000_000, f"the reader made {reads['during_writes']} passes during {i} writes"
    writing.clear()
    stop.set()
    th.join(5)
    assert not th.is_alive()
    assert not errors and not wrong
    assert reads["during_writes"] >= 5 and reads["hits"] > 0
    assert {t.lookup_by_cgroup(cg).id for cg in range(1, 101)} == {f"c{k}" for k in range(100)}


# --- specs and events -------------------------------------------------------------------------------


def test_spec_cgroups_path_bad_input():
    class Any:
        def __init__(self, value):
            self.value = value

    assert spec_cgroups_path(Any(b'{"linux": {"cgroupsPath": "/ns/c1"}}')) == "/ns/c1"
    for bad in (b"", b"{", b"[1,2]", b'{"linux": 3}', b'{"linux": {"cgroupsPath": 7}}', b"\xff" * 10):
        assert spec_cgroups_path(Any(bad)) == ""
    assert spec_cgroups_path(None) == ""


class _NoRpcClient:
    """A client whose every call fails: the handlers under test must not need one for bad input."""

    def __getattr__(self, name):
        raise AssertionError(f"unexpected containerd call {name}")


def test_bad_events_are_counted_not_raised():
    Envelope = pb_module("services.events.v1.events_pb2").Envelope
    w = ContainerWatcher(ContainerdConfig(socket="/nonexistent"), ContainerTable())
    for topic, value in [
        ("/tasks/start", b"\xff\xff\xff\xff"),
        ("/containers/delete", b"\x0a\x05ab"),  # truncated string
        ("/snapshot/prepare", b"whatever"),  # a topic we do not act on
        ("", b""),
    ]:
        env = Envelope(namespace="ns", topic=topic)
        env.event.value = value
        w._handle(_NoRpcClient(), env)
    assert w.counters["events"] == 4 and w.counters["events_bad"] == 2


def test_exit_and_delete_of_unknown_container_are_ignored():
    task_pb2 = pb_module("events.task_pb2")
    Envelope = pb_module("services.events.v1.events_pb2").Envelope
    table = ContainerTable()
    w = ContainerWatcher(ContainerdConfig(socket="/nonexistent"), table)
    for topic, msg in [
        ("/tasks/exit", task_pb2.TaskExit(container_id="x", id="x", pid=1)),
        ("/tasks/delete", task_pb2.TaskDelete(container_id="x", pid=1)),
    ]:
        env = Envelope(namespace="ns", topic=topic)
        env.event.value = msg.SerializeToString()
        w._handle(_NoRpcClient(), env)
    assert len(table) == 0


def test_watcher_without_containerd_retries_and_stops(tmp_path):
    cfg = ContainerdConfig(socket=str(tmp_path / "absent.sock"), backoff_min=0.05, backoff_max=0.2)
    w = ContainerWatcher(cfg, ContainerTable())
    w.start()
    assert not w.wait_synced(0.6)
    assert not w.connected and w._thread.is_alive()
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 2.0 and not w._thread.is_alive()


def test_note_cgroup_completes_a_container_either_order():
    t = ContainerTable()
    seen = []
    t.add_listener(lambda kind, info: seen.append((kind, info.id, info.cgroup_id)))
    # Container known first (from containerd), cgroup_mkdir seen after: the note completes it.
    t.update("ns", "c1", lambda e: setattr(e, "spec_cgroup_path", "/ns/c1"))
    assert t.note_cgroup("/ns/c1", 501).cgroup_id == 501
    assert t.lookup_by_cgroup(501).id == "c1" and seen[-1] == ("task", "c1", 501)
    # cgroup_mkdir first: the id waits, bounded, for the watcher to ask by path.
    assert t.note_cgroup("/ns/c2", 502) is None
    assert t.cgroup_for_path("/ns/c2") == 502 and t.cgroup_for_path("/ns/none") == 0
    assert t.note_cgroup("", 1) is None and t.note_cgroup("/x", 0) is None


def test_watcher_resolves_a_vanished_task_from_noted_cgroup(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(fx("mountinfo-v2"))
    table = ContainerTable()
    w = ContainerWatcher(ContainerdConfig(socket="/nonexistent"), table, resolver=CgroupResolver(str(tmp_path)))
    table.note_cgroup("/ns/c9", 909)
    # The task's pid is gone and its cgroup directory removed: only the note knows the id.
    assert w._resolve(123456, "/ns/c9") == ("/ns/c9", 909, 0)
