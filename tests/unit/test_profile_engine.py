"""agent/detect/profile/engine.py over real records (agent/events.py) and a real store on disk: learning,
the switch after the window or the quiet period, deviations (one alert per item), what a rule flagged never
learned, protecting (the kernel's allow-list through the injected kill object), overflow, restart, control
requests, the collector's profile at a container's create, bounds and bad input. The kernel side and the
collector sync are other stages' objects: small recording fakes of their methods stand in here."""

from __future__ import annotations

import dataclasses
import os

import orjson
import pytest

from agent.config import ProfilesConfig
from agent.detect.profile import NullProfiles, build
from agent.detect.profile.engine import RULE_ID, ProfileEngine
from agent.detect.profile.key import workload_of
from agent.detect.profile.store import ProfileStore
from agent.events import (
    AlertEvent,
    ContainerInfo,
    Enriched,
    ExecEvent,
    FileEvent,
    NetEvent,
    Op,
    ProcInfo,
    ProfileChange,
)
from agent.outputs.pbcodec import to_event, to_record
from agent.outputs.record import flatten
from agent.policy.profiles import Override, ProfilePolicy, Selector
from agent.vocab import Severity

T0 = 1_800_000_000.0


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


class FakeKill:
    """Records what the engine asks of the kernel side (agent/enforce/profilekill.py's methods)."""

    def __init__(self):
        self.calls = []
        self.slots = {}

    def load(self, key, paths):
        self.calls.append(("load", key, tuple(paths)))
        return self.slots.setdefault(key, len(self.slots) + 1)

    def cover(self, cg, slot):
        self.calls.append(("cover", cg, slot))
        return True

    def cover_path(self, path, slot):
        self.calls.append(("cover_path", path, slot))
        return 1

    def uncover(self, cg):
        self.calls.append(("uncover", cg))

    def uncover_path(self, path):
        self.calls.append(("uncover_path", path))

    def drop(self, key):
        self.calls.append(("drop", key))

    def ops(self, name):
        return [c for c in self.calls if c[0] == name]


class FakeSync:
    def __init__(self, docs=None, fail=False):
        self.docs = docs or {}
        self.pushed = []
        self.fail = fail

    def push(self, doc):
        self.pushed.append(doc)

    def fetch(self, key, timeout):
        if self.fail:
            raise OSError("collector down")
        return self.docs.get(key)

    def drops(self):
        return {"profile.sync_queue": 0}


POLICY = ProfilePolicy(learn_s=60.0, quiet_s=20.0, after="monitoring")


def container(cid="c1", pod="web-7d4b9c8f6-abcde", ns="shop", cg=1001) -> ContainerInfo:
    labels = (("io.kubernetes.container.name", "web"), ("io.kubernetes.pod.name", pod),
              ("io.kubernetes.pod.namespace", ns))
    return ContainerInfo(id=cid, name="web", image="registry.test/web:1", image_digest="sha256:" + "b" * 64,
                         namespace="k8s.io", pod_name=pod, pod_namespace=ns, labels=labels, pid=50, cgroup_id=cg,
                         state="running")


def _base(op, clock, uid=0, cg=1001):
    return dict(op=op, ts_ns=int(clock() * 1e9), pid=100, tid=100, ppid=50, uid=uid, gid=0, cgroup_id=cg, mntns=7,
                comm="x", truncated=False)


def exec_en(c, clock, path="/usr/bin/app", parent="/bin/sh", uid=0, action=0) -> Enriched:
    ev = ExecEvent(**_base(Op.EXEC, clock, uid, c.cgroup_id), filename=path, argv=(path,), action=action)
    par = ProcInfo(pid=50, ppid=1, exe=parent, argv=(parent,), uid=0, start_ns=0)
    return Enriched(ev, ProcInfo(100, 50, path, (path,), uid, 0), par, c)


