"""The device poller: every backend's driver calls in a worker thread of their own, each under a time limit.

Threads, per backend: `nw-dev-<vendor>` runs the schedule (open, inventory, a sample of every device each
interval_s, health in between) and hands each driver call to `nw-devcall-<vendor>`, the only thread that
ever enters the driver, waiting at most call_timeout_s for it. A call that does not return in time leaves
the worker stuck in the driver (a thread cannot be interrupted): the device it was about is reported
unresponsive (device.health), the backend's samples are skipped and counted until the call returns,
and then the device is reported recovered. No second call is ever queued behind a stuck one, so a hung
driver costs one thread, never a pile of them, and never the event pipeline.

Records (agent/events.py Device*Event) go through one bounded queue to `nw-dev-emit`, which hands them to
the pipeline (Pipeline.emit); a full queue drops its oldest sample, else the new record, and counts it
(devices.queue): health, inventory and process records are not repeated, a device's next sample is. Listeners
(add_listener) see every record first, on the backend's thread (agent/detect's device checks).

Processes using a device are attributed to containers through the container table: host pid ->
/proc/<pid>/cgroup -> cgroup id (agent/enrich/cgroups.py) -> container, else its mount namespace. A
pid that appears in a device's process list sends device.process start, one that leaves it stop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from agent.config import DevicesConfig
from agent.devices.base import Backend, DeviceError, NoDriver, Reading
from agent.devices.worker import Busy, CallTimeout, Worker
from agent.enrich.cgroups import CgroupResolver
from agent.events import (
    DeviceHealthEvent,
    DeviceInfoEvent,
    DeviceProcessEvent,
    DeviceRef,
    DeviceSampleEvent,
    DeviceUser,
)
from agent.ratelog import RateLog
from agent.vocab import Severity

log = logging.getLogger("nodewarden")

_HEALTH_SLICE = 1.0  # longest one health call waits for an event: stop() is never later than this
_MAX_PROCESSES = 256  # per device and sample: a driver that lists more is cut (and counted)
_MAX_ERRORS = 16  # failed readings named per sample
_MAX_ERROR_KINDS = 48  # distinct failure names counted per device (the readings, calls, "other")
_RECHECK_S = 5.0  # an unattributed device user's container is looked up again after this long


@dataclasses.dataclass
class DeviceState:
    """What the poller knows of one device now (read by metrics and the status file)."""

    info: DeviceInfoEvent
    sample: DeviceSampleEvent | None = None
    # ok, unresponsive, unavailable, xid (the last Xid's action asks for more than a restart), or Kunlun's
    # polled state word (in_reset, error, in_exception)
    health: str = "ok"
    last_health: DeviceHealthEvent | None = None
    last_xid: int = 0
    sample_s: float = 0.0  # how long the last sample took in the driver
    users: dict[tuple[int, str], DeviceUser] = dataclasses.field(default_factory=dict)
    errors: Counter = dataclasses.field(default_factory=Counter)  # reading or call -> failures
    health_events: Counter = dataclasses.field(default_factory=Counter)  # kind -> count
    samples: int = 0
    resolved: dict[tuple[int, str], float] = dataclasses.field(default_factory=dict)  # user -> looked up (monotonic)


class Attributor:
    """Host pid -> its container, through the container table (None: a host process or no table)."""

    def __init__(self, containers=None, proc_root: str = "/proc"):
        self.table = containers
        self.proc_root = proc_root
        self.cgroups = CgroupResolver(proc_root)

    def user(self, pid: int, used: int | None, mig: str) -> DeviceUser:
        return DeviceUser(pid=pid, used_memory=used, mig=mig, comm=self._comm(pid), container=self.container(pid))

    def container(self, pid: int):
        if self.table is None:
            return None
        _path, cgroup_id, mntns = self.cgroups.resolve_pid(pid)
        return self.table.lookup_by_cgroup(cgroup_id) or self.table.lookup_by_mntns(mntns)

    def _comm(self, pid: int) -> str:
        try:
            with open(os.path.join(self.proc_root, str(pid), "comm"), "rb") as f:
                return os.fsdecode(f.read().rstrip(b"\n"))
        except OSError:  # gone already, or another pid namespace's number
            return ""


class RecordQueue:
    """The bounded queue between the backends and the pipeline. Full, it makes room by dropping its oldest
    device.sample (the next sample of that device says as much), and drops a new record only when it holds
    nothing but health, inventory and process records: those are not repeated."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._d: deque = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, ev) -> bool:
        """False when a record was dropped (the oldest sample or this one)."""
        with self._cond:
            kept = True
            if len(self._d) >= self.maxsize:
                i = next((i for i, old in enumerate(self._d) if isinstance(old, DeviceSampleEvent)), -1)
                if i < 0:
                    return False
                del self._d[i]
                kept = False
            self._d.append(ev)
            self._cond.notify()
            return kept

    def get(self, block: bool = True):
        """The oldest record; None once closed and empty (or, not blocking, when empty)."""
        with self._cond:
            while not self._d:
                if self._closed or not block:
                    return None
                self._cond.wait()
            return self._d.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._d)


