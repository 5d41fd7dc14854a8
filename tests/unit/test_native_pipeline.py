"""The whole worker path three ways, each in its own interpreter: pure Python (NODEWARDEN_NATIVE=0, the
reference), compiled decoders and flattener with every record's dict (lines-off), and compiled with the
records encoded without dicts (the default: JSON lines when every output is the JSON log; lines and Events
with an exporter beside it). The same recorded batches (bench/pipeline.py's mix, a container's cgroup
appearing mid-batch, malformed records) must give the same JSON log byte for byte, the same exported
events (the spooled Events, read back as records), the same drop counters and the same events-by-name
metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.sensors import native
from agent.sensors.replay import MAGIC, write_batch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import io, json, sys
from bench.pipeline import _containers
from agent.config import Config
from agent.detect.engine import build
from agent.outputs.log import JsonLog
from agent.pipeline import Pipeline
from agent.sensors import native
from agent.sensors.replay import ReplayProbes, read_batches

out = open(sys.argv[2], "wb")
cfg = Config()
kernel_rules = None
if sys.argv[3] == "forks":  # fork records written, and the kernel's exec rules named (their execs take Python)
    cfg.output.show_fork = True
    kernel_rules = lambda rule, cgroup: ("execution", f"kernel rule {rule}")
outputs = [JsonLog(out).emit]
exp = None
if sys.argv[3] == "exporter":  # beside the log, as the agent runs with a collector; its threads not started
    from agent.outputs.grpc_exporter import Exporter, ExporterConfig
    exp = Exporter(ExporterConfig(address="unix:/nonexistent", node="n1", agent_id="a1", boot_id="b1",
                                  spool_dir=sys.argv[4], queue_size=1 << 20))
    exp.spool.open()
    outputs.append(exp.submit_batch)
p = Pipeline(cfg, outputs, containers=_containers(), probes=ReplayProbes([]), detector=build(None)[0],
             describe_rule=kernel_rules)
p.clock.offset = 1_700_000_000_000_000_000
for batch in read_batches(sys.argv[1]):
    p._process(batch)
p._release(force=True)
p._flush_alerts(force=True)
out.close()
if exp is not None:  # what the encoder thread would do: the queue into the spool; then read back, as records
    import orjson
    from nwwire.codec import to_record
    from agent.outputs.grpc_exporter import cpb
    exp._spool_batch(list(exp._q))
    with open(sys.argv[2] + ".events", "wb") as f:
        pos = None
        while (got := exp.spool.read_next(pos)) is not None:
            pos, _, payload = got
            for ev in cpb.Batch.FromString(payload).events:
                f.write(orjson.dumps(to_record(ev), option=orjson.OPT_APPEND_NEWLINE))
    exp.spool.close()
events = {s.labels["event"]: s.value for m in p.metrics.events.collect() for s in m.samples
          if s.name.endswith("_total")}
print(json.dumps({"status": native.STATUS, "drops": dict(p.drops), "events": events,
                  "mode": p._encodings()[0], "attribution": dict(p.attribution)}))
"""


