"""agent/enrich/lifecycle.py on synthetic notices (as the containerd watcher makes them): the record each
becomes, exit status -> signal, OOM marking the next exit, restart loops (exactly one alert per loop, a new
loop after a quiet window), the exec's path (CRI, direct, plain containerd), alert_on, bounded maps, the
queue's drops, and the null object."""

from __future__ import annotations

import threading
import time

import pytest

from agent.config import ConfigError, LifecycleConfig
from agent.enrich.lifecycle import (
    DIRECT_EXEC_RULE,
    EVENT_NAMES,
    LIFECYCLE_RULE,
    LOOP_RULE,
    OOM_RULE,
    Lifecycle,
    Notice,
    NullLifecycle,
    RestartTracker,
    build,
    exec_via,
    restart_key,
    signal_of,
)
from agent.events import (
    AlertEvent,
    ContainerCreated,
    ContainerDeleted,
    ContainerExec,
    ContainerExited,
    ContainerInfo,
    ContainerOOM,
    ContainerStarted,
    ImageDeleted,
    ImagePulled,
)

CRI_LABELS = (("io.kubernetes.container.name", "app"), ("io.kubernetes.pod.name", "web-1"),
              ("io.kubernetes.pod.namespace", "shop"))
POD = ContainerInfo(id="c1", name="app", image="reg/web:1", image_digest="sha256:" + "a" * 64, namespace="k8s.io",
                    pod_name="web-1", pod_namespace="shop", labels=CRI_LABELS)
PLAIN = ContainerInfo(id="job-1", image="busybox:1", namespace="default")
CRI_EXEC_ID = "0123456789abcdef" * 4


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Sink:
    """What the lifecycle emitter hands on, collected (the pipeline's emit in the agent)."""

    def __init__(self):
        self.got: list = []
        self.cv = threading.Condition()

    def __call__(self, rec):
        with self.cv:
            self.got.append(rec)
            self.cv.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list:
        with self.cv:
            self.cv.wait_for(lambda: len(self.got) >= n, timeout)
            return list(self.got)


def _run(lc: Lifecycle, *notices: Notice) -> list:
    """The records the notices become, in order (drained from the queue without the emitter thread)."""
    for n in notices:
        lc.notice(n)
    out = []
    while not lc._q.empty():
        out.append(lc._q.get_nowait())
    return out


def _lc(clock=None, **cfg) -> Lifecycle:
    return Lifecycle(LifecycleConfig(**cfg), emit=lambda rec: None, clock=clock or Clock())


def test_each_container_notice_becomes_its_record():
    lc = _lc()
    recs = _run(lc, Notice("created", 1, "k8s.io", POD, "c1"), Notice("started", 2, "k8s.io", POD, "c1", pid=42),
                Notice("exited", 3, "k8s.io", POD, "c1", pid=42, exit_status=0),
                Notice("deleted", 4, "k8s.io", POD, "c1"))
    assert [type(r) for r in recs] == [ContainerCreated, ContainerStarted, ContainerExited, ContainerDeleted]
    assert [r.name for r in recs] == ["container.created", "container.started", "container.exited",
                                      "container.deleted"]
    assert [r.ts_ns for r in recs] == [1, 2, 3, 4]
    assert all(r.container is POD for r in recs)
    assert recs[1].pid == 42
    assert (recs[2].exit_code, recs[2].signal, recs[2].oom_killed) == (0, 0, False)


def test_a_container_the_table_does_not_know_keeps_its_id_and_namespace():
    (rec,) = _run(_lc(), Notice("exited", 5, "default", None, "gone-1", exit_status=3))
    assert (rec.container.id, rec.container.namespace, rec.exit_code) == ("gone-1", "default", 3)


@pytest.mark.parametrize("status,signal", [(0, 0), (1, 0), (128, 0), (129, 1), (137, 9), (143, 15), (192, 64),
                                           (193, 0), (255, 0), (None, 0)])
def test_signal_of_the_exit_status(status, signal):
    assert signal_of(status) == signal


def test_oom_record_alert_and_the_exit_that_follows():
    lc = _lc()
    recs = _run(lc, Notice("started", 1, "default", PLAIN, "job-1", pid=7), Notice("oom", 2, "default", PLAIN, "job-1"),
                Notice("oom", 3, "default", PLAIN, "job-1"),
                Notice("exited", 4, "default", PLAIN, "job-1", pid=7, exit_status=137))
    kinds = [type(r) for r in recs]
    assert kinds == [ContainerStarted, ContainerOOM, AlertEvent, ContainerOOM, ContainerExited]
    alert = recs[2]
    assert (alert.rule_id, alert.severity.label, alert.container) == (OOM_RULE, "medium", PLAIN)
    assert "job-1" in alert.output
    exited = recs[-1]
    assert (exited.exit_code, exited.signal, exited.oom_killed) == (137, 9, True)
    # the next task of the same container starts clean, and its first OOM alerts again
    recs = _run(lc, Notice("exited", 5, "default", PLAIN, "job-1", exit_status=137),
                Notice("oom", 6, "default", PLAIN, "job-1"))
    assert recs[0].oom_killed is False
    assert [r.rule_id for r in recs if isinstance(r, AlertEvent)] == [OOM_RULE]


