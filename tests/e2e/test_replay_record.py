"""`nodewarden run --record FILE` records the live ring buffer; the recording replays through the real
Pipeline without the kernel and gives the same kernel events the live agent printed."""

from __future__ import annotations

import os
import subprocess

import pytest

from agent.config import Config
from agent.outputs.metrics import Metrics
from agent.pipeline import Pipeline
from agent.sensors.replay import ReplayProbes, read_batches
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e


def test_a_live_recording_replays_to_the_same_events(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(tmp_path / "state"))
    # only what the kernel recorded: samplers' records (host.resources) are not in a recording
    monkeypatch.setenv("NODEWARDEN_RESOURCES_ENABLED", "false")
    rec = tmp_path / "run.rec"
    agent = AgentProcess("--no-containers", "--families", "process,file", "--record", str(rec))
    marker = f"nw-replay-{os.getpid()}"
    try:
        subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
        agent.wait_for(lambda r: r.get("process.args") == ["/bin/echo", marker], timeout=20)
    finally:
        assert agent.stop() == 0
    batches = read_batches(str(rec))
    assert sum(map(len, batches)) > 0
    live = [r for r in agent.records if not r["event.name"].startswith("agent.")]

    out: list[dict] = []
    cfg = Config()
    cfg.output.show_fork = True  # as AgentProcess runs it
    p = Pipeline(cfg, [out.extend], metrics=Metrics(), probes=ReplayProbes(batches, ("process", "file")))
    p.start()
    p.stop()  # drains every recorded batch
    replayed = [r for r in out if not r["event.name"].startswith("agent.")]
    assert p.drops["decode"] == 0 and p.received == sum(map(len, batches))
    # not the timestamp: the replay converts boot time to wall time with its own clock offset (ns apart)
    key = ("event.name", "process.pid", "process.thread.id", "file.path", "process.args", "process.exit.code")
    assert [tuple(r.get(k) for k in key) for r in replayed] == [tuple(r.get(k) for k in key) for r in live]
    assert any(r.get("process.args") == ["/bin/echo", marker] for r in replayed)
