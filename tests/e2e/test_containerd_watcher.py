"""The container table against a real (private) containerd: containers started before and after the
watcher, task exec, 50 short-lived containers, containerd restarting, and containerd absent at start.

Expected values come from the OS, not from the code under test: the cgroup id is the inode of
<cgroup2 mount>/<the "0::" path in /proc/<pid>/cgroup>, the mount namespace the inode of
/proc/<pid>/ns/mnt, the digest the one the image builder computed."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from tests.harness.containerd import unique_id, wait_until
from tests.harness.oci import build_image

pytestmark = pytest.mark.e2e

CRI_LABELS = {
    "io.kubernetes.pod.name": "web-7d9f8c-abcde",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.container.name": "app",
}


def _cgroup2_mount() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup2 "):
                return left.split()[4]
    pytest.skip("no cgroup2 mount on this host")


def _os_view(pid: int) -> tuple[str, int, int]:
    """(cgroup v2 path, cgroup id, mount-ns inode) of a live pid, straight from the OS."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(ln.strip()[3:] for ln in f if ln.startswith("0::"))
    cgid = os.stat(os.path.join(_cgroup2_mount(), path.lstrip("/"))).st_ino
    return path, cgid, os.stat(f"/proc/{pid}/ns/mnt").st_ino


class Watch:
    """A watcher on a socket, its table, and every listener call it made."""

    def __init__(self, socket):
        self.table = ContainerTable()
        self.calls: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        self.table.add_listener(self._on)
        cfg = ContainerdConfig(socket=str(socket), backoff_min=0.05, backoff_max=0.5)
        self.watcher = ContainerWatcher(cfg, self.table)
        self.watcher.start()

    def _on(self, kind, info):
        with self._lock:
            self.calls.append((kind, info))

    def kinds(self, cid: str) -> list[str]:
        with self._lock:
            return [k for k, i in self.calls if i.id == cid]

    def resolved(self, ns: str, cid: str, timeout: float = 10.0):
        """The record of cid once its task runs and its cgroup id is known."""
        return wait_until(
            lambda: (i := self.table.lookup(ns, cid)) is not None and i.cgroup_id and i.state == "running" and i,
            timeout,
        )


@pytest.fixture
def watch():
    made: list[Watch] = []

    def start(socket) -> Watch:
        made.append(Watch(socket))
        return made[-1]

    yield start
    for w in made:
        w.watcher.stop()


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory):
    """One image tarball for the tests that run their own containerd."""
    return build_image(tmp_path_factory.mktemp("img") / "bb.tar", "nodewarden.test/busybox:own")


def _assert_running(info, cd, cid, image):
    pid = cd.task_pid(cid)
    assert pid > 0
    path, cgid, mntns = _os_view(pid)
    assert (info.id, info.namespace, info.pid, info.state) == (cid, cd.namespace, pid, "running")
    assert (info.cgroup_path, info.cgroup_id, info.mntns) == (path, cgid, mntns)
    assert (info.image, info.image_digest) == (image.name, image.manifest_digest)
    assert info.runtime == "containerd" and info.created_ns > 0 and info.started_ns > 0


def test_containers_before_and_after_the_watcher(containerd, busybox_image, watch):
    before = containerd.run(busybox_image, "sleep", "300", labels=CRI_LABELS)
    w = watch(containerd.socket)
    assert w.watcher.wait_synced(10), w.watcher.stats()
    info = w.table.lookup(containerd.namespace, before)
    _assert_running(info, containerd, before, busybox_image)
    assert (info.pod_name, info.pod_namespace, info.name) == ("web-7d9f8c-abcde", "shop", "app")
    assert dict(info.labels)["io.kubernetes.pod.name"] == "web-7d9f8c-abcde"
    assert w.table.lookup_by_cgroup(info.cgroup_id) == info
    assert w.table.lookup_by_mntns(info.mntns) == info

    after = containerd.run(busybox_image, "sleep", "300")
    info2 = w.resolved(containerd.namespace, after)
    assert info2, w.watcher.stats()
    info2 = w.table.lookup(containerd.namespace, after)
    _assert_running(info2, containerd, after, busybox_image)
    assert (info2.pod_name, info2.name) == ("", "")
    assert "task" in w.kinds(after) and "container" in w.kinds(after)
    assert info2.cgroup_id != info.cgroup_id

    for cid in (before, after):
        containerd.remove(cid)
    gone = wait_until(lambda: all(w.table.lookup(containerd.namespace, c).state == "deleted" for c in (before, after)))
    assert gone
    # Late kernel events of a removed container still resolve by cgroup id, not by mount namespace.
    assert w.table.lookup_by_cgroup(info.cgroup_id).id == before
    assert w.table.lookup_by_mntns(info.mntns) is None
    assert {i.id for i in w.table.snapshot()}.isdisjoint({before, after})


