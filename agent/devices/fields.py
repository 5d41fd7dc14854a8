"""The names of device readings (DeviceSampleEvent.values), their units, and the dcgm-exporter metric
each one is exported as, so that dashboards built for dcgm-exporter work on NodeWarden unchanged.

dcgm-exporter reports frame-buffer memory in MiB (DCGM_FI_DEV_FB_USED): `scale` turns our unit (bytes)
into the metric's. Kunlun XPU readings use the same names; they are exported as nodewarden_xpu_<name>.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Field:
    unit: str
    dcgm: str  # the dcgm-exporter metric name ("" when DCGM has none)
    kind: str = "gauge"  # "gauge" or "counter" (DCGM exports both as gauges; the type is for us)
    scale: float = 1.0  # our value * scale = the metric's value
    help: str = ""


FIELDS: dict[str, Field] = {
    "gpu_util": Field("%", "DCGM_FI_DEV_GPU_UTIL", help="GPU utilization"),
    "mem_util": Field("%", "DCGM_FI_DEV_MEM_COPY_UTIL", help="memory (copy engine) utilization"),
    "mem_used": Field("bytes", "DCGM_FI_DEV_FB_USED", scale=1 / MIB, help="frame buffer used (MiB)"),
    "mem_free": Field("bytes", "DCGM_FI_DEV_FB_FREE", scale=1 / MIB, help="frame buffer free (MiB)"),
    "mem_total": Field("bytes", "DCGM_FI_DEV_FB_TOTAL", scale=1 / MIB, help="frame buffer total (MiB)"),
    "temperature": Field("C", "DCGM_FI_DEV_GPU_TEMP", help="GPU temperature (C)"),
    "power_w": Field("W", "DCGM_FI_DEV_POWER_USAGE", help="power draw (W)"),
    "energy_mj": Field("mJ", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
                       help="total energy consumption since boot (mJ)"),
    "sm_clock": Field("MHz", "DCGM_FI_DEV_SM_CLOCK", help="SM clock (MHz)"),
    "mem_clock": Field("MHz", "DCGM_FI_DEV_MEM_CLOCK", help="memory clock (MHz)"),
    "throttle_mask": Field("bitmask", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", help="clock event reasons (bitmask)"),
    "pcie_replay": Field("count", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", help="PCIe replay counter"),
    "ecc_sbe_volatile": Field("count", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", help="single-bit ECC, volatile"),
    "ecc_dbe_volatile": Field("count", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", help="double-bit ECC, volatile"),
    "ecc_sbe_aggregate": Field("count", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter", help="single-bit ECC, aggregate"),
    "ecc_dbe_aggregate": Field("count", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter", help="double-bit ECC, aggregate"),
    "retired_pages_sbe": Field("count", "DCGM_FI_DEV_RETIRED_SBE", help="pages retired for single-bit errors"),
    "retired_pages_dbe": Field("count", "DCGM_FI_DEV_RETIRED_DBE", help="pages retired for double-bit errors"),
    "retired_pages_pending": Field("bool", "DCGM_FI_DEV_RETIRED_PENDING", help="a page retirement waits for reboot"),
    "remapped_rows_correctable": Field("count", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
                                       help="rows remapped, correctable"),
    "remapped_rows_uncorrectable": Field("count", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
                                         help="rows remapped, uncorrectable"),
    "remapped_rows_pending": Field("bool", "DCGM_FI_DEV_ROW_REMAP_PENDING", help="a row remap waits for reset"),
    "remapped_rows_failure": Field("bool", "DCGM_FI_DEV_ROW_REMAP_FAILURE", help="a row remap failed"),
    "xid_last": Field("xid", "DCGM_FI_DEV_XID_ERRORS", help="the last Xid error seen (0 none)"),
}

# Clock-event (throttle) reasons: NVML's nvmlClocksEventReason* / nvmlClocksThrottleReason* bits.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_REASONS.items() if mask & bit) + (
        (f"unknown_0x{mask & ~sum(THROTTLE_REASONS):x}",) if mask & ~sum(THROTTLE_REASONS) else ())
