"""The crash ledger: what a SIGKILLed agent had read from the kernel but not yet made durable.

Records between the ring buffer and the outputs live in memory: batches in the pipeline's queue,
events held for their container, records in the exporter's queue before the spool. A clean stop
drains them; SIGKILL (the OOM killer, a node drain past its grace period) loses them without a
trace. So the agent keeps a few counters in a small file mapped into memory (MAP_SHARED): an
update is one store into the page cache, cheap enough for every batch, and the page outlives the
process, so the next start reads exactly the values of the moment it died.

Slots (u64, little-endian): magic, pid, kernel_read (records copied out of the ring buffer),
kernel_settled (kernel records the worker finished with: handed to the outputs, filtered, held
and released, or counted as a drop), handed (records handed to the outputs), spool_base (the
spool's appended count when the run started), exporter_lost (records the exporter dropped before
its spool, synced from its counters every drops tick).

On start, `open()` returns the previous run's loss and resets the ledger:
    (kernel_read - kernel_settled) + (handed - (spool appended now - spool_base) - exporter_lost)
the first term when no exporter ran. How exact: exact up to the records of one batch when the
kill lands in the few instructions between an act and its count; high by the exporter's drops
of the last tick (rare, and counted as exporter drops too); low by the exporter's own
agent.drops records (they reach the spool without being handed to it). Not counted: records
still in the kernel's ring buffer, which dies with the process (at most its size, 1 MiB).

One agent per state directory: the ledger is flock()ed; a second agent gets no ledger (warned).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct

log = logging.getLogger("nodewarden")

_MAGIC = 0x4E574C4544474531  # "NWLEDGE1"
_SLOTS = ("magic", "pid", "kernel_read", "kernel_settled", "handed", "spool_base", "exporter_lost")
_IDX = {name: i for i, name in enumerate(_SLOTS)}
_U64 = struct.Struct("<Q")
_SIZE = 8 * len(_SLOTS)
SPOOL_COUNT_FILE = "appended"  # agent/outputs/spool.py keeps its appended-events count here


def read_u64(path: str) -> int:
    try:
        with open(path, "rb") as f:
            data = f.read(8)
    except OSError:
        return 0
    return _U64.unpack(data)[0] if len(data) == 8 else 0


class MappedCounter:
    """One u64 in a file, updated through a shared mapping (survives SIGKILL, not a power cut)."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._mm = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.value = _U64.unpack_from(self._mm, 0)[0]

    def add(self, n: int) -> None:
        self.value += n
        _U64.pack_into(self._mm, 0, self.value)

    def close(self) -> None:
        self._mm.close()


class Ledger:
    """The counters of this run; `open()` first (before the exporter starts: it reads the spool's count)."""

    def __init__(self, path: str, spool_dir: str | None = None):
        self.path = path
        self.spool_dir = spool_dir
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._vals = [0] * len(_SLOTS)
        self.previous: dict[str, int] = {}  # the previous run's counters, as it left them
        self._lost: int | None = None

    def open(self) -> int:
        """Map the ledger, take the previous run's loss and start this run's counts from zero; returns
        that loss (the same on later calls; 0 when another agent holds the ledger: warned, no ledger)."""
        if self._lost is not None:
            return self._lost
        self._lost = 0
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning("%s is held by another agent: crash losses of this run are not counted", self.path)
            return 0
        if os.fstat(fd).st_size < _SIZE:
            os.ftruncate(fd, _SIZE)
        self._fd = fd
        self._mm = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._vals = [_U64.unpack_from(self._mm, 8 * i)[0] for i in range(len(_SLOTS))]
        self._lost = self._take_previous()
        return self._lost

    def _spool_appended(self) -> int:
        return read_u64(os.path.join(self.spool_dir, SPOOL_COUNT_FILE)) if self.spool_dir else 0

    def _take_previous(self) -> int:
        v = self.previous = dict(zip(_SLOTS, self._vals, strict=True))
        appended = self._spool_appended()
        lost = 0
        if v["magic"] == _MAGIC:
            lost = max(0, v["kernel_read"] - v["kernel_settled"])
            if self.spool_dir and v["handed"]:
                spooled = max(0, appended - v["spool_base"])
                lost += max(0, v["handed"] - spooled - v["exporter_lost"])
        for name in _SLOTS:
            self.set(name, 0)
        self.set("spool_base", appended)
        self.set("pid", os.getpid())
        self.set("magic", _MAGIC)
        return lost

    def add(self, name: str, n: int) -> None:
        """Count n more; each slot has one writer at a time (the pipeline's reader, worker, output lock)."""
        i = _IDX[name]
        self._vals[i] += n
        if self._mm is not None:
            _U64.pack_into(self._mm, 8 * i, self._vals[i])

    def set(self, name: str, value: int) -> None:
        i = _IDX[name]
        self._vals[i] = value
        if self._mm is not None:
            _U64.pack_into(self._mm, 8 * i, value)

    def get(self, name: str) -> int:
        return self._vals[_IDX[name]]

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
            os.close(self._fd)  # releases the lock
            self._fd = -1


