"""Container and image lifecycle records against a real (private) containerd: the watcher with a Lifecycle sink,
as the agent wires them (agent/node.py), and what comes out of it.

Real: containerd 1.6 and runc run every container; the memory limit is the one `ctr run --memory-limit` puts
in the spec and runc writes to the cgroup; the OOM kill is the kernel's; the exec is `ctr task exec`; the image
events follow `ctr images import` and `ctr images rm`. Expected values come from outside the code under test:
the image's digest from the image builder, the task's pid from `ctr tasks ls`, the exit status from ctr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import orjson
import pytest

from agent.config import LifecycleConfig
from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from agent.enrich.lifecycle import DIRECT_EXEC_RULE, LOOP_RULE, OOM_RULE, Lifecycle
from agent.events import AlertEvent
from tests.harness.containerd import unique_id, wait_until
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

CRI_LABELS = {
    "io.kubernetes.pod.name": "web-7d9f8c-abcde",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.container.name": "app",
}
MIB = 1 << 20
# busybox sh holds a 40 MB string: `tr` writes 40 MB of "a", the command substitution reads it all into memory.
ALLOCATE_40M = 'x=$(head -c 40000000 /dev/zero | tr "\\0" a); echo ${#x}'


class Records:
    """What the lifecycle emitter hands on (the pipeline's emit in the agent), thread-safe."""

    def __init__(self):
        self._got: list = []
        self._lock = threading.Lock()

    def __call__(self, rec):
        with self._lock:
            self._got.append(rec)

    def of(self, cid: str) -> list:
        with self._lock:
            return [r for r in self._got if (r.container.id if r.container is not None else "") == cid]

    def names(self, cid: str) -> list[str]:
        return [r.rule_id if isinstance(r, AlertEvent) else r.name for r in self.of(cid)]

    def wait(self, cid: str, name: str, timeout: float = 15.0):
        """The first record of cid named name (a rule id for alerts), once it came."""
        return wait_until(lambda: next((r for r in self.of(cid) if (r.rule_id if isinstance(r, AlertEvent)
                                                                     else r.name) == name), None), timeout)

    def images(self, name: str) -> list:
        with self._lock:
            return [r for r in self._got if getattr(r, "image", None) == name and not isinstance(r, AlertEvent)]


@pytest.fixture
def watched(containerd):
    """A watcher on the test containerd with a Lifecycle sink: restart loops at 3 exits within 120 s."""
    records = Records()
    lc = Lifecycle(LifecycleConfig(restart_exits=3, restart_window_s=120.0), emit=records)
    lc.start()
    watcher = ContainerWatcher(ContainerdConfig(socket=str(containerd.socket), backoff_min=0.05, backoff_max=0.5),
                               ContainerTable(), lifecycle=lc)
    watcher.start()
    assert watcher.wait_synced(10), watcher.stats()
    yield records, lc, watcher
    watcher.stop()
    lc.stop()


def _wait_exited(containerd, cid: str, timeout: float = 20.0) -> None:
    assert wait_until(lambda: containerd.task_pid(cid) == 0 or _status(containerd, cid) == "STOPPED", timeout)


def _status(containerd, cid: str) -> str:
    for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return parts[-1]
    return ""


def test_created_started_exited_deleted_carry_the_container(containerd, busybox_image, watched):
    records, lc, _ = watched
    cid = containerd.run(busybox_image, "sh", "-c", "sleep 0.5; exit 3", labels=CRI_LABELS)
    pid = wait_until(lambda: containerd.task_pid(cid), 5)
    assert records.wait(cid, "container.exited"), records.names(cid)
    containerd.remove(cid)
    assert records.wait(cid, "container.deleted"), records.names(cid)
    recs = records.of(cid)
    assert [r.name for r in recs] == ["container.created", "container.started", "container.exited",
                                      "container.deleted"]
    for r in recs:
        c = r.container
        assert (c.id, c.namespace, c.image, c.image_digest) == (cid, containerd.namespace, busybox_image.name,
                                                                busybox_image.manifest_digest)
        assert (c.pod_name, c.pod_namespace, c.name) == ("web-7d9f8c-abcde", "shop", "app")
        assert r.ts_ns > 0
    started, exited = recs[1], recs[2]
    assert started.pid == pid and pid > 0
    assert (exited.pid, exited.exit_code, exited.signal, exited.oom_killed) == (pid, 3, 0, False)
    assert [r.ts_ns for r in recs] == sorted(r.ts_ns for r in recs)
    assert lc.drops() == {"lifecycle.queue": 0, "lifecycle.emit": 0}


def test_a_killed_container_says_which_signal(containerd, busybox_image, watched):
    records, _, _ = watched
    cid = containerd.run(busybox_image, "sleep", "300")
    assert records.wait(cid, "container.started")
    containerd.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
    exited = records.wait(cid, "container.exited")
    containerd.remove(cid)
    assert exited, records.names(cid)
    assert (exited.exit_code, exited.signal, exited.oom_killed) == (137, 9, False)


def test_oom_kill_under_a_16_mib_limit(containerd, busybox_image, watched):
    records, _, _ = watched
    cid = unique_id("oom")
    containerd.ctr("run", "-d", "--null-io", "--memory-limit", str(16 * MIB), busybox_image.name, cid,
                   "sh", "-c", ALLOCATE_40M)
    try:
        spec = json.loads(containerd.ctr("containers", "info", cid).stdout)["Spec"]
        assert spec["linux"]["resources"]["memory"]["limit"] == 16 * MIB  # the limit runc was given
        exited = records.wait(cid, "container.exited", 30)
        assert exited, records.names(cid)
        oom = records.wait(cid, "container.oom")
        alert = records.wait(cid, OOM_RULE)
    finally:
        containerd.remove(cid)
    assert oom is not None and alert is not None, records.names(cid)
    assert (exited.exit_code, exited.signal, exited.oom_killed) == (137, 9, True)
    assert oom.ts_ns <= exited.ts_ns
    assert (alert.severity.label, alert.container.id, alert.container.image) == ("medium", cid, busybox_image.name)
    assert records.names(cid).count(OOM_RULE) == 1


def test_a_container_under_its_limit_is_not_oom_killed(containerd, busybox_image, watched):
    records, _, _ = watched
    cid = unique_id("fits")
    containerd.ctr("run", "-d", "--null-io", "--memory-limit", str(64 * MIB), busybox_image.name, cid,
                   "sh", "-c", ALLOCATE_40M.replace("40000000", "4000000"))
    exited = records.wait(cid, "container.exited", 30)
    containerd.remove(cid)
    assert exited, records.names(cid)
    assert (exited.exit_code, exited.oom_killed) == (0, False)
    assert "container.oom" not in records.names(cid) and OOM_RULE not in records.names(cid)


def test_task_exec_is_an_exec_record(containerd, busybox_image, watched):
    records, _, _ = watched
    cid = containerd.run(busybox_image, "sleep", "300")
    try:
        assert records.wait(cid, "container.started")
        exec_id = unique_id("dbg")
        containerd.exec(cid, "sh", "-c", "sleep 1; true", exec_id=exec_id)  # no exec of the last command
        rec = records.wait(cid, "container.exec")
    finally:
        containerd.remove(cid)
    assert rec is not None, records.names(cid)
    assert (rec.exec_id, rec.argv, rec.via) == (exec_id, ("sh", "-c", "sleep 1; true"), "containerd")
    assert rec.pid > 0 and rec.container.image == busybox_image.name
    assert DIRECT_EXEC_RULE not in records.names(cid)
    assert records.names(cid).count("container.exited") == 1  # the exec's exit is not the container's


def test_exec_into_a_cri_container_outside_the_cri_alerts(containerd, busybox_image, watched):
    records, _, _ = watched
    cid = containerd.run(busybox_image, "sleep", "300", labels=CRI_LABELS)
    try:
        assert records.wait(cid, "container.started")
        containerd.exec(cid, "true", exec_id="debug-shell")
        alert = records.wait(cid, DIRECT_EXEC_RULE)
    finally:
        containerd.remove(cid)
    rec = records.wait(cid, "container.exec")
    assert rec.via == "direct" and rec.exec_id == "debug-shell"
    assert alert is not None and alert.techniques == ("T1609",) and "shop/web-7d9f8c-abcde/app" in alert.output


def test_a_crash_looping_container_raises_one_restart_loop_alert(containerd, busybox_image, watched):
    """Run under one id, exit 1, delete, again: 5 exits, restart_exits 3 -> exactly one alert (at the third)."""
    records, _, _ = watched
    cid = unique_id("loop")
    for i in range(5):
        _, r = containerd.run_once(busybox_image, "sh", "-c", "exit 1", cid=cid)
        assert r.returncode == 1, r.stderr
        assert wait_until(lambda n=i + 1: records.names(cid).count("container.deleted") == n, 10), records.names(cid)
    names = records.names(cid)
    assert names.count("container.exited") == 5
    assert names.count(LOOP_RULE) == 1, names
    alert = records.wait(cid, LOOP_RULE)
    assert "exited 3 times within 120 s" in alert.output and "status 1" in alert.output
    # the alert came with the third exit
    exits = [i for i, n in enumerate(names) if n == "container.exited"]
    assert exits[2] < names.index(LOOP_RULE) < exits[3]


def test_image_import_and_delete(containerd, image_builder, watched):
    records, _, _ = watched
    name = f"nodewarden.test/lifecycle:{unique_id('t')}"
    img = image_builder(name, {"/etc/lifecycle": b"1\n"})
    pulled = wait_until(lambda: next((r for r in records.images(name) if r.name == "image.pulled"), None), 10)
    assert pulled is not None
    assert (pulled.namespace, pulled.digest) == (containerd.namespace, img.manifest_digest)
    containerd.ctr("images", "rm", name)
    deleted = wait_until(lambda: next((r for r in records.images(name) if r.name == "image.deleted"), None), 10)
    assert deleted is not None
    assert (deleted.namespace, deleted.digest) == (containerd.namespace, img.manifest_digest)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the agent's BPF probes)")
def test_the_agent_prints_and_stores_lifecycle_records(containerd, busybox_image, tmp_path, monkeypatch):
    """`nodewarden run` as deployed: the OOM-killed container's records in the JSON log, with the alert, and the
    same records read back from the embedded collector (the gRPC codec's ContainerLifecycle kind)."""
    sock = f"unix:{tmp_path}/collector.sock"
    for k, v in {"NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state"), "NODEWARDEN_EXPORT_EMBEDDED_LISTEN": sock,
                 "NODEWARDEN_EXPORT_EMBEDDED_HTTP": "", "NODEWARDEN_LIFECYCLE_ALERT_ON": "container.exec"}.items():
        monkeypatch.setenv(k, v)
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--collector", "embedded")
    cid = unique_id("oom")
    try:
        containerd.ctr("run", "-d", "--null-io", "--memory-limit", str(16 * MIB), busybox_image.name, cid,
                       "sh", "-c", ALLOCATE_40M)
        (exited,) = agent.wait_for(lambda r: r["event.name"] == "container.exited" and r.get("container.id") == cid,
                                   timeout=30)
        # one container.oom per process the OOM killer took (the shell's pipeline can lose two); one alert per task
        oom = agent.wait_for(lambda r: r["event.name"] == "container.oom" and r.get("container.id") == cid)[0]
        (alert,) = agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("rule.id") == OOM_RULE
                                  and r.get("container.id") == cid)
        containerd.remove(cid)
        agent.wait_for(lambda r: r["event.name"] == "container.deleted" and r.get("container.id") == cid)
        stored = wait_until(lambda: (got := _stored(sock, cid)) and len(got) >= 6 and got, 15)
    finally:
        containerd.remove(cid)
        assert agent.stop() == 0
    assert (exited["container.exit.code"], exited["container.exit.signal"], exited["container.exit.oom_killed"],
            exited["event.severity"]) == (137, 9, True, "medium")
    for r in (exited, oom, alert):
        assert (r["container.image.name"], r["container.image.digest"], r["containerd.namespace"]) == (
            busybox_image.name, busybox_image.manifest_digest, containerd.namespace)
    assert (alert["rule.name"], alert["event.severity"]) == ("Container OOM-killed", "medium")
    assert stored, "nothing stored"
    names = [r["event.name"] for r in stored]
    for name in ("container.created", "container.started", "container.oom", "container.exited", "container.deleted",
                 "alert"):
        assert name in names, names
    back = next(r for r in stored if r["event.name"] == "container.exited")
    assert {k: back[k] for k in exited if k in back} == {k: exited[k] for k in exited if k in back}
    assert (back["container.exit.code"], back["container.exit.oom_killed"]) == (137, True)


