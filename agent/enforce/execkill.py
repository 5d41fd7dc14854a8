"""In-kernel exec rules: the policy's `runtime` section turned into BPF map entries.

probes/process.bpf.c checks every exec of a task whose cgroup is in `enforce_scope` against
`deny_name` (the new program's comm), `deny_path` (exact paths and prefixes, for every covered
container or for one) and the drift set (inodes a covered container opened for writing, kept by
probes/file.bpf.c), and sends SIGKILL before the program's first instruction in block mode.
Every other task is the host's: it is checked against the rules whose scope is host or both
(deny_name entries of SCOPE_HOST, deny_path entries under HOST_CGROUP).
Everything here changes maps only: rules update at run time without reloading the probes.

Detection rules with `action: kill` that the kernel can decide (agent/enforce/detectkill.py finds them:
an exec of a program name, an exact path, a path prefix) go into the same maps, as `KernelKill`
entries with indexes from DETECT_BASE on, so a report names the detection rule. The probe has one mode
for every entry (CFG_EXEC_MODE), so they go in only when the runtime action is block: with
`runtime.action: alert` a kill rule runs in user space instead of turning the runtime's alerts into kills.

A container is covered by its cgroup id (`cover`) once the container table knows it, and earlier,
from its create, by its cgroup path (`cover_path`): the path goes into `enforce_pending` and the
cgroup_mkdir probe covers the new directory in the kernel, before runc can move a task into it.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from dataclasses import dataclass

from agent.enrich.cgroups import cgroup2_root, cgroup_path_from_spec
from agent.policy.runtime import RuleError, RuntimeRules
from agent.sensors.abi import HOST_CGROUP, Action, Cfg, Reason, Scope
from agent.sensors.common import PREFIX_MAX

# The kernel ABI's values (agent/sensors/abi.py mirrors probes/events.h; tests/unit/test_abi.py checks it).
ACT_NONE, ACT_ALERT, ACT_KILL = Action.NONE, Action.ALERT, Action.KILL
WHY_NAME, WHY_PATH, WHY_DRIFT, WHY_PROFILE = Reason.NAME, Reason.PATH, Reason.DRIFT, Reason.PROFILE
CFG_DRIFT, CFG_EXEC_MODE, CFG_HOST_RULES = Cfg.DRIFT, Cfg.EXEC_MODE, Cfg.HOST_RULES
SCOPE_CONTAINERS, SCOPE_HOST = Scope.CONTAINERS, Scope.HOST
CGROUP_PATH_MAX = 256  # NW_PATH_MAX: bytes of struct cgroup_path, the NUL included
_PENDING_SWEEP = 1024  # pending paths kept before old ones are looked at
_PENDING_TTL = 600.0  # seconds a create's path waits for its container's delete before it is dropped
_SCOPE_BITS = {"containers": (SCOPE_CONTAINERS,), "host": (SCOPE_HOST,), "both": (SCOPE_CONTAINERS, SCOPE_HOST)}
_MODES = {"off": 0, "alert": ACT_ALERT, "block": ACT_KILL}
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel keeps this much of a program's name
_GLOB = re.compile(r"[*?\[]")
# Indexes of detection rules' entries: above any runtime or image-gate index (the maps hold at most
# 4096 entries), below the 16 bits the probe reports (rule = why << 16 | index).
DETECT_BASE = 0x8000
DETECT_MAX = 0x8000
_DETECT_BITS = {"container": (SCOPE_CONTAINERS,), "host": (SCOPE_HOST,), "both": (SCOPE_CONTAINERS, SCOPE_HOST)}

__all__ = ["DETECT_BASE", "ExecEnforcer", "KernelKill", "RuleError", "RuntimeRules"]


@dataclass(frozen=True)
class KernelKill:
    """A detection kill rule as in-kernel exec entries: the exec is killed when the new program's name
    is in `names`, or the path given to execve is in `paths` or starts with one of `prefixes` (bytes
    as the kernel compares them). scope: the rule's (container, host or both)."""

    rule_id: str
    scope: str
    names: tuple[bytes, ...] = ()
    paths: tuple[bytes, ...] = ()
    prefixes: tuple[bytes, ...] = ()