def test_restart_loop_alerts_once_per_loop():
    clock = Clock()
    lc = _lc(clock, restart_exits=3, restart_window_s=60.0)
    alerts = []
    for i in range(6):  # six exits 10 s apart: one loop, one alert at the third
        clock.t += 10
        recs = _run(lc, Notice("exited", i, "default", PLAIN, "job-1", exit_status=1))
        alerts += [(i, r) for r in recs if isinstance(r, AlertEvent)]
    assert [i for i, _ in alerts] == [2]
    a = alerts[0][1]
    assert (a.rule_id, a.container, a.severity.label) == (LOOP_RULE, PLAIN, "medium")
    assert "3 times within 60 s" in a.output and "status 1" in a.output
    clock.t += 61  # a whole window quiet: the loop is over; a new one alerts again
    got = []
    for i in range(3):
        clock.t += 1
        got += [r for r in _run(lc, Notice("exited", 10 + i, "default", PLAIN, "job-1", exit_status=2))
                if isinstance(r, AlertEvent)]
    assert [r.rule_id for r in got] == [LOOP_RULE]


def test_exits_spread_wider_than_the_window_are_no_loop():
    clock = Clock()
    lc = _lc(clock, restart_exits=3, restart_window_s=60.0)
    for i in range(10):
        clock.t += 31  # two exits per window at most
        assert not [r for r in _run(lc, Notice("exited", i, "default", PLAIN, "job-1")) if isinstance(r, AlertEvent)]


def test_restarts_of_a_pod_container_count_across_container_ids():
    """Kubernetes gives every restart a new container id: the loop is the pod's container name."""
    clock = Clock()
    lc = _lc(clock, restart_exits=3, restart_window_s=300.0)
    alerts = []
    for i in range(3):
        clock.t += 20
        c = ContainerInfo(id=f"c{i}", name="app", namespace="k8s.io", pod_name="web-1", pod_namespace="shop",
                          labels=CRI_LABELS)
        alerts += [r for r in _run(lc, Notice("exited", i, "k8s.io", c, c.id, exit_status=1))
                   if isinstance(r, AlertEvent)]
    assert len(alerts) == 1 and alerts[0].container.id == "c2"
    other = ContainerInfo(id="d", name="sidecar", namespace="k8s.io", pod_name="web-1", pod_namespace="shop")
    assert restart_key(other) != restart_key(POD)
    assert restart_key(PLAIN) == ("default", "", "", "job-1")


def test_tracker_is_bounded_and_checks_its_settings():
    t = RestartTracker(2, 10.0, max_keys=3)
    for i in range(10):
        t.exited(("ns", "", "", f"c{i}"), float(i))
    assert len(t) == 3 and t.evicted == 7
    assert t.exited(("ns", "", "", "c9"), 9.5) == 2  # the newest key was kept
    with pytest.raises(ConfigError, match="restart_exits must be 2 or more"):
        RestartTracker(1, 10.0)
    with pytest.raises(ConfigError, match="restart_window_s must be more than 0"):
        RestartTracker(3, 0.0)


def test_oom_marks_are_bounded():
    lc = _lc(max_tracked=4)
    for i in range(20):
        _run(lc, Notice("oom", i, "default", None, f"c{i}"))
    assert len(lc._oom) == 4


def test_exec_paths():
    assert exec_via(POD, CRI_EXEC_ID) == "cri"
    assert exec_via(POD, "x-2da54d1e05") == "direct"
    assert exec_via(POD, CRI_EXEC_ID.upper()) == "direct"
    assert exec_via(PLAIN, "anything") == "containerd"
    lc = _lc()
    recs = _run(lc, Notice("exec", 1, "k8s.io", POD, "c1", pid=9, exec_id=CRI_EXEC_ID, argv=("sh", "-c", "id")))
    assert [type(r) for r in recs] == [ContainerExec]
    assert (recs[0].exec_id, recs[0].argv, recs[0].pid, recs[0].via) == (CRI_EXEC_ID, ("sh", "-c", "id"), 9, "cri")
    recs = _run(lc, Notice("exec", 2, "k8s.io", POD, "c1", pid=10, exec_id="debug1", argv=("sh",)))
    assert [type(r) for r in recs] == [ContainerExec, AlertEvent]
    alert = recs[1]
    assert (alert.rule_id, alert.tactics, alert.techniques) == (DIRECT_EXEC_RULE, ("Execution",), ("T1609",))
    assert "'debug1'" in alert.output and "shop/web-1/app" in alert.output
    recs = _run(lc, Notice("exec", 3, "default", PLAIN, "job-1", pid=11, exec_id="x1"))
    assert [r.via for r in recs] == ["containerd"]


