"""The NVIDIA backend: NVML through NVIDIA's own Python binding (PyPI nvidia-ml-py, module pynvml).

pynvml loads libnvidia-ml.so.1 from the library path (the driver installs it; in a container the
NVIDIA container toolkit mounts it). `library` names the file explicitly instead: it is loaded first, by
path, and pynvml's own dlopen of "libnvidia-ml.so.1" then finds it already loaded by its soname.

Every method may block in the driver; the poller (agent/devices/poller.py) calls them in its worker
under a time limit. So no lock here is ever held across an NVML call: a call stuck in the kernel must
not stop health() or another device's sample in a second thread.

Readings a device does not support (NOT_SUPPORTED, or a function an older driver lacks) are left out of
the sample and not asked again until the next inventory: on real GPUs some unsupported queries are slow.
A device that answers GPU_IS_LOST or RESET_REQUIRED fails its sample (DeviceError, counted by the poller)
and gets one device.health "unavailable" record, delivered by the next health() call.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable

from agent.devices import xid as xids
from agent.devices.base import Backend, DeviceError, NoDriver, Reading
from agent.devices.fields import throttle_names
from agent.events import DeviceHealthEvent, DeviceInfoEvent, DeviceRef
from agent.vocab import Severity

VENDOR = "nvidia"
NO_INSTANCE = 0xFFFFFFFF  # NVML's gpuInstanceId / computeInstanceId when a process or event has no MIG instance
EVENT_DRAIN_MAX = 64  # events taken in one health() call at most: a storm never holds the worker
PENDING_MAX = 256  # synthetic health records waiting for health(); beyond, the oldest go (one per device anyway)

# nvmlEventType* bits we register (NVML's values, as in pynvml)
EV_SBE, EV_DBE, EV_XID, EV_UNAVAILABLE, EV_RECOVERY = 0x1, 0x2, 0x8, 0x4000, 0x8000
EVENTS_WANTED = EV_SBE | EV_DBE | EV_XID | EV_UNAVAILABLE | EV_RECOVERY


def _cuda_version(v: int) -> str:
    """NVML's CUDA driver version integer (12040) as nvidia-smi prints it ("12.4")."""
    return f"{v // 1000}.{(v % 1000) // 10}" if v > 0 else ""