class ExecEnforcer:
    """Writes RuntimeRules into the loaded probes' maps; `cover` puts a container's cgroup under them."""

    def __init__(self, probes, cgroup_root: str | None = None, profiles=None):
        """cgroup_root: where the cgroup2 hierarchy is mounted (None: found in /proc/self/mountinfo).
        profiles: the protecting profiles' allow-lists (agent/enforce/profilekill.py), whose kills the
        same probe reports: `describe` hands their rule ids to it."""
        self._probes = probes
        self.profiles = profiles
        self._cgroup_root = cgroup_root
        self.rules = RuntimeRules()
        self.detect: tuple[KernelKill, ...] = ()  # detection kill rules, as given; in the maps when block
        self._names: dict[tuple[bytes, int], int] = {}  # (comm, scope bit) -> index
        self._paths: dict[tuple[int, bytes, int], int] = {}  # (cgroup, bytes, prefixlen) -> index
        self._flagged: dict[int, list[str]] = {}  # cgroup -> paths the image gate flagged
        self.covered: set[int] = set()
        # cgroup paths covered from their mkdir on (enforce_pending) -> when they were added
        self.pending: dict[str, float] = {}
        self.counters = {"cover_unresolved": 0, "pending_full": 0, "pending_expired": 0, "detect_full": 0}
        self._live = False  # the probes are loaded: state goes into the maps as it changes
        # The container watcher's thread covers containers while the policy reload applies rules.
        self._lock = threading.RLock()

    def start(self, rules: RuntimeRules | None = None) -> None:
        """Once the probes are loaded: write the rules, and every container covered so far, into the maps.
        Before that, apply/cover/cover_path only record (the container table may report first)."""
        with self._lock:
            self._live = True
            self._apply(self.rules if rules is None else rules)
            t = self._probes.table(b"enforce_scope")
            for cg in self.covered:
                t[ctypes.c_uint64(cg)] = ctypes.c_uint8(1)
            for rel in list(self.pending):
                self._put_pending(rel)

    def apply(self, rules: RuntimeRules, detect: tuple[KernelKill, ...] | None = None) -> None:
        """Replace the rules (names, global paths, modes) at run time; `detect`: the detection kill rules'
        entries too (None: keep those in force)."""
        with self._lock:
            if detect is not None:
                self.detect = tuple(detect)[:DETECT_MAX]
            if self._live:
                self._apply(rules)
            else:
                self.rules = rules

    def _apply(self, rules: RuntimeRules) -> None:
        names, paths = {}, {}
        for i, r in enumerate(rules.deny_exec):
            for bit in _SCOPE_BITS[r.scope]:
                if r.name:
                    names.setdefault((r.name.encode()[:COMM_LEN], bit), i)
                else:  # the first rule that names a path reports it, as for names
                    paths.setdefault(_path_key(HOST_CGROUP if bit == SCOPE_HOST else 0, r.path), i)
        for cg, flagged in self._flagged.items():
            for j, p in enumerate(flagged):
                paths[_path_key(cg, p)] = len(rules.deny_exec) + j
        detect = self.detect if rules.action == "block" else ()
        dnames, dpaths = _detect_keys(detect)
        self._names = self._sync(b"deny_name", _comm_key, self._names, names, dnames)
        self._paths = self._sync(b"deny_path", _lpm_key, self._paths, paths, dpaths)
        self.rules = rules
        on = rules.deny_exec or self._flagged or detect
        self._probes.set_cfg(CFG_EXEC_MODE, _MODES[rules.action] if on else 0)
        self._probes.set_cfg(CFG_DRIFT, _MODES[rules.drift])
        self._probes.set_cfg(CFG_HOST_RULES, int(any(r.scope != "containers" for r in rules.deny_exec)
                                                 or any(d.scope != "container" for d in detect)))

    def _sync(self, name: bytes, make_key, old: dict, want: dict, detect: dict) -> dict:
        """One map brought from `old` to `want` (runtime and image-gate entries) plus `detect` (detection
        entries, where no runtime entry has the key: then the runtime rule is the one reported). Stale keys
        go first, to make room; a key that stays is never absent. A detection entry a full map refuses is
        counted and left out: its rule still kills, from user space. Returns what the map holds."""
        t = self._probes.table(name)
        for key in set(old) - set(want) - set(detect):
            del t[make_key(t, key)]
        for key, i in want.items():
            t[make_key(t, key)] = ctypes.c_uint32(i)
        now = dict(want)
        for key, i in detect.items():
            if key in now:
                continue
            try:
                t[make_key(t, key)] = ctypes.c_uint32(i)
            except Exception:  # OSError (E2BIG) from a full map (agent/sensors/bpfmap.py)
                self.counters["detect_full"] += 1
                if key not in old:
                    continue
            now[key] = i
        return now

    def flag_paths(self, cgroup_id: int, paths: list[str]) -> None:
        """Deny execs of these files in this container only (files the image gate flagged)."""
        ok = [p for p in paths if p.startswith("/") and len(p.encode()) < PREFIX_MAX and not _GLOB.search(p)]
        with self._lock:
            if ok:
                self._flagged[cgroup_id] = ok
            else:
                self._flagged.pop(cgroup_id, None)
            if self._live:
                self._apply(self.rules)

    def cover(self, cgroup_id: int, on: bool = True) -> None:
        key = ctypes.c_uint64(cgroup_id)
        with self._lock:
            t = self._probes.table(b"enforce_scope") if self._live else None
            if on:
                if t is not None:
                    t[key] = ctypes.c_uint8(1)
                self.covered.add(cgroup_id)
            elif cgroup_id in self.covered:
                self.covered.discard(cgroup_id)
                if self._flagged.pop(cgroup_id, None) is not None and t is not None:
                    self._apply(self.rules)
                if t is not None:
                    try:
                        del t[key]
                    except KeyError:
                        pass

    def cover_path(self, cgroups_path: str) -> int:
        """Cover a container from its create on, by its OCI linux.cgroupsPath (cgroupfs "/ns/id" or
        systemd "slice:prefix:name"). Returns the cgroup id when the directory exists already, else 0
        (the cgroup_mkdir probe covers it when runc makes it). Unresolvable paths are counted."""
        rel = cgroup_path_from_spec(cgroups_path)
        if not rel or len(rel.encode()) >= CGROUP_PATH_MAX:
            with self._lock:
                self.counters["cover_unresolved"] += 1
            return 0
        with self._lock:
            if len(self.pending) >= _PENDING_SWEEP:
                self._expire_pending()
            self.pending[rel] = time.monotonic()
            if self._live:
                self._put_pending(rel)
        # After the pending entry, so that a mkdir between the two is caught by one or the other.
        try:
            cg = os.stat(os.path.join(self._root(), rel.lstrip("/"))).st_ino
        except OSError:
            return 0
        self.cover(cg)
        return cg

    def uncover_spec(self, cgroups_path: str) -> None:
        """Undo cover_path for a container that will not be created (a gate blocked it)."""
        self.uncover_path(cgroup_path_from_spec(cgroups_path))

    def uncover_path(self, rel: str) -> None:
        """Forget a pending cgroup path (relative to the cgroup2 root): its container is gone."""
        with self._lock:
            if self.pending.pop(rel, None) is not None and self._live:
                self._del_pending(rel)

    def _put_pending(self, rel: str) -> None:
        t = self._probes.table(b"enforce_pending")
        try:
            t[_cgroup_path_key(t, rel.encode())] = ctypes.c_uint8(1)
        except Exception:  # the map is full: the container is covered once the container table knows it
            self.counters["pending_full"] += 1

    def _del_pending(self, rel: str) -> None:
        t = self._probes.table(b"enforce_pending")
        try:
            del t[_cgroup_path_key(t, rel.encode())]
        except KeyError:
            pass

    def _expire_pending(self) -> None:
        """Paths of creates that never got their delete (a create that failed later in the runtime):
        after _PENDING_TTL they are dropped, so the map never fills with them."""
        old = time.monotonic() - _PENDING_TTL
        for rel in [r for r, t in self.pending.items() if t < old]:
            del self.pending[rel]
            self.counters["pending_expired"] += 1
            if self._live:
                self._del_pending(rel)

    def _root(self) -> str:
        if not self._cgroup_root:
            self._cgroup_root = cgroup2_root()
        return self._cgroup_root

    def describe(self, rule: int, cgroup_id: int = 0) -> tuple[str, str]:
        """(category, text) of a rule id the probe reported."""
        why, idx = rule >> 16, rule & 0xFFFF
        if why == WHY_PROFILE:
            if self.profiles is not None:
                return self.profiles.describe(rule, cgroup_id)
            return "profile", f"exec not in the learned profile of slot {idx}"
        if why == WHY_DRIFT:
            return "drift", "drift: a file written in the container after it started"
        if DETECT_BASE <= idx < DETECT_BASE + len(self.detect):
            return "detect", self.detect[idx - DETECT_BASE].rule_id
        if idx < len(self.rules.deny_exec):
            return "deny_exec", f"deny_exec[{idx}] {self.rules.deny_exec[idx].describe()}"
        flagged = self._flagged.get(cgroup_id, [])
        j = idx - len(self.rules.deny_exec)
        if 0 <= j < len(flagged):
            return "image", f"flagged by the image gate: {flagged[j]}"
        return "deny_exec", f"rule {idx}"