def _records() -> list[bytes]:
    from bench.pipeline import CGROUP_POD, MNTNS_POD, _prologue, _round
    from tests.unit.replay_records import (
        EXEC_EVENT,
        PID,
        Op,
        _pack,
        cgroup_rec,
        exec_rec,
        exit_rec,
        fork_rec,
        header,
        open_rec,
    )
    from tests.unit.test_native_decode import _edge_records

    base = PID + 1000
    young = [cgroup_rec(9101, "/kubepods/pod9/" + "ab" * 32), open_rec("/tmp/young", cgroup_id=9101, pid=base + 1),
             # a process's life in the young cgroup: its fork, exec and exit held with its events
             fork_rec(base + 7, pid=base + 1, cgroup_id=9101),
             exec_rec("/bin/id", ["id"], pid=base + 7, cgroup_id=9101),
             open_rec("/tmp/young2", cgroup_id=9101, pid=base + 7), exit_rec(0, pid=base + 7, cgroup_id=9101)]
    pod = [open_rec("/srv/app.log", cgroup_id=CGROUP_POD, mntns=MNTNS_POD, pid=base + 101, ppid=base + 100)]
    fn = b"/tmp/x"
    kernel = [_pack(EXEC_EVENT, header(Op.EXEC, pid=base + 8, ppid=base), filename_len=len(fn), args_len=2,
                    filename=fn, args=b"x\0", action=action, rule=(3 << 16) | 1) for action in (1, 2)]
    # a pid's exec, exit and reuse within one batch; an exec of a pid the table never saw forked
    reuse = [fork_rec(base + 9, pid=base), exec_rec("/bin/a", ["a"], pid=base + 9, ppid=base),
             open_rec("/tmp/a", pid=base + 9, ppid=base), exit_rec(1, pid=base + 9, ppid=base),
             fork_rec(base + 9, pid=base + 100, cgroup_id=CGROUP_POD, mntns=MNTNS_POD),
             exec_rec("/bin/b", ["b", "-x"], pid=base + 9, ppid=base + 100, cgroup_id=CGROUP_POD, mntns=MNTNS_POD),
             open_rec("/tmp/b", pid=base + 9, ppid=base + 100, cgroup_id=CGROUP_POD, mntns=MNTNS_POD),
             exec_rec("/bin/c", ["c"], pid=base + 77, ppid=base + 76)]
    return (_prologue(base) + _round(base) + young + pod + kernel + reuse + _edge_records() + _round(base + 10)
            + reuse)


def test_python_compiled_and_lines_write_the_same_log(tmp_path):
    if native.MODULE is None:
        pytest.skip(f"native module not loaded: {native.STATUS}")
    rec = tmp_path / "mix.nwreplay"
    recs = _records()
    with open(rec, "wb") as f:
        f.write(MAGIC)
        for i in range(0, len(recs), 100):
            write_batch(f, recs[i : i + 100])
    runs = {}
    for variant in ("plain", "forks", "exporter"):
        for mode in ("0", "lines-off", "1"):
            log = tmp_path / f"out-{variant}-{mode}.json"
            env = dict(os.environ, NODEWARDEN_NATIVE=mode, PYTHONPATH=ROOT)
            spool = tmp_path / f"spool-{variant}-{mode}"
            done = subprocess.run([sys.executable, "-c", CHILD, str(rec), str(log), variant, str(spool)], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            exported = log.with_name(log.name + ".events")
            runs[(variant, mode)] = (json.loads(done.stdout.splitlines()[-1]), log.read_bytes(),
                                     exported.read_bytes() if exported.exists() else None)
    forks = runs[("forks", "0")][1]
    assert b'"event.name":"process.fork"' in forks and b'"rule.name":"kernel rule 196609"' in forks
    assert b'"event.name":"enforcement.block"' in forks
    for variant, held in (("plain", 4), ("forks", 5), ("exporter", 4)):
        _same_three_ways({mode: runs[(variant, mode)] for mode in ("0", "lines-off", "1")}, held,
                         3 if variant == "exporter" else 1)
    assert runs[("exporter", "1")][1] == runs[("plain", "1")][1]  # the exporter beside it changes no line


def _same_three_ways(runs: dict, held: int, mode_on: int) -> None:
    assert runs["0"][0]["status"].startswith("python")
    assert runs["1"][0]["mode"] == mode_on and runs["lines-off"][0]["mode"] == 0
    ref_info, ref_log, ref_events = runs["0"]
    assert ref_log.count(b"\n") > 400 and b'"event.name":"alert"' in ref_log
    if ref_events is not None:  # every record exported, seq 1.. in the log's order
        assert ref_events.count(b"\n") == ref_log.count(b"\n")
        assert b'"seq":1,' in ref_events and b'"host.name":"n1"' in ref_events
    for mode in ("lines-off", "1"):
        info, log, events = runs[mode]
        assert log == ref_log, mode
        assert events == ref_events, mode
        assert info["drops"] == ref_info["drops"] and info["events"] == ref_info["events"], mode
        assert info["attribution"] == ref_info["attribution"], mode
    assert ref_info["drops"]["decode"] == 7  # the malformed records
    # the young cgroup's events (its opens, exec and exit; a fork when written), held, its container never known
    assert ref_info["attribution"] == {"unknown": held}
