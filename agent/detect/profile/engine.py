"""The behaviour-profile engine: learns each workload's profile from the container events the pipeline
judges, then reports (monitoring) or, for executables, has the kernel kill (protecting) what the profile
never saw.

Threads: observe_batch and tick run on the pipeline's worker; on_container on the container watcher's
thread; prepare on the pre-start gates' threads (NRI, OCI gate). One lock guards the tables; it is held
for a batch at a time (a few ms at most), and never while waiting on the collector.

The event path (observe_batch) is a dict lookup per container (its state by container id) and one per
item for what the profile already holds; only a new item costs more (learning, or an alert).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque

from agent.detect.profile.key import Workload, workload_of
from agent.detect.profile.model import KINDS, Profile
from agent.detect.profile.store import ProfileStore, apply_request, resolve
from agent.durable import fsync_dir
from agent.events import AlertEvent, ExecEvent, FileEvent, NetEvent, Op, ProfileChange
from agent.ratelog import RateLog
from agent.sensors.abi import Action
from agent.vocab import Severity

log = logging.getLogger("nodewarden.profiles")

RULE_ID = "behavior.deviation"
RULE_NAME = "Behaviour deviation"
# What a new item of each kind may mean (MITRE ATT&CK): severity, tactics, techniques, the description.
_KIND_INFO = {
    "exec": (Severity.HIGH, ("execution",), ("T1059",), "a program the workload never ran while it learned"),
    "edge": (Severity.MEDIUM, ("execution",), ("T1059",), "a program started by a parent that never started it"),
    "user": (Severity.MEDIUM, ("privilege_escalation",), ("T1078",), "a program run as a user never seen"),
    "peer": (Severity.MEDIUM, ("command_and_control",), ("T1071",), "an outbound connection to a new peer"),
    "listen": (Severity.MEDIUM, ("command_and_control",), ("T1571",), "a new listening port"),
    "write": (Severity.MEDIUM, ("persistence",), ("T1105",), "a file written in a new directory"),
}
_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND
_NOT_FILES = ("/proc/", "/sys/", "/dev/")
_EINPROGRESS = -115  # a non-blocking connect under way: the peer is chosen all the same
_IP = ("ipv4", "ipv6")
_OPEN, _CONNECT = Op.FILE_OPEN, Op.NET_CONNECT  # observe_batch's inline kinds (a test turns them off)
_OBSERVED_TTL_S = 30.0  # a container known only from its events counts as running this long after the last
_MAX_CONTAINERS = 65536  # container id -> state entries (live ones are never evicted)
_TOUCH_FLUSH_S = 60.0  # a profile whose only change is last-seen times and counts is written this often
_MAX_CHANGES = 1024  # profile.change records waiting for the next tick
_MAX_SAVES = 64  # profile files written per tick (the rest on the next ones)
_UIDS: dict[int, str] = {}


def _uid(uid: int) -> str:
    s = _UIDS.get(uid)
    if s is None:
        if len(_UIDS) > 4096:
            _UIDS.clear()
        s = _UIDS[uid] = str(uid)
    return s


class _State:
    """The engine's side of one profile: its policy, its running containers, what was saved and sent."""

    __slots__ = ("profile", "policy", "live", "saved_rev", "pushed_rev", "touched", "reported", "slot",
                 "loaded", "dev_full")

    def __init__(self, profile: Profile, policy):
        self.profile = profile
        self.policy = policy  # WorkloadPolicy, or None: excluded by the policy (not observed, not enforced)
        self.live: dict[str, int] = {}  # container id -> cgroup id (0 until known)
        self.saved_rev = -1
        self.pushed_rev = -1
        self.touched = False  # last-seen times or counts changed since the last save
        self.reported: set[str] = set()  # kinds whose overflow was reported (profile.change)
        self.slot = -1  # kernel allow-list slot, -1 when not loaded
        self.loaded: frozenset[str] | None = None  # the exec paths the slot holds
        self.dev_full = False  # its deviation table filled up (reported once)


