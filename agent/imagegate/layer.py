"""Scan one layer blob in a single streaming pass: never extracted, never held whole in memory.

    raw chunks --sha256 (blob digest)--> gunzip | unzstd | as is --sha256 (diff_id), limits--> tar

Per tar entry: path hygiene (absolute, `..`, device files, setuid/setgid, links that point out),
whiteouts recorded (applied later, across layers), and for each regular file: sha256 (known-bad
lists), YARA (malware and secrets), /etc/shadow, package databases. At most `max_file_scan` bytes
of one file are in memory at a time; bigger files are hashed in chunks and YARA sees their head.

Errors in the data (truncated gzip, a corrupt tar, a decompression bomb) become integrity findings;
errors reading the source (containerd gone, a file vanished) raise SourceError, so a transient
failure is never cached as a verdict about the image.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard

try:  # Intel ISA-L's inflate: ~4x zlib's speed on layer data (measured: bench/imagegate.py)
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the same API
    _inflate = zlib

from agent.imagegate import packages, webshell
from agent.imagegate.malware import RuleSet, is_text
from agent.imagegate.model import Finding, ImageError, LayerResult, Severity, SourceError

_CHUNK = 1 << 20


def _clean_vector_state() -> None:
    """Undo what ISA-L's gzip leaves behind for sha256.

    ISA-L checks the gzip CRC with AVX-512 code that returns with the upper vector registers
    dirty; OpenSSL's SHA-NI sha256 (legacy SSE encoding) then runs ~25% slower (measured here,
    AMD EPYC with AVX-512: 1.80 -> 1.34 GB/s) until something executes VZEROUPPER. OpenSSL's
    AVX2 sha512 does, at its end: one block of it (well under a microsecond) after each inflate
    call brings sha256 back to full speed. Harmless where none of this applies.
    """
    _sha512(_ONE_BLOCK).digest()


_sha512 = hashlib.sha512
_ONE_BLOCK = bytes(128)
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class ScanLimits:
    max_file_scan: int = 32 << 20  # bytes of one file read into memory for YARA / parsers
    max_hash_bytes: int = 1 << 30  # files above this are not hashed (known-bad lists hold small files)
    max_layer_bytes: int = 16 << 30  # uncompressed bytes of one layer
    bomb_ratio: float = 100.0  # uncompressed/compressed above this is a bomb ...
    bomb_min_bytes: int = 1 << 30  # ... once the layer has expanded past this many bytes
    max_entries: int = 1_000_000
    yara_timeout: int = 5  # seconds per file (YARA counts whole seconds)


class LayerBomb(Exception):
    pass


class _Raw:
    """File-like over the blob's chunks; hashes and counts what passes (the blob digest)."""

    def __init__(self, chunks: Iterable[bytes], algo: str):
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.hash = hashlib.new(algo)
        self.n = 0
        self.eof = False

    def _next(self) -> bytes:
        try:
            chunk = next(self._it)
        except StopIteration:
            self.eof = True
            return b""
        except (ImageError, SourceError):
            raise
        except Exception as e:  # grpc.RpcError, OSError, ...: the source, not the data
            raise SourceError(f"reading blob: {e}") from e
        self.hash.update(chunk)
        self.n += len(chunk)
        return chunk

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._buf[self._pos :]]
            while not self.eof:
                parts.append(self._next())
            self._buf, self._pos = b"", 0
            return b"".join(parts)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
            while not self._buf and not self.eof:
                self._buf = self._next()
        # An offset into the chunk, not a re-slice of its rest: readers ask for a few KB at a time.
        out = self._buf[self._pos : self._pos + n] if n < len(self._buf) - self._pos or self._pos else self._buf
        self._pos += len(out)
        return out

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and not self.eof:
            self._buf = self._buf[self._pos :] + self._next()
            self._pos = 0
        return self._buf[self._pos : self._pos + n]

    def drain(self) -> None:
        self._buf, self._pos = b"", 0
        while not self.eof:
            self._next()


