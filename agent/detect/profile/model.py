"""A workload's behaviour profile: what its containers did while it learned, as compact tables.

Each kind of item (KINDS) is a dict of string keys (the forms below) to [first, last, count] lists:
first and last are wall-clock seconds, count the times seen. Lists, not objects: a profile of
typical size (40 execs, 60 edges, 20 peers, 30 write directories ...) stays well under 64 KiB
(tests/unit/test_profile_model.py measures it), and the document form is the same lists.

Item keys (all text, the same in the agent, the collector and the CLI):
  exec    the path given to execve, as the kernel compares it (the kernel allow-list holds these)
  edge    "<parent exe>><child exe>" ("?" for an unknown parent)
  user    "<uid>" each exec ran as
  peer    "<transport>/<address>:<port>" of an outbound connect; over PEER_GROUP addresses of one /24
          (IPv4) or /64 (IPv6) for one transport and port collapse into "<transport>/<cidr>:<port>"
  listen  "<transport>/<port>"
  write   the directory a file was written in; over WRITE_GROUP learned subdirectories of one directory
          collapse into "<dir>/**", which holds every directory below dir

Deviations are items seen after learning (already alerted); they never become learned items.
"""

from __future__ import annotations

import ipaddress
import math

from agent.detect.profile.key import Workload

FORMAT = 1
KINDS = ("exec", "edge", "user", "peer", "listen", "write")
MODES = ("learning", "monitoring", "protecting")
LOCKERS = ("", "auto", "user", "collector")
PEER_GROUP = 16  # addresses of one /24 or /64 (per transport and port) before they become one CIDR item
WRITE_GROUP = 8  # learned subdirectories of one directory before they become "<dir>/**"
GLOB = "/**"
MAX_KEY = 4096  # an item key longer than this is refused (a path is at most PATH_MAX)


def _num(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what} is not a finite number")
    return float(v)


def _entry(v, what: str) -> list:
    if not isinstance(v, list) or len(v) != 3:
        raise ValueError(f"{what} is not [first, last, count]")
    first, last = _num(v[0], what + " first"), _num(v[1], what + " last")
    count = v[2]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{what} count is not a non-negative integer")
    return [first, last, count]


def _table(d, what: str, cap: int | None) -> tuple[dict[str, dict[str, list]], dict[str, int]]:
    """A document's items/deviations object -> tables (unknown kinds ignored: a newer agent's), and the
    entries over `cap` per kind (dropped, the newest kept)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} is not an object")
    out: dict[str, dict[str, list]] = {k: {} for k in KINDS}
    over: dict[str, int] = {}
    for kind, items in d.items():
        if kind not in out:
            continue
        if not isinstance(items, dict):
            raise ValueError(f"{what}.{kind} is not an object")
        tab = out[kind]
        for key, v in items.items():
            if not isinstance(key, str) or not key or len(key) > MAX_KEY:
                raise ValueError(f"{what}.{kind} has a key that is not a short non-empty string")
            tab[key] = _entry(v, f"{what}.{kind}[{key[:60]!r}]")
        if cap is not None and len(tab) > cap:
            keep = sorted(tab.items(), key=lambda kv: kv[1][1], reverse=True)[:cap]
            over[kind] = len(tab) - cap
            out[kind] = dict(keep)
    return out, over


def parse_peer(item: str) -> tuple[str, str, int] | None:
    """"tcp/10.0.0.5:443" -> ("tcp", "10.0.0.5", 443); a CIDR item gives its network text; None if malformed."""
    transport, sep, rest = item.partition("/")
    addr, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not port.isdigit():
        return None
    return transport, addr, int(port)


def peer_group(transport: str, address: str, port: int) -> str | None:
    """The CIDR item an address would collapse into ("tcp/10.0.0.0/24:443"), None when not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    net = ipaddress.ip_network((ip, 24 if ip.version == 4 else 64), strict=False)
    return f"{transport}/{net}:{port}"


def write_parents(d: str):
    """The directories above d, nearest first, without the root ("/a/b/c" -> "/a/b", "/a")."""
    i = d.rfind("/")
    while i > 0:
        d = d[:i]
        yield d
        i = d.rfind("/")