def _seen_again(st: _State, ent: list, ts: float) -> None:
    """A known item met again: its last-seen time and count ([first, last, count])."""
    if ts > ent[1]:
        ent[1] = ts
    ent[2] += 1
    st.touched = True


_EXCLUDED = object()  # container id -> this: its workload is excluded or was refused; never looked at again


class ProfileEngine:
    enabled = True

    def __init__(self, cfg, policy, store: ProfileStore, kill=None, sync=None, clock=time.time):
        self.cfg = cfg
        self.policy = policy
        self.store = store
        store.max_items, store.max_deviations = cfg.max_items, cfg.max_deviations
        self.kill = kill
        self.sync = sync if cfg.sync else None
        self.clock = clock
        self._lock = threading.Lock()
        self._rlog = RateLog(log)
        self._drops = Counter({k: 0 for k in ("profile.overflow", "profile.refused", "profile.store_errors",
                                              "profile.sync", "profile.deviations_full", "profile.kernel",
                                              "profile.containers_full", "profile.changes_full")})
        self._counts = Counter()
        self._states: dict[str, _State] = {}
        self._by_cid: dict[str, object] = {}  # container id -> _State or _EXCLUDED
        self._observed: dict[str, float] = {}  # container id -> last event (wall s), for ids no listener told us
        self._changes: deque[ProfileChange] = deque()
        self._last_tick: float | None = None
        self._last_flush = clock()
        self._last_touch_flush = self._last_flush
        self._backlog = self._touch_backlog = False  # more to write than one flush writes: again next tick
        self._store_base = store.errors
        profiles = sorted(store.load_all(), key=lambda p: p.stable_since, reverse=True)
        for p in profiles[: cfg.max_profiles]:
            st = self._states[p.key] = _State(p, self._policy_of(p.workload))
            # as on disk; each is pushed once at start (idempotent there): a collector that missed pushes (its
            # queue was full, this agent was killed, it lost its disk) catches up
            st.saved_rev = p.revision
        self._drops["profile.refused"] += max(0, len(profiles) - cfg.max_profiles)
        self._counts["loaded"] = min(len(profiles), cfg.max_profiles)

    # -- policy ---------------------------------------------------------------------------------------

    def _policy_of(self, w: Workload):
        try:
            return self.policy.for_workload(w)
        except Exception as e:  # a policy bug must not stop the event path: the workload is not profiled
            self._rlog.error("policy", "profiles: policy failed for %s: %r", w.key, e)
            return None

    def set_policy(self, policy) -> None:
        """A new policy: every profile's window and after-mode again, excluded workloads looked at again."""
        with self._lock:
            self.policy = policy
            for st in self._states.values():
                was = st.policy
                st.policy = self._policy_of(st.profile.workload)
                if was is not None and st.policy is None:
                    self._unenforce(st)
                elif was is None and st.policy is not None and st.profile.mode == "protecting":
                    self._enforce(st)
            self._by_cid = {c: s for c, s in self._by_cid.items() if s is not _EXCLUDED}

    # -- the event path ------------------------------------------------------------------------------------

    def observe_batch(self, events, flagged) -> list[tuple[int, list[AlertEvent]]]:
        """Judge a batch: learn (learning) or flag new items (monitoring, protecting). `flagged`: positions a
        detection rule alerted on, never learned. Returns (position, alerts) for the events that deviate."""
        out: list[tuple[int, list[AlertEvent]]] = []
        with self._lock:
            by_cid = self._by_cid
            last_c = last_st = None  # a batch's container events come in runs from one container
            for i, en in enumerate(events):
                c = en.container
                if c is None:
                    continue
                if c is last_c:
                    st = last_st
                else:
                    st = by_cid.get(c.id)
                    if st is None:
                        st = self._attach(c, True)
                        by_cid = self._by_cid  # _attach may have made a new table
                    last_c, last_st = c, st
                if st is _EXCLUDED or st.policy is None:
                    continue
                ev = en.event
                t = type(ev)
                if t is FileEvent and ev.op is _OPEN:
                    # the common events, inline (bench/pipeline.py, with the profiles on as the agent runs
                    # them: 1.7-2.1 us a container event, 0.9 with this): a write open whose directory the
                    # profile knows by name is counted here (_see's first branch); every other open goes
                    # through _file as before
                    if not ev.flags & _WRITE_FLAGS or ev.ret < 0:
                        continue
                    path = en.path_resolved or ev.path
                    j = path.rfind("/")
                    if j > 0 and path[0] == "/" and not path.startswith(_NOT_FILES):
                        ent = st.profile.items["write"].get(path[:j])
                        if ent is not None:
                            _seen_again(st, ent, ev.ts_ns * 1e-9)
                            continue
                    alerts = self._file(st, en, ev, i, flagged)
                elif t is NetEvent and ev.op is _CONNECT:
                    # and a connect to a peer the profile knows by name (_net's item, _see's first branch)
                    ret = ev.ret
                    if (ret == 0 or ret == _EINPROGRESS) and ev.family in _IP:
                        ent = st.profile.items["peer"].get(f"{ev.transport}/{ev.address}:{ev.port}")
                        if ent is not None:
                            _seen_again(st, ent, ev.ts_ns * 1e-9)
                            continue
                    alerts = self._net(st, en, ev, i, flagged)
                elif t is ExecEvent:
                    alerts = self._exec(st, en, ev, i in flagged)
                elif t is FileEvent:
                    alerts = self._file(st, en, ev, i, flagged)
                elif t is NetEvent:
                    alerts = self._net(st, en, ev, i, flagged)
                else:
                    continue
                if alerts:
                    out.append((i, alerts))
        return out

    def _exec(self, st: _State, en, ev: ExecEvent, flagged: bool):
        p = st.profile
        ts = ev.ts_ns * 1e-9
        killed = ev.action == Action.KILL  # it never ran: not learned; the kill is its report
        path = ev.filename
        parent = en.parent.exe if en.parent is not None else "?"
        first = None
        also = None
        for kind, item in (("exec", path), ("edge", f"{parent}>{path}"), ("user", _uid(ev.uid))):
            a = self._see(st, p, kind, item, ts, en, flagged or killed, killed)
            if a is not None:
                if first is None:
                    first = a
                else:
                    (also := also or []).append(f"{kind} {item}")
        if first is None:
            return None
        if also:
            # One exec, one alert: a new program's edge (and a new user's) is new with it; the others are
            # remembered as deviations all the same, and named in the alert
            first = dataclasses.replace(first, output=f"{first.output}; also new: {', '.join(also)}")
        return [first]

    def _file(self, st: _State, en, ev: FileEvent, i: int, flagged):
        op = ev.op
        if op is Op.FILE_OPEN:
            if not ev.flags & _WRITE_FLAGS or ev.ret < 0:
                return None
            path = en.path_resolved or ev.path
        elif op is Op.FILE_UNLINK:
            if ev.ret != 0:
                return None
            path = en.path_resolved or ev.path
        elif op is Op.FILE_RENAME:
            if ev.ret != 0:
                return None
            path = ev.path2
        else:
            return None
        if not path.startswith("/") or path.startswith(_NOT_FILES):
            return None
        j = path.rfind("/")
        d = path[:j] if j > 0 else "/"
        a = self._see(st, st.profile, "write", d, ev.ts_ns * 1e-9, en, i in flagged, False)
        return None if a is None else [a]

    def _net(self, st: _State, en, ev: NetEvent, i: int, flagged):
        op = ev.op
        if ev.family not in _IP:
            return None
        if op is Op.NET_CONNECT:
            if ev.ret != 0 and ev.ret != _EINPROGRESS:
                return None
            kind, item = "peer", f"{ev.transport}/{ev.address}:{ev.port}"
        elif op is Op.NET_LISTEN or (op is Op.NET_BIND and ev.transport == "udp"):
            if ev.ret != 0 or not ev.port:
                return None
            kind, item = "listen", f"{ev.transport}/{ev.port}"
        else:
            return None
        a = self._see(st, st.profile, kind, item, ev.ts_ns * 1e-9, en, i in flagged, False)
        return None if a is None else [a]

    def _see(self, st: _State, p: Profile, kind: str, item: str, ts: float, en, no_learn: bool, quiet: bool):
        """One item of an event: known (last/count), learned, or a deviation (an alert once per item)."""
        ent = p.known(kind, item)
        if ent is not None:
            _seen_again(st, ent, ts)
            return None
        if p.mode == "learning":
            if no_learn:
                return None
            if not p.learn(kind, item, ts, self.cfg.max_items):
                self._drops["profile.overflow"] += 1
                if kind not in st.reported:
                    st.reported.add(kind)
                    self._change(st, p.mode, f"overflow {kind} {self.cfg.max_items}", Severity.MEDIUM)
            return None
        dev = p.deviations[kind]
        d = dev.get(item)
        if d is not None:
            if ts > d[1]:
                d[1] = ts
            d[2] += 1
            st.touched = True
            return None
        if len(dev) >= self.cfg.max_deviations:
            # Not remembered, so not alerted either (it would alert on every event): counted, reported once.
            self._drops["profile.deviations_full"] += 1
            if not st.dev_full:
                st.dev_full = True
                self._change(st, p.mode, f"deviations {kind} full at {self.cfg.max_deviations}", Severity.MEDIUM)
            return None
        dev[item] = [ts, ts, 1]
        p.revision += 1
        self._counts["deviations"] += 1
        if quiet:  # the kernel killed it: enforcement.block reports it
            return None
        sev, tactics, techniques, desc = _KIND_INFO[kind]
        stable = max(0, int(ts - p.stable_since))
        self._counts[f"alerts.{kind}"] += 1
        return AlertEvent(en.event.ts_ns, RULE_ID, RULE_NAME, f"Behaviour deviation: {desc}.", sev, tactics,
                          techniques, subject=en,
                          output=f"new {kind} {item} in the {p.mode} profile {p.key} (stable for {stable} s)")

    # -- containers ------------------------------------------------------------------------------------------

    def _attach(self, c, observed: bool):
        """The state of a container's workload (a new profile when none yet); lock held."""
        w = workload_of(c)
        st = self._states.get(w.key)
        if st is None:
            pol = self._policy_of(w)
            if pol is None:
                st = _EXCLUDED
            elif len(self._states) >= self.cfg.max_profiles:
                self._drops["profile.refused"] += 1
                self._rlog.warning("full", "profiles: %d held (profiles.max_profiles), %s not profiled",
                                   len(self._states), w.key)
                st = _EXCLUDED
            else:
                now = self.clock()
                st = self._states[w.key] = _State(Profile(w, now), pol)
                self._counts["created"] += 1
        if len(self._by_cid) >= _MAX_CONTAINERS:
            keep = {cid for s in self._states.values() for cid in s.live}
            self._by_cid = {k: v for k, v in self._by_cid.items() if k in keep}
            if len(self._by_cid) >= _MAX_CONTAINERS:
                self._drops["profile.containers_full"] += 1
                return st
        self._by_cid[c.id] = st
        if observed and st is not _EXCLUDED and c.id not in st.live and (c.state or "running") == "running":
            st.live[c.id] = c.cgroup_id  # a container whose start we missed: runs while its events come
            self._observed[c.id] = self.clock()
        return st

    def on_container(self, kind: str, info) -> None:
        """The container table's listener: "container", "task", "exec", "exit", "delete"."""
        try:
            with self._lock:
                self._on_container(kind, info)
        except Exception as e:  # never break the watcher
            self._rlog.exception("listener", "profiles: container %s failed: %r", kind, e)

    def _on_container(self, kind: str, info) -> None:
        st = self._by_cid.get(info.id)
        if st is not None and st is not _EXCLUDED and kind != "delete" and st.profile.key != workload_of(info).key:
            # The key changed under a known container: its image digest came after its record (containerd
            # sends the image later). From now on it belongs to the profile of the full key.
            cg = st.live.pop(info.id, 0)
            if cg and st.slot >= 0:
                self._kernel("uncover", cg)
            self._by_cid.pop(info.id, None)
            st = None
        if st is None:
            st = self._attach(info, False)
        if st is _EXCLUDED:
            if kind == "delete":
                self._by_cid.pop(info.id, None)
            return
        self._observed.pop(info.id, None)  # the table tells us now: no expiry by silence
        if kind == "delete" or kind == "exit" or info.state in ("stopped", "deleted"):
            cg = st.live.pop(info.id, 0) or info.cgroup_id
            if cg and st.slot >= 0:
                self._kernel("uncover", cg)
            if kind == "delete":
                self._by_cid.pop(info.id, None)
                if st.slot >= 0 and info.cgroup_path:  # what prepare put there at its create, if anything
                    self._kernel("uncover_path", info.cgroup_path)
            return
        if kind in ("task", "exec") or info.state == "running" or info.cgroup_id:
            old = st.live.get(info.id)
            st.live[info.id] = info.cgroup_id
            if st.profile.mode == "protecting" and st.policy is not None and info.cgroup_id and old != info.cgroup_id:
                self._enforce(st, only=info.cgroup_id)

    def reconcile(self, infos) -> None:
        """The containers that run now (ContainerTable.snapshot() after the watcher reconnected: its listing
        tombstones the containers that went meanwhile without telling listeners): any other is no longer
        counted as running."""
        try:
            running = {i.id for i in infos if i.state not in ("stopped", "deleted")}
            with self._lock:
                for st in self._states.values():
                    for cid in [c for c in st.live if c not in running and c not in self._observed]:
                        cg = st.live.pop(cid)
                        if cg and st.slot >= 0:
                            self._kernel("uncover", cg)
        except Exception as e:
            self._rlog.exception("reconcile", "profiles: reconcile failed: %r", e)

    def prepare(self, info, cgroups_path: str) -> None:
        """Before a container runs (NRI CreateContainer, OCI gate): its workload's profile, from here or the
        collector; a protecting one goes into the kernel for the container's cgroup path, so its first exec
        is already judged. Never raises; waits at most profiles.fetch_timeout_s for the collector."""
        try:
            self._prepare(info, cgroups_path)
        except Exception as e:
            self._rlog.exception("prepare", "profiles: prepare of %s failed: %r", getattr(info, "id", "?"), e)

    def _prepare(self, info, cgroups_path: str) -> None:
        w = workload_of(info)
        with self._lock:
            if not w.image_digest:
                w = self._by_image(w)
            st = self._states.get(w.key)
            local = st.profile.mode if st is not None else None
        if (local is None or local == "learning") and self.sync is not None:
            doc = None
            try:
                doc = self.sync.fetch(w.key, self.cfg.fetch_timeout_s)
            except Exception as e:
                self._drops["profile.sync"] += 1
                self._rlog.error("fetch", "profiles: fetch of %s failed: %r", w.key, e)
            if doc is not None:
                self._from_collector(w, doc)
        with self._lock:
            st = self._states.get(w.key)
            if st is None:
                return  # nothing learned for it yet: the container table's record starts its profile
            if st.policy is None or st.profile.mode != "protecting" or not cgroups_path:
                return
            slot = self._slot(st)
            if slot >= 0:
                self._kernel("cover_path", cgroups_path, slot)
                self._counts["prepared"] += 1

    def _by_image(self, w: Workload) -> Workload:
        """A gate that knows the image by name only (an OCI spec, NRI): the workload of the profile that
        ran this image under that name most recently, else w (lock held)."""
        best = None
        for st in self._states.values():
            o = st.profile.workload
            if (o.image == w.image and o.container == w.container and o.owner == w.owner and o.kind == w.kind
                    and o.namespace == w.namespace and (best is None or st.profile.stable_since > best[0])):
                best = (st.profile.stable_since, o)
        return best[1] if best is not None else w

    def _from_collector(self, w: Workload, doc) -> None:
        try:
            theirs = Profile.from_doc(doc, self.cfg.max_items, self.cfg.max_deviations)
        except ValueError as e:
            self._drops["profile.sync"] += 1
            self._rlog.warning("doc", "profiles: the collector's profile of %s does not load: %s", w.key, e)
            return
        if theirs.key != w.key:
            self._drops["profile.sync"] += 1
            return
        with self._lock:
            st = self._states.get(w.key)
            if st is None:
                if len(self._states) >= self.cfg.max_profiles:
                    self._drops["profile.refused"] += 1
                    return
                pol = self._policy_of(w)
                if pol is None:
                    return
                st = self._states[w.key] = _State(theirs, pol)
                st.pushed_rev = theirs.revision  # the collector has it all: no echo
                self._counts["fetched"] += 1
                if theirs.mode != "learning":
                    self._mode_changed(st, "learning", "from collector")
                return
            before = st.profile.mode
            if st.profile.merge(theirs, self.cfg.max_items, self.cfg.max_deviations):
                self._counts["fetched"] += 1
            if st.profile.mode != before:
                self._mode_changed(st, before, "from collector")

    # -- the clock ------------------------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list:
        """About once a second (the pipeline's worker): run time, mode switches, control requests, flushes.
        Returns the profile.change records to emit."""
        now = self.clock() if now is None else now
        with self._lock:
            dt = 0.0 if self._last_tick is None else min(max(now - self._last_tick, 0.0), 30.0)
            self._last_tick = now
            self._expire_observed(now)
            for st in self._states.values():
                p = st.profile
                if p.mode != "learning" or not st.live or st.policy is None:
                    continue
                run = dt * len(st.live)  # replica run time: every running container of the workload adds dt
                p.run_s += run
                p.quiet_run_s += run
                st.touched = True
                self._maybe_switch(st, now)
        self._requests(now)
        if self._backlog or now - self._last_flush >= self.cfg.flush_s:
            self._flush(now, touched=self._touch_backlog or now - self._last_touch_flush >= _TOUCH_FLUSH_S)
        with self._lock:
            out = list(self._changes)
            self._changes.clear()
        return out

    def _expire_observed(self, now: float) -> None:
        for cid, seen in list(self._observed.items()):
            st = self._by_cid.get(cid)
            if st is None or st is _EXCLUDED:
                del self._observed[cid]
            elif now - seen >= _OBSERVED_TTL_S:
                # A container we only know from its events: it counts as running while they come.
                del self._observed[cid]
                st.live.pop(cid, None)
                self._by_cid.pop(cid, None)  # its next event attaches it again

    def _maybe_switch(self, st: _State, now: float) -> None:
        p, pol = st.profile, st.policy
        if pol.after == "learning" or p.overflow:  # an overflowing profile stays learning (and said so)
            return
        if not p.total() or (pol.after == "protecting" and not p.items["exec"]):
            return  # nothing learned yet: locking it would flag (or kill) everything
        if p.run_s >= pol.learn_s:
            reason = f"learned {int(p.run_s)} s"
        elif p.quiet_run_s >= pol.quiet_s:
            reason = f"quiet {int(p.quiet_run_s)} s"
        else:
            return
        p.mode, p.locked_by, p.mode_ts = pol.after, "auto", max(now, p.mode_ts + 1e-6)
        p.revision += 1
        self._mode_changed(st, "learning", reason)

    def _mode_changed(self, st: _State, before: str, reason: str) -> None:
        """Act on a profile's new mode (lock held): the kernel's allow-list on or off, a profile.change."""
        p = st.profile
        st.reported.clear()
        st.dev_full = False
        if p.mode == "protecting" and st.policy is not None:
            self._enforce(st)
        elif before == "protecting":
            self._unenforce(st)
        self._change(st, before, reason, Severity.INFO)
        self._counts[f"switched.{p.mode}"] += 1

    def _change(self, st: _State, before: str, reason: str, severity: Severity) -> None:
        p, w = st.profile, st.profile.workload
        if len(self._changes) >= _MAX_CHANGES:
            self._drops["profile.changes_full"] += 1
            return
        self._changes.append(ProfileChange(
            int(self.clock() * 1e9), p.key, p.mode, before, reason, p.counts(), w.namespace, w.kind, w.owner,
            w.container, w.image, w.image_digest, severity))

    # -- the kernel -------------------------------------------------------------------------------------------------

    def _kernel(self, op: str, *args):
        if self.kill is None:
            return None
        try:
            return getattr(self.kill, op)(*args)
        except Exception as e:  # counted; the profile still alerts
            self._drops["profile.kernel"] += 1
            self._rlog.error(f"kernel:{op}", "profiles: kernel %s failed: %r", op, e)
            return None

    def _slot(self, st: _State) -> int:
        """The profile's kernel slot with its current exec paths (loaded again when they changed)."""
        paths = frozenset(st.profile.items["exec"])
        if st.slot >= 0 and st.loaded == paths:
            return st.slot
        slot = self._kernel("load", st.profile.key, sorted(paths))
        if not isinstance(slot, int) or slot < 0:
            if self.kill is not None:
                self._drops["profile.kernel"] += 1
            return -1
        st.slot, st.loaded = slot, paths
        return slot

    def _enforce(self, st: _State, only: int = 0) -> None:
        slot = self._slot(st)
        if slot < 0:
            return
        for cg in ([only] if only else st.live.values()):
            if cg:
                self._kernel("cover", cg, slot)

    def _unenforce(self, st: _State) -> None:
        if st.slot < 0:
            return
        for cg in st.live.values():
            if cg:
                self._kernel("uncover", cg)
        self._kernel("drop", st.profile.key)
        st.slot, st.loaded = -1, None

    # -- control requests ---------------------------------------------------------------------------------------------

    def _requests(self, now: float) -> None:
        for name, req, err in self.store.pending(now):
            if req is None:
                self.store.finish(name, False, err)
                self._counts["requests_failed"] += 1
                continue
            with self._lock:
                ok, err = self._apply(req, now)
            self.store.finish(name, ok, err)
            self._counts["requests_applied" if ok else "requests_failed"] += 1

    def _apply(self, req: dict, now: float) -> tuple[bool, str]:
        profiles = {k: s.profile for k, s in self._states.items()}
        target = resolve(profiles, req.get("key")) if isinstance(req, dict) else None
        modes = {k: p.mode for k, p in profiles.items()}
        revs = {k: p.revision for k, p in profiles.items()}
        ok, err = apply_request(profiles, req, now, self.cfg.max_items)
        if not ok:
            return ok, err
        op = req["op"]
        for key in modes.keys() - profiles.keys():  # forgotten
            st = self._states.pop(key)
            self._unenforce(st)
            self._by_cid = {c: s for c, s in self._by_cid.items() if s is not st}
            self.store.remove(key)
        for key, p in profiles.items():
            st = self._states.get(key)
            if st is None:  # imported
                if len(self._states) >= self.cfg.max_profiles:
                    self._drops["profile.refused"] += 1
                    return False, f"{self.cfg.max_profiles} profiles held (profiles.max_profiles)"
                st = self._states[key] = _State(p, self._policy_of(p.workload))
                self._by_cid = {c: s for c, s in self._by_cid.items() if s is not _EXCLUDED}
            if p.mode != modes.get(key, "learning"):
                who = {"lock": "locked by user", "unlock": "unlocked by user"}.get(op, "imported")
                self._mode_changed(st, modes.get(key, "learning"), who)
            elif st.slot >= 0 and p.mode == "protecting":
                self._enforce(st)  # imported execs: the allow-list again
            if revs.get(key) != p.revision:
                try:
                    self.store.save(p)  # before .done: the CLI reads the file next
                    st.saved_rev = p.revision
                except OSError as e:
                    self.store.errors += 1
                    return False, f"applied, but cannot save {key}: {e}"
        if op == "unlock" and target is not None:
            st = self._states.get(target.key)
            if st is not None:
                st.reported.clear()
        return True, ""

    # -- flushing -----------------------------------------------------------------------------------------------------

    def _flush(self, now: float, touched: bool = False, final: bool = False) -> None:
        with self._lock:
            self._last_flush = now
            if touched:
                self._last_touch_flush = now
            changed, touched_only, push = [], [], []
            for st in self._states.values():
                p = st.profile
                if p.revision != st.saved_rev:
                    changed.append(st)
                elif st.touched and (touched or final):
                    touched_only.append(st)
                if self.sync is not None and p.revision != st.pushed_rev:
                    push.append((st, p.revision))
            # Each file is fsync'ed on the pipeline's worker: a bounded number per tick (new items and mode
            # changes first), the rest on the next ticks, so a thousand learning profiles never stall it.
            todo = changed + touched_only
            if not final and len(todo) > _MAX_SAVES:
                self._backlog = True
                self._touch_backlog = len(changed) < _MAX_SAVES
                todo = todo[:_MAX_SAVES]
            else:
                self._backlog = self._touch_backlog = False
            save = []
            for st in todo:
                save.append((st, st.profile.revision, st.profile.to_doc()))
                st.touched = False
        # The documents were taken under the lock; writing them happens outside it (disk may be slow).
        failed = set()
        for st, rev, doc in save:
            try:
                self.store.save_doc(st.profile.key, doc, sync_dir=False)
                st.saved_rev = rev
            except OSError as e:
                failed.add(st.profile.key)
                self.store.errors += 1
                self._rlog.error("save", "profiles: cannot save %s: %s", st.profile.key, e)
        if save and len(failed) < len(save):
            try:
                fsync_dir(self.store.directory)
            except OSError:
                self.store.errors += 1
        for st, rev in push[:_MAX_SAVES * 4]:  # the sync's queue is bounded too; the rest go next flush
            with self._lock:
                doc = st.profile.to_doc()
            try:
                self.sync.push(doc)
                st.pushed_rev = rev
            except Exception as e:
                self._drops["profile.sync"] += 1
                self._rlog.error("push", "profiles: push of %s failed: %r", st.profile.key, e)

    # -- reports ----------------------------------------------------------------------------------------------------

    def drops(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._drops)
        out["profile.store_errors"] = self.store.errors - self._store_base
        if self.sync is not None and hasattr(self.sync, "drops"):
            try:
                for k, v in self.sync.drops().items():
                    out[k] = out.get(k, 0) + v
            except Exception:
                pass
        return out

    def counters(self) -> dict:
        with self._lock:
            modes = Counter(s.profile.mode for s in self._states.values())
            out = {"profiles": len(self._states), "live_containers": sum(len(s.live) for s in self._states.values()),
                   "items": sum(s.profile.total() for s in self._states.values()),
                   "kernel_slots": sum(1 for s in self._states.values() if s.slot >= 0)}
            out.update(self._counts)
        for m in ("learning", "monitoring", "protecting"):
            out[f"mode.{m}"] = modes.get(m, 0)
        return out

    def profiles(self) -> list[Profile]:
        """Copies (from their documents): safe to read on another thread."""
        with self._lock:
            docs = [s.profile.to_doc() for s in self._states.values()]
        return [Profile.from_doc(d) for d in docs]

    def close(self) -> None:
        """The final flush: everything changed goes to disk (and to the collector's queue)."""
        try:
            self._flush(self.clock(), touched=True, final=True)
        except Exception as e:
            self._rlog.exception("close", "profiles: final flush failed: %r", e)


__all__ = ["KINDS", "RULE_ID", "ProfileEngine"]