class _Plain:
    """The uncompressed tar stream, chunk by chunk: hashes it (diff_id), counts it and enforces
    the bomb limits. Every byte the tar reader sees (or skips) has passed through `chunk()`."""

    def __init__(self, src, raw: _Raw, limits: ScanLimits):
        self._src, self._raw, self._limits = src, raw, limits
        self.hash = hashlib.sha256()
        self.n = 0

    def chunk(self) -> bytes:
        data = self._src.read(_CHUNK)
        if data:
            self.hash.update(data)
            self.n += len(data)
            lim = self._limits
            if self.n > lim.max_layer_bytes:
                raise LayerBomb(f"layer expands past {lim.max_layer_bytes} bytes")
            if self.n > lim.bomb_min_bytes and self.n > lim.bomb_ratio * max(1, self._raw.n):
                raise LayerBomb(f"compression ratio above {lim.bomb_ratio:g} ({self.n} bytes from {self._raw.n})")
        return data

    def drain(self) -> None:
        while self.chunk():
            pass


class _TarIn:
    """Forward-only file over _Plain's chunks for tarfile (headers, via read/seek/tell), and
    `take()` for file data: memoryviews into the decompressed chunks, so the bytes of a file are
    not copied on their way to sha256 (and to YARA, when the file lies within one chunk)."""

    def __init__(self, plain: _Plain, max_read: int):
        self._plain = plain
        self._max_read = max_read  # a PAX or GNU long-name header may not ask for more than this
        self._buf = memoryview(b"")
        self._off = 0
        self._pos = 0
        self.eof = False

    def tell(self) -> int:
        return self._pos

    def take(self, n: int) -> list[memoryview]:
        """The next n bytes (fewer at the end of the stream) as views into the chunks."""
        return self._advance(n, keep=True)[0]

    def skip(self, n: int) -> int:
        """Pass over n bytes without keeping them (a kept view would keep its whole chunk alive)."""
        return self._advance(n, keep=False)[1]

    def _advance(self, n: int, keep: bool) -> tuple[list[memoryview], int]:
        out: list[memoryview] = []
        done = 0
        while n > 0:
            avail = len(self._buf) - self._off
            if avail <= 0:
                if self.eof:
                    break
                data = self._plain.chunk()
                if not data:
                    self.eof = True
                    break
                self._buf, self._off = memoryview(data), 0
                continue
            k = n if n < avail else avail
            if keep:
                out.append(self._buf[self._off : self._off + k])
            self._off += k
            self._pos += k
            n -= k
            done += k
        return out, done

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._max_read:
            raise tarfile.ReadError(f"tar header asks for {n} bytes (limit {self._max_read})")
        parts = self.take(n)
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise tarfile.ReadError("tar stream cannot seek backwards")
        self.skip(pos - self._pos)
        return self._pos


class _Gunzip:
    """gzip (possibly several members) -> bytes, in 1 MiB input chunks with bounded output per
    read (zlib's max_length): a small chunk of a bomb cannot expand into memory all at once."""

    def __init__(self, raw: _Raw):
        self._raw = raw
        self._d = _inflate.decompressobj(wbits=31)
        self._pending = b""  # compressed input not yet given to zlib

    def read(self, n: int = -1) -> bytes:
        n = n if n and n > 0 else _CHUNK
        while True:
            if self._d.eof:
                rest = self._d.unused_data + self._pending + (b"" if self._raw.eof else self._raw.read(_CHUNK))
                if not rest:
                    return b""
                if rest[:2] != b"\x1f\x8b":
                    return b""  # padding after the last member: not part of the tar
                self._d, self._pending = _inflate.decompressobj(wbits=31), rest
            data = self._d.unconsumed_tail or self._pending
            self._pending = b""
            if not data:
                data = self._raw.read(_CHUNK)
                if not data:
                    raise EOFError("gzip stream ends before its end-of-stream marker (truncated)")
            out = self._d.decompress(data, n)
            if _inflate is not zlib:
                _clean_vector_state()
            if out:
                return out


def _decompressor(raw: _Raw):
    magic = raw.peek(4)
    if magic[:2] == b"\x1f\x8b":
        return _Gunzip(raw), "gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        # stream_reader bounds each read's output, which a bomb needs; windows above 128 MiB are
        # refused rather than allocated.
        return zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(raw, read_size=_CHUNK), "zstd"
    return raw, "none"