def test_image_notices():
    lc = _lc()
    recs = _run(lc, Notice("image_pulled", 1, "default", image="reg/web:1", digest="sha256:b",
                           previous_digest="sha256:a"),
                Notice("image_deleted", 2, "default", image="reg/web:1", digest="sha256:b"))
    assert [type(r) for r in recs] == [ImagePulled, ImageDeleted]
    assert (recs[0].image, recs[0].namespace, recs[0].digest, recs[0].previous_digest) == (
        "reg/web:1", "default", "sha256:b", "sha256:a")
    assert [r.name for r in recs] == ["image.pulled", "image.deleted"]


def test_alert_on_names_raise_the_lifecycle_alert():
    lc = _lc(alert_on=("container.started", "image.pulled", "container.exec"))
    recs = _run(lc, Notice("started", 1, "default", PLAIN, "job-1", pid=3),
                Notice("created", 2, "default", PLAIN, "job-1"),
                Notice("image_pulled", 3, "default", image="busybox:1", digest="sha256:c"),
                Notice("exec", 4, "default", PLAIN, "job-1", exec_id="e"))
    alerts = [r for r in recs if isinstance(r, AlertEvent)]
    assert [a.rule_id for a in alerts] == [LIFECYCLE_RULE] * 3
    assert [a.rule_name for a in alerts] == ["Lifecycle: container.started", "Lifecycle: image.pulled",
                                             "Lifecycle: container.exec"]
    assert alerts[1].container.image == "busybox:1" and alerts[1].container.image_digest == "sha256:c"
    assert alerts[2].techniques == ("T1609",) and alerts[0].techniques == ()
    assert set(EVENT_NAMES) >= {"container.started", "image.pulled", "container.exec", "container.oom"}


def test_alert_on_killed_is_an_exit_by_a_signal():
    lc = _lc(alert_on=("container.killed",))
    recs = _run(lc, Notice("exited", 1, "default", PLAIN, "job-1", exit_status=0),
                Notice("exited", 2, "default", PLAIN, "job-1", exit_status=143))
    alerts = [r for r in recs if isinstance(r, AlertEvent)]
    assert [(a.rule_id, a.rule_name, a.output) for a in alerts] == [
        (LIFECYCLE_RULE, "Lifecycle: container.killed", "container.killed job-1 (signal 15)")]
    lc = _lc(alert_on=("container.exited", "container.killed"))  # both named: one alert per exit
    recs = _run(lc, Notice("exited", 3, "default", PLAIN, "job-1", exit_status=137))
    assert [r.rule_name for r in recs if isinstance(r, AlertEvent)] == ["Lifecycle: container.exited"]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"lifecycle.alert_on: unknown event name 'container.start' \(known: "):
        _lc(alert_on=("container.start",))
    with pytest.raises(ConfigError, match="restart_exits"):
        build(LifecycleConfig(restart_exits=0), emit=print)


def test_an_unknown_action_is_counted_not_raised():
    lc = _lc()
    assert _run(lc, Notice("paused", 1, "default", PLAIN, "job-1")) == []
    assert lc.counters["bad_notices"] == 1


def test_full_queue_drops_and_counts():
    lc = _lc(queue_size=2)
    for i in range(5):
        lc.notice(Notice("created", i, "default", PLAIN, "job-1"))
    assert lc._q.qsize() == 2
    assert lc.drops() == {"lifecycle.queue": 3, "lifecycle.emit": 0}


def test_emitter_thread_hands_records_on_and_survives_a_failing_output():
    sink = Sink()
    fails = {"n": 1}

    def emit(rec):
        if fails["n"]:
            fails["n"] -= 1
            raise RuntimeError("output down")
        sink(rec)

    lc = Lifecycle(LifecycleConfig(), emit=emit, argv_of=lambda pid: ("/bin/sh", "-i") if pid == 9 else ())
    lc.start()
    try:
        lc.notice(Notice("created", 1, "default", PLAIN, "job-1"))  # refused by the output: counted
        lc.notice(Notice("oom", 2, "default", PLAIN, "job-1"))
        lc.notice(Notice("exec", 3, "default", PLAIN, "job-1", pid=9, exec_id="e1"))  # argv from the table
        lc.notice(Notice("exec", 4, "default", PLAIN, "job-1", pid=8, exec_id="e2", argv=("ls",)))
        got = sink.wait(4)
    finally:
        lc.stop()
    assert [type(r) for r in got] == [ContainerOOM, AlertEvent, ContainerExec, ContainerExec]
    assert got[2].argv == ("/bin/sh", "-i") and got[3].argv == ("ls",)
    assert lc.counters["emit_errors"] == 1 and lc.drops()["lifecycle.emit"] == 1
    assert lc.counters["records"] == 3 and lc.counters["alerts"] == 1
    assert lc._thread is None