def _addr(handle) -> int:
    """An nvmlDevice_t's address: how an event's device is matched to an inventoried one."""
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _text(v) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class NvidiaBackend(Backend):
    vendor = VENDOR

    def __init__(self, library: str = "") -> None:
        self._library = library
        self._nv = None  # the pynvml module, once open
        self._lock = threading.Lock()  # guards the dicts below, never held across an NVML call
        self._handles: dict[str, object] = {}  # GPU or MIG device uuid -> nvmlDevice_t
        self._refs: dict[int, DeviceRef] = {}  # handle address -> ref (events name the device by handle)
        self._migs: dict[tuple[str, int, int], str] = {}  # (GPU uuid, gpu instance, compute instance) -> MIG uuid
        self._mig_list: dict[str, tuple[str, ...]] = {}  # GPU uuid -> its MIG devices' uuids
        self._unsupported: dict[str, set[str]] = {}  # GPU uuid -> readings it does not support
        self._lost: set[str] = set()  # GPUs already reported unavailable, until they answer again
        self._xid_last: dict[str, int] = {}
        self._pending: deque[DeviceHealthEvent] = deque(maxlen=PENDING_MAX)
        self._eventset = None
        self._event_regs: dict[int, int] = {}  # handle address -> the event types registered for it (0: none)
        self._driver = ""
        self._cuda = ""

    # ---- lifecycle ----

    def open(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise NoDriver("nvidia: the nvidia-ml-py package (pynvml) is not installed") from None
        if self._library:
            try:
                ctypes.CDLL(self._library)
            except OSError as e:
                raise NoDriver(f"nvidia: cannot load {self._library}: {e}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            raise NoDriver("nvidia: libnvidia-ml.so.1 not found (no NVIDIA driver on this node)") from None
        except pynvml.NVMLError as e:
            raise NoDriver(f"nvidia: NVML init failed: {e}") from None
        self._nv = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            self.close()
            raise NoDriver(f"nvidia: NVML cannot count GPUs: {e}") from None
        if count == 0:
            self.close()
            raise NoDriver("nvidia: the NVIDIA driver is loaded but reports no GPU")
        self._driver = self._try(pynvml.nvmlSystemGetDriverVersion, default="")
        self._cuda = _cuda_version(self._try(pynvml.nvmlSystemGetCudaDriverVersion, default=0))
        self._eventset = self._try(pynvml.nvmlEventSetCreate, default=None)

    def close(self) -> None:
        nv, self._nv = self._nv, None
        if nv is None:
            return
        if self._eventset is not None:
            self._try(nv.nvmlEventSetFree, self._eventset, nv=nv)
            self._eventset = None
        with self._lock:  # handles die with the NVML session; a later open() starts from an inventory again
            self._event_regs.clear()
            self._handles.clear()
            self._refs.clear()
            self._migs.clear()
            self._mig_list.clear()
            self._unsupported.clear()
        self._try(nv.nvmlShutdown, nv=nv)

    def _try(self, fn: Callable, *args, default=None, nv=None):
        """fn(*args), or `default` on any NVML error: for optional facts, where a failure only means "unknown"."""
        nv = nv or self._nv
        try:
            return fn(*args)
        except nv.NVMLError:
            return default

    def _nvml(self):
        if self._nv is None:
            raise DeviceError("nvidia: NVML is not open")
        return self._nv

    # ---- inventory ----

    def inventory(self, ts_ns: int) -> list[DeviceInfoEvent]:
        nv = self._nvml()
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as e:
            raise DeviceError(f"nvmlDeviceGetCount: {e}") from None
        infos, first_error = [], ""
        for index in range(count):
            try:
                infos.append(self._device_info(nv, index, ts_ns))
            except nv.NVMLError as e:
                first_error = first_error or f"GPU {index}: {e}"
        if not infos and first_error:
            raise DeviceError(f"nvidia inventory: {first_error}")
        with self._lock:
            self._unsupported.clear()  # MIG or ECC mode may have changed what a GPU supports: ask again
        return infos

    def _device_info(self, nv, index: int, ts_ns: int) -> DeviceInfoEvent:
        h = nv.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nv.nvmlDeviceGetUUID(h))  # the one fact a device cannot go without
        pci = self._try(nv.nvmlDeviceGetPciInfo, h)
        ref = DeviceRef(VENDOR, index, uuid, model=_text(self._try(nv.nvmlDeviceGetName, h, default="")),
                        pci_bus_id=_text(pci.busId) if pci is not None else "",
                        minor=self._try(nv.nvmlDeviceGetMinorNumber, h, default=-1))
        mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
        limit_mw = self._try(nv.nvmlDeviceGetEnforcedPowerLimit, h)
        if limit_mw is None:
            limit_mw = self._try(nv.nvmlDeviceGetPowerManagementLimit, h)
        ecc = self._try(nv.nvmlDeviceGetEccMode, h)
        mig = self._try(nv.nvmlDeviceGetMigMode, h)
        mig_devices = self._mig_devices(nv, h, ref) if mig is not None and mig[0] == nv.NVML_DEVICE_MIG_ENABLE else ()
        with self._lock:
            self._handles[uuid] = h
            self._refs[_addr(h)] = ref
        return DeviceInfoEvent(ts_ns, ref, serial=_text(self._try(nv.nvmlDeviceGetSerial, h, default="")),
                               driver_version=_text(self._driver), cuda_version=self._cuda,
                               memory_total=int(mem.total) if mem is not None else None,
                               power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
                               ecc_mode=_mode(ecc), mig_mode=_mode(mig), mig_devices=mig_devices)

    def _mig_devices(self, nv, h, parent: DeviceRef) -> tuple[DeviceRef, ...]:
        out, found = [], {}
        for i in range(self._try(nv.nvmlDeviceGetMaxMigDeviceCount, h, default=0)):
            try:
                m = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
                mig_uuid = _text(nv.nvmlDeviceGetUUID(m))
            except nv.NVMLError:  # NOT_FOUND: an empty slot
                continue
            gi = self._try(nv.nvmlDeviceGetGpuInstanceId, m, default=NO_INSTANCE)
            ci = self._try(nv.nvmlDeviceGetComputeInstanceId, m, default=NO_INSTANCE)
            found[(parent.uuid, gi, ci)] = (mig_uuid, m)
            name = _text(self._try(nv.nvmlDeviceGetName, m, default=""))
            out.append(DeviceRef(VENDOR, parent.index, parent.uuid, name, parent.pci_bus_id, parent.minor, mig_uuid))
        with self._lock:  # MIG devices are created and destroyed at run time: this GPU's list is replaced whole
            for key in [k for k in self._migs if k[0] == parent.uuid]:
                self._handles.pop(self._migs.pop(key), None)
            for key, (mig_uuid, m) in found.items():
                self._migs[key] = mig_uuid
                self._handles[mig_uuid] = m
            self._mig_list[parent.uuid] = tuple(u for u, _ in found.values())
        return tuple(out)

    # ---- samples ----

    def _handle(self, nv, dev: DeviceRef):
        """The GPU's handle, or its MIG device's when the ref names one (dev.mig)."""
        key = dev.mig or dev.uuid
        with self._lock:
            h = self._handles.get(key)
        if h is None:  # sampled before (or without) an inventory of it; NVML takes MIG uuids here too
            try:
                h = nv.nvmlDeviceGetHandleByUUID(key)
            except nv.NVMLError as e:
                raise DeviceError(f"nvmlDeviceGetHandleByUUID({key}): {e}") from None
            with self._lock:
                self._handles[key] = h
                if not dev.mig:
                    self._refs[_addr(h)] = dev
        return h

    def sample(self, dev: DeviceRef) -> Reading:
        nv = self._nvml()
        h = self._handle(nv, dev)
        key = dev.mig or dev.uuid
        with self._lock:
            skip = set(self._unsupported.get(key, ()))
        reading = Reading()
        newly_unsupported = []
        for name, read in _READINGS:
            if name in skip:
                continue
            try:
                reading.values.update(read(nv, h))
            except nv.NVMLError as e:
                if e.value in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND):
                    newly_unsupported.append(name)
                elif e.value in (nv.NVML_ERROR_GPU_IS_LOST, nv.NVML_ERROR_RESET_REQUIRED):
                    self._gone(nv, dev, e)
                    raise DeviceError(f"{name}: {e}") from None
                else:
                    reading.errors.append(f"{name}: {e}")
        if newly_unsupported:
            with self._lock:
                self._unsupported.setdefault(key, set()).update(newly_unsupported)
        mask = reading.values.get("throttle_mask")
        if mask is not None:
            reading.throttle = throttle_names(int(mask))
        try:
            reading.processes = self._processes(nv, h, dev)
        except nv.NVMLError as e:
            if e.value not in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND):
                reading.errors.append(f"processes: {e}")
        if not reading.values and reading.errors:
            raise DeviceError(f"every reading failed: {reading.errors[0]}")
        with self._lock:
            reading.values["xid_last"] = self._xid_last.get(dev.uuid, 0)
            self._lost.discard(dev.uuid)
        return reading

    def _processes(self, nv, h, dev: DeviceRef) -> tuple[tuple[int, int | None, str], ...]:
        """(pid, used bytes or None, MIG uuid) per process. A MIG device's handle lists its own instance's.
        A GPU's lists every process, in MIG mode with each one's instance (NVML's aggregate answer, for a
        privileged caller only): refused, the GPU's MIG devices are asked one by one instead."""
        if dev.mig:
            return tuple((pid, used, dev.mig) for pid, used, _ in self._running(nv, h, dev.uuid))
        try:
            return self._running(nv, h, dev.uuid)
        except nv.NVMLError as e:
            with self._lock:
                migs = [(u, self._handles.get(u)) for u in self._mig_list.get(dev.uuid, ())]
            if e.value not in (nv.NVML_ERROR_NO_PERMISSION, nv.NVML_ERROR_NOT_SUPPORTED) or not migs:
                raise
        out = []
        for mig_uuid, m in migs:
            if m is not None:
                out += [(pid, used, mig_uuid) for pid, used, _ in self._running(nv, m, dev.uuid)]
        return tuple(out)

    def _running(self, nv, h, gpu_uuid: str) -> tuple[tuple[int, int | None, str], ...]:
        """Compute and graphics processes, one entry per pid (a process doing both is listed by both);
        the _v2 calls where the driver predates _v3 (R470 and older)."""
        seen: dict[int, tuple[int, int | None, str]] = {}
        for v3, v2 in ((nv.nvmlDeviceGetComputeRunningProcesses_v3, nv.nvmlDeviceGetComputeRunningProcesses_v2),
                       (nv.nvmlDeviceGetGraphicsRunningProcesses_v3, nv.nvmlDeviceGetGraphicsRunningProcesses_v2)):
            try:
                procs = v3(h)
            except nv.NVMLError as e:
                if e.value != nv.NVML_ERROR_FUNCTION_NOT_FOUND:
                    if v3 is nv.nvmlDeviceGetGraphicsRunningProcesses_v3 and e.value == nv.NVML_ERROR_NOT_SUPPORTED:
                        continue  # no graphics contexts on this GPU (MIG, compute-only boards)
                    raise
                procs = v2(h)
            for p in procs:
                if p.pid in seen:
                    continue
                used = int(p.usedGpuMemory) if p.usedGpuMemory is not None else None
                seen[p.pid] = (int(p.pid), used, self._mig_uuid(gpu_uuid, p.gpuInstanceId, p.computeInstanceId))
        return tuple(seen.values())

    def _mig_uuid(self, gpu_uuid: str, gi: int, ci: int) -> str:
        if gi == NO_INSTANCE:
            return ""
        with self._lock:
            found = self._migs.get((gpu_uuid, gi, ci))
            if found is None:  # a process in a GPU instance, compute instance not reported
                found = next((u for (g, i, _), u in self._migs.items() if g == gpu_uuid and i == gi), "")
        return found

    def _gone(self, nv, dev: DeviceRef, err) -> None:
        lost = err.value == nv.NVML_ERROR_GPU_IS_LOST
        with self._lock:
            if dev.uuid in self._lost:
                return
            self._lost.add(dev.uuid)
            self._pending.append(DeviceHealthEvent(
                time.time_ns(), dev, "unavailable", Severity.CRITICAL if lost else Severity.HIGH,
                detail=f"NVML: {err}", action="reboot" if lost else "reset_gpu"))

    # ---- health ----

    def health(self, timeout_s: float) -> list[DeviceHealthEvent]:
        nv = self._nvml()
        out = self._take_pending()
        if self._eventset is None or not self._registered():
            if not out:
                time.sleep(max(0.0, timeout_s))
            return out
        wait_ms = 0 if out else max(0, int(timeout_s * 1000))
        for _ in range(EVENT_DRAIN_MAX):
            try:
                data = nv.nvmlEventSetWait(self._eventset, wait_ms)
            except nv.NVMLError as e:
                if e.value == nv.NVML_ERROR_TIMEOUT:
                    break
                if out:
                    break  # report what arrived; the error comes back on the next call
                raise DeviceError(f"nvmlEventSetWait: {e}") from None
            event = self._health_event(nv, data)
            if event is not None:
                out.append(event)
            wait_ms = 0
        return out

    def _take_pending(self) -> list[DeviceHealthEvent]:
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def _registered(self) -> bool:
        """Registers every inventoried GPU in the event set, once (a GPU that cannot: no events from it)."""
        with self._lock:
            todo = [(a, r) for a, r in self._refs.items() if not r.mig and a not in self._event_regs]
            if not todo:
                return any(self._event_regs.values())
            handles = {_addr(h): h for h in self._handles.values()}
        nv = self._nv
        for addr, _ref in todo:
            h = handles.get(addr)
            types = self._try(nv.nvmlDeviceGetSupportedEventTypes, h, default=EVENTS_WANTED) if h else 0
            types &= EVENTS_WANTED
            register = nv.nvmlDeviceRegisterEvents
            ok = bool(h is not None and types) and self._try(register, h, types, self._eventset, default=False) is None
            with self._lock:
                self._event_regs[addr] = types if ok else 0
        with self._lock:
            return any(self._event_regs.values())

    def _health_event(self, nv, data) -> DeviceHealthEvent | None:
        ref = self._ref_of(nv, data)
        ts = time.time_ns()
        kind, value = int(data.eventType), int(data.eventData)
        where = _instance(data.gpuInstanceId, data.computeInstanceId)
        if kind == EV_XID:
            x = xids.lookup(value)
            with self._lock:
                self._xid_last[ref.uuid] = value
                recovery_events = self._event_regs.get(_addr(data.device), 0) & EV_RECOVERY
            if value == 154 and recovery_events:
                return None  # the recovery-action event of the same moment says which action: reported from it
            return DeviceHealthEvent(ts, ref, "xid", x.severity, detail=x.description + where, xid=value,
                                     mnemonic=x.mnemonic, action=x.action)
        if kind == EV_RECOVERY:  # what the driver's Xid 154 says: the recovery the GPU now needs
            words, action, severity = xids.recovery_action(value)
            x = xids.XIDS[154]
            return DeviceHealthEvent(ts, ref, "xid", severity, detail=f"GPU recovery action: {words}", xid=154,
                                     mnemonic=x.mnemonic, action=action)
        if kind == EV_DBE:
            return DeviceHealthEvent(ts, ref, "ecc_dbe", Severity.CRITICAL,
                                     detail="double-bit (uncorrectable) ECC error" + where, action="drain_and_reset")
        if kind == EV_SBE:
            return DeviceHealthEvent(ts, ref, "ecc_sbe", Severity.LOW,
                                     detail="single-bit (corrected) ECC error" + where, action="none")
        if kind == EV_UNAVAILABLE:
            return DeviceHealthEvent(ts, ref, "unavailable", Severity.CRITICAL, detail="NVML: GPU unavailable",
                                     action="reboot")
        return None  # a type we did not register

    def _ref_of(self, nv, data) -> DeviceRef:
        addr = _addr(data.device)
        with self._lock:
            ref = self._refs.get(addr)
        if ref is None:  # a GPU not in the inventory yet
            uuid = _text(self._try(nv.nvmlDeviceGetUUID, data.device, default=""))
            ref = DeviceRef(VENDOR, -1, uuid)
        gi, ci = int(data.gpuInstanceId), int(data.computeInstanceId)
        mig = self._mig_uuid(ref.uuid, gi, ci) if gi != NO_INSTANCE else ""
        if mig:
            ref = DeviceRef(ref.vendor, ref.index, ref.uuid, ref.model, ref.pci_bus_id, ref.minor, mig)
        return ref


