"""The whole worker path three ways, each in its own interpreter: pure Python (NODEWARDEN_NATIVE=0, the
reference), compiled decoders and flattener with every record's dict (lines-off), and compiled with the
JSON lines written without dicts (the default when every output is the JSON log). The same recorded
batches (bench/pipeline.py's mix, a container's cgroup appearing mid-batch, malformed records) must
give the same JSON log byte for byte, the same drop counters and the same events-by-name metrics."""

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
p = Pipeline(Config(), [JsonLog(out).emit], containers=_containers(), probes=ReplayProbes([]), detector=build(None)[0])
p.clock.offset = 1_700_000_000_000_000_000
for batch in read_batches(sys.argv[1]):
    p._process(batch)
p._release(force=True)
p._flush_alerts(force=True)
out.close()
events = {s.labels["event"]: s.value for m in p.metrics.events.collect() for s in m.samples
          if s.name.endswith("_total")}
print(json.dumps({"status": native.STATUS, "drops": dict(p.drops), "events": events,
                  "lines": p._line_maker() is not None, "attribution": dict(p.attribution)}))
"""


def _records() -> list[bytes]:
    from bench.pipeline import CGROUP_POD, MNTNS_POD, _prologue, _round
    from tests.unit.replay_records import PID, cgroup_rec, open_rec
    from tests.unit.test_native_decode import _edge_records

    base = PID + 1000
    young = [cgroup_rec(9101, "/kubepods/pod9/" + "ab" * 32), open_rec("/tmp/young", cgroup_id=9101, pid=base + 1)]
    pod = [open_rec("/srv/app.log", cgroup_id=CGROUP_POD, mntns=MNTNS_POD, pid=base + 101, ppid=base + 100)]
    return _prologue(base) + _round(base) + young + pod + _edge_records() + _round(base + 10)


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
    for mode in ("0", "lines-off", "1"):
        log = tmp_path / f"out-{mode}.json"
        env = dict(os.environ, NODEWARDEN_NATIVE=mode, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-c", CHILD, str(rec), str(log)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[mode] = (json.loads(done.stdout.splitlines()[-1]), log.read_bytes())
    assert runs["0"][0]["status"].startswith("python")
    assert runs["1"][0]["lines"] and not runs["lines-off"][0]["lines"]
    ref_info, ref_log = runs["0"]
    assert ref_log.count(b"\n") > 400 and b'"event.name":"alert"' in ref_log
    for mode in ("lines-off", "1"):
        info, log = runs[mode]
        assert log == ref_log, mode
        assert info["drops"] == ref_info["drops"] and info["events"] == ref_info["events"], mode
        assert info["attribution"] == ref_info["attribution"], mode
    assert ref_info["drops"]["decode"] == 7  # the malformed records
    assert ref_info["attribution"] == {"unknown": 1}  # the young cgroup's open, held, its container never known