def test_stop_hands_over_what_is_queued():
    sink = Sink()
    lc = Lifecycle(LifecycleConfig(), emit=sink)
    for i in range(50):
        lc.notice(Notice("created", i, "default", PLAIN, "job-1"))
    lc.start()
    lc.stop()
    assert len(sink.got) == 50


def test_null_object_and_build():
    null = build(LifecycleConfig(enabled=False), emit=print)
    assert isinstance(null, NullLifecycle) and not null.enabled
    null.notice(Notice("created", 1, "default", PLAIN, "job-1"))
    null.start()
    null.stop()
    assert null.drops() == {} and null.stats() == {}
    lc = build(LifecycleConfig(), emit=print)
    assert isinstance(lc, Lifecycle) and lc.enabled
    assert lc.stats()["tracked"] == 0


def test_notice_is_cheap():
    """On the watcher thread: a notice costs microseconds, not the outputs' time."""
    lc = _lc(queue_size=100_000)
    t0 = time.perf_counter()
    for i in range(20_000):
        lc.notice(Notice("exited", i, "default", PLAIN, f"c{i % 500}", exit_status=1))
    per = (time.perf_counter() - t0) / 20_000
    assert per < 200e-6, per


def test_flat_records_and_text_lines():
    """record.py's keys for each kind (the container keys every record uses, then the step's own) and the text
    log's line."""
    from agent.outputs.log import TextLog
    from agent.outputs.record import flatten

    ts = 1_764_000_000_000_000_000
    exited = flatten(ContainerExited(ts, POD, pid=42, exit_code=137, signal=9, oom_killed=True))
    assert {k: exited[k] for k in ("event.name", "event.severity", "container.id", "container.name",
                                   "container.image.name", "container.image.digest", "k8s.pod.name",
                                   "k8s.namespace.name", "containerd.namespace", "process.pid", "container.exit.code",
                                   "container.exit.signal", "container.exit.oom_killed")} == {
        "event.name": "container.exited", "event.severity": "medium", "container.id": "c1", "container.name": "app",
        "container.image.name": "reg/web:1", "container.image.digest": POD.image_digest, "k8s.pod.name": "web-1",
        "k8s.namespace.name": "shop", "containerd.namespace": "k8s.io", "process.pid": 42,
        "container.exit.code": 137, "container.exit.signal": 9, "container.exit.oom_killed": True}
    assert TextLog.format(exited).endswith("container.exited code=137 signal=9 oom_killed pid=42 app "
                                           "[c1 reg/web:1 pod=shop/web-1]")
    clean = flatten(ContainerExited(ts, PLAIN, exit_code=0))
    assert (clean["event.severity"], clean["container.exit.oom_killed"], "container.exit.signal" in clean) == (
        "info", False, False)
    assert flatten(ContainerExited(ts, PLAIN, exit_code=2))["event.severity"] == "low"
    ex = flatten(ContainerExec(ts, POD, pid=9, exec_id="dbg", argv=("sh", "-c", "id"), via="direct"))
    assert (ex["container.exec.id"], ex["container.exec.via"], ex["process.command_line"], ex["event.severity"]) == (
        "dbg", "direct", "sh -c id", "low")
    assert "id=dbg via=direct pid=9 sh -c id" in TextLog.format(ex)
    assert flatten(ContainerOOM(ts, PLAIN))["event.severity"] == "medium"
    img = flatten(ImagePulled(ts, "reg/web:1", "k8s.io", "sha256:b", "sha256:a"))
    assert {k: v for k, v in img.items() if k != "timestamp"} == {
        "event.name": "image.pulled", "event.severity": "info", "container.image.name": "reg/web:1",
        "container.image.digest": "sha256:b", "image.previous_digest": "sha256:a", "containerd.namespace": "k8s.io"}
    assert TextLog.format(img).endswith("image.pulled     reg/web:1 sha256:b (was sha256:a) ns=k8s.io")
    alert = flatten(_run(_lc(), Notice("oom", ts, "k8s.io", POD, "c1"))[1])
    assert (alert["rule.id"], alert["container.id"], alert["k8s.pod.name"]) == (OOM_RULE, "c1", "web-1")
