"""In-kernel exec rules: a process in a covered cgroup dies by SIGKILL before its first instruction."""

import os
import shutil
import signal
import subprocess
import uuid

import pytest

from agent.enforce.execkill import ExecEnforcer, RuleError, RuntimeRules
from agent.enrich.cgroups import parse_cgroup2_mount
from agent.events import Op
from agent.sensors.common import BootClock
from agent.sensors.loader import ProbeConfig, ProbeSet
from tests.harness.cgexec import run_in


@pytest.fixture(scope="module")
def probes():
    ps = ProbeSet(ProbeConfig(families=("process", "file", "cgroup"), ignore_prefixes=("/dev/",)))
    ps.start()
    yield ps
    ps.stop()


def _mount() -> str:
    with open("/proc/self/mountinfo") as f:
        mount = parse_cgroup2_mount(f.read())
    if not mount:
        pytest.skip("no cgroup2 mount")
    return mount


def _rmdir(mount: str, path: str) -> None:
    if not os.path.isdir(path):
        return
    with open(os.path.join(mount, "cgroup.procs"), "w") as f:  # nothing should be left, but be sure
        for pid in open(os.path.join(path, "cgroup.procs")).read().split():
            f.write(pid)
    os.rmdir(path)


@pytest.fixture
def cgroup():
    """A fresh cgroup v2 directory: (path, id). A child joins it before it execs anything."""
    mount = _mount()
    path = os.path.join(mount, "nwtest-" + uuid.uuid4().hex[:8])
    os.mkdir(path)
    yield path, os.stat(path).st_ino
    _rmdir(mount, path)


@pytest.fixture
def enforcer(probes):
    e = ExecEnforcer(probes)
    e.start()
    yield e
    e.apply(RuntimeRules())
    for cg in list(e.covered):
        e.cover(cg, False)


def test_denied_name_and_path_are_killed_allowed_runs(probes, enforcer, cgroup, tmp_path):
    cg_path, cg_id = cgroup
    marker = tmp_path / "ran"
    script = tmp_path / "deny-me.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"name": "sleep"}, {"path": f"{tmp_path}/deny-*"}]}))
    enforcer.cover(cg_id)
    assert run_in(cg_path, ["/bin/sleep", "5"]) == -signal.SIGKILL
    assert run_in(cg_path, [str(script)]) == -signal.SIGKILL
    assert not marker.exists()  # killed before the script's first instruction
    assert run_in(cg_path, ["/bin/true"]) == 0
    # Outside the covered cgroup the same rules do nothing.
    assert subprocess.run(["/bin/sleep", "0"]).returncode == 0


def test_rules_change_at_run_time(probes, enforcer, cgroup):
    cg_path, cg_id = cgroup
    enforcer.cover(cg_id)
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/true"}]}))
    assert run_in(cg_path, ["/bin/true"]) == -signal.SIGKILL
    assert run_in(cg_path, ["/bin/echo"]) == 0  # exact path: no prefix match
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/echo"}]}))
    assert run_in(cg_path, ["/bin/true"]) == 0
    assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/echo"}], "action": "alert"}))
    assert run_in(cg_path, ["/bin/echo"]) == 0


def test_drift_kills_a_binary_written_after_start(probes, enforcer, cgroup, tmp_path):
    cg_path, cg_id = cgroup
    enforcer.cover(cg_id)
    enforcer.apply(RuntimeRules.from_dict({"drift": "block"}))
    pre = tmp_path / "pre-existing"
    shutil.copy("/bin/true", pre)  # written by the test, outside the covered cgroup
    new = tmp_path / "dropped"
    assert run_in(cg_path, ["/bin/cp", "/bin/true", str(new)]) == 0  # written inside it
    reader = probes.reader()
    reader.read(100000)
    assert run_in(cg_path, [str(new)]) == -signal.SIGKILL
    assert run_in(cg_path, [str(pre)]) == 0
    assert run_in(cg_path, ["/bin/true"]) == 0
    clock = BootClock()
    execs = [ev for raw in reader.read(100000) if raw[0] == Op.EXEC
             and (ev := probes.decoders[raw[0]](raw, clock)).cgroup_id == cg_id]
    killed = [e for e in execs if e.action == 2]
    assert [e.filename for e in killed] == [str(new)]
    assert killed[0].rule >> 16 == 3  # WHY_DRIFT
    reader.close()