def _path_key(cgroup_id: int, path: str) -> tuple[int, bytes, int]:
    if path.endswith("*"):
        return _raw_key(cgroup_id, path[:-1].encode(), exact=False)
    return _raw_key(cgroup_id, path.encode(), exact=True)


def _raw_key(cgroup_id: int, raw: bytes, exact: bool) -> tuple[int, bytes, int]:
    if exact:
        raw += b"\0"  # the NUL makes it exact: the probe looks up path + NUL
    return cgroup_id, raw, 64 + len(raw) * 8


def _detect_keys(detect: tuple[KernelKill, ...]) -> tuple[dict, dict]:
    """(deny_name keys, deny_path keys) -> index of the detection entries; the first rule naming a key
    reports it. Covered containers' paths go under cgroup 0 (every covered container), the host's under
    HOST_CGROUP, as the runtime's do."""
    names: dict = {}
    paths: dict = {}
    for k, d in enumerate(detect):
        i = DETECT_BASE + k
        for bit in _DETECT_BITS[d.scope]:
            cg = HOST_CGROUP if bit == SCOPE_HOST else 0
            for n in d.names:
                names.setdefault((n[:COMM_LEN], bit), i)
            for p in d.paths:
                paths.setdefault(_raw_key(cg, p, exact=True), i)
            for p in d.prefixes:
                paths.setdefault(_raw_key(cg, p, exact=False), i)
    return names, paths


def _comm_key(table, key: tuple[bytes, int]):
    k = table.Key()
    k.comm, k.scope = key
    return k


def _cgroup_path_key(table, raw: bytes):
    k = table.Key()
    k.path = raw  # ctypes pads the rest of the array with NULs, as the probe's key is
    return k


def _lpm_key(table, key: tuple[int, bytes, int]):
    cgroup_id, raw, prefixlen = key
    k = table.Key()
    k.prefixlen = prefixlen
    k.cgroup_id = (ctypes.c_ubyte * 8)(*cgroup_id.to_bytes(8, "little"))
    k.path = raw
    return k
