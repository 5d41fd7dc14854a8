"""Loads the enabled probe families as one bcc program and exposes its maps.

One compile for all families (probes/common.h explains why they share one ring buffer).
Everything that changes a probe goes in as -D flags after validation: BTF offsets, the ring
buffer size, which optional syscalls exist. Filters live in maps and change at run time.
"""

from __future__ import annotations

import ctypes
import os

from agent.config import ProbeConfig
from agent.kernel import headers
from agent.kernel.btf import BTF
from agent.kernel.offsets import cflags as offset_cflags
from agent.kernel.offsets import kernel_offsets, optional_offsets
from agent.sensors import REGISTRY
from agent.sensors.abi import WATCH_READ, WATCH_WRITE, Cfg
from agent.sensors.common import CFG_FILE_READONLY, CFG_TARGET_TGID, PREFIX_MAX, Sensor
from agent.sensors.ringbuf import RingReader


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
        self._bpf = None
        self._prefixes: set[bytes] = set()
        self._watched: dict[bytes, int] = {}  # prefix -> WATCH_READ | WATCH_WRITE, as in the trie
        self._watch_writes: tuple[str, ...] = tuple(cfg.watch_writes)
        self._close_prefixes: set[bytes] = set()  # as in the close_prefix trie
        self._final_drops: dict[str, int] = {}
        self.tracepoints_missing: list[str] = []

    # -- loading -----------------------------------------------------------------------------

    def _program(self) -> str:
        # common.h and the family files are pasted in, not #included: bcc rewrites map calls
        # (map.lookup(), ringbuf_reserve()) and makes TRACEPOINT_PROBE argument structs only in
        # the main file. #line keeps the compiler's messages pointing at the real file.
        parts = []
        for source in ["common.h"] + [s.source for s in self.sensors]:
            path = os.path.join(self.cfg.probes_dir, source)
            with open(path) as f:
                parts.append(f'#line 1 "{path}"\n{f.read()}\n')
        return "".join(parts)

    def _cflags(self, tracefs: str) -> list[str]:
        try:
            btf = BTF.load()
            offsets = kernel_offsets(btf) | optional_offsets(btf)
        except Exception as e:
            raise LoadError(f"kernel BTF: {e}") from None
        flags = [f"-I{self.cfg.probes_dir}", f"-DNW_RINGBUF_PAGES={self.cfg.ringbuf_pages}"]
        flags.append(f"-DNW_AGENT_TGID={os.getpid()}")  # its own loads, before ignore_tgid exists (system.bpf.c)
        flags += offset_cflags(offsets)
        for s in self.sensors:
            for cat, name in s.optional_tracepoints:
                if headers.tracepoint_exists(tracefs, cat, f"sys_enter_{name}") and headers.tracepoint_exists(
                    tracefs, cat, f"sys_exit_{name}"
                ):
                    flags.append(f"-DNW_HAVE_{name}")
                else:
                    self.tracepoints_missing.append(f"{cat}:{name}")
        return flags

    def start(self) -> None:
        try:
            tracefs = headers.ensure_tracefs()
            src = headers.kernel_source(self.cfg.cache_dir)
        except headers.HeadersError as e:
            raise LoadError(str(e)) from None
        if src:
            os.environ["BCC_KERNEL_SOURCE"] = src
        flags = self._cflags(tracefs)
        try:
            from bcc import BPF
        except ImportError:
            raise LoadError("the bcc Python module is missing (apt-get install python3-bpfcc)") from None
        try:
            self._bpf = BPF(text=self._program().encode(), cflags=flags)
        except Exception as e:  # bcc raises bare Exception with the compiler's or verifier's text
            raise LoadError(f"loading probes failed: {str(e).strip().splitlines()[-1:]}") from None
        self._attach_by_name(tracefs)
        self.set_target_tgid(self.cfg.target_tgid)
        self.set_file_readonly(self.cfg.file_readonly)
        self.set_ignored_prefixes(self.cfg.ignore_prefixes)
        if "file" in self.cfg.families:
            self.set_watched_reads(self.cfg.watch_reads)
        for tgid in {os.getpid(), *self.cfg.ignore_tgids}:
            self.ignore_tgid(tgid)

    def _attach_by_name(self, tracefs: str) -> None:
        for s in self.sensors:
            for cat, event, fn in s.attach:
                if not headers.tracepoint_exists(tracefs, cat, event):
                    self.tracepoints_missing.append(f"{cat}:{event}")
                    continue
                try:
                    self._bpf.attach_tracepoint(tp=f"{cat}:{event}".encode(), fn_name=fn.encode())
                except Exception as e:  # bcc: bare Exception with the verifier's or perf's text
                    raise LoadError(f"attaching {fn} to {cat}:{event} failed: {str(e).strip()[-300:]}") from None

    def reader(self) -> RingReader:
        table = self._bpf[b"events"]
        return RingReader(table.map_fd, self.cfg.ringbuf_pages * os.sysconf("SC_PAGE_SIZE"))

    def stop(self) -> None:
        """Detach every probe, then read the final drop counts, then free the maps."""
        b = self._bpf
        if b is None:
            return
        for tp in list(b.tracepoint_fds):
            b.detach_tracepoint(tp)
        for tp in list(b.raw_tracepoint_fds):
            b.detach_raw_tracepoint(tp)
        self._final_drops = self.kernel_drops()
        b.cleanup()
        self._bpf = None

    # -- filters, changed at run time --------------------------------------------------------

    def set_cfg(self, slot: int, value: int) -> None:
        """Set one slot of the nw_config map (enum nw_cfg)."""
        self._bpf[b"nw_config"][ctypes.c_int(slot)] = ctypes.c_uint64(value)

    def table(self, name: bytes):
        """A map of the loaded program, for the stages that keep their own (agent/enforce)."""
        return self._bpf[name]

    def set_target_tgid(self, tgid: int) -> None:
        self.set_cfg(CFG_TARGET_TGID, tgid)

    def set_file_readonly(self, on: bool) -> None:
        self.set_cfg(CFG_FILE_READONLY, int(on))

    def ignore_tgid(self, tgid: int, ignore: bool = True) -> None:
        table = self._bpf[b"ignore_tgid"]
        key = ctypes.c_uint32(tgid)
        if ignore:
            table[key] = ctypes.c_uint8(1)
        elif key in table:
            del table[key]

    def set_ignored_prefixes(self, prefixes) -> None:
        """Replace the ignored path prefixes; paths under them are dropped in the kernel."""
        wanted = {_check_prefix(p) for p in prefixes}
        table = self._bpf[b"ignore_prefix"]
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
        table = self._bpf[b"watch_prefix"]
        for raw in self._watched.keys() - wanted.keys():
            del table[self._prefix_key(table, raw)]
        for raw, how in wanted.items():
            if self._watched.get(raw) != how:
                table[self._prefix_key(table, raw)] = ctypes.c_uint8(how)
        self._watched = wanted
        # The read-only pre-filter needs the heads of read-watched prefixes only: a write is never pre-filtered.
        heads = self._bpf[b"watch_head"]
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
        if "file" not in self.cfg.families or self._bpf is None:
            return
        table = self._bpf[b"close_prefix"]
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
        destination within a second, probes/net.bpf.c), summed over CPUs. The destination is never lost,
        but each one not sent is counted, as folded alerts are. Not "net.sendto_folded": the pipeline
        reports it as kernel.<name> beside kernel.net (the net family's ring-buffer drops), and a stage
        that is both a count and a parent cannot be mapped by Elasticsearch (issue 15)."""
        if self._bpf is None or "net" not in self.cfg.families:
            return {}
        return {"net_sendto_folded": int(self._bpf[b"sendto_folded"].sum(ctypes.c_int(0)).value)}

    def kernel_drops(self) -> dict[str, int]:
        """Failed ring-buffer reservations so far, per family (summed over CPUs)."""
        if self._bpf is None:
            return dict(self._final_drops)
        table = self._bpf[b"drops"]
        return {s.name: int(table.sum(ctypes.c_int(s.probe)).value) for s in self.sensors}