class BackendLoop:
    """One backend's schedule, on its own thread; its driver calls on its Worker."""

    def __init__(self, backend: Backend, cfg: DevicesConfig, poller: Poller):
        self.backend = backend
        self.vendor = backend.vendor or type(backend).__name__
        self.cfg = cfg
        self.poller = poller
        self.worker: Worker | None = None
        self.devices: dict[str, DeviceState] = {}  # uuid -> state, inventory order
        self.state = "starting"  # starting, running, absent (no driver), failed, stopped
        self.reason = ""
        self.skipped = 0  # device samples not taken while the driver held a late call
        self.told = False  # the poller has this backend's outcome for its start line
        self.retries = 0  # failed opens tried again
        self._thread = threading.Thread(target=self._run, name=f"nw-dev-{self.vendor}", daemon=True)

    # -- driver calls ------------------------------------------------------------------------------

    def _call(self, what: str, dev: DeviceRef | None, fn, *args, limit: float | None = None):
        return self.worker.call(what, dev, fn, *args, limit=self.cfg.call_timeout_s if limit is None else limit)

    def _timed_out(self, dev: DeviceRef | None, what: str) -> None:
        """A call is stuck in the driver: its device (else every device) is unresponsive."""
        for st in self._states(dev):
            if st.health != "unresponsive":
                self._health(st, "unresponsive", Severity.HIGH,
                             f"{self.vendor} driver call {what} did not return in {self.cfg.call_timeout_s:g} s")
            self.poller.count_error(st, "timeout")

    def _states(self, dev: DeviceRef | None) -> list[DeviceState]:
        if dev is not None and dev.uuid in self.devices:
            return [self.devices[dev.uuid]]
        return list(self.devices.values())

    def _health(self, st: DeviceState, kind: str, severity: Severity, detail: str) -> None:
        self.poller.record_health(st, DeviceHealthEvent(time.time_ns(), st.info.device, kind, severity, detail))

    # -- the schedule --------------------------------------------------------------------------------

    def start(self) -> None:
        self.worker = Worker(f"nw-devcall-{self.vendor}")
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:  # an agent whose start failed early stops a loop never started
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self.poller.stopping.is_set():
                if self._open():
                    self._loop()
                    break
                self.poller.opened(self)  # the first outcome goes into the start line
                if self.state == "absent":
                    break
                # A driver that failed or hung at open is tried again (it may come back: a driver reload, a
                # GPU reset); one that is absent is not (it will not appear without a restart of the node).
                self._retry_wait()
        except Exception as e:  # a bug of ours: this backend stops, the agent goes on
            self.state, self.reason = "failed", f"{type(e).__name__}: {e}"
            log.exception("devices: %s poller failed", self.vendor)
        finally:
            self.poller.opened(self)
            self._close()

    def _retry_wait(self) -> None:
        self.retries += 1
        if self.retries > 1:  # the first failure is in the start line
            self.poller.rlog.warning(f"open:{self.vendor}", "devices: %s: %s; trying again every %g s", self.vendor,
                                     self.reason, self.cfg.inventory_interval_s)
        deadline = time.monotonic() + self.cfg.inventory_interval_s
        while not self.poller.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.worker.late is not None:
                self.worker.late.done.wait(min(left, _HEALTH_SLICE))
                self.worker.returned()
            else:
                self.poller.stopping.wait(min(left, _HEALTH_SLICE))

    def _open(self) -> bool:
        if self.worker.late is not None:  # the last open still hangs in the driver
            return False
        reopen = self.state == "failed"
        try:
            self._call("open", None, self.backend.open)
        except NoDriver as e:
            self.state, self.reason = "absent", str(e) or "no driver"
            return False
        except (CallTimeout, DeviceError) as e:
            self.state, self.reason = "failed", f"open: {e}"
            return False
        if not self._inventory():
            self.state = "failed"
            self.reason = self.reason or "inventory failed"
            self._close_driver()
            return False
        self.state, self.reason = "running", ""
        if reopen and self.told:
            log.info("devices: %s: opened after all, %d devices", self.vendor, len(self.devices))
        self.poller.opened(self)
        return True

    def _close_driver(self) -> None:
        if self.worker.late is None and self.state != "absent":
            try:
                self._call("close", None, self.backend.close, limit=min(self.cfg.call_timeout_s, 2.0))
            except Exception:  # best effort: the driver is being left anyway
                pass

    def _close(self) -> None:
        if self.worker is None:
            return
        self._close_driver()
        self.worker.stop()

    def _loop(self) -> None:
        stop, cfg = self.poller.stopping, self.cfg
        now = time.monotonic()
        next_sample, next_inventory = now, now + cfg.inventory_interval_s
        while not stop.is_set():
            if self.worker.late is not None:
                self._wait_late()
                now = time.monotonic()
                if now >= next_sample:
                    self.skipped += len(self.devices)
                    next_sample = now + cfg.interval_s
                continue
            now = time.monotonic()
            if now >= next_inventory:
                next_inventory = now + cfg.inventory_interval_s
                self._inventory()
                continue
            if now >= next_sample:
                next_sample = max(next_sample + cfg.interval_s, now)  # never a burst to catch up
                self._sample_all()
                continue
            self._health_wait(min(next_sample, next_inventory) - now)

    def _wait_late(self) -> None:
        late = self.worker.late
        late.done.wait(min(self.cfg.interval_s, _HEALTH_SLICE))
        if self.worker.returned() is None:
            return
        for st in self._states(late.dev):
            if st.health == "unresponsive":
                self._health(st, "recovered", Severity.INFO, f"{self.vendor} driver call {late.what} returned")
        self._inventory()  # what the driver says now, after whatever held it

    def _health_wait(self, wait: float) -> None:
        wait = max(0.0, min(wait, _HEALTH_SLICE))
        t0 = time.monotonic()
        try:
            events = self._call("health", None, self.backend.health, wait, limit=wait + self.cfg.call_timeout_s)
        except CallTimeout:
            self._timed_out(None, "health")
            return
        except Busy:
            return
        except Exception as e:  # DeviceError, or a backend's bug: counted, and the schedule goes on
            self.poller.rlog.warning(f"health:{self.vendor}", "devices: %s health: %s", self.vendor, e)
            for st in self.devices.values():
                self.poller.count_error(st, "health")
            events = []
        for ev in events or ():
            st = self.devices.get(ev.device.uuid)
            if st is not None:
                self.poller.record_health(st, ev)
            else:
                self.poller.put(ev)  # a device the inventory does not list (yet): reported as the driver said
        left = wait - (time.monotonic() - t0)
        if not events and left > 0:
            self.poller.stopping.wait(left)  # a backend without an event wait returns at once

    def _inventory(self) -> bool:
        """Re-read the inventory: device.info for new and changed devices, unavailable for vanished ones."""
        try:
            infos = self._call("inventory", None, self.backend.inventory, time.time_ns())
        except CallTimeout as e:
            self.reason = f"inventory: {e}"
            self._timed_out(None, "inventory")
            return False
        except Busy:
            return False
        except Exception as e:
            self.reason = f"inventory: {e}"
            self.poller.rlog.warning(f"inventory:{self.vendor}", "devices: %s inventory: %s", self.vendor, e)
            for st in self.devices.values():
                self.poller.count_error(st, "inventory")
            return False
        seen: dict[str, DeviceState] = {}
        for info in infos:
            uuid = info.device.uuid
            st = self.devices.get(uuid)
            if st is None:
                st = DeviceState(info)
                self.poller.put(info)
            elif _differs(st.info, info):
                st.info = info
                self.poller.put(info)
            else:
                st.info = dataclasses.replace(st.info, ts_ns=info.ts_ns)
            seen[uuid] = st
        for uuid, st in self.devices.items():
            if uuid not in seen:
                if st.health != "unavailable":  # the backend may have said so already (a lost GPU)
                    self._health(st, "unavailable", Severity.CRITICAL, "no longer in the driver's inventory")
                self.poller.diff_users(st, {})
        with self.poller.lock:
            self.devices = seen
        return True

    def _sample_all(self) -> None:
        for st in list(self.devices.values()):
            if self.poller.stopping.is_set():
                return
            dev = st.info.device
            t0 = time.monotonic()
            try:
                reading = self._call("sample", dev, self.backend.sample, dev)
            except CallTimeout:
                self._timed_out(dev, f"sample({dev.uuid})")
                return  # the worker is held: the others wait for the next round
            except Busy:
                return
            except Exception as e:  # DeviceError: the device answered with an error
                self.poller.count_error(st, "sample")
                reading = Reading(errors=[f"sample: {e}"])
            st.sample_s = time.monotonic() - t0
            self.poller.record_sample(st, reading)


