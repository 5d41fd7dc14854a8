"""In-kernel exec rules: the policy's `runtime` section turned into BPF map entries.

probes/process.bpf.c checks every exec of a task whose cgroup is in `enforce_scope` against
`deny_name` (the new program's comm), `deny_path` (exact paths and prefixes, for every covered
container or for one) and the drift set (inodes a covered container opened for writing, kept by
probes/file.bpf.c), and sends SIGKILL before the program's first instruction in block mode.
Everything here changes maps only: rules update at run time without reloading the probes.
"""

from __future__ import annotations

import ctypes
import re
import threading

from agent.policy.runtime import RuleError, RuntimeRules
from agent.sensors.common import PREFIX_MAX

ACT_NONE, ACT_ALERT, ACT_KILL = 0, 1, 2  # enum nw_action; keep in sync with probes/events.h
WHY_NAME, WHY_PATH, WHY_DRIFT = 1, 2, 3  # enum nw_reason
CFG_DRIFT, CFG_EXEC_MODE = 2, 3  # enum nw_cfg slots
_MODES = {"off": 0, "alert": ACT_ALERT, "block": ACT_KILL}
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel keeps this much of a program's name
_GLOB = re.compile(r"[*?\[]")

__all__ = ["ExecEnforcer", "RuleError", "RuntimeRules"]


class ExecEnforcer:
    """Writes RuntimeRules into the loaded probes' maps; `cover` puts a container's cgroup under them."""

    def __init__(self, probes):
        self._probes = probes
        self.rules = RuntimeRules()
        self._names: dict[bytes, int] = {}
        self._paths: dict[tuple[int, bytes, int], int] = {}  # (cgroup, bytes, prefixlen) -> index
        self._flagged: dict[int, list[str]] = {}  # cgroup -> paths the image gate flagged
        self.covered: set[int] = set()
        # The container watcher's thread covers containers while the policy reload applies rules.
        self._lock = threading.RLock()

    def apply(self, rules: RuntimeRules) -> None:
        """Replace the rules (names, global paths, modes) at run time."""
        with self._lock:
            self._apply(rules)

    def _apply(self, rules: RuntimeRules) -> None:
        names = {r.name.encode()[:COMM_LEN]: i for i, r in enumerate(rules.deny_exec) if r.name}
        paths = {_path_key(0, r.path): i for i, r in enumerate(rules.deny_exec) if r.path}
        for cg, flagged in self._flagged.items():
            for j, p in enumerate(flagged):
                paths[_path_key(cg, p)] = len(rules.deny_exec) + j
        t = self._probes.table(b"deny_name")
        for raw in set(self._names) - set(names):
            del t[_comm_key(t, raw)]
        for raw, i in names.items():
            t[_comm_key(t, raw)] = ctypes.c_uint32(i)
        t = self._probes.table(b"deny_path")
        for key in set(self._paths) - set(paths):
            del t[_lpm_key(t, key)]
        for key, i in paths.items():
            t[_lpm_key(t, key)] = ctypes.c_uint32(i)
        self._names, self._paths, self.rules = names, paths, rules
        self._probes.set_cfg(CFG_EXEC_MODE, _MODES[rules.action] if rules.deny_exec or self._flagged else 0)
        self._probes.set_cfg(CFG_DRIFT, _MODES[rules.drift])

    def flag_paths(self, cgroup_id: int, paths: list[str]) -> None:
        """Deny execs of these files in this container only (files the image gate flagged)."""
        ok = [p for p in paths if p.startswith("/") and len(p.encode()) < PREFIX_MAX and not _GLOB.search(p)]
        with self._lock:
            if ok:
                self._flagged[cgroup_id] = ok
            else:
                self._flagged.pop(cgroup_id, None)
            self._apply(self.rules)

    def cover(self, cgroup_id: int, on: bool = True) -> None:
        t = self._probes.table(b"enforce_scope")
        key = ctypes.c_uint64(cgroup_id)
        with self._lock:
            if on:
                t[key] = ctypes.c_uint8(1)
                self.covered.add(cgroup_id)
            elif cgroup_id in self.covered:
                self.covered.discard(cgroup_id)
                if self._flagged.pop(cgroup_id, None) is not None:
                    self._apply(self.rules)
                try:
                    del t[key]
                except KeyError:
                    pass

    def describe(self, rule: int, cgroup_id: int = 0) -> tuple[str, str]:
        """(category, text) of a rule id the probe reported."""
        why, idx = rule >> 16, rule & 0xFFFF
        if why == WHY_DRIFT:
            return "drift", "drift: a file written in the container after it started"
        if idx < len(self.rules.deny_exec):
            return "deny_exec", f"deny_exec[{idx}] {self.rules.deny_exec[idx].describe()}"
        flagged = self._flagged.get(cgroup_id, [])
        j = idx - len(self.rules.deny_exec)
        if 0 <= j < len(flagged):
            return "image", f"flagged by the image gate: {flagged[j]}"
        return "deny_exec", f"rule {idx}"


def _path_key(cgroup_id: int, path: str) -> tuple[int, bytes, int]:
    if path.endswith("*"):
        raw = path[:-1].encode()
    else:
        raw = path.encode() + b"\0"  # the NUL makes it exact: the probe looks up path + NUL
    return cgroup_id, raw, 64 + len(raw) * 8


def _comm_key(table, raw: bytes):
    key = table.Key()
    key.comm = raw
    return key


def _lpm_key(table, key: tuple[int, bytes, int]):
    cgroup_id, raw, prefixlen = key
    k = table.Key()
    k.prefixlen = prefixlen
    k.cgroup_id = (ctypes.c_ubyte * 8)(*cgroup_id.to_bytes(8, "little"))
    k.path = raw
    return k