def open_en(c, clock, path, flags=0o101, ret=3, resolved="") -> Enriched:
    ev = FileEvent(**_base(Op.FILE_OPEN, clock, 0, c.cgroup_id), path=path, path2="", ret=ret, flags=flags,
                   mode=0o644, dirfd=-100, fd=-1, owner_uid=0, owner_gid=0)
    return Enriched(ev, None, None, c, path_resolved=resolved)


def file_en(c, clock, op, path, path2="", ret=0) -> Enriched:
    ev = FileEvent(**_base(op, clock, 0, c.cgroup_id), path=path, path2=path2, ret=ret, flags=0, mode=0, dirfd=-100,
                   fd=-1, owner_uid=0, owner_gid=0)
    return Enriched(ev, None, None, c)


def net_en(c, clock, op=Op.NET_CONNECT, address="127.0.0.1", port=8080, transport="tcp", family="ipv4",
           ret=0) -> Enriched:
    ev = NetEvent(**_base(op, clock, 0, c.cgroup_id), ret=ret, fd=3, family=family, transport=transport,
                  address=address, port=port, backlog=0)
    return Enriched(ev, None, None, c)


def service(c, clock):
    """The fixed behaviour a test service has: an exec, a loopback connect, a listen, writes under /tmp/app."""
    return [exec_en(c, clock), net_en(c, clock), net_en(c, clock, Op.NET_LISTEN, "0.0.0.0", 80),
            open_en(c, clock, "/tmp/app/out.log"), file_en(c, clock, Op.FILE_RENAME, "/tmp/app/a", "/tmp/app/b"),
            open_en(c, clock, "/etc/passwd", flags=0)]


def engine(tmp_path, clock, policy=POLICY, kill=None, sync=None, **cfg) -> ProfileEngine:
    c = ProfilesConfig(**{"flush_s": 5.0, **cfg})
    return ProfileEngine(c, policy, ProfileStore(str(tmp_path / "profiles")), kill=kill, sync=sync, clock=clock)


def alerts_of(out) -> list[AlertEvent]:
    return [a for _, alerts in out for a in alerts]


def learn_and_lock(e: ProfileEngine, c, clock, seconds=25):
    e.on_container("task", c)
    assert e.observe_batch(service(c, clock), set()) == []
    e.tick()
    changes = []
    for _ in range(seconds):
        clock.t += 1.0
        changes += e.tick()
    return changes


# -- learning, the switch, deviations ------------------------------------------------------------------------

