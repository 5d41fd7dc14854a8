"""The Kunlun XPU backend (agent/devices/kunlun.py, xpusmi.py) against stand-ins at the lowest level:

- a fake libxpuml.so written in C (tests/devices/fake_xpuml.c), compiled here with gcc and loaded by the
  backend's real ctypes code, configured by a text file the test rewrites (values, states, processes of
  real pids, calls that fail, are not supported, or hang);
- a fake `xpu_smi` shell script on a PATH of the test's own, printing `-m` lines in the real format.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agent.devices import kunlun, xpusmi
from agent.devices.base import DeviceError, NoDriver
from agent.events import DeviceInfoEvent, DeviceRef
from agent.vocab import Severity
from tests.devices.records import Records

ROOT = Path(__file__).resolve().parents[2]
FAKE_C = ROOT / "tests/devices/fake_xpuml.c"
MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """(current library, 2022-style library without GetName/GetUUID/GetMinorNumber)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake libxpuml")
    out = tmp_path_factory.mktemp("xpuml")
    built = []
    for name, extra in (("libxpuml.so", []), ("libxpuml_2022.so", ["-DFAKE_NO_NAME_UUID"])):
        so = out / name
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", *extra, "-o", str(so), str(FAKE_C),
                        "-lpthread"], check=True, capture_output=True)
        built.append(str(so))
    return tuple(built)


class FakeConfig:
    """The fake library's configuration file; write() replaces it (the library re-reads on change)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, self.path)
        # The library notices a change by mtime and size; make sure the next write differs in mtime.
        time.sleep(0.01)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    cfg = FakeConfig(tmp_path / "xpuml.conf")
    monkeypatch.setenv("XPUML_FAKE_CONFIG", str(cfg.path))
    return cfg


TWO_R200 = """\
    driver 5.0.21.21
    version 1.1.0
    device 0 name=R200 uuid=KL-0a1b serial=02K00ABC0001 bus=0000:3d:00.0 minor=0 mem_total=17179869184 \
mem_used=1073741824 util=35 mem_util=12 temp=41 power_mw=72500 clock=1300 state=201
    device 1 name=R200 uuid=KL-0a1c serial=02K00ABC0002 bus=0000:3e:00.0 minor=1 mem_total=17179869184 \
mem_used=0 util=0 mem_util=0 temp=38 power_mw=61000 clock=1300 state=201
"""


def opened(lib: str, **kw) -> kunlun.KunlunBackend:
    b = kunlun.KunlunBackend(library=lib, mode="xpuml", state_poll_s=0.05, **kw)
    b.open()
    return b


@pytest.fixture
def sleepers():
    """Real processes whose pids the fake library reports as XPU users."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


# -- the library ------------------------------------------------------------------------------------


def test_struct_layouts_match_the_header():
    # xpuml.h: every info struct is 128 bytes ("sizeof() = 8B * 16"); the fake asserts the same in C.
    for struct in (kunlun._PciInfo, kunlun._Utilization, kunlun._Memory, kunlun._ProcessInfo, kunlun._Attributes):
        assert ctypes.sizeof(struct) == 128, struct.__name__
    assert kunlun._ProcessInfo.root_ns_pid.offset == 24
    assert kunlun._Attributes.globalMemorySizeMB.offset == 40


def test_inventory_every_field(libs, fake):
    fake.write(TWO_R200)
    b = opened(libs[0])
    try:
        assert b.source == f"libxpuml {libs[0]}"
        infos = b.inventory(123)
    finally:
        b.close()
    assert infos == [
        DeviceInfoEvent(123, DeviceRef("kunlun", 0, "KL-0a1b", "R200", "00000000:3D:00.0", 0), serial="02K00ABC0001",
                        driver_version="5.0.21.21", cuda_version="1.1.0", memory_total=16 * GIB, power_limit_w=None),
        DeviceInfoEvent(123, DeviceRef("kunlun", 1, "KL-0a1c", "R200", "00000000:3E:00.0", 1), serial="02K00ABC0002",
                        driver_version="5.0.21.21", cuda_version="1.1.0", memory_total=16 * GIB, power_limit_w=None),
    ]
    assert infos[0].ecc_mode == "" and infos[0].mig_mode == "" and infos[0].mig_devices == ()