def through_link(path: str, links: dict[str, str]) -> str | None:
    """The nearest directory of `path` that is one of `links`, else None."""
    i = path.rfind("/")
    while i > 0:
        parent = path[:i]
        if parent in links:
            return parent
        i = path.rfind("/", 0, i)
    return None


def write_through(path: str, link: str, target: str, layer: str) -> Finding:
    """An entry written through a symlink that points out of the image root: a naive extractor
    (tar -x, a hand-rolled unpacker) creates it outside the root, on the host (CVE-2018-15664's
    family). containerd resolves the link inside the root; the image is hostile either way, since
    no image builder writes an entry through a symlink. HIGH, above symlink-escape's MEDIUM."""
    return Finding(
        category="integrity",
        severity=Severity.HIGH,
        rule="symlink-write-through",
        path="/" + path,
        detail=f"written through symlink /{link} -> {target[:200]!r}, which points out of the image root: "
        f"extracted naively, /{path} lands outside it",
        layer=layer,
    )


def _clean(name: str) -> tuple[str, str | None]:
    """(normalized relative path, problem) for a tar entry name."""
    problem = None
    if name.startswith("/"):
        problem = "absolute"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        problem = "dotdot"
    norm = posixpath.normpath("/".join(parts)) if parts else ""
    if norm == ".":
        norm = ""
    return norm, problem