def _differs(a: DeviceInfoEvent, b: DeviceInfoEvent) -> bool:
    return dataclasses.replace(a, ts_ns=0) != dataclasses.replace(b, ts_ns=0)


class Poller:
    """Every configured backend, polled; the one way device records enter the pipeline."""

    enabled = True

    def __init__(self, cfg: DevicesConfig, backends: list[Backend], emit: Callable[[object], None],
                 containers=None, proc_root: str = "/proc"):
        self.cfg = cfg
        self.emit = emit
        self.loops = [BackendLoop(b, cfg, self) for b in backends]
        self.attributor = Attributor(containers, proc_root)
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # device states, between the backend threads and readers
        self.rlog = RateLog(log)
        self._q = RecordQueue(max(1, cfg.queue_size))
        self._listeners: list[Callable[[object], None]] = []
        # every stage a series from the start, 0 until it drops (an alert on rate() needs one)
        self._counts: Counter[str] = Counter(dict.fromkeys(
            ("devices.queue", "devices.listener", "devices.emit", "devices.processes_cut"), 0))
        self._reported_open = threading.Event()
        self._pending_open = len(self.loops)
        self._emitter = threading.Thread(target=self._emit_loop, name="nw-dev-emit", daemon=True)

    # -- life cycle --------------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[object], None]) -> None:
        """fn(record) for every device record, before it is queued (on a backend's thread: keep it short)."""
        self._listeners.append(fn)

    def start(self) -> None:
        self._emitter.start()
        for loop in self.loops:
            loop.start()

    def stop(self) -> None:
        self.stopping.set()
        for loop in self.loops:
            loop.join(self.cfg.call_timeout_s + _HEALTH_SLICE + 1.0)
            loop.state = "stopped" if loop.state == "running" else loop.state
        self._q.close()  # the emitter hands over what is queued, then ends
        if self._emitter.ident is not None:
            self._emitter.join(2.0)
        self._drain()  # what a stuck emitter left (the pipeline not taking records)

    def wait_open(self, timeout: float) -> bool:
        """True once every backend has opened or given up (tests, the bench)."""
        return self._reported_open.wait(timeout)

    def opened(self, loop: BackendLoop) -> None:
        """A backend opened (or found no driver): once all have, one line says what this node has."""
        with self.lock:
            if loop.told:
                return
            loop.told = True
            self._pending_open -= 1
            if self._pending_open:
                return
        running = [x for x in self.loops if x.state == "running"]
        parts = [f"{x.vendor}: {len(x.devices)} device{'s' if len(x.devices) != 1 else ''}"
                 + (f" ({x.backend.source})" if getattr(x.backend, "source", "") else "") for x in running]
        # a backend's reason usually names its vendor already ("nvidia: libnvidia-ml.so.1 not found")
        parts += [x.reason if x.reason.startswith(f"{x.vendor}:") else f"{x.vendor}: {x.reason}"
                  for x in self.loops if x.state != "running"]
        if running:
            log.info("devices: %s", "; ".join(parts))
        elif all(x.state == "absent" for x in self.loops):
            log.info("devices: no device driver on this node, device reporting off (%s)", "; ".join(parts))
        else:  # a driver is there but failed: its backend tries again
            log.warning("devices: no device answers yet (%s)", "; ".join(parts))
        self._reported_open.set()

    # -- records -------------------------------------------------------------------------------------

    def put(self, ev) -> None:
        for fn in self._listeners:
            try:
                fn(ev)
            except Exception as e:  # a listener never stops the poller
                self._counts["devices.listener"] += 1
                self.rlog.error("devices:listener", "devices: listener failed: %r", e)
        if not self._q.put(ev):
            self._counts["devices.queue"] += 1
            self.rlog.warning("devices:queue", "devices: record queue full (%d), dropping", self._q.maxsize)

    def _emit_loop(self) -> None:
        while (ev := self._q.get()) is not None:
            self._emit_one(ev)

    def _drain(self) -> None:
        while (ev := self._q.get(block=False)) is not None:
            self._emit_one(ev)

    def _emit_one(self, ev) -> None:
        try:
            self.emit(ev)
        except Exception as e:  # the pipeline counts its outputs' failures; this is a failure before them
            self._counts["devices.emit"] += 1
            self.rlog.error("devices:emit", "devices: emit failed: %r", e)

    def count_error(self, st: DeviceState, what: str) -> None:
        """One failure of a device's reading or call, under the lock (snapshot() copies the counter). The
        name is a metric label: a driver inventing names must not grow the series without end."""
        with self.lock:
            st.errors[what if what in st.errors or len(st.errors) < _MAX_ERROR_KINDS else "other"] += 1

    def record_health(self, st: DeviceState, ev: DeviceHealthEvent) -> None:
        with self.lock:
            st.last_health = ev
            st.health_events[ev.kind] += 1
            if ev.kind == "xid" and ev.xid is not None:
                st.last_xid = ev.xid
            if ev.kind in ("unresponsive", "unavailable"):
                st.health = ev.kind
            elif ev.kind == "recovered":
                st.health = "ok"
            elif ev.kind == "xid" and ev.action not in ("", "none", "restart_app"):
                st.health = "xid"
            elif ev.kind == "state":  # Kunlun's polled state: its word (in_reset, error ...) until it runs again
                word = ev.detail.split(maxsplit=1)[0].rstrip(":,") if ev.detail else "state"
                st.health = word if ev.severity > Severity.INFO else "ok"
        self.put(ev)

    def record_sample(self, st: DeviceState, r: Reading) -> None:
        dev = st.info.device
        values = dict(r.values)
        if st.last_xid and "xid_last" not in values:
            values["xid_last"] = st.last_xid  # DCGM_FI_DEV_XID_ERRORS: the last Xid seen, from the events
        procs = r.processes
        if len(procs) > _MAX_PROCESSES:
            self._counts["devices.processes_cut"] += len(procs) - _MAX_PROCESSES
            procs = procs[:_MAX_PROCESSES]
        now_users = self._users(st, procs)
        for e in r.errors[:_MAX_ERRORS]:
            what = e.split(":", 1)[0].strip() or "reading"
            # a metric label: a driver inventing names must not grow the series without end
            self.count_error(st, what)
        ev = DeviceSampleEvent(time.time_ns(), dev, values, tuple(r.throttle), tuple(now_users.values()),
                               tuple(r.errors[:_MAX_ERRORS]))
        self.diff_users(st, now_users)
        with self.lock:
            st.sample = ev
            st.samples += 1
        self.put(ev)

    def _users(self, st: DeviceState, procs) -> dict[tuple[int, str], DeviceUser]:
        """The processes of one sample as DeviceUsers: those seen before keep their attribution (a pid
        keeps its cgroup), new ones and unattributed ones are resolved now."""
        out: dict[tuple[int, str], DeviceUser] = {}
        now = time.monotonic()
        for pid, used, mig in procs:
            key = (int(pid), mig or "")
            old = st.users.get(key)
            # A host process is looked up again now and then: the container table may learn its container
            # after the process shows on the device (a container just started).
            if old is not None and (old.container is not None or now - st.resolved.get(key, 0.0) < _RECHECK_S):
                out[key] = old if old.used_memory == used else dataclasses.replace(old, used_memory=used)
            else:
                out[key] = self.attributor.user(key[0], used, key[1])
                st.resolved[key] = now
        for key in [k for k in st.resolved if k not in out]:
            del st.resolved[key]
        return out

    def diff_users(self, st: DeviceState, now_users: dict[tuple[int, str], DeviceUser]) -> None:
        """device.process start for a process new on the device, stop for one gone from it."""
        dev, ts = st.info.device, time.time_ns()
        before = st.users
        for key, user in now_users.items():
            if key not in before:
                self.put(DeviceProcessEvent(ts, _with_mig(dev, user.mig), "start", user))
        for key, user in before.items():
            if key not in now_users:
                self.put(DeviceProcessEvent(ts, _with_mig(dev, user.mig), "stop", user))
        with self.lock:
            st.users = now_users

    # -- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> list[DeviceState]:
        """Copies of every device's state, for metrics and the status file."""
        with self.lock:
            return [dataclasses.replace(st, users=dict(st.users), errors=Counter(st.errors),
                                        health_events=Counter(st.health_events), resolved={})
                    for loop in self.loops for st in loop.devices.values()]

    def drops(self) -> dict[str, int]:
        """Loss counters for the pipeline's agent.drops and nodewarden_drops_total."""
        out = dict(self._counts)
        out["devices.skipped"] = sum(loop.skipped for loop in self.loops)
        return out

    def status(self) -> dict:
        """For status.json (`nodewarden devices` reads it): backends and devices, JSON-ready."""
        return {"backends": [{"vendor": x.vendor, "state": x.state, "reason": x.reason} for x in self.loops],
                "devices": [state_dict(st) for st in self.snapshot()]}