def test_learns_then_switches_after_the_quiet_period_and_flags_new_items(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    c = container()
    changes = learn_and_lock(e, c, clock)
    assert [(ch.mode, ch.previous_mode, ch.reason) for ch in changes] == [("monitoring", "learning", "quiet 20 s")]
    p, = e.profiles()
    assert p.items["exec"].keys() == {"/usr/bin/app"} and p.items["edge"].keys() == {"/bin/sh>/usr/bin/app"}
    assert p.items["user"].keys() == {"0"} and p.items["peer"].keys() == {"tcp/127.0.0.1:8080"}
    assert p.items["listen"].keys() == {"tcp/80"} and p.items["write"].keys() == {"/tmp/app"}
    assert dict(changes[0].items)["exec"] == 1
    # the same behaviour raises nothing
    assert e.observe_batch(service(c, clock), set()) == []
    # a new exec, a new outbound port, a write to a new directory: exactly one alert each
    batch = [exec_en(c, clock, "/usr/bin/nc"), net_en(c, clock, port=4444), open_en(c, clock, "/var/tmp/x/drop"),
             exec_en(c, clock, "/usr/bin/nc"), net_en(c, clock, port=4444), open_en(c, clock, "/var/tmp/x/drop")]
    out = e.observe_batch(batch, set())
    got = alerts_of(out)
    assert [a.rule_id for a in got] == [RULE_ID] * 3  # exec (its new edge named in it), peer, write
    assert [pos for pos, _ in out] == [0, 1, 2]
    by_kind = {a.output.split()[1]: a for a in got}
    assert by_kind["exec"].severity == Severity.HIGH and by_kind["exec"].techniques == ("T1059",)
    assert by_kind["peer"].severity == Severity.MEDIUM and by_kind["peer"].tactics == ("command_and_control",)
    assert "/usr/bin/nc" in by_kind["exec"].output and workload_of(c).key in by_kind["exec"].output
    assert "stable for" in by_kind["exec"].output and "also new: edge /bin/sh>/usr/bin/nc" in by_kind["exec"].output
    assert "/bin/sh>/usr/bin/nc" in e.profiles()[0].deviations["edge"]  # remembered too
    assert by_kind["write"].output.startswith("new write /var/tmp/x ")
    # the alert's record names the container, the pod and the image (from its subject)
    rec = flatten(by_kind["exec"])
    assert (rec["container.name"], rec["k8s.pod.name"], rec["container.image.name"]) == (
        "web", "web-7d4b9c8f6-abcde", "registry.test/web:1")
    assert rec["rule.id"] == RULE_ID
    assert e.observe_batch(batch, set()) == []  # remembered: never again
    p, = e.profiles()
    assert "/usr/bin/nc" in p.deviations["exec"] and "/usr/bin/nc" not in p.items["exec"]


def test_learning_window_counts_run_time_of_every_replica(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, policy=ProfilePolicy(learn_s=30.0, quiet_s=float("inf"), after="protecting"))
    a, b = container("c1", "web-7d4b9c8f6-abcde", cg=11), container("c2", "web-7d4b9c8f6-fghjk", cg=12)
    e.on_container("task", a)
    e.on_container("task", b)
    e.observe_batch([exec_en(a, clock)], set())
    e.tick()
    changes = []
    for _ in range(14):
        clock.t += 1.0
        changes += e.tick()
    assert changes == []  # 14 s x 2 replicas = 28 s
    clock.t += 1.0
    changes = e.tick()
    assert [(c.mode, c.reason) for c in changes] == [("protecting", "learned 30 s")]
    assert len(e.profiles()) == 1  # both replicas: one profile


def test_a_stopped_container_adds_no_run_time(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    c = container()
    e.on_container("task", c)
    e.observe_batch([exec_en(c, clock)], set())
    e.on_container("exit", c)
    e.tick()
    for _ in range(30):
        clock.t += 1.0
        assert e.tick() == []
    assert e.profiles()[0].mode == "learning" and e.profiles()[0].run_s == 0.0


def test_what_a_rule_flagged_is_never_learned(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    c = container()
    e.on_container("task", c)
    batch = [exec_en(c, clock, "/usr/bin/app"), exec_en(c, clock, "/usr/bin/xmrig")]
    e.observe_batch(batch, {1})
    p, = e.profiles()
    assert "/usr/bin/xmrig" not in p.items["exec"] and "/usr/bin/app" in p.items["exec"]
    for _ in range(25):
        clock.t += 1.0
        e.tick()
    out = e.observe_batch([exec_en(c, clock, "/usr/bin/xmrig")], {0})
    assert [a.rule_id for a in alerts_of(out)] == [RULE_ID]  # a deviation still (its edge named in it)


def test_what_is_not_learned(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    c = container()
    host = Enriched(exec_en(c, clock).event, None, None, None)
    e.observe_batch([
        host,  # no container
        open_en(c, clock, "/etc/passwd", flags=0),  # read only
        open_en(c, clock, "/tmp/app/x", ret=-13),  # failed
        open_en(c, clock, "/proc/self/attr/current"), open_en(c, clock, "/dev/null"),
        open_en(c, clock, "relative/x"),  # no absolute path
        open_en(c, clock, "relative/y", resolved="/srv/data/y"),  # resolved: learned
        file_en(c, clock, Op.FILE_UNLINK, "/tmp/gone", ret=-2),
        net_en(c, clock, ret=-111),  # refused
        net_en(c, clock, address="/run/x.sock", family="unix", transport="unix"),
        net_en(c, clock, Op.NET_BIND, "0.0.0.0", 9000),  # tcp bind: the listen says it
        net_en(c, clock, Op.NET_BIND, "0.0.0.0", 5353, transport="udp"),
        net_en(c, clock, address="10.0.0.9", port=443, ret=-115),  # in progress: a peer
    ], set())
    p, = e.profiles()
    assert p.items["write"].keys() == {"/srv/data"}
    assert p.items["listen"].keys() == {"udp/5353"}
    assert p.items["peer"].keys() == {"tcp/10.0.0.9:443"}
    assert not p.items["exec"]


# -- protecting ----------------------------------------------------------------------------------------------

def test_protecting_loads_the_allow_list_and_covers_the_containers(tmp_path):
    clock = Clock()
    kill = FakeKill()
    e = engine(tmp_path, clock, policy=ProfilePolicy(learn_s=60.0, quiet_s=20.0, after="protecting"), kill=kill)
    c = container(cg=4242)
    changes = learn_and_lock(e, c, clock)
    assert [ch.mode for ch in changes] == ["protecting"]
    key = workload_of(c).key
    assert kill.ops("load") == [("load", key, ("/usr/bin/app",))]
    assert kill.ops("cover") == [("cover", 4242, 1)]
    # the kernel killed a new exec: enforcement.block reports it, no deviation alert; new peers still alert
    out = e.observe_batch([exec_en(c, clock, "/tmp/evil", action=2), net_en(c, clock, port=31337)], set())
    assert [a.output.split()[1] for a in alerts_of(out)] == ["peer"]
    assert "/tmp/evil" in e.profiles()[0].deviations["exec"]
    # a new replica is covered as its task appears; its delete uncovers it
    d = dataclasses.replace(container("c9", "web-7d4b9c8f6-zzzzz", cg=777), cgroup_path="/k8s.io/c9")
    e.on_container("task", d)
    assert kill.ops("cover")[-1] == ("cover", 777, 1)
    e.on_container("delete", d)
    # and what a pre-start gate's prepare may have left by path
    assert kill.ops("uncover") == [("uncover", 777)] and kill.ops("uncover_path") == [("uncover_path", "/k8s.io/c9")]
    assert e.drops()["profile.kernel"] == 0


def test_restart_keeps_the_profile_and_its_enforcement(tmp_path):
    clock = Clock()
    pol = ProfilePolicy(learn_s=60.0, quiet_s=20.0, after="protecting")
    e = engine(tmp_path, clock, policy=pol, kill=FakeKill())
    c = container(cg=5)
    learn_and_lock(e, c, clock)
    before = e.profiles()[0].to_doc()
    e.close()
    kill = FakeKill()
    again = engine(tmp_path, clock, policy=pol, kill=kill)
    p, = again.profiles()
    assert p.mode == "protecting" and p.items == {k: before["items"].get(k, {}) for k in p.items}
    again.on_container("task", c)  # the container table replays what runs
    assert kill.ops("load") == [("load", p.key, ("/usr/bin/app",))] and kill.ops("cover") == [("cover", 5, 1)]
    assert again.observe_batch(service(c, clock), set()) == []


def test_prepare_fetches_from_the_collector_and_covers_the_cgroup_path(tmp_path):
    clock = Clock()
    c = container()
    first = engine(tmp_path / "a", clock, policy=ProfilePolicy(learn_s=60.0, quiet_s=20.0, after="protecting"),
                   kill=FakeKill(), sync=FakeSync())
    learn_and_lock(first, c, clock)
    clock.t += 10.0
    first.tick()
    assert first.sync.pushed and first.sync.pushed[-1]["mode"] == "protecting"
    kill = FakeKill()
    sync = FakeSync({workload_of(c).key: first.sync.pushed[-1]})
    second = engine(tmp_path / "b", clock, kill=kill, sync=sync)  # its own policy would only monitor
    second.prepare(container("c5", "web-7d4b9c8f6-qqqqq", cg=0), "kubepods/pod1/c5")
    assert kill.ops("cover_path") == [("cover_path", "kubepods/pod1/c5", 1)]
    assert kill.ops("load")[0][2] == ("/usr/bin/app",)
    assert [(ch.mode, ch.reason) for ch in second.tick()] == [("protecting", "from collector")]


def test_prepare_never_raises(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, kill=FakeKill(), sync=FakeSync(fail=True))
    e.prepare(container(), "kubepods/x")
    assert e.drops()["profile.sync"] == 1
    bad = FakeSync({workload_of(container()).key: {"format": 1, "key": "junk"}})
    e2 = engine(tmp_path / "2", clock, sync=bad)
    e2.prepare(container(), "kubepods/x")
    assert e2.drops()["profile.sync"] == 1
    e2.prepare(None, "x")  # garbage in: logged, never raised


# -- bounds --------------------------------------------------------------------------------------------------

def test_overflow_is_counted_reported_once_and_keeps_learning(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, max_items=3)
    c = container()
    e.on_container("task", c)
    e.observe_batch([exec_en(c, clock, f"/bin/p{i}") for i in range(6)], set())
    changes = e.tick()
    assert [(ch.mode, ch.reason, ch.severity) for ch in changes] == [
        ("learning", "overflow exec 3", Severity.MEDIUM), ("learning", "overflow edge 3", Severity.MEDIUM)]
    for _ in range(100):
        clock.t += 1.0
        assert e.tick() == []  # never switches: an overflowing profile stays learning
    assert e.drops()["profile.overflow"] == 6
    assert e.profiles()[0].overflow == {"exec": 3, "edge": 3}


def test_deviations_are_bounded(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, max_deviations=2)
    c = container()
    learn_and_lock(e, c, clock)
    out = e.observe_batch([open_en(c, clock, f"/new{i}/f") for i in range(5)], set())
    assert len(alerts_of(out)) == 2
    assert e.drops()["profile.deviations_full"] == 3
    assert [ch.reason for ch in e.tick()] == ["deviations write full at 2"]


def test_max_profiles_refuses_and_counts(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, max_profiles=2)
    for i in range(4):
        c = container(f"c{i}", f"app{i}-0", cg=100 + i)
        e.observe_batch([exec_en(c, clock), exec_en(c, clock)], set())
    assert len(e.profiles()) == 2
    assert e.drops()["profile.refused"] == 2  # once per container, not per event


def test_excluded_workloads_are_not_profiled(tmp_path):
    clock = Clock()
    pol = ProfilePolicy(exclude=(Selector((("namespace", "kube-*"),)),))
    e = engine(tmp_path, clock, policy=pol)
    e.observe_batch([exec_en(container(ns="kube-system"), clock)], set())
    assert e.profiles() == []
    e.observe_batch([exec_en(container("c2", ns="shop"), clock)], set())
    assert len(e.profiles()) == 1


def test_set_policy_overrides_apply(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, policy=ProfilePolicy(learn_s=1e6, quiet_s=float("inf")))
    c = container()
    e.on_container("task", c)
    e.observe_batch([exec_en(c, clock)], set())
    e.tick()
    clock.t += 5.0
    assert e.tick() == []
    e.set_policy(ProfilePolicy(learn_s=1e6, quiet_s=float("inf"),
                               overrides=(Override(Selector((("namespace", "shop"),)), learn_s=5.0),)))
    clock.t += 1.0
    assert [ch.reason for ch in e.tick()] == ["learned 6 s"]


def test_after_learning_learning_never_switches(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock, policy=ProfilePolicy(learn_s=1.0, quiet_s=1.0, after="learning"))
    assert learn_and_lock(e, container(), clock) == []


# -- persistence, requests -----------------------------------------------------------------------------------

def test_flush_writes_changed_profiles_and_corrupt_files_do_not_stop_the_start(tmp_path):
    clock = Clock()
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "aaaaaaaaaaaaaaaaaaaaaaaa.json").write_bytes(b"\x00garbage")
    e = engine(tmp_path, clock)
    assert e.drops()["profile.store_errors"] == 1  # counted, moved aside, and the engine runs
    assert (d / "aaaaaaaaaaaaaaaaaaaaaaaa.bad").exists()
    c = container()
    e.on_container("task", c)
    e.observe_batch([exec_en(c, clock)], set())
    e.tick()
    assert not list(d.glob("*.json"))  # not yet: flush_s
    clock.t += 5.0
    e.tick()
    doc = orjson.loads(next(d.glob("*.json")).read_bytes())
    assert doc["items"]["exec"]["/usr/bin/app"][2] == 1


def test_unwritable_state_dir_is_counted_not_raised(tmp_path):
    clock = Clock()
    (tmp_path / "profiles").write_text("a file, not a directory")
    e = engine(tmp_path, clock)
    c = container()
    e.observe_batch([exec_en(c, clock)], set())
    clock.t += 6.0
    e.tick()
    e.close()
    assert e.drops()["profile.store_errors"] >= 1


def request(tmp_path, name, req):
    d = tmp_path / "profiles" / "requests"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_bytes(orjson.dumps(req))
    return d / f"{name}.done"


def test_control_requests_lock_unlock_forget(tmp_path):
    clock = Clock()
    kill = FakeKill()
    e = engine(tmp_path, clock, kill=kill)
    c = container(cg=9)
    e.on_container("task", c)
    e.observe_batch(service(c, clock), set())
    key = workload_of(c).key
    done = request(tmp_path, "r1", {"op": "lock", "key": key, "mode": "protecting"})
    changes = e.tick()
    assert orjson.loads(done.read_bytes()) == {"ok": True, "error": ""}
    assert [(ch.mode, ch.reason) for ch in changes] == [("protecting", "locked by user")]
    assert kill.ops("cover") == [("cover", 9, 1)]
    saved, = ProfileStore(str(tmp_path / "profiles")).load_all()
    assert saved.mode == "protecting" and saved.locked_by == "user"  # saved before the answer
    done = request(tmp_path, "r2", {"op": "unlock", "key": key})
    assert [(ch.mode, ch.reason) for ch in e.tick()] == [("learning", "unlocked by user")]
    assert kill.ops("uncover") == [("uncover", 9)] and kill.ops("drop") == [("drop", key)]
    done = request(tmp_path, "r3", {"op": "forget", "key": key})
    e.tick()
    assert orjson.loads(done.read_bytes())["ok"] and e.profiles() == []
    assert not list((tmp_path / "profiles").glob("*.json"))
    done = request(tmp_path, "r4", {"op": "lock", "key": "nope"})
    e.tick()
    assert orjson.loads(done.read_bytes()) == {"ok": False, "error": "no profile 'nope'"}
    assert e.counters()["requests_applied"] == 3 and e.counters()["requests_failed"] == 1


def test_import_request(tmp_path):
    clock = Clock()
    src = engine(tmp_path / "src", clock)
    c = container()
    src.observe_batch(service(c, clock), set())
    doc = src.profiles()[0].to_doc()
    doc["mode"], doc["locked_by"], doc["mode_ts"] = "monitoring", "user", T0 + 1
    e = engine(tmp_path, clock)
    done = request(tmp_path, "imp", {"op": "import", "doc": doc})
    assert [(ch.mode, ch.reason) for ch in e.tick()] == [("monitoring", "imported")]
    assert orjson.loads(done.read_bytes())["ok"]
    assert e.observe_batch(service(c, clock), set()) == []
    assert len(alerts_of(e.observe_batch([exec_en(c, clock, "/bin/new")], set()))) == 1


# -- the record ----------------------------------------------------------------------------------------------

def test_profile_change_record_and_its_protobuf_round_trip(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    ch, = learn_and_lock(e, container(), clock)
    assert isinstance(ch, ProfileChange)
    rec = flatten(ch)
    assert rec["event.name"] == "profile.change" and rec["profile.mode"] == "monitoring"
    assert rec["profile.previous_mode"] == "learning" and rec["profile.reason"] == "quiet 20 s"
    assert rec["profile.items.exec"] == 1 and rec["profile.items.write"] == 1
    assert (rec["k8s.namespace.name"], rec["container.name"], rec["container.image.name"]) == (
        "shop", "web", "registry.test/web:1")
    assert rec["profile.workload.kind"] == "Deployment" and rec["profile.workload.owner"] == "web"
    ev = to_event(rec)
    assert ev.WhichOneof("kind") == "profile_change" and not ev.extra_json
    back = to_record(ev)
    for k in ("host.name", "nodewarden.agent_id", "nodewarden.boot_id", "seq"):
        back.pop(k)
    assert back == rec


def test_null_profiles_and_build(tmp_path):
    n = build(ProfilesConfig(enabled=False), POLICY)
    assert isinstance(n, NullProfiles) and not n.enabled
    assert n.observe_batch([], set()) == [] and n.tick() == [] and n.drops() == {}
    e = build(ProfilesConfig(state_dir=str(tmp_path / "p")), POLICY)
    assert e.enabled and e.store.directory == str(tmp_path / "p")
    assert set(e.drops()) >= {"profile.overflow", "profile.refused", "profile.store_errors", "profile.sync"}
    assert all(v == 0 for v in e.drops().values())


def test_listener_errors_never_escape(tmp_path):
    e = engine(tmp_path, Clock())
    e.on_container("task", None)  # logged
    assert os.path.isdir(tmp_path) and e.profiles() == []


@pytest.mark.parametrize("kind", ["container", "task", "exec", "exit", "delete"])
def test_every_listener_kind(tmp_path, kind):
    e = engine(tmp_path, Clock())
    e.on_container(kind, container())
    assert e.counters()["live_containers"] == (1 if kind in ("container", "task", "exec") else 0)


def test_a_late_image_digest_moves_the_container_to_its_full_key(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    early = ContainerInfo(**{**{f: getattr(container(), f) for f in ContainerInfo.__slots__}, "image_digest": ""})
    e.on_container("task", early)
    e.observe_batch([exec_en(early, clock, "/bin/early")], set())
    e.on_container("container", container())  # the digest is known now
    e.observe_batch([exec_en(container(), clock, "/bin/late")], set())
    keys = {p.key: p for p in e.profiles()}
    full = keys[workload_of(container()).key]
    assert "/bin/late" in full.items["exec"] and "/bin/early" not in full.items["exec"]
    assert e.counters()["live_containers"] == 1


def test_reconcile_drops_containers_that_went_unannounced(tmp_path):
    e = engine(tmp_path, Clock())
    e.on_container("task", container("a"))
    e.on_container("task", container("b"))
    e.reconcile([container("a")])
    assert e.counters()["live_containers"] == 1


def test_prepare_by_image_name_when_the_gate_has_no_digest(tmp_path):
    clock = Clock()
    kill = FakeKill()
    e = engine(tmp_path, clock, policy=ProfilePolicy(learn_s=60.0, quiet_s=20.0, after="protecting"), kill=kill)
    learn_and_lock(e, container(), clock)
    spec_only = ContainerInfo(id="c7", name="web", image="registry.test/web:1", pod_name="web-7d4b9c8f6-mmmmm",
                              pod_namespace="shop", namespace="k8s.io")
    e.prepare(spec_only, "kubepods/pod7/c7")
    assert kill.ops("cover_path") == [("cover_path", "kubepods/pod7/c7", 1)]
    assert len(e.profiles()) == 1


def test_flushes_are_bounded_per_tick(tmp_path):
    clock = Clock()
    e = engine(tmp_path, clock)
    for i in range(150):
        c = container(f"c{i}", f"app{i}-0", cg=10 + i)
        e.observe_batch([exec_en(c, clock)], set())
    clock.t += 5.0
    e.tick()
    d = tmp_path / "profiles"
    assert len(list(d.glob("*.json"))) == 64
    clock.t += 1.0
    e.tick()
    clock.t += 1.0
    e.tick()
    assert len(list(d.glob("*.json"))) == 150
    e.close()


def test_the_inline_write_path_counts_what_the_methods_count(tmp_path, monkeypatch):
    """observe_batch's inline paths for write opens of known directories and connects to known peers (and its
    reuse of the last event's container): a batch mixing two containers, known and new directories and
    peers, reads, failed opens and connects, /proc writes, a root-level file, relative paths, a unix socket
    and a listen gives the profiles, deviations and alerts that the same events give one at a time through
    _file, _net and _see (the inline paths turned off), in learning and in monitoring."""
    from agent.detect.profile import engine as engine_mod

    def events(a, b, clock):
        out = []
        for k in range(3):
            for c in (a, a, b, a):
                out += [open_en(c, clock, "/tmp/app/out.log"), open_en(c, clock, f"/var/new{k}/x"),
                        open_en(c, clock, "/etc/passwd", flags=0), open_en(c, clock, "/tmp/app/y", ret=-13),
                        open_en(c, clock, "/proc/self/attr"), open_en(c, clock, "/top"),
                        open_en(c, clock, "rel/z", resolved="/srv/rel/z"), open_en(c, clock, "rel/q"),
                        net_en(c, clock), net_en(c, clock, address=f"10.0.0.{k}"), net_en(c, clock, ret=-111),
                        net_en(c, clock, ret=-115, port=8080), net_en(c, clock, family="unix", address="/s"),
                        net_en(c, clock, Op.NET_LISTEN, "0.0.0.0", 80)]
            clock.t += 0.5
        return out

    def run(inline: bool, mode_switch: bool, root):
        monkeypatch.setattr(engine_mod, "_OPEN", Op.FILE_OPEN if inline else object())
        monkeypatch.setattr(engine_mod, "_CONNECT", Op.NET_CONNECT if inline else object())
        clock = Clock()
        e = engine(root, clock)
        a, b = container("c1", cg=1001), container("c2", pod="api-1", ns="other", cg=1002)
        for c in (a, b):
            e.on_container("task", c)
        assert e.observe_batch(service(a, clock) + service(b, clock), set()) == []
        if mode_switch:
            learn_and_lock(e, a, clock)
        evs = events(a, b, clock)
        raised = e.observe_batch(evs, {3}) if inline else [
            (i, al) for i, en in enumerate(evs) for _, al in e.observe_batch([en], {0} if i == 3 else set())]
        profs = {st.profile.key: (st.profile.mode, {k: dict(v) for k, v in st.profile.items.items()},
                                  {k: dict(v) for k, v in st.profile.deviations.items()}, st.touched)
                 for st in e._by_cid.values()}
        return profs, [(i, [x.output for x in al]) for i, al in raised]

    for mode_switch in (False, True):
        ref = run(False, mode_switch, tmp_path / f"ref{mode_switch}")
        assert run(True, mode_switch, tmp_path / f"inline{mode_switch}") == ref
        assert len(ref[0]) == 2
        assert sorted(v[1]["write"]["/tmp/app"][2] for v in ref[0].values()) == [5, 13 if mode_switch else 11]
        assert any(v[2]["write"] for v in ref[0].values()) == mode_switch  # monitoring: new directories flagged
        assert sorted(v[1]["peer"]["tcp/127.0.0.1:8080"][2] for v in ref[0].values()) == (
            [7, 20] if mode_switch else [7, 19])
