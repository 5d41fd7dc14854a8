"""`nodewarden run` on a node whose NVIDIA driver is the fake libnvidia-ml.so.1 (tests/devices/fake_nvml.c,
found by the real pynvml through LD_LIBRARY_PATH): device events in the JSON and text views, a GPU process
of a real container attributed to it, an Xid as device.health, the embedded collector storing and
filtering them (`nodewarden events --kind device`), /metrics serving dcgm-exporter's gauges with the UUID
label and the container's labels, and a hung driver call that leaves kernel events flowing while the GPU
is reported unresponsive, then recovered. Without the library: one line, no device events."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import orjson
import pytest

from tests.devices.build import fake_nvml, missing_compiler
from tests.kernel.conftest import AgentProcess

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF probes, containers)"),
              pytest.mark.skipif(bool(missing_compiler()), reason="gcc is needed for the fake NVML")]

GPU0 = "GPU-0a0a0a0a-1111-2222-3333-444444444444"
GPU1 = "GPU-1b1b1b1b-5555-6666-7777-888888888888"


def _config(path, events, pid: int, hang: bool = False) -> None:
    lines = [f"events {events}", "hang_max_ms 30000", "driver_version 550.54.15", "cuda_version 12040",
             "device", f"uuid {GPU0}", "name NVIDIA H100 80GB HBM3", "serial 1650923000001",
             "pci_bus_id 00000000:18:00.0", "minor 0", "mem_total 85899345920", "mem_used 2147483648",
             "gpu_util 63", "temperature 51", "power_mw 312250", "sm_clock 1980", "mem_clock 2619",
             f"process compute {pid} 1073741824",
             "device", f"uuid {GPU1}", "name NVIDIA H100 80GB HBM3", "serial 1650923000002",
             "pci_bus_id 00000000:2A:00.0", "minor 1", "mem_total 85899345920", "mem_used 0", "gpu_util 0",
             "temperature 33", "power_mw 70000", *(["hang nvmlDeviceGetTemperature"] if hang else [])]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _events(sock: str, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "events", "--collector", sock, "--json", *args],
                         capture_output=True, check=True, timeout=30)
    return [orjson.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture
def gpu_node(tmp_path, monkeypatch):
    lib = fake_nvml()
    cfg, events = tmp_path / "nvml.conf", tmp_path / "events"
    events.write_text("")
    for k, v in {"LD_LIBRARY_PATH": str(lib.parent), "FAKE_NVML_CONFIG": str(cfg),
                 "NODEWARDEN_DEVICES_INTERVAL_S": "0.5", "NODEWARDEN_DEVICES_CALL_TIMEOUT_S": "1",
                 "NODEWARDEN_DEVICES_BACKENDS": "nvidia",
                 "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(k, v)
    return cfg, events


def test_gpu_node_end_to_end(gpu_node, containerd, busybox_image, tmp_path, monkeypatch):
    cfg, events = gpu_node
    cid = containerd.run(busybox_image, "sleep", "300")
    try:
        pid = containerd.task_pid(cid)
        assert pid > 0
        _config(cfg, events, pid)
        sock = f"unix:{tmp_path}/collector.sock"
        monkeypatch.setenv("NODEWARDEN_EXPORT_EMBEDDED_LISTEN", sock)
        port = _free_port()
        agent = AgentProcess("--containerd-socket", str(containerd.socket), "--collector", "embedded",
                             "--metrics", f"127.0.0.1:{port}")
        try:
            _check_records(agent, cid, pid)
            _check_xid(agent, events)
            _check_metrics(port, cid)
            _check_collector(sock, cid)
            _check_hang(agent, cfg, events, pid)
            # status.json is rewritten every 5 s: the one on disk may predate the first sample (no processes
            # yet), so wait for one written after it
            deadline = time.monotonic() + 20
            while True:
                devs = {d["uuid"]: d for d in agent.status(str(tmp_path / "state"))["devices"]["devices"]}
                if (GPU0 in devs and devs[GPU0]["processes"]) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert set(devs) == {GPU0, GPU1}
            assert [p["container_id"] for p in devs[GPU0]["processes"]] == [cid]
        finally:
            assert agent.stop() == 0
        lines = [ln for ln in agent.stderr.decode().splitlines() if "devices:" in ln]
        assert len(lines) == 1 and "nvidia: 2 devices" in lines[0], lines
    finally:
        containerd.remove(cid)


def _check_records(agent, cid: str, pid: int) -> None:
    infos = agent.wait_for(lambda r: r["event.name"] == "device.info", count=2, timeout=20)
    by = {r["device.uuid"]: r for r in infos}
    assert set(by) == {GPU0, GPU1}
    i0 = by[GPU0]
    assert (i0["device.vendor"], i0["device.index"], i0["device.model"], i0["device.pci_bus_id"],
            i0["device.minor"], i0["device.path"]) == ("nvidia", 0, "NVIDIA H100 80GB HBM3", "00000000:18:00.0",
                                                        0, "/dev/nvidia0")
    assert (i0["device.serial"], i0["device.driver_version"], i0["device.cuda_version"],
            i0["device.memory.total"]) == ("1650923000001", "550.54.15", "12.4", 85899345920)
    (start,) = agent.wait_for(lambda r: r["event.name"] == "device.process", timeout=20)
    assert (start["device.process.change"], start["process.pid"], start["process.name"]) == ("start", pid, "sleep")
    assert start["device.uuid"] == GPU0 and start["device.process.used_memory"] == 1073741824
    assert start["container.id"] == cid and start["container.image.name"]
    s = agent.wait_for(lambda r: r["event.name"] == "device.sample" and r["device.uuid"] == GPU0
                       and r["device.processes"], timeout=20)[0]
    assert (s["device.gpu_util"], s["device.temperature"], s["device.power_w"], s["device.sm_clock"],
            s["device.mem_clock"], s["device.mem_used"]) == (63.0, 51.0, 312.25, 1980, 2619, 2147483648)
    assert [(p["pid"], p["container.id"], p["name"]) for p in s["device.processes"]] == [(pid, cid, "sleep")]


def _check_xid(agent, events) -> None:
    with open(events, "a") as f:
        f.write("0 xid 48\n")
    (h,) = agent.wait_for(lambda r: r["event.name"] == "device.health" and r.get("device.xid") == 48, timeout=20)
    assert h["device.uuid"] == GPU0 and h["device.health.kind"] == "xid"
    assert h["event.severity"] in ("high", "critical") and h["device.health.action"] not in ("none", "restart_app")
    assert h["device.xid_mnemonic"]


def _check_metrics(port: int, cid: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        text = _metrics(port)
        gpu0 = [ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_UTIL{") and GPU0 in ln]
        xid = [ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_XID_ERRORS{") and GPU0 in ln]
        if (gpu0 and xid and xid[0].endswith(" 48.0")) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(gpu0) == 1, text
    line = gpu0[0]
    for label in (f'UUID="{GPU0}"', 'gpu="0"', 'device="nvidia0"', 'modelName="NVIDIA H100 80GB HBM3"',
                  'pci_bus_id="00000000:18:00.0"', f'container="{cid}"'):
        assert label in line, line
    assert 'Hostname="' in line and line.endswith(" 63.0")
    assert xid and xid[0].endswith(" 48.0")
    assert any(ln.startswith("DCGM_FI_DEV_FB_USED{") and GPU0 in ln and ln.endswith(" 2048.0")
               for ln in text.splitlines())  # MiB, as dcgm-exporter
    gpu1 = [ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_TEMP{") and GPU1 in ln]
    assert gpu1 and 'container=""' in gpu1[0] and gpu1[0].endswith(" 33.0")
    assert 'nodewarden_drops_total{stage="devices.queue"} 0.0' in text


def _check_collector(sock: str, cid: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        rows = _events(sock, "--kind", "device")
        names = {r["event.name"] for r in rows}
        if {"device.info", "device.sample", "device.health", "device.process"} <= names \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"device.info", "device.sample", "device.health", "device.process"} <= names
    assert all(r["event.name"].startswith("device.") for r in rows)
    health = _events(sock, "--kind", "device.health")
    assert health and {r["device.xid"] for r in health} == {48}
    procs = _events(sock, "--kind", "device.process", "--container", cid[:12])
    assert [(r["device.uuid"], r["container.id"]) for r in procs] == [(GPU0, cid)]
    assert _events(sock, "--kind", "device.sample", "--text", GPU1, "--limit", "1")[0]["device.uuid"] == GPU1
    used = _events(sock, "--kind", "device.sample", "--text", cid, "--limit", "3")  # a container's devices
    assert used and {r["device.uuid"] for r in used} == {GPU0}
    line = subprocess.run([sys.executable, "-m", "agent.cli", "events", "--collector", sock, "--kind",
                           "device.health"], capture_output=True, check=True, timeout=30).stdout.decode()
    assert f"nvidia0 {GPU0} xid 48" in line


def _check_hang(agent, cfg, events, pid: int) -> None:
    _config(cfg, events, pid, hang=True)
    (un,) = agent.wait_for(lambda r: r["event.name"] == "device.health"
                           and r["device.health.kind"] == "unresponsive", timeout=20)
    assert un["device.uuid"] == GPU1 and un["event.severity"] == "high"
    marker = f"nw-devhang-{os.getpid()}"  # the pipeline keeps serving kernel events meanwhile
    subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
    agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("process.args") == ["/bin/echo", marker],
                   timeout=10)
    _config(cfg, events, pid)
    agent.wait_for(lambda r: r["event.name"] == "device.health" and r["device.health.kind"] == "recovered"
                   and r["device.uuid"] == GPU1, timeout=20)


def test_text_view_and_no_driver(tmp_path, monkeypatch):
    """The text view with the fake driver; then, without it, one line and no device events."""
    lib = fake_nvml()
    cfg, events = tmp_path / "nvml.conf", tmp_path / "events"
    events.write_text("")
    _config(cfg, events, os.getpid())
    base = {**os.environ, "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state"),
            "NODEWARDEN_DEVICES_INTERVAL_S": "0.5", "NODEWARDEN_DEVICES_BACKENDS": "nvidia,kunlun"}
    env = {**base, "LD_LIBRARY_PATH": str(lib.parent), "FAKE_NVML_CONFIG": str(cfg)}
    out, err = _run_text(env, until=b"device.sample")
    lines = out.decode().splitlines()
    info = [ln for ln in lines if " device.info " in ln]
    assert any(f"nvidia0 {GPU0} NVIDIA H100 80GB HBM3 (00000000:18:00.0) mem=81920MiB" in ln for ln in info)
    sample = [ln for ln in lines if " device.sample " in ln and GPU0 in ln]
    assert sample and (f"util=63% mem_util=0% temp=51C power=312.25W sm=1980MHz memclk=2619MHz "
                       f"mem=2048MiB/81920MiB procs={os.getpid()}") in sample[0], sample
    dev_lines = [ln for ln in err.decode().splitlines() if "devices:" in ln]
    assert len(dev_lines) == 1 and "nvidia: 2 devices; kunlun:" in dev_lines[0], dev_lines
    # no driver: pynvml finds no libnvidia-ml.so.1 (none on this machine), no xpuml either
    out, err = _run_text({k: v for k, v in base.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_CONFIG")},
                         until=None, duration=4)
    assert b" device." not in out
    dev_lines = [ln for ln in err.decode().splitlines() if "devices:" in ln]
    assert len(dev_lines) == 1 and "no device driver on this node" in dev_lines[0], dev_lines


def _run_text(env: dict, until: bytes | None, duration: float = 30) -> tuple[bytes, bytes]:
    """`nodewarden run` (text view, no containerd) until a line holds `until` (or `duration` passes)."""
    p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--no-containers", "--families", "process",
                          "--duration", str(duration)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = bytearray()
    err: list[bytes] = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    t.start()
    try:
        for line in p.stdout:
            out += line
            if until is not None and until in line:
                break
    finally:
        if p.poll() is None:
            p.terminate()
        p.wait(timeout=20)
        t.join(5)
    return bytes(out), b"".join(err)