def _with_mig(dev: DeviceRef, mig: str) -> DeviceRef:
    return dataclasses.replace(dev, mig=mig) if mig and mig != dev.mig else dev


def state_dict(st: DeviceState) -> dict:
    """One device for status.json: its identity, health, last values and the processes using it."""
    d, info = st.info.device, st.info
    users = []
    for u in st.users.values():
        c = u.container
        users.append({"pid": u.pid, "comm": u.comm, "used_memory": u.used_memory, "mig": u.mig,
                      "container_id": c.id if c else "", "container_name": c.name if c else "",
                      "image": c.image if c else "", "pod": c.pod_name if c else "",
                      "namespace": c.pod_namespace if c else ""})
    s = st.sample
    return {"vendor": d.vendor, "index": d.index, "uuid": d.uuid, "model": d.model, "pci_bus_id": d.pci_bus_id,
            "minor": d.minor, "serial": info.serial, "driver_version": info.driver_version,
            "cuda_version": info.cuda_version, "memory_total": info.memory_total,
            "power_limit_w": info.power_limit_w, "ecc_mode": info.ecc_mode, "mig_mode": info.mig_mode,
            "mig_devices": [m.uuid for m in info.mig_devices], "health": st.health, "last_xid": st.last_xid,
            "values": dict(s.values) if s else {}, "throttle": list(s.throttle) if s else [],
            "sampled_at": s.ts_ns if s else 0, "errors": dict(st.errors), "processes": users}