def test_sample_every_value_and_processes(libs, fake, sleepers):
    a, b_, c = sleepers
    fake.write(TWO_R200 + f"""\
    process 0 pid=7 root_pid={a} mem=536870912 l3=0
    process 0 pid={b_} root_pid=0 mem=268435456 l3=0
    process 1 pid=9 root_pid={c} mem=18446744073709551615 l3=0
""")
    b = opened(libs[0])
    try:
        d0, d1 = (i.device for i in b.inventory(1))
        r0, r1 = b.sample(d0), b.sample(d1)
    finally:
        b.close()
    assert r0.values == {"gpu_util": 35, "mem_util": 12, "mem_total": 16 * GIB, "mem_used": GIB,
                         "mem_free": 15 * GIB, "temperature": 41, "power_w": 72.5, "sm_clock": 1300}
    assert r0.errors == [] and r0.throttle == ()
    # root-namespace pid when the library gives one, else the pid; the memory each holds.
    assert r0.processes == ((a, 512 * MIB, ""), (b_, 256 * MIB, ""))
    # XPUML_VALUE_NOT_AVAILABLE is no value, never a huge number.
    assert r1.processes == ((c, None, ""),)
    assert r1.values["mem_used"] == 0 and r1.values["power_w"] == 61.0


def test_many_processes_grow_the_buffer_within_a_cap(libs, fake):
    rows = "".join(f"process 0 pid={1000 + n} root_pid={1000 + n} mem={n} l3=0\n" for n in range(200))
    fake.write(TWO_R200 + rows)
    b = opened(libs[0])
    try:
        r = b.sample(b.inventory(1)[0].device)
    finally:
        b.close()
    assert [p[0] for p in r.processes] == [1000 + n for n in range(200)]
    assert r.errors == []


def test_unsupported_readings_are_left_out_and_failures_named(libs, fake):
    fake.write(TWO_R200 + """\
    unsupported GetPowerUsage
    unsupported GetComputeRunningProcesses
    fail GetTemperature 999 0
""")
    b = opened(libs[0])
    try:
        d0, d1 = (i.device for i in b.inventory(1))
        r0, r1 = b.sample(d0), b.sample(d1)
    finally:
        b.close()
    assert "power_w" not in r0.values and "temperature" not in r0.values
    assert r0.errors == ["temperature: Unknown Error"]
    assert r0.values["gpu_util"] == 35 and r0.processes == ()
    assert r1.values["temperature"] == 38 and r1.errors == []


def test_library_of_2022_without_name_uuid_minor(libs, fake):
    fake.write("""\
    device 0 serial=02K00ABC0001 bus=0000:3d:00.0 model=2 mem_total=17179869184 temp=40 state=201
    device 1 bus=0000:3e:00.0 model=4 mem_total=17179869184 state=201
    device 2 bus=0000:3f:00.0 model=77 mem_total=17179869184 state=201
""")
    b = opened(libs[1])
    try:
        infos = b.inventory(5)
    finally:
        b.close()
    refs = [i.device for i in infos]
    # Model from the attributes' model id, UUID from the serial (else the PCI address), minor = index.
    assert refs == [DeviceRef("kunlun", 0, "XPU-02K00ABC0001", "R200", "00000000:3D:00.0", 0),
                    DeviceRef("kunlun", 1, "XPU-00000000:3E:00.0", "R200-8F", "00000000:3E:00.0", 1),
                    DeviceRef("kunlun", 2, "XPU-00000000:3F:00.0", "Kunlun XPU", "00000000:3F:00.0", 2)]
    assert [i.driver_version for i in infos] == ["", "", ""]  # not configured: not supported, left empty


