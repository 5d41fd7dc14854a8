"""Detection rules with `action: kill` (issue 10): the rule's validation, which part of a condition the
kernel decides at exec (agent/enforce/detectkill.py), and the user-space kill of real processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import textwrap
import time

import pytest
import yaml

from agent.detect.engine import build
from agent.enforce.detectkill import KillStage, place, setup
from agent.enforce.execkill import KernelKill
from agent.enforce.userkill import ProcessKiller
from agent.events import EnforcementEvent, Enriched, Op
from agent.policy import rules
from agent.policy.loader import PolicyError, parse
from tests.unit.detect_events import decode, file_rec
from tests.unit.replay_records import exec_rec, exit_rec


def _rules(text: str, name: str = "mine.yaml") -> tuple[rules.RuleSet, list[str]]:
    return rules.load_files([], extra=yaml.compose(textwrap.dedent(text), Loader=yaml.SafeLoader), extra_name=name)


def _section(text: str) -> rules.DetectSection:
    rs, errors = _rules(text)
    assert errors == []
    return rules.DetectSection(ruleset=rs)


def _place(condition: str, scope: str = "container", macros=None, lists=None, **kw):
    spec = rules.RuleSpec(id="k", name="k", description="", condition=condition, severity=rules.Severity.HIGH,
                          scope=scope, action="kill", **kw)
    return place(spec, macros or {}, lists or {})


# -- validation ----------------------------------------------------------------------------------------


def test_kill_needs_scope_container_or_allow_host_kill():
    rs, errors = _rules("""\
        - rule: on.both
          condition: event.name = process.exec
          severity: high
          action: kill
        - rule: on.host
          condition: event.name = process.exec
          severity: high
          scope: host
          action: kill
        - rule: meant
          condition: event.name = process.exec
          severity: high
          action: kill
          allow_host_kill: true
        - rule: boxed
          condition: event.name = process.exec
          severity: high
          scope: container
          action: kill
        """)
    assert errors == [
        "mine.yaml:1:3: rule on.both: action kill with scope both also kills host processes: set scope: container, "
        "or allow_host_kill: true to mean it",
        "mine.yaml:5:3: rule on.host: action kill with scope host also kills host processes: set scope: container, "
        "or allow_host_kill: true to mean it"]
    by_id = {r.id: r for r in rs.rules}
    assert by_id["meant"].action == "kill" and by_id["meant"].allow_host_kill
    assert by_id["boxed"].action == "kill" and not by_id["boxed"].allow_host_kill


def test_kill_scope_is_checked_after_merging():
    """A later item that turns an alert rule into a kill rule is held to the same check, and a later
    item's allow_host_kill satisfies it."""
    _rs, errors = _rules("""\
        - rule: r
          condition: event.name = process.exec
          severity: high
        - rule: r
          action: kill
          override: {action: replace}
        - rule: s
          condition: event.name = process.exec
          severity: high
          action: kill
          scope: container
        - rule: s
          scope: both
          allow_host_kill: true
          override: {scope: replace}
        """)
    assert len(errors) == 1 and errors[0].startswith("mine.yaml:1:3: rule r: action kill with scope both")


def test_allow_host_kill_must_be_a_boolean():
    _rs, errors = _rules("- rule: r\n  condition: x\n  severity: low\n  allow_host_kill: maybe\n")
    assert errors == ["mine.yaml:4:20: rule r.allow_host_kill: expected true or false, got 'maybe'"]


def test_a_policy_with_a_kill_rule_loads(tmp_path):
    p = parse(textwrap.dedent("""\
        detect:
          rules:
            - rule: kill.miner
              condition: event.name = process.exec and process.name in (xmrig)
              severity: critical
              scope: container
              action: kill
        """), str(tmp_path / "policy.yaml"))
    assert [r.action for r in p.detect.ruleset.rules if r.id == "kill.miner"] == ["kill"]


def test_a_kill_rule_on_exits_only_is_refused():
    section = _section("""\
        - rule: kill.exit
          condition: event.name = process.exit
          severity: high
          scope: container
          action: kill
        """)
    det, errors = build(section)
    assert errors == []
    kills = setup(det, section)
    assert kills.errors == ("mine.yaml:1:3: rule kill.exit: action kill on a rule that matches only process.exit: "
                            "the process is gone by then",)


def test_the_agent_refuses_a_policy_whose_kill_rule_cannot_kill(tmp_path):
    from agent.config import Config
    from agent.node import Agent

    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent("""\
        detect:
          rules:
            - rule: kill.exit
              condition: event.name = process.exit
              severity: high
              scope: container
              action: kill
        """))
    cfg = Config()
    cfg.agent.policy_file = str(policy)
    cfg.agent.state_dir = str(tmp_path / "state")
    cfg.containers.enabled = False
    with pytest.raises(PolicyError) as e:
        Agent(cfg, lambda records: None)
    assert "rule kill.exit: action kill on a rule that matches only process.exit" in str(e.value)


# -- what the kernel decides ---------------------------------------------------------------------------


