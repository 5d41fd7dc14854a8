"""Protecting profiles in the kernel (issue 13): in a covered cgroup only the allow-list's paths run; any other
exec dies by SIGKILL before its first instruction."""

import os
import signal
import subprocess
import uuid

import pytest

from agent.enforce.execkill import ExecEnforcer, RuntimeRules
from agent.enforce.profilekill import PATH_LIMIT, NullProfileKill, ProfileKill, build
from agent.enrich.cgroups import parse_cgroup2_mount
from agent.events import Op
from agent.sensors.abi import Action, Reason
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


def _count(probes, name: bytes) -> int:
    return sum(1 for _ in probes.table(name).keys())  # bcc's LpmTrie has no len()


def _rmdir(mount: str, path: str) -> None:
    if not os.path.isdir(path):
        return
    with open(os.path.join(mount, "cgroup.procs"), "w") as f:  # nothing should be left, but be sure
        for pid in open(os.path.join(path, "cgroup.procs")).read().split():
            f.write(pid)
    os.rmdir(path)


@pytest.fixture
def cgroups():
    """Fresh cgroup v2 directories: call it for (path, id); all removed at the end."""
    mount, made = _mount(), []

    def make():
        path = os.path.join(mount, "nwtest-" + uuid.uuid4().hex[:8])
        os.mkdir(path)
        made.append(path)
        return path, os.stat(path).st_ino

    yield make
    for path in made:
        _rmdir(mount, path)


@pytest.fixture
def pk(probes):
    k = ProfileKill(probes)
    k.start()
    yield k
    for key in k.keys():
        k.drop(key)
    assert len(probes.table(b"profile_of")) == 0 and _count(probes, b"allow_exec") == 0


@pytest.fixture
def scripts(tmp_path):
    """Shell scripts that write a marker file with a builtin (no exec of their own): (script, marker)."""
    def make(name):
        marker = tmp_path / f"{name}.ran"
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\necho ran > {marker}\n")
        script.chmod(0o755)
        return str(script), marker
    return make


def test_only_the_allow_list_runs_and_other_cgroups_are_untouched(pk, cgroups, scripts):
    (cg_path, cg_id), (other_path, _) = cgroups(), cgroups()
    good, good_ran = scripts("learned")
    bad, bad_ran = scripts("new")
    slot = pk.load("ns/Deployment/web/app@sha256:1", ["/bin/true", good])
    assert pk.cover(cg_id, slot)
    assert run_in(cg_path, ["/bin/true"]) == 0
    assert run_in(cg_path, [good]) == 0 and good_ran.exists()
    assert run_in(cg_path, [bad]) == -signal.SIGKILL
    assert not bad_ran.exists()  # killed before the script's first instruction
    assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
    # Another cgroup, and the test's own, are not covered.
    assert run_in(other_path, [bad]) == 0 and bad_ran.exists()
    assert subprocess.run(["/bin/echo"], capture_output=True).returncode == 0
    # The same key keeps its slot; a second slot's list is its own.
    assert pk.load("ns/Deployment/web/app@sha256:1", ["/bin/true", good]) == slot
    other_slot = pk.load("ns/Deployment/db/app@sha256:2", ["/bin/echo"])
    assert other_slot != slot
    assert pk.cover(cg_id, other_slot)
    assert run_in(cg_path, ["/bin/echo"]) == 0
    assert run_in(cg_path, ["/bin/true"]) == -signal.SIGKILL
    pk.uncover(cg_id)
    assert run_in(cg_path, ["/bin/true"]) == 0


def test_replacing_the_list_takes_effect(pk, cgroups):
    cg_path, cg_id = cgroups()
    slot = pk.load("k", ["/bin/true"])
    pk.cover(cg_id, slot)
    assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
    assert pk.load("k", ["/bin/echo"]) == slot
    assert run_in(cg_path, ["/bin/echo"]) == 0
    assert run_in(cg_path, ["/bin/true"]) == -signal.SIGKILL
    assert pk.counters()["paths"] == 1 and _count(pk._probes, b"allow_exec") == 1
    pk.load("k", [])  # an empty list: nothing runs
    assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
    assert _count(pk._probes, b"allow_exec") == 0


