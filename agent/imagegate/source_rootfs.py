"""A root filesystem directory (an unpacked image, a chroot, a mounted VM disk) as a Source: the
tree is read as one uncompressed layer, streamed as a tar built on the fly, so every check of an
image (packages, advisories, secrets, malware rules, links out of the root) runs on it unchanged.

The layer's digest must be known before the scan reads it (the manifest names it), so the tree is
walked twice: once to hash the tar, once to scan it. Both walks are the same deterministic stream
(sorted names, metadata from lstat), so a file that changes in between shows up as an integrity
finding (the layer no longer hashes to its digest), which is what a changing tree deserves. The
walk never follows symlinks and stays on the directory's own filesystem (pointed at `/`, it skips
/proc, /sys and other mounts). Memory stays at one chunk: headers come from TarInfo.tobuf and
file data is copied in chunks.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator

import orjson

from agent.imagegate.model import ImageError
from agent.imagegate.source import _CHUNK, Source, check_digest, host_platform

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
_MAX_ENTRIES = 5_000_000


def is_rootfs(path: str) -> bool:
    """A directory that is not an OCI layout."""
    return os.path.isdir(path) and not os.path.exists(os.path.join(path, "index.json"))


def _tarinfo(full: str, name: str, st: os.stat_result) -> tarfile.TarInfo | None:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(full)
    else:
        return None  # devices, fifos, sockets: nothing in them to scan
    return ti


class RootfsSource(Source):
    def __init__(self, path: str, ref: str = ""):
        self.path = os.path.realpath(path)
        if not os.path.isdir(self.path):
            raise ImageError(f"{path}: not a directory")
        try:
            self._dev = os.lstat(self.path).st_dev
        except OSError as e:
            raise ImageError(f"{path}: {e.strerror}") from None
        self.name = ref or path
        h, n = hashlib.sha256(), 0
        for chunk in self._stream():
            h.update(chunk)
            n += len(chunk)
        self._layer = "sha256:" + h.hexdigest()
        config = orjson.dumps({"architecture": host_platform()[1], "os": "linux", "config": {},
                               "rootfs": {"type": "layers", "diff_ids": [self._layer]}})
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = orjson.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                                 "config": {"mediaType": MEDIA_CONFIG, "digest": cdigest, "size": len(config)},
                                 "layers": [{"mediaType": MEDIA_LAYER, "digest": self._layer, "size": n}]})
        mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self._blobs = {cdigest: config, mdigest: manifest}
        self._root = {"mediaType": MEDIA_MANIFEST, "digest": mdigest, "size": len(manifest)}

    def root(self) -> dict:
        return self._root

    def chunks(self, digest: str) -> Iterator[bytes]:
        digest = check_digest(digest)
        if digest == self._layer:
            yield from self._stream()
        elif digest in self._blobs:
            yield self._blobs[digest]
        else:
            raise ImageError(f"blob {digest} is not part of {self.path}")

    def _entries(self) -> Iterator[tuple[str, str]]:
        n = 0
        stack = [""]
        while stack:
            rel = stack.pop()
            full = os.path.join(self.path, rel) if rel else self.path
            try:
                names = sorted(os.listdir(full), reverse=True)
            except OSError:
                continue  # unreadable directory: nothing to read there (root reads nearly all)
            subdirs = []
            for name in reversed(names):
                r = f"{rel}/{name}" if rel else name
                n += 1
                if n > _MAX_ENTRIES:
                    raise ImageError(f"{self.path}: more than {_MAX_ENTRIES} entries")
                yield os.path.join(self.path, r), r
                p = os.path.join(self.path, r)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode) and st.st_dev == self._dev:
                    subdirs.append(r)
            stack.extend(reversed(subdirs))

    def _stream(self) -> Iterator[bytes]:
        for full, rel in self._entries():
            try:
                st = os.lstat(full)
                ti = _tarinfo(full, rel, st)
            except OSError:
                continue
            if ti is None:
                continue
            if ti.type != tarfile.REGTYPE:
                yield ti.tobuf(tarfile.PAX_FORMAT)
                continue
            try:
                f = open(full, "rb")
            except OSError:
                continue  # vanished or unreadable between lstat and open: left out of both walks alike
            with f:
                yield ti.tobuf(tarfile.PAX_FORMAT)
                left = ti.size
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk
                if left:  # the file shrank: keep the tar well-formed (the digest then differs)
                    yield b"\0" * left
            pad = -ti.size % tarfile.BLOCKSIZE
            if pad:
                yield b"\0" * pad
        yield b"\0" * (2 * tarfile.BLOCKSIZE)
