"""`nodewarden devices` (agent/commands/devices.py): read directly through the real pynvml over the fake
libnvidia-ml.so.1 (tests/devices/fake_nvml.c) in a fresh process, a hung driver under --timeout, no driver;
and from a running agent's status.json, with the containers using each device and the guard's opens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from agent.commands import devices as cmd
from tests.devices.build import fake_nvml, missing_compiler

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
H100 = ["device", "uuid GPU-6a1b2c3d-0000-4000-8000-000000000000", "name NVIDIA H100 80GB HBM3",
        "pci_bus_id 00000000:17:00.0", "minor 3", f"mem_total {80 * GIB}", f"mem_used {2 * GIB}",
        "power_limit_mw 700000", "temperature 55", "power_mw 123456", "gpu_util 42"]


def _run(tmp_path, conf: list[str], *args: str, nvml: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_CONFIG")}
    if nvml:
        (tmp_path / "nvml.conf").write_text("\n".join(["driver_version 550.54.15", "cuda_version 12040",
                                                       "hang_max_ms 20000", *conf]) + "\n")
        env.update(LD_LIBRARY_PATH=str(fake_nvml().parent), FAKE_NVML_CONFIG=str(tmp_path / "nvml.conf"))
    return subprocess.run([sys.executable, "-m", "agent.cli", "devices", "--state-dir", str(tmp_path), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


needs_gcc = pytest.mark.skipif(bool(missing_compiler()), reason=missing_compiler() or "ok")


@needs_gcc
def test_direct_table_and_json(tmp_path):
    me = os.getpid()
    out = _run(tmp_path, [*H100, f"process compute {me} {GIB}"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "source: direct" and "  nvidia: open" in lines
    (row,) = [x for x in lines if x.startswith("nvidia 0")]
    for part in ("NVIDIA H100 80GB HBM3", "00000000:17:00.0", "55C", "123W / 700W", "2048MiB / 81920MiB", "42%",
                 " ok"):
        assert part in row, (part, row)
    (proc,) = [x for x in lines if f"pid {me} " in x]
    assert "1024MiB" in proc and proc.endswith("host")  # no container table in a command: the host
    assert row.endswith(" host")
    rep = orjson.loads(_run(tmp_path, [*H100], "--json").stdout)
    (d,) = rep["devices"]
    assert (d["uuid"], d["minor"], d["memory_total"], d["values"]["temperature"]) == (
        "GPU-6a1b2c3d-0000-4000-8000-000000000000", 3, 80 * GIB, 55)


@needs_gcc
def test_direct_hung_driver_is_bounded(tmp_path):
    t0 = time.monotonic()
    out = _run(tmp_path, [*H100, "hang nvmlDeviceGetTemperature"], "--json", "--timeout", "1")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 15
    (nv,) = [b for b in orjson.loads(out.stdout)["backends"] if b["vendor"] == "nvidia"]
    assert nv["state"] == "unresponsive" and "within 1 s" in nv["reason"]


def test_direct_no_driver(tmp_path):
    out = _run(tmp_path, [], nvml=False)
    assert out.returncode == 0, out.stderr
    assert "nvidia: no driver" in out.stdout and out.stdout.rstrip().endswith("no devices")


def test_bad_config_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("devices: {backends: 3}\n")
    out = _run(tmp_path, [], "--config", str(tmp_path / "bad.yaml"), nvml=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "devices.backends" in out.stderr


def test_from_the_agents_status(tmp_path):
    dev = {"vendor": "nvidia", "index": 1, "uuid": "GPU-x", "model": "NVIDIA A100-SXM4-40GB",
           "pci_bus_id": "00000000:B1:00.0", "minor": 1, "memory_total": 40 * GIB, "power_limit_w": 400.0,
           "health": "xid", "last_xid": 79, "values": {"temperature": 33, "power_w": 61.0, "mem_used": GIB,
                                                       "gpu_util": 0},
           "processes": [{"pid": 4242, "comm": "python3", "used_memory": GIB, "mig": "",
                          "container_id": "c0ffee" * 8, "container_name": "trainer", "image": "x",
                          "pod": "train-0", "namespace": "ml"}]}
    guard = {"enabled": True, "kubelet": "absent", "alerts": 1,
             "opens": [{"container_id": "beef00" * 8, "container_name": "web", "pod": "", "namespace": "",
                        "path": "/dev/nvidia3", "pid": 77, "ts_ns": 1, "ret": 3}]}
    status = {"pid": os.getpid(), "started": time.time(), "devices": {"backends": [
        {"vendor": "nvidia", "state": "open", "reason": ""}], "devices": [dev]}, "device_guard": guard}
    (tmp_path / "status.json").write_bytes(orjson.dumps(status))
    rep = cmd.from_agent(str(tmp_path))
    assert rep["source"] == f"agent pid {os.getpid()}" and rep["devices"] == [dev]
    text = cmd.render(rep)
    assert "xid (xid 79)" in text and "33C" in text and "61W / 400W" in text and "1024MiB / 40960MiB" in text
    assert "pid 4242" in text and "trainer (c0ffee" in text and "pod ml/train-0" in text
    assert "/dev/nvidia3     opened by pid 77 in web (beef00" in text and "1 alerts" in text
    (row,) = [x for x in text.splitlines() if x.startswith("nvidia 1")]
    assert row.endswith(" trainer")  # the guard's open was of /dev/nvidia3, another device
    rep["devices"][0]["minor"] = 3
    (row,) = [x for x in cmd.render(rep).splitlines() if x.startswith("nvidia 1")]
    assert row.endswith(" trainer,web")
    # an agent that is gone: its stale file is not believed
    status["pid"] = 2**22 + 12345
    (tmp_path / "status.json").write_bytes(orjson.dumps(status))
    assert cmd.from_agent(str(tmp_path)) is None
