"""Unauthorized device use (issue 12): containers touching GPUs and XPUs they were not given.

Two alerts:
- `device.unauthorized_open`: a container opened a device node (/dev/nvidia3, /dev/nvidiactl, /dev/xpu0 ...)
  that its allocation does not cover. The file probe sends these opens although /dev/ is ignored
  (probes.watch_devices); an open the kernel refused (the device cgroup: EPERM) is still the attempt, with a
  lower severity and the errno in the output.
- `device.unallocated_use`: a device.sample lists a process of a container using a GPU (or XPU) that was not
  allocated to that container, or from a container that has none.
What a container was given: agent/devices/alloc.py (the kubelet's pod-resources API when its socket is
there and lists the container, else the container's OCI spec from containerd). Host processes are not
judged; containers matching device_guard.exempt (the device plugin, dcgm-exporter) neither.

Never on the event path: observe() (the pipeline's worker, every file event) is a type check and a prefix
test, and puts a device-node open on a bounded queue; observe_device() (the device poller's listener)
keeps the inventory (which minor is which UUID) and queues samples that have container processes. One
thread judges them, asking the kubelet (every refresh_s, and again on a container it does not know, at most
once a second) and containerd (a container's spec, once, cached until it is deleted), each call under
rpc_timeout_s. A full queue drops and counts (`devguard.queue`); what could not be judged (no spec, a UUID no
inventory places) counts as `devguard.unjudged`; the same container, rule and device alert once per
realert_s, the repeats counted (`devguard.folded`) and carried by the next alert's count.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import queue
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping

from agent.config import DeviceGuardConfig
from agent.devices.alloc import Allocation, from_spec, node_allowed, node_of
from agent.devices.podresources import PodResources, PodResourcesError
from agent.events import AlertEvent, ContainerInfo, DeviceInfoEvent, DeviceRef, DeviceSampleEvent, Enriched, Op
from agent.ratelog import RateLog
from agent.vocab import Severity

log = logging.getLogger("nodewarden.devices")

OPEN_RULE = "device.unauthorized_open"
USE_RULE = "device.unallocated_use"
_RULES = {
    # MITRE ATT&CK: a host device opened from a container is the classic escape route (T1611); a GPU used
    # without the scheduler's say is resource hijacking (T1496), cryptomining first of all.
    OPEN_RULE: ("Container opened a device node it was not allocated", ("privilege-escalation",), ("T1611",)),
    USE_RULE: ("Container process uses a device not allocated to it", ("impact",), ("T1496",)),
}
_NO_CONTAINER = ("", "host", "unknown")
_FILE_OPEN = Op.FILE_OPEN
_MISS_INTERVAL = 1.0  # a container the kubelet's last list lacks: list again, at most this often
_MAX_KEYS = 4096  # containers' spec allocations and alert keys remembered
_MAX_OPENS = 64  # recent (container, node) opens kept for `nodewarden devices`

SpecSource = Callable[[str, str], Mapping | None]  # (containerd namespace, container id) -> OCI spec or None


class NullDeviceGuard:
    """device_guard.enabled: false (or no file probe and no devices): nothing is judged."""

    enabled = False

    def observe(self, en: Enriched) -> None:
        pass

    def observe_device(self, ev) -> None:
        pass

    def on_container(self, kind: str, info) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def drops(self) -> dict[str, int]:
        return {}

    def status(self) -> dict:
        return {"enabled": False}


class DeviceGuard:
    """observe(en) from the pipeline's worker, observe_device(ev) from the device poller, on_container from
    the container table; alerts go to `emit` (the pipeline's) from the guard's own thread."""

    enabled = True

    def __init__(self, cfg: DeviceGuardConfig, emit: Callable[[object], None], spec_source: SpecSource | None = None,
                 kubelet: PodResources | None = None, prefixes: tuple[str, ...] = ("/dev/nvidia", "/dev/xpu"),
                 clock: Callable[[], float] = time.monotonic):
        _validate(cfg)
        self.cfg = cfg
        self._emit = emit
        self._spec = spec_source
        self._kubelet = kubelet if kubelet is not None else (
            PodResources(cfg.pod_resources_socket, cfg.rpc_timeout_s) if cfg.pod_resources_socket else None)
        self._prefixes = tuple(prefixes)
        self._interest = ({int(_FILE_OPEN): 2}, self._prefixes, ())
        self._clock = clock
        self._exempt = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in cfg.exempt)) if cfg.exempt else None
        self._q: queue.Queue = queue.Queue(maxsize=max(1, cfg.queue_size))
        self._lock = threading.Lock()  # the inventory (poller thread) and the recent opens (judge thread)
        self._by_minor: dict[tuple[str, int], DeviceRef] = {}
        self._pods: dict[tuple[str, str, str], Allocation] = {}
        self._listed_at = -1e18
        self._kubelet_state = "not asked yet" if self._kubelet is not None else "off"
        self._specs: OrderedDict[tuple[str, str], Allocation] = OrderedDict()
        self._alerted: OrderedDict[tuple, list] = OrderedDict()  # key -> [monotonic of its alert, repeats since]
        self._opens: deque[dict] = deque(maxlen=_MAX_OPENS)
        self._drops: Counter[str] = Counter(dict.fromkeys(
            ("devguard.queue", "devguard.unjudged", "devguard.folded"), 0))
        self.counts: Counter[str] = Counter(dict.fromkeys(("opens", "samples", "alerts", "kubelet_errors",
                                                           "spec_errors"), 0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rlog = RateLog(log)

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nw-devguard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._kubelet is not None:
            self._kubelet.close()
        close = getattr(self._spec, "close", None)
        if close is not None:
            close()

    def drops(self) -> dict[str, int]:
        return dict(self._drops)

    def status(self) -> dict:
        """For status.json (`nodewarden devices`): where allocations come from, and recent device-node opens."""
        with self._lock:
            opens = list(self._opens)
        return {"enabled": True, "kubelet": self._kubelet_state, "alerts": self.counts["alerts"],
                "opens": opens, "drops": dict(self._drops)}

    # -- inputs (other threads: cheap, never block) --------------------------------------------------

    def interest(self) -> tuple:
        """What observe() can act on, for the pipeline's compiled loop (Pipeline._watch): file opens whose
        path lies under a device prefix (or is relative: resolved in Python). The same tuple every time."""
        return self._interest

    def observe(self, en: Enriched) -> None:
        # The path test first: it turns away almost every file event, at one call (bench numbers in the report)
        ev = en.event
        path = ev.path
        if not path.startswith(self._prefixes):
            if path[:1] == "/" or not en.path_resolved.startswith(self._prefixes):
                return
            path = en.path_resolved  # relative, resolved against the process's cwd
        if ev.op is not _FILE_OPEN:
            return
        c = en.container
        if c is None or c.id in _NO_CONTAINER:
            if c is not None and c.id == "unknown":  # a container the table could not name in time
                self._drops["devguard.unjudged"] += 1
            return  # else the host's own tools and driver daemons
        self._put(("open", en, path))

    def observe_device(self, ev) -> None:
        """The device poller's listener: every device record, on the backend's thread."""
        if isinstance(ev, DeviceInfoEvent):
            d = ev.device
            if d.minor >= 0:
                with self._lock:
                    self._by_minor[(d.vendor, d.minor)] = d
        elif isinstance(ev, DeviceSampleEvent) and any(
                u.container is not None and u.container.id not in _NO_CONTAINER for u in ev.processes):
            self._put(("sample", ev, ""))

    def on_container(self, kind: str, info) -> None:
        """Container table listener: a new container's spec is read ahead, on the guard's thread, so that a
        container gone before its open is judged (`ctr run --rm`, a job's last step) is still judged. Specs
        are forgotten by age (the cache is bounded), not at delete: the delete may come before the judging."""
        if kind in ("container", "task") and info is not None and self._spec is not None \
                and (info.namespace, info.id) not in self._specs:
            try:
                self._q.put_nowait(("prefetch", info, ""))
            except queue.Full:
                pass  # not a loss: the spec is read when an open of that container is judged

    def _put(self, item) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self._drops["devguard.queue"] += 1

    # -- the judge's thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.judge(item)
            except Exception as e:  # a bad record never stops the guard
                self._rlog.error("devguard", "device guard: %r", e)

    def judge(self, item) -> None:
        """One queued item (the thread's work; tests call it to judge at once)."""
        kind, what, path = item
        if kind == "open":
            self._judge_open(what, path)
        elif kind == "sample":
            self._judge_sample(what)
        else:
            self._from_spec(what)

    def _judge_open(self, en: Enriched, path: str) -> None:
        self.counts["opens"] += 1
        c = en.container
        with self._lock:
            self._opens.append({"container_id": c.id, "container_name": c.name, "pod": c.pod_name,
                                "namespace": c.pod_namespace, "path": path, "pid": en.event.pid,
                                "ts_ns": en.event.ts_ns, "ret": en.event.ret})
            inventory = dict(self._by_minor)
        if self._exempted(c):
            return
        alloc = self.allocation(c)
        ok = None if alloc is None else node_allowed(alloc, path, inventory)
        if ok is None:
            self._drops["devguard.unjudged"] += 1
            return
        if ok:
            return
        ev = en.event
        refused = ev.ret < 0
        got = node_of(path)
        dev = inventory.get(got) if got is not None and got[1] is not None else None
        where = _where(c)
        output = (f"{where} opened {path} (pid {ev.pid} {ev.comm}), which it was not allocated "
                  f"(allocated from {alloc.source}: {alloc.describe()})"
                  + (f"; the kernel refused it: errno {-ev.ret}" if refused else ""))
        self._alert(OPEN_RULE, (c.id, path), Severity.MEDIUM if refused else Severity.HIGH, output,
                    subject=en, device=dev)

    def _judge_sample(self, ev: DeviceSampleEvent) -> None:
        self.counts["samples"] += 1
        for u in ev.processes:
            c = u.container
            if c is None or c.id in _NO_CONTAINER or self._exempted(c):
                continue
            alloc = self.allocation(c)
            if alloc is None:
                self._drops["devguard.unjudged"] += 1
                continue
            if alloc.allows_device(ev.device, u.mig):
                continue
            d = ev.device
            name = f"{d.vendor} {d.index} ({d.uuid}{', MIG ' + u.mig if u.mig else ''})"
            output = (f"{_where(c)}: pid {u.pid} {u.comm} uses {name}, which was not allocated to it "
                      f"(allocated from {alloc.source}: {alloc.describe()})")
            dev = dataclasses.replace(d, mig=u.mig) if u.mig and u.mig != d.mig else d
            self._alert(USE_RULE, (c.id, d.vendor, d.uuid, u.mig), Severity.HIGH, output, device=dev, user=u)

    # -- allocations -------------------------------------------------------------------------------------

    def allocation(self, c: ContainerInfo) -> Allocation | None:
        """What container c was given: the kubelet's word when it lists c, else its OCI spec; None unknown."""
        if c.pod_name and self._kubelet is not None:
            got = self._from_kubelet(c)
            if got is not None:
                return got
        return self._from_spec(c)

    def _from_kubelet(self, c: ContainerInfo) -> Allocation | None:
        if not self._kubelet.present():
            self._kubelet_state = "absent"
            return None
        key = (c.pod_namespace, c.pod_name, c.name)
        age = self._clock() - self._listed_at
        if age >= self.cfg.refresh_s or (key not in self._pods and age >= _MISS_INTERVAL):
            self._listed_at = self._clock()  # a failing kubelet is asked again no sooner than a fresh one
            try:
                self._pods = self._kubelet.list()
                self._kubelet_state = "connected"
            except PodResourcesError as e:
                self.counts["kubelet_errors"] += 1
                self._kubelet_state = f"error: {e}"
                self._rlog.error("devguard:kubelet", "device guard: %s", e)
        return self._pods.get(key)

    def _from_spec(self, c: ContainerInfo) -> Allocation | None:
        key = (c.namespace, c.id)
        got = self._specs.get(key)
        if got is not None:
            self._specs.move_to_end(key)
            return got
        if self._spec is None:
            return None
        try:
            spec = self._spec(c.namespace, c.id)
        except Exception as e:  # containerd away, a timeout: judged next time
            self.counts["spec_errors"] += 1
            self._rlog.error("devguard:spec", "device guard: cannot read the spec of %s: %r", c.id[:12], e)
            return None
        if spec is None:
            return None
        got = self._specs[key] = from_spec(spec)
        while len(self._specs) > _MAX_KEYS:
            self._specs.popitem(last=False)
        return got

    def _exempted(self, c: ContainerInfo) -> bool:
        x = self._exempt
        return x is not None and bool(x.match(f"{c.pod_namespace}/{c.pod_name}/{c.name}") or x.match(c.image))

    # -- alerts ---------------------------------------------------------------------------------------------

    def _alert(self, rule: str, key: tuple, severity: Severity, output: str, subject: Enriched | None = None,
               device: DeviceRef | None = None, user=None) -> None:
        now = self._clock()
        k = (rule, *key)
        seen = self._alerted.get(k)
        if seen is not None and now - seen[0] < self.cfg.realert_s:
            seen[1] += 1
            self._drops["devguard.folded"] += 1
            return
        count = 1 + (seen[1] if seen is not None else 0)
        self._alerted[k] = [now, 0]
        self._alerted.move_to_end(k)
        while len(self._alerted) > _MAX_KEYS:
            self._alerted.popitem(last=False)
        name, tactics, techniques = _RULES[rule]
        self.counts["alerts"] += 1
        self._emit(AlertEvent(time.time_ns(), rule, name, _DESCRIPTIONS[rule], severity, tactics, techniques,
                              subject=subject, output=output, count=count, device=device, user=user))


_DESCRIPTIONS = {
    OPEN_RULE: "A container opened a GPU or XPU device node (/dev/nvidia*, /dev/xpu*) that neither the kubelet "
               "(pod-resources) nor its OCI spec gave it: a container reaching for devices of the host or of "
               "other tenants.",
    USE_RULE: "The device driver lists a process of a container as using a GPU or XPU that was not allocated "
              "to that container: GPU time taken outside the scheduler, cryptomining first of all.",
}


def _validate(cfg: DeviceGuardConfig) -> None:
    """ValueError naming the first setting the guard cannot work with (the agent stops with that one line)."""
    for key in ("refresh_s", "rpc_timeout_s"):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"device_guard.{key} must be a positive number of seconds, not {getattr(cfg, key)!r}")
    if cfg.realert_s < 0:
        raise ValueError(f"device_guard.realert_s must be 0 or more seconds, not {cfg.realert_s!r}")
    if cfg.queue_size < 1:
        raise ValueError(f"device_guard.queue_size must be at least 1, not {cfg.queue_size!r}")
    for g in cfg.exempt:
        if not g.strip():
            raise ValueError("device_guard.exempt: an empty pattern would exempt nothing but reads as everything")


def _where(c: ContainerInfo) -> str:
    pod = f" of pod {c.pod_namespace}/{c.pod_name}" if c.pod_name else ""
    return f"container {c.name or c.id[:12]} ({c.id[:12]}){pod}"


class containerd_specs:  # noqa: N801 - used as a function: containerd_specs(factory, timeout)(ns, id)
    """A SpecSource through containerd's Containers.Get (the spec travels as JSON in an Any): one client,
    made on first use (on the guard's thread), closed by close()."""

    def __init__(self, client_factory, timeout: float):
        self._factory, self._timeout = client_factory, timeout
        self._client = None

    def __call__(self, namespace: str, container_id: str) -> Mapping | None:
        import orjson

        if self._client is None:
            self._client = self._factory()
            self._client.timeout = self._timeout
        rec = self._client.container(namespace, container_id)
        value = getattr(getattr(rec, "spec", None), "value", b"") if rec is not None else b""
        if not value or len(value) > (4 << 20):
            return None
        try:
            got = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        return got if isinstance(got, dict) else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
