"""Known-bad file hashes at scale: a compact, memory-mapped sha256 store.

`nodewarden db import-hashes FILE` turns sha256 lists, sha256sum output and MalwareBazaar CSV dumps
(plain or zipped; the parsers are agent/imagegate/hashfeeds.py) into one store file; the image gate
(RuleSet.known_bad) and the runtime web-shell check look digests up in it. A million digests take
~32 MB on disk and no more resident: the file is mapped read-only, so its pages are shared between
processes and belong to the page cache, and a lookup is a few C calls (bytes.fromhex, two table
reads, one mmap.find): under a microsecond (bench/hashdb.py).

File layout (little-endian; every section starts on an 8-byte boundary):

    header   64 bytes   _HEADER: magic, version, count, label count, label index width,
                        sha256 of everything after the header (the store's fingerprint)
    prefix   (65536 + 1) x u32   prefix[b] = index of the first digest whose first two bytes are >= b
    suffix   count x 30 bytes    bytes 2..31 of every digest, sorted (the first two are the bucket)
    lindex   count x u16|u32     label number of each digest (u16 while there are < 65536 labels)
    loffs    (labels + 1) x u32  start of each label in the label text; the last is its length
    ltext    UTF-8 labels, each once ("<source>: <family or comment>")

A lookup finds its bucket's slice of `suffix` through `prefix` and searches it with mmap.find, taking
only matches on a 30-byte boundary (an unaligned match would straddle two digests). Buckets hold
count/65536 digests on average (15 for a million), so the search reads ~500 bytes.

Writes are crash-safe (temporary file in the same directory, fsync, rename, fsync of the directory)
and serialised by a lock file beside the store, so a reader sees the old store or the new one, never
half of one; a re-import merges into what is there (one entry per digest; the newer label wins).
Readers notice a new store by its (inode, size, mtime) changing: HashDB.changed(), WatchedHashDB.
A store must only ever be replaced by a rename, as here: one truncated in place (`cp` over it) under
a reader's mapping would fault (SIGBUS) that reader's next access to the pages it lost. Readers do
not check the body's checksum at open (that reads all of it); the import and `db info` do.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("nodewarden.imagegate.hashdb")

MAGIC = b"NWHASHDB"
VERSION = 1
_HEADER = struct.Struct("<8sIIQII32s")  # magic, version, flags, count, labels, index width, body sha256
_HEADER_SIZE = 64
_BUCKETS = 1 << 16
_SUFFIX = 30  # digest bytes after the two-byte bucket
MAX_ENTRIES = 20_000_000  # a ~640 MB store; bounds an import's memory (~170 bytes per digest at its peak)
_EAGER_LABELS = 8192  # labels decoded at open (a few hundred kB at most)

if sys.byteorder != "little":  # the tables are read through memoryview casts, which use host order
    raise ImportError("agent.imagegate.hashdb: big-endian hosts are not supported")


class HashDBError(Exception):
    """A store that cannot be used or written; str() is one line naming the file."""


# --- reading ------------------------------------------------------------------------------------


def _align(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True, slots=True)
class _Layout:
    count: int
    labels: int
    width: int
    prefix: int
    suffix: int
    lindex: int
    loffs: int
    ltext: int

    @classmethod
    def of(cls, count: int, labels: int, width: int) -> _Layout:
        prefix = _HEADER_SIZE
        suffix = prefix + _align(4 * (_BUCKETS + 1))
        lindex = suffix + _align(_SUFFIX * count)
        loffs = lindex + _align(width * count)
        ltext = loffs + _align(4 * (labels + 1))
        return cls(count, labels, width, prefix, suffix, lindex, loffs, ltext)


def is_store(path: str) -> bool:
    """True when `path` starts with the store's magic (so a hash list setting may name a store)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HashDB:
    """One store file, mapped read-only. Thread-safe for lookups; never raises on a lookup."""

    def __init__(self, path: str, mm: mmap.mmap, lay: _Layout, digest: bytes, stat_key: tuple):
        self.path = path
        self._mm = mm
        self._lay = lay
        self.digest = digest.hex()  # sha256 of the body: changes whenever the content does
        self.fingerprint = self.digest[:16]
        self._stat_key = stat_key
        view = memoryview(mm)
        self._views = [
            view[lay.prefix : lay.prefix + 4 * (_BUCKETS + 1)].cast("I"),
            view[lay.lindex : lay.lindex + lay.width * lay.count].cast("H" if lay.width == 2 else "I"),
            view[lay.loffs : lay.loffs + 4 * (lay.labels + 1)].cast("I"),
            view,
        ]
        self._prefix, self._lindex, self._loffs = self._views[0], self._views[1], self._views[2]
        self._base = lay.suffix
        self._text = lay.ltext
        # Few labels (families: some thousands): decoded once, so a hit costs one list index. Many
        # (a label per sample): read from the mapping on each hit, to keep them out of the heap.
        self._names = [n or "known-bad" for n in self.labels()] if lay.labels <= _EAGER_LABELS else None

    @classmethod
    def open(cls, path: str) -> HashDB:
        """Map the store at `path`; HashDBError (one line) when it is missing, unreadable or malformed."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise HashDBError(f"{path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if st.st_size < _HEADER_SIZE:
                raise HashDBError(f"{path}: not a hash store (too short: {st.st_size} bytes)")
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise HashDBError(f"{path}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        try:
            lay, digest = _check_header(path, mm)
            db = cls(path, mm, lay, digest, _stat_key(st))
        except BaseException:
            mm.close()
            raise
        if db._prefix[0] != 0 or db._prefix[_BUCKETS] != lay.count or db._loffs[0] != 0:
            db.close()
            raise HashDBError(f"{path}: corrupt hash store (tables do not match the header)")
        return db

    def __len__(self) -> int:
        return self._lay.count

    @property
    def label_count(self) -> int:
        return self._lay.labels

    @property
    def size(self) -> int:
        return len(self._mm)

    def lookup(self, digest: str | bytes) -> str | None:
        """The label of a sha256 (64 hex characters, optionally "sha256:"-prefixed, or 32 raw bytes),
        None when it is not in the store or is not a sha256."""
        if isinstance(digest, str):
            try:
                d = bytes.fromhex(digest if len(digest) == 64 else digest.removeprefix("sha256:"))
            except ValueError:
                return None
        elif isinstance(digest, (bytes, bytearray, memoryview)):
            d = bytes(digest)
        else:
            return None
        if len(d) != 32:
            return None
        b = d[0] << 8 | d[1]
        base = self._base
        try:
            lo, hi = base + _SUFFIX * self._prefix[b], base + _SUFFIX * self._prefix[b + 1]
            pos = self._mm.find(d[2:], lo, hi)
            while pos >= 0:
                off = pos - base
                if off % _SUFFIX == 0:
                    names = self._names  # inlined _label(): a third of a hit's time was the call
                    if names is not None:
                        n = self._lindex[off // _SUFFIX]
                        return names[n] if n < len(names) else "known-bad"
                    return self._label(off // _SUFFIX)
                pos = self._mm.find(d[2:], pos + 1, hi)
        except ValueError:  # closed: a caller kept an old store past close(); treat as empty
            return None
        return None

    def __contains__(self, digest: str | bytes) -> bool:
        return self.lookup(digest) is not None

    def _label(self, i: int) -> str:
        # Never empty: callers test the label for truth. A corrupt index reads as the generic label.
        try:
            n = self._lindex[i]
            if self._names is not None:
                return self._names[n] or "known-bad"
            start, end = self._text + self._loffs[n], self._text + self._loffs[n + 1]
            return self._mm[start:end].decode("utf-8", "replace") or "known-bad"
        except (IndexError, ValueError):
            return "known-bad"

    def items(self) -> Iterator[tuple[bytes, str]]:
        """Every (raw digest, label), in digest order."""
        labels = self.labels()
        mm, base = self._mm, self._base
        b = 0
        for i in range(self._lay.count):
            while self._prefix[b + 1] <= i:
                b += 1
            off = base + _SUFFIX * i
            n = self._lindex[i]
            yield bytes((b >> 8, b & 0xFF)) + mm[off : off + _SUFFIX], labels[n] if n < len(labels) else "known-bad"

    def labels(self) -> list[str]:
        text, offs = self._text, self._loffs
        return [self._mm[text + offs[n] : text + offs[n + 1]].decode("utf-8", "replace")
                for n in range(self._lay.labels)]

    def verify(self) -> None:
        """Read the whole store: its checksum, the order of the tables. HashDBError when wrong."""
        if hashlib.sha256(self._mm[_HEADER_SIZE:]).hexdigest() != self.digest:
            raise HashDBError(f"{self.path}: corrupt hash store (checksum mismatch)")
        p = self._prefix
        if any(p[b] > p[b + 1] for b in range(_BUCKETS)):
            raise HashDBError(f"{self.path}: corrupt hash store (bucket table out of order)")
        o = self._loffs
        if any(o[n] > o[n + 1] for n in range(self._lay.labels)) or o[self._lay.labels] > len(self._mm) - self._text:
            raise HashDBError(f"{self.path}: corrupt hash store (label table out of order)")
        if self._lay.count and max(self._lindex) >= self._lay.labels:
            raise HashDBError(f"{self.path}: corrupt hash store (label number out of range)")

    def changed(self) -> bool:
        """True when the file at `path` is no longer the one mapped (replaced, removed, rewritten)."""
        try:
            return _stat_key(os.stat(self.path)) != self._stat_key
        except OSError:
            return True

    def close(self) -> None:
        for v in self._views:
            v.release()
        self._mm.close()


def _check_header(path: str, mm: mmap.mmap) -> tuple[_Layout, bytes]:
    magic, version, _flags, count, labels, width, digest = _HEADER.unpack_from(mm, 0)
    if magic != MAGIC:
        raise HashDBError(f"{path}: not a hash store (bad magic)")
    if version != VERSION:
        raise HashDBError(f"{path}: hash store version {version}, this agent reads {VERSION}")
    if width not in (2, 4) or count > MAX_ENTRIES or labels > count + 1:
        raise HashDBError(f"{path}: corrupt hash store (header)")
    lay = _Layout.of(count, labels, width)
    if len(mm) < lay.ltext:
        raise HashDBError(f"{path}: corrupt hash store (truncated: {len(mm)} bytes, tables need {lay.ltext})")
    return lay, digest


class WatchedHashDB:
    """A store path kept open and reopened when the file changes (checked at most every `interval`
    seconds, on a lookup). Missing file: lookups find nothing until one appears. A store that cannot
    be opened is logged once per change and counted in `errors_total`; the previous one stays."""

    def __init__(self, path: str, interval: float = 30.0):
        self.path = path
        self.interval = interval
        self.db: HashDB | None = None
        self.error = ""
        self.errors_total = 0
        self._seen: tuple | None = None
        self._next = 0.0
        self._lock = threading.Lock()
        self.check(force=True)

    def check(self, force: bool = False) -> bool:
        """Reopen if the file changed; True when a new store was opened."""
        now = time.monotonic()
        if not force and now < self._next:
            return False
        with self._lock:
            self._next = now + self.interval
            try:
                key = _stat_key(os.stat(self.path))
            except OSError:
                key = None
            if key == self._seen:
                return False
            self._seen = key
            if key is None:
                self.db, self.error = None, ""
                return False
            try:
                self.db, self.error = HashDB.open(self.path), ""
                return True
            except HashDBError as e:
                self.error = str(e)
                self.errors_total += 1
                log.warning("known-bad hash store not used: %s", e)
                return False

    def lookup(self, digest: str | bytes) -> str | None:
        self.check()
        db = self.db
        return db.lookup(digest) if db is not None else None


# --- importing ----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    path: str  # the store written
    added: int = 0  # digests new to the store
    updated: int = 0  # digests already there (label replaced by the newer one)
    duplicates: int = 0  # digests seen more than once in the input
    total: int = 0  # digests in the store now
    bad: int = 0  # input lines rejected
    errors: list[str] = field(default_factory=list)  # the first few rejections, one line each
    fmt: str = ""  # "list" or "csv"
    size: int = 0  # bytes of the store file



def import_hashes(src: str, store: str, source: str = "", replace: bool = False) -> ImportResult:
    """Add the digests of `src` (list, sha256sum output, MalwareBazaar CSV, or a zip of one) to the
    store at `store`, merging with what it holds unless `replace`. Labels are "<source>: <family or
    comment>", `source` defaulting to the file's name. Raises HashDBError (nothing written) when the
    input or the existing store is unusable; rejected lines are counted in the result instead."""
    from agent.imagegate.hashfeeds import read_feed  # the parsers: only the import command needs them

    base = os.path.basename(src)
    feed = read_feed(src, source or (base[:-4] if base.lower().endswith(".zip") else base))
    res = ImportResult(store, duplicates=feed.duplicates, bad=feed.bad, errors=feed.errors, fmt=feed.fmt)
    os.makedirs(os.path.dirname(os.path.abspath(store)), exist_ok=True)
    with open(store + ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two imports at once would each merge into the old store
        merged: dict[bytes, str] = {}
        if not replace and os.path.exists(store):
            db = HashDB.open(store)
            try:
                db.verify()
                merged = dict(db.items())
            finally:
                db.close()
        new, feed.entries = feed.entries, {}
        res.updated = sum(1 for k in new if k in merged)
        res.added = len(new) - res.updated
        if merged:
            merged.update(new)  # the newer label wins
        else:
            merged = new
        del new  # one table left: an import holds one dict entry per digest, ~130 bytes each
        if len(merged) > MAX_ENTRIES:
            raise HashDBError(f"{store}: the merged store would hold {len(merged)} digests, over {MAX_ENTRIES}")
        res.total = len(merged)
        res.size = write_store(store, merged)
    return res


def write_store(path: str, entries: dict[bytes, str]) -> int:
    """Write a store holding `entries` (raw digest -> label) at `path`, atomically; its size."""
    keys = sorted(entries)
    label_ids: dict[str, int] = {}
    lindex = array("I")
    for k in keys:
        lab = entries[k] or "known-bad"
        n = label_ids.get(lab)
        if n is None:
            n = label_ids[lab] = len(label_ids)
        lindex.append(n)
    width = 2 if len(label_ids) < 0xFFFF else 4
    if width == 2:
        lindex = array("H", lindex)
    lay = _Layout.of(len(keys), len(label_ids), width)
    counts = array("I", bytes(4 * (_BUCKETS + 1)))
    for k in keys:
        counts[(k[0] << 8 | k[1]) + 1] += 1
    for b in range(_BUCKETS):
        counts[b + 1] += counts[b]
    text = [lab.encode() for lab in label_ids]
    offs = array("I", [0])
    for t in text:
        offs.append(offs[-1] + len(t))

    def sections() -> Iterator[tuple[int, bytes | memoryview]]:
        yield lay.prefix, counts.tobytes()
        for i in range(0, len(keys), 65536):  # the suffixes in slices: no second copy of the table
            yield (lay.suffix if i == 0 else -1), b"".join(k[2:] for k in keys[i : i + 65536])
        yield lay.lindex, memoryview(lindex).cast("B")
        yield lay.loffs, offs.tobytes()
        yield lay.ltext, b"".join(text)

    _write_atomic(path, lay, len(label_ids), width, sections())
    return os.path.getsize(path)


def _write_atomic(path: str, lay: _Layout, labels: int, width: int, sections) -> None:
    """Write the sections (offset or -1 for "right after the last", data) after a header that
    holds their checksum, to a temporary file; fsync; rename over `path`; fsync the directory."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(_HEADER_SIZE))
            pos = _HEADER_SIZE
            for off, data in sections:
                if off > pos:
                    pad = bytes(off - pos)  # to the section's 8-byte boundary
                    f.write(pad)
                    h.update(pad)
                    pos = off
                f.write(data)
                h.update(data)
                pos += len(data)
            f.seek(0)
            f.write(_HEADER.pack(MAGIC, VERSION, 0, lay.count, labels, width, h.digest()))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)
