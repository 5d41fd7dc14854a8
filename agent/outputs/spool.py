"""The exporter's on-disk spool: a bounded FIFO of encoded batches that survives an agent restart.

Every batch goes through the spool before it is sent (write-ahead), and leaves it when the
collector acks it. So what was not acked is on disk whatever happens to the agent process
(a kill included) and is resent on the next start. Segments live a second or two while the
collector keeps up; the kernel usually drops their pages before writeback ever sees them.
Writes are not fsync'ed: the spool covers an agent or collector outage, not a power cut.

Layout: `<dir>/<16-digit number>.seg` segment files, an `ack` file naming the last acked
record, and `appended`: a u64 count of every event ever appended, kept through a shared mapping so
that it is exact even after a SIGKILL (agent/ledger.py compares it with what the pipeline handed
the exporter, to count what a killed agent still held in memory). A record is a 16-byte
header (magic, payload length, CRC-32, event count) then the payload. A record that fails its
checks ends its segment: the rest of that segment is skipped, logged and counted, and the other
segments are delivered.

Bounded by `max_bytes`: an append that would pass it first deletes whole segments, oldest
first, and returns exactly how many not-yet-acked events they held.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from agent.ledger import SPOOL_COUNT_FILE, MappedCounter

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


class SpoolBusy(OSError):
    """Another agent holds the spool directory."""

_HDR = struct.Struct("<4sIII")  # magic, payload length, crc32(count + payload), event count
_MAGIC = b"NWS1"
_MAX_RECORD = 64 << 20  # a length above this is corruption, not a record

Pos = tuple[int, int]  # (segment number, record index in it)


@dataclass(slots=True)
class _Segment:
    no: int
    path: Path
    records: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, length, events)
    size: int = 0
    acked: int = -1  # index of the last acked record
    events: int = 0  # events in records not yet acked

    def unacked_events(self) -> int:
        return self.events


class Spool:
    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int):
        self.dir = Path(directory)
        self.max_bytes = max(max_bytes, 2 * _HDR.size)
        # Dropping works in whole segments: keep several per spool so a drop is a small part.
        self.segment_bytes = max(min(segment_bytes, self.max_bytes // 4), 1)
        self._lock = threading.Lock()
        self._segs: dict[int, _Segment] = {}  # ordered by number (insertion order)
        self._wfile = None
        self._wseg: _Segment | None = None
        self._bytes = 0
        self._ack_written = 0.0
        self._ack_pos: Pos | None = None
        self.corrupt_segments = 0
        self.corrupt_bytes = 0
        self.dropped_events = 0
        self._appended: MappedCounter | None = None  # events ever appended; the crash ledger reads it
        self._lock_fd = -1  # the flock on <dir>/lock while open (_take)

    # -- open / close -------------------------------------------------------------------

    def open(self) -> None:
        """Take the spool (SpoolBusy when another agent holds it), scan what a previous run left, then start a
        fresh segment for new writes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take()
        self._appended = MappedCounter(str(self.dir / SPOOL_COUNT_FILE))
        acked = self._read_ack()
        for path in sorted(self.dir.glob("*.seg")):
            try:
                no = int(path.stem)
            except ValueError:
                continue
            if acked is not None and no < acked[0]:
                path.unlink(missing_ok=True)
                continue
            seg = self._scan(no, path)
            if acked is not None and no == acked[0]:
                seg.acked = min(acked[1], len(seg.records) - 1)
                seg.events = sum(r[2] for r in seg.records[seg.acked + 1 :])
            self._segs[no] = seg
            self._bytes += seg.size
            self._delete_if_done(seg)
        self._roll()

    def _take(self) -> None:
        """An flock on <dir>/lock for as long as the spool is open: two agents on one spool would delete and
        misread each other's segments (seen: a second agent on /var/lib/nodewarden logged `cannot read ...seg`
        every few seconds while the first acked them away), and events would be lost. The kernel releases
        it with the process, a SIGKILL included. The holder's pid is written into it, for the message."""
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise SpoolBusy(f"spool {self.dir} is held by another NodeWarden agent (pid {holder}): give each "
                            f"agent its own export.spool_dir (or agent.state_dir)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd >= 0:
            self._close_files()
            os.close(self._lock_fd)  # after the last write: the next agent may take it now
            self._lock_fd = -1

    def _close_files(self) -> None:
        with self._lock:
            self._write_ack(force=True)
            if self._wfile is not None:
                self._wfile.close()
                self._wfile = None
            if self._appended is not None:
                self._appended.close()
                self._appended = None
            # A write segment that holds nothing unacked is not worth keeping.
            if self._wseg is not None and self._wseg.acked >= len(self._wseg.records) - 1:
                self._wseg.path.unlink(missing_ok=True)
                self._segs.pop(self._wseg.no, None)
                self._bytes -= self._wseg.size

    def _scan(self, no: int, path: Path) -> _Segment:
        seg = _Segment(no, path)
        try:
            data = path.read_bytes()
        except OSError as e:
            log.error("spool: cannot read segment %s: %s; skipping it", path, e)
            self.corrupt_segments += 1
            return seg
        off = 0
        while off < len(data):
            rec = _check(data, off)
            if rec is None:
                bad = len(data) - off
                log.error("spool: segment %s is corrupt at offset %d: skipping its last %d bytes", path, off, bad)
                self.corrupt_segments += 1
                self.corrupt_bytes += bad
                break
            length, events = rec
            seg.records.append((off, length, events))
            seg.events += events
            off += _HDR.size + length
        seg.size = len(data)
        return seg

    # -- writing ------------------------------------------------------------------------

    def append(self, payload: bytes, events: int) -> int:
        """Append one batch; returns how many unacked events were dropped to make room."""
        rec_len = _HDR.size + len(payload)
        with self._lock:
            dropped = 0
            if self._wseg.size and self._wseg.size + rec_len > self.segment_bytes:
                self._roll()
            while self._bytes + rec_len > self.max_bytes and len(self._segs) > 1:
                dropped += self._drop_oldest()
            if self._bytes + rec_len > self.max_bytes:
                # Only the write segment is left and it is still too big: start over.
                dropped += self._drop_oldest(include_write=True)
            crc = zlib.crc32(payload, zlib.crc32(struct.pack("<I", events)))
            off = self._wseg.size
            self._wfile.write(_HDR.pack(_MAGIC, len(payload), crc, events) + payload)
            self._wfile.flush()  # to the page cache: a killed agent loses nothing written
            self._wseg.records.append((off, len(payload), events))
            self._wseg.events += events
            self._wseg.size += rec_len
            self._bytes += rec_len
            self._appended.add(events)  # right after the write: a kill in between miscounts one batch
            self.dropped_events += dropped
            return dropped

    def _roll(self) -> None:
        if self._wfile is not None:
            self._wfile.close()
        no = max(self._segs, default=0) + 1
        path = self.dir / f"{no:016d}.seg"
        self._wfile = open(path, "ab")  # kept open: one append per batch
        self._wseg = _Segment(no, path)
        self._segs[no] = self._wseg

    def _drop_oldest(self, include_write: bool = False) -> int:
        no = next(iter(self._segs))
        seg = self._segs[no]
        if seg is self._wseg:
            if not include_write:
                return 0
            self._roll()
        del self._segs[no]
        seg.path.unlink(missing_ok=True)
        self._bytes -= seg.size
        log.warning("spool: full (%d bytes): dropped segment %s with %d unsent events",
                    self.max_bytes, seg.path.name, seg.events)
        return seg.events

    # -- reading and acking ---------------------------------------------------------------

    def read_next(self, after: Pos | None) -> tuple[Pos, int, bytes] | None:
        """The first unacked record after `after` (None: from the oldest unacked one)."""
        with self._lock:
            for seg in list(self._segs.values()):
                if after is not None and seg.no < after[0]:
                    continue
                start = seg.acked + 1
                if after is not None and seg.no == after[0]:
                    start = max(start, after[1] + 1)
                while start < len(seg.records):
                    off, length, events = seg.records[start]
                    payload = self._read(seg, off, length, events)
                    if payload is not None:
                        return (seg.no, start), events, payload
                    # Corrupt since the scan: forget the rest of this segment.
                    lost = seg.records[start:]
                    del seg.records[start:]
                    seg.events -= sum(r[2] for r in lost)
                    self._delete_if_done(seg)
                    break
            return None

    def _read(self, seg: _Segment, off: int, length: int, events: int) -> bytes | None:
        try:
            with open(seg.path, "rb") as f:
                f.seek(off)
                data = f.read(_HDR.size + length)
        except OSError as e:
            log.error("spool: cannot read %s: %s; skipping the rest of it", seg.path, e)
            self.corrupt_segments += 1
            return None
        rec = _check(data, 0)
        if rec is None or rec != (length, events):
            log.error("spool: segment %s is corrupt at offset %d; skipping the rest of it", seg.path, off)
            self.corrupt_segments += 1
            self.corrupt_bytes += seg.size - off
            return None
        return data[_HDR.size :]

    def ack(self, pos: Pos) -> None:
        """Everything up to and including `pos` reached the collector."""
        with self._lock:
            for seg in list(self._segs.values()):
                if seg.no > pos[0]:
                    break
                last = len(seg.records) - 1 if seg.no < pos[0] else min(pos[1], len(seg.records) - 1)
                if last > seg.acked:
                    seg.events -= sum(r[2] for r in seg.records[seg.acked + 1 : last + 1])
                    seg.acked = last
                self._delete_if_done(seg)
            self._ack_pos = pos
            self._write_ack()

    def _delete_if_done(self, seg: _Segment) -> None:
        if seg is not self._wseg and seg.acked >= len(seg.records) - 1:
            self._segs.pop(seg.no, None)
            seg.path.unlink(missing_ok=True)
            self._bytes -= seg.size

    def _read_ack(self) -> Pos | None:
        try:
            a, b = (self.dir / "ack").read_text().split()
            return int(a), int(b)
        except (OSError, ValueError):
            return None

    def _write_ack(self, force: bool = False) -> None:
        # At most twice a second: losing the newest ack only means a resend, which the
        # collector deduplicates.
        now = time.monotonic()
        if self._ack_pos is None or (not force and now - self._ack_written < 0.5):
            return
        tmp = self.dir / "ack.tmp"
        try:
            tmp.write_text(f"{self._ack_pos[0]} {self._ack_pos[1]}\n")
            os.replace(tmp, self.dir / "ack")
        except OSError as e:
            log.warning("spool: cannot record the ack position: %s", e)
        self._ack_written = now

    # -- state ----------------------------------------------------------------------------

    def stats(self) -> dict:
        with self._lock:
            return {
                "bytes": self._bytes,
                "segments": len(self._segs),
                "pending_events": sum(s.events for s in self._segs.values()),
            }


def _check(data: bytes, off: int) -> tuple[int, int] | None:
    """(payload length, events) of the record at `off`, or None if it fails a check."""
    if off + _HDR.size > len(data):
        return None
    magic, length, crc, events = _HDR.unpack_from(data, off)
    start = off + _HDR.size
    if magic != _MAGIC or length > _MAX_RECORD or start + length > len(data):
        return None
    if zlib.crc32(data[start : start + length], zlib.crc32(struct.pack("<I", events))) != crc:
        return None
    return length, events