def _mode(pair) -> str:
    """nvmlDeviceGetEccMode / GetMigMode's [current, pending] -> "enabled" / "disabled" / "" unknown."""
    if pair is None:
        return ""
    return "enabled" if int(pair[0]) == 1 else "disabled"


def _instance(gi: int, ci: int) -> str:
    if int(gi) == NO_INSTANCE:
        return ""
    return f" (GPU instance {gi}" + (f", compute instance {ci})" if int(ci) != NO_INSTANCE else ")")


# ---- the readings of one sample: (name, fn(pynvml, handle) -> values by agent/devices/fields.py names) ----

def _utilization(nv, h):
    u = nv.nvmlDeviceGetUtilizationRates(h)
    return {"gpu_util": int(u.gpu), "mem_util": int(u.memory)}


def _memory(nv, h):
    # v2 (R510+) leaves the driver's reserved memory out of "used", as nvidia-smi does; v1 counts it.
    try:
        m = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
    except nv.NVMLError as e:
        if e.value not in (nv.NVML_ERROR_FUNCTION_NOT_FOUND, nv.NVML_ERROR_NOT_SUPPORTED,
                           nv.NVML_ERROR_ARGUMENT_VERSION_MISMATCH):
            raise
        m = nv.nvmlDeviceGetMemoryInfo(h)
    return {"mem_used": int(m.used), "mem_free": int(m.free), "mem_total": int(m.total)}