def test_names_of_an_exec_rule_become_deny_name_entries():
    p = _place("event.name = process.exec and process.name in (nwkillme, xmrig) and process.name = minerd")
    assert p.kernel is None  # two tests beside the kind: the kernel cannot decide their and
    p = _place("event.name = process.exec and (process.name in (nwkillme, xmrig) or process.name = minerd)")
    assert p.kernel == KernelKill("k", "container", names=(b"nwkillme", b"xmrig", b"minerd")) and p.user == ""


def test_falco_macros_lists_and_container_test_expand():
    macros = {"spawned_process": "evt.type in (execve, execveat) and evt.dir=<", "container": "container.id != host"}
    lists = {"miners": ["xmrig", "more_miners"], "more_miners": ["minerd"]}
    p = _place("spawned_process and container and proc.name in (miners)", scope="both", macros=macros, lists=lists)
    assert p.kernel == KernelKill("k", "container", names=(b"xmrig", b"minerd")) and p.user == ""


def test_paths_prefixes_pmatch_and_a_trailing_glob():
    p = _place("evt.type = execve and (proc.exepath = /tmp/x or proc.exepath startswith /dev/shm/ "
               "or proc.exepath pmatch (/opt/bad/) or proc.exepath glob '/var/tmp/*' "
               "or proc.exepath startswith '/run/a*')", scope="host", allow_host_kill=True)
    assert p.kernel == KernelKill("k", "host", paths=(b"/tmp/x", b"/opt/bad"),
                                  prefixes=(b"/dev/shm/", b"/opt/bad/", b"/var/tmp/", b"/run/a*"))
    assert p.user == ""


def test_a_rule_without_an_event_kind_still_kills_its_execs_in_the_kernel():
    """`process.name = xmrig` matches every event of such a process, its exec among them: the exec is
    killed in the kernel, anything else it does (had it started before the rule) from user space."""
    assert _place("process.name = xmrig").kernel == KernelKill("k", "container", names=(b"xmrig",))


def test_an_or_is_split_between_the_kernel_and_user_space():
    p = _place("event.name = process.exec and (process.name = a or process.args contains evil "
               "or proc.exepath glob '/x/*/y')")
    assert p.kernel == KernelKill("k", "container", names=(b"a",))
    assert p.user == "2 alternatives the kernel cannot decide"


@pytest.mark.parametrize("condition, why", [
    ("event.name = process.exec", "would kill every exec"),
    ("event.name = process.exec and process.name = a and not process.parent.name = bash", "more than one test"),
    ("event.name = file.open and process.name = a", "never matches an exec"),
    ("event.name != process.exec and process.name = a", "never matches an exec"),
    ("event.name = process.exec and process.name = averyveryverylongname", "no test the kernel can decide"),
    ("event.name = process.exec and process.name = 'a\\\\b'", "no test the kernel can decide"),
    ("event.name = process.exec and process.name startswith a", "no test the kernel can decide"),
    ("event.name = process.exec and proc.exepath pmatch (/home/*/bin)", "no test the kernel can decide"),
    ("event.name = process.exec and proc.exepath glob '/a/*.sh'", "no test the kernel can decide"),
])
def test_what_stays_in_user_space(condition, why):
    p = _place(condition)
    assert p.kernel is None and why in p.user, p


def test_an_exception_keeps_the_rule_in_user_space():
    rs, errors = _rules("""\
        - rule: k
          condition: event.name = process.exec and process.name = nwkillme
          severity: high
          scope: container
          action: kill
          exceptions:
            - name: ok
              fields: [process.parent.name]
              values: [[make]]
        """)
    assert errors == []
    p = place(rs.rules[0], rs.macros, rs.lists)
    assert p.kernel is None and "more than one test" in p.user


def test_a_host_rule_with_a_container_test_never_matches():
    p = _place("event.name = process.exec and container.id != host and process.name = a", scope="host",
               allow_host_kill=True)
    assert p.kernel is None and "never matches" in p.user


def test_setup_gathers_kernel_entries_and_wraps_the_detector_only_when_a_rule_kills():
    section = _section("""\
        - rule: alert.only
          condition: event.name = process.exec and process.name = a
          severity: low
        - rule: kill.exec
          condition: event.name = process.exec and process.name = nwkillme
          severity: high
          scope: container
          action: kill
        - rule: kill.write
          condition: event.name = file.open and file.open.write = true and file.path = /etc/x
          severity: high
          action: kill
          allow_host_kill: true
        """)
    det, errors = build(section)
    kills = setup(det, section)
    assert errors == [] and kills.errors == ()
    assert isinstance(kills.detector, KillStage)
    assert kills.kernel == (KernelKill("kill.exec", "container", names=(b"nwkillme",)),)
    assert [(p.rule_id, p.kernel is not None) for p in kills.placements] == [("kill.exec", True), ("kill.write", False)]
    assert kills.describe() == "2 detection kill rules: 1 at exec in the kernel, 1 from user space"
    plain = _section("- rule: a\n  condition: event.name = process.exec\n  severity: low\n")
    det, _ = build(plain)
    assert setup(det, plain).detector is det


# -- user-space kills of real processes ----------------------------------------------------------------


