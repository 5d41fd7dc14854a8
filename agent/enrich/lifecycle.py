"""Container and image lifecycle as typed records, from what the containerd watcher sees (issue 16).

The watcher (agent/enrich/containerd.py) already applies containerd's event stream to the container table;
for each step of a container's life it also hands a `Notice` to the sink it was given. `Lifecycle` turns
each notice into its record (agent/events.py ContainerCreated ... ImageDeleted) and raises three alerts:

  nw.container_oom_killed    containerd's /tasks/oom: the kernel's OOM killer killed a process in the
                             container's cgroup (once per task: later OOMs of the same task are records only)
  nw.container_restart_loop  `restart_exits` exits of one container within `restart_window_s` (one alert
                             per loop: quiet until a whole window passes without an exit)
  nw.container_exec_direct   an exec into a Kubernetes (CRI) container with an exec id the CRI never makes:
                             someone used containerd's API on the node (`ctr -n k8s.io task exec`), not
                             `kubectl exec`, so the API server's audit log has no trace of it

and, for the event.names listed in `alert_on`, nw.container_lifecycle.

Which container "the same one" is for a restart loop: Kubernetes gives every restart a new container id,
so the key is (containerd namespace, pod namespace, pod name, container name) from the CRI labels; a
container without a name (plain `ctr`) is keyed by its id, which `ctr run` reuses when the same id is run
again after a delete.

Threads: notice() runs on the watcher thread and never blocks: records go through one bounded queue to
`nw-lifecycle`, which hands them to the pipeline (Pipeline.emit). A full queue drops the record and counts
it (lifecycle.queue in agent.drops). Every map here is bounded (max_tracked, oldest forgotten first).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import ConfigError, LifecycleConfig
from agent.enrich.container_table import LABEL_POD_NAME
from agent.events import (
    AlertEvent,
    ContainerCreated,
    ContainerDeleted,
    ContainerExec,
    ContainerExited,
    ContainerInfo,
    ContainerLifecycleEvent,
    ContainerOOM,
    ContainerStarted,
    ImageDeleted,
    ImageLifecycleEvent,
    ImagePulled,
)
from agent.ratelog import RateLog
from agent.vocab import Severity

log = logging.getLogger("nodewarden.lifecycle")

OOM_RULE = "nw.container_oom_killed"
LOOP_RULE = "nw.container_restart_loop"
DIRECT_EXEC_RULE = "nw.container_exec_direct"
LIFECYCLE_RULE = "nw.container_lifecycle"

# What the watcher reports (Notice.action) -> the record it becomes.
_CONTAINER_KINDS: dict[str, type[ContainerLifecycleEvent]] = {
    "created": ContainerCreated,
    "started": ContainerStarted,
    "exited": ContainerExited,
    "oom": ContainerOOM,
    "deleted": ContainerDeleted,
    "exec": ContainerExec,
}
_IMAGE_KINDS: dict[str, type[ImageLifecycleEvent]] = {"image_pulled": ImagePulled, "image_deleted": ImageDeleted}
EVENT_NAMES = tuple(k.name for k in (*_CONTAINER_KINDS.values(), *_IMAGE_KINDS.values()))
# What lifecycle.alert_on takes: the event names, and container.killed: a container.exited whose status says a
# signal ended it (SIGKILL from the kubelet after its grace period, a user, the OOM killer, the agent's own kill).
KILLED = "container.killed"
ALERT_ON_NAMES = (*EVENT_NAMES, KILLED)

# The CRI plugin names every exec with util.GenerateID(): 32 random bytes in hex (containerd
# pkg/cri/util/id.go, 1.x and 2.x); `ctr task exec` takes whatever --exec-id says.
_CRI_EXEC_ID = re.compile(r"[0-9a-f]{64}")
# The CRI plugin labels each of its containers with its kind (container, sandbox); the kubelet adds the
# io.kubernetes.* labels (crictl does not).
_CRI_LABELS = frozenset({"io.cri-containerd.kind", LABEL_POD_NAME})
_SIGRTMAX = 64  # runc reports a task killed by signal n as exit status 128 + n

_MITRE_EXEC = (("Execution",), ("T1609",))  # Container Administration Command

_DESCRIPTIONS = {
    OOM_RULE: "The kernel's OOM killer killed a process of a container: it reached its memory limit (or the node "
              "ran out of memory). An OOM-killed init process ends the container.",
    LOOP_RULE: "A container keeps exiting and being started again (Kubernetes' CrashLoopBackOff): the workload "
               "is down or flapping, or something kills it.",
    DIRECT_EXEC_RULE: "A process was exec'd into a Kubernetes container through containerd's API on the node "
                      "(its exec id is not of the form the CRI gives, as `kubectl exec` and exec probes get): "
                      "the API server's audit log does not see it.",
    LIFECYCLE_RULE: "A container or image lifecycle event that the configuration (lifecycle.alert_on) asks to "
                    "alert on.",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One step the watcher saw: action is a key of _CONTAINER_KINDS or _IMAGE_KINDS. container: the table's
    record at that moment (None when the table does not know the container: container_id says which)."""

    action: str
    ts_ns: int
    namespace: str  # containerd namespace
    container: ContainerInfo | None = None
    container_id: str = ""
    pid: int = 0
    exit_status: int | None = None
    exec_id: str = ""
    argv: tuple[str, ...] = ()
    image: str = ""  # image notices
    digest: str = ""
    previous_digest: str = ""