@pytest.fixture
def program(tmp_path):
    """A copy of /bin/true under a unique name (its comm): a host-scoped rule on it kills nothing else."""
    path = tmp_path / ("nwx" + uuid.uuid4().hex[:10])
    shutil.copy("/bin/true", path)
    return path


@pytest.mark.parametrize("scope,host_killed,container_killed", [
    ("containers", False, True), ("host", True, False), ("both", True, True)])
@pytest.mark.parametrize("by", ["name", "path"])
def test_rule_scope(probes, enforcer, cgroup, program, scope, host_killed, container_killed, by):
    """containers: only covered cgroups; host: every task outside them; both: everywhere."""
    cg_path, cg_id = cgroup
    enforcer.cover(cg_id)
    rule = {"name": program.name} if by == "name" else {"path": str(program)}
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{**rule, "scope": scope}]}))
    assert subprocess.run([str(program)]).returncode == (-signal.SIGKILL if host_killed else 0)
    assert run_in(cg_path, [str(program)]) == (-signal.SIGKILL if container_killed else 0)
    enforcer.apply(RuntimeRules())
    assert subprocess.run([str(program)]).returncode == 0


def test_section_scope_is_the_default_of_its_rules(probes, enforcer, cgroup, program):
    cg_path, cg_id = cgroup
    enforcer.cover(cg_id)
    rules = {"scope": "host", "deny_exec": [{"name": program.name}, {"path": "/bin/true", "scope": "containers"}]}
    enforcer.apply(RuntimeRules.from_dict(rules))
    assert subprocess.run([str(program)]).returncode == -signal.SIGKILL
    assert run_in(cg_path, [str(program)]) == 0
    assert run_in(cg_path, ["/bin/true"]) == -signal.SIGKILL
    assert subprocess.run(["/bin/true"]).returncode == 0


def test_cgroup_covered_from_its_mkdir_by_path(probes, enforcer):
    """A container heard of at create: its cgroup is put under the rules by path before it exists,
    and the cgroup_mkdir probe covers it in the kernel; its very first exec is checked."""
    mount = _mount()
    name = "nwtest-" + uuid.uuid4().hex[:8]
    path = os.path.join(mount, name)
    enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/true"}]}))
    try:
        assert enforcer.cover_path(f"/{name}") == 0  # not there yet
        os.mkdir(path)
        assert run_in(path, ["/bin/true"]) == -signal.SIGKILL  # no user-space step in between
        # Already there: covered at once, by id.
        enforcer.uncover_path(f"/{name}")
        assert enforcer.cover_path(f"/{name}") == os.stat(path).st_ino
        assert run_in(path, ["/bin/true"]) == -signal.SIGKILL
        enforcer.cover(os.stat(path).st_ino, False)
        enforcer.uncover_path(f"/{name}")
        _rmdir(mount, path)
        os.mkdir(path)  # the pending entry is gone: a new directory of that path is not covered
        assert run_in(path, ["/bin/true"]) == 0
    finally:
        _rmdir(mount, path)
    assert enforcer.cover_path("not:a-valid") == 0 and enforcer.counters["cover_unresolved"] == 1


@pytest.mark.parametrize("bad,msg", [
    ({"deny_exec": [{"path": "/usr/*/bin"}]}, "exact paths and prefixes ending in"),
    ({"deny_exec": [{"path": "relative"}]}, "must be absolute"),
    ({"deny_exec": [{"name": "x", "path": "/y"}]}, "expected {name: PROGRAM}"),
    ({"drift": "maybe"}, "drift must be off, alert or block"),
    ({"deny": []}, "unknown key 'deny'"),
])
def test_bad_runtime_rules_are_one_clear_error(bad, msg):
    with pytest.raises(RuleError, match=msg.replace("{", r"\{").replace("*", r"\*")):
        RuntimeRules.from_dict(bad)