@pytest.fixture
def child():
    p = subprocess.Popen(["sleep", "30"])
    time.sleep(0.05)  # started: its /proc start time is before the events the tests make
    yield p
    if p.poll() is None:
        p.kill()
    p.wait()


def _event(raw: bytes) -> Enriched:
    return Enriched(decode(raw), None, None, None)


_WRITE_RULES = """\
- rule: kill.write
  condition: event.name = file.open and file.open.write = true and file.path = /tmp/nw-kill-tagged
  severity: high
  action: kill
  allow_host_kill: true
"""


def _stage(text: str = _WRITE_RULES) -> KillStage:
    section = _section(text)
    det, errors = build(section)
    assert errors == []
    stage = setup(det, section).detector
    assert isinstance(stage, KillStage)
    return stage


def test_a_write_matching_a_kill_rule_kills_its_process(child):
    stage = _stage()
    en = _event(file_rec(Op.FILE_OPEN, "/tmp/nw-kill-tagged", flags=os.O_WRONLY, ret=3, pid=child.pid, comm=b"sleep"))
    out = stage.evaluate(en)
    assert [type(x).__name__ for x in out] == ["AlertEvent", "EnforcementEvent"]
    alert, block = out
    assert alert.rule_id == "kill.write" and alert.action == "kill"
    assert isinstance(block, EnforcementEvent)
    assert (block.point, block.action, block.outcome, block.rule_name, block.rule_category) == \
        ("user.kill", "kill", "killed", "kill.write", "detect")
    assert block.subject is en and 0 <= block.duration_ms < 5000
    assert child.wait(timeout=5) == -signal.SIGKILL
    # A later event of the same process, from before its kill, adds no second report (its alert folds)
    assert stage.evaluate(en) == []
    assert stage.kill_counts["killed"] == 1 and stage.kill_counts["repeat"] == 1


def test_a_read_does_not_match_and_nothing_is_killed(child):
    stage = _stage()
    en = _event(file_rec(Op.FILE_OPEN, "/tmp/nw-kill-tagged", flags=os.O_RDONLY, ret=3, pid=child.pid))
    assert stage.evaluate(en) == []
    assert child.poll() is None


def test_folding_does_not_spare_a_second_process():
    """The alert of the second match folds into the first; its process is killed all the same."""
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    time.sleep(0.05)
    try:
        stage = _stage()
        blocks = []
        for p in procs:
            en = _event(file_rec(Op.FILE_OPEN, "/tmp/nw-kill-tagged", flags=os.O_WRONLY, ret=3, pid=p.pid))
            blocks += [x for x in stage.evaluate(en) if isinstance(x, EnforcementEvent)]
        assert [b.outcome for b in blocks] == ["killed", "killed"]
        assert [p.wait(timeout=5) for p in procs] == [-signal.SIGKILL, -signal.SIGKILL]
        assert stage.drops()["detect.folded"] == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_an_exec_the_kernel_killed_and_an_exit_are_not_killed_again(child):
    stage = _stage("""\
        - rule: kill.exec
          condition: process.name = sleep
          severity: high
          action: kill
          allow_host_kill: true
        """)
    # action 2 (killed in the kernel), reason name, index 0x8000: the first detection entry
    ev = decode(exec_rec("/bin/sleep", ["sleep", "30"], pid=child.pid, comm=b"sleep"))
    killed = Enriched(dataclasses.replace(ev, action=2, rule=(1 << 16) | 0x8000), None, None, None)
    assert [type(x).__name__ for x in stage.evaluate(killed)] == ["AlertEvent"]
    assert stage.kill_counts["kernel"] == 1
    exited = _event(exit_rec(0, pid=child.pid, comm=b"sleep"))
    assert not any(isinstance(x, EnforcementEvent) for x in stage.evaluate(exited))  # its alert folds
    assert stage.kill_counts["killed"] == stage.kill_counts["failed"] == 0
    assert child.poll() is None


def test_the_killer_never_signals_a_newer_process_on_the_same_pid(child):
    """An event from before the process at that pid started is another process's: not signalled."""
    k = ProcessKiller()
    assert k.kill(child.pid, time.time_ns() - 10_000_000_000) == \
        "kill failed: the pid belongs to a newer process now (not signalled)"
    # the process table's start_ns bounds it too (within procfs's one-second rounding)
    assert k.kill(child.pid, time.time_ns(), start_ns=time.time_ns() - 10_000_000_000).startswith(
        "kill failed: the pid belongs to a newer process")
    assert child.poll() is None
    assert k.kill(child.pid, time.time_ns()) == "killed"
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_the_killer_refuses_init_and_itself_and_reports_the_dead():
    k = ProcessKiller()
    assert k.kill(1, time.time_ns()) == "kill failed: pid 1 is never killed"
    assert k.kill(os.getpid(), time.time_ns()) == "kill failed: the agent does not kill itself"
    zombie = subprocess.Popen(["true"])
    time.sleep(0.2)  # exited, not reaped: a zombie
    try:
        assert k.kill(zombie.pid, time.time_ns()) == "kill failed: the process had exited"
    finally:
        zombie.wait()
    assert k.kill(zombie.pid, time.time_ns()) == "kill failed: the process had exited"