def test_health_follows_the_device_state(libs, fake):
    fake.write(TWO_R200)
    b = opened(libs[0])
    try:
        d0, d1 = (i.device for i in b.inventory(1))
        assert b.health(0) == []  # healthy at start: nothing to say
        fake.write(TWO_R200.replace("power_mw=72500 clock=1300 state=201", "power_mw=72500 clock=1300 state=208"))
        (ev,) = b.health(2)
        assert (ev.device, ev.kind, ev.severity, ev.action, ev.xid, ev.mnemonic) == (
            d0, "state", Severity.HIGH, "reset_gpu", None, "")
        assert ev.detail.startswith("in_exception: ")
        assert b.health(0.1) == []  # reported once, not on every poll
        fake.write(TWO_R200.replace("power_mw=72500 clock=1300 state=201", "power_mw=72500 clock=1300 state=205"))
        (ev,) = b.health(2)
        assert (ev.kind, ev.severity, ev.action) == ("state", Severity.MEDIUM, "none")
        assert ev.detail.startswith("in_reset: ")
        fake.write(TWO_R200)
        (ev,) = b.health(2)
        assert (ev.device, ev.kind, ev.severity) == (d0, "recovered", Severity.INFO)
        assert "in_reset" in ev.detail
    finally:
        b.close()


def test_a_device_in_error_at_start_is_reported(libs, fake):
    fake.write(TWO_R200.replace("temp=38 power_mw=61000 clock=1300 state=201", "temp=38 power_mw=61000 clock=1300 "
                                                                              "state=207"))
    b = opened(libs[0])
    try:
        d1 = b.inventory(1)[1].device
        (ev,) = b.health(0)
    finally:
        b.close()
    assert (ev.device, ev.kind, ev.severity, ev.action) == (d1, "state", Severity.HIGH, "reset_gpu")
    assert ev.detail.startswith("error: ")


def test_a_device_off_the_bus(libs, fake):
    fake.write(TWO_R200)
    b = opened(libs[0])
    try:
        d0, d1 = (i.device for i in b.inventory(1))
        fake.write("\n".join(line for line in textwrap.dedent(TWO_R200).splitlines()
                             if not line.startswith("device 1")) + "\n")
        (ev,) = b.health(2)
        assert (ev.device, ev.kind, ev.severity, ev.action) == (d1, "unavailable", Severity.CRITICAL,
                                                                 "drain_and_reset")
        with pytest.raises(DeviceError, match="XPU is lost"):
            b.sample(d1)
        assert b.sample(d0).values["temperature"] == 41
        assert [i.device for i in b.inventory(2)] == [d0]
        fake.write("fail GetState 16 0\n" + textwrap.dedent(TWO_R200))
        (ev,) = b.health(2)
        assert (ev.device, ev.kind, ev.severity, ev.action) == (d0, "state", Severity.HIGH, "reset_gpu")
        assert ev.detail.startswith("reset_required: ")
    finally:
        b.close()


def test_health_waits_up_to_its_timeout(libs, fake):
    fake.write(TWO_R200)
    b = opened(libs[0])
    try:
        b.inventory(1)
        t0 = time.monotonic()
        assert b.health(0.3) == []
        assert 0.25 <= time.monotonic() - t0 < 2
        b.close()  # close() ends a wait at once
        t0 = time.monotonic()
        assert b.health(5) == []
        assert time.monotonic() - t0 < 1
    finally:
        b.close()


def test_a_hung_call_blocks_only_itself(libs, fake):
    fake.write(TWO_R200)
    b = opened(libs[0])
    d0, d1 = (i.device for i in b.inventory(1))
    fake.write(TWO_R200 + "hang GetMemoryInfo 0\n")
    done: list = []
    t = threading.Thread(target=lambda: done.append(b.sample(d0)), daemon=True)
    t.start()
    t.join(0.5)
    assert t.is_alive() and not done  # the poller's time limit is what reports it unresponsive
    assert b.sample(d1).values["temperature"] == 38  # the other device answers meanwhile
    fake.write(TWO_R200)  # the driver comes back
    t.join(5)
    assert not t.is_alive() and done[0].values["mem_used"] == GIB
    b.close()


def test_library_that_does_not_initialise_falls_back_to_the_tool(libs, fake, smi):
    fake.write("init_fail 9\n" + TWO_R200)
    b = kunlun.KunlunBackend(library=libs[0], smi=smi.path)
    b.open()
    try:
        assert b.source == f"xpu_smi {smi.path}"
        assert [i.device.index for i in b.inventory(1)] == [0, 1]
    finally:
        b.close()
    b = kunlun.KunlunBackend(library=libs[0], smi=str(smi.dir / "absent"))
    with pytest.raises(NoDriver) as e:
        b.open()
    assert str(e.value) == (f"kunlun: {libs[0]}: xpumlInit: Driver Not Loaded; {smi.dir / 'absent'}: "
                            "not an executable file")


