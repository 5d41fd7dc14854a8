"""Loads the enabled probe families as one bcc program and exposes its maps.

One compile for all families (probes/common.h explains why they share one ring buffer), done by a
short-lived child (agent/sensors/childload.py) so that bcc and LLVM never stay in the agent's memory;
the maps come back as fds, used through agent/sensors/bpfmap.py.
Everything that changes a probe goes in as -D flags after validation: BTF offsets, the ring
buffer size, which optional syscalls exist. Filters live in maps and change at run time.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os

from agent.config import ProbeConfig
from agent.sensors import REGISTRY, childload
from agent.sensors.abi import WATCH_READ, WATCH_WRITE, Cfg, Fold
from agent.sensors.bpfmap import BpfMap, LayoutError
from agent.sensors.common import CFG_FILE_READONLY, CFG_TARGET_TGID, PREFIX_MAX, Sensor
from agent.sensors.ringbuf import RingReader

_PERF_EVENT_IOC_DISABLE = 0x2401  # _IO('$', 1), include/uapi/linux/perf_event.h
FOLD_WINDOW_MAX = 60.0  # seconds: a longer window would hide how often a path or peer comes back


class LoadError(Exception):
    """The probes could not be compiled, loaded or attached; the message says why, in one line."""


def validate(cfg: ProbeConfig) -> None:
    """LoadError naming the first setting the probes cannot take (the Config tree holds plain data)."""
    unknown = [f for f in cfg.families if f not in REGISTRY]
    if unknown:
        raise LoadError(f"unknown probe families {unknown}; known: {sorted(REGISTRY)}")
    p = cfg.ringbuf_pages
    if p < 1 or p & (p - 1):
        raise LoadError(f"ringbuf_pages must be a power of two, not {p}")
    if not 0 <= cfg.fold_window <= FOLD_WINDOW_MAX:
        raise LoadError(f"probes.fold_window must be 0 (off) to {FOLD_WINDOW_MAX:g} seconds, not {cfg.fold_window}")
    for prefix in cfg.ignore_prefixes:
        _check_prefix(prefix)
    _watch_entries(cfg.watch_reads)
    _watch_entries(cfg.watch_writes, "probes.watch_writes", patterns=False)
    _watch_entries(cfg.watch_devices, "probes.watch_devices", patterns=False)


# Watch-list entries with a `*` component that the file probe knows (probes/file.bpf.c file_watched),
# each switched on by its nw_config slot: an LPM trie matches prefixes only.
WATCH_PATTERNS = {"/proc/*/environ": Cfg.WATCH_ENVIRON, "/home/*/.ssh/": Cfg.WATCH_HOME_SSH}


def _watch_entries(entries, key: str = "probes.watch_reads", patterns: bool = True) -> tuple[set[bytes], set[Cfg]]:
    """(prefixes for the trie, pattern slots to switch on); LoadError naming the first bad entry."""
    prefixes, slots = set(), set()
    for entry in entries:
        if "*" in entry:
            if not patterns or entry not in WATCH_PATTERNS:
                where = f"only in {sorted(WATCH_PATTERNS)}" if patterns else "nowhere here (prefixes only)"
                raise LoadError(f"{key}: {entry!r}: a `*` is understood {where}")
            slots.add(WATCH_PATTERNS[entry])
            continue
        if not entry.startswith("/"):
            raise LoadError(f"{key}: {entry!r} is not an absolute path (the kernel matches those)")
        if not 0 < len(entry.encode()) <= PREFIX_MAX:
            raise LoadError(f"{key}: {entry!r} must be 1..{PREFIX_MAX} bytes")
        prefixes.add(entry.encode())
    return prefixes, slots


def _check_prefix(prefix: str) -> bytes:
    raw = prefix.encode()
    if not raw or len(raw) > PREFIX_MAX:
        raise LoadError(f"ignored path prefix must be 1..{PREFIX_MAX} bytes: {prefix!r}")
    return raw


class ProbeSet:
    """The compiled, attached probes. start() loads; the setters change filters without reloading."""

    def __init__(self, cfg: ProbeConfig):
        validate(cfg)
        self.cfg = cfg
        self.sensors: list[Sensor] = [REGISTRY[f] for f in cfg.families]
        self.decoders = {op: dec for s in self.sensors for op, dec in s.decoders.items()}
        self._maps: dict[bytes, BpfMap] = {}  # name -> map, from the loader child
        self._progs: list[int] = []  # program fds (the attachments hold them too; closed at stop)
        self._links: list[tuple[str, int]] = []  # ("perf_event" | "bpf_link", fd): closing one detaches
        self._prefixes: set[bytes] = set()
        self._watched: dict[bytes, int] = {}  # prefix -> WATCH_READ | WATCH_WRITE, as in the trie
        self._watch_writes: tuple[str, ...] = tuple(cfg.watch_writes)
        self._close_prefixes: set[bytes] = set()  # as in the close_prefix trie
        self._final_drops: dict[str, int] = {}
        self.tracepoints_missing: list[str] = []

    # -- loading -----------------------------------------------------------------------------

    def start(self) -> None:
        """Compile, load and attach in a short-lived child (agent/sensors/childload.py: bcc and LLVM never
        enter this process), take over its maps and attachments, then set the filters."""
        # Absolute paths: the child runs in / (it must not keep a directory of ours busy).
        request = {"mode": "probes", "families": list(self.cfg.families),
                   "probes_dir": os.path.abspath(self.cfg.probes_dir), "ringbuf_pages": self.cfg.ringbuf_pages,
                   "cache_dir": os.path.abspath(self.cfg.cache_dir),
                   "agent_tgid": os.getpid()}
        try:
            reply, fds = childload.run(request)
        except childload.ChildError as e:
            raise LoadError(str(e)) from None
        try:
            self._adopt(reply, fds)
        except (LayoutError, KeyError, TypeError, ValueError) as e:
            self._close_all()
            raise LoadError(f"the probe loader's manifest: {e}") from None
        self.tracepoints_missing = list(reply.get("missing", ()))
        # The child put itself in ignore_tgid before the first attach; it is gone now, and its pid may be reused.
        child = int(reply.get("child_tgid", 0))
        if child and child not in {os.getpid(), *self.cfg.ignore_tgids}:
            self.ignore_tgid(child, ignore=False)
        self.set_file_readonly(self.cfg.file_readonly)
        self.set_fold_window(self.cfg.fold_window)
        self.set_ignored_prefixes(self.cfg.ignore_prefixes)
        if "file" in self.cfg.families:
            self.set_watched_reads(self.cfg.watch_reads)
        for tgid in {os.getpid(), *self.cfg.ignore_tgids}:
            self.ignore_tgid(tgid)
        # Last: the child attached with a target no process has, so events flow only with every filter set.
        self.set_target_tgid(self.cfg.target_tgid)

    def _adopt(self, reply: dict, fds: list[int]) -> None:
        """The fds in the manifest's order: maps, then programs, then attachments. On a bad manifest
        every fd not yet owned here is closed (start's _close_all closes the owned ones)."""
        maps, progs, links = reply["maps"], reply["progs"], reply["links"]
        if len(maps) + len(progs) + len(links) != len(fds):
            for fd in fds:
                os.close(fd)
            raise ValueError(f"{len(fds)} fds for {len(maps)} maps, {len(progs)} programs, {len(links)} links")
        owned = 0
        try:
            for m in maps:
                bm = BpfMap(fds[owned], m["name"], m["type"], m["key_size"], m["value_size"], m["max_entries"],
                            m["key"], m["leaf"])
                self._maps[m["name"].encode()] = bm
                owned += 1
        except BaseException:
            for fd in fds[owned:]:
                os.close(fd)
            raise
        self._progs = fds[owned:owned + len(progs)]
        self._links = list(zip(links, fds[owned + len(progs):], strict=True))

    def _detach(self) -> None:
        for kind, fd in self._links:
            if kind == "perf_event":
                # As bcc's bpf_close_perf_event_fd: disable first, so the probe stops now even if
                # another process still holds the event.
                with contextlib.suppress(OSError):
                    fcntl.ioctl(fd, _PERF_EVENT_IOC_DISABLE, 0)
            os.close(fd)
        self._links = []

    def _close_all(self) -> None:
        self._detach()
        for fd in self._progs:
            os.close(fd)
        self._progs = []
        for m in self._maps.values():
            m.close()
        self._maps = {}

    @property
    def loaded(self) -> bool:
        return bool(self._maps)

    def reader(self) -> RingReader:
        return RingReader(self.table(b"events").map_fd, self.cfg.ringbuf_pages * os.sysconf("SC_PAGE_SIZE"))

    def stop(self) -> None:
        """Detach every probe, then read the final drop counts, then free the maps."""
        if not self._maps:
            return
        self._detach()
        self._final_drops = self.kernel_drops()
        self._close_all()

    # -- filters, changed at run time --------------------------------------------------------

    def set_cfg(self, slot: int, value: int) -> None:
        """Set one slot of the nw_config map (enum nw_cfg)."""
        self.table(b"nw_config")[ctypes.c_int(slot)] = ctypes.c_uint64(value)

    def table(self, name: bytes) -> BpfMap:
        """A map of the loaded program, for the stages that keep their own (agent/enforce); KeyError
        when the program has none of that name or is not loaded."""
        return self._maps[name]

    def set_target_tgid(self, tgid: int) -> None:
        self.set_cfg(CFG_TARGET_TGID, tgid)

    def set_file_readonly(self, on: bool) -> None:
        self.set_cfg(CFG_FILE_READONLY, int(on))

    def set_fold_window(self, seconds: float) -> None:
        """Repeats of an open or a connect within `seconds` of the one reported are counted, not sent; 0 = off."""
        self.set_cfg(Cfg.FOLD_NS, int(seconds * 1e9))

    def ignore_tgid(self, tgid: int, ignore: bool = True) -> None:
        table = self.table(b"ignore_tgid")
        key = ctypes.c_uint32(tgid)
        if ignore:
            table[key] = ctypes.c_uint8(1)
        elif key in table:
            del table[key]

    def set_ignored_prefixes(self, prefixes) -> None:
        """Replace the ignored path prefixes; paths under them are dropped in the kernel."""
        wanted = {_check_prefix(p) for p in prefixes}
        table = self.table(b"ignore_prefix")
        for raw in self._prefixes - wanted:
            del table[self._prefix_key(table, raw)]
        for raw in wanted - self._prefixes:
            table[self._prefix_key(table, raw)] = ctypes.c_uint8(1)
        self._prefixes = wanted

    def set_watched_reads(self, entries, writes=None) -> None:
        """Replace the watch lists (probes/file.bpf.c): read-only opens of `entries` are sent, and writing
        opens of `writes` (default: the ones in force) even below an ignored prefix."""
        reads, slots = _watch_entries(entries)
        if writes is not None:
            self._watch_writes = tuple(writes)
        write_set, _ = _watch_entries(self._watch_writes, "probes.watch_writes", patterns=False)
        # Device nodes (probes.watch_devices) are on both lists whatever the others say: the device guard
        # needs every open of /dev/nvidia* and /dev/xpu* below the ignored /dev/ (probes/file.bpf.c).
        devices, _ = _watch_entries(self.cfg.watch_devices, "probes.watch_devices", patterns=False)
        reads, write_set = reads | devices, write_set | devices
        wanted = {raw: (WATCH_READ if raw in reads else 0) | (WATCH_WRITE if raw in write_set else 0)
                  for raw in reads | write_set}
        table = self.table(b"watch_prefix")
        for raw in self._watched.keys() - wanted.keys():
            del table[self._prefix_key(table, raw)]
        for raw, how in wanted.items():
            if self._watched.get(raw) != how:
                table[self._prefix_key(table, raw)] = ctypes.c_uint8(how)
        self._watched = wanted
        # The read-only pre-filter needs the heads of read-watched prefixes only: a write is never pre-filtered.
        heads = self.table(b"watch_head")
        heads.clear()
        for raw in reads:
            if len(raw) >= 8:
                heads[ctypes.c_uint64(int.from_bytes(raw[:8], "little"))] = ctypes.c_uint8(1)
        for slot in WATCH_PATTERNS.values():
            self.set_cfg(slot, int(slot in slots))
        # A prefix shorter than 8 bytes has no head to look up: every read-only open then goes to the trie.
        self.set_cfg(Cfg.WATCH_SHORT, int(any(len(raw) < 8 for raw in reads)))

    def set_close_prefixes(self, prefixes) -> None:
        """Replace the close prefixes (probes/file.bpf.c): a file opened for writing below one sends a
        file.close when that fd is closed. Absolute path prefixes ("/var/www/"); LoadError on a bad one."""
        wanted, _ = _watch_entries(prefixes, "webshell.web_roots", patterns=False)
        if "file" not in self.cfg.families or not self._maps:
            return
        table = self.table(b"close_prefix")
        for raw in self._close_prefixes - wanted:
            del table[self._prefix_key(table, raw)]
        for raw in wanted - self._close_prefixes:
            table[self._prefix_key(table, raw)] = ctypes.c_uint8(1)
        self._close_prefixes = wanted

    @staticmethod
    def _prefix_key(table, raw: bytes):
        key = table.Key()
        key.prefixlen = len(raw) * 8
        key.path = raw
        return key

    # -- accounting --------------------------------------------------------------------------

    def kernel_folded(self) -> dict[str, int]:
        """Events the kernel folded (a repeat not sent because the first one was: UDP sends to the same
        destination within a second, probes/net.bpf.c; opens of the same path and connects to the same peer
        within probes.fold_window, probes/common.h), summed over CPUs. The destination is never lost,
        but each one not sent is counted, as folded alerts are. Not "net.sendto_folded": the pipeline
        reports it as kernel.<name> beside kernel.net (the net family's ring-buffer drops), and a stage
        that is both a count and a parent cannot be mapped by Elasticsearch (issue 15)."""
        if not self._maps:
            return {}
        out = {}
        folded = self.table(b"fold_counts")  # opens and connects repeated within probes.fold_window (common.h)
        if "file" in self.cfg.families:
            out["file_open_folded"] = int(folded.sum(ctypes.c_int(Fold.FILE_OPEN)).value)
        if "net" in self.cfg.families:
            out["net_connect_folded"] = int(folded.sum(ctypes.c_int(Fold.NET_CONNECT)).value)
            out["net_sendto_folded"] = int(self.table(b"sendto_folded").sum(ctypes.c_int(0)).value)
        return out

    def kernel_drops(self) -> dict[str, int]:
        """Failed ring-buffer reservations so far, per family (summed over CPUs)."""
        if not self._maps:
            return dict(self._final_drops)
        table = self.table(b"drops")
        return {s.name: int(table.sum(ctypes.c_int(s.probe)).value) for s in self.sensors}