def exec_via(container: ContainerInfo, exec_id: str) -> str:
    """How an exec reached containerd, as far as the exec id tells: "cri" (a CRI container, an id of the CRI's
    form), "direct" (a CRI container, another id: containerd's API used on the node), "containerd" (a container
    the CRI does not manage: ctr, nerdctl, a containerd client)."""
    if not any(k in _CRI_LABELS for k, _ in container.labels):
        return "containerd"
    return "cri" if _CRI_EXEC_ID.fullmatch(exec_id) else "direct"


def signal_of(status: int | None) -> int:
    """The signal an exit status says killed the task (runc: 128 + n), 0 when none. A process that called
    exit(137) itself looks the same: containerd's event carries only the status."""
    if status is None or not 128 < status <= 128 + _SIGRTMAX:
        return 0
    return status - 128


class RestartTracker:
    """Exits per container key, to find restart loops: `exits` within `window` seconds. Bounded to `max_keys`
    keys (least recently exited forgotten first: counted in `evicted`)."""

    def __init__(self, exits: int, window: float, max_keys: int = 4096):
        if exits < 2:
            raise ConfigError(f"lifecycle.restart_exits must be 2 or more, not {exits}")
        if not window > 0:
            raise ConfigError(f"lifecycle.restart_window_s must be more than 0, not {window}")
        self.exits, self.window, self.max_keys = exits, window, max(1, max_keys)
        # key -> (exit times within the window, alerted for the current loop)
        self._keys: OrderedDict[tuple, tuple[deque, list[bool]]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._keys)

    def exited(self, key: tuple, now: float) -> int:
        """Record an exit at `now` (monotonic seconds). Returns the exits in the window when this one makes a
        loop that was not alerted yet, else 0."""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = (deque(maxlen=self.exits), [False])
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
                self.evicted += 1
        else:
            self._keys.move_to_end(key)
        times, alerted = entry
        if times and now - times[-1] > self.window:
            times.clear()  # a whole window without an exit: the loop is over, the next one alerts again
            alerted[0] = False
        times.append(now)
        while now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.exits and not alerted[0]:
            alerted[0] = True
            return len(times)
        return 0


def restart_key(c: ContainerInfo) -> tuple:
    """Which exits count as one container's: by name within a pod when the CRI labels name it, else by id."""
    if c.name:
        return (c.namespace, c.pod_namespace, c.pod_name, c.name)
    return (c.namespace, "", "", c.id)


class NullLifecycle:
    """lifecycle.enabled: false (or no containerd watcher): the watcher's sink that does nothing."""

    enabled = False

    def notice(self, n: Notice) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def drops(self) -> dict[str, int]:
        return {}

    def stats(self) -> dict[str, int]:
        return {}


_END = object()