def test_the_kill_is_reported_with_the_profiles_slot(probes, pk, cgroups, scripts):
    cg_path, cg_id = cgroups()
    bad, _ = scripts("reported")
    slot = pk.load("prod/Deployment/api/srv@sha256:9", ["/bin/true"])
    pk.cover(cg_id, slot)
    reader = probes.reader()
    reader.read(100000)
    assert run_in(cg_path, [bad]) == -signal.SIGKILL
    assert run_in(cg_path, ["/bin/true"]) == 0
    clock = BootClock()
    execs = [ev for raw in reader.read(100000) if raw[0] == Op.EXEC
             and (ev := probes.decoders[raw[0]](raw, clock)).cgroup_id == cg_id]
    reader.close()
    assert [(e.filename, e.action) for e in execs] == [(bad, Action.KILL), ("/bin/true", Action.NONE)]
    assert execs[0].rule == (Reason.PROFILE << 16) | slot
    text = "exec not in the learned profile of prod/Deployment/api/srv@sha256:9"
    assert pk.describe(execs[0].rule) == ("profile", text)
    # The runtime rules' describer hands profile kills to the allow-lists (node.py passes it to the pipeline).
    assert ExecEnforcer(probes, profiles=pk).describe(execs[0].rule, cg_id) == ("profile", text)
    assert ExecEnforcer(probes).describe(execs[0].rule)[0] == "profile"


def test_a_profile_kills_whatever_the_runtime_mode_and_a_runtime_kill_keeps_its_reason(probes, pk, cgroups):
    cg_path, cg_id = cgroups()
    enforcer = ExecEnforcer(probes, profiles=pk)
    enforcer.start()
    try:
        enforcer.cover(cg_id)
        enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/echo"}], "action": "alert"}))
        assert run_in(cg_path, ["/bin/echo"]) == 0  # alert only
        slot = pk.load("k", ["/bin/true"])
        pk.cover(cg_id, slot)
        reader = probes.reader()
        reader.read(100000)
        assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL  # the profile kills it
        enforcer.apply(RuntimeRules.from_dict({"deny_exec": [{"path": "/bin/echo"}]}))
        assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
        clock = BootClock()
        rules = [ev.rule >> 16 for raw in reader.read(100000) if raw[0] == Op.EXEC
                 and (ev := probes.decoders[raw[0]](raw, clock)).cgroup_id == cg_id and ev.action == Action.KILL]
        reader.close()
        assert rules == [Reason.PROFILE, Reason.PATH]
    finally:
        enforcer.apply(RuntimeRules())
        enforcer.cover(cg_id, False)


def test_cover_path_covers_a_cgroup_made_later_and_uncover_restores(probes, pk):
    """A container heard of at create: its cgroup gets the slot in the kernel at mkdir, so its very first
    exec is judged; uncover and uncover_path give it back."""
    mount = _mount()
    name = "nwtest-" + uuid.uuid4().hex[:8]
    path = os.path.join(mount, name)
    slot = pk.load("k", ["/bin/true"])
    try:
        assert pk.cover_path(f"/{name}", slot) == 0  # not there yet
        assert pk.counters()["pending"] == 1
        os.mkdir(path)
        assert run_in(path, ["/bin/echo"]) == -signal.SIGKILL  # no user-space step in between
        assert run_in(path, ["/bin/true"]) == 0
        cg = os.stat(path).st_ino
        assert probes.table(b"profile_of")[probes.table(b"profile_of").Key(cg)].value == slot
        pk.uncover(cg)  # the kernel covered it: uncover removes it all the same
        assert run_in(path, ["/bin/echo"]) == 0
        # Already there: covered at once, by id.
        assert pk.cover_path(f"/{name}", slot) == cg
        assert run_in(path, ["/bin/echo"]) == -signal.SIGKILL
        pk.uncover(cg)
        pk.uncover_path(f"/{name}")
        _rmdir(mount, path)
        os.mkdir(path)  # the pending entry is gone: a new directory of that path is not covered
        assert run_in(path, ["/bin/echo"]) == 0
        assert pk.counters()["pending"] == 0 and len(probes.table(b"profile_pending")) == 0
    finally:
        _rmdir(mount, path)
    assert pk.cover_path("not:a-valid", slot) == 0 and pk.counters()["cover_unresolved"] == 1


