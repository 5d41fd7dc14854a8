"""The NVIDIA backend (agent/devices/nvidia.py) on the real pynvml over the fake libnvidia-ml.so.1
(tests/devices/fake_nvml.c), and the Xid table (agent/devices/xid.py).

The fake is loaded once per process (pynvml keeps the library it loaded); each test writes its own config
file and points FAKE_NVML_CONFIG at it, and the fake re-reads it at nvmlInit and whenever it changes.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.devices import xid as xids
from agent.devices.base import DeviceError, NoDriver
from agent.devices.nvidia import EVENT_DRAIN_MAX, NvidiaBackend
from agent.events import DeviceInfoEvent, DeviceRef
from agent.vocab import Severity
from tests.devices.build import fake_nvml, missing_compiler

pytestmark = pytest.mark.skipif(bool(missing_compiler()), reason=missing_compiler() or "ok")

ROOT = Path(__file__).resolve().parents[2]
UUID0 = "GPU-6a1b2c3d-0000-4000-8000-000000000000"
UUID1 = "GPU-6a1b2c3d-1111-4111-8111-111111111111"
MIG_A = "MIG-aaaaaaaa-0000-4000-8000-000000000001"
MIG_B = "MIG-bbbbbbbb-0000-4000-8000-000000000002"
GIB = 1024**3

H100 = {
    "uuid": UUID0, "name": "NVIDIA H100 80GB HBM3", "serial": "1650923000001", "pci_bus_id": "00000000:17:00.0",
    "minor": 3, "mem_total": 80 * GIB, "mem_used": 2 * GIB, "mem_reserved": GIB // 2, "power_limit_mw": 700000,
    "ecc_mode": 1, "mig_mode": 0, "gpu_util": 42, "mem_util": 17, "temperature": 55, "power_mw": 123456,
    "energy_mj": 987654321, "sm_clock": 1980, "mem_clock": 2619, "throttle": 0x45, "pcie_replay": 2,
    "ecc_sbe_volatile": 3, "ecc_dbe_volatile": 0, "ecc_sbe_aggregate": 11, "ecc_dbe_aggregate": 1,
    "retired_sbe": 2, "retired_dbe": 1, "retired_pending": 1, "remap_corr": 4, "remap_unc": 1,
    "remap_pending": 1, "remap_failure": 0,
}
A100_MIG = {
    "uuid": UUID1, "name": "NVIDIA A100-SXM4-40GB", "serial": "1561221000002", "pci_bus_id": "00000000:B1:00.0",
    "minor": 1, "mem_total": 40 * GIB, "mem_used": GIB, "power_limit_mw": 400000, "enforced_limit_mw": 350000,
    "mig_mode": 1, "gpu_util": 0, "mem_util": 0, "temperature": 33, "power_mw": 61000, "energy_mj": 5,
    "sm_clock": 210, "mem_clock": 1215, "throttle": 0x1, "pcie_replay": 0,
}


def device(values: dict, extra: list[str] = ()) -> list[str]:
    return ["device", *(f"{k} {v}" for k, v in values.items()), *extra]


class Fake:
    """The fake's config file and event file for one test."""

    def __init__(self, tmp: Path, monkeypatch) -> None:
        self.config = tmp / "nvml.conf"
        self.events = tmp / "nvml.events"
        self.events.write_text("")
        monkeypatch.setenv("FAKE_NVML_CONFIG", str(self.config))

    def write(self, *devices: list[str], head: list[str] = ()) -> None:
        lines = ["driver_version 550.54.15", "cuda_version 12040", f"events {self.events}", "hang_max_ms 20000",
                 *head]
        for d in devices:
            lines += d
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.config)  # the fake never reads a half-written config
        # the fake notices a change by mtime and size: make sure a rewrite within one tick is seen
        st = self.config.stat()
        os.utime(self.config, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    def event(self, line: str) -> None:
        with self.events.open("a") as f:
            f.write(line + "\n")


@pytest.fixture(scope="module")
def lib() -> str:
    return str(fake_nvml())


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Fake:
    return Fake(tmp_path, monkeypatch)


@pytest.fixture
def opened(lib, fake):
    backends = []

    def make(*devices, head=()) -> NvidiaBackend:
        fake.write(*devices, head=head)
        b = NvidiaBackend(lib)
        b.open()
        backends.append(b)
        return b

    yield make
    for b in backends:
        b.close()


def ref0() -> DeviceRef:
    return DeviceRef("nvidia", 0, UUID0, "NVIDIA H100 80GB HBM3", "00000000:17:00.0", 3)


def ref1() -> DeviceRef:
    return DeviceRef("nvidia", 1, UUID1, "NVIDIA A100-SXM4-40GB", "00000000:B1:00.0", 1)


# ---- inventory ----

def test_inventory_every_field(opened):
    mig = ["mig 1 0 " + MIG_A + f" {10 * GIB} 1g.10gb", "mig 2 0 " + MIG_B + f" {20 * GIB} 2g.20gb",
           "unsupported nvmlDeviceGetEccMode"]
    b = opened(device(H100), device(A100_MIG, mig))
    infos = b.inventory(1234)
    assert infos == [
        DeviceInfoEvent(1234, ref0(), serial="1650923000001", driver_version="550.54.15", cuda_version="12.4",
                        memory_total=80 * GIB, power_limit_w=700.0, ecc_mode="enabled", mig_mode="disabled",
                        mig_devices=()),
        DeviceInfoEvent(1234, ref1(), serial="1561221000002", driver_version="550.54.15", cuda_version="12.4",
                        memory_total=40 * GIB, power_limit_w=350.0,  # the enforced limit, not the configured one
                        ecc_mode="", mig_mode="enabled",
                        mig_devices=(
                            DeviceRef("nvidia", 1, UUID1, "NVIDIA A100-SXM4-40GB MIG 1g.10gb", "00000000:B1:00.0", 1,
                                      MIG_A),
                            DeviceRef("nvidia", 1, UUID1, "NVIDIA A100-SXM4-40GB MIG 2g.20gb", "00000000:B1:00.0", 1,
                                      MIG_B))),
    ]


def test_inventory_optional_facts_unknown(opened):
    missing = ["unsupported nvmlDeviceGetSerial", "unsupported nvmlDeviceGetEnforcedPowerLimit",
               "unsupported nvmlDeviceGetPowerManagementLimit", "unsupported nvmlDeviceGetMemoryInfo",
               "unsupported nvmlDeviceGetMinorNumber", "unsupported nvmlDeviceGetMigMode"]
    b = opened(device(H100, missing))
    (info,) = b.inventory(1)
    assert info.device.minor == -1
    assert (info.serial, info.memory_total, info.power_limit_w, info.mig_mode) == ("", None, None, "")
    assert info.ecc_mode == "enabled"


def test_inventory_skips_a_gpu_without_uuid(opened):
    b = opened(device(H100, ["error nvmlDeviceGetUUID 999"]), device(A100_MIG))
    assert [i.device.uuid for i in b.inventory(1)] == [UUID1]


def test_inventory_fails_when_no_gpu_answers(opened):
    b = opened(device(H100, ["error nvmlDeviceGetUUID 999"]))
    with pytest.raises(DeviceError, match="GPU 0: Unknown Error"):
        b.inventory(1)


# ---- samples ----

EXPECTED_H100 = {
    "gpu_util": 42, "mem_util": 17, "mem_used": 2 * GIB, "mem_free": 80 * GIB - 2 * GIB - GIB // 2,
    "mem_total": 80 * GIB, "temperature": 55, "power_w": 123.456, "energy_mj": 987654321, "sm_clock": 1980,
    "mem_clock": 2619, "throttle_mask": 0x45, "pcie_replay": 2, "ecc_sbe_volatile": 3, "ecc_dbe_volatile": 0,
    "ecc_sbe_aggregate": 11, "ecc_dbe_aggregate": 1, "retired_pages_sbe": 2, "retired_pages_dbe": 1,
    "retired_pages_pending": 1, "remapped_rows_correctable": 4, "remapped_rows_uncorrectable": 1,
    "remapped_rows_pending": 1, "remapped_rows_failure": 0, "xid_last": 0,
}


def test_sample_every_value(opened):
    procs = ["process compute 4242 268435456", "process graphics 4343 na", "process graphics 4242 1",
             "process compute 1 4096"]
    b = opened(device(H100, procs))
    b.inventory(1)
    r = b.sample(ref0())
    assert r.values == EXPECTED_H100
    assert r.throttle == ("gpu_idle", "sw_power_cap", "hw_thermal_slowdown")
    # one entry per pid (4242 does compute and graphics: its compute entry); NVML's "not available" -> None
    assert r.processes == ((4242, 268435456, ""), (1, 4096, ""), (4343, None, ""))
    assert r.errors == []


def test_sample_without_inventory_finds_the_gpu_by_uuid(opened):
    b = opened(device(H100))
    assert b.sample(ref0()).values["temperature"] == 55


def test_sample_unknown_uuid(opened):
    b = opened(device(H100))
    with pytest.raises(DeviceError, match="nvmlDeviceGetHandleByUUID"):
        b.sample(DeviceRef("nvidia", 7, "GPU-nope"))


def test_sample_processes_in_mig_instances(opened):
    mig = ["mig 1 0 " + MIG_A + f" {10 * GIB} 1g.10gb", "mig 2 0 " + MIG_B + f" {20 * GIB} 2g.20gb",
           "process compute 500 na 1 0", "process compute 501 na 2 0", "process compute 502 na 2 7",
           "process compute 503 na 9 0"]
    b = opened(device(A100_MIG, mig))
    b.inventory(1)
    r = b.sample(DeviceRef("nvidia", 0, UUID1))
    # gi 2 / ci 7 is not a MIG device we listed: its GPU instance still names it; gi 9 is unknown
    assert r.processes == ((500, None, MIG_A), (501, None, MIG_B), (502, None, MIG_B), (503, None, ""))


MIGS = ["mig 1 0 " + MIG_A + f" {10 * GIB} 1g.10gb", "mig 2 0 " + MIG_B + f" {20 * GIB} 2g.20gb",
        "process compute 500 na 1 0", "process compute 501 1048576 2 0"]


def test_sample_of_one_mig_device(opened):
    b = opened(device(A100_MIG, MIGS))
    (info,) = b.inventory(1)
    r = b.sample(info.mig_devices[1])
    # what NVML answers per MIG instance: its memory and its processes; the rest is the GPU's
    assert r.values == {"mem_total": 20 * GIB, "mem_used": 0, "mem_free": 20 * GIB, "xid_last": 0}
    assert r.processes == ((501, 1048576, MIG_B),) and r.errors == []


def test_mig_processes_asked_per_instance_when_the_gpu_refuses(opened):
    # NVML gives the GPU-wide list in MIG mode to privileged callers only (NO_PERMISSION otherwise)
    b = opened(device(A100_MIG, MIGS + ["error nvmlDeviceGetComputeRunningProcesses_v3 4"]))
    b.inventory(1)
    r = b.sample(DeviceRef("nvidia", 0, UUID1))
    assert r.processes == ((500, None, MIG_A), (501, 1048576, MIG_B)) and r.errors == []


def test_processes_on_drivers_without_v3_and_without_graphics(opened):
    b = opened(device(H100, ["process compute 77 4096", "process graphics 78 8192",
                             "error nvmlDeviceGetComputeRunningProcesses_v3 13",
                             "error nvmlDeviceGetGraphicsRunningProcesses_v3 13"]))
    assert b.sample(ref0()).processes == ((77, 4096, ""), (78, 8192, ""))
    b = opened(device(H100, ["process compute 77 4096", "process graphics 78 8192",
                             "unsupported nvmlDeviceGetGraphicsRunningProcesses_v3"]))
    r = b.sample(ref0())
    assert r.processes == ((77, 4096, ""),) and r.errors == []


def test_mig_devices_replaced_at_inventory(opened, fake):
    b = opened(device(A100_MIG, MIGS))
    b.inventory(1)
    fake.write(device(A100_MIG, ["mig 3 0 " + MIG_A + f" {10 * GIB} 1g.10gb", "process compute 600 na 3 0",
                                 "process compute 601 na 2 0"]))
    (info,) = b.inventory(2)
    assert [m.mig for m in info.mig_devices] == [MIG_A]
    assert b.sample(DeviceRef("nvidia", 0, UUID1)).processes == ((600, None, MIG_A), (601, None, ""))


def test_unsupported_readings_left_out_and_asked_again_after_inventory(opened, fake):
    unsupported = ["unsupported nvmlDeviceGetPowerUsage", "unsupported nvmlDeviceGetTotalEccErrors",
                   "unsupported nvmlDeviceGetRetiredPages", "unsupported nvmlDeviceGetRemappedRows",
                   "unsupported nvmlDeviceGetComputeRunningProcesses_v3"]
    b = opened(device(H100, unsupported + ["process compute 4242 1"]))
    b.inventory(1)
    r = b.sample(ref0())
    gone = {"power_w", "ecc_sbe_volatile", "ecc_dbe_volatile", "ecc_sbe_aggregate", "ecc_dbe_aggregate",
            "retired_pages_sbe", "retired_pages_dbe", "retired_pages_pending", "remapped_rows_correctable",
            "remapped_rows_uncorrectable", "remapped_rows_pending", "remapped_rows_failure"}
    assert r.values == {k: v for k, v in EXPECTED_H100.items() if k not in gone}
    assert r.errors == [] and r.processes == ()
    fake.write(device(H100))  # the driver now supports them: not asked until the next inventory
    assert "power_w" not in b.sample(ref0()).values
    b.inventory(2)
    assert b.sample(ref0()).values == EXPECTED_H100


def test_failed_readings_listed(opened):
    b = opened(device(H100, ["error nvmlDeviceGetTemperature 999", "error nvmlDeviceGetClockInfo 4",
                             "error nvmlDeviceGetGraphicsRunningProcesses_v3 999"]))
    r = b.sample(ref0())
    assert r.errors == ["temperature: Unknown Error", "clocks: Insufficient Permissions", "processes: Unknown Error"]
    assert "temperature" not in r.values and "sm_clock" not in r.values and r.values["gpu_util"] == 42


def test_every_reading_failing_is_a_device_error(opened):
    fns = ["nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetTemperature",
           "nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetClockInfo",
           "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetPcieReplayCounter",
           "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRetiredPages", "nvmlDeviceGetRemappedRows"]
    b = opened(device(H100, [f"error {f} 999" for f in fns]))
    with pytest.raises(DeviceError, match="every reading failed: utilization: Unknown Error"):
        b.sample(ref0())


def test_older_driver_fallbacks(opened):
    # NVML before R510 has no nvmlDeviceGetMemoryInfo_v2 (v1 counts reserved memory as used); before R535
    # the clock-event reasons were "throttle reasons"; nvmlDeviceGetTemperatureV does not exist in the fake
    old = ["error nvmlDeviceGetMemoryInfo_v2 13", "error nvmlDeviceGetCurrentClocksEventReasons 13",
           "error nvmlDeviceGetTemperature 13"]
    b = opened(device(H100, old))
    r = b.sample(ref0())
    assert r.values["mem_used"] == 2 * GIB + GIB // 2
    assert r.values["mem_free"] == 80 * GIB - 2 * GIB - GIB // 2
    assert r.values["throttle_mask"] == 0x45 and r.throttle == ("gpu_idle", "sw_power_cap", "hw_thermal_slowdown")
    assert "temperature" not in r.values and r.errors == []


@pytest.mark.parametrize("code, severity, action", [(15, Severity.CRITICAL, "reboot"),
                                                    (16, Severity.HIGH, "reset_gpu")])
def test_gpu_lost_fails_the_sample_and_is_reported_once(opened, fake, code, severity, action):
    b = opened(device(H100))
    b.inventory(1)
    fake.write(device(H100, [f"error nvmlDeviceGetMemoryInfo_v2 {code}"]))
    with pytest.raises(DeviceError, match="memory: GPU"):
        b.sample(ref0())
    with pytest.raises(DeviceError):
        b.sample(ref0())
    (ev,) = b.health(0.05)
    assert (ev.device, ev.kind, ev.severity, ev.action, ev.xid) == (ref0(), "unavailable", severity, action, None)
    assert ev.detail.startswith("NVML: GPU")
    assert b.health(0.05) == []  # once, not once per failed sample
    fake.write(device(H100))
    assert b.sample(ref0()).values["gpu_util"] == 42
    fake.write(device(H100, [f"error nvmlDeviceGetMemoryInfo_v2 {code}"]))
    with pytest.raises(DeviceError):
        b.sample(ref0())
    assert [e.kind for e in b.health(0.05)] == ["unavailable"]  # lost again after it answered: reported again


# ---- health events ----

@pytest.mark.parametrize("number, mnemonic, severity, action", [
    (79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", Severity.CRITICAL, "reboot"),
    (48, "ROBUST_CHANNEL_GPU_ECC_DBE", Severity.CRITICAL, "drain_and_reset"),
    (94, "ROBUST_CHANNEL_CONTAINED_ERROR", Severity.MEDIUM, "restart_app"),
    (95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", Severity.CRITICAL, "reset_gpu"),
    (119, "GSP_RPC_TIMEOUT", Severity.HIGH, "reset_gpu"),
    (120, "GSP_ERROR", Severity.HIGH, "reset_gpu"),
    (13, "ROBUST_CHANNEL_GR_EXCEPTION", Severity.MEDIUM, "restart_app"),
    (31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", Severity.MEDIUM, "restart_app"),
    (43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", Severity.MEDIUM, "restart_app"),
    (45, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", Severity.MEDIUM, "restart_app"),
    (63, "INFOROM_DRAM_RETIREMENT_EVENT", Severity.LOW, "none"),
    (74, "NVLINK_ERROR", Severity.HIGH, "reset_gpu"),
    (250, "", Severity.HIGH, "contact_support"),
])
def test_xid_event(opened, fake, number, mnemonic, severity, action):
    b = opened(device(H100), device(A100_MIG))
    b.inventory(1)
    fake.event(f"1 xid {number}")
    (ev,) = b.health(2.0)
    assert (ev.device, ev.kind, ev.severity, ev.xid, ev.mnemonic, ev.action) == (
        ref1(), "xid", severity, number, mnemonic, action)
    assert ev.detail == xids.lookup(number).description
    assert abs(ev.ts_ns - time.time_ns()) < 5e9
    assert b.sample(ref1()).values["xid_last"] == number
    assert b.sample(ref0()).values["xid_last"] == 0


def test_ecc_unavailable_and_recovery_events(opened, fake):
    b = opened(device(H100))
    b.inventory(1)
    for line in ("0 sbe", "0 dbe", "0 unavailable", "0 recovery 2", "0 recovery 4", "0 recovery 77"):
        fake.event(line)
    got = [(e.kind, e.severity, e.action, e.xid, e.mnemonic, e.detail) for e in b.health(2.0)]
    assert got == [
        ("ecc_sbe", Severity.LOW, "none", None, "", "single-bit (corrected) ECC error"),
        ("ecc_dbe", Severity.CRITICAL, "drain_and_reset", None, "", "double-bit (uncorrectable) ECC error"),
        ("unavailable", Severity.CRITICAL, "reboot", None, "", "NVML: GPU unavailable"),
        ("xid", Severity.CRITICAL, "reboot", 154, "GPU_RECOVERY_ACTION_CHANGED",
         "GPU recovery action: Node Reboot Required"),
        ("xid", Severity.CRITICAL, "drain_and_reset", 154, "GPU_RECOVERY_ACTION_CHANGED",
         "GPU recovery action: Drain and Reset"),
        ("xid", Severity.MEDIUM, "contact_support", 154, "GPU_RECOVERY_ACTION_CHANGED",
         "GPU recovery action: recovery action 77"),
    ]


def test_xid_in_a_mig_instance(opened, fake):
    mig = ["mig 1 0 " + MIG_A + f" {10 * GIB} 1g.10gb", "mig 2 0 " + MIG_B + f" {20 * GIB} 2g.20gb"]
    b = opened(device(A100_MIG, mig))
    b.inventory(1)
    fake.event("0 xid 31 2 0")
    (ev,) = b.health(2.0)
    assert ev.device == DeviceRef("nvidia", 0, UUID1, "NVIDIA A100-SXM4-40GB", "00000000:B1:00.0", 1, MIG_B)
    assert ev.detail == "GPU memory page fault (GPU instance 2, compute instance 0)"


def test_health_waits_at_most_its_timeout(opened):
    b = opened(device(H100))
    b.inventory(1)
    t = time.monotonic()
    assert b.health(0.3) == []
    assert 0.25 <= time.monotonic() - t < 2.0


def test_health_before_inventory_sleeps(opened, fake):
    b = opened(device(H100))
    fake.event("0 xid 79")
    t = time.monotonic()
    assert b.health(0.2) == []  # no GPU registered yet
    assert time.monotonic() - t >= 0.15
    b.inventory(1)
    assert [e.xid for e in b.health(2.0)] == [79]  # registered now; NVML would have lost the earlier one


def test_event_storm_taken_in_bounded_batches(opened, fake):
    b = opened(device(H100))
    b.inventory(1)
    with fake.events.open("a") as f:
        f.writelines("0 sbe\n" for _ in range(200))
    sizes = []
    while sum(sizes) < 200:
        batch = b.health(1.0)
        assert batch, "events lost"
        sizes.append(len(batch))
    assert max(sizes) <= EVENT_DRAIN_MAX and sum(sizes) == 200


def test_hung_call_holds_nothing_else(opened, fake):
    """A sample stuck in the driver must not block health() or another GPU's sample (the poller's time
    limit reports it unresponsive); it returns when the driver does."""
    b = opened(device(H100, ["hang nvmlDeviceGetTemperature"]), device(A100_MIG))
    b.inventory(1)
    done: list = []
    t = threading.Thread(target=lambda: done.append(b.sample(ref0())), daemon=True)
    t.start()
    time.sleep(0.3)
    assert not done, "the hung call returned"
    assert b.sample(ref1()).values["temperature"] == 33
    fake.event("1 xid 13")
    assert [e.xid for e in b.health(2.0)] == [13]
    fake.write(device(H100), device(A100_MIG))  # the driver answers again
    t.join(5)
    assert not t.is_alive() and done[0].values["temperature"] == 55


# ---- no driver ----

def test_no_gpu_is_no_driver(lib, fake):
    fake.write()
    with pytest.raises(NoDriver, match="reports no GPU"):
        NvidiaBackend(lib).open()


def test_driver_not_loaded(lib, fake):
    fake.write(device(H100), head=["init_error 9"])
    with pytest.raises(NoDriver, match="nvidia: NVML init failed: Driver Not Loaded"):
        NvidiaBackend(lib).open()


def test_library_path_missing(tmp_path):
    with pytest.raises(NoDriver, match="nvidia: cannot load"):
        NvidiaBackend(str(tmp_path / "libnvidia-ml.so.1")).open()


@pytest.mark.skipif(bool(ctypes.util.find_library("nvidia-ml")), reason="this machine has a real NVML")
def test_no_library_on_the_node():
    """A fresh process on a node without libnvidia-ml.so.1: NoDriver with one line."""
    code = ("from agent.devices.nvidia import NvidiaBackend\nfrom agent.devices.base import NoDriver\n"
            "try:\n    NvidiaBackend().open()\nexcept NoDriver as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_CONFIG")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "nvidia: libnvidia-ml.so.1 not found (no NVIDIA driver on this node)\n"


def test_closed_backend_says_so(opened):
    b = opened(device(H100))
    b.close()
    with pytest.raises(DeviceError, match="not open"):
        b.sample(ref0())


# ---- the Xid table ----

def test_xid_table_consistent():
    assert len(xids.XIDS) > 90
    for n, x in xids.XIDS.items():
        assert x.number == n and x.mnemonic and x.description and x.bucket
        assert x.action in xids.ACTIONS
        if n != 95:
            assert x.severity == xids.SEVERITY_BY_ACTION[x.action], n
    assert xids.lookup(95).severity == Severity.CRITICAL
    assert {n for n, x in xids.XIDS.items() if x.app_fault} == {13, 31, 43, 45}


def test_recovery_actions():
    assert xids.recovery_action(0) == ("None", "none", Severity.LOW)
    assert xids.recovery_action(1) == ("GPU Reset Required", "reset_gpu", Severity.HIGH)
    assert xids.recovery_action(2) == ("Node Reboot Required", "reboot", Severity.CRITICAL)
    assert xids.recovery_action(4) == ("Drain and Reset", "drain_and_reset", Severity.CRITICAL)


def test_open_again_after_close(opened, lib, fake):
    b = opened(device(A100_MIG, MIGS))
    b.inventory(1)
    b.close()
    b.close()  # a second close is a no-op
    b.open()
    (info,) = b.inventory(2)
    assert [m.mig for m in info.mig_devices] == [MIG_A, MIG_B]
    fake.event("0 xid 48")
    assert [(e.xid, e.action) for e in b.health(2.0)] == [(48, "drain_and_reset")]


def test_xid_154_reported_from_the_recovery_event(opened, fake):
    # a GPU with NVML's recovery-action event: Xid 154 itself adds nothing to it, and is not reported twice
    b = opened(device(H100), device(A100_MIG, ["event_types 0xf"]))  # GPU 1: SBE, DBE, pstate, Xid only
    b.inventory(1)
    for line in ("0 xid 154", "0 recovery 1", "1 xid 154", "1 recovery 1", "1 unavailable"):
        fake.event(line)
    got = [(e.device.index, e.xid, e.action, e.severity) for e in b.health(2.0)]
    assert got == [(0, 154, "reset_gpu", Severity.HIGH), (1, 154, "contact_support", Severity.MEDIUM)]
    assert b.sample(ref0()).values["xid_last"] == 154


def test_no_gpu_registers_events(opened, fake):
    b = opened(device(H100, ["event_types 0x4"]))  # P-state changes only: nothing we listen to
    b.inventory(1)
    fake.event("0 xid 79")
    t = time.monotonic()
    assert b.health(0.2) == [] and time.monotonic() - t >= 0.15


def test_fake_structs_match_pynvml(lib):
    """The fake's structs have the sizes pynvml declares for NVML's (nvmlPciInfo_t, nvmlMemory_t,
    nvmlMemory_v2_t, nvmlUtilization_t, nvmlProcessInfo_v3_t, nvmlEventData_t)."""
    import pynvml

    sizes = (ctypes.c_uint * 6)()
    assert ctypes.CDLL(lib).fakeNvmlStructSizes(sizes, 6) == 6
    assert list(sizes) == [ctypes.sizeof(t) for t in (
        pynvml.nvmlPciInfo_t, pynvml.c_nvmlMemory_t, pynvml.c_nvmlMemory_v2_t, pynvml.c_nvmlUtilization_t,
        pynvml.c_nvmlProcessInfo_v3_t, pynvml.c_nvmlEventData_t)]
    assert pynvml.nvmlMemory_v2 == (2 << 24) | ctypes.sizeof(pynvml.c_nvmlMemory_v2_t)
