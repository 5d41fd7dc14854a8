"""A real agent's /metrics (containerd, the image gate, the embedded collector on): build info, process
metrics, the image gate's verdicts and scans, enforcement blocks by point, the exporter's counters,
each matching what the agent printed; and `promtool check metrics` prints nothing (no warning at all)."""

from __future__ import annotations

import collections
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from tests.harness.containerd import unique_id, wait_until
from tests.kernel.conftest import AgentProcess
from tests.unit.imagegate_helpers import EICAR

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _series(text: str, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name}


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NODEWARDEN_EXPORT_COLLECTOR", "embedded")
    monkeypatch.setenv("NODEWARDEN_EXPORT_EMBEDDED_HTTP", "")
    monkeypatch.setenv("NODEWARDEN_EXPORT_EMBEDDED_LISTEN", f"unix:{tmp_path}/collector.sock")
    monkeypatch.setenv("NODEWARDEN_ENFORCE_NRI", "false")
    monkeypatch.setenv("NODEWARDEN_ENFORCE_GATE_SOCKET", str(tmp_path / "gate.sock"))
    monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(tmp_path / "cache.db"))


def test_real_agent_metrics_promtool_clean(agent_env, containerd, image_builder, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian's prometheus package)")
    eicar = image_builder("nodewarden.test/metrics-eicar:1", {"/opt/eicar.com": EICAR})
    tool = image_builder("nodewarden.test/metrics-deny:1", {"/opt/deny/tool": (b"#!/bin/sh\ntrue\n", 0o755)})
    policy = tmp_path / "policy.yaml"
    policy.write_text("categories:\n  malware: {alert: low, block: high}\n"
                      "runtime:\n  deny_exec:\n    - path: /opt/deny/*\n")
    port = _free_port()
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(policy),
                         "--metrics", f"127.0.0.1:{port}")
    cid, cid2 = unique_id("metrics"), unique_id("metrics")
    try:
        containerd.run(tool, "sleep", "60", cid=cid2)
        containerd.exec(cid2, "/bin/true", "ready")
        agent.wait_for(lambda r: r.get("container.id") == cid2 and r.get("process.args") == ["/bin/true", "ready"],
                       timeout=20)
        assert containerd.exec(cid2, "/opt/deny/tool", check=False).returncode == 128 + 9
        agent.wait_for(lambda r: r["event.name"] == "enforcement.block" and r.get("container.id") == cid2,
                       timeout=20)
        containerd.run(eicar, "sleep", "30", cid=cid)
        verdict = agent.wait_for(lambda r: r["event.name"] == "image.verdict" and r.get("container.id") == cid,
                                 timeout=60)[0]
        assert verdict["image.verdict"] == "block"
        time.sleep(1.5)  # a post-start kill, if any, is reported right after the verdict

        def sent():  # the embedded collector acknowledged something
            text = _scrape(port)
            return text if _series(text, "nodewarden_exporter_acked_total").get((), 0) > 0 else None

        assert wait_until(sent, timeout=20)
        # Scraped while the agent still runs, compared with what it printed before the scrape.
        printed = collections.Counter(r["event.name"] for r in agent.find(lambda r: True))
        blocks = collections.Counter(r["enforcement.point"]
                                     for r in agent.find(lambda r: r["event.name"] == "enforcement.block"))
        text = _scrape(port)
    finally:
        containerd.remove(cid)
        containerd.remove(cid2)
        assert agent.stop() == 0
    assert _series(text, "nodewarden_build_info") == {
        (("kernel", platform.release()), ("python", platform.python_version()), ("version", __version__)): 1}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert _series(text, name)[()] > 0, name
    assert _series(text, "nodewarden_imagegate_verdicts_total")[(("result", "block"),)] >= 1
    scans = sum(_series(text, "nodewarden_imagegate_scans_total").values())
    assert scans >= 1 and _series(text, "nodewarden_imagegate_scan_duration_seconds_count")[()] == scans
    assert "# TYPE nodewarden_imagegate_cache_hits_total counter" in text
    events = {dict(k)["event"]: v for k, v in _series(text, "nodewarden_events_total").items()}
    for name in ("agent.ready", "image.verdict"):  # counted once delivered: at least what was printed
        assert events[name] >= printed[name], name
    got = collections.Counter()
    for labels, v in _series(text, "nodewarden_enforcement_blocks_total").items():
        got[dict(labels)["point"]] += v
    assert blocks["kernel.exec"] >= 1 and all(got[p] >= n for p, n in blocks.items()), (got, blocks)
    exp = {n: _series(text, f"nodewarden_exporter_{n}") for n in ("submitted_total", "spooled_total", "acked_total")}
    assert exp["submitted_total"][()] >= exp["spooled_total"][()] >= exp["acked_total"][()] > 0
    assert {dict(k)["reason"] for k in _series(text, "nodewarden_exporter_drops_total")} >= {
        "queue_full", "spool_full", "encode_error"}
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    (tmp_path / "metrics.txt").write_text(text)  # for a look by hand (pytest --basetemp)
    print(f"{len(text.splitlines())} lines, {len(list(text_string_to_metric_families(text)))} families; "
          f"blocks {dict(got)}; exporter {exp}")


def test_run_prints_summary_on_exit(agent_env, tmp_path):
    """`nodewarden run` (text) ends with the summary on stderr; its events line counts what was delivered."""
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--duration", "2", "--no-containers"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tail = r.stderr.splitlines()[-5:]
    assert tail[0].startswith("nodewarden: ran ") and tail[0].endswith(" s since agent.ready"), tail
    assert [t.split()[0] for t in tail[1:]] == ["events", "alerts", "blocks", "drops"], tail
    lines = r.stdout.splitlines()  # one line per record, a newline inside a value shown as \n
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} \S", line) for line in lines)
    assert sum(1 for line in lines if " agent.ready " in line) == 1
    assert int(tail[1].split()[1].replace(",", "")) >= len(lines) >= 1  # every printed line was counted
