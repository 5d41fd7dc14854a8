"""A replay event source: recorded ring-buffer batches played through the real pipeline, no kernel.

Falco's libs swap the live driver for a capture file; this is ours. `ReplayProbes` stands in for
`ProbeSet` at the lowest level: the same sensor registry and decoders, and a reader that hands out
the recorded batches (raw bytes exactly as RingReader copied them out of the ring buffer) instead
of reading kernel memory. Everything above it (decode, enrich, hold, outputs, drop accounting) is
the real code. Unit tests build batches from packed structs; `nodewarden run --record FILE`
records a live run's batches (RecordingReader) so a real workload can be replayed later.

File format (little-endian): the magic b"NWREPLAY1\\n", then one frame per batch: u32 record
count, then per record u32 length and the bytes. A truncated last frame (the agent was killed
mid-write) ends the replay; it is not an error.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from typing import BinaryIO

from agent.sensors import DEFAULT_FAMILIES, REGISTRY

MAGIC = b"NWREPLAY1\n"
_U32 = struct.Struct("<I")


class ReplayError(Exception):
    """The file is not a recording (one line: why)."""


def write_batch(f: BinaryIO, batch: list[bytes]) -> None:
    parts = [_U32.pack(len(batch))]
    for raw in batch:
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    f.write(b"".join(parts))


def read_batches(path: str) -> list[list[bytes]]:
    """Every complete batch of a recording."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ReplayError(f"cannot read recording {path}: {e.strerror}") from None
    if not data.startswith(MAGIC):
        raise ReplayError(f"{path} is not a NodeWarden recording (no {MAGIC[:-1].decode()} header)")
    out, off = [], len(MAGIC)
    while off + 4 <= len(data):
        (n,), off = _U32.unpack_from(data, off), off + 4
        batch = []
        for _ in range(n):
            if off + 4 > len(data):
                return out
            (length,), off = _U32.unpack_from(data, off), off + 4
            if off + length > len(data):
                return out
            batch.append(data[off : off + length])
            off += length
        out.append(batch)
    return out


class ReplayReader:
    """RingReader's interface over recorded batches: read() hands them out in order, once."""

    def __init__(self, batches: Iterable[list[bytes]]):
        self._batches = [list(b) for b in batches]
        self._lock = threading.Lock()
        self._end = threading.Event()
        self.read_records = 0

    def read(self, max_records: int = 4096) -> list[bytes]:
        with self._lock:
            if not self._batches:
                return []
            batch = self._batches[0]
            out, self._batches[0] = batch[:max_records], batch[max_records:]
            if not self._batches[0]:
                self._batches.pop(0)
            self.read_records += len(out)
            return out

    def pending(self) -> int:
        with self._lock:
            return sum(len(r) for b in self._batches for r in b)

    def wait(self, timeout: float) -> None:
        self._end.wait(timeout)  # nothing new ever arrives: just let the caller's loop breathe

    def close(self) -> None:
        self._end.set()

    @property
    def done(self) -> bool:
        return self.pending() == 0


class ReplayProbes:
    """ProbeSet's interface for the pipeline, without the kernel: decoders of the given families,
    the recorded batches as the ring buffer, and kernel drop counts as recorded (or given)."""

    def __init__(self, batches: Iterable[list[bytes]], families: Iterable[str] = DEFAULT_FAMILIES,
                 kernel_drops: dict[str, int] | None = None):
        self.sensors = [REGISTRY[f] for f in families]
        self.decoders = {op: dec for s in self.sensors for op, dec in s.decoders.items()}
        self.tracepoints_missing: list[str] = []
        self.drops = {s.name: 0 for s in self.sensors} | dict(kernel_drops or {})
        self._reader = ReplayReader(batches)

    @classmethod
    def from_file(cls, path: str, families: Iterable[str] = DEFAULT_FAMILIES) -> ReplayProbes:
        return cls(read_batches(path), families)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def reader(self) -> ReplayReader:
        return self._reader

    def kernel_drops(self) -> dict[str, int]:
        return dict(self.drops)

    def kernel_folded(self) -> dict[str, int]:
        return {}  # a recording holds what the kernel sent; what it folded was counted live


class RecordingReader:
    """Wraps a live RingReader: every batch it reads is also appended to a recording."""

    def __init__(self, reader, path: str):
        self._reader = reader
        self._f = open(path, "wb")  # noqa: SIM115 (kept open for the run; closed in close())
        self._f.write(MAGIC)

    def read(self, max_records: int = 4096) -> list[bytes]:
        batch = self._reader.read(max_records)
        if batch:
            write_batch(self._f, batch)
        return batch

    def pending(self) -> int:
        return self._reader.pending()

    def wait(self, timeout: float) -> None:
        self._reader.wait(timeout)

    def close(self) -> None:
        self._reader.close()
        self._f.close()
