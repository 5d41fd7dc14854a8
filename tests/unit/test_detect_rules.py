"""Detection rules as policy (agent/policy/rules.py): our format and Falco's, merging by name,
exceptions, and errors that name file:line:col (a broken rule refuses the policy whole)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from agent.detect.engine import build
from agent.policy import rules
from agent.policy.loader import PolicyError, parse
from agent.policy.store import PolicyStore
from agent.vocab import Severity


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def _policy(tmp_path, detect: str) -> str:
    return _write(tmp_path, "policy.yaml", "detect:\n" + textwrap.indent(textwrap.dedent(detect), "  "))


def test_bundled_rules_load_compile_and_carry_mitre_tags():
    section, errors = rules.default_section()
    assert errors == []
    det, errors = build(section)
    assert errors == [] and det.result.skipped == []
    ids = {r.spec.id for r in det.rules}
    assert len(ids) == len(det.rules) >= 15
    for r in det.rules:
        assert r.techniques, f"{r.spec.id} has no MITRE technique"
        assert r.tactics, f"{r.spec.id} has no MITRE tactic"
        assert r.spec.description and r.spec.output


def test_no_detect_section_means_bundled_rules_on(tmp_path):
    det, errors = build(parse("categories: {}\n").detect)
    assert errors == [] and det.enabled and det.result.rules >= 15


def test_detect_disabled_is_the_null_object(tmp_path):
    det, errors = build(parse("detect:\n  enabled: false\n").detect)
    assert errors == [] and not det.enabled and det.evaluate(None) == []


def test_user_file_appends_overrides_and_disables_by_id_and_tag(tmp_path):
    _write(tmp_path, "mine.yaml", """\
        - list: nw_network_tools
          items: [mytool]
          append: true
        - rule: nw.network_tool_run
          severity: high
          override: {severity: replace}
        - rule: nw.write_below_root
          enabled: false
        - rule: my.own
          name: Mine
          description: mine
          condition: event.name = process.exec and process.name = mine
          severity: low
          tags: [execution, T1059]
          output: [process.name]
        """)
    pol = _policy(tmp_path, """\
        rules_files: [mine.yaml]
        disable: {tags: [T1496]}
        """)
    from agent.policy.loader import load

    det, errors = build(load(pol).detect)
    assert errors == []
    by_id = {r.spec.id: r for r in det.rules}
    assert by_id["nw.network_tool_run"].spec.severity is Severity.HIGH
    assert "nw.write_below_root" not in by_id  # enabled: false
    assert "nw.miner_command_line" not in by_id and "nw.miner_stratum_port" not in by_id  # tag T1496
    assert by_id["my.own"].spec.severity is Severity.LOW
    section = load(pol).detect
    assert "mytool" in section.ruleset.lists["nw_network_tools"] and "nc" in section.ruleset.lists["nw_network_tools"]


def test_enable_by_id_turns_on_a_disabled_rule(tmp_path):
    _write(tmp_path, "r.yaml", """\
        - rule: x.off
          condition: event.name = process.exec
          severity: info
          enabled: false
        """)
    from agent.policy.loader import load

    pol = _policy(tmp_path, "rules_files: [r.yaml]\nenable: {ids: [x.off]}\n")
    det, _ = build(load(pol).detect)
    assert "x.off" in {r.spec.id for r in det.rules}


def test_exceptions_compile_into_the_condition():
    section = rules.DetectSection()
    ruleset, errors = rules.load_files([], extra=_node("""\
        - rule: r
          condition: event.name = process.exec
          severity: high
          exceptions:
            - name: pairs
              fields: [process.name, process.executable.path]
              comps: [=, startswith]
              values: [[apt, /usr/bin/], ["a\\"b", /x]]
            - name: names
              fields: process.name
              values: [dpkg, rpm]
        """))
    assert errors == []
    cond = ruleset.rules[0].full_condition
    assert cond == ('(event.name = process.exec) and not ((process.name = "apt" and process.executable.path '
                    'startswith "/usr/bin/") or (process.name = "a\\"b" and process.executable.path startswith '
                    '"/x")) and not (process.name in (dpkg, rpm))')
    assert section.ruleset is None


def _node(text: str):
    import yaml

    return yaml.compose(textwrap.dedent(text), Loader=yaml.SafeLoader)


@pytest.mark.parametrize("body, where, what", [
    ("- rule: r\n  condition: event.name = process.exec\n  severity: hgih\n", "3:13", "unknown severity 'hgih'"),
    ("- rule: r\n  condition: event.name = process.exec\n", "1:3", "needs a condition and a severity"),
    ("- rule: r\n  condition: x\n  severity: low\n  scope: pods\n", "4:10", "expected host or container or both"),
    ("- rule: r\n  condition: x\n  severity: low\n  colour: red\n", "4:3", "unknown key 'colour'"),
    ("- rule: r\n  severity: low\n  append: true\n  condition: and x\n", "1:3", "not defined"),
    ("- lisst: x\n", "1:3", "unknown item 'lisst'"),
    ("- rule: r\n  condition: x\n  severity: low\n  action: kill\n", "1:3",
     "action kill with scope both also kills host processes"),
    ("- rule: r\n  condition: x\n  severity: low\n  action: stop\n", "4:11", "expected alert or kill"),
    ("- rule: r\n  condition: x\n  severity: low\n  exceptions:\n    - name: e\n      fields: [a, b]\n"
     "      values: [[1]]\n", "7:16", "1 values for 2 fields"),
    ("- rule: [\n", "2:1", "invalid YAML"),
])
def test_structural_errors_name_file_line_col(tmp_path, body, where, what):
    f = _write(tmp_path, "bad.yaml", body)
    with pytest.raises(PolicyError) as e:
        parse(f"detect:\n  rules_files: [{f}]\n", str(tmp_path / "policy.yaml"))
    assert f"{f}:{where}:" in str(e.value) and what in str(e.value), str(e.value)


def test_a_bad_condition_names_its_line_and_reason(tmp_path):
    f = _write(tmp_path, "bad.yaml", """\
        - rule: r.good
          condition: event.name = process.exec
          severity: low
        - rule: r.bad
          condition: event.name = process.exec and proc.nme = x
          severity: low
        """)
    from agent.policy.loader import load

    det, errors = build(load(_policy(tmp_path, f"rules_files: [{f}]\n")).detect)
    assert len(errors) == 1 and errors[0].startswith(f"{f}:5:44: rule r.bad: ") and "proc.nme" in errors[0]


def test_policy_reload_with_a_broken_rule_keeps_the_rules_in_force(tmp_path):
    from agent.policy.loader import PolicyError as PE

    def check(policy):
        _det, errors = build(policy.detect)
        if errors:
            raise PE(errors)

    rejected = []
    good = "- rule: r1\n  condition: event.name = process.exec\n  severity: low\n"
    f = _write(tmp_path, "r.yaml", good)
    pol = _policy(tmp_path, "rules_files: [r.yaml]\n")
    store = PolicyStore(pol, on_reject=rejected.append, check=check)
    assert [r.id for r in store.current.detect.ruleset.rules if r.id == "r1"] == ["r1"]
    _write(tmp_path, "policy.yaml", "detect:\n  rules_files: [r.yaml]\n  fold_window: 5\n"
                                    "  rules:\n    - rule: r2\n      condition: process.name ===\n"
                                    "      severity: low\n")
    assert store.check() is False
    assert rejected and f"{pol}:6:33: rule r2" in rejected[0], rejected
    assert store.current.detect.fold_window == 60.0  # the policy in force stayed
    del f


FALCO = """\
- required_engine_version: 0.31.0
- list: shell_binaries
  items: [bash, sh, zsh]
- macro: spawned_process
  condition: (evt.type in (execve, execveat))
- macro: container
  condition: (container.id != host)
- rule: Shell In Test Container
  desc: a shell was spawned (test fixture, written for this test)
  condition: spawned_process and proc.name in (shell_binaries) and proc.pname = nwtestparent
  output: "Shell run (user=%user.name cmd=%proc.cmdline parent=%proc.pname unknown=%thread.cap_effective)"
  priority: WARNING
  tags: [process, mitre_execution, T1059.004]
- rule: Uses Thread Capabilities
  desc: needs a field we do not have
  condition: spawned_process and thread.cap_effective contains CAP_SYS_ADMIN
  output: "x %proc.name"
  priority: ERROR
- rule: Uses Binary Operator
  desc: needs an operator we do not have
  condition: spawned_process and proc.name bcontains 6e63
  output: "x %proc.name"
  priority: NOTICE
- rule: Audit Rule
  desc: another source
  condition: ka.verb = create
  output: "x"
  priority: INFO
  source: k8s_audit
- rule: Shell In Test Container
  append: true
  condition: and not proc.name = zsh
"""


def test_falco_rules_file_loads_runnable_rules_and_lists_the_others(tmp_path):
    f = _write(tmp_path, "falco_rules.yaml", FALCO)
    from agent.policy.loader import load

    section = load(_policy(tmp_path, f"rules_files: [{f}]\n")).detect
    det, errors = build(section)
    assert errors == []
    falco = [r for r in det.rules if r.spec.dialect == "falco"]
    assert [r.spec.id for r in falco] == ["Shell In Test Container"]
    r = falco[0]
    assert r.spec.severity is Severity.MEDIUM  # WARNING -> medium
    assert r.tactics == ("execution",) and r.techniques == ("T1059.004",)
    assert r.spec.full_condition.endswith("and not proc.name = zsh)")
    assert [name for name, _ in r.getters] == ["user.name", "proc.cmdline", "proc.pname"]  # unknown one left out
    skipped = dict(det.result.skipped)
    assert set(skipped) == {"Uses Thread Capabilities", "Uses Binary Operator", "Audit Rule"}
    assert "thread.cap_effective" in skipped["Uses Thread Capabilities"]
    assert "bcontains" in skipped["Uses Binary Operator"]
    assert "k8s_audit" in skipped["Audit Rule"]
    # the rule that runs alerts, its output in Falco's format
    from agent.events import Enriched, ExecEvent, Op, ProcInfo

    ev = ExecEvent(Op.EXEC, 1, 77, 77, 76, 0, 0, 1, 1, "bash", False, "/bin/bash", ("bash", "-c", "id"))
    en = Enriched(ev, ProcInfo(77, 76, "/bin/bash", ("bash", "-c", "id"), 0, 0),
                  ProcInfo(76, 1, "/opt/nwtestparent", ("nwtestparent",), 0, 0, comm="nwtestparent"))
    (alert,) = [a for a in det.evaluate(en) if a.rule_id == "Shell In Test Container"]
    assert alert.severity is Severity.MEDIUM and alert.techniques == ("T1059.004",)
    assert alert.output.startswith("Shell run (user=") and "cmd=bash -c id parent=nwtestparent unknown=<NA>)" \
        in alert.output, alert.output
    zsh = Enriched(dataclasses.replace(ev, comm="zsh"), en.process, en.parent)
    assert [a for a in det.evaluate(zsh) if a.rule_id == "Shell In Test Container"] == []  # the appended part


def test_falco_priorities_map_onto_our_severities():
    assert {k: v.label for k, v in rules.FALCO_PRIORITY.items()} == {
        "emergency": "critical", "alert": "critical", "critical": "critical", "error": "high",
        "warning": "medium", "notice": "low", "informational": "info", "info": "info", "debug": "info"}


def test_an_exception_value_may_name_a_list():
    from tests.unit.test_detect_engine import _exec

    ruleset, errors = rules.load_files([rules.BUNDLED_DIR], extra=_node("""\
        - rule: t.exec
          condition: event.name = process.exec
          severity: low
          exceptions:
            - name: shells
              fields: process.name
              comps: in
              values: [nw_shells, "odd name"]
        """))
    det, errors2 = build(rules.DetectSection(ruleset=ruleset, disable=rules.Selection(tags=("T1059", "T1046"))))
    assert errors == [] and errors2 == []
    assert [a.rule_id for a in det.evaluate(_exec("/bin/bash", ("bash",))) if a.rule_id == "t.exec"] == []
    assert [a.rule_id for a in det.evaluate(_exec("/bin/ls", ("ls",)))] == ["t.exec"]