class LayerScanner:
    """Scans layer blobs with one RuleSet; stateless between layers, thread-safe."""

    def __init__(self, rules: RuleSet, limits: ScanLimits | None = None):
        self.rules = rules
        self.limits = limits or ScanLimits()

    def scan(self, digest: str, chunks: Iterable[bytes], size: int = -1) -> LayerResult:
        algo = digest.split(":", 1)[0] if ":" in digest else "sha256"
        if algo not in ("sha256", "sha512"):
            algo = "sha256"
        raw = _Raw(chunks, algo)
        res = LayerResult(digest=digest)
        st = _State(res, self)
        plain = None
        try:
            src, _kind = _decompressor(raw)
            plain = _Plain(src, raw, self.limits)
            st.tin = _TarIn(plain, self.limits.max_file_scan + _CHUNK)
            with tarfile.TarFile(fileobj=st.tin, mode="r") as tar:
                for ti in tar:
                    if not st.entry(tar, ti):
                        break
            plain.drain()  # bytes after the tar trailer still count toward the diff_id
        except (SourceError, ImageError):
            raise
        except LayerBomb as e:
            st.add("integrity", Severity.CRITICAL, "decompression-bomb", "", f"{e}; scan of this layer stopped")
        except (tarfile.TarError, EOFError, OSError, zlib.error, _inflate.error, zstandard.ZstdError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            st.add("integrity", Severity.CRITICAL, "layer-unreadable", "", f"layer data is corrupt or truncated: {msg}")
        raw.drain()
        res.size = raw.n
        res.uncompressed = plain.n if plain is not None else 0
        res.diff_id = f"sha256:{plain.hash.hexdigest()}" if plain is not None else ""
        blob = f"{algo}:{raw.hash.hexdigest()}"
        if blob != digest:
            st.add(
                "integrity",
                Severity.CRITICAL,
                "blob-digest-mismatch",
                "",
                f"layer blob hashes to {blob}, manifest says {digest}",
            )
        if size >= 0 and raw.n != size:
            st.add(
                "integrity",
                Severity.HIGH,
                "blob-size-mismatch",
                "",
                f"layer blob is {raw.n} bytes, manifest says {size}",
            )
        return res


class _State:
    """Per-layer bookkeeping while its tar streams by."""

    def __init__(self, res: LayerResult, scanner: LayerScanner):
        self.res = res
        self.rules = scanner.rules
        self.lim = scanner.limits
        self.entries = 0
        self.tin: _TarIn | None = None

    def add(self, cat: str, sev: Severity, rule: str, path: str, detail: str) -> None:
        self.res.findings.append(
            Finding(category=cat, severity=sev, rule=rule, path=path, detail=detail, layer=self.res.digest)
        )

    def entry(self, tar: tarfile.TarFile, ti: tarfile.TarInfo) -> bool:
        self.entries += 1
        if self.entries > self.lim.max_entries:
            self.add(
                "integrity",
                Severity.HIGH,
                "too-many-entries",
                "",
                f"more than {self.lim.max_entries} entries; rest not scanned",
            )
            return False
        path, problem = _clean(ti.name)
        shown = "/" + path
        if problem == "dotdot":
            self.add(
                "integrity",
                Severity.HIGH,
                "path-traversal",
                ti.name[:256],
                "entry path contains '..' (writes outside the root if extracted naively)",
            )
            return True  # never scanned: it has no place in the file view
        if problem == "absolute":
            self.add("integrity", Severity.MEDIUM, "absolute-path", ti.name[:256], "entry path is absolute")
        if not path:
            return True
        links = self.res.links
        if links:  # rare: only layers that hold a symlink pointing out of the root pay for this
            self._through(path, links)  # a whiteout too: deleting through the link deletes out there
            links.pop(path, None)  # this entry replaces the link
        base = posixpath.basename(path)
        if base.startswith(_WHITEOUT):
            parent = posixpath.dirname(path)
            if base == _OPAQUE:
                self.res.opaque.append(parent)
            else:
                self.res.whiteouts.append(posixpath.join(parent, base[len(_WHITEOUT) :]))
            return True
        if ti.isdir():
            self.res.dirs.add(path)
            return True
        self.res.paths.add(path)
        if ti.issym():
            self._symlink(path, ti.linkname)
        elif ti.islnk():
            self._hardlink(path, ti.linkname)
        elif ti.ischr() or ti.isblk():
            self.add(
                "integrity",
                Severity.HIGH,
                "device-file",
                shown,
                f"{'character' if ti.ischr() else 'block'} device {ti.devmajor}:{ti.devminor} in the image",
            )
        elif ti.isreg():
            if ti.mode & 0o6000:
                kind = "setuid" if ti.mode & 0o4000 else "setgid"
                # Base images ship a few (passwd, su, mount): worth listing, rarely worth an alert.
                self.add("integrity", Severity.INFO, f"{kind}-file", shown, f"{kind} regular file (mode {ti.mode:o})")
            self._file(tar, ti, path)
        return True

    def _symlink(self, path: str, target: str) -> None:
        if target.startswith("/"):
            # At run time an absolute target resolves inside the container's root, so the link
            # alone is no finding (/etc/localtime -> /usr/share/...); an entry written through it
            # is: a naive extractor follows it out of the root (_through).
            self.res.links[path] = target
            return
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname("/" + path), target))
        if posixpath.normpath(posixpath.join(posixpath.dirname(path), target)).startswith(".."):
            self.res.links[path] = target
            self.add(
                "integrity",
                Severity.MEDIUM,
                "symlink-escape",
                "/" + path,
                f"symlink target {target[:200]!r} climbs above the image root (resolves to {resolved})",
            )

    def _through(self, path: str, links: dict[str, str]) -> None:
        """A finding when `path` lies under a symlink of this layer that points out of the root."""
        link = through_link(path, links)
        if link is not None:
            self.res.findings.append(write_through(path, link, links[link], self.res.digest))

    def _hardlink(self, path: str, target: str) -> None:
        tpath, problem = _clean(target)
        if problem == "dotdot" or not tpath:
            self.add(
                "integrity",
                Severity.HIGH,
                "hardlink-escape",
                "/" + path,
                f"hard link target {target[:200]!r} is outside the image root",
            )
        elif tpath not in self.res.paths:
            self.add(
                "integrity",
                Severity.MEDIUM,
                "hardlink-outside-layer",
                "/" + path,
                f"hard link to /{tpath}, which is not an earlier entry of this layer",
            )

    def _file(self, tar: tarfile.TarFile, ti: tarfile.TarInfo, path: str) -> None:
        self.res.files += 1
        cap = self.lim.max_file_scan
        hashing = ti.size <= self.lim.max_hash_bytes
        if ti.issparse() or self.tin is None:
            head, digest = self._read_extracted(tar, ti, cap, hashing)
        else:
            head, digest = self._read_direct(ti, cap, hashing)
        shown = "/" + path
        if digest:
            bad = self.rules.known_bad(digest)
            if bad:
                self.add(
                    "malware",
                    Severity.CRITICAL,
                    "hash:" + bad.split(":", 1)[0],
                    shown,
                    f"sha256 {digest} is on a known-bad list ({bad})",
                )
        matches, timed_out = self.rules.scan(path, head, self.lim.yara_timeout)
        for m in matches:
            try:
                sev = Severity.parse(m.severity)
            except ValueError:
                sev = Severity.HIGH
            trunc = f" (in the first {cap} bytes)" if ti.size > cap else ""
            self.add(m.category, sev, m.rule, shown, m.description + trunc)
        if timed_out:
            self.add("malware", Severity.LOW, "yara-timeout", shown, "YARA scan timed out; file not fully checked")
        if is_text(bytes(head[:8192])):
            self._webshell(shown, head)
        if path == "etc/shadow":
            self._shadow(bytes(head))
        kind = packages.wanted(path) or packages.sniff(head)  # sniff: Go binaries, by content
        if kind == "os-release":
            self.res.os_release[path] = bytes(head[:65536]).decode("utf-8", "replace")
        elif kind:
            self.res.packages.extend(packages.parse(kind, path, bytes(head)))

    def _webshell(self, shown: str, head) -> None:
        """The web-shell detector on server-side code (it skips anything else by name and head)."""
        for hit in webshell.scan(shown, head):
            if hit.confidence < webshell.THRESHOLD:
                continue
            self.res.findings.append(
                Finding(
                    category="malware",
                    severity=hit.severity,
                    rule=f"webshell:{hit.rule}",
                    path=shown,
                    detail=webshell.describe(hit),
                    layer=self.res.digest,
                    source=hit.source,
                    sink=hit.sink,
                    snippet=hit.snippet,
                    confidence=round(hit.confidence, 3),
                    family=hit.family,
                )
            )

    def _read_direct(self, ti: tarfile.TarInfo, cap: int, hashing: bool) -> tuple[bytes | memoryview, str | None]:
        """The file's first `cap` bytes and its sha256, straight from the decompressed chunks:
        no copy when the file lies within one chunk, one join otherwise."""
        tin = self.tin
        assert tin is not None
        tin.seek(ti.offset_data)  # already there: tarfile has just read the header
        want = min(ti.size, cap)
        parts = tin.take(want)
        if sum(map(len, parts)) < want:
            raise tarfile.ReadError("unexpected end of data")
        h = hashlib.sha256() if hashing else None
        if h is not None:
            for p in parts:
                h.update(p)
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        del parts
        if h is not None and ti.size > cap:
            rest = ti.size - cap
            while rest > 0:
                more = tin.take(min(rest, _CHUNK))
                if not more:
                    raise tarfile.ReadError("unexpected end of data")
                for p in more:
                    h.update(p)
                    rest -= len(p)
        return head, (h.hexdigest() if h is not None else None)

    def _read_extracted(self, tar: tarfile.TarFile, ti: tarfile.TarInfo, cap: int, hashing: bool):
        """Sparse members: tarfile expands the holes."""
        f = tar.extractfile(ti)
        if f is None:
            return b"", None
        head = f.read(min(ti.size, cap))
        if not hashing:
            return head, None
        h = hashlib.sha256(head)
        if ti.size > cap:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return head, h.hexdigest()

    def _shadow(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines()[:10000]:
            fields = line.split(":")
            if len(fields) < 2 or not fields[0]:
                continue
            user, pw = fields[0], fields[1]
            if pw == "":
                self.add(
                    "secret",
                    Severity.HIGH,
                    "shadow-empty-password",
                    "/etc/shadow",
                    f"account {user[:64]!r} has an empty password",
                )
            elif pw[0] not in "!*" and pw not in ("x", "NP", "LK"):
                self.add(
                    "secret",
                    Severity.HIGH,
                    "shadow-password-hash",
                    "/etc/shadow",
                    f"password hash for login account {user[:64]!r}",
                )
