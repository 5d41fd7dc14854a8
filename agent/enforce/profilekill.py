"""In-kernel allow-lists of protecting profiles (issue 13): a new program is killed before it runs.

A profile in protecting mode (agent/detect/profile) has learned which paths its workload execs. `load` puts
that list into the probes' `allow_exec` trie under a slot (one per profile key, shared by every replica),
`cover` gives a container's cgroup that slot in `profile_of`, and probes/process.bpf.c then kills (SIGKILL,
in the exec tracepoint, before the new program's first instruction) every exec in that cgroup whose path,
as given to execve, is not in the slot's list. The kill is reported like the runtime rules' kills: an
exec record with action kill and rule `(Reason.PROFILE << 16) | slot`, which `describe` names.
It comes after the runtime rules and whatever their mode is: a profile kills even where `runtime.action`
is alert; a runtime rule that kills already keeps its own reason.

`cover_path` covers a container from its create on (NRI CreateContainer, the OCI gate), by its OCI
cgroupsPath: the path goes into `profile_pending` and the cgroup_mkdir probe (probes/cgroup.bpf.c, so the
`cgroup` probe family must be loaded) copies the slot into profile_of when runc makes the directory, before
a task can join it. The entrypoint's exec is thus judged too.

Limits, on purpose:
- A path is compared exactly (the kernel's bytes: text from the sensors is `unescape`d back). The trie's
  key holds NW_PREFIX_MAX (128) bytes with the NUL, and the probe cannot tell a path that fills it from
  a longer one cut to fit, so a path over PATH_LIMIT (126) bytes is never loaded (counted:
  `path_too_long`) and AN EXEC OF SUCH A PATH IN A PROTECTED CONTAINER IS KILLED, as any path not loaded
  is (a full map: `allow_full`). Fail-closed is the point of protecting mode.
- An empty list kills every exec of the covered cgroups.
- Maps: profile_of 16384 cgroups, profile_pending 4096 paths, allow_exec 65536 paths in all (about 128
  profiles of the 512 execs a profile may learn; a typical one holds tens).
Every map change happens here, under one lock (the container watcher's thread, the gates' and the
pipeline's worker call in); nothing reloads the probes.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterable

from agent.enrich.cgroups import cgroup2_root, cgroup_path_from_spec
from agent.sensors.abi import PREFIX_MAX, Reason
from agent.sensors.common import unescape

__all__ = ["PATH_LIMIT", "SLOT_MAX", "NullProfileKill", "ProfileKill", "build"]

WHY_PROFILE = Reason.PROFILE
SLOT_MAX = 0xFFFF  # slots 1..SLOT_MAX: the low 16 bits of the reported rule
PATH_LIMIT = PREFIX_MAX - 2  # the longest path loaded, in bytes: its NUL must leave the key's last byte free
CGROUP_PATH_MAX = 256  # NW_PATH_MAX: bytes of struct cgroup_path, the NUL included
_PENDING_SWEEP = 1024  # pending paths kept before old ones are looked at
_PENDING_TTL = 600.0  # seconds a create's path waits for its container's delete before it is dropped
_DROPS = ("path_too_long", "path_invalid", "allow_full", "cover_full", "pending_full", "cover_refused",
          "cover_unresolved", "pending_expired", "slots_full", "map_errors")


def build(probes, cgroup_root: str | None = None) -> ProfileKill | NullProfileKill:
    """The allow-lists over `probes`, or the null object when there is no exec probe to enforce them."""
    families = getattr(getattr(probes, "cfg", None), "families", ())
    if probes is None or "process" not in families:
        return NullProfileKill()
    return ProfileKill(probes, cgroup_root)


class ProfileKill:
    """Slots of protecting profiles and the cgroups they cover, kept in the probes' maps."""

    enabled = True

    def __init__(self, probes, cgroup_root: str | None = None):
        """cgroup_root: where the cgroup2 hierarchy is mounted (None: found in /proc/self/mountinfo).
        Until `start` (the probes loaded) every call only records; start writes it all."""
        self._probes = probes
        self._cgroup_root = cgroup_root
        self._slots: dict[str, int] = {}  # profile key -> slot
        self._names: dict[int, str] = {}  # slot -> key, kept after drop for late reports, until reused
        self._free: list[int] = []  # dropped slots, reused first
        self._next = 1
        self._want: dict[int, set[bytes]] = {}  # slot -> the paths it should allow
        self._have: dict[int, set[bytes]] = {}  # slot -> the paths in allow_exec
        self._refused: dict[int, set[bytes]] = {}  # slot -> wanted paths a full map refused (counted once)
        self._long: dict[int, set[bytes]] = {}  # slot -> paths too long to load (counted once)
        self.covered: dict[int, int] = {}  # cgroup id -> slot, as this side put them
        self.pending: dict[str, tuple[int, float]] = {}  # cgroup path -> (slot, when added)
        self._counts = dict.fromkeys(_DROPS, 0)
        self._live = False
        self._lock = threading.RLock()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Once the probes are loaded: write every slot, cover and pending path recorded so far."""
        with self._lock:
            try:
                for name in (b"allow_exec", b"profile_of", b"profile_pending"):
                    self._probes.table(name)
            except Exception:  # probes built from an older common.h: nothing to enforce with
                self._counts["map_errors"] += 1
                return
            self._live = True
            for slot in self._want:
                self._sync(slot)
            for cg, slot in list(self.covered.items()):
                self._put_cover(cg, slot)
            for rel, (slot, _) in list(self.pending.items()):
                self._put_pending(rel, slot)

    # -- allow-lists ----------------------------------------------------------------------------------

    def load(self, key: str, paths: Iterable[str | bytes]) -> int:
        """The slot of profile `key` (allocated on its first load, kept until drop) with its allow-list
        replaced by `paths` (exec paths as ExecEvent.filename writes them, or raw bytes): new entries
        first, then the stale ones go, so a path in both lists is never absent. -1 when all SLOT_MAX
        slots are taken (counted: slots_full); nothing is covered with it then."""
        want, invalid, long_ = set(), 0, set()
        for p in paths:
            raw = _raw(p)
            if raw is None:
                invalid += 1
            elif len(raw) > PATH_LIMIT:
                long_.add(raw)
            else:
                want.add(raw)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._alloc(key)
                if slot < 0:
                    return -1
            self._counts["path_invalid"] += invalid
            self._counts["path_too_long"] += len(long_ - self._long.get(slot, set()))
            self._long[slot] = long_
            self._want[slot] = want
            if self._live:
                self._sync(slot)
            return slot

    def slot_of(self, key: str) -> int:
        """The slot of a loaded profile, -1 when it has none."""
        return self._slots.get(key, -1)

    def keys(self) -> list[str]:
        """The keys of the profiles loaded."""
        with self._lock:
            return list(self._slots)

    def _loaded(self, slot: int) -> bool:
        return slot > 0 and self._slots.get(self._names.get(slot, ""), -1) == slot

    def drop(self, key: str) -> None:
        """Forget a profile: its allow-list, and every cgroup it covers (also those the kernel covered at
        mkdir, found in profile_of), so its slot can serve another profile."""
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is None:
                return
            self._want[slot] = set()
            if self._live:
                self._sync(slot)
            for d in (self._want, self._have, self._refused, self._long):
                d.pop(slot, None)
            for rel in [r for r, (s, _) in self.pending.items() if s == slot]:
                self.uncover_path(rel)
            for cg in [c for c, s in self.covered.items() if s == slot]:
                self.uncover(cg)
            if self._live:
                t = self._probes.table(b"profile_of")
                for cg in [k.value for k, v in t.items() if v.value == slot]:
                    self._del(t, ctypes.c_uint64(cg))
            self._free.append(slot)

    def _alloc(self, key: str) -> int:
        if self._free:
            slot = self._free.pop()
        elif self._next <= SLOT_MAX:
            slot, self._next = self._next, self._next + 1
        else:
            self._counts["slots_full"] += 1
            return -1
        self._slots[key] = slot
        self._names[slot] = key
        return slot

    def _sync(self, slot: int) -> None:
        """allow_exec brought to _want[slot]: adds, then deletes, then the adds a full map refused again."""
        t = self._probes.table(b"allow_exec")
        want, have = self._want.get(slot, set()), self._have.setdefault(slot, set())
        refused = self._refused.setdefault(slot, set())
        failed = [raw for raw in sorted(want - have) if not self._put_path(t, slot, raw, have)]
        for raw in have - want:
            self._del(t, _allow_key(t, slot, raw))
            have.discard(raw)
        for raw in failed:
            if not self._put_path(t, slot, raw, have) and raw not in refused:
                refused.add(raw)  # the exec of this path is killed while it stays out
                self._counts["allow_full"] += 1
        refused &= want

    def _put_path(self, t, slot: int, raw: bytes, have: set[bytes]) -> bool:
        try:
            t[_allow_key(t, slot, raw)] = ctypes.c_uint8(1)
        except Exception:  # OSError (E2BIG) from a full map (agent/sensors/bpfmap.py)
            return False
        have.add(raw)
        self._refused.get(slot, set()).discard(raw)
        return True

    # -- covering cgroups -----------------------------------------------------------------------------

    def cover(self, cgroup_id: int, slot: int) -> bool:
        """Put a container's cgroup under the allow-list of `slot` (from load). False when the slot is
        not a loaded profile's (counted: cover_refused) or profile_of is full (cover_full)."""
        with self._lock:
            if not self._loaded(slot):
                self._counts["cover_refused"] += 1
                return False
            self.covered[cgroup_id] = slot
            if self._live and not self._put_cover(cgroup_id, slot):
                del self.covered[cgroup_id]
                return False
            return True

    def cover_path(self, cgroups_path: str, slot: int) -> int:
        """Cover a container from its create on, by its OCI linux.cgroupsPath (cgroupfs "/ns/id" or
        systemd "slice:prefix:name"), as ExecEnforcer.cover_path does. Returns the cgroup id when the
        directory exists already (covered at once), else 0 (the cgroup_mkdir probe covers it when runc
        makes it). Unresolvable paths are counted (cover_unresolved); so is a slot that is not loaded."""
        rel = cgroup_path_from_spec(cgroups_path)
        with self._lock:
            if not rel or len(rel.encode()) >= CGROUP_PATH_MAX:
                self._counts["cover_unresolved"] += 1
                return 0
            if not self._loaded(slot):
                self._counts["cover_refused"] += 1
                return 0
            if len(self.pending) >= _PENDING_SWEEP:
                self._expire_pending()
            self.pending[rel] = (slot, time.monotonic())
            if self._live:
                self._put_pending(rel, slot)
        # After the pending entry, so that a mkdir between the two is caught by one or the other.
        try:
            cg = os.stat(os.path.join(self._root(), rel.lstrip("/"))).st_ino
        except OSError:
            return 0
        return cg if self.cover(cg, slot) else 0

    def uncover(self, cgroup_id: int) -> None:
        """The cgroup is no longer protected (its container is gone, or its profile left protecting).
        Also when only the kernel covered it (at mkdir, from a pending path)."""
        with self._lock:
            self.covered.pop(cgroup_id, None)
            if self._live:
                self._del(self._probes.table(b"profile_of"), ctypes.c_uint64(cgroup_id))

    def uncover_path(self, cgroups_path: str) -> None:
        """Undo cover_path (the same spec, or the path relative to the cgroup2 root): a directory made
        under this path later is not covered. The cgroup it covered already: `uncover` its id."""
        rel = cgroup_path_from_spec(cgroups_path)
        with self._lock:
            if self.pending.pop(rel, None) is not None and self._live:
                t = self._probes.table(b"profile_pending")
                self._del(t, _cgroup_path_key(t, rel.encode()))

    def _put_cover(self, cgroup_id: int, slot: int) -> bool:
        try:
            self._probes.table(b"profile_of")[ctypes.c_uint64(cgroup_id)] = ctypes.c_uint32(slot)
        except Exception:  # full: the container runs unprotected, which the count says
            self._counts["cover_full"] += 1
            return False
        return True

    def _put_pending(self, rel: str, slot: int) -> None:
        t = self._probes.table(b"profile_pending")
        try:
            t[_cgroup_path_key(t, rel.encode())] = ctypes.c_uint32(slot)
        except Exception:  # full: the container is covered once the container table knows it
            self._counts["pending_full"] += 1

    def _expire_pending(self) -> None:
        """Paths of creates that never got their delete: dropped after _PENDING_TTL, so the map never fills
        with them (a cgroup the kernel covered from one stays covered: its id is in profile_of)."""
        old = time.monotonic() - _PENDING_TTL
        for rel in [r for r, (_, t) in self.pending.items() if t < old]:
            self.uncover_path(rel)
            self._counts["pending_expired"] += 1

    def _del(self, t, key) -> None:
        try:
            del t[key]
        except KeyError:
            pass
        except Exception:  # the map's other errors on delete (OSError): counted, the map keeps the entry
            self._counts["map_errors"] += 1

    def _root(self) -> str:
        if not self._cgroup_root:
            self._cgroup_root = cgroup2_root()
        return self._cgroup_root

    # -- reports --------------------------------------------------------------------------------------

    def describe(self, rule: int, cgroup_id: int = 0) -> tuple[str, str]:
        """(category, text) of a rule id the probe reported; the signature of the pipeline's describe_rule."""
        if rule >> 16 != WHY_PROFILE:
            return "deny_exec", f"rule {rule & 0xFFFF}"
        slot = rule & 0xFFFF
        key = self._names.get(slot)
        return "profile", f"exec not in the learned profile of {key if key is not None else f'slot {slot}'}"

    def counters(self) -> dict[str, int]:
        """Gauges (slots, paths loaded, cgroups covered, paths pending) and every count of drops()."""
        with self._lock:
            return {"slots": len(self._slots), "paths": sum(len(h) for h in self._have.values()),
                    "covered": len(self.covered), "pending": len(self.pending), **self._counts}

    def drops(self) -> dict[str, int]:
        """What was refused or lost, each from 0: paths never loaded (their execs are killed), covers and
        pending paths the maps had no room for (those containers run unprotected), and map errors."""
        with self._lock:
            return dict(self._counts)


