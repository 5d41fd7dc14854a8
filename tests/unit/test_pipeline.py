"""The real Pipeline on a replay source: recorded ring-buffer batches, no kernel (agent/sensors/replay.py).

Everything from decode to the outputs is the real code; only the ring buffer is a recording.
"""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import Config
from agent.enrich.container_table import ContainerTable
from agent.enrich.enricher import ContainerResolver
from agent.events import Op
from agent.ledger import Ledger
from agent.outputs.metrics import Metrics
from agent.pipeline import Pipeline
from agent.sensors.replay import MAGIC, RecordingReader, ReplayError, ReplayProbes, ReplayReader, read_batches
from tests.unit.replay_records import PID, cgroup_rec, exec_rec, exit_rec, fork_rec, open_rec

CID = "c0ffee" * 10 + "abcd"  # 64 hex: a container id as CRI writes it
CG = 9001  # the container's cgroup id


class Sink:
    """An output that keeps what it is handed, in order."""

    def __init__(self):
        self.records: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, records: list[dict]) -> None:
        with self._cond:
            self.records.extend(records)
            self._cond.notify_all()

    def names(self) -> list[str]:
        return [r["event.name"] for r in self.records]

    def wait_for(self, pred, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (found := [r for r in self.records if pred(r)]):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; got {self.names()}"
                self._cond.wait(left)
            return found


def _config(**agent) -> Config:
    cfg = Config()
    cfg.agent.drops_interval = 0.1
    cfg.agent.batch_interval = 0.0
    for k, v in agent.items():
        setattr(cfg.agent, k, v)
    return cfg


def _pipeline(batches, cfg=None, table=None, ledger=None, kernel_drops=None):
    sink = Sink()
    resolver = ContainerResolver(table) if table is not None else None
    p = Pipeline(cfg or _config(), [sink], metrics=Metrics(), containers=resolver,
                 probes=ReplayProbes(batches, kernel_drops=kernel_drops), ledger=ledger)
    return p, sink


def _run(p: Pipeline) -> None:
    """Start, let the reader hand out every batch, stop (which drains and reports the last drops)."""
    p.start()
    deadline = time.monotonic() + 10
    while not p._reader.done and time.monotonic() < deadline:
        time.sleep(0.01)
    p.stop()


def _metric(p: Pipeline, name: str) -> dict[tuple, float]:
    text = generate_latest(p.metrics.registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def _container(table: ContainerTable, cgroup_id: int = CG) -> None:
    def fn(e):
        e.cgroup_id, e.state, e.image, e.pid = cgroup_id, "running", "nodewarden.test/busybox:1", PID
        return "task"

    table.update("default", CID, fn)


def test_records_come_out_in_kernel_order_across_batches():
    batches = [
        [exec_rec("/bin/sh", ["sh", "-c", "x"]), open_rec("/tmp/a")],
        [open_rec("/tmp/b"), exit_rec(3)],
        [exec_rec("/bin/true", ["true", "last"], pid=PID + 1)],
    ]
    p, sink = _pipeline(batches)
    _run(p)
    kernel = [r for r in sink.records if not r["event.name"].startswith("agent.")]
    assert [(r["event.name"], r.get("file.path"), r.get("process.args")) for r in kernel] == [
        ("process.exec", None, ["sh", "-c", "x"]), ("file.open", "/tmp/a", None), ("file.open", "/tmp/b", None),
        ("process.exit", None, None), ("process.exec", None, ["true", "last"])]
    assert kernel[3]["process.exit.code"] == 3
    assert sink.names()[0] == "agent.ready"
    assert p.received == 5 and not +p.drops
    # the exec taught the process table: the file events of that pid name its program
    assert kernel[1]["process.executable.path"] == "/bin/sh" and kernel[1]["process.command_line"] == "sh -c x"


def test_fork_feeds_the_lineage_and_is_not_printed_unless_asked():
    batches = [[exec_rec("/bin/bash", ["bash"]), fork_rec(PID + 5), open_rec("/tmp/kid", pid=PID + 5, ppid=PID)]]
    p, sink = _pipeline(batches)
    _run(p)
    assert "process.fork" not in sink.names()
    (kid,) = [r for r in sink.records if r.get("file.path") == "/tmp/kid"]
    assert kid["process.executable.path"] == "/bin/bash"  # the child runs its parent's image until it execs
    assert kid["process.parent.executable.path"] == "/bin/bash"


def test_undecodable_records_are_counted_reported_and_the_rest_flow():
    short = exec_rec("/bin/sh", ["sh"])[:100]  # cut inside the exec body
    unknown = bytes([200]) + open_rec("/tmp/x")[1:]  # an op no sensor decodes
    batches = [[short, open_rec("/tmp/ok"), unknown, b""]]
    p, sink = _pipeline(batches)
    _run(p)
    assert [r["file.path"] for r in sink.records if r["event.name"] == "file.open"] == ["/tmp/ok"]
    assert p.drops["decode"] == 3
    reports = [r for r in sink.records if r["event.name"] == "agent.drops"]
    assert sum(r["nodewarden.drops.new"].get("decode", 0) for r in reports) == 3
    assert reports[-1]["nodewarden.drops.total"]["decode"] == 3
    assert _metric(p, "nodewarden_drops_total")[(("stage", "decode"),)] == 3


def test_kernel_drops_become_counter_increments_not_gauge_sets():
    batches = [[open_rec("/tmp/a")]]
    probes_drops = {"process": 7}
    p, sink = _pipeline(batches, kernel_drops=probes_drops)
    p.start()
    sink.wait_for(lambda r: r["event.name"] == "agent.drops")
    p.probes.drops["process"] = 10  # the kernel's per-CPU sum grew by 3
    sink.wait_for(lambda r: r["event.name"] == "agent.drops" and r["nodewarden.drops.new"].get("kernel.process") == 3)
    p.stop()
    m = _metric(p, "nodewarden_drops_total")
    assert m[(("stage", "kernel.process"),)] == 10 and m[(("stage", "kernel.file"),)] == 0
    text = generate_latest(p.metrics.registry).decode()
    assert "# TYPE nodewarden_drops_total counter" in text and "# TYPE nodewarden_attribution_total counter" in text


def test_hold_releases_with_the_container_once_containerd_names_it():
    table = ContainerTable()
    batches = [[cgroup_rec(CG, f"/default/{CID}"), exec_rec("/bin/sh", ["sh", "first"], cgroup_id=CG)]]
    p, sink = _pipeline(batches, cfg=_config(hold_s=30.0), table=table)
    p.start()
    deadline = time.monotonic() + 10
    while len(p.hold) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(p.hold) == 1 and "process.exec" not in sink.names()  # waiting: its container is not known yet
    _container(table)
    (ex,) = sink.wait_for(lambda r: r["event.name"] == "process.exec")
    p.stop()
    assert ex["container.id"] == CID and ex["container.image.name"] == "nodewarden.test/busybox:1"
    assert p.attribution == {"resolved_after_hold": 1}
    assert _metric(p, "nodewarden_attribution_total") == {(("result", "resolved_after_hold"),): 1}


@pytest.mark.parametrize("path, want, result", [
    (f"/default/{CID}", "unknown", "unknown"),  # the path names a container that never appeared
    ("/system.slice/cron.service", None, "host_after_hold"),  # a host service's new cgroup
])
def test_hold_runs_out_without_a_container(path, want, result):
    table = ContainerTable()
    batches = [[cgroup_rec(CG, path), exec_rec("/bin/sh", ["sh", "held"], cgroup_id=CG), open_rec("/tmp/host")]]
    p, sink = _pipeline(batches, cfg=_config(hold_s=0.2), table=table)
    p.start()
    (ex,) = sink.wait_for(lambda r: r["event.name"] == "process.exec")
    p.stop()
    assert ex.get("container.id") == want
    assert p.attribution == {result: 1}
    # the host event behind it was not held, so it went out first
    names = [r["event.name"] for r in sink.records if r["event.name"] in ("process.exec", "file.open")]
    assert names == ["file.open", "process.exec"]


def test_stop_releases_what_is_still_held():
    table = ContainerTable()
    batches = [[cgroup_rec(CG, f"/default/{CID}"), exec_rec("/bin/sh", ["sh"], cgroup_id=CG)]]
    p, sink = _pipeline(batches, cfg=_config(hold_s=60.0), table=table)
    _run(p)
    (ex,) = [r for r in sink.records if r["event.name"] == "process.exec"]
    assert ex["container.id"] == "unknown" and p.attribution == {"unknown": 1} and len(p.hold) == 0


def test_hold_overflow_sends_the_oldest_early_and_counts_it():
    table = ContainerTable()
    execs = [exec_rec("/bin/sh", ["sh", str(i)], cgroup_id=CG, pid=PID + i) for i in range(5)]
    p, sink = _pipeline([[cgroup_rec(CG, f"/default/{CID}"), *execs]], cfg=_config(hold_s=60.0, hold_max=3),
                        table=table)
    _run(p)
    assert [r["process.args"][1] for r in sink.records if r["event.name"] == "process.exec"] == list("01234")
    assert p.attribution == {"held_overflow": 2, "unknown": 5}


def test_an_output_that_raises_is_counted_and_the_others_still_get_everything():
    def broken(records):
        raise OSError("disk full")

    sink = Sink()
    p = Pipeline(_config(), [broken, sink], metrics=Metrics(), probes=ReplayProbes([[open_rec("/tmp/a")]]))
    _run(p)
    assert "file.open" in sink.names()
    assert p.drops["output"] >= 2  # agent.ready and the file event, at least


def test_crash_ledger_counts_what_a_killed_run_held_and_a_clean_run_leaves_nothing(tmp_path):
    path = str(tmp_path / "ledger")
    p, _ = _pipeline([[open_rec("/tmp/a"), open_rec("/tmp/b")]], ledger=Ledger(path))
    _run(p)
    p.ledger.close()  # the agent closes it after its exporter (agent/node.py)
    led = Ledger(path)
    assert led.open() == 0 and led.previous["kernel_read"] == led.previous["kernel_settled"] == 2
    # As a SIGKILL leaves it: 40 records read from the ring buffer, 25 through the worker.
    led.set("kernel_read", 40)
    led.set("kernel_settled", 25)
    led.close()
    p, sink = _pipeline([[open_rec("/tmp/c")]], ledger=Ledger(path))
    p.start()
    (rep,) = sink.wait_for(lambda r: r["event.name"] == "agent.drops")
    p.stop()
    assert rep["nodewarden.drops.new"] == {"crash": 15}
    assert _metric(p, "nodewarden_drops_total")[(("stage", "crash"),)] == 15


def test_a_second_agent_on_the_same_state_dir_gets_no_ledger(tmp_path):
    first, second = Ledger(str(tmp_path / "ledger")), Ledger(str(tmp_path / "ledger"))
    first.open()
    assert second.open() == 0
    second.add("kernel_read", 5)  # counts nothing on disk
    first.close()
    assert Ledger(str(tmp_path / "ledger")).open() == 0


@pytest.mark.parametrize("junk", [b"", b"\x01\x02", bytes(range(256)) * 3])
def test_a_ledger_file_of_junk_counts_no_crash_loss_and_is_taken_over(tmp_path, junk):
    """A truncated, short or foreign file where the ledger lives: no previous run is assumed (no magic),
    nothing raises, and this run's counts start from zero in it."""
    path = tmp_path / "ledger"
    path.write_bytes(junk)
    led = Ledger(str(path))
    assert led.open() == 0
    led.add("kernel_read", 3)
    led.close()
    again = Ledger(str(path))
    assert again.open() == 3 and again.previous["kernel_read"] == 3  # read but never settled: counted
    again.close()


def test_replay_file_round_trip_and_bad_files(tmp_path):
    batches = [[open_rec("/tmp/a"), exit_rec()], [exec_rec("/bin/true", ["true"])]]
    path = str(tmp_path / "rec")
    rec = RecordingReader(ReplayReader(batches), path)
    while rec.read(4096):
        pass
    rec.close()
    assert read_batches(path) == batches
    with open(path, "ab") as f:
        f.write(b"\x05\0\0\0\x10\0")  # a frame cut short by a kill: the replay ends before it
    assert read_batches(path) == batches
    p, sink = _pipeline(ReplayProbes.from_file(path)._reader._batches)
    _run(p)
    assert [r["event.name"] for r in sink.records if not r["event.name"].startswith("agent.")] == [
        "file.open", "process.exit", "process.exec"]
    (tmp_path / "junk").write_bytes(b"not a recording")
    with pytest.raises(ReplayError, match="not a NodeWarden recording"):
        read_batches(str(tmp_path / "junk"))
    with pytest.raises(ReplayError, match="cannot read recording"):
        read_batches(str(tmp_path / "absent"))
    assert MAGIC.endswith(b"\n")


def test_replay_reader_splits_a_batch_bigger_than_the_read():
    r = ReplayReader([[b"a", b"b", b"c"]])
    assert r.read(2) == [b"a", b"b"] and r.read(2) == [b"c"] and r.read(2) == [] and r.done
    assert Op.EXEC in ReplayProbes([]).decoders


def test_kernel_folded_sends_are_counted_beside_the_drops():
    """UDP sends the kernel folded (probes/net.bpf.c) are not lost, but not sent either: they are counted
    in the drop totals as kernel.net_sendto_folded, as folded alerts are under detect.folded."""

    class Folding(ReplayProbes):
        def kernel_folded(self):
            return {"net_sendto_folded": 7}

    p, _ = _pipeline([])
    p.probes = Folding([])
    assert p.drop_totals()["kernel.net_sendto_folded"] == 7


# -- the profiles stage (issue 13) ----------------------------------------------------------------------


def _profiles(tmp_path, table, learned: tuple[str, ...], mode: str = "monitoring"):
    """The real profile engine over a state dir holding one profile for the test container's workload."""
    from agent.config import ProfilesConfig
    from agent.detect.profile import Profile, build, workload_of
    from agent.detect.profile.store import ProfileStore
    from agent.policy.profiles import ProfilePolicy

    _container(table)
    p = Profile(workload_of(table.lookup("default", CID)), time.time() - 100, mode=mode)
    for path in learned:  # run as uid 1000 by a parent the table does not know ("?"), as the replay's are
        for kind, item in (("exec", path), ("edge", f"?>{path}"), ("user", "1000")):
            p.learn(kind, item, time.time() - 50, 512)
    ProfileStore(str(tmp_path)).save(p)
    return build(ProfilesConfig(state_dir=str(tmp_path)), ProfilePolicy())


def test_profile_deviation_follows_its_event_and_learned_behaviour_is_quiet(tmp_path):
    table = ContainerTable()
    profiles = _profiles(tmp_path, table, ("/bin/sh",))
    batches = [[exec_rec("/bin/sh", ["sh"], cgroup_id=CG), exec_rec("/bin/new", ["new"], cgroup_id=CG, pid=PID + 1),
                exec_rec("/bin/new", ["new", "again"], cgroup_id=CG, pid=PID + 2)]]
    p = Pipeline(_config(), [sink := Sink()], metrics=Metrics(), containers=ContainerResolver(table),
                 probes=ReplayProbes(batches), profiles=profiles)
    _run(p)
    kernel = [(r["event.name"], r.get("process.pid"), r.get("rule.id")) for r in sink.records
              if r["event.name"] in ("process.exec", "alert")]
    # one alert, right after the first exec of the new program; the learned one and the repeat say nothing
    assert kernel == [("process.exec", PID, None), ("process.exec", PID + 1, None),
                      ("alert", PID + 1, "behavior.deviation"), ("process.exec", PID + 2, None)]
    (a,) = [r for r in sink.records if r["event.name"] == "alert"]
    assert a["container.id"] == CID and "/bin/new" in a["alert.output"]
    assert _metric(p, "nodewarden_alerts_total") == {(("rule", "behavior.deviation"), ("severity", "high")): 1}


def test_what_a_rule_flags_is_never_learned(tmp_path):
    """nw.miner_command_line (a bundled rule) flags this exec while the profile learns: the program is
    not learned, so once the profile is locked it is still a deviation."""
    from agent.detect.engine import build as build_rules

    table = ContainerTable()
    profiles = _profiles(tmp_path, table, ("/bin/sh",), mode="learning")
    miner = exec_rec("/bin/true", ["true", "-o", "stratum+tcp://pool:3333"], cgroup_id=CG)
    p = Pipeline(_config(), [sink := Sink()], metrics=Metrics(), containers=ContainerResolver(table),
                 probes=ReplayProbes([[miner, exec_rec("/bin/ok", ["ok"], cgroup_id=CG, pid=PID + 1)]]),
                 detector=build_rules(None)[0], profiles=profiles)
    _run(p)
    assert [r["rule.id"] for r in sink.records if r["event.name"] == "alert"] == ["nw.miner_command_line"]
    (prof,) = profiles.profiles()
    assert prof.known("exec", "/bin/ok") is not None and prof.known("exec", "/bin/true") is None


def test_the_queue_is_bounded_in_bytes_and_what_it_refuses_is_counted():
    """A stalled worker: the reader queues batches until their bytes pass queue_max_bytes (the count bound
    is far away), then drops whole batches, each record counted under stage "queue"; produced ==
    delivered + dropped once the worker goes on."""
    batches = [[open_rec(f"/tmp/q{i}-{j}") for j in range(20)] for i in range(12)]
    size = sum(map(len, batches[0]))
    gate = threading.Event()
    sink = Sink()

    def slow(records):
        gate.wait(10)  # the worker is held in its first delivery
        sink(records)

    cfg = _config(queue_batches=64, queue_max_bytes=3 * size, batch_max=20)
    p = Pipeline(cfg, [slow], metrics=Metrics(), probes=ReplayProbes(batches))
    p.start()
    deadline = time.monotonic() + 10
    while not p._reader.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p._q_put_bytes - p._q_taken_bytes <= 3 * size  # never more than the bound queued
    assert p.drops["queue"] > 0 and p.drops["queue"] % 20 == 0
    gate.set()
    p.stop()
    opens = [r for r in sink.records if r["event.name"] == "file.open"]
    assert p.received == 240 and len(opens) + p.drops["queue"] == 240
    assert _metric(p, "nodewarden_drops_total")[(("stage", "queue"),)] == p.drops["queue"]