def test_no_driver_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    b = kunlun.KunlunBackend(sys_root=str(tmp_path))
    with pytest.raises(NoDriver) as e:
        b.open()
    msg = str(e.value)
    assert msg.startswith("kunlun: ") and "\n" not in msg and "xpu_smi not found" in msg
    broken = tmp_path / "libxpuml.so"
    broken.write_bytes(b"not an ELF file")
    with pytest.raises(NoDriver) as e:
        kunlun.KunlunBackend(library=str(broken), mode="xpuml").open()
    assert str(e.value).startswith(f"kunlun: {broken}: ") and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="mode must be"):
        kunlun.KunlunBackend(mode="cuda")


def test_library_found_on_the_loader_path(libs, fake):
    # glibc reads LD_LIBRARY_PATH at process start: the default search is checked in a fresh process.
    fake.write(TWO_R200)
    code = ("from agent.devices.kunlun import KunlunBackend\n"
            "b = KunlunBackend(mode='xpuml'); b.open(); print(b.source); print(len(b.inventory(1))); b.close()\n")
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(libs[0]).parent), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["libxpuml", "libxpuml.so", "2"]


# -- xpu_smi ------------------------------------------------------------------------------------------

# Lines in the format real boards print (see agent/devices/xpusmi.py); values are the test's own.
SMI_M = (
    '00000000:3d:00.0 0 0 02K00ABC0001 41 0 0 0 72 1300 1300 1300 1300 1300 1300 4 64 1024 16384 35 '
    '1.0:2.4:1.31.0.2 "R200" 0 0 0 0 0 0 0 0 0 0\n'
    '00000000:3e:00.0 1 1 02K00ABC0002 38 0 0 0 61500 1300 1300 1300 1300 1300 1300 4 64 0 16384 0 '
    '1.0:2.4:1.31.0.2 "R200 8F" 0 0 0 0 0 0 0 0 0 0\n'
)
SMI_TABLE = """\
Thu Dec  3 07:40:01 2026
+-----------------------------------------------------------------------------+
| XPU-SMI               Driver Version: 5.0.21.21    XPU-RT Version: N/A      |
|-------------------------------+----------------------+----------------------+
|   0  R200               N/A   | 00000000:3d:00.0 N/A |                    0 |
| N/A   41C  N/A     72W / 150W |   1024MiB / 16384MiB |     35%      Default |
+-------------------------------+----------------------+----------------------+
"""
SMI_SCRIPT = """\
#!/bin/sh
d="${0%/*}"
echo run >> "$d/runs"
if [ -e "$d/hang" ]; then echo $$ > "$d/hang.pid"; exec SLEEP 30; fi
if [ -e "$d/fail" ]; then echo "xpu_smi: KUNLUN driver is not loaded" >&2; exit 3; fi
case "$1" in
  -m) CAT "$d/m.txt" ;;
  "") CAT "$d/table.txt" ;;
  *) echo "unknown option $1" >&2; exit 2 ;;
esac
"""


class FakeSmi:
    def __init__(self, d: Path, name: str = "xpu_smi"):
        self.dir = d
        self.path = str(d / name)
        # Absolute paths: the script works on a PATH holding nothing but itself.
        script = SMI_SCRIPT.replace("SLEEP", shutil.which("sleep")).replace("CAT", shutil.which("cat"))
        Path(self.path).write_text(script)
        os.chmod(self.path, 0o755)
        self.set_m(SMI_M)
        (d / "table.txt").write_text(SMI_TABLE)

    def set_m(self, text: str) -> None:
        (self.dir / "m.txt").write_text(text)

    def runs(self) -> int:
        p = self.dir / "runs"
        return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture
