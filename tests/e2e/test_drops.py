"""Drops that are counted: a SIGKILLed agent's in-memory loss reported on its next start (stage crash),
and the drop and attribution counters as Prometheus counters that promtool accepts, scraped from the
real metrics server of a real agent with containerd and the image gate on."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.ledger import _SLOTS, SPOOL_COUNT_FILE, read_u64
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

# ~5,000 writing opens a second (the rate of the report in issue 9), until killed.
_LOAD = """
import sys, time
path, rate = sys.argv[1], 5000
t0, n = time.monotonic(), 0
while True:
    for _ in range(50):
        open(path, "w").close()
    n += 50
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ledger(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    return {name: struct.unpack_from("<Q", data, 8 * i)[0] for i, name in enumerate(_SLOTS)}


def _stored_by_boot(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT s.boot_id, count(e.id) FROM streams s LEFT JOIN events e ON e.stream = s.id "
                           "GROUP BY s.id ORDER BY s.id").fetchall()
    finally:
        con.close()
    return dict(rows)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _samples(text: str, name: str) -> dict[str, float]:
    return {next(iter(s.labels.values()), ""): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name}


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    state = tmp_path / "state"
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(state))
    monkeypatch.setenv("NODEWARDEN_EXPORT_EMBEDDED_LISTEN", f"unix:{tmp_path}/collector.sock")
    monkeypatch.setenv("NODEWARDEN_ENFORCE_NRI", "false")
    monkeypatch.setenv("NODEWARDEN_ENFORCE_GATE_SOCKET", str(tmp_path / "gate.sock"))
    monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(tmp_path / "cache.db"))
    return state


def test_sigkill_under_load_is_counted_as_crash_drops_on_the_next_start(agent_env, tmp_path, monkeypatch):
    state = agent_env
    # the load reopens one file: folded in the kernel, it would send one record a second (tests/kernel/test_fold.py)
    monkeypatch.setenv("NODEWARDEN_PROBES_FOLD_WINDOW", "0")
    args = ("--collector", "embedded", "--no-containers", "--families", "process,file")
    first = AgentProcess(*args)
    load = subprocess.Popen([sys.executable, "-c", _LOAD, str(tmp_path / "load")])
    try:
        first.wait_for(lambda r: r.get("file.path") == str(tmp_path / "load"), timeout=20)
        time.sleep(3)  # ~15,000 events in flight through queue, hold, exporter queue and spool
        assert first.stop(9) == -9
    finally:
        load.kill()
        load.wait()
    killed = _ledger(state / "ledger")
    appended = read_u64(str(state / "spool" / SPOOL_COUNT_FILE))
    time.sleep(0.5)  # the stdout reader thread takes the last lines out of the pipe
    printed = len(first.records)
    in_pipeline = killed["kernel_read"] - killed["kernel_settled"]
    spooled = appended - killed["spool_base"]
    assert killed["kernel_read"] > 10_000 and 0 <= in_pipeline < 64 * 4096
    # What the ledger says was handed to the outputs is what the JSON log printed (the log is the first
    # output; the ledger counts after the outputs return, so a kill between can leave it one batch short).
    assert 0 <= printed - killed["handed"] <= 4096, (printed, killed)

    second = AgentProcess(*args)
    try:
        (rep,) = second.wait_for(lambda r: r["event.name"] == "agent.drops" and "crash" in r["nodewarden.drops.new"],
                                 timeout=20)
        crash = rep["nodewarden.drops.new"]["crash"]
        # The restarted exporter resends what the killed one spooled; the collector keeps each once.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = list(_stored_by_boot(state / "events.db").values())
            if stored and stored[0] >= spooled:
                break
            time.sleep(0.5)
    finally:
        assert second.stop() == 0
    stored_first = stored[0]
    # Independent counts: the collector's rows of the killed run and the lines it printed.
    assert stored_first == spooled, (stored_first, spooled)
    assert crash == in_pipeline + killed["handed"] - spooled - killed["exporter_lost"]
    truth = in_pipeline + printed - stored_first  # read, or printed, but never stored
    assert abs(crash - truth) <= 4096 and crash > 0, (crash, truth, killed)
    print(f"killed at {killed['kernel_read']} records read: {crash} lost in memory "
          f"({in_pipeline} in the pipeline, {killed['handed'] - spooled} in the exporter's queue); "
          f"{stored_first} stored, {printed} printed")


def test_metrics_are_counters_promtool_accepts(agent_env, containerd, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("categories:\n  malware: {alert: low, block: high}\n")
    port = _free_port()
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(policy),
                         "--metrics", f"127.0.0.1:{port}")
    try:
        subprocess.run(["/bin/true"], check=True)
        deadline = time.monotonic() + 15
        while "imagegate.queue" not in (drops := _samples(text := _scrape(port), "nodewarden_drops_total")):
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
    finally:
        assert agent.stop() == 0
    assert "# TYPE nodewarden_drops_total counter" in text
    assert "# TYPE nodewarden_attribution_total counter" in text
    for stage in ("queue", "kernel.process", "containerd.events_dropped", "containerd.events_bad",
                  "imagegate.queue", "imagegate.emit"):
        assert drops[stage] >= 0, stage
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian's prometheus package); the counter checks above ran")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "counter metrics should have \"_total\" suffix" not in r.stdout + r.stderr
