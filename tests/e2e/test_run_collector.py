"""`nodewarden run --collector embedded`: the one-node loop, kernel event to a stored, queryable row."""

import os
import subprocess
import sys
import time

import orjson
import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF programs")
def test_events_reach_the_embedded_collector(tmp_path, monkeypatch):
    sock = f"unix:{tmp_path}/collector.sock"
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NODEWARDEN_EXPORT_EMBEDDED_LISTEN", sock)
    agent = AgentProcess("--collector", "embedded", "--no-containers")
    try:
        marker = f"nw-marker-{os.getpid()}"
        subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
        agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("process.args") == ["/bin/echo", marker])
        deadline = time.monotonic() + 15
        while True:
            out = subprocess.run([sys.executable, "-m", "agent.cli", "events", "--collector", sock, "--kind",
                                  "process.exec", "--text", marker, "--json"], capture_output=True, check=True)
            rows = [r for line in out.stdout.splitlines()  # the query's own argv holds the marker too
                    if (r := orjson.loads(line))["process.executable.path"] == "/bin/echo"]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [r["process.args"] for r in rows] == [["/bin/echo", marker]]
        assert rows[0]["seq"] >= 1 and rows[0]["host.name"]
    finally:
        assert agent.stop() == 0