class Lifecycle:
    """The watcher's sink: notices -> lifecycle records and alerts -> emit (on its own thread)."""

    enabled = True

    def __init__(self, cfg: LifecycleConfig, emit: Callable[[object], None],
                 argv_of: Callable[[int], tuple[str, ...]] | None = None, clock: Callable[[], float] = time.monotonic):
        unknown = [n for n in cfg.alert_on if n not in ALERT_ON_NAMES]
        if unknown:
            raise ConfigError(f"lifecycle.alert_on: unknown event name {unknown[0]!r} "
                              f"(known: {', '.join(ALERT_ON_NAMES)})")
        self.cfg = cfg
        self.emit = emit
        self.argv_of = argv_of  # the exec'd process's command from the process table, when /proc was too late
        self.clock = clock
        self.tracker = RestartTracker(cfg.restart_exits, cfg.restart_window_s, cfg.max_tracked)
        self._oom: OrderedDict[tuple[str, str], None] = OrderedDict()  # tasks with an OOM kill, until they exit
        self._q: queue.Queue = queue.Queue(maxsize=max(1, cfg.queue_size))
        self._thread: threading.Thread | None = None
        self._rlog = RateLog(log)
        self.counters = dict.fromkeys(("records", "alerts", "queue_full", "emit_errors", "bad_notices"), 0)

    # -- the watcher's side ------------------------------------------------------------------------

    def notice(self, n: Notice) -> None:
        """Called on the watcher thread for each lifecycle step; never raises, never blocks."""
        try:
            for rec in self._records(n):
                self._put(rec)
        except Exception:  # a bug here must not stop the watcher
            self.counters["bad_notices"] += 1
            self._rlog.exception("notice", "lifecycle: notice %r not turned into a record", n.action)

    def _records(self, n: Notice) -> list:
        kind = _CONTAINER_KINDS.get(n.action)
        if kind is None:
            image_kind = _IMAGE_KINDS.get(n.action)
            if image_kind is None:
                self.counters["bad_notices"] += 1
                return []
            rec = image_kind(n.ts_ns, n.image, n.namespace, n.digest, n.previous_digest)
            return [rec, *self._alert_on(rec, ContainerInfo(id="", image=n.image, image_digest=n.digest,
                                                            namespace=n.namespace))]
        c = n.container or ContainerInfo(id=n.container_id, namespace=n.namespace)
        key = (n.namespace, c.id)
        out: list = []
        if n.action == "oom":
            first = key not in self._oom
            self._mark_oom(key)
            rec = ContainerOOM(n.ts_ns, c)
            out.append(rec)
            if first:
                out.append(self._alert(OOM_RULE, "Container OOM-killed", Severity.MEDIUM, c, n.ts_ns,
                                       f"the OOM killer killed a process of container {_who(c)}"))
        elif n.action == "exited":
            oom = key in self._oom
            self._oom.pop(key, None)  # the next task of this container starts without an OOM
            rec = ContainerExited(n.ts_ns, c, pid=n.pid, exit_code=n.exit_status, signal=signal_of(n.exit_status),
                                  oom_killed=oom)
            out.append(rec)
            exits = self.tracker.exited(restart_key(c), self.clock())
            if exits:
                out.append(self._alert(LOOP_RULE, "Container restart loop", Severity.MEDIUM, c, n.ts_ns,
                                       f"container {_who(c)} exited {exits} times within "
                                       f"{self.cfg.restart_window_s:g} s (last exit status {n.exit_status})"))
        elif n.action == "exec":
            via = exec_via(c, n.exec_id)
            rec = ContainerExec(n.ts_ns, c, pid=n.pid, exec_id=n.exec_id, argv=n.argv, via=via)
            out.append(rec)
            if via == "direct":
                out.append(self._alert(DIRECT_EXEC_RULE, "Exec into a Kubernetes container outside the CRI",
                                       Severity.MEDIUM, c, n.ts_ns,
                                       f"exec {n.exec_id!r} into container {_who(c)} through containerd's API",
                                       mitre=_MITRE_EXEC))
        else:
            rec = kind(n.ts_ns, c, pid=n.pid)
            out.append(rec)
            if n.action == "deleted":
                self._oom.pop(key, None)
        out.extend(self._alert_on(rec, c))
        return out

    def _mark_oom(self, key: tuple[str, str]) -> None:
        self._oom[key] = None
        self._oom.move_to_end(key)
        while len(self._oom) > self.cfg.max_tracked:
            self._oom.popitem(last=False)

    def _alert_on(self, rec, c: ContainerInfo) -> list:
        name = rec.name
        if name not in self.cfg.alert_on:
            if not (isinstance(rec, ContainerExited) and rec.signal and KILLED in self.cfg.alert_on):
                return []
            name = KILLED
        mitre = _MITRE_EXEC if name == "container.exec" else ((), ())
        what = rec.image if isinstance(rec, ImageLifecycleEvent) else _who(c)
        if name == KILLED:
            what += f" (signal {rec.signal})"
        return [self._alert(LIFECYCLE_RULE, f"Lifecycle: {name}", Severity.LOW, c, rec.ts_ns, f"{name} {what}",
                            mitre=mitre)]

    def _alert(self, rule: str, rule_name: str, severity: Severity, c: ContainerInfo, ts_ns: int, output: str,
               mitre: tuple = ((), ())) -> AlertEvent:
        return AlertEvent(ts_ns, rule, rule_name, _DESCRIPTIONS[rule], severity, tactics=mitre[0],
                          techniques=mitre[1], output=output, container=c)

    def _put(self, rec) -> None:
        try:
            self._q.put_nowait(rec)
        except queue.Full:
            self.counters["queue_full"] += 1
            self._rlog.warning("queue", "lifecycle: record queue full (%d), dropping %s", self._q.maxsize, rec.name)

    # -- the emitter -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="nw-lifecycle", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Hands over what is queued, then ends."""
        if self._thread is None:
            return
        while True:
            try:
                self._q.put(_END, timeout=timeout)
                break
            except queue.Full:  # the emitter is stuck on the outputs: leave it (a daemon thread)
                return
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            rec = self._q.get()
            if rec is _END:
                return
            if isinstance(rec, ContainerExec) and not rec.argv and rec.pid and self.argv_of is not None:
                rec = self._with_argv(rec)
            try:
                self.emit(rec)
                self.counters["alerts" if isinstance(rec, AlertEvent) else "records"] += 1
            except Exception as e:  # an output problem is counted, never the end of the emitter
                self.counters["emit_errors"] += 1
                self._rlog.error("emit", "lifecycle: emit failed: %r", e)

    def _with_argv(self, rec: ContainerExec) -> ContainerExec:
        """The exec'd command from the process table (its kernel exec event may have been read by now)."""
        try:
            argv = tuple(self.argv_of(rec.pid) or ())
        except Exception:
            return rec
        if not argv:
            return rec
        return ContainerExec(rec.ts_ns, rec.container, pid=rec.pid, exec_id=rec.exec_id, argv=argv, via=rec.via)

    # -- accounting --------------------------------------------------------------------------------

    def drops(self) -> dict[str, int]:
        """Losses for agent.drops and nodewarden_drops_total: records the queue could not take, records the
        outputs refused."""
        return {"lifecycle.queue": self.counters["queue_full"], "lifecycle.emit": self.counters["emit_errors"]}

    def stats(self) -> dict[str, int]:
        return {**self.counters, "tracked": len(self.tracker), "tracked_evicted": self.tracker.evicted,
                "queued": self._q.qsize()}


def _who(c: ContainerInfo) -> str:
    """A container as a person names it: pod namespace/pod/container, else its name or id."""
    if c.pod_name:
        return f"{c.pod_namespace}/{c.pod_name}/{c.name or c.id}"
    return c.name or c.id


def build(cfg: LifecycleConfig, emit: Callable[[object], None],
          argv_of: Callable[[int], tuple[str, ...]] | None = None) -> Lifecycle | NullLifecycle:
    """The sink for the containerd watcher: Lifecycle, or NullLifecycle when lifecycle.enabled is false.
    Raises ConfigError (one line) on a bad lifecycle: section."""
    if not cfg.enabled:
        return NullLifecycle()
    return Lifecycle(cfg, emit, argv_of=argv_of)
