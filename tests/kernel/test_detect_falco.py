"""A rules file in Falco's format, loaded by the real agent through a policy's `detect.rules_files`.

The fixture is written by this test (never a copy of Falco's rules): two rules that NodeWarden can
run, in Falco's own vocabulary (`evt.type`, `proc.name`, `fd.name`, `evt.is_open_write`, a `%field`
output string, `priority:`), and two it cannot (a field it has no data for, an operator it lacks).
The agent must run the first two for real (each behaviour raises exactly one alert with the
severity its priority maps to) and name the other two, with the reason, in status.json's
`detection.not_loaded` and in its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.kernel.conftest import AgentProcess

TAG = f"nwfal{uuid.uuid4().hex[:6]}"

FALCO_RULES = """\
- required_engine_version: 0.31.0
- list: nwfalco_marker_tools
  items: [touch, tee]
- macro: nwfalco_open_write
  condition: (evt.type in (open, openat, openat2) and evt.is_open_write = true)
- macro: nwfalco_spawned_process
  condition: (evt.type in (execve, execveat))
- rule: NW Fixture Marker Written
  desc: A marker file below the test's directory was opened for writing by touch or tee (a test fixture).
  condition: nwfalco_open_write and fd.name startswith {dir}/ and proc.name in (nwfalco_marker_tools)
  output: "Marker written (file=%fd.name command=%proc.cmdline parent=%proc.pname tty=%proc.tty)"
  priority: WARNING
  tags: [filesystem, mitre_persistence, T1543]
- rule: NW Fixture Marker Run
  desc: The test's marker program was run (a test fixture).
  condition: nwfalco_spawned_process and proc.name = {prog}
  output: "Marker run (exe=%proc.exepath cmdline=%proc.cmdline)"
  priority: ERROR
  tags: [process, mitre_execution, T1059]
- rule: NW Fixture Needs Healthcheck Field
  desc: Needs a field NodeWarden has no data for.
  condition: nwfalco_spawned_process and proc.is_container_healthcheck = true
  output: "healthcheck %proc.name"
  priority: NOTICE
- rule: NW Fixture Needs Binary Operator
  desc: Needs an operator NodeWarden lacks.
  condition: nwfalco_spawned_process and proc.name bstartswith 6e77
  output: "binary %proc.name"
  priority: NOTICE
"""


def _comm(pid: int | str = "self") -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _alerts_of(a: AgentProcess, argv: list[str]) -> list[dict]:
    """Run argv; the alerts its process raised (waits for its exit record, which follows them)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    a.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == p.pid, 30)  # a loaded machine
    return a.find(lambda r: r["event.name"] == "alert" and r["process.pid"] == p.pid)


@pytest.fixture
def workdir():
    # below /run, not /tmp: a program run from /tmp is a bundled rule's business, not this test's
    d = f"/run/{TAG}-{uuid.uuid4().hex[:6]}"
    os.makedirs(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_falco_rules_file_runs_what_it_can_and_names_the_rest(workdir):
    prog = f"nwfm{uuid.uuid4().hex[:6]}"
    rules = os.path.join(workdir, "falco_rules.yaml")
    with open(rules, "w") as f:
        f.write(FALCO_RULES.format(dir=workdir, prog=prog))
    state = os.path.join(workdir, "state")
    cfg = os.path.join(workdir, "agent.yaml")
    with open(cfg, "w") as f:
        f.write(f"agent:\n  state_dir: {state}\n")
    pol = os.path.join(workdir, "policy.yaml")
    with open(pol, "w") as f:
        f.write("detect:\n  rules_files: [falco_rules.yaml]\n")  # relative to the policy
    shutil.copy("/bin/true", os.path.join(workdir, prog))

    a = AgentProcess("--no-containers", "--config", cfg, "--policy", pol)
    try:
        det = a.status(state)["detection"]
        skipped = {s["rule"]: s["why"] for s in det["not_loaded"]}
        assert set(skipped) == {"NW Fixture Needs Healthcheck Field", "NW Fixture Needs Binary Operator"}, skipped
        assert "proc.is_container_healthcheck" in skipped["NW Fixture Needs Healthcheck Field"]
        assert "bstartswith" in skipped["NW Fixture Needs Binary Operator"]

        marker = os.path.join(workdir, "marker")
        (al,) = _alerts_of(a, ["/usr/bin/touch", marker])
        assert (al["rule.id"], al["event.severity"], al["trigger.name"]) == (
            "NW Fixture Marker Written", "medium", "file.open")  # WARNING -> medium
        assert al["threat.technique.id"] == ["T1543"] and "persistence" in al["threat.tactic.name"]
        assert al["file.path"] == marker
        # Falco's output string, its %fields filled; one we lack (proc.tty) reads <NA>, as in Falco
        assert al["alert.output"] == (f"Marker written (file={marker} command=/usr/bin/touch {marker} "
                                      f"parent={_comm()} tty=<NA>)"), al["alert.output"]
        assert al["process.ancestors.name"][0] == _comm()  # touch's parent: this test
        assert _alerts_of(a, ["/bin/cat", marker]) == []  # a read, and not by touch or tee

        exe = os.path.join(workdir, prog)
        (al,) = _alerts_of(a, [exe, "x"])
        assert (al["rule.id"], al["event.severity"]) == ("NW Fixture Marker Run", "high")  # ERROR -> high
        assert al["alert.output"] == f"Marker run (exe={exe} cmdline={exe} x)"
        assert al["threat.technique.id"] == ["T1059"]
        assert _alerts_of(a, ["/bin/true", prog]) == []  # its name in an argument only
    finally:
        a.stop()
    log = a.stderr.decode(errors="replace")
    assert "NW Fixture Needs Healthcheck Field" in log and "NW Fixture Needs Binary Operator" in log, log[-2000:]