class NullProfileKill:
    """No exec probe: nothing is loaded or covered; every call is a no-op with the same signature."""

    enabled = False

    def __init__(self):
        self.covered: dict[int, int] = {}
        self.pending: dict[str, tuple[int, float]] = {}

    def start(self) -> None:
        pass

    def load(self, key: str, paths: Iterable[str | bytes]) -> int:
        return -1

    def slot_of(self, key: str) -> int:
        return -1

    def keys(self) -> list[str]:
        return []

    def drop(self, key: str) -> None:
        pass

    def cover(self, cgroup_id: int, slot: int) -> bool:
        return False

    def cover_path(self, cgroups_path: str, slot: int) -> int:
        return 0

    def uncover(self, cgroup_id: int) -> None:
        pass

    def uncover_path(self, cgroups_path: str) -> None:
        pass

    def describe(self, rule: int, cgroup_id: int = 0) -> tuple[str, str]:
        return "profile", f"exec not in the learned profile of slot {rule & 0xFFFF}"

    def counters(self) -> dict[str, int]:
        return {"slots": 0, "paths": 0, "covered": 0, "pending": 0, **dict.fromkeys(_DROPS, 0)}

    def drops(self) -> dict[str, int]:
        return dict.fromkeys(_DROPS, 0)


def _raw(p: str | bytes) -> bytes | None:
    """The kernel's bytes of an exec path; None for what no exec can have given (empty, a NUL inside)."""
    raw = p if isinstance(p, bytes) else unescape(p) if isinstance(p, str) else None
    if not raw or b"\0" in raw:
        return None
    return raw


def _allow_key(table, slot: int, raw: bytes):
    k = table.Key()
    k.prefixlen = 64 + (len(raw) + 1) * 8  # the NUL is part of the key: an exact path matches only itself
    k.cgroup_id = (ctypes.c_ubyte * 8)(*slot.to_bytes(8, "little"))
    k.path = raw  # ctypes writes the NUL after it and pads the rest with NULs
    return k


def _cgroup_path_key(table, raw: bytes):
    k = table.Key()
    k.path = raw
    return k
