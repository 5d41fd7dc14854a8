"""`xpu_smi` (also installed as `xpu-smi`), Kunlunxin's command-line tool: finding it, running it under a
time limit, and reading its machine-readable output (`xpu_smi -m`) and its summary header (`xpu_smi`).

Kunlunxin publishes no specification of `-m`; the format below is what public captures of real boards
show (a P800 OAM pair captured in 2026-09, K200 captures with XRE 4.33, and parsers in public tools that
read it: `xpu_smi -h` documents the columns by position). One line per device, fields split by blanks,
the model name quoted because it may hold a blank:

    00000000:03:00.0 0 0 02K15K624CV00304 36 0 0 0 86 1450 1450 1450 1450 1450 1450 2 96 90440 98304 0 \
        1.0:2.6:1.39.1.7 "P800 OAM" 0 0 0 0 0 0 0 0 0 0

     0 PCI bus id             1 card/board number      2 device id (dev_id; /dev/xpuN)   3 serial number
     4 temperature (C)        5-7 (undocumented)       8 power                          9-14 six clocks (MHz)
    15 L3 used (MiB)         16 L3 size (MiB)         17 memory used (MiB)             18 memory size (MiB)
    19 utilization (%)       20 firmware version      21 model                         22+ (undocumented)

Power is in watts on current releases (the P800 line: 86, beside "85W / 400W" in the summary table) and
in milliwatts on XRE 4.x (K200 captures read 5 digits); no Kunlun board draws 1 kW, so a value of 1000
or more is taken as milliwatts. Column 9 (the first clock, freq_0) is reported as the core clock. The
plain `xpu_smi` prints a table like nvidia-smi's whose header line carries "Driver Version: X".

Intel ships an unrelated `xpu-smi` for its GPUs: a tool of that name is used only when a Kunlunxin PCI
device (vendor 0x1d22) is present, and output with no line of this format counts as no driver.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

from agent.devices.base import DeviceError

MIB = 1024 * 1024
MAX_OUTPUT = 1 << 20  # bytes of tool output read; a real one is a few hundred bytes per device
SMI_NAMES = ("xpu_smi", "xpu-smi")
SMI_GLOBS = ("/usr/local/xpu/bin/xpu_smi", "/usr/local/xpu-*/bin/xpu_smi")
KUNLUN_PCI_VENDOR = "0x1d22"

_BUS = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_TOKEN = re.compile(r'"[^"]*"|\S+')
_DRIVER = re.compile(r"Driver Version:\s*(\S+)")
MIN_FIELDS = 22


@dataclass(frozen=True, slots=True)
class SmiDevice:
    """One line of `xpu_smi -m`; a value the line did not carry as a number is None."""

    bus: str
    index: int
    serial: str
    model: str
    firmware: str
    temperature: int | None
    power_w: float | None
    clock_mhz: int | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    util: int | None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _power(text: str) -> float | None:
    value = _int(text)
    if value is None:
        return None
    return value / 1000 if value >= 1000 else float(value)


def parse_line(line: str) -> SmiDevice | None:
    """One device line, or None when the line is not one (a banner, an error, another tool's output)."""
    t = _TOKEN.findall(line)
    if len(t) < MIN_FIELDS or not _BUS.match(t[0]):
        return None
    index = _int(t[2])
    if index is None or index < 0:
        return None
    return SmiDevice(bus=t[0], index=index, serial=t[3], model=t[21].strip('"').strip(),
                     firmware=t[20], temperature=_int(t[4]), power_w=_power(t[8]), clock_mhz=_int(t[9]),
                     mem_used_mib=_int(t[17]), mem_total_mib=_int(t[18]), util=_int(t[19]))


def parse_m(text: str) -> list[SmiDevice]:
    """Every device line of `xpu_smi -m` output, by device index (a repeated index: the first line)."""
    seen: dict[int, SmiDevice] = {}
    for line in text.splitlines():
        dev = parse_line(line)
        if dev is not None and dev.index not in seen:
            seen[dev.index] = dev
    return [seen[i] for i in sorted(seen)]


def parse_driver(text: str) -> str:
    """The driver version in the header of plain `xpu_smi` output ("" when absent)."""
    m = _DRIVER.search(text)
    return m.group(1) if m else ""


def run(path: str, args: list[str], timeout_s: float) -> str:
    """Run the tool in its own process group and return its stdout. On timeout the whole group is
    killed (a hung tool leaves nothing behind); failure -> DeviceError with one line."""
    try:
        proc = subprocess.Popen([path, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise DeviceError(f"{os.path.basename(path)}: {e.strerror or e}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise DeviceError(f"{os.path.basename(path)} {' '.join(args)}: no answer in {timeout_s:g} s") from None
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()
        raise DeviceError(f"{os.path.basename(path)} {' '.join(args)}: exit {proc.returncode}"
                          + (f": {why[-1][:200]}" if why else ""))
    return out[:MAX_OUTPUT].decode(errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.communicate()


def pci_vendor_present(sys_root: str, vendor: str = KUNLUN_PCI_VENDOR) -> bool:
    """Whether a PCI device of this vendor (0x1d22: Baidu/Kunlunxin) is on the node."""
    for path in glob.glob(os.path.join(sys_root, "bus/pci/devices/*/vendor")):
        try:
            with open(path) as f:
                if f.read().strip().lower() == vendor:
                    return True
        except OSError:
            continue
    return False


def find_smi(explicit: str | None, sys_root: str = "/sys") -> tuple[str | None, str]:
    """The tool to use, or (None, why)."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"{explicit}: not an executable file"
    found = shutil.which("xpu_smi") or next((p for g in SMI_GLOBS for p in sorted(glob.glob(g))
                                            if os.access(p, os.X_OK)), None)
    if found:
        return found, ""
    intel_name = shutil.which("xpu-smi")
    if intel_name:
        if pci_vendor_present(sys_root):
            return intel_name, ""
        return None, f"{intel_name} is not Kunlunxin's (no PCI device of vendor {KUNLUN_PCI_VENDOR})"
    return None, "xpu_smi not found"