def test_drop_uncovers_what_the_kernel_covered_and_frees_the_slot(probes, pk):
    mount = _mount()
    name = "nwtest-" + uuid.uuid4().hex[:8]
    path = os.path.join(mount, name)
    slot = pk.load("gone", ["/bin/true"])
    try:
        pk.cover_path(f"/{name}", slot)
        os.mkdir(path)
        assert run_in(path, ["/bin/echo"]) == -signal.SIGKILL
        pk.drop("gone")
        assert run_in(path, ["/bin/echo"]) == 0
        assert len(probes.table(b"profile_of")) == 0 and len(probes.table(b"profile_pending")) == 0
        assert pk.slot_of("gone") == -1 and not pk.cover(os.stat(path).st_ino, slot)
        assert pk.counters()["cover_refused"] == 1
        assert pk.load("new", ["/bin/true"]) == slot  # reused
        assert pk.describe((Reason.PROFILE << 16) | slot)[1].endswith(" new")
    finally:
        _rmdir(mount, path)


def test_a_path_too_long_for_the_key_is_never_loaded_and_its_exec_is_killed(pk, cgroups, tmp_path):
    cg_path, cg_id = cgroups()
    d = tmp_path / ("d" * 60) / ("e" * 60)
    d.mkdir(parents=True)
    prog = d / "true"
    prog.write_bytes(open("/bin/true", "rb").read())
    prog.chmod(0o755)
    assert len(str(prog).encode()) > PATH_LIMIT
    slot = pk.load("k", [str(prog), "/bin/true", "", "a\0b"])
    pk.load("k", [str(prog), "/bin/true"])  # the same refusal again is not counted again
    c = pk.counters()
    assert (c["path_too_long"], c["path_invalid"], c["paths"]) == (1, 2, 1)
    pk.cover(cg_id, slot)
    assert run_in(cg_path, [str(prog)]) == -signal.SIGKILL
    assert run_in(cg_path, ["/bin/true"]) == 0


def test_undecodable_bytes_in_a_path_are_compared_as_the_kernel_sees_them(pk, cgroups, tmp_path):
    cg_path, cg_id = cgroups()
    raw = os.fsencode(str(tmp_path)) + b"/prog\xff"
    with open(raw, "wb") as f:
        f.write(open("/bin/true", "rb").read())
    os.chmod(raw, 0o755)
    slot = pk.load("k", [str(tmp_path) + "/prog\\xff"])  # as the sensors write it (agent/sensors/common.py)
    pk.cover(cg_id, slot)
    r = subprocess.run([b"/bin/sh", b"-c", b'echo $$ > "$0/cgroup.procs" && exec "$1"', cg_path.encode(), raw])
    assert r.returncode == 0
    assert run_in(cg_path, ["/bin/true"]) == -signal.SIGKILL


def test_recorded_before_start_is_written_at_start(probes, cgroups):
    cg_path, cg_id = cgroups()
    k = ProfileKill(probes)
    slot = k.load("early", ["/bin/true"])
    assert k.cover(cg_id, slot)
    assert run_in(cg_path, ["/bin/echo"]) == 0  # not live yet
    k.start()
    try:
        assert run_in(cg_path, ["/bin/echo"]) == -signal.SIGKILL
        assert run_in(cg_path, ["/bin/true"]) == 0
    finally:
        k.drop("early")
    assert run_in(cg_path, ["/bin/echo"]) == 0


def test_no_exec_probe_is_the_null_object(probes):
    null = build(ProbeSet(ProbeConfig(families=("file",))))
    assert isinstance(null, NullProfileKill) and not null.enabled
    assert null.load("k", ["/bin/true"]) == -1 and null.cover_path("/x", 1) == 0 and not null.cover(1, 1)
    assert null.keys() == [] and null.counters()["slots"] == 0 and all(v == 0 for v in null.drops().values())
    assert isinstance(build(probes), ProfileKill) and build(None).enabled is False


def test_a_path_kept_across_replacements_never_dies(pk, cgroups):
    """load adds before it deletes: a path in the old and the new list is in the map throughout."""
    import threading

    cg_path, cg_id = cgroups()
    slot = pk.load("k", ["/bin/true"])
    pk.cover(cg_id, slot)
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            pk.load("k", ["/bin/true", *(f"/opt/x{i}-{j}" for j in range(50))])
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        codes = [run_in(cg_path, ["/bin/true"]) for _ in range(100)]
    finally:
        stop.set()
        t.join()
    assert codes == [0] * 100