def _stored(sock: str, cid: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "events", "--collector", sock, "--json", "--container",
                          cid], capture_output=True, timeout=30)
    return [orjson.loads(line) for line in out.stdout.splitlines()] if out.returncode == 0 else []


def test_exec_paths_through_a_real_cri(tmp_path_factory):
    """containerd 2.x with its CRI plugin (tests/harness/containerd2.py), driven by crictl as a kubelet would:
    `crictl exec` comes with the CRI's exec id (via cri, no alert); `ctr -n k8s.io task exec` into the same
    container is direct, with the alert. Also the CRI's container records: created, started, exited, deleted."""
    from tests.harness.containerd2 import missing_requirements, running_containerd2
    from tests.harness.oci import build_image

    why = missing_requirements()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("lc-cd2")
    with running_containerd2(base / "cd") as cd:
        image = cd.import_image(build_image(base / "img.tar", "nodewarden.test/lifecycle-cri:1"))
        records = Records()
        lc = Lifecycle(LifecycleConfig(), emit=records)
        lc.start()
        watcher = ContainerWatcher(ContainerdConfig(socket=str(cd.socket), backoff_min=0.05, backoff_max=0.5),
                                   ContainerTable(), lifecycle=lc)
        watcher.start()
        try:
            assert watcher.wait_synced(20), watcher.stats()
            pod = cd.run_pod()
            created = cd.create(pod, image, "/bin/sleep", "600")
            assert created.ok, created.error
            cid = created.id
            cd.start_container(cid)
            assert records.wait(cid, "container.started", 30), records.names(cid)
            cd.crictl("exec", cid, "sh", "-c", "sleep 1; true", timeout=30)
            via_cri = records.wait(cid, "container.exec", 15)
            cd.ctr("tasks", "exec", "--exec-id", "debug-shell", cid, "sh", "-c", "sleep 1; true")
            alert = records.wait(cid, DIRECT_EXEC_RULE, 15)
            cd.remove_pod(pod)
            assert records.wait(cid, "container.deleted", 30), records.names(cid)
        finally:
            watcher.stop()
            lc.stop()
    assert via_cri is not None, records.names(cid)
    assert (via_cri.via, len(via_cri.exec_id), via_cri.argv) == ("cri", 64, ("sh", "-c", "sleep 1; true"))
    execs = [r for r in records.of(cid) if r.name == "container.exec"]
    assert [(r.via, r.exec_id) for r in execs][1] == ("direct", "debug-shell")
    assert alert is not None and alert.container.id == cid
    assert records.names(cid).count(DIRECT_EXEC_RULE) == 1
    names = records.names(cid)
    for name in ("container.created", "container.started", "container.exited", "container.deleted"):
        assert name in names, names
    assert all(r.container.image == image.name for r in records.of(cid) if not isinstance(r, AlertEvent))