def test_task_exec_is_seen_in_the_same_cgroup(containerd, busybox_image, watch):
    cid = containerd.run(busybox_image, "sleep", "300")
    w = watch(containerd.socket)
    info = w.resolved(containerd.namespace, cid)
    assert info
    r = containerd.exec(cid, "sh", "-c", "grep 0:: /proc/self/cgroup")
    assert r.stdout.strip() == f"0::{info.cgroup_path}"  # so its kernel events carry info.cgroup_id
    assert wait_until(lambda: "exec" in w.kinds(cid), 5), w.kinds(cid)
    assert w.table.lookup_by_cgroup(info.cgroup_id).id == cid
    containerd.remove(cid)


def test_50_short_lived_containers(containerd, busybox_image, watch, tmp_path):
    """Each container lives a few milliseconds. Run it on a busy machine too (`stress-ng --cpu 4` on 2
    cores): the task is gone before its containerd event reaches the watcher, and only the cgroup
    notifications (agent/enrich/cgroupnotify.py) still give it its cgroup."""
    w = watch(containerd.socket)
    assert w.watcher.wait_synced(10)
    out = tmp_path / "truth"
    out.mkdir()

    def one(_):
        # Writes its own cgroup to a bind-mounted file, so the test knows the truth afterwards. Not its
        # stdout: `ctr run --rm` of a task this short loses the output now and then on a busy machine.
        cid = unique_id()
        r = containerd.ctr("run", "--rm", "--mount", f"type=bind,src={out},dst=/out,options=rbind:rw",
                           busybox_image.name, cid, "sh", "-c", f"grep 0:: /proc/self/cgroup > /out/{cid}",
                           check=False)
        return cid, r.returncode, (out / cid).read_text().strip() if (out / cid).exists() else r.stderr

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - t0
    assert all(rc == 0 for _, rc, _ in runs), runs
    ns = containerd.namespace
    assert wait_until(lambda: all((i := w.table.lookup(ns, c)) and i.state == "deleted" for c, _, _ in runs), 15)
    misses = []
    for cid, _, printed in runs:
        info = w.table.lookup(ns, cid)
        if not (info.cgroup_id and f"0::{info.cgroup_path}" == printed and "task" in w.kinds(cid)):
            misses.append((cid, printed, info))
            continue
        assert (info.image, info.image_digest) == (busybox_image.name, busybox_image.manifest_digest)
        assert w.table.lookup_by_cgroup(info.cgroup_id).id == cid
    assert not misses, f"{len(misses)}/50 unresolved: {misses[:3]} stats={w.watcher.stats()}"
    assert len({w.table.lookup(ns, c).cgroup_id for c, _, _ in runs}) == 50
    print(f"50 short-lived containers in {elapsed:.1f}s; watcher stats {w.watcher.stats()}")


