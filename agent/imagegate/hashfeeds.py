"""The inputs of `nodewarden db import-hashes`: sha256 lists, sha256sum output, MalwareBazaar CSV dumps,
and a zip of one of those (MalwareBazaar ships full.csv.zip). read_feed() streams the file once and
returns its digests with their labels; the store itself is agent/imagegate/hashdb.py.

  list   "<hex>[ <comment>]", "sha256:<hex>", sha256sum's "<hex>  name" / "<hex> *name"; blank and
         "#" lines skipped; the comment is the label
  csv    a header naming sha256_hash (MalwareBazaar's is a comment line: '# "first_seen_utc",...');
         rows read with the csv module; the label is the signature, else the file name

Bad lines are counted and the first few remembered (one line each), never fatal; a line longer than
MAX_LINE is skipped without being held whole. Memory: one dict entry per distinct digest.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agent.imagegate.hashdb import MAX_ENTRIES, HashDBError

MAX_LINE = 64 << 10  # longer lines are skipped (and counted), never read whole into memory
MAX_LABEL = 120  # characters kept of a label
_ERRORS_KEPT = 20  # bad lines remembered for the report (all are counted)
_HEX = frozenset("0123456789abcdef")
_NA = {"", "n/a", "na", "none", "null", "unknown", "-"}
# MalwareBazaar's full dump (https://bazaar.abuse.ch/export/): these columns, in this order, quoted,
# after "#" comment lines; the header itself is one of the comment lines ('# "first_seen_utc",...').
MB_COLUMNS = (
    "first_seen_utc", "sha256_hash", "md5_hash", "sha1_hash", "reporter", "file_name", "file_type_guess",
    "mime_type", "signature", "clamav", "vtpercent", "imphash", "ssdeep", "tlsh",
)


@dataclass
class Feed:
    entries: dict[bytes, str]  # raw digest -> label (one str object per distinct label)
    fmt: str  # "list" or "csv"
    bad: int = 0  # lines rejected
    duplicates: int = 0  # digests seen more than once
    errors: list[str] = field(default_factory=list)  # the first rejections, one line each


def read_feed(src: str, source: str) -> Feed:
    """Every digest of `src` labelled "<source>: <comment or family>". HashDBError when the file
    cannot be read at all (missing, a zip that is not one, a truncated zip member)."""
    imp = _Importer(source)
    stream, where = _open_text(src)
    reader = _Reader(stream)
    try:
        fmt = _parse(imp, reader, where, reader)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise HashDBError(f"{where}: read failed ({e})") from None
    except Exception as e:
        if type(e).__module__ == "zlib":  # zlib.error (a truncated deflate stream) is no OSError
            raise HashDBError(f"{where}: read failed ({e})") from None
        raise
    finally:
        stream.close()
    return Feed(imp.entries, fmt, imp.bad, imp.duplicates, imp.errors)


class _Reader:
    """Lines of a text stream, each at most MAX_LINE characters; longer ones yield None (skipped
    without holding them in memory)."""

    def __init__(self, stream: io.TextIOBase):
        self.stream = stream
        self.lineno = 0

    def __iter__(self) -> Iterator[str | None]:
        rd = self.stream.readline
        while True:
            line = rd(MAX_LINE)
            if not line:
                return
            self.lineno += 1
            if len(line) >= MAX_LINE and not line.endswith("\n"):
                while True:
                    rest = rd(MAX_LINE)
                    if not rest or rest.endswith("\n"):
                        break
                yield None
                continue
            yield line


def _clean(s: str) -> str:
    s = "".join(c if c.isprintable() else " " for c in s)
    return " ".join(s.split())[:MAX_LABEL]


def _digest(text: str) -> bytes | None:
    t = text.strip().lower().removeprefix("sha256:")
    if len(t) != 64 or not _HEX.issuperset(t):
        return None
    return bytes.fromhex(t)


class _Importer:
    def __init__(self, source: str):
        self.source = _clean(source) or "hashes"
        self.entries: dict[bytes, str] = {}  # digest -> label (one str object per distinct label)
        self._labels: dict[str, str] = {}
        self.bad = 0
        self.duplicates = 0
        self.errors: list[str] = []

    def label(self, text: str) -> str:
        text = _clean(text)
        label = f"{self.source}: {text}" if text else self.source
        return self._labels.setdefault(label, label)  # shared, not one copy per digest

    def reject(self, where: str, why: str) -> None:
        self.bad += 1
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(f"{where}: {why}")

    def add(self, digest: bytes, label: str) -> None:
        if digest in self.entries:
            self.duplicates += 1
        elif len(self.entries) >= MAX_ENTRIES:
            raise HashDBError(f"more than {MAX_ENTRIES} digests: split the input")
        self.entries[digest] = label


def _open_text(path: str) -> tuple[io.TextIOBase, str]:
    """A text stream of `path`, or of the one CSV/text member of a zip; (stream, display name)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise HashDBError(f"{path}: {e.strerror}") from None
    if f.read(4) != b"PK\x03\x04":
        f.seek(0)
        return io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline=""), path
    try:
        zf = zipfile.ZipFile(f)
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        pick = [n for n in names if n.lower().endswith((".csv", ".txt", ".sha256"))] or names
        if len(pick) != 1:
            raise HashDBError(f"{path}: zip holds {len(pick)} candidate files, expected one CSV or list")
        member = zf.open(pick[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as e:
        f.close()
        raise HashDBError(f"{path}: unreadable zip ({e})") from None
    return io.TextIOWrapper(member, encoding="utf-8", errors="replace", newline=""), f"{path}:{pick[0]}"


def _header_of(line: str) -> list[str] | None:
    """The column names when `line` (possibly a '#' comment) is a CSV header naming sha256_hash."""
    text = line.lstrip("#").strip()
    if '"sha256_hash"' not in text and not text.startswith("sha256_hash,") and ",sha256_hash" not in text:
        return None
    try:
        return [c.strip().lower() for c in next(csv.reader([text], skipinitialspace=True))]
    except (csv.Error, StopIteration):
        return None


def _parse(imp: _Importer, lines: Iterable[str | None], where: str, reader: _Reader) -> str:
    """Feed every digest of the stream to `imp`; returns the format seen ("list" or "csv")."""
    it = iter(lines)
    columns: list[str] | None = None
    first: str | None = None
    for line in it:
        if line is None:
            imp.reject(f"{where}:{reader.lineno}", f"line longer than {MAX_LINE} characters")
            continue
        s = line.strip()
        if not s:
            continue
        columns = _header_of(s)
        if columns is not None:
            break
        if s.startswith("#"):
            continue
        first = line
        if s.startswith('"') and s.count(",") >= len(MB_COLUMNS) - 1:
            columns = list(MB_COLUMNS)  # a MalwareBazaar dump whose header was cut off
        break
    if columns is None:
        if first is not None:
            _list_line(imp, first, f"{where}:{reader.lineno}")
        for line in it:
            if line is None:
                imp.reject(f"{where}:{reader.lineno}", f"line longer than {MAX_LINE} characters")
            elif (s := line.strip()) and not s.startswith("#"):
                _list_line(imp, s, f"{where}:{reader.lineno}")
        return "list"
    _csv_rows(imp, columns, it if first is None else _chain(first, it), where, reader)
    return "csv"


def _chain(first: str, rest: Iterator[str | None]) -> Iterator[str | None]:
    yield first
    yield from rest


def _list_line(imp: _Importer, s: str, where: str) -> None:
    parts = s.split(None, 1)
    d = _digest(parts[0])
    if d is None:
        imp.reject(where, "not a sha256 digest")
        return
    comment = parts[1].strip().lstrip("*").strip() if len(parts) > 1 else ""
    imp.add(d, imp.label(comment))


def _csv_rows(imp: _Importer, columns: list[str], lines: Iterator[str | None], where: str, reader: _Reader) -> None:
    try:
        col = columns.index("sha256_hash")
    except ValueError:
        imp.reject(where, "CSV header has no sha256_hash column")
        return
    sig = columns.index("signature") if "signature" in columns else -1
    name = columns.index("file_name") if "file_name" in columns else -1
    long_lines = 0

    def data() -> Iterator[str]:
        nonlocal long_lines
        for line in lines:
            if line is None:
                long_lines += 1
                imp.reject(f"{where}:{reader.lineno}", f"line longer than {MAX_LINE} characters")
            elif line.strip() and not line.lstrip().startswith("#"):
                yield line

    rows = csv.reader(data(), skipinitialspace=True)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            imp.reject(f"{where}:{reader.lineno}", f"bad CSV ({e})")
            continue
        at = f"{where}:{reader.lineno}"
        if len(row) <= col:
            imp.reject(at, f"{len(row)} CSV fields, sha256_hash is field {col + 1}")
            continue
        d = _digest(row[col])
        if d is None:
            imp.reject(at, "sha256_hash is not a sha256 digest")
            continue
        imp.add(d, imp.label(_mb_label(row, sig, name, row[col])))


def _mb_label(row: list[str], sig: int, name: int, digest: str) -> str:
    """The malware family when MalwareBazaar names one, else the sample's file name (unless that is
    just its hash, as for many submissions), else nothing (the label is then the source alone)."""
    s = row[sig].strip() if 0 <= sig < len(row) else ""
    if s.lower() not in _NA:
        return s
    n = row[name].strip() if 0 <= name < len(row) else ""
    if n.lower() in _NA or n.lower().startswith(digest.strip().lower()):
        return ""
    return n