def smi(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    return FakeSmi(d)


def test_parse_m_lines():
    devs = xpusmi.parse_m("XPU-SMI\n\nnot a row\n" + SMI_M + SMI_M.splitlines()[0] + "\n")
    assert devs == [
        xpusmi.SmiDevice(bus="00000000:3d:00.0", index=0, serial="02K00ABC0001", model="R200",
                         firmware="1.0:2.4:1.31.0.2", temperature=41, power_w=72.0, clock_mhz=1300,
                         mem_used_mib=1024, mem_total_mib=16384, util=35),
        # 61500: milliwatts (XRE 4.x); the model keeps its blank.
        xpusmi.SmiDevice(bus="00000000:3e:00.0", index=1, serial="02K00ABC0002", model="R200 8F",
                         firmware="1.0:2.4:1.31.0.2", temperature=38, power_w=61.5, clock_mhz=1300,
                         mem_used_mib=0, mem_total_mib=16384, util=0),
    ]
    # A value that is no number is no value; short or foreign lines are no device.
    odd = xpusmi.parse_line(SMI_M.splitlines()[0].replace(" 41 ", " N/A "))
    assert odd is not None and odd.temperature is None
    assert xpusmi.parse_m("DeviceId,Name,MemorySize\n0, Intel Arc A770, 16384\n") == []
    assert xpusmi.parse_m("00000000:3d:00.0 0 0 serial 41\n") == []
    assert xpusmi.parse_driver(SMI_TABLE) == "5.0.21.21" and xpusmi.parse_driver("") == ""


def test_smi_inventory_and_samples(smi):
    b = kunlun.KunlunBackend(smi=smi.path, mode="xpu_smi")
    b.open()
    try:
        assert b.source == f"xpu_smi {smi.path}"
        infos = b.inventory(9)
        runs = smi.runs()
        r0, r1 = b.sample(infos[0].device), b.sample(infos[1].device)
        assert smi.runs() == runs  # one `xpu_smi -m` serves a round of samples
    finally:
        b.close()
    assert infos == [
        DeviceInfoEvent(9, DeviceRef("kunlun", 0, "XPU-02K00ABC0001", "R200", "00000000:3d:00.0", 0),
                        serial="02K00ABC0001", driver_version="5.0.21.21", cuda_version="1.0:2.4:1.31.0.2",
                        memory_total=16 * GIB),
        DeviceInfoEvent(9, DeviceRef("kunlun", 1, "XPU-02K00ABC0002", "R200 8F", "00000000:3e:00.0", 1),
                        serial="02K00ABC0002", driver_version="5.0.21.21", cuda_version="1.0:2.4:1.31.0.2",
                        memory_total=16 * GIB),
    ]
    assert r0.values == {"temperature": 41, "power_w": 72.0, "sm_clock": 1300, "gpu_util": 35,
                         "mem_used": 1024 * MIB, "mem_total": 16 * GIB, "mem_free": 15 * GIB}
    assert r0.processes == () and r0.errors == []
    assert r1.values["power_w"] == 61.5 and r1.values["mem_free"] == 16 * GIB


def test_smi_device_leaves_and_comes_back(smi):
    b = kunlun.KunlunBackend(smi=smi.path, mode="xpu_smi")
    b.open()
    try:
        d0, d1 = (i.device for i in b.inventory(1))
        assert b.health(0) == []
        smi.set_m(SMI_M.splitlines()[0] + "\n")
        time.sleep(0.6)  # past the reuse window: the next sample runs the tool again
        assert b.sample(d0).values["temperature"] == 41
        with pytest.raises(DeviceError, match="device 1 .* not in its output"):
            b.sample(d1)
        (ev,) = b.health(1)
        assert (ev.device, ev.kind, ev.severity, ev.action) == (d1, "unavailable", Severity.CRITICAL,
                                                                 "drain_and_reset")
        smi.set_m(SMI_M)
        time.sleep(0.6)
        b.sample(d0)
        (ev,) = b.health(1)
        assert (ev.device, ev.kind, ev.severity) == (d1, "recovered", Severity.INFO)
        t0 = time.monotonic()
        assert b.health(0.2) == [] and time.monotonic() - t0 >= 0.15
    finally:
        b.close()


def test_smi_hang_is_killed_with_its_group(smi):
    b = kunlun.KunlunBackend(smi=smi.path, mode="xpu_smi", smi_timeout_s=0.5)
    b.open()
    try:
        dev = b.inventory(1)[0].device
        (smi.dir / "hang").write_text("")
        time.sleep(0.6)
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=r"xpu_smi -m: no answer in 0\.5 s"):
            b.sample(dev)
        assert time.monotonic() - t0 < 3
        pid = int((smi.dir / "hang.pid").read_text())
        assert not os.path.exists(f"/proc/{pid}")  # the `sleep` it became is gone, not orphaned
        (smi.dir / "hang").unlink()
        assert b.sample(dev).values["gpu_util"] == 35
    finally:
        b.close()


