"""The terminal side of the counters: `nodewarden run`'s exit summary (Metrics.summary), `nodewarden
--version` (the same facts as nodewarden_build_info), and the block line of an image's block."""

from __future__ import annotations

import io
import platform
import subprocess
import sys
from types import SimpleNamespace

from agent import __version__
from agent.enforce.decide import nri_block_event, oci_block_event
from agent.outputs.log import TextLog
from agent.outputs.metrics import Metrics
from agent.outputs.record import flatten


def test_summary_counts_by_kind_rule_point_stage():
    m = Metrics()
    recs = [{"event.name": "process.exec"}] * 1234 + [{"event.name": "file.open"}] * 99
    recs += [{"event.name": "enforcement.block", "enforcement.point": "kernel.exec", "enforcement.action": "kill",
              "k8s.namespace.name": ns} for ns in ("a", "b")]
    m.count_records(recs)
    m.alerts.labels("NW-100", "high").inc(2)
    m.drops.labels("queue")  # a stage at 0 is not listed
    m.drops.labels("kernel.file").inc(30)
    lines = m.summary(12.34).splitlines()
    assert lines == [
        "nodewarden: ran 12.3 s since agent.ready",
        "  events      1,335  process.exec 1,234, file.open 99, enforcement.block 2",
        "  alerts          2  NW-100(high) 2",
        "  blocks          2  kernel.exec 2",
        "  drops          30  kernel.file 30",
    ]


def test_summary_fits_a_screen():
    m = Metrics()
    m.count_records([{"event.name": f"kind.{i}"} for i in range(50)])
    lines = m.summary(1.0, width=4).splitlines()
    assert len(lines) == 5 and lines[1].endswith(", +46 more")
    assert Metrics().summary(0.5).splitlines()[1:] == [f"  {t:<7}{0:>10}" for t in ("events", "alerts", "blocks",
                                                                                  "drops")]


def test_version():
    r = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"nodewarden {__version__} (Python {platform.python_version()}, "
                                f"kernel {platform.release()})")


def _line(ev) -> str:
    out = io.BytesIO()
    TextLog(out).emit([flatten(ev)])
    return out.getvalue().decode().rstrip("\n")


def test_image_block_lines_say_verdict_reason_image():
    pod = SimpleNamespace(name="web-1", namespace="shop")
    ctr = SimpleNamespace(id="c" * 64, name="app", image="reg/bad:1")
    line = _line(nri_block_event(pod, ctr, "malware: eicar in /opt/e"))
    assert line.endswith("enforcement.block deny at nri.create_container verdict=block: malware: eicar in /opt/e "
                         "-> denied [cccccccccccc reg/bad:1 pod=shop/web-1]")
    req = SimpleNamespace(id="d" * 64, name="app", image="", namespace="k8s.io", pod="web-2", pod_namespace="shop")
    line = _line(oci_block_event(req, "malware found", image="reg/bad:2"))
    assert line.endswith("deny at oci.runc_create verdict=block: malware found -> denied "
                         "[dddddddddddd reg/bad:2 pod=shop/web-2]")


def test_text_line_escapes_newlines():
    out = io.BytesIO()
    TextLog(out).emit([{"event.name": "process.exec", "timestamp": "2026-12-03T11:00:00.123456789Z",
                        "process.command_line": "sh -c 'a\nb'"}])
    assert out.getvalue().decode().count("\n") == 1 and "a\\nb" in out.getvalue().decode()