class Profile:
    """One workload's profile. Mutated only by the engine (under its lock) and by apply_request."""

    __slots__ = ("workload", "key", "mode", "locked_by", "created", "run_s", "quiet_run_s", "stable_since",
                 "revision", "mode_ts", "items", "overflow", "deviations", "_globs", "_cidrs")

    def __init__(self, workload: Workload, now: float, mode: str = "learning"):
        self.workload = workload
        self.key = workload.key
        self.mode = mode
        self.locked_by = ""
        self.created = now
        self.run_s = 0.0
        self.quiet_run_s = 0.0
        self.stable_since = now
        self.revision = 0
        # A mode no one chose yet is older than any choice: a node's fresh learning profile, pushed before it
        # heard of a lock made elsewhere, must not win the collector's merge (newest mode_ts) and unlock it
        self.mode_ts = 0.0 if mode == "learning" else now
        self.items: dict[str, dict[str, list]] = {k: {} for k in KINDS}
        self.overflow: dict[str, int] = {}
        self.deviations: dict[str, dict[str, list]] = {k: {} for k in KINDS}
        # Whether any compressed items exist: the slower matching (a CIDR per peer, the parents of a
        # directory) runs only for a profile that has some, and only after the exact lookup missed.
        self._globs = False
        self._cidrs = False

    # -- matching (the event path: one dict lookup for what is known) -------------------------------------

    def known(self, kind: str, item: str) -> list | None:
        """The learned entry that covers item (exact, or a compressed item holding it), else None."""
        tab = self.items[kind]
        ent = tab.get(item)
        if ent is not None:
            return ent
        if kind == "write" and self._globs:
            for parent in write_parents(item):  # "d/**" holds every directory below d (not d itself)
                ent = tab.get(parent + GLOB)
                if ent is not None:
                    return ent
            return None
        if kind == "peer" and self._cidrs:
            p = parse_peer(item)
            if p is not None:
                g = peer_group(*p)
                if g is not None:
                    return tab.get(g)
        return None

    # -- learning -------------------------------------------------------------------------------------

    def learn(self, kind: str, item: str, ts: float, cap: int) -> bool:
        """Add a new item (the caller checked known()); compresses its group when it grows too big.
        False when the kind is at its cap: counted in overflow, not added."""
        tab = self.items[kind]
        if len(tab) >= cap:
            self.overflow[kind] = self.overflow.get(kind, 0) + 1
            return False
        tab[item] = [ts, ts, 1]
        if kind == "peer":
            self._compress_peer(tab, item)
        elif kind == "write":
            self._compress_write(tab, item)
        self.deviations[kind].pop(item, None)
        self.revision += 1
        self.quiet_run_s = 0.0
        self.stable_since = ts
        return True

    def _compress_peer(self, tab: dict, item: str) -> None:
        p = parse_peer(item)
        g = peer_group(*p) if p is not None else None
        if g is None:
            return
        members = [k for k in tab if k != g and (q := parse_peer(k)) is not None and q[0] == p[0]
                   and q[2] == p[2] and peer_group(*q) == g]
        if len(members) > PEER_GROUP:
            tab[g] = _fold([tab.pop(k) for k in members] + ([tab[g]] if g in tab else []))
            self._cidrs = True

    def _compress_write(self, tab: dict, item: str) -> None:
        for parent in write_parents(item):
            prefix = parent + "/"
            members = [k for k in tab if k.startswith(prefix)]
            # subdirectories: the distinct names right below parent that hold learned directories
            if len({k[len(prefix):].partition("/")[0] for k in members}) > WRITE_GROUP:
                g = parent + GLOB
                tab[g] = _fold([tab.pop(k) for k in members] + ([tab[g]] if g in tab else []))
                self._globs = True
                return

    def _rescan(self) -> None:
        self._globs = any(k.endswith(GLOB) for k in self.items["write"])
        self._cidrs = any("/" in k.partition("/")[2] for k in self.items["peer"])

    # -- views ----------------------------------------------------------------------------------------

    def counts(self) -> tuple[tuple[str, int], ...]:
        return tuple((k, len(self.items[k])) for k in KINDS)

    def total(self) -> int:
        return sum(len(t) for t in self.items.values())

    def exec_paths(self) -> list[str]:
        return sorted(self.items["exec"])

    # -- documents ------------------------------------------------------------------------------------

    def to_doc(self) -> dict:
        return {
            "format": FORMAT, "key": self.key, "workload": self.workload.to_dict(), "mode": self.mode,
            "locked_by": self.locked_by, "created": self.created, "run_s": self.run_s,
            "quiet_run_s": self.quiet_run_s, "stable_since": self.stable_since, "revision": self.revision,
            "mode_ts": self.mode_ts,
            "items": {k: {i: list(e) for i, e in t.items()} for k, t in self.items.items() if t},
            "overflow": dict(self.overflow),
            "deviations": {k: {i: list(e) for i, e in t.items()} for k, t in self.deviations.items() if t},
        }

    @classmethod
    def from_doc(cls, d, max_items: int | None = None, max_deviations: int | None = None) -> Profile:
        """A profile from its document; ValueError with one line saying what is wrong. Entries over the caps
        are dropped (the most recently seen kept) and counted in overflow."""
        if not isinstance(d, dict):
            raise ValueError("profile document is not an object")
        if d.get("format") != FORMAT:
            raise ValueError(f"profile format {d.get('format')!r} is not {FORMAT}")
        w = Workload.from_dict(d.get("workload"))
        if d.get("key") != w.key:
            raise ValueError(f"profile key {str(d.get('key'))[:120]!r} does not match its workload ({w.key[:120]})")
        mode = d.get("mode")
        if mode not in MODES:
            raise ValueError(f"profile mode {str(mode)[:40]!r} is not one of {', '.join(MODES)}")
        locked_by = d.get("locked_by", "")
        if locked_by not in LOCKERS:
            raise ValueError(f"profile locked_by {str(locked_by)[:40]!r} is not one of {LOCKERS}")
        p = cls(w, _num(d.get("created"), "created"), mode)
        p.locked_by = locked_by
        p.run_s = max(0.0, _num(d.get("run_s", 0.0), "run_s"))
        p.quiet_run_s = max(0.0, _num(d.get("quiet_run_s", 0.0), "quiet_run_s"))
        p.stable_since = _num(d.get("stable_since", p.created), "stable_since")
        p.mode_ts = _num(d.get("mode_ts", 0.0), "mode_ts")
        rev = d.get("revision", 0)
        if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
            raise ValueError("revision is not a non-negative integer")
        p.revision = rev
        p.items, over = _table(d.get("items", {}), "items", max_items)
        p.deviations, _ = _table(d.get("deviations", {}), "deviations", max_deviations)
        ov = d.get("overflow", {})
        if not isinstance(ov, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ov.values()):
            raise ValueError("overflow is not an object of counts")
        p.overflow = {k: v for k, v in ov.items() if k in KINDS and v}
        for k, n in over.items():
            p.overflow[k] = p.overflow.get(k, 0) + n
        for kind, tab in p.deviations.items():  # a learned item is no deviation
            for item in [i for i in tab if i in p.items[kind]]:
                del tab[item]
        p._rescan()
        return p

    # -- merging (the collector's rule, on objects) ---------------------------------------------------

    def merge(self, other: Profile, max_items: int | None = None, max_deviations: int | None = None) -> bool:
        """Union other's items into ours (first = min, last = max, count = max); mode, locked_by and mode_ts
        from whichever changed mode last. True when anything changed (revision then +1)."""
        if other.key != self.key:
            raise ValueError(f"cannot merge profile {other.key} into {self.key}")
        changed = False
        for kind in KINDS:
            changed |= _union(self.items[kind], other.items[kind], max_items, self.overflow, kind)
            changed |= _union(self.deviations[kind], other.deviations[kind], max_deviations, None, kind)
            for item in [i for i in self.deviations[kind] if i in self.items[kind]]:
                del self.deviations[kind][item]
        for kind, n in other.overflow.items():
            if n > self.overflow.get(kind, 0):
                self.overflow[kind] = n
                changed = True
        if other.mode_ts > self.mode_ts:
            if (other.mode, other.locked_by) != (self.mode, self.locked_by):
                changed = True
            self.mode, self.locked_by, self.mode_ts = other.mode, other.locked_by, other.mode_ts
        if other.run_s > self.run_s:
            self.run_s = other.run_s
            changed = True
        if other.created < self.created:
            self.created = other.created
        self.stable_since = max(self.stable_since, other.stable_since)
        if changed:
            self.revision = max(self.revision, other.revision) + 1
            self._rescan()
        return changed


def _fold(entries: list[list]) -> list:
    return [min(e[0] for e in entries), max(e[1] for e in entries), sum(e[2] for e in entries)]


def _union(mine: dict, theirs: dict, cap: int | None, overflow: dict | None, kind: str) -> bool:
    changed = False
    for item, e in theirs.items():
        m = mine.get(item)
        if m is None:
            if cap is not None and len(mine) >= cap:
                if overflow is not None:
                    overflow[kind] = overflow.get(kind, 0) + 1
                continue
            mine[item] = list(e)
            changed = True
        elif e[0] < m[0] or e[1] > m[1] or e[2] > m[2]:
            m[0], m[1], m[2] = min(m[0], e[0]), max(m[1], e[1]), max(m[2], e[2])
            changed = True
    return changed