def test_containerd_restart_reconnects_and_rebuilds(make_containerd, busybox_tar, watch):
    cd = make_containerd()
    img = cd.import_image(busybox_tar)
    c1 = cd.run(img, "sleep", "300")
    w = watch(cd.socket)
    info1 = w.resolved(cd.namespace, c1)
    assert info1
    # A container the table knows but containerd will not list after the restart (as if deleted while
    # we were disconnected): the rebuild must mark it deleted.
    w.table.update(cd.namespace, "ghost", lambda e: setattr(e, "state", "running"))

    cd.stop()
    assert wait_until(lambda: not w.watcher.connected, 10)
    time.sleep(0.3)  # a few reconnect attempts against nothing
    cd.start()
    assert wait_until(lambda: w.watcher.connected and w.watcher.wait_synced(0.1), 15), w.watcher.stats()
    info = w.table.lookup(cd.namespace, c1)
    assert (info.cgroup_id, info.pid, info.state) == (info1.cgroup_id, info1.pid, "running")  # task survived
    assert w.table.lookup(cd.namespace, "ghost").state == "deleted"

    c2 = cd.run(img, "sleep", "300")
    info2 = w.resolved(cd.namespace, c2)
    assert info2
    _assert_running(w.table.lookup(cd.namespace, c2), cd, c2, img)
    stats = w.watcher.stats()
    assert stats["connects"] >= 2 and stats["disconnects"] >= 1 and stats["syncs"] >= 2


def test_containerd_absent_at_start(make_containerd, busybox_tar, watch):
    cd = make_containerd(start=False)
    w = watch(cd.socket)
    time.sleep(0.5)
    assert not w.watcher.connected and w.watcher._thread.is_alive()
    cd.start()
    img = cd.import_image(busybox_tar)
    cid = cd.run(img, "sleep", "300", cid=unique_id("late"))
    assert w.resolved(cd.namespace, cid, timeout=15), w.watcher.stats()
    _assert_running(w.table.lookup(cd.namespace, cid), cd, cid, img)


def test_containers_command(containerd, busybox_image):
    import subprocess
    import sys

    import orjson

    cid = containerd.run(busybox_image, "sleep", "300", labels=CRI_LABELS)
    cmd = [sys.executable, "-m", "agent.cli", "containers", "--containerd-socket", str(containerd.socket)]
    r = subprocess.run([*cmd, "--json"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {d["id"]: d for d in map(orjson.loads, r.stdout.splitlines())}
    row = rows[cid]
    _, cgid, _ = _os_view(containerd.task_pid(cid))
    assert (row["cgroup_id"], row["image"], row["pod_name"]) == (cgid, busybox_image.name, "web-7d9f8c-abcde")
    assert row["labels"]["io.kubernetes.container.name"] == "app"
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and cid in text.stdout and "shop/web-7d9f8c-abcde" in text.stdout
    down = subprocess.run([*cmd[:-1], "/nonexistent/containerd.sock"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    containerd.remove(cid)


def test_cgroup_notifier_gives_the_id_of_a_cgroup_gone_before_it_looked():
    """agent/enrich/cgroupnotify.py read late on purpose: the directory was made, written to and removed
    before the notifier reads its queue. The id comes from the write (taken in the kernel), and it is
    the inode the directory had."""
    from agent.enrich.cgroupnotify import CgroupNotifier

    mount = _cgroup2_mount()
    got: list[tuple[str, int]] = []
    n = CgroupNotifier(mount, lambda path, cg: got.append((path, cg)))
    if not n._open():
        pytest.skip("fanotify filesystem marks unavailable here")
    try:
        name = unique_id("nwnotify")
        live, gone = os.path.join(mount, name + "-live"), os.path.join(mount, name + "-gone")
        os.mkdir(live)
        os.mkdir(gone)
        gone_id = os.stat(gone).st_ino
        with open(os.path.join(gone, "cgroup.max.depth"), "w") as f:  # as runc writes cgroup.procs
            f.write("max")
        os.rmdir(gone)
        n._events(os.read(n._fd, 1 << 16))  # only now: the stat() of "-gone" fails
        assert (f"/{name}-live", os.stat(live).st_ino) in got
        assert (f"/{name}-gone", gone_id) in got
        assert n.counters["paired"] == 1 and n.counters["created"] >= 1
    finally:
        os.rmdir(live)
        n.stop()
