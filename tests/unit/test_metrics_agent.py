"""The agent's metrics registry: build info, process metrics, the image gate's verdicts, scans and cache,
the exporter's counters, enforcement blocks by point with a bounded namespace label; every family
checked by `promtool check metrics` (Debian's prometheus package)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.outputs import metrics as metrics_mod
from agent.outputs.grpc_exporter import Exporter, ExporterConfig
from agent.outputs.metrics import Metrics
from tests.unit.test_imagegate_service import _info, _service, _wait, world  # noqa: F401 (world: a fixture)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _types(text: str) -> dict[str, str]:
    return {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}


def promtool_clean(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian's prometheus package)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_build_info_process_and_counters_named_total():
    m = Metrics()
    text = generate_latest(m.registry).decode()
    s = _samples(text)
    key = ("nodewarden_build_info", (("kernel", platform.release()), ("python", platform.python_version()),
                                     ("version", __version__)))
    assert s[key] == 1
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert s[(name, ())] > 0, name
    for name, kind in _types(text).items():
        if kind == "counter":
            assert name.endswith("_total"), name
    promtool_clean(text)


def test_blocks_by_point_namespace_bounded(monkeypatch):
    monkeypatch.setattr(metrics_mod, "MAX_NAMESPACES", 3)
    m = Metrics()
    recs = [{"event.name": "process.exec"}] * 5
    recs += [{"event.name": "enforcement.block", "enforcement.point": "nri.create_container",
              "enforcement.action": "deny", "k8s.namespace.name": f"ns{i}"} for i in range(5)]
    recs += [{"event.name": "enforcement.block", "enforcement.point": "kernel.exec", "enforcement.action": "kill"}]
    m.count_records(recs)
    s = _samples(generate_latest(m.registry).decode())
    assert s[("nodewarden_events_total", (("event", "process.exec"),))] == 5
    assert s[("nodewarden_events_total", (("event", "enforcement.block"),))] == 6
    block = "nodewarden_enforcement_blocks_total"
    for i in range(3):
        assert s[(block, (("action", "deny"), ("namespace", f"ns{i}"), ("point", "nri.create_container")))] == 1
    assert s[(block, (("action", "deny"), ("namespace", "_other"), ("point", "nri.create_container")))] == 2
    assert s[(block, (("action", "kill"), ("namespace", ""), ("point", "kernel.exec")))] == 1


def test_image_gate_verdicts_scans_cache(world):  # noqa: F811
    m = Metrics()
    gate, out, _ = _service(world)
    m.add_gate(gate)
    gate.start()
    try:
        gate.on_container("container", _info("c-bad", image="reg/bad:1"))
        gate.on_container("container", _info("c-good", image="reg/good:1"))
        _wait(out, 2)
        gate.on_container("container", _info("c-gone", image="reg/good:1"))  # containerd has no such container
        _wait(out, 3)
        gate.evaluate_image("default", "reg/good:1")  # no spec: another image key, its layers cached
        gate.evaluate_image("default", "reg/good:1")  # the whole result cached
    finally:
        gate.stop()
    text = generate_latest(m.registry).decode()
    s = _samples(text)
    p = "nodewarden_imagegate_"
    assert s[(p + "verdicts_total", (("result", "block"),))] == 1
    assert s[(p + "verdicts_total", (("result", "allow"),))] >= 1
    assert s[(p + "scans_total", (("result", "scanned"),))] >= 1
    assert s[(p + "scans_total", (("result", "cached"),))] >= 1
    scans = sum(v for (n, _), v in s.items() if n == p + "scans_total")
    assert s[(p + "scan_duration_seconds_count", ())] == scans
    assert s[(p + "cache_hits_total", (("level", "image"),))] >= 1
    assert s[(p + "cache_misses_total", (("level", "layer"),))] >= 1
    assert s[(p + "cache_hits_total", (("level", "layer"),))] >= 1
    assert s[(p + "errors_total", ())] == 1
    assert _types(text)[p + "scan_duration_seconds"] == "histogram"
    promtool_clean(text)


def test_exporter_queued_spooled_dropped(tmp_path):
    m = Metrics()
    exp = Exporter(ExporterConfig(address="127.0.0.1:1", spool_dir=str(tmp_path / "spool"), node="n",
                                  queue_size=2, batch_interval=0.02, backoff_initial=0.05, backoff_max=0.1))
    m.add_exporter(exp)
    for i in range(5):
        exp.submit({"event.name": "process.exec", "i": i})
    s = _samples(generate_latest(m.registry).decode())
    p = "nodewarden_exporter_"
    assert s[(p + "submitted_total", ())] == 5
    assert s[(p + "queue_length", ())] == 2
    assert s[(p + "drops_total", (("reason", "queue_full"),))] == 3
    exp.start()  # nothing listens on port 1: the two records are spooled, none sent
    try:
        deadline = time.monotonic() + 10
        while exp.metrics()["spooled"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        exp.stop(timeout=0.2)
    text = generate_latest(m.registry).decode()
    s = _samples(text)
    # the two records, and the exporter's own agent.drops record of the three it dropped
    assert s[(p + "spooled_total", ())] == 3 and s[(p + "acked_total", ())] == 0
    assert s[(p + "queue_length", ())] == 0
    promtool_clean(text)


def test_every_family_documented(world, tmp_path):  # noqa: F811
    m = Metrics()
    gate, _, _ = _service(world)
    m.add_gate(gate)
    m.add_exporter(Exporter(ExporterConfig(address="127.0.0.1:1", spool_dir=str(tmp_path / "spool"), node="n")))
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    names = [fam.name + ("_total" if fam.type == "counter" else "")
             for fam in text_string_to_metric_families(generate_latest(m.registry).decode())]
    assert len(names) > 30
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, missing
