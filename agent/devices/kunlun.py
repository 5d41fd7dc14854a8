"""Kunlun XPUs (Baidu Kunlunxin K100/K200, R200/R300, P800) through libxpuml.so, else `xpu_smi -m`.

libxpuml is Kunlunxin's NVML-like management library, shipped with the XRE driver. What this module
relies on comes from its public header (github.com/kunlunxin/go-xpuml, pkg/xpuml/xpuml.h, API version 1):
- every call returns an xpumlReturn_t (0 success, 3 not supported, 7 insufficient size, 15 XPU is lost,
  16 reset required ...); xpumlDevice_t is a struct holding one opaque pointer, passed by value;
- every info struct is 128 bytes, its tail reserved, so a newer library never writes past ours;
- power is in milliwatts, memory in bytes, temperature in C, clocks in MHz;
- xpumlProcessInfo_t.root_ns_pid (added 2022-07) is the pid in the root pid namespace, which is what the
  container table needs; an older library leaves that word 0 (reserved) and `pid` is all there is;
- device state (xpumlDeviceGetState): 0 unused, 201 running, 205 in reset, 207 error, 208 in exception.
  The library has no event API, so health is that state polled.
- xpumlDeviceGetName, GetUUID and GetMinorNumber are commented out in that header (the 2022 library
  does not export them; later ones do). Every function is looked up when first used and a missing one
  counts as not supported: the name then comes from the model id of xpumlDeviceGetAttributes, the UUID
  from the serial number, the minor number from the index (/dev/xpuN follows the library's numbering).

Without the library (a node with only the tools, or a library that does not initialise) the backend
reads `xpu_smi -m`; see agent/devices/xpusmi.py for that format. Both ways give a device the same UUID
when the library has no GetUUID ("XPU-" + serial), so a node switching between them keeps identities.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
import time
from ctypes import POINTER, byref, c_char, c_int, c_uint, c_ulonglong, c_void_p

from agent.devices import xpusmi
from agent.devices.base import Backend, DeviceError, NoDriver, Reading
from agent.events import DeviceHealthEvent, DeviceInfoEvent, DeviceRef
from agent.vocab import Severity

VENDOR = "kunlun"
MAX_DEVICES = 64  # a bound on what one node can hold (8 boards x 2 chips x SR-IOV VFs is far less)
MAX_PROCESSES = 4096  # per device per sample; more is refused with an error rather than grown without end
STATE_POLL_S = 1.0  # how often health() reads device states while it waits
# A hung xpu_smi is killed (with its process group) after this long. It is well above the poller's
# call_timeout_s (5 s by default), which is what reports the device unresponsive; killing sooner would
# only start another run that hangs the same way, and each kill reads as the call returning.
SMI_TIMEOUT_S = 30.0

# Where XRE installs the library when it is not on the loader's path (/usr/local/xpu-<version>/lib64).
LIBRARY_NAMES = ("libxpuml.so", "libxpuml.so.1")
LIBRARY_GLOBS = ("/usr/local/xpu/lib64/libxpuml.so*", "/usr/local/xpu-*/lib64/libxpuml.so*")

SUCCESS, NOT_SUPPORTED, INSUFFICIENT_SIZE, FUNCTION_NOT_FOUND = 0, 3, 7, 13
XPU_IS_LOST, RESET_REQUIRED = 15, 16
VALUE_NOT_AVAILABLE = 2**64 - 1  # XPUML_VALUE_NOT_AVAILABLE (-1) in an unsigned long long

_RETURNS = {
    1: "uninitialized", 2: "invalid argument", 3: "not supported", 4: "no permission", 6: "not found",
    7: "insufficient size", 8: "insufficient power", 9: "driver not loaded", 10: "timeout", 11: "IRQ issue",
    12: "library not found", 13: "function not found", 14: "corrupted infoROM", 15: "XPU is lost",
    16: "reset required", 17: "blocked by the operating system", 18: "library/driver version mismatch",
    19: "in use", 20: "insufficient memory", 21: "no data", 23: "insufficient resources", 999: "unknown error",
}

# xpumlDeviceModel_t, for a library without xpumlDeviceGetName.
_MODELS = {0: "K200", 1: "K100", 2: "R200", 3: "R300", 4: "R200-8F", 200: "R200 SR-IOV PF",
           201: "R200 VF (1 of 1)", 202: "R200 VF (1 of 2)", 203: "R200 VF (1 of 3)"}

# Device states that are not healthy -> (severity, recommended action, what it means). Severity follows
# the action, as for NVIDIA Xids: a reset in progress is worth knowing (medium); a device in error or in
# exception takes no new work until reset (high; the public docs name no lighter recovery); a device
# that answers "lost" is off the bus (critical: drain the node, then reset or reboot).
_STATES = {0: "unused", 201: "running", 205: "in_reset", 207: "error", 208: "in_exception"}
_UNHEALTHY = {
    "in_reset": (Severity.MEDIUM, "none", "the XPU is being reset"),
    "error": (Severity.HIGH, "reset_gpu", "the XPU reports an error state"),
    "in_exception": (Severity.HIGH, "reset_gpu", "the XPU reports an exception (a fault while running)"),
    "reset_required": (Severity.HIGH, "reset_gpu", "the driver needs an XPU reset before it can be used"),
    "lost": (Severity.CRITICAL, "drain_and_reset", "the XPU fell off the bus or is otherwise inaccessible"),
}


class _Handle(ctypes.Structure):
    _fields_ = [("handle", c_void_p)]


class _PciInfo(ctypes.Structure):
    _fields_ = [("domain", c_uint), ("bus", c_uint), ("device", c_uint), ("function", c_uint),
                ("pciDeviceId", c_uint), ("pciSubSystemId", c_uint), ("busId", c_char * 32),
                ("reserved", c_ulonglong * 9)]


class _Utilization(ctypes.Structure):
    _fields_ = [("xpu", c_uint), ("memory", c_uint), ("reserved", c_ulonglong * 15)]


class _Memory(ctypes.Structure):
    _fields_ = [("pageSizeGlobalMemory", c_ulonglong), ("totalGlobalMemory", c_ulonglong),
                ("freeGlobalMemory", c_ulonglong), ("usedGlobalMemory", c_ulonglong),
                ("pageSizeL3Memory", c_ulonglong), ("totalL3Memory", c_ulonglong),
                ("freeL3Memory", c_ulonglong), ("usedL3Memory", c_ulonglong), ("reserved", c_ulonglong * 8)]


class _ProcessInfo(ctypes.Structure):
    _fields_ = [("pid", c_uint), ("usedGlobalMemory", c_ulonglong), ("usedL3Memory", c_ulonglong),
                ("root_ns_pid", c_uint), ("reserved_u32", c_uint), ("reserved", c_ulonglong * 12)]


class _Attributes(ctypes.Structure):
    _fields_ = [("archId", c_int), ("boardId", c_int), ("modelId", c_int), ("clusterCount", c_uint),
                ("sdnnCount", c_uint), ("dmaEngineCount", c_uint), ("decoderCount", c_uint),
                ("encoderCount", c_uint), ("imgProcCount", c_uint), ("maxVFCount", c_uint),
                ("globalMemorySizeMB", c_ulonglong), ("l3MemorySizeMB", c_ulonglong), ("sn", c_ulonglong * 2),
                ("reserved", c_ulonglong * 7)]


_P_UINT = POINTER(c_uint)
_SIGNATURES = {
    "xpumlInit": [], "xpumlShutdown": [],
    "xpumlSystemGetDriverVersion": [ctypes.c_char_p, c_uint],
    "xpumlSystemGetXPUMLVersion": [ctypes.c_char_p, c_uint],
    "xpumlDeviceGetCount": [_P_UINT],
    "xpumlDeviceGetHandleByIndex": [c_uint, POINTER(_Handle)],
    "xpumlDeviceGetName": [_Handle, ctypes.c_char_p, c_uint],
    "xpumlDeviceGetUUID": [_Handle, ctypes.c_char_p, c_uint],
    "xpumlDeviceGetSerial": [_Handle, ctypes.c_char_p, c_uint],
    "xpumlDeviceGetMinorNumber": [_Handle, _P_UINT],
    "xpumlDeviceGetAttributes": [_Handle, POINTER(_Attributes)],
    "xpumlDeviceGetPciInfo": [_Handle, POINTER(_PciInfo)],
    "xpumlDeviceGetMemoryInfo": [_Handle, POINTER(_Memory)],
    "xpumlDeviceGetUtilizationRates": [_Handle, POINTER(_Utilization)],
    "xpumlDeviceGetTemperature": [_Handle, c_int, _P_UINT],
    "xpumlDeviceGetPowerUsage": [_Handle, _P_UINT],
    "xpumlDeviceGetPowerManagementLimit": [_Handle, _P_UINT],
    "xpumlDeviceGetClockInfo": [_Handle, c_int, _P_UINT],
    "xpumlDeviceGetState": [_Handle, POINTER(c_int)],
    "xpumlDeviceGetComputeRunningProcesses": [_Handle, _P_UINT, POINTER(_ProcessInfo)],
}


_UNSEEN = object()


class _Lib:
    """libxpuml with functions looked up when first called; a missing one answers FUNCTION_NOT_FOUND."""

    def __init__(self, path: str):
        self.path = path
        self._cdll = ctypes.CDLL(path)
        self._fns: dict[str, object] = {}
        self._errstr = None
        try:
            self._errstr = self._cdll.xpumlErrorString
            self._errstr.restype, self._errstr.argtypes = ctypes.c_char_p, [c_int]
        except AttributeError:
            pass

    def __call__(self, name: str, *args) -> int:
        fn = self._fns.get(name, _UNSEEN)
        if fn is _UNSEEN:
            try:
                fn = getattr(self._cdll, name)
                fn.restype, fn.argtypes = c_int, _SIGNATURES[name]
            except AttributeError:
                fn = None
            self._fns[name] = fn
        return FUNCTION_NOT_FOUND if fn is None else int(fn(*args))

    def error(self, rc: int) -> str:
        if self._errstr is not None:
            text = self._errstr(rc)
            if text:
                return text.decode(errors="replace")
        return _RETURNS.get(rc, f"error {rc}")


def _open_library(path: str | None) -> tuple[_Lib | None, str]:
    """The first libxpuml that loads and initialises; else (None, why)."""
    candidates = [path] if path else [*LIBRARY_NAMES, *sorted(p for g in LIBRARY_GLOBS for p in glob.glob(g))]
    why = "libxpuml.so not found"
    for cand in candidates:
        try:
            lib = _Lib(cand)
        except OSError as e:
            if "/" in cand:  # a path that is there but does not load is worth naming; a bare name is not
                why = f"{cand}: {str(e).splitlines()[0] if str(e) else 'cannot load'}"
            continue
        rc = lib("xpumlInit")
        if rc == SUCCESS:
            return lib, ""
        why = f"{cand}: xpumlInit: {lib.error(rc)}"
    return None, why


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace").strip()


def fallback_uuid(serial: str, bus: str, index: int) -> str:
    """A stable id for a device whose library has no GetUUID: its serial, else its PCI address."""
    return f"XPU-{serial}" if serial else f"XPU-{bus or index}"


class KunlunBackend(Backend):
    """Kunlun XPUs. mode: "auto" (library, else xpu_smi), "xpuml" or "xpu_smi"; library/smi: explicit
    paths instead of the search; sys_root: where /sys is (tests pass a fixture tree)."""

    vendor = VENDOR

    def __init__(self, library: str | None = None, smi: str | None = None, mode: str = "auto",
                 smi_timeout_s: float = SMI_TIMEOUT_S, sys_root: str = "/sys", state_poll_s: float = STATE_POLL_S):
        if mode not in ("auto", "xpuml", "xpu_smi"):
            raise ValueError(f"kunlun: mode must be auto, xpuml or xpu_smi, not {mode!r}")
        self._library, self._smi_path, self._mode = library, smi, mode
        self._smi_timeout_s, self._sys_root, self._state_poll_s = smi_timeout_s, sys_root, state_poll_s
        self._lib: _Lib | None = None
        self._smi: _SmiTool | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._handles: dict[int, tuple[DeviceRef, _Handle]] = {}
        self._states: dict[str, str] = {}  # uuid -> last health word ("ok" or a key of _UNHEALTHY)
        self.source = ""  # "libxpuml <path>" or "xpu_smi <path>", for the start-up line

    # -- Backend --------------------------------------------------------------------------------------

    def open(self) -> None:
        self._closed.clear()
        reasons = []
        if self._mode in ("auto", "xpuml"):
            self._lib, why = _open_library(self._library)
            if self._lib is not None:
                self.source = f"libxpuml {self._lib.path}"
                return
            reasons.append(why)
        if self._mode in ("auto", "xpu_smi"):
            path, why = xpusmi.find_smi(self._smi_path, self._sys_root)
            if path:
                tool = _SmiTool(path, self._smi_timeout_s)
                try:
                    tool.check()
                except DeviceError as e:
                    why = str(e)
                else:
                    self._smi, self.source = tool, f"xpu_smi {path}"
                    return
            reasons.append(why)
        raise NoDriver(f"kunlun: {'; '.join(reasons)}")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()  # ends a health() wait at once
        if self._lib is not None:
            self._lib("xpumlShutdown")
        if self._smi is not None:
            self._smi.close()

    def inventory(self, ts_ns: int) -> list[DeviceInfoEvent]:
        if self._smi is not None:
            return self._smi.inventory(ts_ns)
        return self._lib_inventory(ts_ns)

    def sample(self, dev: DeviceRef) -> Reading:
        if self._smi is not None:
            return self._smi.sample(dev)
        return self._lib_sample(self._handle(dev))

    def health(self, timeout_s: float) -> list[DeviceHealthEvent]:
        if self._smi is not None:
            return self._smi.health(timeout_s, self._closed)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            events = self._poll_states()
            left = deadline - time.monotonic()
            if events or left <= 0 or self._closed.is_set():
                return events
            self._closed.wait(min(left, self._state_poll_s))

    # -- the library ----------------------------------------------------------------------------------

    def _call(self, name: str, *args) -> int:
        if self._lib is None:
            raise DeviceError("kunlun: backend not open")
        return self._lib(name, *args)

    def _fail(self, name: str, rc: int) -> DeviceError:
        return DeviceError(f"{name}: {self._lib.error(rc) if self._lib else rc}")

    def _string(self, name: str, *head, size: int = 96) -> str:
        buf = ctypes.create_string_buffer(size)
        return _text(buf.raw) if self._call(name, *head, buf, size) == SUCCESS else ""

    def _uint(self, name: str, *head) -> int | None:
        out = c_uint()
        return out.value if self._call(name, *head, byref(out)) == SUCCESS else None

    def _handle(self, dev: DeviceRef) -> _Handle:
        with self._lock:
            found = self._handles.get(dev.index)
        if found is None or found[0].uuid != dev.uuid:
            raise DeviceError(f"kunlun: no device {dev.index} ({dev.uuid}) in the last inventory")
        return found[1]

    def _lib_inventory(self, ts_ns: int) -> list[DeviceInfoEvent]:
        count = c_uint()
        rc = self._call("xpumlDeviceGetCount", byref(count))
        if rc != SUCCESS:
            raise self._fail("xpumlDeviceGetCount", rc)
        driver = self._string("xpumlSystemGetDriverVersion", size=80)
        version = self._string("xpumlSystemGetXPUMLVersion", size=80)
        handles, out, first_error = {}, [], None
        for i in range(min(count.value, MAX_DEVICES)):
            h = _Handle()
            rc = self._call("xpumlDeviceGetHandleByIndex", i, byref(h))
            if rc != SUCCESS:
                first_error = first_error or self._fail(f"xpumlDeviceGetHandleByIndex({i})", rc)
                continue
            info = self._describe(ts_ns, i, h, driver, version)
            handles[i] = (info.device, h)
            out.append(info)
        if first_error is not None and not out:
            raise first_error
        with self._lock:
            self._handles = handles
            uuids = {ref.uuid for ref, _h in handles.values()}
            self._states = {u: w for u, w in self._states.items() if u in uuids}
        return out

    def _describe(self, ts_ns: int, i: int, h: _Handle, driver: str, version: str) -> DeviceInfoEvent:
        pci = _PciInfo()
        bus = ""
        if self._call("xpumlDeviceGetPciInfo", h, byref(pci)) == SUCCESS:
            bus = _text(pci.busId) or f"{pci.domain:08X}:{pci.bus:02X}:{pci.device:02X}.{pci.function:X}"
        serial = self._string("xpumlDeviceGetSerial", h, size=32)
        name = self._string("xpumlDeviceGetName", h) or self._model_name(h)
        uuid = self._string("xpumlDeviceGetUUID", h) or fallback_uuid(serial, bus, i)
        minor = self._uint("xpumlDeviceGetMinorNumber", h)
        mem = _Memory()
        total = mem.totalGlobalMemory if self._call("xpumlDeviceGetMemoryInfo", h, byref(mem)) == SUCCESS else None
        limit_mw = self._uint("xpumlDeviceGetPowerManagementLimit", h)
        ref = DeviceRef(VENDOR, i, uuid, name, bus, i if minor is None else minor)
        return DeviceInfoEvent(ts_ns, ref, serial=serial, driver_version=driver, cuda_version=version,
                               memory_total=total, power_limit_w=None if limit_mw is None else limit_mw / 1000)

    def _model_name(self, h: _Handle) -> str:
        attrs = _Attributes()
        if self._call("xpumlDeviceGetAttributes", h, byref(attrs)) == SUCCESS and attrs.modelId in _MODELS:
            return _MODELS[attrs.modelId]
        return "Kunlun XPU"

    def _lib_sample(self, h: _Handle) -> Reading:
        r = Reading()
        util, mem = _Utilization(), _Memory()
        temp, power, clock = c_uint(), c_uint(), c_uint()
        lost = 0
        reads = (
            ("gpu_util", "xpumlDeviceGetUtilizationRates", (h, byref(util)),
             lambda: {"gpu_util": util.xpu, "mem_util": util.memory}),
            ("mem_used", "xpumlDeviceGetMemoryInfo", (h, byref(mem)),
             lambda: {"mem_total": mem.totalGlobalMemory, "mem_used": mem.usedGlobalMemory,
                      "mem_free": mem.freeGlobalMemory}),
            ("temperature", "xpumlDeviceGetTemperature", (h, 0, byref(temp)), lambda: {"temperature": temp.value}),
            ("power_w", "xpumlDeviceGetPowerUsage", (h, byref(power)), lambda: {"power_w": power.value / 1000}),
            ("sm_clock", "xpumlDeviceGetClockInfo", (h, 0, byref(clock)), lambda: {"sm_clock": clock.value}),
        )
        for field, fn, args, values in reads:
            rc = self._call(fn, *args)
            if rc == SUCCESS:
                r.values.update(values())
            elif rc not in (NOT_SUPPORTED, FUNCTION_NOT_FOUND):
                r.errors.append(f"{field}: {self._lib.error(rc)}")
                lost += rc == XPU_IS_LOST
        if lost == len(reads):
            # Nothing answers: not a reading that failed but a device that is gone (health says so).
            raise DeviceError(f"xpuml: {self._lib.error(XPU_IS_LOST)}")
        self._lib_processes(h, r)
        return r

    def _lib_processes(self, h: _Handle, r: Reading) -> None:
        n = 32
        while True:
            arr, count = (_ProcessInfo * n)(), c_uint(n)
            rc = self._call("xpumlDeviceGetComputeRunningProcesses", h, byref(count), arr)
            if rc != INSUFFICIENT_SIZE or n >= MAX_PROCESSES:
                break
            n = min(MAX_PROCESSES, max(n * 2, count.value))
        if rc == SUCCESS:
            r.processes = tuple(
                (p.root_ns_pid or p.pid, None if p.usedGlobalMemory == VALUE_NOT_AVAILABLE else p.usedGlobalMemory, "")
                for p in arr[:min(count.value, n)])
        elif rc == INSUFFICIENT_SIZE:
            r.errors.append(f"processes: {count.value} processes, over the cap of {MAX_PROCESSES}")
        elif rc not in (NOT_SUPPORTED, FUNCTION_NOT_FOUND):
            r.errors.append(f"processes: {self._lib.error(rc)}")

    def _state_word(self, h: _Handle) -> str | None:
        state = c_int()
        rc = self._call("xpumlDeviceGetState", h, byref(state))
        if rc == SUCCESS:
            word = _STATES.get(state.value, f"state_{state.value}")
            return "ok" if word in ("running", "unused") else word
        if rc == XPU_IS_LOST:
            return "lost"
        if rc == RESET_REQUIRED:
            return "reset_required"
        return None  # not supported, or a passing error: no health news (samples count the errors)

    def _poll_states(self) -> list[DeviceHealthEvent]:
        with self._lock:
            devices = list(self._handles.values())
        events = []
        for ref, h in devices:
            word = self._state_word(h)
            if word is None:
                continue
            with self._lock:
                before = self._states.get(ref.uuid)
                self._states[ref.uuid] = word
            if word == before or (before is None and word == "ok"):
                continue
            events.append(health_event(ref, word, before))
        return events


def health_event(ref: DeviceRef, word: str, before: str | None) -> DeviceHealthEvent:
    """The device.health record for a change of health word (see _UNHEALTHY) from `before`."""
    ts = time.time_ns()
    if word == "ok":
        return DeviceHealthEvent(ts, ref, "recovered", Severity.INFO, f"the XPU is healthy again (was {before})",
                                 action="none")
    severity, action, what = _UNHEALTHY.get(word, (Severity.HIGH, "reset_gpu", f"the XPU reports {word}"))
    kind = "unavailable" if word == "lost" else "state"
    return DeviceHealthEvent(ts, ref, kind, severity, f"{word}: {what}", action=action)



class _SmiTool:
    """`xpu_smi -m` as the backend: one run serves every device's sample for `reuse_s` (the poller asks
    for each device in turn), one run at a time. Health is presence: a device known from the inventory
    that leaves the output is unavailable, and recovered when it comes back; the tool has no state column
    we can read, and a hung or failing tool is the poller's unresponsive/error case. Its output lists no
    processes, so samples from it carry none."""

    def __init__(self, path: str, timeout_s: float, reuse_s: float = 0.5):
        self.path, self.timeout_s, self.reuse_s = path, timeout_s, reuse_s
        self._run_lock = threading.Lock()
        self._lock = threading.Lock()
        self._last: tuple[float, dict[int, xpusmi.SmiDevice]] = (float("-inf"), {})
        self._known: dict[int, DeviceRef] = {}
        self._present: dict[int, bool] = {}
        self._changes: list[DeviceHealthEvent] = []
        self._news = threading.Event()
        self._driver = ""

    def check(self) -> None:
        """The tool answers with at least one Kunlun device line (else it is not a usable driver)."""
        if not self._read(fresh=True):
            raise DeviceError(f"{self.path} -m: no Kunlun device line in its output")

    def close(self) -> None:
        self._news.set()

    def _read(self, fresh: bool = False) -> dict[int, xpusmi.SmiDevice]:
        with self._run_lock:
            at, devs = self._last
            if fresh or time.monotonic() - at >= self.reuse_s:
                devs = {d.index: d for d in xpusmi.parse_m(xpusmi.run(self.path, ["-m"], self.timeout_s))}
                self._last = (time.monotonic(), devs)
                self._note_presence(devs)
        return devs

    def _note_presence(self, devs: dict[int, xpusmi.SmiDevice]) -> None:
        with self._lock:
            for i, ref in self._known.items():
                here = i in devs and fallback_uuid(devs[i].serial, devs[i].bus, i) == ref.uuid
                before = self._present.get(i, True)
                if here != before:
                    self._present[i] = here
                    self._changes.append(health_event(ref, "ok" if here else "lost", "lost" if here else None))
                    self._news.set()

    def inventory(self, ts_ns: int) -> list[DeviceInfoEvent]:
        devs = self._read(fresh=True)
        if not self._driver:
            try:
                self._driver = xpusmi.parse_driver(xpusmi.run(self.path, [], self.timeout_s))
            except DeviceError:
                pass  # the version is nice to have; the inventory stands without it
        out = []
        for d in devs.values():
            ref = DeviceRef(VENDOR, d.index, fallback_uuid(d.serial, d.bus, d.index), d.model, d.bus, d.index)
            total = None if d.mem_total_mib is None else d.mem_total_mib * xpusmi.MIB
            out.append(DeviceInfoEvent(ts_ns, ref, serial=d.serial, driver_version=self._driver,
                                       cuda_version=d.firmware, memory_total=total))
        with self._lock:
            self._known = {e.device.index: e.device for e in out}
            self._present = {i: True for i in self._known}
        return out

    def sample(self, dev: DeviceRef) -> Reading:
        d = self._read().get(dev.index)
        if d is None or fallback_uuid(d.serial, d.bus, d.index) != dev.uuid:
            raise DeviceError(f"{os.path.basename(self.path)} -m: device {dev.index} ({dev.uuid}) not in its output")
        values: dict[str, float | int] = {}
        for name, value in (("temperature", d.temperature), ("power_w", d.power_w), ("sm_clock", d.clock_mhz),
                            ("gpu_util", d.util)):
            if value is not None:
                values[name] = value
        if d.mem_used_mib is not None:
            values["mem_used"] = d.mem_used_mib * xpusmi.MIB
        if d.mem_total_mib is not None:
            values["mem_total"] = d.mem_total_mib * xpusmi.MIB
            if d.mem_used_mib is not None:
                values["mem_free"] = max(0, d.mem_total_mib - d.mem_used_mib) * xpusmi.MIB
        return Reading(values=values)

    def health(self, timeout_s: float, closed: threading.Event) -> list[DeviceHealthEvent]:
        self._news.wait(max(0.0, timeout_s))
        with self._lock:
            events, self._changes = self._changes, []
            if not closed.is_set():
                self._news.clear()
        return events