def _temperature(nv, h):
    try:
        t = nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
    except nv.NVMLError as e:  # removed in a future driver (pynvml marks it deprecated): its successor
        if e.value != nv.NVML_ERROR_FUNCTION_NOT_FOUND:
            raise
        t = nv.nvmlDeviceGetTemperatureV(h, nv.NVML_TEMPERATURE_GPU)
    return {"temperature": int(t)}


def _power(nv, h):
    return {"power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0}


def _energy(nv, h):
    return {"energy_mj": int(nv.nvmlDeviceGetTotalEnergyConsumption(h))}


def _clocks(nv, h):
    return {"sm_clock": int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "mem_clock": int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))}


def _throttle(nv, h):
    try:
        mask = nv.nvmlDeviceGetCurrentClocksEventReasons(h)
    except nv.NVMLError as e:  # the name before R535
        if e.value != nv.NVML_ERROR_FUNCTION_NOT_FOUND:
            raise
        mask = nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)
    return {"throttle_mask": int(mask)}


def _pcie_replay(nv, h):
    return {"pcie_replay": int(nv.nvmlDeviceGetPcieReplayCounter(h))}


def _ecc(nv, h):
    get = nv.nvmlDeviceGetTotalEccErrors
    c, u = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    return {"ecc_sbe_volatile": int(get(h, c, nv.NVML_VOLATILE_ECC)),
            "ecc_dbe_volatile": int(get(h, u, nv.NVML_VOLATILE_ECC)),
            "ecc_sbe_aggregate": int(get(h, c, nv.NVML_AGGREGATE_ECC)),
            "ecc_dbe_aggregate": int(get(h, u, nv.NVML_AGGREGATE_ECC))}


def _retired_pages(nv, h):
    # Dynamic page retirement (Volta and older; Ampere+ remap rows instead and answer NOT_SUPPORTED).
    get = nv.nvmlDeviceGetRetiredPages
    return {"retired_pages_sbe": len(get(h, nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)),
            "retired_pages_dbe": len(get(h, nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)),
            "retired_pages_pending": int(nv.nvmlDeviceGetRetiredPagesPendingStatus(h))}


def _remapped_rows(nv, h):
    corr, unc, pending, failure = nv.nvmlDeviceGetRemappedRows(h)
    return {"remapped_rows_correctable": int(corr), "remapped_rows_uncorrectable": int(unc),
            "remapped_rows_pending": int(pending), "remapped_rows_failure": int(failure)}


_READINGS: tuple[tuple[str, Callable], ...] = (
    ("utilization", _utilization), ("memory", _memory), ("temperature", _temperature), ("power", _power),
    ("energy", _energy), ("clocks", _clocks), ("throttle", _throttle), ("pcie_replay", _pcie_replay),
    ("ecc", _ecc), ("retired_pages", _retired_pages), ("remapped_rows", _remapped_rows),
)