def test_smi_failing_is_no_driver(smi):
    (smi.dir / "fail").write_text("")
    b = kunlun.KunlunBackend(smi=smi.path, mode="xpu_smi")
    with pytest.raises(NoDriver) as e:
        b.open()
    assert str(e.value) == "kunlun: xpu_smi -m: exit 3: xpu_smi: KUNLUN driver is not loaded"
    (smi.dir / "fail").unlink()
    smi.set_m("")
    with pytest.raises(NoDriver, match="no Kunlun device line"):
        b.open()


def test_intel_xpu_smi_is_not_taken_for_kunluns(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    intel = FakeSmi(d, name="xpu-smi")
    monkeypatch.setenv("PATH", str(d))
    sys_root = tmp_path / "sys"
    pci = sys_root / "bus/pci/devices/0000:4b:00.0"
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x8086\n")
    b = kunlun.KunlunBackend(mode="xpu_smi", sys_root=str(sys_root))
    with pytest.raises(NoDriver, match=r"is not Kunlunxin's \(no PCI device of vendor 0x1d22\)"):
        b.open()
    (pci / "vendor").write_text("0x1d22\n")
    b.open()
    try:
        assert b.source == f"xpu_smi {intel.path}"
    finally:
        b.close()


# -- through the real poller (agent/devices/poller.py) ------------------------------------------------


def _polled(backend, records):
    from agent.config import DevicesConfig
    from agent.devices import build

    p = build(DevicesConfig(interval_s=0.2, call_timeout_s=0.5, inventory_interval_s=30.0), records,
              backends=[backend])
    p.start()
    assert p.wait_open(10)
    return p


def test_hang_and_state_through_the_poller(libs, fake):
    from agent.events import DeviceHealthEvent, DeviceSampleEvent

    fake.write(TWO_R200)
    rec = Records()
    p = _polled(kunlun.KunlunBackend(library=libs[0], mode="xpuml", state_poll_s=0.05), rec)
    try:
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.uuid == "KL-0a1c")
        # A state change becomes device.health.
        fake.write(TWO_R200.replace("temp=38 power_mw=61000 clock=1300 state=201",
                                    "temp=38 power_mw=61000 clock=1300 state=207"))
        ev = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "state")
        assert (ev.device.uuid, ev.severity, ev.action) == ("KL-0a1c", Severity.HIGH, "reset_gpu")
        fake.write(TWO_R200)
        rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "recovered" and e.device.uuid == "KL-0a1c")
        # A hung driver call: the device is reported unresponsive, the poller keeps going, and recovered.
        fake.write(TWO_R200 + "hang GetMemoryInfo 0\n")
        ev = rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "unresponsive")
        assert ev.device.uuid == "KL-0a1b" and ev.severity == Severity.HIGH
        n = len(rec.items)
        fake.write(TWO_R200)
        rec.wait(lambda e: isinstance(e, DeviceHealthEvent) and e.kind == "recovered" and e.device.uuid == "KL-0a1b"
                 and rec.items.index(e) >= n)
        rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and rec.items.index(e) > n and e.device.uuid == "KL-0a1b")
        states = {s.info.device.uuid: s for s in p.snapshot()}
        assert states["KL-0a1b"].health == "ok"
    finally:
        p.stop()
        fake.write(TWO_R200)


def test_xpu_smi_through_the_poller(smi):
    from agent.events import DeviceInfoEvent as Info
    from agent.events import DeviceSampleEvent

    rec = Records()
    p = _polled(kunlun.KunlunBackend(smi=smi.path, mode="xpu_smi"), rec)
    try:
        s = rec.wait(lambda e: isinstance(e, DeviceSampleEvent) and e.device.index == 1)
        assert s.values["power_w"] == 61.5 and s.processes == () and s.errors == ()
        assert sorted(e.device.uuid for e in rec.items if isinstance(e, Info)) == ["XPU-02K00ABC0001",
                                                                                   "XPU-02K00ABC0002"]
        assert p.status()["backends"] == [{"vendor": "kunlun", "state": "running", "reason": ""}]
    finally:
        p.stop()
